//! Decoding the WAL byte stream into records, and the one judgement that matters most: is the
//! damage at the end of the stream a torn tail (truncate it) or corruption (refuse to start)?
//!
//! The rule: decoding stops at the first frame that is not intact. If any intact frame (both
//! checksums match) exists at any aligned position after it, data written after the damage
//! reached the disk, so the damage is inside the log: an error. If none exists, everything from
//! the damaged frame on is the remains of writes that never completed, or unwritten zeros: a torn
//! tail, reported and dropped.
//!
//! Why this is sound: an append-only writer that syncs in order can only lose a suffix, and a
//! torn write never creates a frame whose two checksums both match. What the rule cannot tell
//! apart is a crash that persisted sectors of one unsynced write out of order (a hole followed by
//! an intact later record) from real corruption; it calls that corruption, because guessing
//! wrong the other way would silently drop acknowledged data.

use super::error::WalError;
use super::frame::{find_intact_frame, read_frame, RECORD_ALIGN};
use super::record::{decode_payload, Record};

/// A record and the logical WAL offset of its first byte.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedRecord {
    pub offset: u64,
    pub record: Record,
}

/// The intact prefix of a WAL byte stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedWal {
    pub records: Vec<DecodedRecord>,
    /// Bytes from the start of the input that hold intact records; the writer continues here.
    pub valid_len: usize,
    /// Non-zero bytes after `valid_len` that were dropped as a torn tail (up to and including
    /// the last non-zero byte). Zero-filled preallocated space does not count.
    pub torn_tail_bytes: usize,
}

/// Decodes `bytes`, the WAL from logical offset `start_offset` (a multiple of 8) on.
///
/// Never panics and allocates at most in proportion to `bytes.len()`.
pub fn decode_wal(start_offset: u64, bytes: &[u8]) -> Result<DecodedWal, WalError> {
    decode_wal_judging(start_offset, bytes, true)
}

/// `decode_wal`; with `detect_corruption` off (an injected bug of the simulator's tests), any
/// damage is taken for a torn tail, wherever it is.
pub(super) fn decode_wal_judging(
    start_offset: u64,
    bytes: &[u8],
    detect_corruption: bool,
) -> Result<DecodedWal, WalError> {
    if start_offset % RECORD_ALIGN as u64 != 0 {
        return Err(WalError::MisalignedStart(start_offset));
    }
    if start_offset.checked_add(bytes.len() as u64).is_none() {
        return Err(WalError::OffsetOverflow {
            start: start_offset,
            len: bytes.len() as u64,
        });
    }
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let offset = start_offset + pos as u64;
        let frame = match read_frame(bytes, pos, offset)? {
            Ok(frame) => frame,
            Err(problem) => {
                let intact = detect_corruption
                    .then(|| find_intact_frame(bytes, pos + RECORD_ALIGN))
                    .flatten();
                if let Some(intact) = intact {
                    return Err(WalError::Corrupt {
                        offset,
                        problem,
                        intact_offset: start_offset + intact as u64,
                    });
                }
                let torn_tail_bytes = bytes[pos..]
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |last| last + 1);
                return Ok(DecodedWal {
                    records,
                    valid_len: pos,
                    torn_tail_bytes,
                });
            }
        };
        let record = decode_payload(frame.kind, frame.payload)
            .map_err(|reason| WalError::BadRecord { offset, reason })?;
        records.push(DecodedRecord { offset, record });
        pos += frame.len;
    }
    Ok(DecodedWal {
        records,
        valid_len: pos,
        torn_tail_bytes: 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::error::FrameProblem;
    use super::super::record::encode_record;
    use super::super::record::tests::{entry, hard_state};
    use super::*;

    /// Encodes `records` as a WAL starting at `start`, returning the bytes and each record's
    /// offset.
    pub(crate) fn wal_of(start: u64, records: &[Record]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for record in records {
            let offset = start + out.len() as u64;
            offsets.push(offset);
            encode_record(offset, record, &mut out);
        }
        (out, offsets)
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Entries(vec![entry(1, 1, b"a"), entry(2, 1, b"bb")]),
            Record::HardState(hard_state(1, 1, 2)),
            Record::Entries(vec![entry(3, 2, b"a much longer entry payload")]),
            Record::Snapshot { index: 2, term: 1 },
            Record::Entries(vec![entry(4, 2, b"last"), entry(5, 2, b"")]),
        ]
    }

    fn records_of(decoded: &DecodedWal) -> Vec<Record> {
        decoded.records.iter().map(|r| r.record.clone()).collect()
    }

    #[test]
    fn a_sequence_of_records_round_trips_with_offsets() {
        let records = sample();
        let (bytes, offsets) = wal_of(4096, &records);
        let decoded = decode_wal(4096, &bytes).unwrap();
        assert_eq!(records_of(&decoded), records);
        let decoded_offsets: Vec<u64> = decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(decoded_offsets, offsets);
        assert_eq!(decoded.valid_len, bytes.len());
        assert_eq!(decoded.torn_tail_bytes, 0);
    }

    #[test]
    fn empty_and_all_zero_streams_are_empty_logs() {
        for bytes in [vec![], vec![0u8; 5], vec![0u8; 4096]] {
            let decoded = decode_wal(0, &bytes).unwrap();
            assert!(decoded.records.is_empty());
            assert_eq!((decoded.valid_len, decoded.torn_tail_bytes), (0, 0));
        }
    }

    #[test]
    fn torn_tail_at_every_byte_of_the_last_record_keeps_the_earlier_records() {
        let records = sample();
        let (bytes, offsets) = wal_of(0, &records);
        let last_start = *offsets.last().unwrap() as usize;
        for cut in last_start..bytes.len() {
            // The write stopped at `cut`; what follows is preallocated zeros.
            for fill in [0u8, 0xFF] {
                let mut torn = bytes[..cut].to_vec();
                torn.resize(bytes.len() + 64, fill);
                let decoded = decode_wal(0, &torn)
                    .unwrap_or_else(|e| panic!("cut at {cut}, fill {fill:#x}: {e}"));
                if fill == 0 && bytes[cut..].iter().all(|&b| b == 0) {
                    // Only zeros (padding, empty lengths) were missing: the zero fill restored
                    // the record exactly, so it is intact.
                    assert_eq!(records_of(&decoded), records);
                    continue;
                }
                assert_eq!(
                    records_of(&decoded),
                    records[..records.len() - 1],
                    "cut {cut}"
                );
                assert_eq!(decoded.valid_len, last_start);
                let nonzero_end = if fill == 0 {
                    torn[..cut]
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(0, |i| i + 1)
                } else {
                    torn.len()
                };
                assert_eq!(
                    decoded.torn_tail_bytes,
                    nonzero_end.saturating_sub(last_start)
                );
            }
            // The file simply ends at `cut`.
            let decoded = decode_wal(0, &bytes[..cut]).unwrap();
            assert_eq!(decoded.records.len(), records.len() - 1);
            assert_eq!(decoded.valid_len, last_start);
        }
    }

    #[test]
    fn zero_filled_preallocated_tail_is_not_torn() {
        let records = sample();
        let (mut bytes, _) = wal_of(0, &records);
        let len = bytes.len();
        bytes.resize(len + (1 << 16), 0);
        let decoded = decode_wal(0, &bytes).unwrap();
        assert_eq!(records_of(&decoded), records);
        assert_eq!((decoded.valid_len, decoded.torn_tail_bytes), (len, 0));
    }

    #[test]
    fn a_flipped_bit_in_a_middle_record_is_corruption_at_its_offset() {
        let records = sample();
        let (bytes, offsets) = wal_of(0, &records);
        let (start, end) = (offsets[2] as usize, offsets[3] as usize);
        for byte in start..end {
            for bit in [0, 3, 7] {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                match decode_wal(0, &bad) {
                    Err(WalError::Corrupt {
                        offset,
                        intact_offset,
                        ..
                    }) => {
                        assert_eq!(offset, offsets[2], "byte {byte} bit {bit}");
                        assert_eq!(intact_offset, offsets[3]);
                    }
                    other => panic!("byte {byte} bit {bit}: expected corruption, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let records = sample();
        let (bytes, offsets) = wal_of(0, &records);
        let last_start = *offsets.last().unwrap() as usize;
        for byte in last_start..bytes.len() {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            let decoded = decode_wal(0, &bad).unwrap();
            assert_eq!(records_of(&decoded), records[..records.len() - 1]);
            assert_eq!(decoded.valid_len, last_start);
            assert!(decoded.torn_tail_bytes > 0);
        }
    }

    #[test]
    fn zeros_in_the_middle_followed_by_records_are_corruption() {
        let records = sample();
        let (bytes, offsets) = wal_of(0, &records);
        let mut bad = bytes.clone();
        bad[offsets[1] as usize..offsets[2] as usize].fill(0);
        assert!(matches!(
            decode_wal(0, &bad),
            Err(WalError::Corrupt {
                problem: FrameProblem::Zeroed,
                ..
            })
        ));
    }

    #[test]
    fn a_wrong_start_offset_is_reported_not_mistaken_for_a_torn_log() {
        let (bytes, _) = wal_of(8192, &sample());
        assert_eq!(
            decode_wal(0, &bytes),
            Err(WalError::Misplaced {
                offset: 0,
                claimed_offset: 8192
            })
        );
        assert_eq!(decode_wal(3, &bytes), Err(WalError::MisalignedStart(3)));
        assert!(matches!(
            decode_wal(u64::MAX - 7, &bytes),
            Err(WalError::OffsetOverflow { .. })
        ));
    }

    #[test]
    fn a_record_shifted_after_a_gap_is_corruption() {
        // A driver bug: after a torn tail at offset P, it appends the next records 8 bytes later.
        let records = sample();
        let (bytes, offsets) = wal_of(0, &records);
        let p = offsets[4] as usize;
        let mut shifted = bytes[..p].to_vec();
        shifted.extend_from_slice(&[0; 8]);
        shifted.extend_from_slice(&bytes[p..]);
        assert!(matches!(
            decode_wal(0, &shifted),
            Err(WalError::Corrupt { offset, intact_offset, .. })
                if offset == p as u64 && intact_offset == p as u64 + 8
        ));
    }

    #[test]
    fn an_intact_frame_with_an_invalid_payload_is_an_error_even_at_the_tail() {
        let mut bytes = Vec::new();
        super::super::frame::encode_frame(0, 77, &mut bytes, |o| o.extend_from_slice(b"??"));
        assert!(matches!(
            decode_wal(0, &bytes),
            Err(WalError::BadRecord { offset: 0, .. })
        ));
    }
}
