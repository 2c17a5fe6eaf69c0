//! The key space as bytes, for raft snapshots: `detcdpb.MvccSnapshot`
//! (proto/detcdpb/mvcc_snapshot.proto).
//!
//! Encoding is deterministic: keys in key order, records in revision order, fields in tag order,
//! so the same state always gives the same bytes and replicas can compare snapshots byte for
//! byte. Decoding trusts nothing: after the protobuf parse it checks every invariant of
//! [`KeySpace`] (ordering, uniqueness of revisions, generation arithmetic, the compaction rule)
//! and answers an error, never a panic, for anything else. Integrity against bit rot is the
//! framing layer's job (CRC in the WAL/snapshot file); this layer rejects states that cannot be.

use std::fmt;
use std::io::{self, Write};

use bytes::Bytes;
use prost::encoding::{encoded_len_varint, key_len};
use prost::Message;
use thiserror::Error;

use super::cold::{ColdRead, NoColdValues};
use super::footprint::Footprint;
use super::history::{Change, KeyHistory, Record, Value};
use super::revision::Revision;
use super::KeySpaceBugs;
use super::{Index, IndexKey, KeySpace};
use crate::proto::detcdpb::{MvccKeyHistory, MvccRecord, MvccSnapshot};

/// The only format this code writes and reads.
const FORMAT_VERSION: u32 = 1;

/// No revision, sub revision or version a real history can reach (2^62 writes would take a
/// billion writes a second for a century). Refusing larger ones keeps every `+ 1` the store
/// does afterwards from overflowing, whatever bytes we were handed.
const COUNTER_MAX: i64 = i64::MAX / 2;

/// Why bytes could not be turned back into a [`KeySpace`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotDecodeError {
    #[error("mvcc snapshot is not a valid protobuf message: {0}")]
    Malformed(String),
    #[error("mvcc snapshot format version {0} is not supported (expected {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("mvcc snapshot describes an impossible key space: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> SnapshotDecodeError {
    SnapshotDecodeError::Invalid(reason.into())
}

/// The record as stored in a snapshot, with `value` as the put's value (read by the caller when
/// it is cold).
fn record_to_proto(record: &Record, value: Bytes) -> MvccRecord {
    let mut out = MvccRecord {
        main: record.rev.main,
        sub: record.rev.sub,
        ..MvccRecord::default()
    };
    match &record.change {
        Change::Put {
            lease,
            create_revision,
            version,
            ..
        } => {
            out.value = value;
            out.lease = *lease;
            out.create_revision = *create_revision;
            out.version = *version;
        }
        Change::Tombstone => out.tombstone = true,
    }
    out
}

fn record_from_proto(r: MvccRecord) -> Result<Record, SnapshotDecodeError> {
    let counters = [r.main, r.sub, r.create_revision, r.version];
    if counters.iter().any(|&c| !(0..=COUNTER_MAX).contains(&c)) {
        return Err(invalid("revision or version out of range"));
    }
    let rev = Revision::new(r.main, r.sub);
    let change = if r.tombstone {
        if !r.value.is_empty() || r.lease != 0 || r.create_revision != 0 || r.version != 0 {
            return Err(invalid("tombstone with put fields"));
        }
        Change::Tombstone
    } else {
        Change::Put {
            value: Value::Hot(r.value),
            lease: r.lease,
            create_revision: r.create_revision,
            version: r.version,
        }
    };
    Ok(Record { rev, change })
}

/// The key space as it was at one moment, for encoding a snapshot elsewhere (on another thread)
/// while the key space moves on. Taking one is O(1): it shares the key index with the live
/// store, which copies an index node only when it next changes it.
#[derive(Clone)]
pub struct KeySpaceView {
    pub(super) keys: Index,
    pub(super) current_revision: i64,
    pub(super) compact_main: i64,
}

impl fmt::Debug for KeySpaceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpaceView")
            .field("current_revision", &self.current_revision)
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn key_history_to_proto(
    key: &Bytes,
    records: &[Record],
    cold: &dyn ColdRead,
) -> io::Result<MvccKeyHistory> {
    let records = records
        .iter()
        .map(|record| {
            let value = match &record.change {
                Change::Put {
                    value: Value::Hot(bytes),
                    ..
                } => bytes.clone(),
                Change::Put {
                    value: Value::Cold(at),
                    ..
                } => cold.read_cold(*at)?,
                Change::Tombstone => Bytes::new(),
            };
            Ok(record_to_proto(record, value))
        })
        .collect::<io::Result<_>>()?;
    Ok(MvccKeyHistory {
        key: key.clone(),
        records,
    })
}

/// Field numbers of `MvccSnapshot.keys`, `MvccKeyHistory.key`, `MvccKeyHistory.records` and
/// `MvccRecord.value`.
const KEYS_FIELD: u32 = 4;
const HISTORY_KEY_FIELD: u32 = 1;
const HISTORY_RECORDS_FIELD: u32 = 2;
const RECORD_VALUE_FIELD: u32 = 4;

/// Bytes of a length-delimited field `tag` with a payload of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The encoded length of one key's history, without reading cold values: their lengths are
/// known.
fn key_history_encoded_len(key: &Bytes, records: &[Record]) -> usize {
    let mut inner = if key.is_empty() {
        0
    } else {
        delimited_len(HISTORY_KEY_FIELD, key.len())
    };
    for record in records {
        let mut len = record_to_proto(record, Bytes::new()).encoded_len();
        if let Change::Put { value, .. } = &record.change {
            if value.len() > 0 {
                len += delimited_len(RECORD_VALUE_FIELD, value.len());
            }
        }
        inner += delimited_len(HISTORY_RECORDS_FIELD, len);
    }
    delimited_len(KEYS_FIELD, inner)
}

impl KeySpaceView {
    /// The store revision this view froze.
    pub fn revision(&self) -> i64 {
        self.current_revision
    }

    /// The key space as this view froze it, for reads (O(1): it shares the index). It keeps
    /// no cold segments, so a value it would read from them comes back as a cold reference.
    pub(super) fn frozen_store(&self) -> KeySpace {
        KeySpace {
            keys: self.keys.clone(),
            current_revision: self.current_revision,
            compact_main: self.compact_main,
            releasing: None,
            cooling: None,
            release_slice_keys: super::RELEASE_SLICE_KEYS,
            footprint: Footprint::default(),
            cold: None,
            changes: Vec::new(),
            every_change: true,
            bugs: KeySpaceBugs::default(),
        }
    }

    /// Everything but the keys; encodes to the message's leading fields.
    fn header(&self) -> MvccSnapshot {
        MvccSnapshot {
            format_version: FORMAT_VERSION,
            current_revision: self.current_revision,
            compact_revision: self.compact_main,
            keys: Vec::new(),
        }
    }

    /// Each key with the records a snapshot holds of it: what compaction keeps, whether or not
    /// its memory was released yet, so that members that released different amounts write
    /// the same bytes.
    fn retained(&self) -> impl Iterator<Item = (&Bytes, &[Record])> {
        self.keys
            .iter()
            .map(|(key, history)| (key.bytes(), history.retained(self.compact_main)))
            .filter(|(_, records)| !records.is_empty())
    }

    /// Exactly how many bytes [`KeySpaceView::encode_to`] writes.
    pub fn encoded_len(&self) -> usize {
        let keys: usize = self
            .retained()
            .map(|(key, records)| key_history_encoded_len(key, records))
            .sum();
        self.header().encoded_len() + keys
    }

    /// Writes the encoded state key by key, never holding more than one key's history encoded;
    /// the bytes equal one `MvccSnapshot` message (prost writes fields in tag order, and a
    /// repeated message field is just its elements one after another). Cold values are read
    /// through `cold`.
    pub fn encode_to(&self, out: &mut dyn Write, cold: &dyn ColdRead) -> io::Result<()> {
        let mut buf = Vec::new();
        self.header()
            .encode(&mut buf)
            .expect("a Vec grows as needed");
        out.write_all(&buf)?;
        for (key, records) in self.retained() {
            buf.clear();
            prost::encoding::message::encode(
                KEYS_FIELD,
                &key_history_to_proto(key, records, cold)?,
                &mut buf,
            );
            out.write_all(&buf)?;
        }
        Ok(())
    }

    /// The whole state as bytes; equal states give equal bytes.
    pub fn encode(&self, cold: &dyn ColdRead) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_to(&mut out, cold)?;
        Ok(out)
    }
}

impl KeySpace {
    /// The state right now, frozen, in O(1).
    pub fn view(&self) -> KeySpaceView {
        KeySpaceView {
            keys: self.keys.clone(),
            current_revision: self.current_revision,
            compact_main: self.compact_main,
        }
    }

    /// The whole state as bytes, for a store that keeps every value in memory (others encode a
    /// [`KeySpace::view`] with their cold values); equal states give equal bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.view()
            .encode(&NoColdValues)
            .expect("a store without cold values encodes from memory")
    }

    /// Rebuilds a key space from [`KeySpace::encode_snapshot`] output, validating everything.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KeySpace, SnapshotDecodeError> {
        let snapshot = MvccSnapshot::decode(bytes)
            .map_err(|e| SnapshotDecodeError::Malformed(e.to_string()))?;
        KeySpace::from_snapshot(snapshot)
    }

    /// Rebuilds a key space from its decoded snapshot message (a section of a larger snapshot),
    /// validating everything.
    pub fn from_snapshot(snapshot: MvccSnapshot) -> Result<KeySpace, SnapshotDecodeError> {
        if snapshot.format_version != FORMAT_VERSION {
            return Err(SnapshotDecodeError::UnsupportedVersion(
                snapshot.format_version,
            ));
        }
        let current_revision = snapshot.current_revision;
        let compact_main = snapshot.compact_revision;
        if !(1..=COUNTER_MAX).contains(&current_revision) {
            return Err(invalid("current revision out of range"));
        }
        if compact_main < -1 || compact_main > current_revision {
            return Err(invalid("compact revision outside [-1, current revision]"));
        }

        let mut keys = Index::new();
        let mut previous_key: Option<Bytes> = None;
        for entry in snapshot.keys {
            let key = entry.key;
            if key.is_empty() {
                return Err(invalid("empty key"));
            }
            if previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(invalid("keys not in strictly ascending order"));
            }
            let records = entry
                .records
                .into_iter()
                .map(record_from_proto)
                .collect::<Result<Vec<_>, _>>()?;
            let history = KeyHistory::from_records(records);
            history
                .check_invariants(compact_main)
                .map_err(|e| invalid(format!("key {key:?}: {e}")))?;
            for record in history.records() {
                if record.rev.main > current_revision {
                    return Err(invalid("record after the current revision"));
                }
            }
            keys.insert(IndexKey::new(key.clone()), history);
            previous_key = Some(key);
        }
        let store = KeySpace {
            footprint: Footprint::count(&keys),
            keys,
            current_revision,
            compact_main,
            releasing: None,
            cooling: None,
            release_slice_keys: super::RELEASE_SLICE_KEYS,
            cold: None,
            changes: Vec::new(),
            every_change: true,
            bugs: KeySpaceBugs::default(),
        };
        store.check_revisions().map_err(invalid)?;
        Ok(store)
    }

    /// No two records share a revision, and above the compact revision nothing has ever been
    /// dropped, so there the records must be exactly what the writes left: every main revision
    /// from 2 (revision 1 is the empty start) to the current one holds one write's changes, with
    /// sub revisions 0, 1, 2, ...
    pub(super) fn check_revisions(&self) -> Result<(), String> {
        let mut revisions: Vec<Revision> = self
            .keys
            .values()
            .flat_map(|history| history.records().iter().map(|r| r.rev))
            .collect();
        revisions.sort_unstable();
        if revisions.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("two records share a revision".into());
        }
        let first_intact = self.compact_main.max(1) + 1;
        let mut next_main = first_intact;
        let mut next_sub = 0;
        let intact = revisions.partition_point(|r| *r < Revision::first_of(first_intact));
        for &rev in &revisions[intact..] {
            if rev.main == next_main - 1 && next_sub > 0 && rev.sub == next_sub {
                next_sub += 1;
            } else if rev.main == next_main && rev.sub == 0 {
                next_main += 1;
                next_sub = 1;
            } else {
                return Err(format!(
                    "revision {}.{} breaks the write sequence",
                    rev.main, rev.sub
                ));
            }
        }
        if next_main - 1 != self.current_revision.max(first_intact - 1) {
            return Err(
                "the writes above the compact revision do not reach the current revision".into(),
            );
        }
        Ok(())
    }
}
