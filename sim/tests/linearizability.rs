//! The linearizability checker on hand-built histories: a correct concurrent history passes,
//! each kind of violation is caught and named, indeterminate writes pass whichever way they
//! went; and, as properties, every sequential history passes while reordering its writes in
//! the log is caught.
//!
//! Histories are built the way the node makes them: a write is applied to a `State` and
//! appended to the log as an encoded `InternalRequest`, its answer carries the member's header;
//! a read is answered from the store as it is when the builder is called. The order of builder
//! calls is therefore the true linearization, and the times given to each op are free, which
//! is how the tests make ops concurrent or make real time disagree with the log.

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::detcdpb::{internal_request, InternalRequest};
use detcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest,
};
use detcd::state::State;
use detcd_sim::checker::linearizability::{check, Stats, Violation};
use detcd_sim::history::{AppliedEntry, Op, Outcome, SimNanos};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message as _;

const MEMBER: MemberId = 0x11;

// =============================================================================================
// Building histories
// =============================================================================================

#[derive(Default)]
struct History {
    kv: State,
    ops: Vec<Op>,
    log: Vec<AppliedEntry>,
    next_proposal: u64,
}

impl History {
    /// A write that takes effect now: applied, appended to the log, answered as the node does.
    fn write(&mut self, client: u64, request: ClientRequest, at: (SimNanos, SimNanos)) -> usize {
        let op = internal_op(&request);
        let answer = apply(&mut self.kv, &op);
        let proposal = self.propose(op);
        self.push(
            client,
            request,
            at.0,
            Some(proposal),
            answered(answer, at.1),
        )
    }

    /// A write proposed but never applied, whose client never learned that.
    fn lost_in_flight(&mut self, client: u64, request: ClientRequest, invoked_at: u64) -> usize {
        self.next_proposal += 1;
        let proposal = Some((MEMBER, self.next_proposal));
        self.push(client, request, invoked_at, proposal, Outcome::Unknown)
    }

    /// A read answered from the store as it is now.
    fn read(&mut self, client: u64, request: ClientRequest, at: (SimNanos, SimNanos)) -> usize {
        let answer = read(&mut self.kv, &request);
        self.push(client, request, at.0, None, answered(answer, at.1))
    }

    /// A request refused before it was proposed or read.
    fn refused(
        &mut self,
        client: u64,
        request: ClientRequest,
        error: EtcdError,
        at: (SimNanos, SimNanos),
    ) -> usize {
        let outcome = Outcome::Err {
            error,
            returned_at: at.1,
        };
        self.push(client, request, at.0, None, outcome)
    }

    /// A leader's empty entry.
    fn noop(&mut self) {
        self.append(Bytes::new());
    }

    fn propose(&mut self, op: internal_request::Op) -> (MemberId, u64) {
        self.next_proposal += 1;
        let request = InternalRequest {
            origin: MEMBER,
            request_id: self.next_proposal,
            op: Some(op),
            ..InternalRequest::default()
        };
        self.append(Bytes::from(request.encode_to_vec()));
        (MEMBER, self.next_proposal)
    }

    fn append(&mut self, data: Bytes) {
        let index = self.log.len() as u64 + 1;
        self.log.push(AppliedEntry::new(index, 2, data));
    }

    fn push(
        &mut self,
        client: u64,
        request: ClientRequest,
        invoked_at: SimNanos,
        proposal: Option<(MemberId, u64)>,
        outcome: Outcome,
    ) -> usize {
        self.ops.push(Op {
            id: self.ops.len() as u64 + 100,
            client,
            member: MEMBER,
            incarnation: 1,
            request,
            invoked_at,
            outcome,
            proposal,
            acting_as: None,
            signed_at: None,
        });
        self.ops.len() - 1
    }

    fn check(&self) -> Result<Stats, Violation> {
        check(&self.ops, &self.log, &State::new(), u64::MAX)
    }

    fn id(&self, slot: usize) -> u64 {
        self.ops[slot].id
    }

    /// The op's response, to tamper with.
    fn response(&mut self, slot: usize) -> &mut ClientResponse {
        match &mut self.ops[slot].outcome {
            Outcome::Ok { response, .. } => response,
            other => panic!("op {slot} was not answered: {other:?}"),
        }
    }
}

fn internal_op(request: &ClientRequest) -> internal_request::Op {
    match request.clone() {
        ClientRequest::Put(r) => internal_request::Op::Put(r),
        ClientRequest::DeleteRange(r) => internal_request::Op::DeleteRange(r),
        ClientRequest::Txn(r) => internal_request::Op::Txn(r),
        ClientRequest::Compact(r) => internal_request::Op::Compaction(r),
        ClientRequest::LeaseGrant(r) => internal_request::Op::LeaseGrant(r),
        ClientRequest::LeaseRevoke(r) => internal_request::Op::LeaseRevoke(r),
        other => panic!("{} is never proposed", other.name()),
    }
}

fn apply(state: &mut State, op: &internal_request::Op) -> Result<ClientResponse, EtcdError> {
    state
        .apply(op.clone())
        .result
        .expect("a client's op has an answer")
        .map(|answer| answer.response)
}

fn read(state: &mut State, request: &ClientRequest) -> Result<ClientResponse, EtcdError> {
    state.read(request, u64::MAX).map(|answer| answer.response)
}

/// The answer as a client gets it: the member fills in cluster, member and term, which the
/// checker must ignore.
fn answered(answer: Result<ClientResponse, EtcdError>, returned_at: SimNanos) -> Outcome {
    match answer {
        Ok(mut response) => {
            let header = header_of(&mut response)
                .as_mut()
                .expect("the store sets a header");
            *header = ResponseHeader {
                cluster_id: 0xc1,
                member_id: MEMBER,
                raft_term: 2,
                revision: header.revision,
            };
            Outcome::Ok {
                response,
                returned_at,
            }
        }
        Err(error) => Outcome::Err { error, returned_at },
    }
}

fn header_of(response: &mut ClientResponse) -> &mut Option<ResponseHeader> {
    response.header_mut()
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str) -> ClientRequest {
    ClientRequest::Put(PutRequest {
        key: bytes(key),
        value: bytes(value),
        prev_kv: true,
        ..PutRequest::default()
    })
}

fn put_keep_value(key: &str) -> ClientRequest {
    ClientRequest::Put(PutRequest {
        key: bytes(key),
        ignore_value: true,
        ..PutRequest::default()
    })
}

fn delete(key: &str) -> ClientRequest {
    ClientRequest::DeleteRange(DeleteRangeRequest {
        key: bytes(key),
        prev_kv: true,
        ..DeleteRangeRequest::default()
    })
}

fn get(key: &str) -> ClientRequest {
    get_at(key, 0, false)
}

fn get_at(key: &str, revision: i64, serializable: bool) -> ClientRequest {
    ClientRequest::Range(RangeRequest {
        key: bytes(key),
        revision,
        serializable,
        ..RangeRequest::default()
    })
}

fn compact(revision: i64) -> ClientRequest {
    ClientRequest::Compact(CompactionRequest {
        revision,
        physical: false,
    })
}

fn version_is(key: &str, version: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: bytes(key),
        target_union: Some(TargetUnion::Version(version)),
        ..Compare::default()
    }
}

fn range_op(key: &str) -> RequestOp {
    let ClientRequest::Range(r) = get(key) else {
        unreachable!()
    };
    RequestOp {
        request: Some(Request::RequestRange(r)),
    }
}

/// Puts `value` if `key` is at `version`, otherwise reads it.
fn compare_and_put(key: &str, version: i64, value: &str) -> ClientRequest {
    let ClientRequest::Put(p) = put(key, value) else {
        unreachable!()
    };
    ClientRequest::Txn(TxnRequest {
        compare: vec![version_is(key, version)],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(p)),
        }],
        failure: vec![range_op(key)],
    })
}

/// A read-only txn: reads `a` and `b` if `a` is at `version`, else `b` alone.
fn read_txn(version: i64) -> ClientRequest {
    ClientRequest::Txn(TxnRequest {
        compare: vec![version_is("a", version)],
        success: vec![range_op("a"), range_op("b")],
        failure: vec![range_op("b")],
    })
}

fn expect_violation(h: &History) -> Violation {
    match h.check() {
        Ok(stats) => panic!("the history passed: {stats:?}"),
        Err(v) => {
            // Every violation must read as a sentence naming ops; none may panic to print.
            assert!(!v.to_string().is_empty());
            v
        }
    }
}

// =============================================================================================
// Histories that must pass
// =============================================================================================

#[test]
fn concurrent_history_of_every_request_kind_passes() {
    let mut h = History::default();
    // Client 3 reads `a` while client 1's put of it is in flight, and sees nothing yet.
    h.read(3, get("a"), (10, 20));
    h.write(1, put("a", "1"), (0, 30));
    h.noop();
    h.write(2, put("b", "1"), (5, 40));
    // A read-only txn concurrent with the put of `b` sees it.
    h.read(4, read_txn(1), (35, 45));
    h.write(1, compare_and_put("a", 1, "2"), (50, 60));
    h.write(2, compare_and_put("a", 1, "3"), (55, 65)); // loses the race: reads `a`
    h.write(3, delete("b"), (70, 80));
    h.write(3, delete("b"), (85, 90)); // deletes nothing, no new revision
    h.read(4, get("b"), (86, 95)); // during the second delete, same revision
    h.write(1, compact(3), (100, 110));
    h.read(2, get_at("a", 2, false), (120, 130)); // compacted by now
    h.read(2, get_at("a", 4, false), (120, 130)); // the present: fine
    h.read(2, get_at("a", 9, false), (120, 130)); // the future
    h.refused(4, put("", "x"), EtcdError::EmptyKey, (140, 141));
    let stats = h.check().expect("a linearizable history passes");
    // The model's hash after the log's 8 entries, for the members' to be compared with.
    assert_eq!(stats.final_hash.map(|(index, _)| index), Some(8));
    // The noop takes no revision, nor do the losing txn and the second delete.
    assert_eq!(stats.revisions, [1, 2, 2, 3, 4, 4, 5, 5, 5]);
    assert_eq!(
        Stats {
            final_hash: None,
            revisions: Vec::new(),
            ..stats
        },
        Stats {
            log_requests: 7,
            puts: 2,
            deletes: 2,
            write_txns: 2,
            compactions: 1,
            linearizable_reads: 6,
            refused: 1,
            ..Stats::default()
        }
    );
}

#[test]
fn serializable_read_of_an_old_revision_passes_whenever_it_returns() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let old = h.read(2, get_at("a", 0, true), (100, 110));
    h.write(1, put("a", "2"), (20, 30));
    assert_eq!(h.check().expect("passes").serializable_reads, 1);
    // The same answer from a linearizable read is stale.
    if let ClientRequest::Range(r) = &mut h.ops[old].request {
        r.serializable = false;
    }
    let violation = expect_violation(&h);
    assert!(
        matches!(violation, Violation::StaleRead { .. }),
        "{violation}"
    );
}

#[test]
fn indeterminate_write_that_took_effect_passes() {
    let mut h = History::default();
    let w = h.write(1, put("a", "1"), (0, 10));
    h.ops[w].outcome = Outcome::Unknown;
    let w2 = h.write(1, put("b", "1"), (20, 30));
    h.ops[w2].outcome = Outcome::Err {
        error: EtcdError::TimeoutDueToLeaderFail,
        returned_at: 30,
    };
    h.read(2, get("a"), (40, 50));
    let stats = h.check().expect("an unanswered write may take effect");
    assert_eq!(stats.indeterminate_applied, 2);
}

#[test]
fn indeterminate_write_that_never_took_effect_passes() {
    let mut h = History::default();
    h.lost_in_flight(1, put("a", "1"), 0);
    let w = h.lost_in_flight(1, put("a", "2"), 5);
    h.ops[w].outcome = Outcome::Err {
        error: EtcdError::Timeout,
        returned_at: 8,
    };
    h.read(2, get("a"), (40, 50));
    let stats = h
        .check()
        .expect("an unanswered write may never take effect");
    assert_eq!(stats.indeterminate_absent, 2);
}

#[test]
fn definite_validation_error_not_in_the_log_passes() {
    let mut h = History::default();
    h.refused(1, put("", "x"), EtcdError::EmptyKey, (0, 1));
    let ClientRequest::Put(mut p) = put_keep_value("a") else {
        unreachable!()
    };
    p.value = bytes("x");
    h.refused(1, ClientRequest::Put(p), EtcdError::ValueProvided, (2, 3));
    h.refused(1, put("a", "x"), EtcdError::NoSpace, (4, 5));
    h.refused(2, get(""), EtcdError::EmptyKey, (4, 5));
    assert_eq!(h.check().expect("refusals pass").refused, 4);
}

#[test]
fn definite_apply_time_error_in_the_log_passes() {
    let mut h = History::default();
    let w = h.write(1, put_keep_value("a"), (0, 10));
    assert!(matches!(
        h.ops[w].outcome,
        Outcome::Err {
            error: EtcdError::KeyNotFound,
            ..
        }
    ));
    h.write(1, compact(5), (20, 30)); // FutureRev, decided when applied
    assert_eq!(h.check().expect("apply errors pass").puts, 1);
}

#[test]
fn revision_error_reads_pass_where_the_store_gives_them() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    h.write(1, put("a", "2"), (0, 10));
    // Concurrent with the compaction: either side of it works, the error says which.
    h.read(2, get_at("a", 2, false), (15, 40));
    h.write(1, compact(3), (20, 30));
    h.read(3, get_at("a", 2, false), (15, 40));
    h.check().expect("passes");
}

#[test]
fn read_only_txn_answered_compacted_passes_after_the_compaction() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    h.write(1, put("a", "2"), (20, 30));
    h.write(1, compact(3), (40, 50));
    let ClientRequest::Txn(mut t) = read_txn(1) else {
        unreachable!()
    };
    if let Some(Request::RequestRange(r)) = &mut t.failure[0].request {
        r.revision = 2;
    }
    let r = h.read(2, ClientRequest::Txn(t), (60, 70));
    assert!(matches!(
        h.ops[r].outcome,
        Outcome::Err {
            error: EtcdError::Compacted,
            ..
        }
    ));
    assert_eq!(h.check().expect("passes").linearizable_reads, 1);
}

// =============================================================================================
// Violations
// =============================================================================================

#[test]
fn stale_read_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let r = h.read(2, get("a"), (40, 50)); // answered at revision 2
    let w = h.write(1, put("a", "2"), (20, 30)); // finished before the read began
    match expect_violation(&h) {
        Violation::StaleRead {
            read,
            revision,
            after,
            ..
        } => {
            assert_eq!((read.id, revision, after.id), (h.id(r), 2, h.id(w)));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn read_of_a_write_not_yet_started_is_caught() {
    let mut h = History::default();
    let w = h.write(1, put("a", "1"), (20, 30));
    let r = h.read(2, get("a"), (0, 10));
    match expect_violation(&h) {
        Violation::RealTimeInversion { earlier, later, .. } => {
            assert_eq!((earlier.id, later.id), (h.id(r), h.id(w)));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let w = h.write(1, put("a", "2"), (20, 30));
    h.log.pop();
    match expect_violation(&h) {
        Violation::LostWrite { op } => assert_eq!(op.id, h.id(w)),
        other => panic!("{other}"),
    }
}

#[test]
fn acknowledged_answer_that_differs_from_the_replay_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let w = h.write(1, put("a", "2"), (20, 30));
    let ClientResponse::Put(p) = h.response(w) else {
        unreachable!()
    };
    p.prev_kv.as_mut().expect("a previous value").value = bytes("0");
    let violation = expect_violation(&h);
    assert!(
        matches!(&violation, Violation::WrongWriteAnswer { op, index: 2, .. } if op.id == h.id(w)),
        "{violation}"
    );
    assert!(violation.to_string().contains(&format!("op {}", h.id(w))));

    let mut h = History::default();
    let w = h.write(1, put("a", "1"), (0, 10));
    header_of(h.response(w)).as_mut().unwrap().revision = 3;
    assert!(matches!(
        expect_violation(&h),
        Violation::WrongWriteAnswer { .. }
    ));
}

#[test]
fn phantom_entry_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let stranger = InternalRequest {
        origin: MEMBER,
        request_id: 999,
        op: Some(internal_op(&put("a", "x"))),
        ..InternalRequest::default()
    };
    h.append(Bytes::from(stranger.encode_to_vec()));
    assert!(matches!(
        expect_violation(&h),
        Violation::PhantomWrite {
            index: 2,
            request_id: 999,
            ..
        }
    ));
}

#[test]
fn duplicate_apply_is_caught() {
    let mut h = History::default();
    let w = h.write(1, put("a", "1"), (0, 10));
    let again = h.log[0].data().clone();
    h.append(again);
    match expect_violation(&h) {
        Violation::DuplicateApply {
            op,
            first_index: 1,
            second_index: 2,
        } => assert_eq!(op.id, h.id(w)),
        other => panic!("{other}"),
    }
}

#[test]
fn read_whose_data_does_not_match_its_revision_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let r = h.read(2, get("a"), (20, 30));
    h.write(1, put("a", "2"), (40, 50));
    let ClientResponse::Range(resp) = h.response(r) else {
        unreachable!()
    };
    resp.kvs[0].value = bytes("2"); // the next revision's value, at this revision
    match expect_violation(&h) {
        Violation::WrongReadAnswer { read, revision, .. } => {
            assert_eq!((read.id, revision), (h.id(r), 2))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn revision_error_the_store_never_gives_is_caught() {
    let mut h = History::default();
    h.write(1, put("a", "1"), (0, 10));
    let r = h.read(2, get_at("a", 1, false), (20, 30));
    h.ops[r].outcome = Outcome::Err {
        error: EtcdError::Compacted,
        returned_at: 30,
    };
    assert!(matches!(
        expect_violation(&h),
        Violation::WrongReadAnswer { .. }
    ));
}

#[test]
fn future_revision_error_after_the_revision_was_made_is_caught() {
    let mut h = History::default();
    let r = h.read(2, get_at("a", 2, false), (40, 50)); // FutureRev on the empty store
    h.write(1, put("a", "1"), (0, 10)); // made revision 2 before the read began
    match expect_violation(&h) {
        Violation::WrongReadAnswer { read, revision, .. } => {
            assert_eq!((read.id, revision), (h.id(r), 2))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn real_time_inversion_of_two_writes_is_caught() {
    let mut h = History::default();
    let second = h.write(2, put("b", "1"), (20, 30)); // first in the log
    let first = h.write(1, put("a", "1"), (0, 10)); // but finished before it began
    match expect_violation(&h) {
        Violation::RealTimeInversion { earlier, later, .. } => {
            assert_eq!((earlier.id, later.id), (h.id(first), h.id(second)));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn definite_error_only_the_apply_can_give_is_caught_when_not_applied() {
    let mut h = History::default();
    h.refused(1, put_keep_value("a"), EtcdError::KeyNotFound, (0, 10));
    assert!(matches!(
        expect_violation(&h),
        Violation::UnexplainedError { .. }
    ));
}

#[test]
fn entry_carrying_another_request_is_caught() {
    let mut h = History::default();
    let w = h.write(1, put("a", "1"), (0, 10));
    h.ops[w].request = put("a", "2");
    assert!(matches!(
        expect_violation(&h),
        Violation::EntryMismatch { index: 1, .. }
    ));
}

// =============================================================================================
// Properties: sequential histories pass, reordered logs do not
// =============================================================================================

#[derive(Clone, Copy, Debug)]
enum Step {
    Put {
        key: u8,
        value: u8,
    },
    PutKeepValue {
        key: u8,
    },
    Delete {
        key: u8,
        to_end: bool,
    },
    CompareAndPut {
        key: u8,
        version: i64,
        value: u8,
    },
    ReadTxn {
        version: i64,
        serializable: bool,
    },
    /// `back`: 0 reads the present, -1 the future, n > 0 n revisions ago.
    Range {
        key: u8,
        to_end: bool,
        back: i64,
        serializable: bool,
    },
    Compact {
        back: i64,
    },
    EmptyKeyPut,
    Noop,
}

/// What happened to the client's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Answered,
    /// Took effect (writes), but the client never learned.
    Unanswered,
    /// A write proposed and never applied; the client never learned.
    Dropped,
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0u8..3;
    prop_oneof![
        4 => (key.clone(), 0u8..4).prop_map(|(key, value)| Step::Put { key, value }),
        1 => key.clone().prop_map(|key| Step::PutKeepValue { key }),
        1 => (key.clone(), any::<bool>()).prop_map(|(key, to_end)| Step::Delete { key, to_end }),
        2 => (key.clone(), 0i64..3, 0u8..4)
            .prop_map(|(key, version, value)| Step::CompareAndPut { key, version, value }),
        1 => (0i64..3, any::<bool>())
            .prop_map(|(version, serializable)| Step::ReadTxn { version, serializable }),
        3 => (key, any::<bool>(), -1i64..4, any::<bool>()).prop_map(
            |(key, to_end, back, serializable)| Step::Range { key, to_end, back, serializable }
        ),
        1 => (-1i64..3).prop_map(|back| Step::Compact { back }),
        1 => Just(Step::EmptyKeyPut),
        1 => Just(Step::Noop),
    ]
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![6 => Just(Fate::Answered), 1 => Just(Fate::Unanswered), 1 => Just(Fate::Dropped)]
}

fn key_name(key: u8) -> String {
    ((b'a' + key) as char).to_string()
}

fn request_of(step: Step, current: i64) -> Option<ClientRequest> {
    let request = match step {
        Step::Put { key, value } => put(&key_name(key), &value.to_string()),
        Step::PutKeepValue { key } => put_keep_value(&key_name(key)),
        Step::Delete { key, to_end } => {
            let mut d = DeleteRangeRequest {
                key: bytes(&key_name(key)),
                prev_kv: true,
                ..DeleteRangeRequest::default()
            };
            if to_end {
                d.range_end = Bytes::from_static(b"\0");
            }
            ClientRequest::DeleteRange(d)
        }
        Step::CompareAndPut {
            key,
            version,
            value,
        } => compare_and_put(&key_name(key), version, &value.to_string()),
        Step::ReadTxn {
            version,
            serializable,
        } => {
            let mut t = read_txn(version);
            if let ClientRequest::Txn(t) = &mut t {
                for op in t.success.iter_mut().chain(&mut t.failure) {
                    if let Some(Request::RequestRange(r)) = &mut op.request {
                        r.serializable = serializable;
                    }
                }
            }
            t
        }
        Step::Range {
            key,
            to_end,
            back,
            serializable,
        } => {
            let revision = if back == 0 { 0 } else { current - back };
            let mut r = RangeRequest {
                key: bytes(&key_name(key)),
                revision,
                serializable,
                ..RangeRequest::default()
            };
            if to_end {
                r.range_end = Bytes::from_static(b"\0");
            }
            ClientRequest::Range(r)
        }
        Step::Compact { back } => compact(current - back),
        Step::EmptyKeyPut | Step::Noop => return None,
    };
    Some(request)
}

fn is_write(request: &ClientRequest) -> bool {
    match request {
        ClientRequest::Range(_) => false,
        ClientRequest::Txn(t) => t.success.iter().chain(&t.failure).any(|op| {
            matches!(
                op.request,
                Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_))
            )
        }),
        _ => true,
    }
}

/// Runs `steps` one after another (each op returns before the next is invoked).
fn sequential(steps: &[(Step, Fate)]) -> History {
    let mut h = History::default();
    for (i, (step, fate)) in steps.iter().enumerate() {
        let at = (10 * i as u64, 10 * i as u64 + 5);
        let client = i as u64 % 3;
        let Some(request) = request_of(*step, h.kv.kv().current_revision()) else {
            match step {
                Step::EmptyKeyPut => {
                    h.refused(client, put("", "x"), EtcdError::EmptyKey, at);
                }
                _ => h.noop(),
            }
            continue;
        };
        let slot = match (is_write(&request), fate) {
            (true, Fate::Dropped) => h.lost_in_flight(client, request, at.0),
            (true, _) => h.write(client, request, at),
            (false, _) => h.read(client, request, at),
        };
        if *fate == Fate::Unanswered {
            // Both ways a client can end up not knowing.
            h.ops[slot].outcome = if slot % 2 == 0 {
                Outcome::Unknown
            } else {
                Outcome::Err {
                    error: EtcdError::Timeout,
                    returned_at: at.1,
                }
            };
        }
    }
    h
}

/// Log positions of writes whose clients got an answer.
fn answered_write_entries(h: &History) -> Vec<usize> {
    let mut positions: Vec<usize> = h
        .ops
        .iter()
        .filter(|op| op.proposal.is_some() && !op.outcome.is_indeterminate())
        .filter_map(|op| {
            h.log
                .iter()
                .position(|e| !e.data().is_empty() && decoded_proposal(e) == op.proposal)
        })
        .collect();
    positions.sort_unstable();
    positions
}

fn decoded_proposal(entry: &AppliedEntry) -> Option<(MemberId, u64)> {
    let r = InternalRequest::decode(entry.data().as_ref()).ok()?;
    Some((r.origin, r.request_id))
}

fn slot_of_entry(h: &History, position: usize) -> usize {
    let proposal = decoded_proposal(&h.log[position]);
    h.ops
        .iter()
        .position(|op| op.proposal == proposal)
        .expect("every entry has its op")
}

fn swap_entries(h: &mut History, a: usize, b: usize) {
    let (entry_a, entry_b) = (&h.log[a], &h.log[b]);
    let swapped_a = AppliedEntry::new(entry_a.index, entry_a.term, entry_b.data().clone());
    let swapped_b = AppliedEntry::new(entry_b.index, entry_b.term, entry_a.data().clone());
    (h.log[a], h.log[b]) = (swapped_a, swapped_b);
}

fn history() -> impl Strategy<Value = Vec<(Step, Fate)>> {
    prop::collection::vec((step(), fate()), 1..60)
}

proptest! {
    // Tests run with `sim/` as the working directory, where proptest cannot find this file
    // from `file!()`; name the regressions file directly instead.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/linearizability.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_sequential_history_passes(steps in history()) {
        let h = sequential(&steps);
        if let Err(v) = h.check() {
            prop_assert!(false, "{v}");
        }
    }

    /// In a sequential history each answered write finished before the next began, so any
    /// other order of them in the log breaks real time, if not the answers first.
    #[test]
    fn swapping_two_answered_writes_is_caught(steps in history(), pick in any::<(usize, usize)>()) {
        let mut h = sequential(&steps);
        let writes = answered_write_entries(&h);
        prop_assume!(writes.len() >= 2);
        let a = writes[pick.0 % writes.len()];
        let b = writes[pick.1 % writes.len()];
        prop_assume!(a != b);
        swap_entries(&mut h, a, b);
        prop_assert!(h.check().is_err());
    }

    /// Two neighbouring writes that each made a revision, made concurrent: the history still
    /// passes, real time no longer orders them, and the swapped log is caught by the answers.
    #[test]
    fn swapping_concurrent_writes_is_caught_by_their_answers(steps in history()) {
        let mut h = sequential(&steps);
        let writes = answered_write_entries(&h);
        let revision = |h: &History, slot: usize| match &h.ops[slot].outcome {
            Outcome::Ok { response, .. } => match response {
                ClientResponse::Put(r) => r.header.map(|h| h.revision),
                ClientResponse::DeleteRange(r) => r.header.map(|h| h.revision),
                ClientResponse::Txn(r) => r.header.map(|h| h.revision),
                _ => None,
            },
            _ => None,
        };
        let pair = writes.windows(2).map(|w| (slot_of_entry(&h, w[0]), slot_of_entry(&h, w[1])))
            .zip(writes.windows(2))
            .find(|((x, y), w)| {
                let (rx, ry) = (revision(&h, *x), revision(&h, *y));
                rx.is_some() && ry == rx.map(|r| r + 1)
                    && h.log[w[0] + 1..w[1]].iter().all(|e| decoded_proposal(e).is_none())
            });
        let Some(((x, y), w)) = pair else {
            return Ok(());
        };
        let end = h.ops[y].outcome.returned_at().expect("answered");
        h.ops[y].invoked_at = h.ops[x].invoked_at;
        if let Outcome::Ok { returned_at, .. } = &mut h.ops[x].outcome {
            *returned_at = end;
        }
        if let Err(v) = h.check() {
            prop_assert!(false, "concurrent writes in log order must pass: {v}");
        }
        swap_entries(&mut h, w[0], w[1]);
        let violation = h.check();
        prop_assert!(
            matches!(violation, Err(Violation::WrongWriteAnswer { .. })),
            "{violation:?}"
        );
    }
}
