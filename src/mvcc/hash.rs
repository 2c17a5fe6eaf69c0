//! HashKV: a CRC-32C over the key space's retained revisions, computed exactly as etcd computes
//! it (`server/storage/mvcc/hash.go`), so replicas can be compared with each other and with a
//! real etcd member.
//!
//! etcd hashes its backend's `key` bucket: the bucket name `key`, then, in revision order, each
//! stored record's bucket key (see [`Revision::etcd_bucket_key`]) followed by its protobuf
//! `KeyValue`. For `hash_kv(rev)` it skips:
//! - records after `rev`;
//! - records at or before the compact revision that are not the visible state of their key at
//!   `rev`, unless no key at all is visible at `rev` (etcd's `len(keep) > 0` test);
//! - a tombstone exactly at the compact revision (so members that keep it and members of older
//!   versions that dropped it agree).

use prost::Message;

use bytes::Bytes;

use super::cold::ColdRead;
use super::history::{KeyHistory, Record};
use super::revision::Revision;
use super::{Index, KeySpace, KeySpaceView};
use crate::error::EtcdError;

impl KeySpace {
    /// etcd's HashKV as of `revision`: see [`KeySpaceView::hash_kv`].
    pub fn hash_kv(&self, revision: i64, cold: &dyn ColdRead) -> Result<(u32, i64), EtcdError> {
        self.view().hash_kv(revision, cold)
    }
}

impl KeySpaceView {
    /// etcd's HashKV as of `revision` (0 = current). Returns the hash and the compact revision
    /// as etcd reports it in `HashKVResponse.compact_revision`: -1 if never compacted.
    /// `Compacted` below the compact revision, `FutureRev` above the current one; a negative
    /// revision hashes nothing but the bucket name, as in etcd.
    /// Superseded values are read through `cold` (an error reading one answers `Corrupt`).
    pub fn hash_kv(&self, revision: i64, cold: &dyn ColdRead) -> Result<(u32, i64), EtcdError> {
        hash_kv(
            &self.keys,
            self.current_revision,
            self.compact_main,
            revision,
            cold,
        )
    }
}

fn hash_kv(
    keys: &Index,
    current_revision: i64,
    compact_main: i64,
    revision: i64,
    cold: &dyn ColdRead,
) -> Result<(u32, i64), EtcdError> {
    if revision > 0 && revision < compact_main {
        return Err(EtcdError::Compacted);
    }
    if revision > 0 && revision > current_revision {
        return Err(EtcdError::FutureRev);
    }
    let at = if revision == 0 {
        current_revision
    } else {
        revision
    };
    let any_visible = keys.values().any(|h| h.live_at(at).is_some());

    let mut crc = crc32c::crc32c(b"key");
    let mut encoded = Vec::new();
    // Revision order, which etcd's backend has for free: gather, then sort.
    let mut upto: Vec<(&Bytes, &KeyHistory, &Record)> = keys
        .iter()
        .flat_map(|(key, history)| {
            // What compaction keeps, whether or not its memory was released yet.
            let records = history.retained(compact_main);
            let through = records.partition_point(|r| r.rev.main <= at);
            records[..through]
                .iter()
                .map(move |r| (key.bytes(), history, r))
        })
        .collect();
    upto.sort_unstable_by_key(|(_, _, record)| record.rev);
    for (key, history, record) in upto {
        let rev = record.rev;
        if rev.main <= compact_main && any_visible && !is_visible_at(history.live_at(at), rev) {
            continue;
        }
        if rev.main == compact_main && record.is_tombstone() {
            continue;
        }
        crc = hash_record(crc, key, record, cold, &mut encoded)?;
    }
    Ok((crc, compact_main))
}

fn is_visible_at(visible: Option<&Record>, rev: Revision) -> bool {
    visible.is_some_and(|r| r.rev == rev)
}

fn hash_record(
    crc: u32,
    key: &Bytes,
    record: &Record,
    cold: &dyn ColdRead,
    scratch: &mut Vec<u8>,
) -> Result<u32, EtcdError> {
    let (bucket_key, len) = record.rev.etcd_bucket_key(record.is_tombstone());
    let crc = crc32c::crc32c_append(crc, &bucket_key[..len]);
    let mut stored = record.etcd_stored_value(key);
    if let Some(at) = record.cold_value() {
        stored.value = cold.read_cold(at).map_err(|_| EtcdError::Corrupt)?;
    }
    scratch.clear();
    stored.encode(scratch).expect("a Vec grows as needed");
    Ok(crc32c::crc32c_append(crc, scratch))
}
