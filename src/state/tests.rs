//! The replicated state against a naive model of what leases do to keys: random sequences of
//! grants, revocations, expiries, checkpoints, puts (with and without leases) and deletes,
//! compared after every step (answers, revisions, the lease table, which key is attached to
//! which lease), then through a snapshot.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::proto::detcdpb::{LeaseCheckpoints, LeaseExpire, LeaseRemaining};
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

#[derive(Clone, Debug)]
enum Step {
    Grant {
        id: i64,
        ttl: i64,
    },
    Revoke {
        id: i64,
    },
    Expire {
        id: i64,
        generation: u64,
    },
    Checkpoint {
        id: i64,
        generation: u64,
        remaining_ms: i64,
    },
    Put {
        key: u8,
        lease: i64,
        ignore_lease: bool,
    },
    Delete {
        key: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let id = 1..4i64;
    prop_oneof![
        (id.clone(), 0..4i64).prop_map(|(id, ttl)| Step::Grant { id, ttl }),
        id.clone().prop_map(|id| Step::Revoke { id }),
        (id.clone(), 0..6u64).prop_map(|(id, generation)| Step::Expire { id, generation }),
        (id, 0..6u64, 0..5_000i64).prop_map(|(id, generation, remaining_ms)| {
            Step::Checkpoint {
                id,
                generation,
                remaining_ms,
            }
        }),
        (0..4u8, 0..4i64, any::<bool>()).prop_map(|(key, lease, ignore_lease)| Step::Put {
            key,
            lease: if ignore_lease { 0 } else { lease },
            ignore_lease
        }),
        (0..4u8).prop_map(|key| Step::Delete { key }),
    ]
}

/// What a lease is in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelLease {
    ttl: i64,
    remaining_ms: i64,
    generation: u64,
}

/// Leases and the lease of every live key, by the book.
#[derive(Default)]
struct Model {
    leases: BTreeMap<i64, ModelLease>,
    grants: u64,
    keys: BTreeMap<Bytes, i64>,
    revision: i64,
}

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'k', b'0' + k])
}

impl Model {
    fn new() -> Model {
        Model {
            revision: 1,
            ..Model::default()
        }
    }

    /// Applies a step; `Err(())` where the state must answer an error (the kind is checked by
    /// the caller where it matters).
    fn apply(&mut self, step: &Step) -> Result<(), ()> {
        match *step {
            Step::Grant { id, ttl } => {
                if ttl < 1 || self.leases.contains_key(&id) {
                    return Err(());
                }
                let lease = ModelLease {
                    ttl,
                    remaining_ms: ttl * 1000,
                    generation: self.grants,
                };
                self.leases.insert(id, lease);
                self.grants += 1;
                Ok(())
            }
            Step::Revoke { id } => self.revoke(id),
            Step::Expire { id, generation } => {
                if self
                    .leases
                    .get(&id)
                    .is_some_and(|l| l.generation == generation)
                {
                    self.revoke(id).expect("the lease exists");
                }
                Ok(())
            }
            Step::Checkpoint {
                id,
                generation,
                remaining_ms,
            } => {
                if let Some(lease) = self.leases.get_mut(&id) {
                    if lease.generation == generation {
                        lease.remaining_ms = remaining_ms;
                    }
                }
                Ok(())
            }
            Step::Put {
                key: k,
                lease,
                ignore_lease,
            } => {
                let k = key(k);
                let lease = if ignore_lease {
                    *self.keys.get(&k).ok_or(())?
                } else {
                    lease
                };
                if lease != 0 && !self.leases.contains_key(&lease) {
                    return Err(());
                }
                self.keys.insert(k, lease);
                self.revision += 1;
                Ok(())
            }
            Step::Delete { key: k } => {
                if self.keys.remove(&key(k)).is_some() {
                    self.revision += 1;
                }
                Ok(())
            }
        }
    }

    fn revoke(&mut self, id: i64) -> Result<(), ()> {
        self.leases.remove(&id).ok_or(())?;
        let before = self.keys.len();
        self.keys.retain(|_, lease| *lease != id);
        if self.keys.len() < before {
            self.revision += 1;
        }
        Ok(())
    }
}

fn op_of(step: &Step) -> Op {
    match *step {
        Step::Grant { id, ttl } => Op::LeaseGrant(LeaseGrantRequest { id, ttl }),
        Step::Revoke { id } => Op::LeaseRevoke(LeaseRevokeRequest { id }),
        Step::Expire { id, generation } => Op::LeaseExpire(LeaseExpire { id, generation }),
        Step::Checkpoint {
            id,
            generation,
            remaining_ms,
        } => Op::LeaseCheckpoints(LeaseCheckpoints {
            leases: vec![LeaseRemaining {
                id,
                remaining_ms,
                generation,
            }],
        }),
        Step::Put {
            key: k,
            lease,
            ignore_lease,
        } => Op::Put(PutRequest {
            key: key(k),
            value: Bytes::from_static(b"v"),
            lease,
            ignore_lease,
            ..PutRequest::default()
        }),
        Step::Delete { key: k } => Op::DeleteRange(DeleteRangeRequest {
            key: key(k),
            ..DeleteRangeRequest::default()
        }),
    }
}

/// The state agrees with the model on everything the model knows.
fn assert_agrees(state: &State, model: &Model) {
    assert_eq!(state.kv().current_revision(), model.revision);
    let leases: BTreeMap<i64, ModelLease> = state
        .leases()
        .iter()
        .map(|(id, l)| {
            let lease = ModelLease {
                ttl: l.ttl_secs,
                remaining_ms: l.remaining_ms,
                generation: l.generation,
            };
            (id, lease)
        })
        .collect();
    assert_eq!(leases, model.leases);
    for (id, lease) in state.leases().iter() {
        let keys: Vec<Bytes> = lease.keys().cloned().collect();
        let expected: Vec<Bytes> = model
            .keys
            .iter()
            .filter(|(_, l)| **l == id)
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(keys, expected, "keys of lease {id}");
    }
    for k in 0..4 {
        assert_eq!(
            state.kv().live_lease(&key(k)),
            model.keys.get(&key(k)).copied().unwrap_or(0)
        );
    }
    state
        .check_invariants()
        .expect("the state keeps its invariants");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_state_does_to_keys_and_leases_what_the_model_does(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let mut state = State::new();
        let mut model = Model::new();
        for step in &steps {
            let expected = model.apply(step);
            let applied = state.apply(op_of(step));
            if let Some(result) = applied.result {
                prop_assert_eq!(result.is_ok(), expected.is_ok(), "{:?}", step);
            }
            assert_agrees(&state, &model);
        }
        let restored = State::decode_snapshot(&state.encode_snapshot()).expect("decodes");
        prop_assert_eq!(&restored, &state);
        prop_assert_eq!(restored.leases().digest(), state.leases().digest());
    }
}

#[test]
fn revoking_a_lease_deletes_all_its_keys_at_one_revision_and_reports_them() {
    let mut state = State::new();
    state.apply(op_of(&Step::Grant { id: 1, ttl: 5 }));
    for k in [2, 0, 1] {
        let put = Step::Put {
            key: k,
            lease: 1,
            ignore_lease: false,
        };
        state.apply(op_of(&put)).result.unwrap().unwrap();
    }
    let revision = state.kv().current_revision();
    let applied = state.apply(op_of(&Step::Revoke { id: 1 }));
    let answer = applied.result.unwrap().unwrap();
    assert_eq!(answer.response.revision(), Some(revision + 1));
    let deleted: Vec<(Bytes, i64)> = applied
        .effects
        .key_changes
        .iter()
        .map(|c| (c.key().clone(), c.revision.main))
        .collect();
    assert_eq!(
        deleted,
        vec![
            (key(0), revision + 1),
            (key(1), revision + 1),
            (key(2), revision + 1)
        ]
    );
    assert_eq!(applied.effects.leases_removed, vec![1]);
}

#[test]
fn revoking_a_lease_without_keys_creates_no_revision() {
    let mut state = State::new();
    state.apply(op_of(&Step::Grant { id: 1, ttl: 5 }));
    let applied = state.apply(op_of(&Step::Revoke { id: 1 }));
    assert_eq!(
        applied.result.unwrap().unwrap().response.revision(),
        Some(1)
    );
    assert_eq!(state.kv().current_revision(), 1);
}

#[test]
fn an_expiry_for_an_earlier_grant_of_the_id_leaves_the_new_lease_alone() {
    let mut state = State::new();
    state.apply(op_of(&Step::Grant { id: 1, ttl: 5 }));
    state.apply(op_of(&Step::Revoke { id: 1 }));
    state.apply(op_of(&Step::Grant { id: 1, ttl: 5 }));
    let stale = state.apply(op_of(&Step::Expire {
        id: 1,
        generation: 0,
    }));
    assert!(stale.result.is_none());
    assert!(stale.effects.leases_removed.is_empty());
    assert!(state.leases().contains(1));
    let current = state.apply(op_of(&Step::Expire {
        id: 1,
        generation: 1,
    }));
    assert_eq!(current.effects.leases_removed, vec![1]);
}
