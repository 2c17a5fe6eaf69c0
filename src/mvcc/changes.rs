//! The key changes of past revisions, read back from a frozen key space: what a watcher that
//! fell behind (or asked for an old start revision) catches up on.
//!
//! Every change of a key in a revision range is one record of its history; the change before it
//! in the same history is the event's previous key-value pair. Compaction keeps, for each key,
//! the newest record at or before the compact revision (a tombstone exactly at it too), so the
//! changes of every revision from the compact revision on can be read back; their previous
//! pairs can be gone (as in etcd, an event just after compaction may lack its `prev_kv`).

use std::io;

use bytes::Bytes;

use super::cold::ColdRead;
use super::history::{Change, Record, Value};
use super::range::KeyRange;
use super::snapshot::KeySpaceView;
use super::KeyChange;
use crate::proto::mvccpb::KeyValue;

impl KeySpaceView {
    /// The compact revision of the frozen store (-1 if it was never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_main
    }

    /// Every change of a key in `key..range_end` (etcd's range convention) at main revisions
    /// `from..=to`, in revision order, with its previous pair. Superseded values are read
    /// through `cold`.
    pub fn changes(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
        cold: &dyn ColdRead,
    ) -> io::Result<Vec<KeyChange>> {
        let mut out = Vec::new();
        let store = self.frozen_store();
        for (key, history) in store.keys_scouted(KeyRange::new(key, range_end)) {
            let records = history.retained(self.compact_main);
            let first = records.partition_point(|r| r.rev.main < from);
            let end = records.partition_point(|r| r.rev.main <= to);
            for i in first..end {
                out.push(change_of(key, &records[..=i], cold)?);
            }
        }
        out.sort_unstable_by_key(|c| c.revision);
        Ok(out)
    }
}

/// The change the last of `records` (a key's records up to it) made.
fn change_of(key: &Bytes, records: &[Record], cold: &dyn ColdRead) -> io::Result<KeyChange> {
    let (record, earlier) = records.split_last().expect("a record");
    let put = |r: &&Record| !r.is_tombstone();
    // etcd reads prev_kv at the revision before the change's: past an earlier change of the
    // key at the same revision.
    let prev = match earlier.iter().rev().find(|r| r.rev.main < record.rev.main) {
        Some(p) if put(&p) => Some(key_value(key, p, cold)?),
        _ => None,
    };
    let lease_before = earlier.last().filter(put).map_or(0, Record::lease);
    let deleted = record.is_tombstone();
    let kv = if deleted {
        KeyValue {
            key: key.clone(),
            mod_revision: record.rev.main,
            ..KeyValue::default()
        }
    } else {
        key_value(key, record, cold)?
    };
    Ok(KeyChange {
        revision: record.rev,
        kv,
        deleted,
        prev,
        lease_before,
    })
}

/// A put record's key-value pair, its value read from `cold` when it is cold.
fn key_value(key: &Bytes, record: &Record, cold: &dyn ColdRead) -> io::Result<KeyValue> {
    let mut kv = record.key_value(key).expect("a put record");
    if let Change::Put {
        value: Value::Cold(at),
        ..
    } = &record.change
    {
        kv.value = cold.read_cold(*at)?;
    }
    Ok(kv)
}
