//! One key's stored history: the puts and deletions of it that compaction has not dropped yet.
//!
//! etcd keeps this as a key index of "generations" (a generation runs from the put that creates a
//! key to the deletion that ends it) pointing into a revision-keyed backend. We keep one flat,
//! revision-ordered list per key instead and store each put's create revision and version in the
//! record, exactly as etcd's backend does in the stored `KeyValue`; generations are then implicit:
//! a tombstone ends one, and the next put starts a new one (version 1, create revision = its own).
//!
//! Invariants (checked by [`KeyHistory::check_invariants`], which snapshot decoding relies on):
//! - records are strictly increasing by revision and never empty while the key is in the index;
//! - within a generation, each put has the generation's create revision and a version one higher
//!   than the put before it; a put right after a tombstone has version 1 and creates at its own
//!   main revision; a tombstone is never followed by another tombstone;
//! - after compaction at `c`, at most one record has `main <= c`, and if it is a tombstone then
//!   its main revision is exactly `c` (kept so readers and watchers *at* `c` still see it);
//! - the oldest record after `c` with nothing retained before it starts a generation.

use std::sync::Arc;

use bytes::Bytes;

use super::cold::{ColdLog, ColdRef};
use super::revision::Revision;
use crate::proto::mvccpb::KeyValue;

/// The CPU's cache line, the unit a prefetch loads.
const CACHE_LINE_BYTES: usize = 64;
/// Record blocks up to this size are prefetched whole: three records.
const PREFETCH_WHOLE_BYTES_MAX: usize = 256;

/// A put's value: in memory, or (once a later write superseded it) in a cold segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Hot(Bytes),
    Cold(ColdRef),
}

impl Value {
    pub fn len(&self) -> usize {
        match self {
            Value::Hot(bytes) => bytes.len(),
            Value::Cold(at) => at.len as usize,
        }
    }
}

/// What one stored change did to the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The key was written; the fields are the key's state right after this write.
    Put {
        value: Value,
        lease: i64,
        create_revision: i64,
        version: i64,
    },
    /// The key was deleted; this ends its current generation.
    Tombstone,
}

/// One stored change of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub rev: Revision,
    pub change: Change,
}

impl Record {
    pub fn is_tombstone(&self) -> bool {
        matches!(self.change, Change::Tombstone)
    }

    /// The lease a put attached; 0 for a tombstone or a put without one.
    pub fn lease(&self) -> i64 {
        match &self.change {
            Change::Put { lease, .. } => *lease,
            Change::Tombstone => 0,
        }
    }

    /// Where the value is, if it is cold.
    pub fn cold_value(&self) -> Option<ColdRef> {
        match &self.change {
            Change::Put {
                value: Value::Cold(at),
                ..
            } => Some(*at),
            _ => None,
        }
    }

    /// The client-visible key-value pair this record stands for, `None` for a tombstone. A cold
    /// value comes out empty: the caller reads it by [`Record::cold_value`].
    pub fn key_value(&self, key: &Bytes) -> Option<KeyValue> {
        self.key_value_as(key.clone())
    }

    /// [`Record::key_value`] with `key` as the pair's key (equal bytes, held elsewhere).
    pub fn key_value_as(&self, key: Bytes) -> Option<KeyValue> {
        match &self.change {
            Change::Put {
                value,
                lease,
                create_revision,
                version,
            } => Some(KeyValue {
                key,
                create_revision: *create_revision,
                mod_revision: self.rev.main,
                version: *version,
                value: match value {
                    Value::Hot(bytes) => bytes.clone(),
                    Value::Cold(_) => Bytes::new(),
                },
                lease: *lease,
            }),
            Change::Tombstone => None,
        }
    }

    /// The `KeyValue` etcd stores in its backend for this record (a tombstone stores only the
    /// key). HashKV hashes its protobuf encoding.
    pub fn etcd_stored_value(&self, key: &Bytes) -> KeyValue {
        self.key_value(key).unwrap_or_else(|| KeyValue {
            key: key.clone(),
            ..KeyValue::default()
        })
    }
}

/// The length of `record`'s value, if it is one that can move out of memory: a put's non-empty
/// value, still in memory.
fn hot_value_len(record: &Record) -> Option<usize> {
    match &record.change {
        Change::Put {
            value: Value::Hot(bytes),
            ..
        } if !bytes.is_empty() => Some(bytes.len()),
        _ => None,
    }
}

/// The retained history of one key, oldest record first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    records: Records,
}

/// A key's records in a block of their own, exactly as long as the history (a key's history
/// rarely grows much before compaction trims it, and the usual doubling would leave a quarter
/// of all record memory unused); no block while there are none.
///
/// The index's leaves hold only the pointer: a record is 80 bytes, and a leaf holding the
/// first record inline held 120 bytes per key instead of 56, at the two-thirds fill a B-tree's
/// splits leave, 180 bytes of leaf per key whatever its history. The block costs a key of one
/// record about what its inline record did (96 bytes beside 84 of leaf), and saves about 95
/// bytes per key of two records or more.
///
/// The block is shared: a view of the key space (a snapshot being written, a watch feed)
/// shares the index's leaves, and the next write to a shared leaf copies it with every
/// history in it; a shared block makes that copy a reference count per key instead of a block
/// allocated and filled per key (about 17 MB for 100,000 keys of two records, copied again at
/// each snapshot taken under random writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Records(Option<Arc<[Record]>>);

impl Records {
    fn from_vec(records: Vec<Record>) -> Records {
        Records((!records.is_empty()).then(|| records.into()))
    }

    fn as_slice(&self) -> &[Record] {
        self.0.as_deref().unwrap_or_default()
    }

    /// The records to change in place; a block shared with a view is copied first.
    fn as_mut_slice(&mut self) -> &mut [Record] {
        match &mut self.0 {
            Some(records) => Arc::make_mut(records),
            None => &mut [],
        }
    }

    fn push(&mut self, record: Record) {
        let records = self.as_slice().iter().cloned();
        self.0 = Some(records.chain(std::iter::once(record)).collect());
    }

    fn pop(&mut self) -> Option<Record> {
        let mut records = self.as_slice().to_vec();
        let popped = records.pop();
        *self = Records::from_vec(records);
        popped
    }

    /// Removes the `n` oldest records and returns them.
    fn drain_oldest(&mut self, n: usize) -> Vec<Record> {
        if n == 0 {
            return Vec::new();
        }
        let mut all = self.as_slice().to_vec();
        let kept = all.split_off(n);
        *self = Records::from_vec(kept);
        all
    }
}

impl KeyHistory {
    pub fn from_records(records: Vec<Record>) -> KeyHistory {
        KeyHistory {
            records: Records::from_vec(records),
        }
    }

    pub fn records(&self) -> &[Record] {
        self.records.as_slice()
    }

    pub fn is_empty(&self) -> bool {
        self.records().is_empty()
    }

    pub fn latest(&self) -> Option<&Record> {
        self.records().last()
    }

    /// Starts loading the records' block, so that a walk reading them a few keys later finds
    /// them in the cache. Every line the walk may read, not only the block's first: a record
    /// is 80 bytes, so the revisions the binary search of [`KeyHistory::record_at`] probes and
    /// the record it finds (often the newest) mostly lie on other lines. A short history (most
    /// keys) is fetched whole; of a longer one, its start, the search's first probe and the
    /// newest record.
    pub fn prefetch(&self) {
        use super::prefetch::prefetch;
        let records = self.records();
        let (Some(middle), Some(newest)) = (records.get(records.len() / 2), records.last()) else {
            return;
        };
        let start = records.as_ptr().cast::<u8>();
        let bytes = std::mem::size_of_val::<[Record]>(records);
        if bytes <= PREFETCH_WHOLE_BYTES_MAX {
            for offset in (0..bytes).step_by(CACHE_LINE_BYTES) {
                prefetch(start.wrapping_add(offset));
            }
            prefetch(start.wrapping_add(bytes - 1));
            return;
        }
        prefetch(start);
        for record in [middle, newest] {
            prefetch(record);
            prefetch(&record.rev);
        }
    }

    /// The newest record written at or before main revision `at`, whatever its kind.
    pub fn record_at(&self, at: i64) -> Option<&Record> {
        let records = self.records();
        let after = records.partition_point(|r| r.rev.main <= at);
        after.checked_sub(1).map(|i| &records[i])
    }

    /// The put that is the key's state as of main revision `at`; `None` if the key did not exist
    /// then (never written yet, deleted, or compacted away because it was deleted).
    pub fn live_at(&self, at: i64) -> Option<&Record> {
        self.record_at(at).filter(|r| !r.is_tombstone())
    }

    /// The key's current state, if it exists now.
    pub fn live(&self) -> Option<&Record> {
        self.latest().filter(|r| !r.is_tombstone())
    }

    /// Appends a put at `rev`, continuing the current generation or starting a new one.
    pub fn push_put(&mut self, rev: Revision, value: Bytes, lease: i64) -> &Record {
        let (create_revision, version) = match self.live() {
            Some(Record {
                change:
                    Change::Put {
                        create_revision,
                        version,
                        ..
                    },
                ..
            }) => (*create_revision, version + 1),
            _ => (rev.main, 1),
        };
        self.push(Record {
            rev,
            change: Change::Put {
                value: Value::Hot(value),
                lease,
                create_revision,
                version,
            },
        })
    }

    /// Appends a tombstone at `rev`. The caller only deletes keys that exist.
    pub fn push_tombstone(&mut self, rev: Revision) -> &Record {
        assert!(
            self.live().is_some(),
            "tombstone for a key that does not exist"
        );
        self.push(Record {
            rev,
            change: Change::Tombstone,
        })
    }

    fn push(&mut self, record: Record) -> &Record {
        if let Some(last) = self.latest() {
            assert!(record.rev > last.rev, "history must grow in revision order");
        }
        self.records.push(record);
        self.latest().expect("just pushed")
    }

    /// The record the one at `rev` superseded, with its value's length, if that value is still
    /// in memory (a write has just committed the record at `rev`; it may have written this key
    /// more than once).
    pub fn superseded_hot(&self, rev: Revision) -> Option<(Revision, usize)> {
        let records = self.records();
        let index = records.binary_search_by(|r| r.rev.cmp(&rev)).ok()?;
        let previous = &records[index.checked_sub(1)?];
        hot_value_len(previous).map(|len| (previous.rev, len))
    }

    /// Every superseded record whose value is still in memory: its revision, its successor's
    /// main revision, and the value's length.
    pub fn all_superseded_hot(&self) -> impl Iterator<Item = (Revision, i64, usize)> + '_ {
        self.records().windows(2).filter_map(|pair| {
            hot_value_len(&pair[0]).map(|len| (pair[0].rev, pair[1].rev.main, len))
        })
    }

    /// Moves the value of the superseded record at `rev` to `cold`, if it is still in memory
    /// (compaction may have dropped the record since it was superseded).
    pub fn move_cold(&mut self, rev: Revision, cold: &mut ColdLog) {
        let records = self.records();
        let Ok(index) = records.binary_search_by(|r| r.rev.cmp(&rev)) else {
            return;
        };
        let Some(successor) = records.get(index + 1).map(|r| r.rev.main) else {
            return;
        };
        if hot_value_len(&records[index]).is_none() {
            return;
        }
        let record = &mut self.records.as_mut_slice()[index];
        if let Change::Put { value, .. } = &mut record.change {
            if let Value::Hot(bytes) = value {
                *value = Value::Cold(cold.push(bytes, successor));
            }
        }
    }

    /// Moves every superseded value still in memory to `cold`.
    pub fn move_all_cold(&mut self, cold: &mut ColdLog) {
        let records = self.records.as_mut_slice();
        for index in 1..records.len() {
            let successor = records[index].rev.main;
            if let Change::Put { value, .. } = &mut records[index - 1].change {
                if let Value::Hot(bytes) = value {
                    if !bytes.is_empty() {
                        *value = Value::Cold(cold.push(bytes, successor));
                    }
                }
            }
        }
    }

    /// Removes the newest record (undoing an aborted txn).
    pub fn pop(&mut self) -> Option<Record> {
        self.records.pop()
    }

    /// Drops what compaction at main revision `at` no longer needs and returns it: everything
    /// before the newest record at or before `at`, and that record too if it is a tombstone older
    /// than `at`. Records after `at` are never touched.
    pub fn compact(&mut self, at: i64) -> Vec<Record> {
        let drop = self.compactable(at);
        self.records.drain_oldest(drop)
    }

    /// The records compaction at `at` keeps, whether or not they were dropped yet: what every
    /// read at or after `at`, a hash and a snapshot see of the key (empty when compaction
    /// drops the key).
    pub fn retained(&self, at: i64) -> &[Record] {
        &self.records()[self.compactable(at)..]
    }

    /// How many of the oldest records [`KeyHistory::compact`] at `at` would drop.
    pub fn compactable(&self, at: i64) -> usize {
        let records = self.records();
        let after = records.partition_point(|r| r.rev.main <= at);
        let Some(newest) = after.checked_sub(1) else {
            return 0;
        };
        let record = &records[newest];
        if record.is_tombstone() && record.rev.main < at {
            newest + 1
        } else {
            newest
        }
    }

    /// Checks the invariants listed in the module comment; `compact_main` is the store's
    /// compact revision (-1 when never compacted). Used to validate decoded snapshots.
    pub fn check_invariants(&self, compact_main: i64) -> Result<(), &'static str> {
        if self.is_empty() {
            return Err("key without records");
        }
        let mut previous: Option<&Record> = None;
        for record in self.records() {
            if record.rev.main < 1 || record.rev.sub < 0 {
                return Err("revision out of range");
            }
            match (&record.change, previous) {
                (Change::Tombstone, Some(prev)) if prev.is_tombstone() => {
                    return Err("tombstone follows a tombstone");
                }
                (Change::Tombstone, None) if record.rev.main > compact_main => {
                    return Err("first record after the compact revision is a tombstone");
                }
                (
                    Change::Put {
                        create_revision,
                        version,
                        ..
                    },
                    prev,
                ) => {
                    let continues = prev.and_then(|p| match &p.change {
                        Change::Put {
                            create_revision,
                            version,
                            ..
                        } => Some((*create_revision, *version)),
                        Change::Tombstone => None,
                    });
                    match (continues, prev) {
                        (Some((prev_create, prev_version)), _) => {
                            if *create_revision != prev_create || *version != prev_version + 1 {
                                return Err("put does not continue its generation");
                            }
                        }
                        (None, Some(_)) => {
                            if *create_revision != record.rev.main || *version != 1 {
                                return Err("put after a tombstone does not start a generation");
                            }
                        }
                        // The oldest retained record: above the compact revision nothing before
                        // it was dropped, so it starts a generation; at or below it, it may sit
                        // anywhere inside one.
                        (None, None) => {
                            let starts_generation =
                                *create_revision == record.rev.main && *version == 1;
                            let inside_generation = *create_revision >= 1
                                && *create_revision <= record.rev.main
                                && *version >= 1;
                            if record.rev.main > compact_main && !starts_generation {
                                return Err("first record after the compact revision does not start a generation");
                            }
                            if !inside_generation {
                                return Err("put with impossible create revision or version");
                            }
                        }
                    }
                }
                _ => {}
            }
            if let Some(prev) = previous {
                if record.rev <= prev.rev {
                    return Err("records out of revision order");
                }
            }
            previous = Some(record);
        }
        let at_or_before_compact = self.records().iter().filter(|r| r.rev.main <= compact_main);
        let mut count = 0;
        for record in at_or_before_compact {
            count += 1;
            if record.is_tombstone() && record.rev.main != compact_main {
                return Err("tombstone older than the compact revision was kept");
            }
        }
        if count > 1 {
            return Err("more than one record at or before the compact revision");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(h: &mut KeyHistory, main: i64, sub: i64, value: &str) {
        h.push_put(
            Revision::new(main, sub),
            Bytes::copy_from_slice(value.as_bytes()),
            0,
        );
    }

    /// What `prefetch` and the memory notes of this module count on (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_record_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 80);
    }

    /// What an index entry holds of a history: the block's pointer and length.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_history_is_16_bytes() {
        assert_eq!(std::mem::size_of::<KeyHistory>(), 16);
    }

    fn versions(h: &KeyHistory) -> Vec<(i64, i64, i64)> {
        h.records()
            .iter()
            .filter_map(|r| match &r.change {
                Change::Put {
                    create_revision,
                    version,
                    ..
                } => Some((r.rev.main, *create_revision, *version)),
                Change::Tombstone => None,
            })
            .collect()
    }

    #[test]
    fn the_block_grows_and_shrinks_with_the_history_and_goes_when_empty() {
        let mut h = KeyHistory::default();
        assert!(h.is_empty() && h.records.0.is_none());
        put(&mut h, 2, 0, "a");
        assert_eq!(h.records.0.as_ref().map(|r| r.len()), Some(1));
        put(&mut h, 3, 0, "b");
        put(&mut h, 4, 0, "c");
        assert_eq!(versions(&h), vec![(2, 2, 1), (3, 2, 2), (4, 2, 3)]);
        assert_eq!(h.pop().map(|r| r.rev.main), Some(4));
        assert_eq!(h.compact(3).len(), 1, "drops revision 2");
        assert_eq!(h.records.0.as_ref().map(|r| r.len()), Some(1));
        assert_eq!(versions(&h), vec![(3, 2, 2)]);
        assert_eq!(h.pop().map(|r| r.rev.main), Some(3));
        assert!(h.is_empty() && h.records.0.is_none() && h.pop().is_none());
        put(&mut h, 6, 0, "d");
        h.push_tombstone(Revision::new(7, 0));
        assert_eq!(
            h.compactable(8),
            2,
            "a tombstone below the compaction goes too"
        );
        assert_eq!(h.compact(8).len(), 2);
        assert!(h.is_empty());
    }

    #[test]
    fn a_clone_shares_the_records_and_keeps_them_while_the_original_changes() {
        let mut h = KeyHistory::default();
        put(&mut h, 2, 0, "a");
        put(&mut h, 3, 0, "b");
        let view = h.clone();
        let (Some(mine), Some(theirs)) = (&h.records.0, &view.records.0) else {
            panic!("records live in a block")
        };
        assert!(Arc::ptr_eq(mine, theirs), "cloned without copying");
        let before = view.clone();
        let mut cold = ColdLog::default();
        let newest = Revision { main: 3, sub: 0 };
        let (rev, _) = h.superseded_hot(newest).expect("revision 2 is superseded");
        h.move_cold(rev, &mut cold);
        assert!(h.records()[0].cold_value().is_some());
        put(&mut h, 4, 0, "c");
        assert_eq!(h.pop().map(|r| r.rev.main), Some(4));
        assert_eq!(h.compact(3).len(), 1);
        assert_eq!(versions(&h), vec![(3, 2, 2)]);
        assert_eq!(view, before, "the clone saw none of it");
        assert_eq!(view.records()[0].cold_value(), None);
        assert_eq!(versions(&view), vec![(2, 2, 1), (3, 2, 2)]);
    }

    #[test]
    fn puts_after_a_tombstone_start_a_new_generation() {
        let mut h = KeyHistory::default();
        put(&mut h, 2, 0, "a");
        put(&mut h, 3, 0, "b");
        h.push_tombstone(Revision::new(4, 0));
        put(&mut h, 5, 0, "c");
        assert_eq!(versions(&h), vec![(2, 2, 1), (3, 2, 2), (5, 5, 1)]);
        assert_eq!(h.check_invariants(-1), Ok(()));
    }

    #[test]
    fn live_at_sees_the_state_as_of_a_past_revision() {
        let mut h = KeyHistory::default();
        put(&mut h, 2, 0, "a");
        h.push_tombstone(Revision::new(4, 0));
        assert!(h.live_at(1).is_none());
        assert_eq!(h.live_at(3).map(|r| r.rev.main), Some(2));
        assert!(h.live_at(4).is_none());
        assert!(h.live_at(100).is_none());
    }

    #[test]
    fn compaction_keeps_the_newest_put_at_or_before_the_revision() {
        let mut h = KeyHistory::default();
        put(&mut h, 2, 0, "a");
        put(&mut h, 3, 0, "b");
        put(&mut h, 5, 0, "c");
        let dropped = h.compact(4);
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            h.records().iter().map(|r| r.rev.main).collect::<Vec<_>>(),
            vec![3, 5]
        );
        assert_eq!(h.check_invariants(4), Ok(()));
    }

    #[test]
    fn compaction_keeps_a_tombstone_exactly_at_the_revision_but_drops_older_ones() {
        let mut h = KeyHistory::default();
        put(&mut h, 2, 0, "a");
        h.push_tombstone(Revision::new(3, 0));
        let mut at_tombstone = h.clone();
        at_tombstone.compact(3);
        assert_eq!(at_tombstone.records().len(), 1);
        assert!(at_tombstone.records()[0].is_tombstone());
        h.compact(4);
        assert!(h.is_empty());
    }

    #[test]
    fn invariant_check_rejects_a_broken_generation() {
        let bad = KeyHistory::from_records(vec![
            Record {
                rev: Revision::new(2, 0),
                change: Change::Put {
                    value: Value::Hot(Bytes::new()),
                    lease: 0,
                    create_revision: 2,
                    version: 1,
                },
            },
            Record {
                rev: Revision::new(3, 0),
                change: Change::Put {
                    value: Value::Hot(Bytes::new()),
                    lease: 0,
                    create_revision: 2,
                    version: 3,
                },
            },
        ]);
        assert!(bad.check_invariants(-1).is_err());
    }
}
