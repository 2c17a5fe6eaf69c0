//! WAL records: what the node appends (raft entries, hard states, snapshot markers) and the
//! byte layout of each record's payload inside a frame.
//!
//! Invariants, checked on both sides ("pair assertions"): an `Entries` record is non-empty, its
//! indexes are consecutive and start at 1 or later, and its terms never decrease. The writer
//! asserts them (a violation is a bug in the node); the reader reports them as errors (a
//! violation on disk means the bytes are not what we wrote, even though the checksums match).

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, HardState};

use super::codec::{put_len_u32, put_u16, put_u32, put_u64, Malformed, Reader};
use super::frame::{
    encode_frame, frame_len, KIND_ENTRIES, KIND_HARD_STATE, KIND_SNAPSHOT, RECORD_PAYLOAD_MAX,
};

/// One unit of the WAL. Records are replayed in order; see `recover` for their meaning.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Raft entries appended to the log. A record whose first index is `i` supersedes every
    /// earlier entry with index `>= i` (raft's conflict truncation), so appending is the only
    /// operation the log needs.
    Entries(Vec<Entry>),
    /// Raft's term, vote and commit index. The last one in the WAL is the current one.
    HardState(HardState),
    /// The snapshot file at `(index, term)` is durable. Written after the file is synced and
    /// before any WAL is released because of it, so the newest snapshot the node relies on
    /// always has its marker in the retained WAL.
    Snapshot { index: u64, term: u64 },
}

/// Bytes of an entry's fixed part: index, term, type, flags, reserved, data and context lengths.
const ENTRY_FIXED_LEN: usize = 8 + 8 + 1 + 1 + 2 + 4 + 4;
/// Bytes of the `Entries` payload before the first entry: count and reserved.
const ENTRIES_PREFIX_LEN: usize = 8;
const HARD_STATE_LEN: usize = 24;
const SNAPSHOT_MARKER_LEN: usize = 16;
/// `Entry::sync_log` (deprecated in raft-rs, kept so a round trip is exact).
const ENTRY_FLAG_SYNC_LOG: u8 = 1;

/// Appends `record` framed for logical WAL `offset` (where its first byte will land; a multiple
/// of 8) and returns the number of bytes appended, which is always a multiple of 8.
///
/// Panics if the record breaks the invariants above or its payload exceeds
/// [`RECORD_PAYLOAD_MAX`](super::RECORD_PAYLOAD_MAX): the caller splits large batches (use
/// [`encoded_len`]).
pub fn encode_record(offset: u64, record: &Record, out: &mut Vec<u8>) -> usize {
    match record {
        Record::Entries(entries) => {
            if let Err(reason) = check_entries(entries) {
                panic!("refusing to write an invalid Entries record: {reason}");
            }
            encode_frame(offset, KIND_ENTRIES, out, |out| {
                put_len_u32(out, entries.len(), "entry count");
                put_u32(out, 0);
                for entry in entries {
                    put_entry(out, entry);
                }
            })
        }
        Record::HardState(hs) => encode_frame(offset, KIND_HARD_STATE, out, |out| {
            put_u64(out, hs.term);
            put_u64(out, hs.vote);
            put_u64(out, hs.commit);
        }),
        Record::Snapshot { index, term } => encode_frame(offset, KIND_SNAPSHOT, out, |out| {
            put_u64(out, *index);
            put_u64(out, *term);
        }),
    }
}

/// The number of bytes [`encode_record`] appends for `record`, so a writer can split a batch
/// that would exceed [`RECORD_PAYLOAD_MAX`](super::RECORD_PAYLOAD_MAX) before encoding it.
pub fn encoded_len(record: &Record) -> usize {
    frame_len(payload_len(record))
}

/// The payload length of `record`; compare with
/// [`RECORD_PAYLOAD_MAX`](super::RECORD_PAYLOAD_MAX).
pub fn payload_len(record: &Record) -> usize {
    match record {
        Record::Entries(entries) => {
            ENTRIES_PREFIX_LEN
                + entries
                    .iter()
                    .map(|e| ENTRY_FIXED_LEN + e.data.len() + e.context.len())
                    .sum::<usize>()
        }
        Record::HardState(_) => HARD_STATE_LEN,
        Record::Snapshot { .. } => SNAPSHOT_MARKER_LEN,
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    put_u64(out, entry.index);
    put_u64(out, entry.term);
    out.push(entry_type_code(entry.get_entry_type()));
    out.push(if entry.sync_log {
        ENTRY_FLAG_SYNC_LOG
    } else {
        0
    });
    put_u16(out, 0);
    put_len_u32(out, entry.data.len(), "entry data");
    put_len_u32(out, entry.context.len(), "entry context");
    out.extend_from_slice(&entry.data);
    out.extend_from_slice(&entry.context);
}

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_from_code(code: u8) -> Option<EntryType> {
    match code {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// The shape every `Entries` record has: non-empty, consecutive indexes from 1 up, terms
/// never decreasing.
pub(crate) fn check_entries(entries: &[Entry]) -> Result<(), Malformed> {
    let first = entries
        .first()
        .ok_or_else(|| "an Entries record holds no entries".to_string())?;
    if first.index == 0 {
        return Err("entry index 0 (raft indexes start at 1)".to_string());
    }
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.index.checked_add(1) != Some(b.index) {
            return Err(format!(
                "entry {} is followed by entry {}",
                a.index, b.index
            ));
        }
        if b.term < a.term {
            return Err(format!(
                "entry {} has term {} after term {}",
                b.index, b.term, a.term
            ));
        }
    }
    Ok(())
}

/// Decodes the payload of an intact frame of `kind`.
pub(crate) fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, Malformed> {
    debug_assert!(payload.len() <= RECORD_PAYLOAD_MAX);
    let mut r = Reader::new(payload);
    let record = match kind {
        KIND_ENTRIES => Record::Entries(decode_entries(&mut r)?),
        KIND_HARD_STATE => Record::HardState(HardState {
            term: r.u64("hard state term")?,
            vote: r.u64("hard state vote")?,
            commit: r.u64("hard state commit")?,
            ..HardState::default()
        }),
        KIND_SNAPSHOT => Record::Snapshot {
            index: r.u64("snapshot marker index")?,
            term: r.u64("snapshot marker term")?,
        },
        other => return Err(format!("unknown record kind {other}")),
    };
    r.expect_end("record payload")?;
    Ok(record)
}

fn decode_entries(r: &mut Reader<'_>) -> Result<Vec<Entry>, Malformed> {
    let count = r.u32("entry count")?;
    let reserved = r.u32("entries reserved field")?;
    if reserved != 0 {
        return Err(format!("entries reserved field is {reserved:#x}, not zero"));
    }
    // The count is untrusted; reserve only what the remaining bytes could possibly hold.
    let mut entries = Vec::with_capacity(r.capacity_for(u64::from(count), ENTRY_FIXED_LEN));
    for _ in 0..count {
        entries.push(decode_entry(r)?);
    }
    check_entries(&entries)?;
    Ok(entries)
}

fn decode_entry(r: &mut Reader<'_>) -> Result<Entry, Malformed> {
    let mut entry = Entry {
        index: r.u64("entry index")?,
        term: r.u64("entry term")?,
        ..Entry::default()
    };
    let type_code = r.u8("entry type")?;
    let entry_type = entry_type_from_code(type_code)
        .ok_or_else(|| format!("entry {} has unknown type {type_code}", entry.index))?;
    entry.set_entry_type(entry_type);
    let flags = r.u8("entry flags")?;
    if flags & !ENTRY_FLAG_SYNC_LOG != 0 {
        return Err(format!(
            "entry {} has unknown flags {flags:#x}",
            entry.index
        ));
    }
    entry.sync_log = flags & ENTRY_FLAG_SYNC_LOG != 0;
    let reserved = r.u16("entry reserved field")?;
    if reserved != 0 {
        return Err(format!(
            "entry {} reserved field is {reserved:#x}, not zero",
            entry.index
        ));
    }
    let data_len = r.len_u32("entry data")?;
    let context_len = r.len_u32("entry context")?;
    entry.data = Bytes::copy_from_slice(r.take(data_len, "entry data")?);
    entry.context = Bytes::copy_from_slice(r.take(context_len, "entry context")?);
    Ok(entry)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::copy_from_slice(data),
            ..Entry::default()
        }
    }

    pub(crate) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    fn payload_of(record: &Record) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        encode_record(0, record, &mut out);
        let frame = super::super::frame::read_frame(&out, 0, 0)
            .unwrap()
            .unwrap();
        (frame.kind, frame.payload.to_vec())
    }

    #[test]
    fn every_record_kind_round_trips() {
        let mut conf = entry(7, 3, b"conf change");
        conf.set_entry_type(EntryType::EntryConfChangeV2);
        conf.context = Bytes::from_static(b"ctx");
        conf.sync_log = true;
        let records = [
            Record::Entries(vec![entry(5, 2, b""), entry(6, 3, b"put k v"), conf]),
            Record::HardState(hard_state(3, 2, 6)),
            Record::Snapshot { index: 9, term: 4 },
        ];
        for record in records {
            let (kind, payload) = payload_of(&record);
            assert_eq!(payload.len(), payload_len(&record));
            let mut out = Vec::new();
            assert_eq!(encode_record(0, &record, &mut out), encoded_len(&record));
            assert_eq!(decode_payload(kind, &payload).unwrap(), record);
        }
    }

    #[test]
    #[should_panic(expected = "invalid Entries record")]
    fn writing_non_consecutive_entries_is_a_bug() {
        encode_record(
            0,
            &Record::Entries(vec![entry(1, 1, b""), entry(3, 1, b"")]),
            &mut Vec::new(),
        );
    }

    #[test]
    fn decoding_rejects_what_the_writer_never_writes() {
        let (kind, payload) = payload_of(&Record::Entries(vec![entry(1, 1, b"x")]));
        // Count says two entries, only one present.
        let mut two = payload.clone();
        two[0] = 2;
        assert!(decode_payload(kind, &two).is_err());
        // Count zero: an empty record.
        let mut zero = payload.clone();
        zero[0] = 0;
        assert!(decode_payload(kind, &zero)
            .unwrap_err()
            .contains("no entries"));
        // Unknown entry type.
        let mut bad_type = payload.clone();
        bad_type[ENTRIES_PREFIX_LEN + 16] = 9;
        assert!(decode_payload(kind, &bad_type)
            .unwrap_err()
            .contains("unknown type"));
        // Trailing bytes.
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(decode_payload(kind, &trailing).is_err());
        // Unknown kind.
        assert!(decode_payload(42, &payload)
            .unwrap_err()
            .contains("unknown record kind"));
        // Decreasing terms.
        let mut out = Vec::new();
        put_u32(&mut out, 2);
        put_u32(&mut out, 0);
        put_entry(&mut out, &entry(1, 5, b""));
        put_entry(&mut out, &entry(2, 4, b""));
        assert!(decode_payload(KIND_ENTRIES, &out)
            .unwrap_err()
            .contains("term 4 after term 5"));
        // A huge data length is an error before any allocation.
        let mut huge = payload;
        let data_len_at = ENTRIES_PREFIX_LEN + 20;
        huge[data_len_at..data_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(kind, &huge).is_err());
    }
}
