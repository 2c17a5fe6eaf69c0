//! The recipes against a key space standing in for a member: every request goes to a real
//! `KeySpace`, and watch responses are made by hand from the deletions a test performs.

use super::*;
use crate::mvcc::{KeySpace, LeaseCheck};
use crate::proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantResponse, ResponseHeader};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use crate::proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use crate::proto::v3lockpb::LockRequest;

struct EveryLease;

impl LeaseCheck for EveryLease {
    fn lease_exists(&self, _: i64) -> bool {
        true
    }
}

/// A member with no raft, no leases to speak of, and watches answered by the test.
struct Member {
    kv: KeySpace,
}

impl Member {
    fn new() -> Member {
        Member {
            kv: KeySpace::new(),
        }
    }

    fn call(&mut self, request: ClientRequest) -> Result<ClientResponse, EtcdError> {
        Ok(match request {
            ClientRequest::Range(r) => self.kv.range(&r)?.into(),
            ClientRequest::Txn(t) => self.kv.txn_with_leases(&t, &EveryLease)?.0.into(),
            ClientRequest::DeleteRange(d) => self.kv.delete_range(&d)?.into(),
            ClientRequest::LeaseGrant(_) => LeaseGrantResponse {
                id: 0x77,
                ttl: SESSION_TTL_SECONDS,
                ..Default::default()
            }
            .into(),
            other => panic!("a recipe does not send {}", other.name()),
        })
    }

    /// Runs `step` and the calls that follow it, up to the first step that is not a call.
    fn run<A>(&mut self, recipe: &mut impl Recipe<Answer = A>, mut step: Step<A>) -> Step<A> {
        while let Step::Call(request) = step {
            step = recipe.on_reply(self.call(request));
        }
        step
    }

    fn delete(&mut self, key: &[u8]) -> WatchResponse {
        let request = DeleteRangeRequest {
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        let revision = self
            .kv
            .delete_range(&request)
            .unwrap()
            .header
            .unwrap()
            .revision;
        WatchResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            events: vec![Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: Bytes::copy_from_slice(key),
                    mod_revision: revision,
                    ..Default::default()
                }),
                prev_kv: None,
            }],
            ..Default::default()
        }
    }
}

fn lock(name: &str, lease: i64) -> Lock {
    lock_with(name, lease, RecipeBugs::default())
}

fn lock_with(name: &str, lease: i64, bugs: RecipeBugs) -> Lock {
    let request = LockRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
    };
    Lock::new(request, bugs)
}

/// Starts a lock and runs it until it answers or waits.
fn start<A>(member: &mut Member, recipe: &mut impl Recipe<Answer = A>) -> Step<A> {
    let first = recipe.start();
    member.run(recipe, first)
}

fn watched_keys<A>(step: &Step<A>) -> Vec<Bytes> {
    match step {
        Step::Watch(creates) => creates.iter().map(|c| c.key.clone()).collect(),
        _ => panic!("expected watches"),
    }
}

#[test]
fn an_uncontended_lock_is_taken_at_once_with_etcds_key() {
    let mut member = Member::new();
    let mut a = lock("l", 0x1f);
    let Step::Done(Ok(held)) = start(&mut member, &mut a) else {
        panic!("taken at once");
    };
    assert_eq!(held.key, Bytes::from_static(b"l/1f"));
    assert_eq!(held.header.unwrap().revision, 2);
    assert_eq!(a.contender(), Some((&Bytes::from_static(b"l/1f"), 2)));
}

#[test]
fn a_waiter_watches_its_predecessor_and_its_own_key_then_takes_the_lock() {
    let mut member = Member::new();
    start(&mut member, &mut lock("l", 1));
    let mut b = lock("l", 2);
    let step = start(&mut member, &mut b);
    assert_eq!(watched_keys(&step), [&b"l/1"[..], b"l/2"]);
    let released = member.delete(b"l/1");
    let step = b.on_watch(&released);
    let Step::Done(Ok(held)) = member.run(&mut b, step) else {
        panic!("taken once its predecessor is gone");
    };
    assert_eq!(held.key, Bytes::from_static(b"l/2"));
    assert_eq!(held.header.unwrap().revision, 4, "read after the release");
}

#[test]
fn a_waiter_whose_key_goes_fails_at_once_with_session_expired() {
    let mut member = Member::new();
    start(&mut member, &mut lock("l", 1));
    let mut b = lock("l", 2);
    start(&mut member, &mut b);
    let expired = member.delete(b"l/2");
    assert!(matches!(
        b.on_watch(&expired),
        Step::Done(Err(RecipeError::SessionExpired))
    ));
}

#[test]
fn a_waiter_reads_again_when_its_predecessor_goes_before_the_owner() {
    let mut member = Member::new();
    for lease in 1..=2 {
        start(&mut member, &mut lock("l", lease));
    }
    let mut c = lock("l", 3);
    start(&mut member, &mut c);
    let gone = member.delete(b"l/2");
    let step = c.on_watch(&gone);
    let step = member.run(&mut c, step);
    assert_eq!(
        watched_keys(&step),
        [&b"l/1"[..], b"l/3"],
        "the owner still holds"
    );

    // The injected bug takes the lock there.
    let bugs = RecipeBugs {
        lock_skip_recheck: true,
        ..RecipeBugs::default()
    };
    let mut d = lock_with("l", 4, bugs);
    start(&mut member, &mut d);
    let gone = member.delete(b"l/3");
    let step = d.on_watch(&gone);
    assert!(matches!(member.run(&mut d, step), Step::Done(Ok(_))));
}

#[test]
fn a_waiter_given_up_deletes_its_key_and_lease_zero_grants_a_session() {
    let mut member = Member::new();
    start(&mut member, &mut lock("l", 1));
    let mut b = lock("l", 0);
    start(&mut member, &mut b);
    let Some(ClientRequest::DeleteRange(cleanup)) = b.abandon() else {
        panic!("a waiter cleans up");
    };
    assert_eq!(cleanup.key, Bytes::from_static(b"l/77"));
}

fn campaign(lease: i64, value: &str) -> Campaign {
    Campaign::new(CampaignRequest {
        name: Bytes::from_static(b"e"),
        lease,
        value: Bytes::copy_from_slice(value.as_bytes()),
    })
}

fn leader_request() -> LeaderRequest {
    LeaderRequest {
        name: Bytes::from_static(b"e"),
    }
}

#[test]
fn an_election_answers_leader_proclaim_and_resign_as_etcd() {
    let mut member = Member::new();
    let mut leader = Leader::new(leader_request(), RecipeBugs::default());
    assert!(matches!(
        start(&mut member, &mut leader),
        Step::Done(Err(RecipeError::NoLeader))
    ));
    let Step::Done(Ok(won)) = start(&mut member, &mut campaign(5, "v1")) else {
        panic!("an uncontended campaign wins");
    };
    let key = won.leader.unwrap();
    assert_eq!((&key.key[..], key.rev, key.lease), (&b"e/5"[..], 2, 5));
    let proclaim = |leader: LeaderKey| ProclaimRequest {
        leader: Some(leader),
        value: Bytes::from_static(b"v2"),
    };
    let stale = LeaderKey {
        rev: 1,
        ..key.clone()
    };
    assert!(matches!(
        start(&mut member, &mut Proclaim::new(proclaim(stale))),
        Step::Done(Err(RecipeError::NotLeader))
    ));
    assert!(matches!(
        start(&mut member, &mut Proclaim::new(proclaim(key.clone()))),
        Step::Done(Ok(_))
    ));
    let Step::Done(Ok(now)) = start(
        &mut member,
        &mut Leader::new(leader_request(), RecipeBugs::default()),
    ) else {
        panic!("a leader");
    };
    assert_eq!(now.kv.unwrap().value, Bytes::from_static(b"v2"));
    let missing = ResignRequest { leader: None };
    assert!(matches!(
        start(&mut member, &mut Resign::new(missing)),
        Step::Done(Err(RecipeError::MissingLeaderKey))
    ));
}

#[test]
fn observe_reports_the_leader_then_follows_its_key() {
    let mut member = Member::new();
    start(&mut member, &mut campaign(5, "v1"));
    let mut observe = Observe::new(leader_request());
    let Step::Emit(first, then) = start(&mut member, &mut observe) else {
        panic!("the current leader first");
    };
    assert_eq!(first.kv.unwrap().key, Bytes::from_static(b"e/5"));
    assert_eq!(watched_keys(&then), [&b"e/5"[..]]);
    let resigned = member.delete(b"e/5");
    let step = observe.on_watch(&resigned);
    let step = member.run(&mut observe, step);
    let Step::Watch(creates) = step else {
        panic!("no leader: watching the prefix");
    };
    assert_eq!(
        (&creates[0].key[..], &creates[0].range_end[..]),
        (&b"e/"[..], &b"e0"[..])
    );
}
