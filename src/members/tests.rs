use proptest::prelude::*;

use super::*;
use crate::proto::etcdserverpb::MemberUpdateRequest;

fn member(id: MemberId, url: &str, learner: bool) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_ur_ls: vec![url.to_string()],
        client_ur_ls: vec!["http://client".into()],
        is_learner: learner,
    }
}

fn change(change: Change) -> MemberChange {
    MemberChange {
        change: Some(change),
        automatic: false,
    }
}

fn three() -> Members {
    Members::bootstrap(
        7,
        (1..=3).map(|id| member(id, &format!("http://m{id}"), false)),
    )
}

#[test]
fn bootstrap_members_are_voters_without_client_urls() {
    let members = three();
    assert_eq!(members.cluster_id(), 7);
    assert_eq!(members.voters().count(), 3);
    assert!(members.iter().all(|m| m.client_ur_ls.is_empty()));
    assert_eq!(members.get(2).unwrap().name, "m2");
}

#[test]
fn etcds_errors_for_impossible_changes() {
    let mut members = three();
    let add = |id, url: &str, learner| change(Change::Add(member(id, url, learner)));
    assert_eq!(
        members.apply(add(1, "http://x", false)),
        Err(EtcdError::MemberExist)
    );
    assert_eq!(
        members.apply(add(9, "http://m1", false)),
        Err(EtcdError::PeerUrlExist)
    );
    assert_eq!(
        members.apply(change(Change::Remove(9))),
        Err(EtcdError::MemberNotFound)
    );
    assert_eq!(
        members.apply(change(Change::Promote(1))),
        Err(EtcdError::MemberNotLearner)
    );
    assert_eq!(
        members.apply(add(4, "http://m4", true)),
        Ok(Some(RaftChange::AddLearner(4)))
    );
    for id in 100..100 + LEARNERS_MAX as u64 - 1 {
        assert!(members
            .apply(add(id, &format!("http://l{id}"), true))
            .is_ok());
    }
    assert_eq!(
        members.apply(add(5, "http://m5", true)),
        Err(EtcdError::TooManyLearners)
    );
    let added = members.get(4).unwrap();
    assert!(added.name.is_empty() && added.client_ur_ls.is_empty() && added.is_learner);
    assert_eq!(
        members.apply(change(Change::Promote(4))),
        Ok(Some(RaftChange::AddVoter(4)))
    );
    assert_eq!(
        members.apply(change(Change::Remove(4))),
        Ok(Some(RaftChange::Remove(4)))
    );
    // A removed id never comes back.
    assert_eq!(
        members.apply(add(4, "http://m4", false)),
        Err(EtcdError::MemberExist)
    );
    assert_eq!(
        members.apply(change(Change::Update(MemberUpdateRequest {
            id: 2,
            peer_ur_ls: vec!["http://m3".into()],
        }))),
        Err(EtcdError::PeerUrlExist)
    );
}

#[derive(Clone, Debug)]
enum Op {
    Add(MemberId, u8, bool),
    Remove(MemberId),
    Promote(MemberId),
    Update(MemberId, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..8, 0u8..6, any::<bool>()).prop_map(|(id, url, l)| Op::Add(id, url, l)),
        (1u64..8).prop_map(Op::Remove),
        (1u64..8).prop_map(Op::Promote),
        (1u64..8, 0u8..6).prop_map(|(id, url)| Op::Update(id, url)),
    ]
}

/// The model: a plain list of (id, url, learner) plus the removed ids.
#[derive(Default)]
struct Model {
    members: Vec<(MemberId, String, bool)>,
    removed: Vec<MemberId>,
}

impl Model {
    fn apply(&mut self, op: &Op) -> bool {
        let url_taken = |m: &Model, url: &str, except: MemberId| {
            m.members.iter().any(|(id, u, _)| u == url && *id != except)
        };
        let position = |m: &Model, id| m.members.iter().position(|(i, _, _)| *i == id);
        match *op {
            Op::Add(id, url, learner) => {
                let url = format!("u{url}");
                let learners = self.members.iter().filter(|(_, _, l)| *l).count();
                if position(self, id).is_some()
                    || self.removed.contains(&id)
                    || url_taken(self, &url, 0)
                    || (learner && learners >= LEARNERS_MAX)
                {
                    return false;
                }
                self.members.push((id, url, learner));
            }
            Op::Remove(id) => {
                let Some(at) = position(self, id) else {
                    return false;
                };
                self.members.remove(at);
                self.removed.push(id);
            }
            Op::Promote(id) => match position(self, id) {
                Some(at) if self.members[at].2 => self.members[at].2 = false,
                _ => return false,
            },
            Op::Update(id, url) => {
                let url = format!("u{url}");
                match position(self, id) {
                    Some(at) if !url_taken(self, &url, id) => self.members[at].1 = url,
                    _ => return false,
                }
            }
        }
        true
    }
}

fn as_change(op: &Op) -> MemberChange {
    change(match *op {
        Op::Add(id, url, learner) => Change::Add(Member {
            id,
            peer_ur_ls: vec![format!("u{url}")],
            is_learner: learner,
            ..Member::default()
        }),
        Op::Remove(id) => Change::Remove(id),
        Op::Promote(id) => Change::Promote(id),
        Op::Update(id, url) => Change::Update(MemberUpdateRequest {
            id,
            peer_ur_ls: vec![format!("u{url}")],
        }),
    })
}

proptest! {
    #[test]
    fn the_member_list_follows_a_plain_model(ops in proptest::collection::vec(op(), 0..40)) {
        let mut members = Members::default();
        let mut model = Model::default();
        for op in &ops {
            let accepted = members.apply(as_change(op)).is_ok();
            prop_assert_eq!(accepted, model.apply(op), "{:?}", op);
            members.check_invariants().map_err(TestCaseError::fail)?;
        }
        let mut expected: Vec<_> = model.members.clone();
        expected.sort();
        let actual: Vec<_> = members
            .iter()
            .map(|m| (m.id, m.peer_ur_ls[0].clone(), m.is_learner))
            .collect();
        prop_assert_eq!(actual, expected);
        let restored = Members::from_snapshot(members.to_snapshot()).unwrap();
        prop_assert_eq!(restored, members);
    }
}
