//! The revisioned key space: etcd's MVCC store, in memory, reproducing etcd's semantics exactly.
//!
//! [`KeySpace`] owns every key's retained history and answers etcd's KV API (Range, Put,
//! DeleteRange, Txn, Compact) plus HashKV and snapshots. It is pure: no clock, no I/O, no
//! threads, no randomly seeded hashing; the same sequence of calls always yields the same
//! answers and the same bytes. Writes are applied in raft-log order by the caller.
//!
//! The behaviour follows etcd 3.6 (`server/storage/mvcc/{kvstore,kvstore_txn,key_index,index,
//! hash}.go`, `server/etcdserver/txn/txn.go`, `api/v3rpc/key.go`), including its quirks; each
//! quirk is described where it is implemented. The API-layer checks etcd makes before proposing
//! a request to raft live in `check` and are re-exported here.
//!
//! Invariants of [`KeySpace`]:
//! - `current_revision >= 1`; it grows by exactly one per write request that changes something
//!   (a put, a delete that removed something, a txn that did either) and never otherwise.
//! - every record's main revision is `<= current_revision`; no two records share a revision.
//! - `compact_main` is -1 until the first compaction (as in etcd), then the last compacted
//!   revision; `compact_main <= current_revision`; each key's history obeys the compaction rule
//!   in `history`, except that the keys a compaction has not released yet (from
//!   `releasing.next` on) may still hold the records it drops.
//! - with cold values, a superseded value is in memory only while it waits for its batch, or
//!   in a key the move of a snapshot's superseded values has not reached yet (`cooling` on).
//! - `footprint` counts exactly the keys, records and bytes the index holds (see `footprint`).

mod changes;
mod check;
mod cold;
mod footprint;
mod go_sort;
mod hash;
mod history;
mod index_key;
mod prefetch;
mod range;
mod range_encoding;
mod revision;
mod snapshot;
mod txn;
mod write;

#[cfg(test)]
mod tests;

use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;

use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

pub use check::{check_delete_range, check_put, check_range, check_txn};
pub use cold::{
    ColdOp, ColdRead, ColdRef, ColdValues, MemoryColdStore, NoColdValues, COLD_SEGMENT_BYTES,
};
/// Go's `sort.Sort`, exposed so that reference models in tests can order ties exactly as etcd.
#[doc(hidden)]
pub use go_sort::go_sort;
pub use range::KeyRange;
pub use range_encoding::{RangeLayout, RangePart};
pub use revision::Revision;
pub use snapshot::{KeySpaceView, SnapshotDecodeError};

use cold::ColdLog;
use footprint::Footprint;
use history::KeyHistory;
use index_key::{IndexKey, KeyProbe};
use write::WriteTxn;

/// Answers whether a lease exists, for puts that attach one. The lease module implements this;
/// until it exists, [`NoLeases`] makes every lease unknown, as etcd does for a revoked lease.
pub trait LeaseCheck {
    fn lease_exists(&self, lease_id: i64) -> bool;
}

/// No lease exists: every put with a lease fails with `LeaseNotFound`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLeases;

impl LeaseCheck for NoLeases {
    fn lease_exists(&self, _lease_id: i64) -> bool {
        false
    }
}

impl<F: Fn(i64) -> bool> LeaseCheck for F {
    fn lease_exists(&self, lease_id: i64) -> bool {
        self(lease_id)
    }
}

/// Every key with at least one retained record, with its history, in key order.
type Index = OrdMap<IndexKey, KeyHistory>;

/// The in-memory revisioned key space. See the module documentation for its invariants.
#[derive(Clone, Debug)]
pub struct KeySpace {
    /// Every key with at least one retained record, with its history. Persistent, so that a
    /// [`KeySpaceView`] for a snapshot is taken in O(1) and shares everything unchanged since.
    ///
    /// There is no index by revision: it would cost about a quarter of the memory of a record,
    /// and only HashKV and compaction (both rare, both whole-store walks in etcd too) need
    /// revision order.
    keys: Index,
    current_revision: i64,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    compact_main: i64,
    /// While a compaction's dropped records are still partly in memory: the first key not
    /// released yet (empty: none was; the empty key is never indexed). Compaction takes effect
    /// at once (reads before it are refused; hashes and snapshots leave out what it drops,
    /// through `KeyHistory::retained`), and the memory goes a slice of keys at a time
    /// ([`KeySpace::release_compacted_slice`], called by the node: `node/memory_release.rs`):
    /// a walk of every key at once held the node's thread for 0.5 s at 300,000 keys. Members
    /// may hold different records at the same index; no answer, hash or snapshot shows which.
    releasing: Option<Bytes>,
    /// While superseded values of a key space installed from a snapshot are partly in memory:
    /// the first key whose values may not have moved to cold segments yet (empty: none did).
    /// Such a key space holds every value in memory, and moving its superseded ones at once
    /// held the node's thread for 0.3 s at 100,000 keys; so they move a slice of keys at a
    /// time, as a compaction's records are released, in key order.
    cooling: Option<Bytes>,
    /// Keys a slice walks at most: the member's configuration, not replicated state (as `bugs`).
    release_slice_keys: usize,
    footprint: Footprint,
    /// Where superseded values go, once [`KeySpace::keep_superseded_values_cold`] was called;
    /// `None` keeps every value in memory.
    cold: Option<ColdLog>,
    /// The key changes of the writes committed since the last [`KeySpace::take_changes`].
    changes: Vec<KeyChange>,
    /// Whether writes report every key change (for watchers) or only those that attach a key
    /// to a lease or detach it (all the lease table needs; see
    /// [`KeySpace::report_every_change`]). The member's configuration, not replicated state.
    every_change: bool,
    /// Deliberately injected bugs (simulator tests only; all off otherwise).
    bugs: KeySpaceBugs,
}

/// Bugs the simulator's tests inject into the key space, to show that a key space wrong the
/// same way on every member is still caught. Not part of the store's state: never encoded,
/// never compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeySpaceBugs {
    /// A limited range in key order walks `limit` keys instead of `limit + 1`, so it never
    /// learns that there are `more`.
    pub range_without_lookahead: bool,
    /// A txn compare over a range judges only the first key that exists in it.
    pub range_compare_first_key_only: bool,
    /// A range's size against `--max-range-bytes` leaves out the values it reads from the
    /// cold segments (those superseded: reads of the past).
    pub range_bound_skips_cold_values: bool,
    /// A slice of a compaction's release goes on past the key after it, which keeps its
    /// dropped records in memory.
    pub release_skips_a_key: bool,
    /// A slice of the move of a snapshot's superseded values to cold segments goes on past
    /// the key after it, which keeps its values in memory.
    pub cooling_skips_a_key: bool,
}

/// One key changed by a committed write: the etcd watch event it is, and what leases learn
/// of each revision.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyChange {
    pub revision: Revision,
    /// The key as the write left it: a put's new key-value pair; for a deletion, the key and the
    /// deletion's revision only, as etcd's DELETE event carries it.
    pub kv: KeyValue,
    pub deleted: bool,
    /// The key at the revision before the change's, if it existed then: a watch event's
    /// prev_kv, which etcd reads at that revision. A txn that puts a key in one nested txn and
    /// deletes it in another changes it twice at one revision; both changes have the key as it
    /// was before the txn.
    pub prev: Option<KeyValue>,
    /// The lease the key was attached to just before this change, after any earlier change of
    /// the same write (0: none, or it did not exist): what the lease table detaches it from.
    pub lease_before: i64,
}

impl KeyChange {
    pub fn key(&self) -> &Bytes {
        &self.kv.key
    }

    /// The lease the key is attached to after the change (0: none, or it was deleted).
    pub fn lease_after(&self) -> i64 {
        if self.deleted {
            0
        } else {
            self.kv.lease
        }
    }
}

/// Equal when they hold the same history; the key changes not yet taken are not state.
impl PartialEq for KeySpace {
    fn eq(&self, other: &KeySpace) -> bool {
        self.keys == other.keys
            && self.current_revision == other.current_revision
            && self.compact_main == other.compact_main
            && self.releasing == other.releasing
            && self.cooling == other.cooling
            && self.footprint == other.footprint
            && self.cold == other.cold
    }
}

impl Eq for KeySpace {}

/// Keys a slice of a compaction's release walks by default: about a quarter of a millisecond of
/// the node's thread here.
pub const RELEASE_SLICE_KEYS: usize = 256;

impl Default for KeySpace {
    fn default() -> Self {
        KeySpace::new()
    }
}

/// A response of a store that was never asked to keep values cold, which therefore has none to
/// read. Panics otherwise: such a store answers through the `ColdValues` variants.
fn all_in_memory<T>(response: T, cold: ColdValues) -> T {
    assert!(
        cold.is_empty(),
        "a store with cold values must be read through read_range/txn_with_leases"
    );
    response
}

/// The header every response of this module carries; the node fills in cluster, member and term.
fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

impl KeySpace {
    /// An empty store at revision 1, as a fresh etcd member starts.
    pub fn new() -> KeySpace {
        KeySpace {
            keys: Index::new(),
            current_revision: 1,
            compact_main: -1,
            releasing: None,
            cooling: None,
            release_slice_keys: RELEASE_SLICE_KEYS,
            footprint: Footprint::default(),
            cold: None,
            changes: Vec::new(),
            every_change: true,
            bugs: KeySpaceBugs::default(),
        }
    }

    /// Whether writes report every key change (the default), or only those that move a key
    /// between leases: while nobody watches, a change would only be dropped, and building it
    /// shares the key, the value and the previous value with it; sharing a value copied out
    /// of a request costs it a reference-count header for as long as it lives (24 bytes of
    /// every current value, 2.4 MB at 100,000 keys).
    pub fn report_every_change(&mut self, every: bool) {
        self.every_change = every;
    }

    /// Whether a compaction's dropped records are still partly in memory.
    pub fn is_releasing_compaction(&self) -> bool {
        self.releasing.is_some()
    }

    /// Whether superseded values of a key space installed from a snapshot are still partly
    /// in memory.
    pub fn is_cooling(&self) -> bool {
        self.cooling.is_some()
    }

    /// Whether [`KeySpace::release_memory_slice`] has anything to do.
    pub fn is_releasing_memory(&self) -> bool {
        self.releasing.is_some() || self.cooling.is_some()
    }

    /// Lets go of the next slice of memory no reader needs: a compaction's dropped records
    /// first, then superseded values a snapshot brought, which move to cold segments.
    pub fn release_memory_slice(&mut self) {
        if self.releasing.is_some() {
            self.release_compacted_slice();
        } else {
            self.cool_slice();
        }
    }

    /// How many keys a slice of a compaction's release walks at most (the simulator makes it
    /// small, so that histories see compactions half released).
    pub fn release_compactions_in_slices_of(&mut self, keys: usize) {
        self.release_slice_keys = keys.max(1);
    }

    /// Turns the injected bugs on (simulator tests only).
    pub fn inject_bugs(&mut self, bugs: KeySpaceBugs) {
        self.bugs = bugs;
    }

    /// The key changes of every write committed since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<KeyChange> {
        std::mem::take(&mut self.changes)
    }

    /// The lease `key` is attached to now; 0 if none or the key does not exist.
    pub fn live_lease(&self, key: &[u8]) -> i64 {
        self.keys
            .get(&KeyProbe::new(key))
            .and_then(KeyHistory::live)
            .map_or(0, |record| record.lease())
    }

    /// Every key that exists now with its lease, for rebuilding the keys attached to each lease.
    pub fn live_leases(&self) -> impl Iterator<Item = (&Bytes, i64)> {
        self.keys.iter().filter_map(|(key, history)| {
            let lease = history.live()?.lease();
            (lease != 0).then_some((key.bytes(), lease))
        })
    }

    /// Deletes each of `keys` that exists, all at one new revision (a lease's revocation);
    /// deleting nothing creates no revision. Returns the store revision afterwards.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> i64 {
        let mut w = WriteTxn::begin(self);
        w.delete_keys(keys);
        w.commit()
    }

    /// From now on, keeps the value of every superseded revision in cold segments instead of
    /// memory (see `cold`), starting with those already superseded; they move in batches of
    /// about `batch_bytes`. The operations for the driver accumulate until
    /// [`KeySpace::take_cold_ops`].
    pub fn keep_superseded_values_cold(&mut self, batch_bytes: u64) {
        if self.cold.is_none() {
            self.cold = Some(ColdLog::with_batch_bytes(batch_bytes));
            self.move_all_superseded_cold();
        }
    }

    /// Becomes `other` (a snapshot from the leader) and returns the key space replaced, for
    /// the caller to free where the time it takes does not hold anything up. With cold values,
    /// the old segments are released and `other`'s superseded values move to new ones a slice
    /// of keys at a time (see `cooling`).
    pub fn replace_with(&mut self, mut other: KeySpace) -> KeySpace {
        if let Some(cold) = &mut self.cold {
            other.cold = Some(cold.release_all());
            other.cooling = Some(Bytes::new());
        }
        other.bugs = self.bugs;
        other.release_slice_keys = self.release_slice_keys;
        std::mem::replace(self, other)
    }

    /// The segment writes and releases since the last call, for the driver to carry out in
    /// order before anything that reads them.
    pub fn take_cold_ops(&mut self) -> Vec<ColdOp> {
        self.cold
            .as_mut()
            .map(ColdLog::take_ops)
            .unwrap_or_default()
    }

    /// Whether `take_cold_ops` has anything to hand over: the node asks after every batch, and
    /// nearly always there is nothing.
    pub fn has_cold_ops(&self) -> bool {
        self.cold.as_ref().is_some_and(ColdLog::has_ops)
    }

    /// Segments that may hold live values (0 without cold values).
    pub fn cold_segment_count(&self) -> usize {
        self.cold.as_ref().map_or(0, ColdLog::segment_count)
    }

    /// Moves every superseded value out, in batches taken oldest successor first, so that
    /// segments fill in the order compaction will release them; the last batch waits.
    fn move_all_superseded_cold(&mut self) {
        let mut superseded: Vec<(i64, Bytes, Revision, usize)> = self
            .keys
            .iter()
            .flat_map(|(key, history)| {
                history
                    .all_superseded_hot()
                    .map(move |(rev, successor, len)| (successor, key.bytes().clone(), rev, len))
            })
            .collect();
        superseded.sort_unstable();
        for (_, key, rev, len) in superseded {
            let Some(cold) = &mut self.cold else {
                return;
            };
            cold.wait(key, rev, len);
            self.move_cold(usize::MAX);
        }
    }

    /// Moves up to `n` superseded values out of memory, in their batch's key order.
    fn move_cold(&mut self, n: usize) {
        let Some(cold) = &mut self.cold else {
            return;
        };
        for _ in 0..n {
            let Some(next) = cold.next_to_move() else {
                return;
            };
            if let Some(history) = self.keys.get_mut(&KeyProbe::new(&next.key)) {
                history.move_cold(next.rev, cold);
            }
        }
    }

    /// The revision of the last write that changed something (1 on a fresh store).
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// The revision of the last compaction; 0 if the store was never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.compact_main.max(0)
    }

    /// Rough bytes held by keys, values (in memory or in cold segments) and bookkeeping: what the
    /// quota counts, like etcd's backend size. Drops after a compaction that released history.
    pub fn approximate_size_bytes(&self) -> u64 {
        self.footprint.approximate_size_bytes()
    }

    /// About how many bytes a snapshot of the store would take; low rather than high.
    pub fn snapshot_bytes_estimate(&self) -> u64 {
        self.footprint.snapshot_bytes_estimate()
    }

    /// Number of keys that exist at the current revision.
    pub fn live_key_count(&self) -> usize {
        self.keys.values().filter(|h| h.live().is_some()).count()
    }

    /// Reads a range (etcd `Range`) of a store that keeps every value in memory; see
    /// [`KeySpace::read_range`]. `header.revision` is the current revision even when reading the
    /// past.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.read_range(req, u64::MAX)
            .map(|(response, cold)| all_in_memory(response, cold))
    }

    /// Reads a range (etcd `Range`), refused with `RangeTooLarge` past `bytes_max` of keys and
    /// values. Cold values in the response are left empty, and the returned [`ColdValues`]
    /// says where they go.
    pub fn read_range(
        &self,
        req: &RangeRequest,
        bytes_max: u64,
    ) -> Result<(RangeResponse, ColdValues), EtcdError> {
        let (response, cold_range) = self.execute_range(req, self.current_revision, bytes_max)?;
        let mut cold = ColdValues::default();
        cold.add(cold_range);
        Ok((response, cold))
    }

    /// Writes one key (etcd `Put`) with no lease module: a non-zero lease is `LeaseNotFound`.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.put_with_leases(req, &NoLeases)
    }

    /// Writes one key, asking `leases` whether the lease it attaches exists. etcd checks the
    /// lease before it looks at the key, so an unknown lease wins over `KeyNotFound`.
    pub fn put_with_leases(
        &mut self,
        req: &PutRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<PutResponse, EtcdError> {
        if req.lease != 0 && !leases.lease_exists(req.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        let mut w = WriteTxn::begin(self);
        let mut resp = w.put_request(req)?;
        let revision = w.commit();
        resp.header = header(revision);
        Ok(resp)
    }

    /// Deletes a range (etcd `DeleteRange`). Deleting nothing does not create a revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        let mut w = WriteTxn::begin(self);
        let mut resp = w.delete_request(req);
        let revision = w.commit();
        resp.header = header(revision);
        Ok(resp)
    }

    /// Runs a transaction (etcd `Txn`) with no lease module, in a store that keeps every value
    /// in memory.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.txn_with_leases(req, &NoLeases)
            .map(|(response, cold)| all_in_memory(response, cold))
    }

    /// Runs a transaction: evaluates every compare (including those of nested txns) against the
    /// store as it was before the txn, checks the chosen operations, then applies them under one
    /// new revision. Any error leaves the store untouched. Cold values its ranges read are left
    /// empty; the returned [`ColdValues`] says where they go.
    pub fn txn_with_leases(
        &mut self,
        req: &TxnRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<(TxnResponse, ColdValues), EtcdError> {
        self.execute_txn(req, leases)
    }

    /// Compacts history (etcd `Compact`): afterwards reads below `revision` fail with
    /// `Compacted`, and the memory of every revision no reader can reach any more is released.
    /// Compaction does not create a revision.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let revision = req.revision;
        if revision <= self.compact_main {
            return Err(EtcdError::Compacted);
        }
        if revision > self.current_revision {
            return Err(EtcdError::FutureRev);
        }
        self.compact_main = revision;
        // From the first key again: those released for an earlier compaction may hold records
        // this one drops.
        self.releasing = Some(Bytes::new());
        self.release_compacted_slice();
        if let Some(cold) = &mut self.cold {
            cold.release_compacted(revision);
        }
        Ok(CompactionResponse {
            header: header(self.current_revision),
        })
    }

    /// Applies the compaction rule of [`KeyHistory::compact`] to the next `release_slice_keys`
    /// keys of a compaction not released yet; nothing when there is none. Keys are first found
    /// by reading, so that a key with nothing to drop is never written (which, while a snapshot
    /// view shares the index, would copy its node).
    pub fn release_compacted_slice(&mut self) {
        let Some(first) = &self.releasing else {
            return;
        };
        let revision = self.compact_main;
        let from = (Bound::Included(KeyProbe::new(first)), Bound::Unbounded);
        let mut walked = self.keys.range(from);
        let touched: Vec<IndexKey> = walked
            .by_ref()
            .take(self.release_slice_keys)
            .filter(|(_, history)| history.compactable(revision) > 0)
            .map(|(key, _)| key.clone())
            .collect();
        let mut next = walked.next();
        if self.bugs.release_skips_a_key {
            next = walked.next();
        }
        let next = next.map(|(key, _)| key.bytes().clone());
        match next {
            Some(next) => self.releasing = Some(next),
            None => self.releasing = None,
        }
        for key in touched {
            let history = self.keys.get_mut(&key).expect("found above");
            let dropped = history.compact(revision);
            let emptied = history.is_empty();
            for record in &dropped {
                self.footprint.remove_record(record);
            }
            if emptied {
                self.keys.remove(&key);
                self.footprint.remove_key(key.bytes());
            }
        }
    }

    /// With cold values, a superseded value in memory waits for its batch, or is in a key
    /// the move of a snapshot's values has not reached yet.
    fn check_superseded_values_cold(&self) -> Result<(), String> {
        let Some(cold) = &self.cold else {
            return Ok(());
        };
        let not_reached = |key: &IndexKey| self.cooling.as_ref().is_some_and(|f| key.bytes() >= f);
        let in_memory = || {
            (self.keys.iter())
                .take_while(|(key, _)| !not_reached(key))
                .flat_map(|(key, history)| {
                    (history.all_superseded_hot()).map(|(rev, _, _)| (key.bytes(), rev))
                })
        };
        if in_memory().count() > cold.values_to_move() {
            return Err(format!(
                "superseded values in memory {:?}, {} waiting to move",
                in_memory().collect::<Vec<_>>(),
                cold.values_to_move()
            ));
        }
        Ok(())
    }

    /// Moves the superseded values of the next `release_slice_keys` keys of a key space
    /// installed from a snapshot to cold segments; nothing when all have moved. As in
    /// [`KeySpace::release_compacted_slice`], keys are found by reading first.
    fn cool_slice(&mut self) {
        let (Some(first), Some(cold)) = (&self.cooling, &mut self.cold) else {
            self.cooling = None;
            return;
        };
        let from = (Bound::Included(KeyProbe::new(first)), Bound::Unbounded);
        let mut walked = self.keys.range(from);
        let touched: Vec<IndexKey> = walked
            .by_ref()
            .take(self.release_slice_keys)
            .filter(|(_, history)| history.all_superseded_hot().next().is_some())
            .map(|(key, _)| key.clone())
            .collect();
        let mut next = walked.next();
        if self.bugs.cooling_skips_a_key {
            next = walked.next();
        }
        self.cooling = next.map(|(key, _)| key.bytes().clone());
        for key in touched {
            let history = self.keys.get_mut(&key).expect("found above");
            history.move_all_cold(cold);
        }
    }

    /// Appends a record to `key`'s history with `push`, indexing a new key if needed. Returns the
    /// key as stored (shared, so callers can hold it without copying).
    fn append_record<T>(
        &mut self,
        key: &[u8],
        push: impl FnOnce(&Bytes, &mut KeyHistory) -> T,
    ) -> (Bytes, T) {
        // One walk of the index for a key that exists: a put is mostly index walks otherwise.
        if let Some((existing, history)) = self.keys.get_key_value_mut(&KeyProbe::new(key)) {
            let key = existing.bytes().clone();
            let pushed = push(&key, history);
            let record = history.latest().expect("push appends a record");
            self.footprint.add_record(record);
            return (key, pushed);
        }
        // Copy so the store never pins a caller's (possibly much larger) request buffer.
        let key = Bytes::copy_from_slice(key);
        self.footprint.add_key(&key);
        self.keys
            .insert(IndexKey::new(key.clone()), KeyHistory::default());
        let history = (self.keys.get_mut(&KeyProbe::new(&key))).expect("inserted above");
        let pushed = push(&key, history);
        let record = history.latest().expect("push appends a record");
        self.footprint.add_record(record);
        (key, pushed)
    }

    /// Removes the newest record of `key` (undo of an aborted write), dropping the key from the
    /// index if that was its only record.
    fn pop_record(&mut self, key: &Bytes) {
        let history = self
            .keys
            .get_mut(&KeyProbe::new(key))
            .expect("undo of a key that was written");
        let record = history.pop().expect("undo of a record that was written");
        let emptied = history.is_empty();
        self.footprint.remove_record(&record);
        if emptied {
            self.keys.remove(&KeyProbe::new(key));
            self.footprint.remove_key(key);
        }
    }

    /// Verifies every invariant in the module documentation; `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.current_revision < 1 {
            return Err("current revision below 1".into());
        }
        if self.compact_main < -1 || self.compact_main > self.current_revision {
            return Err("compact revision out of range".into());
        }
        for (key, history) in &self.keys {
            let key = key.bytes();
            if key.is_empty() {
                return Err("empty key indexed".into());
            }
            // A key the release has not reached yet may hold what compaction dropped: what it
            // keeps must obey the rule, as the rest of the key space does.
            let unreleased = self.releasing.as_ref().is_some_and(|first| key >= first);
            let retained;
            let history = if unreleased {
                retained = KeyHistory::from_records(history.retained(self.compact_main).to_vec());
                if retained.is_empty() {
                    continue;
                }
                &retained
            } else {
                history
            };
            history
                .check_invariants(self.compact_main)
                .map_err(|e| format!("key {key:?}: {e}"))?;
            if history
                .latest()
                .is_some_and(|r| r.rev.main > self.current_revision)
            {
                return Err(format!("key {key:?}: record after the current revision"));
            }
        }
        self.check_revisions()?;
        self.check_superseded_values_cold()?;
        if self.footprint != Footprint::count(&self.keys) {
            return Err("footprint accounting drifted".into());
        }
        Ok(())
    }
}
