//! etcd's key space, naively: the whole key -> KeyValue map of every revision and a flat log of
//! every change, everything answered by linear scans. Slow and obviously right is the point: it
//! shares no code with `detcd::mvcc` but Go's sort order (a fact of etcd's output, not of its
//! semantics, tested on its own against Go's results).

use std::collections::BTreeMap;

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::mvcc::go_sort;
use detcd::proto::etcdserverpb::compare::TargetUnion;
use detcd::proto::etcdserverpb::range_request::SortTarget;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::response_op::Response;
use detcd::proto::etcdserverpb::{
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use detcd::proto::mvccpb::KeyValue;
use prost::Message as _;

/// The whole key space at one revision.
pub type Keys = BTreeMap<Bytes, KeyValue>;

/// Whether a lease id exists, as the caller's lease table says.
pub type LeaseExists<'a> = &'a dyn Fn(i64) -> bool;

pub fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// One change, as etcd's backend stores it: `kv` is `None` for a deletion.
#[derive(Clone, Debug)]
struct Change {
    main: i64,
    sub: i64,
    key: Bytes,
    kv: Option<KeyValue>,
}

/// One key's change at one revision, as a watch reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyEvent {
    pub revision: i64,
    /// A put's new pair; for a deletion, the key and the deletion's revision only.
    pub kv: KeyValue,
    pub deleted: bool,
    /// The key before the change, if it existed then.
    pub prev: Option<KeyValue>,
}

impl KeyEvent {
    pub fn key(&self) -> &Bytes {
        &self.kv.key
    }
}

/// The reference key space.
#[derive(Clone, Debug)]
pub struct KvModel {
    /// `states[i]` is the whole key space at revision `i + 1`.
    states: Vec<Keys>,
    /// Every change ever applied, in order.
    log: Vec<Change>,
    /// etcd's compactMainRev: -1 until the first compaction.
    compact: i64,
}

/// Where a request is served: the current revision and the compact revision of that moment.
/// Writes are served at the model's present; reads may be judged at any past moment, since the
/// model keeps every revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    pub current: i64,
    /// etcd's raw compactMainRev (-1 before the first compaction).
    pub compact: i64,
}

pub fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => key <= k && k < end,
    }
}

/// A request in progress: the key space at the moment it is served and the changes so far.
struct Working<'m> {
    model: &'m KvModel,
    at: Moment,
    map: Keys,
    changes: Vec<Change>,
}

impl Working<'_> {
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.at.current
        } else {
            self.at.current + 1
        }
    }

    fn state(&self, rev: i64) -> &Keys {
        if rev == self.at.current + 1 {
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
            main: self.at.current + 1,
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
        let revision = self.at.current + 1;
        let (create, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (revision, 1),
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: revision,
            version,
            value: match (&prev, p.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => p.value.clone(),
            },
            lease: match (&prev, p.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => p.lease,
            },
        };
        self.write(&p.key, Some(kv));
        Ok(PutResponse {
            header: header(revision),
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

    /// A range inside a txn: not bounded by `--max-range-bytes`.
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        range(r, self.read_rev(), self.at.compact, u64::MAX, |rev| {
            self.state(rev)
        })
    }
}

/// The key and value bytes of `kvs`, what `--max-range-bytes` bounds.
fn kv_bytes(kvs: &[KeyValue]) -> u64 {
    kvs.iter()
        .map(|kv| (kv.key.len() + kv.value.len()) as u64)
        .sum()
}

/// etcd's Range, naively: `state(rev)` gives the whole key space at a revision. detcd refuses
/// one whose answer holds more than `bytes_max` bytes of keys and values; sorted by value, all
/// the pairs it sorts count (before `limit` and `keys_only`).
fn range<'s>(
    r: &RangeRequest,
    current: i64,
    compact: i64,
    bytes_max: u64,
    state: impl Fn(i64) -> &'s Keys,
) -> Result<RangeResponse, EtcdError> {
    let mut at = r.revision;
    if at > current {
        return Err(EtcdError::FutureRev);
    }
    if at <= 0 {
        at = current;
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
            header: header(current),
            kvs: vec![],
            more: false,
            count,
        });
    }
    let mut kvs = limit_early(r, all);
    kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    if r.sort_target == SortTarget::Value as i32 && kv_bytes(&kvs) > bytes_max {
        return Err(EtcdError::RangeTooLarge);
    }
    sort(r, &mut kvs)?;
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
    if kv_bytes(&kvs) > bytes_max {
        return Err(EtcdError::RangeTooLarge);
    }
    Ok(RangeResponse {
        header: header(current),
        kvs,
        more,
        count,
    })
}

/// etcd fetches only `limit + 1` keys when the answer is in key order and unfiltered.
fn limit_early(r: &RangeRequest, mut kvs: Vec<KeyValue>) -> Vec<KeyValue> {
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if in_key_order(r.sort_target, r.sort_order) && !filtered && r.limit > 0 && r.limit < i64::MAX {
        kvs.truncate((r.limit + 1) as usize);
    }
    kvs
}

/// Ascending by key is the order keys come in: no sort at all.
fn in_key_order(target: i32, order: i32) -> bool {
    order == 0 || (target == 0 && order == 1)
}

fn sort(r: &RangeRequest, kvs: &mut [KeyValue]) -> Result<(), EtcdError> {
    // A target without an order sorts ascending.
    let order = if r.sort_target != 0 && r.sort_order == 0 {
        1
    } else {
        r.sort_order
    };
    if in_key_order(r.sort_target, order) {
        return Ok(());
    }
    let less: fn(&KeyValue, &KeyValue) -> bool = match r.sort_target {
        0 => |a, b| a.key < b.key,
        1 => |a, b| a.version < b.version,
        2 => |a, b| a.create_revision < b.create_revision,
        3 => |a, b| a.mod_revision < b.mod_revision,
        4 => |a, b| a.value < b.value,
        _ => return Err(EtcdError::InvalidSortOption),
    };
    match order {
        1 => go_sort(kvs, less),
        2 => go_sort(kvs, |a, b| less(b, a)),
        _ => {}
    }
    Ok(())
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
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
fn txn_path(state: &Keys, t: &TxnRequest, out: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| {
        let kvs: Vec<&KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        if kvs.is_empty() {
            // A missing key compares as a zero KeyValue, except that no value equals it.
            c.target != 3 && compare_kv(c, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| compare_kv(c, kv))
        }
    });
    out.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            txn_path(state, inner, out);
        }
    }
}

impl Default for KvModel {
    fn default() -> KvModel {
        KvModel {
            states: vec![Keys::new()],
            log: vec![],
            compact: -1,
        }
    }
}

impl KvModel {
    pub fn current(&self) -> i64 {
        self.states.len() as i64
    }

    /// etcd's raw compact revision: -1 until the first compaction.
    pub fn compact_main(&self) -> i64 {
        self.compact
    }

    pub fn now(&self) -> Moment {
        Moment {
            current: self.current(),
            compact: self.compact,
        }
    }

    fn state(&self, rev: i64) -> &Keys {
        &self.states[(rev - 1) as usize]
    }

    /// The key space as it is now.
    pub fn keys(&self) -> &Keys {
        self.states.last().expect("revision 1 always exists")
    }

    fn working(&self, at: Moment) -> Working<'_> {
        Working {
            model: self,
            at,
            map: self.state(at.current).clone(),
            changes: vec![],
        }
    }

    fn commit(&mut self, map: Keys, changes: Vec<Change>) -> i64 {
        if !changes.is_empty() {
            self.states.push(map);
            self.log.extend(changes);
        }
        self.current()
    }

    /// A Range served at `at`, refused past `bytes_max` (`--max-range-bytes`).
    pub fn range_at(
        &self,
        r: &RangeRequest,
        at: Moment,
        bytes_max: u64,
    ) -> Result<RangeResponse, EtcdError> {
        range(r, at.current, at.compact, bytes_max, |rev| self.state(rev))
    }

    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.range_at(r, self.now(), u64::MAX)
    }

    pub fn put(&mut self, p: &PutRequest, leases: LeaseExists) -> Result<PutResponse, EtcdError> {
        if p.lease != 0 && !leases(p.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        let mut w = self.working(self.now());
        let mut resp = w.put(p)?;
        let (map, changes) = (w.map, w.changes);
        resp.header = header(self.commit(map, changes));
        Ok(resp)
    }

    pub fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut w = self.working(self.now());
        let resp = w.delete(d);
        let (map, changes) = (w.map, w.changes);
        self.commit(map, changes);
        resp
    }

    /// Deletes `keys` (those that exist) at one revision; returns the revision after.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> i64 {
        let mut w = self.working(self.now());
        for key in keys {
            if w.map.contains_key(key) {
                w.write(key, None);
            }
        }
        let (map, changes) = (w.map, w.changes);
        self.commit(map, changes)
    }

    pub fn txn(&mut self, t: &TxnRequest, leases: LeaseExists) -> Result<TxnResponse, EtcdError> {
        let (resp, map, changes) = self.run_txn(t, self.now(), leases)?;
        let mut resp = resp;
        resp.header = header(self.commit(map, changes));
        Ok(resp)
    }

    /// A txn without writes served at `at`.
    pub fn read_txn_at(&self, t: &TxnRequest, at: Moment) -> Result<TxnResponse, EtcdError> {
        // Without puts, no lease is ever looked up.
        let (mut resp, _, changes) = self.run_txn(t, at, &|_| false)?;
        assert!(changes.is_empty(), "a read-only txn wrote");
        resp.header = header(at.current);
        Ok(resp)
    }

    fn run_txn(
        &self,
        t: &TxnRequest,
        at: Moment,
        leases: LeaseExists,
    ) -> Result<(TxnResponse, Keys, Vec<Change>), EtcdError> {
        let mut path = vec![];
        txn_path(self.state(at.current), t, &mut path);
        self.check_txn_ops(t, at, leases, &path, &mut 0)?;
        let mut w = self.working(at);
        let resp = exec_txn(&mut w, t, &path, &mut 0)?;
        Ok((resp, w.map, w.changes))
    }

    /// What etcd checks of the branches taken before executing any of them.
    fn check_txn_ops(
        &self,
        t: &TxnRequest,
        at: Moment,
        leases: LeaseExists,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), EtcdError> {
        let ok = path[*cursor];
        *cursor += 1;
        let now = self.state(at.current);
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    if r.revision != 0 && r.revision > at.current {
                        return Err(EtcdError::FutureRev);
                    }
                    if r.revision != 0 && r.revision < at.compact {
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
                Some(Request::RequestTxn(inner)) => {
                    self.check_txn_ops(inner, at, leases, path, cursor)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn compact(&mut self, rev: i64) -> Result<CompactionResponse, EtcdError> {
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

    /// HashKV at `rev` (0: now): the CRC-32C etcd computes over the backend's retained
    /// changes, and the compact revision.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        if rev > 0 && rev < self.compact {
            return Err(EtcdError::Compacted);
        }
        if rev > 0 && rev > self.current() {
            return Err(EtcdError::FutureRev);
        }
        let at = if rev == 0 { self.current() } else { rev };
        let keep = self.last_changes_visible_at(at);
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

    /// Every revision's key changes, in order: what a watch from revision 1 is owed.
    pub fn events(&self) -> BTreeMap<i64, Vec<KeyEvent>> {
        let mut out: BTreeMap<i64, Vec<KeyEvent>> = BTreeMap::new();
        for event in self.events_from(0) {
            out.entry(event.revision).or_default().push(event);
        }
        out
    }

    /// How many key changes the model has made so far.
    pub fn change_count(&self) -> usize {
        self.log.len()
    }

    /// The key changes from the `from`-th on, in order.
    pub fn events_from(&self, from: usize) -> Vec<KeyEvent> {
        self.log[from..]
            .iter()
            .map(|c| KeyEvent {
                revision: c.main,
                kv: c.kv.clone().unwrap_or_else(|| KeyValue {
                    key: c.key.clone(),
                    mod_revision: c.main,
                    ..KeyValue::default()
                }),
                deleted: c.kv.is_none(),
                prev: self.state(c.main - 1).get(&c.key).cloned(),
            })
            .collect()
    }

    /// The revision each key visible at `at` was last written at.
    fn last_changes_visible_at(&self, at: i64) -> Vec<(i64, i64)> {
        if at < 1 {
            return vec![];
        }
        self.state(at)
            .keys()
            .map(|key| {
                let last = self
                    .log
                    .iter()
                    .filter(|c| c.key == *key && c.main <= at)
                    .last()
                    .expect("a visible key was written");
                (last.main, last.sub)
            })
            .collect()
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
