//! What the key space holds, counted as it changes: the basis of the backend quota
//! (`approximate_size_bytes`) and of the estimate of how large a snapshot of it would be, which
//! decides when a snapshot is worth writing (see `Node::maybe_snapshot`).

use super::history::{Change, Record};
use super::Index;

/// Bytes of bookkeeping we charge per stored record, on top of its value: the record, its share
/// of the index node holding it and of its history's vector. A rough constant on purpose:
/// `approximate_size_bytes` is for quotas and trends, not for exact accounting.
const RECORD_OVERHEAD_BYTES: u64 = 96;
/// Bytes of bookkeeping we charge per indexed key, on top of the key bytes.
const KEY_OVERHEAD_BYTES: u64 = 64;
/// What a record costs in a snapshot besides its value: its field tags, varint revisions,
/// version and lengths, at their smallest (a tombstone takes a little less).
const RECORD_ENCODED_OVERHEAD_BYTES: u64 = 10;
/// What a key costs in a snapshot besides its bytes: the tags and lengths around its history.
const KEY_ENCODED_OVERHEAD_BYTES: u64 = 4;

/// Counts of what the key space holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    keys: u64,
    key_bytes: u64,
    records: u64,
    value_bytes: u64,
}

fn value_len(record: &Record) -> u64 {
    match &record.change {
        Change::Put { value, .. } => value.len() as u64,
        Change::Tombstone => 0,
    }
}

impl Footprint {
    /// The footprint of a key index, counted key by key (for decoding and invariant checks).
    pub fn count(keys: &Index) -> Footprint {
        let mut footprint = Footprint::default();
        for (key, history) in keys {
            footprint.add_key(key.bytes());
            for record in history.records() {
                footprint.add_record(record);
            }
        }
        footprint
    }

    pub fn add_key(&mut self, key: &[u8]) {
        self.keys += 1;
        self.key_bytes += key.len() as u64;
    }

    pub fn remove_key(&mut self, key: &[u8]) {
        self.keys -= 1;
        self.key_bytes -= key.len() as u64;
    }

    pub fn add_record(&mut self, record: &Record) {
        self.records += 1;
        self.value_bytes += value_len(record);
    }

    pub fn remove_record(&mut self, record: &Record) {
        self.records -= 1;
        self.value_bytes -= value_len(record);
    }

    /// Rough bytes held by keys, values (in memory or cold) and bookkeeping.
    pub fn approximate_size_bytes(&self) -> u64 {
        self.keys * KEY_OVERHEAD_BYTES
            + self.key_bytes
            + self.records * RECORD_OVERHEAD_BYTES
            + self.value_bytes
    }

    /// About how many bytes a snapshot of the key space encodes to; low rather than high.
    pub fn snapshot_bytes_estimate(&self) -> u64 {
        self.keys * KEY_ENCODED_OVERHEAD_BYTES
            + self.key_bytes
            + self.records * RECORD_ENCODED_OVERHEAD_BYTES
            + self.value_bytes
    }
}
