//! Model-based tests of `detcd::mvcc::KeySpace`.
//!
//! Random operation sequences (puts with every option, ranged deletes, ranges with every option
//! including past revisions, txns with compares over keys and ranges and nested txns,
//! compactions, HashKV) run against `KeySpace` and against the simulator's reference model
//! (`detcd_sim::model`), a deliberately naive transcription of etcd's rules: it keeps the complete
//! key -> KeyValue map of every revision and a flat log of every change, and answers everything
//! by linear scans. Every response, every
//! error and the HashKV at every reachable revision must agree. Small key and value alphabets
//! make collisions, overlaps and ties common; proptest shrinks failures to short sequences.
//!
//! Also: snapshots round-trip (the decoded store equals the original, re-encodes to the same
//! bytes and keeps answering the same), and decoding arbitrary or garbled bytes fails cleanly.

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::mvcc::{
    check_delete_range, check_put, check_range, check_txn, ColdRead, KeySpace, MemoryColdStore,
    NoColdValues,
};
use detcd::proto::etcdserverpb::compare::TargetUnion;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use detcd_sim::model::{api_checks, KvModel as Model};
use proptest::prelude::*;

/// The only lease that exists in these tests.
const LIVE_LEASE: i64 = 7;
/// Small, so that TooManyOps is reachable.
const MAX_TXN_OPS: usize = 8;

fn leases(id: i64) -> bool {
    id == LIVE_LEASE
}

// =============================================================================================
// Operation generation
// =============================================================================================

/// Revisions are generated relative to the store's revision when the operation runs:
/// 0 and negatives are literal, 1..=2 mean "that far in the future", 100 + k means "k back".
fn resolve(spec: i64, current: i64) -> i64 {
    match spec {
        s if s <= 0 => s,
        s if s >= 100 => current - (s - 100),
        s => current + s,
    }
}

fn rev_spec() -> impl Strategy<Value = i64> {
    prop_oneof![4 => Just(0), 1 => -2i64..=-1, 1 => 1i64..=2, 5 => 100i64..=108]
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        80 => prop::sample::select(vec!["a", "b", "c", "d", "aa", "ab", "b\0", "ba", "\0"])
            .prop_map(|k| Bytes::copy_from_slice(k.as_bytes())),
        1 => Just(Bytes::new()),
    ]
}

fn range_end() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => Just(Bytes::new()),
        3 => Just(Bytes::from_static(b"\0")),
        4 => prop::sample::select(vec!["a", "b", "c", "d", "e", "ab", "b\0", "ac"])
            .prop_map(|k| Bytes::copy_from_slice(k.as_bytes())),
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["", "x", "y", "zz"])
        .prop_map(|v| Bytes::copy_from_slice(v.as_bytes()))
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![8 => Just(0), 2 => Just(LIVE_LEASE), 1 => Just(9)]
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        lease(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(key, value, lease, prev_kv, ignore_value, ignore_lease)| {
            // Mostly well-formed ignore_* requests, sometimes not (ValueProvided/LeaseProvided).
            let value = if ignore_value && &value[..] != b"x" {
                Bytes::new()
            } else {
                value
            };
            let lease = if ignore_lease && lease == LIVE_LEASE {
                0
            } else {
                lease
            };
            PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            }
        })
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn filter_rev() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0), 1 => 1i64..=12]
}

fn range_request() -> impl Strategy<Value = RangeRequest> {
    let end = prop_oneof![2 => range_end(), 1 => Just(Bytes::from_static(b"\0"))];
    (
        (
            key(),
            end,
            prop_oneof![3 => Just(0i64), 2 => 1i64..=3, 1 => Just(-1i64)],
            rev_spec(),
        ),
        prop_oneof![
            12 => Just((0i32, 0i32)),
            12 => (0i32..=2, 0i32..=4),
            1 => (0i32..=3, 0i32..=5),
        ],
        (prop::bool::weighted(0.2), prop::bool::weighted(0.15)),
        (filter_rev(), filter_rev(), filter_rev(), filter_rev()),
    )
        .prop_map(
            |(
                (key, range_end, limit, revision),
                (sort_order, sort_target),
                (keys_only, count_only),
                f,
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    serializable: false,
                    keys_only,
                    count_only,
                    min_mod_revision: f.0,
                    max_mod_revision: f.1,
                    min_create_revision: f.2,
                    max_create_revision: f.3,
                }
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        prop_oneof![10 => 0i32..=4, 1 => Just(9)],
        prop_oneof![10 => 0i32..=3, 1 => Just(8)],
        key(),
        prop_oneof![4 => Just(Bytes::new()), 1 => range_end()],
        0i64..=6,
        value(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(target, result, key, range_end, n, v, mismatched)| {
            let union = match (target, mismatched) {
                (_, true) => Some(TargetUnion::Lease(n)),
                (0, _) => Some(TargetUnion::Version(n)),
                (1, _) => Some(TargetUnion::CreateRevision(n)),
                (2, _) => Some(TargetUnion::ModRevision(n)),
                (3, _) => Some(TargetUnion::Value(v)),
                (4, _) => Some(TargetUnion::Lease(if n > 3 { LIVE_LEASE } else { 0 })),
                _ => None,
            };
            Compare {
                result,
                target,
                key,
                range_end,
                target_union: union,
            }
        })
}

fn request_op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        12 => put_request().prop_map(|p| Some(Request::RequestPut(p))),
        6 => delete_request().prop_map(|d| Some(Request::RequestDeleteRange(d))),
        9 => range_request().prop_map(|r| Some(Request::RequestRange(r))),
        1 => Just(None),
    ];
    if depth == 0 {
        leaf.prop_map(|request| RequestOp { request }).boxed()
    } else {
        prop_oneof![
            6 => leaf,
            2 => txn_request(depth - 1).prop_map(|t| Some(Request::RequestTxn(t))),
        ]
        .prop_map(|request| RequestOp { request })
        .boxed()
    }
}

fn txn_request(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        prop::collection::vec(compare(), 0..=2),
        prop::collection::vec(request_op(depth), 0..=3),
        prop::collection::vec(request_op(depth), 0..=3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    Hash(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => put_request().prop_map(Op::Put),
        2 => delete_request().prop_map(Op::Delete),
        6 => range_request().prop_map(Op::Range),
        5 => txn_request(2).prop_map(Op::Txn),
        1 => rev_spec().prop_map(Op::Compact),
        1 => rev_spec().prop_map(Op::Hash),
    ]
}

/// Turns the relative revisions of generated requests into real ones.
fn resolve_txn(t: &mut TxnRequest, current: i64) {
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match &mut op.request {
            Some(Request::RequestRange(r)) => r.revision = resolve(r.revision, current),
            Some(Request::RequestTxn(inner)) => resolve_txn(inner, current),
            _ => {}
        }
    }
}

// =============================================================================================
// Running
// =============================================================================================

fn run_one(ks: &mut KeySpace, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    run_one_with(ks, &mut NoColdStore, model, op)
}

/// Where the store under test keeps cold values: nowhere (every value in memory), or segments
/// in memory that take the store's operations after every step.
trait ColdSide {
    fn reader(&self) -> &dyn ColdRead;
    fn absorb(&mut self, ks: &mut KeySpace);
}

struct NoColdStore;

impl ColdSide for NoColdStore {
    fn reader(&self) -> &dyn ColdRead {
        &NoColdValues
    }
    fn absorb(&mut self, ks: &mut KeySpace) {
        assert!(ks.take_cold_ops().is_empty());
    }
}

impl ColdSide for MemoryColdStore {
    fn reader(&self) -> &dyn ColdRead {
        self
    }
    fn absorb(&mut self, ks: &mut KeySpace) {
        for op in ks.take_cold_ops() {
            self.apply(&op);
        }
    }
}

fn range_filled(
    ks: &KeySpace,
    cold: &dyn ColdSide,
    r: &RangeRequest,
) -> Result<RangeResponse, EtcdError> {
    let (mut response, values) = ks.read_range(r, u64::MAX)?;
    values
        .fill_range(&mut response, cold.reader())
        .expect("cold values readable");
    Ok(response)
}

fn run_one_with(
    ks: &mut KeySpace,
    cold: &mut dyn ColdSide,
    model: &mut Model,
    op: &Op,
) -> Result<(), TestCaseError> {
    let current = ks.current_revision();
    prop_assert_eq!(current, model.current());
    match op.clone() {
        Op::Put(p) => {
            let checked = check_put(&p);
            prop_assert_eq!(&checked, &api_checks::check_put(&p));
            if checked.is_ok() {
                prop_assert_eq!(ks.put_with_leases(&p, &leases), model.put(&p, &leases));
            }
        }
        Op::Delete(d) => {
            let checked = check_delete_range(&d);
            prop_assert_eq!(&checked, &api_checks::check_delete_range(&d));
            if checked.is_ok() {
                prop_assert_eq!(ks.delete_range(&d), Ok(model.delete(&d)));
            }
        }
        Op::Range(mut r) => {
            r.revision = resolve(r.revision, current);
            let checked = check_range(&r);
            prop_assert_eq!(&checked, &api_checks::check_range(&r));
            if checked.is_ok() {
                prop_assert_eq!(range_filled(ks, cold, &r), model.range(&r));
            }
        }
        Op::Txn(mut t) => {
            resolve_txn(&mut t, current);
            let checked = check_txn(&t, MAX_TXN_OPS);
            prop_assert_eq!(&checked, &api_checks::check_txn(&t, MAX_TXN_OPS));
            if checked.is_ok() {
                let answer = ks
                    .txn_with_leases(&t, &leases)
                    .map(|(mut response, values)| {
                        cold.absorb(ks);
                        values
                            .fill_txn(&mut response, cold.reader())
                            .expect("cold values readable");
                        response
                    });
                prop_assert_eq!(answer, model.txn(&t, &leases));
            }
        }
        Op::Compact(spec) => {
            let req = CompactionRequest {
                revision: resolve(spec, current),
                physical: false,
            };
            prop_assert_eq!(ks.compact(&req), model.compact(req.revision));
        }
        Op::Hash(spec) => {
            let rev = resolve(spec, current);
            prop_assert_eq!(ks.hash_kv(rev, cold.reader()), model.hash_kv(rev));
        }
    }
    cold.absorb(ks);
    prop_assert_eq!(ks.compact_revision(), model.compact_main().max(0));
    if let Err(broken) = ks.check_invariants() {
        return Err(TestCaseError::fail(broken));
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn key_space_agrees_with_the_naive_model(ops in ops()) {
        let mut ks = KeySpace::new();
        let mut model = Model::default();
        for op in &ops {
            run_one(&mut ks, &mut model, op)?;
        }
        for rev in -1..=ks.current_revision() + 1 {
            prop_assert_eq!(ks.hash_kv(rev, &NoColdValues), model.hash_kv(rev), "hash at revision {}", rev);
        }
        let full = RangeRequest { key: Bytes::from_static(b"\0"), range_end: Bytes::from_static(b"\0"), ..RangeRequest::default() };
        prop_assert_eq!(ks.range(&full), model.range(&full));
    }

    /// The same, with superseded values moved to cold segments (from the start, or from a
    /// point in the middle, which moves the whole history at once), at each write or in batches
    /// that leave some of the past in memory: reads of the past, sorting by value, HashKV and
    /// snapshots read them back; compaction releases whole segments.
    #[test]
    fn key_space_with_cold_values_agrees_with_the_naive_model(
        ops in ops(),
        cold_from in 0usize..30,
        batch_bytes in prop_oneof![Just(0u64), 1u64..64],
    ) {
        let mut ks = KeySpace::new();
        let mut cold = MemoryColdStore::default();
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            if i == cold_from {
                ks.keep_superseded_values_cold(batch_bytes);
                cold.absorb(&mut ks);
            }
            run_one_with(&mut ks, &mut cold, &mut model, op)?;
        }
        for rev in -1..=ks.current_revision() + 1 {
            prop_assert_eq!(ks.hash_kv(rev, &cold), model.hash_kv(rev), "hash at revision {}", rev);
        }
        let full = RangeRequest { key: Bytes::from_static(b"\0"), range_end: Bytes::from_static(b"\0"), ..RangeRequest::default() };
        prop_assert_eq!(range_filled(&ks, &cold, &full), model.range(&full));
        // A snapshot reads the cold values back: it equals the snapshot of a twin that kept
        // everything in memory.
        let encoded = ks.view().encode(&cold).expect("cold values readable");
        let twin = KeySpace::decode_snapshot(&encoded).expect("decodes");
        prop_assert_eq!(twin.encode_snapshot(), encoded);
        prop_assert_eq!(cold.segment_count(), ks.cold_segment_count());
    }

    #[test]
    fn snapshots_round_trip_and_keep_answering_the_same(before in ops(), after in ops()) {
        let mut ks = KeySpace::new();
        let mut model = Model::default();
        for op in &before {
            run_one(&mut ks, &mut model, op)?;
        }
        let bytes = ks.encode_snapshot();
        let decoded = KeySpace::decode_snapshot(&bytes);
        prop_assert!(decoded.is_ok(), "decode failed: {:?}", decoded.err());
        let mut decoded = decoded.unwrap();
        prop_assert_eq!(&decoded, &ks);
        prop_assert_eq!(decoded.encode_snapshot(), bytes);
        // The restored store and the model must keep agreeing on what follows.
        for op in &after {
            run_one(&mut decoded, &mut model, op)?;
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_fails_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(ks) = KeySpace::decode_snapshot(&bytes) {
            prop_assert!(ks.check_invariants().is_ok());
        }
    }

    #[test]
    fn decoding_garbled_snapshots_fails_cleanly(
        ops in prop::collection::vec(op(), 1..30),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut ks = KeySpace::new();
        let mut model = Model::default();
        for op in &ops {
            run_one(&mut ks, &mut model, op)?;
        }
        let mut bytes = ks.encode_snapshot();
        for (index, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = index.index(bytes.len());
            match kind {
                0 => bytes[at] ^= byte | 1,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
        }
        if let Ok(decoded) = KeySpace::decode_snapshot(&bytes) {
            prop_assert!(decoded.check_invariants().is_ok());
            // Whatever was accepted must be a usable store.
            let mut decoded = decoded;
            let _ = decoded.put(&PutRequest { key: Bytes::from_static(b"a"), ..PutRequest::default() });
            prop_assert!(decoded.check_invariants().is_ok());
            let _ = decoded.compact(&CompactionRequest { revision: decoded.current_revision(), physical: false });
            prop_assert!(decoded.check_invariants().is_ok());
        }
    }
}
