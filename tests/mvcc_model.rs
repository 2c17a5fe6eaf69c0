//! Model-based tests of `detcd::mvcc::KeySpace`.
//!
//! Random operation sequences (puts with every option, ranged deletes, ranges with every option
//! including past revisions, txns with compares over keys and ranges and nested txns,
//! compactions, HashKV) run against `KeySpace` and against `Model`, a deliberately naive
//! transcription of etcd's rules: it keeps the complete key -> KeyValue map of every revision and
//! a flat log of every change, and answers everything by linear scans. Every response, every
//! error and the HashKV at every reachable revision must agree. Small key and value alphabets
//! make collisions, overlaps and ties common; proptest shrinks failures to short sequences.
//!
//! Also: snapshots round-trip (the decoded store equals the original, re-encodes to the same
//! bytes and keeps answering the same), and decoding arbitrary or garbled bytes fails cleanly.

use std::collections::BTreeMap;

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::mvcc::{
    check_delete_range, check_put, check_range, check_txn, go_sort, ColdRead, KeySpace,
    MemoryColdStore, NoColdValues,
};
use detcd::proto::etcdserverpb::compare::TargetUnion;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::response_op::Response;
use detcd::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use detcd::proto::mvccpb::KeyValue;
use proptest::prelude::*;
use prost::Message;

/// The only lease that exists in these tests.
const LIVE_LEASE: i64 = 7;
/// Small, so that TooManyOps is reachable.
const MAX_TXN_OPS: usize = 8;

fn leases(id: i64) -> bool {
    id == LIVE_LEASE
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

// =============================================================================================
// The reference model
// =============================================================================================

type State = BTreeMap<Bytes, KeyValue>;

/// One change, as etcd's backend stores it: `kv` is `None` for a deletion.
#[derive(Clone, Debug)]
struct Change {
    main: i64,
    sub: i64,
    key: Bytes,
    kv: Option<KeyValue>,
}

#[derive(Clone, Debug)]
struct Model {
    /// `states[i]` is the whole key space at revision `i + 1`.
    states: Vec<State>,
    /// Every change ever applied, in order.
    log: Vec<Change>,
    /// etcd's compactMainRev: -1 until the first compaction.
    compact: i64,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => key <= k && k < end,
    }
}

/// A write in progress: the state at the txn's revision and the changes so far.
struct Working<'m> {
    model: &'m Model,
    begin: i64,
    map: State,
    changes: Vec<Change>,
}

impl Working<'_> {
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn state(&self, rev: i64) -> &State {
        if rev == self.begin + 1 {
            &self.map
        } else {
            self.model.state(rev)
        }
    }

    fn write(&mut self, key: &Bytes, kv: Option<KeyValue>) {
        match &kv {
            Some(kv) => self.map.insert(key.clone(), kv.clone()),
            None => self.map.remove(key),
        };
        self.changes.push(Change {
            main: self.begin + 1,
            sub: self.changes.len() as i64,
            key: key.clone(),
            kv,
        });
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, EtcdError> {
        let prev = self.map.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        let (create, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (self.begin + 1, 1),
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: self.begin + 1,
            version,
            value: if p.ignore_value {
                prev.as_ref().unwrap().value.clone()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().unwrap().lease
            } else {
                p.lease
            },
        };
        self.write(&p.key, Some(kv));
        Ok(PutResponse {
            header: header(self.begin + 1),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = self
            .map
            .values()
            .filter(|kv| in_range(&kv.key, &d.key, &d.range_end))
            .cloned()
            .collect();
        for kv in &doomed {
            self.write(&kv.key, None);
        }
        DeleteRangeResponse {
            header: header(self.read_rev()),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { vec![] },
        }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let cur = self.read_rev();
        model_range(r, cur, self.model.compact, |rev| self.state(rev))
    }
}

/// etcd's Range, naively: `state(rev)` gives the whole key space at a revision.
fn model_range<'s>(
    r: &RangeRequest,
    cur: i64,
    compact: i64,
    state: impl Fn(i64) -> &'s State,
) -> Result<RangeResponse, EtcdError> {
    let mut at = r.revision;
    if at > cur {
        return Err(EtcdError::FutureRev);
    }
    if at <= 0 {
        at = cur;
    }
    if at < compact {
        return Err(EtcdError::Compacted);
    }
    let all: Vec<KeyValue> = state(at)
        .values()
        .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
        .cloned()
        .collect();
    let count = all.len() as i64;
    if r.count_only {
        return Ok(RangeResponse {
            header: header(cur),
            kvs: vec![],
            more: false,
            count,
        });
    }
    let natural = |target: i32, order: i32| order == 0 || (target == 0 && order == 1);
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let mut kvs = all;
    if natural(r.sort_target, r.sort_order) && !filtered && r.limit > 0 && r.limit < i64::MAX {
        kvs.truncate((r.limit + 1) as usize);
    }
    kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    let order = if r.sort_target != 0 && r.sort_order == 0 {
        1
    } else {
        r.sort_order
    };
    if !natural(r.sort_target, order) {
        let less: fn(&KeyValue, &KeyValue) -> bool = match r.sort_target {
            0 => |a, b| a.key < b.key,
            1 => |a, b| a.version < b.version,
            2 => |a, b| a.create_revision < b.create_revision,
            3 => |a, b| a.mod_revision < b.mod_revision,
            4 => |a, b| a.value < b.value,
            _ => return Err(EtcdError::InvalidSortOption),
        };
        match order {
            1 => go_sort(&mut kvs, less),
            2 => go_sort(&mut kvs, |a, b| less(b, a)),
            _ => {}
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() as i64 > r.limit {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse {
        header: header(cur),
        kvs,
        more,
        count,
    })
}

fn model_compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int = |x: Option<i64>| x.unwrap_or(0);
    let ord = match c.target {
        3 => {
            let v = match &c.target_union {
                Some(TargetUnion::Value(v)) => v.clone(),
                _ => Bytes::new(),
            };
            kv.value.cmp(&v)
        }
        1 => kv.create_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::CreateRevision(x)) => Some(x),
            _ => None,
        })),
        2 => kv.mod_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::ModRevision(x)) => Some(x),
            _ => None,
        })),
        0 => kv.version.cmp(&int(match c.target_union {
            Some(TargetUnion::Version(x)) => Some(x),
            _ => None,
        })),
        4 => kv.lease.cmp(&int(match c.target_union {
            Some(TargetUnion::Lease(x)) => Some(x),
            _ => None,
        })),
        _ => std::cmp::Ordering::Equal,
    };
    match c.result {
        0 => ord.is_eq(),
        1 => ord.is_gt(),
        2 => ord.is_lt(),
        3 => ord.is_ne(),
        _ => true,
    }
}

/// The branch choice at every level of a txn, flattened in etcd's depth-first order.
fn model_path(state: &State, t: &TxnRequest, out: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| {
        let kvs: Vec<&KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        if kvs.is_empty() {
            c.target != 3 && model_compare_kv(c, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| model_compare_kv(c, kv))
        }
    });
    out.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            model_path(state, inner, out);
        }
    }
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![State::new()],
            log: vec![],
            compact: -1,
        }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64
    }

    fn state(&self, rev: i64) -> &State {
        &self.states[(rev - 1) as usize]
    }

    fn working(&self) -> Working<'_> {
        Working {
            model: self,
            begin: self.current(),
            map: self.states.last().unwrap().clone(),
            changes: vec![],
        }
    }

    fn commit(&mut self, map: State, changes: Vec<Change>) -> i64 {
        if !changes.is_empty() {
            self.states.push(map);
            self.log.extend(changes);
        }
        self.current()
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        model_range(r, self.current(), self.compact, |rev| self.state(rev))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, EtcdError> {
        if p.lease != 0 && !leases(p.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        let mut w = self.working();
        let mut resp = w.put(p)?;
        let (map, changes) = (w.map, w.changes);
        resp.header = header(self.commit(map, changes));
        Ok(resp)
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
        let mut w = self.working();
        let resp = w.delete(d);
        let (map, changes) = (w.map, w.changes);
        self.commit(map, changes);
        Ok(resp)
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let mut path = vec![];
        model_path(self.states.last().unwrap(), t, &mut path);
        let mut cursor = 0;
        self.check_txn_ops(t, &path, &mut cursor)?;
        let mut w = self.working();
        let mut cursor = 0;
        let mut resp = exec_txn(&mut w, t, &path, &mut cursor)?;
        let (map, changes) = (w.map, w.changes);
        resp.header = header(self.commit(map, changes));
        Ok(resp)
    }

    fn check_txn_ops(
        &self,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), EtcdError> {
        let ok = path[*cursor];
        *cursor += 1;
        let now = self.states.last().unwrap();
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    if r.revision != 0 && r.revision > self.current() {
                        return Err(EtcdError::FutureRev);
                    }
                    if r.revision != 0 && r.revision < self.compact {
                        return Err(EtcdError::Compacted);
                    }
                }
                Some(Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !now.contains_key(&p.key) {
                        return Err(EtcdError::KeyNotFound);
                    }
                    if p.lease != 0 && !leases(p.lease) {
                        return Err(EtcdError::LeaseNotFound);
                    }
                }
                Some(Request::RequestTxn(inner)) => self.check_txn_ops(inner, path, cursor)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn compact(&mut self, rev: i64) -> Result<CompactionResponse, EtcdError> {
        if rev <= self.compact {
            return Err(EtcdError::Compacted);
        }
        if rev > self.current() {
            return Err(EtcdError::FutureRev);
        }
        self.compact = rev;
        Ok(CompactionResponse {
            header: header(self.current()),
        })
    }

    /// The changes etcd's backend still holds: all after the compact revision, plus per key its
    /// newest change at or before it if that is a put or a deletion exactly at it.
    fn retained(&self) -> Vec<&Change> {
        let mut newest_old: BTreeMap<&Bytes, &Change> = BTreeMap::new();
        for c in self.log.iter().filter(|c| c.main <= self.compact) {
            newest_old.insert(&c.key, c);
        }
        let mut out: Vec<&Change> = newest_old
            .into_values()
            .filter(|c| c.kv.is_some() || c.main == self.compact)
            .chain(self.log.iter().filter(|c| c.main > self.compact))
            .collect();
        out.sort_by_key(|c| (c.main, c.sub));
        out
    }

    fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        if rev > 0 && rev < self.compact {
            return Err(EtcdError::Compacted);
        }
        if rev > 0 && rev > self.current() {
            return Err(EtcdError::FutureRev);
        }
        let at = if rev == 0 { self.current() } else { rev };
        // The revision each key visible at `at` was last written at.
        let mut keep: Vec<(i64, i64)> = vec![];
        if at >= 1 {
            for key in self.state(at).keys() {
                let last = self
                    .log
                    .iter()
                    .filter(|c| c.key == *key && c.main <= at)
                    .last()
                    .unwrap();
                keep.push((last.main, last.sub));
            }
        }
        let mut bytes = b"key".to_vec();
        for c in self.retained() {
            if c.main > at {
                continue;
            }
            if c.main <= self.compact && !keep.is_empty() && !keep.contains(&(c.main, c.sub)) {
                continue;
            }
            if c.main == self.compact && c.kv.is_none() {
                continue;
            }
            bytes.extend_from_slice(&(c.main as u64).to_be_bytes());
            bytes.push(b'_');
            bytes.extend_from_slice(&(c.sub as u64).to_be_bytes());
            if c.kv.is_none() {
                bytes.push(b't');
            }
            let stored = c.kv.clone().unwrap_or(KeyValue {
                key: c.key.clone(),
                ..KeyValue::default()
            });
            bytes.extend_from_slice(&stored.encode_to_vec());
        }
        Ok((crc32c::crc32c(&bytes), self.compact))
    }
}

fn exec_txn(
    w: &mut Working<'_>,
    t: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> Result<TxnResponse, EtcdError> {
    let ok = path[*cursor];
    *cursor += 1;
    let mut responses = vec![];
    for op in if ok { &t.success } else { &t.failure } {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(w.range(r)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(w.put(p)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(w.delete(d)))
            }
            Some(Request::RequestTxn(inner)) => {
                Some(Response::ResponseTxn(exec_txn(w, inner, path, cursor)?))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: ok,
        responses,
    })
}

// ---------------------------------------------------------------------------------------------
// The model's API-layer checks

fn model_check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if !(0..=2).contains(&r.sort_order) || !(0..=4).contains(&r.sort_target) {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

fn model_check_put(p: &PutRequest) -> Result<(), EtcdError> {
    if p.key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else if p.ignore_value && !p.value.is_empty() {
        Err(EtcdError::ValueProvided)
    } else if p.ignore_lease && p.lease != 0 {
        Err(EtcdError::LeaseProvided)
    } else {
        Ok(())
    }
}

fn model_check_txn_request(t: &TxnRequest, max: usize) -> Result<(), EtcdError> {
    let n = t.compare.len().max(t.success.len()).max(t.failure.len());
    if n > max {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => model_check_range(r)?,
            Some(Request::RequestPut(p)) => model_check_put(p)?,
            Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(EtcdError::EmptyKey)
            }
            Some(Request::RequestDeleteRange(_)) => {}
            Some(Request::RequestTxn(inner)) => model_check_txn_request(inner, max - n)?,
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

type Interval = (Vec<u8>, Vec<u8>);

fn hits(dels: &[Interval], k: &[u8]) -> bool {
    dels.iter().any(|(b, e)| &b[..] <= k && k < &e[..])
}

fn model_intervals(ops: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = vec![];
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                [&d.key[..], &[0u8]].concat()
            } else {
                d.range_end.to_vec()
            };
            dels.push((d.key.to_vec(), end));
        }
    }
    let mut puts: Vec<Vec<u8>> = vec![];
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            let (then_puts, then_dels) = model_intervals(&t.success)?;
            let (else_puts, else_dels) = model_intervals(&t.failure)?;
            for k in &then_puts {
                if puts.contains(k) || hits(&dels, k) {
                    return Err(EtcdError::DuplicateKey);
                }
                puts.push(k.clone());
            }
            for k in &else_puts {
                if (puts.contains(k) && !then_puts.contains(k)) || hits(&dels, k) {
                    return Err(EtcdError::DuplicateKey);
                }
                // A set in etcd: a key put in both branches is one entry.
                if !puts.contains(k) {
                    puts.push(k.clone());
                }
            }
            dels.extend(then_dels);
            dels.extend(else_dels);
        }
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key.to_vec()) || hits(&dels, &p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.push(p.key.to_vec());
        }
    }
    Ok((puts, dels))
}

fn model_check_txn(t: &TxnRequest) -> Result<(), EtcdError> {
    model_check_txn_request(t, MAX_TXN_OPS)?;
    model_intervals(&t.success)?;
    model_intervals(&t.failure)?;
    Ok(())
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
    let (mut response, values) = ks.read_range(r)?;
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
            prop_assert_eq!(&checked, &model_check_put(&p));
            if checked.is_ok() {
                prop_assert_eq!(ks.put_with_leases(&p, &leases), model.put(&p));
            }
        }
        Op::Delete(d) => {
            let checked = check_delete_range(&d);
            prop_assert_eq!(
                &checked,
                &if d.key.is_empty() {
                    Err(EtcdError::EmptyKey)
                } else {
                    Ok(())
                }
            );
            if checked.is_ok() {
                prop_assert_eq!(ks.delete_range(&d), model.delete(&d));
            }
        }
        Op::Range(mut r) => {
            r.revision = resolve(r.revision, current);
            let checked = check_range(&r);
            prop_assert_eq!(&checked, &model_check_range(&r));
            if checked.is_ok() {
                prop_assert_eq!(range_filled(ks, cold, &r), model.range(&r));
            }
        }
        Op::Txn(mut t) => {
            resolve_txn(&mut t, current);
            let checked = check_txn(&t, MAX_TXN_OPS);
            prop_assert_eq!(&checked, &model_check_txn(&t));
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
                prop_assert_eq!(answer, model.txn(&t));
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
    prop_assert_eq!(ks.compact_revision(), model.compact.max(0));
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
        let mut model = Model::new();
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
    /// point in the middle, which moves the whole history at once): reads of the past, sorting
    /// by value, HashKV and snapshots read them back; compaction releases whole segments.
    #[test]
    fn key_space_with_cold_values_agrees_with_the_naive_model(ops in ops(), cold_from in 0usize..30) {
        let mut ks = KeySpace::new();
        let mut cold = MemoryColdStore::default();
        let mut model = Model::new();
        for (i, op) in ops.iter().enumerate() {
            if i == cold_from {
                ks.keep_superseded_values_cold();
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
        let mut model = Model::new();
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
        let mut model = Model::new();
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
