//! The record frame: the 24-byte header with two CRC32C checksums that wraps every WAL payload,
//! and the test of whether the bytes at a position are an intact frame.
//!
//! Layout (little-endian, docs/wal.md has the byte diagram):
//! `header_crc u32 | payload_crc u32 | offset u64 | payload_len u32 | kind u8 | version u8 |
//!  reserved u16 | payload | zero padding to a multiple of 8`.
//!
//! Invariants:
//! - Every frame starts at a logical offset that is a multiple of [`RECORD_ALIGN`] and its total
//!   length is a multiple of it, so a reader only ever looks for frames at aligned positions.
//! - The header carries its own checksum (over bytes 4..24, which include the payload checksum),
//!   so a length field is trusted only after that checksum matched: a garbage length never makes
//!   the reader skip or allocate. Payload length is bounded by [`RECORD_PAYLOAD_MAX`].
//! - A frame records the logical offset it was written for. A frame found elsewhere is not
//!   silently accepted: a driver that misplaces bytes is caught, not trusted.
//! - An all-zero header is never written (the version byte is non-zero), which is how
//!   preallocated, zero-filled space is recognised.

use super::error::{FrameProblem, WalError};

/// Frames start and end on this boundary.
pub const RECORD_ALIGN: usize = 8;
/// Bytes of the frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// The largest payload one record may carry. Bigger batches are split by the writer; a larger
/// length field in an intact header is an error, never an allocation.
pub const RECORD_PAYLOAD_MAX: usize = 64 << 20;
/// The frame format this build writes and reads.
pub const FRAME_VERSION: u8 = 1;

pub(crate) const KIND_ENTRIES: u8 = 1;
pub(crate) const KIND_HARD_STATE: u8 = 2;
pub(crate) const KIND_SNAPSHOT: u8 = 3;

pub(crate) fn align_up(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// The frame length for a payload of `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + align_up(payload_len)
}

/// Appends one frame written for logical `offset`: reserves the header, lets `write_payload`
/// append the payload, pads, then fills in the header. Returns the frame's length.
pub(crate) fn encode_frame(
    offset: u64,
    kind: u8,
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> usize {
    assert!(
        offset % RECORD_ALIGN as u64 == 0,
        "WAL record offset {offset} is not {RECORD_ALIGN}-byte aligned"
    );
    let start = out.len();
    out.resize(start + FRAME_HEADER_LEN, 0);
    write_payload(out);
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    assert!(
        payload_len <= RECORD_PAYLOAD_MAX,
        "WAL record payload of {payload_len} bytes exceeds the {RECORD_PAYLOAD_MAX}-byte limit; \
         split the batch"
    );
    out.resize(start + frame_len(payload_len), 0);
    let payload_crc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN..]);

    let header = &mut out[start..start + FRAME_HEADER_LEN];
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    header[8..16].copy_from_slice(&offset.to_le_bytes());
    header[16..20].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[20] = kind;
    header[21] = FRAME_VERSION;
    header[22..24].copy_from_slice(&[0, 0]);
    let header_crc = crc32c::crc32c(&header[4..]);
    header[0..4].copy_from_slice(&header_crc.to_le_bytes());
    out.len() - start
}

/// The fields of a header whose checksum matched.
struct Header {
    payload_crc: u32,
    offset: u64,
    payload_len: usize,
    kind: u8,
    version: u8,
    reserved: u16,
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the header at `pos` if it is intact; otherwise says why not.
fn intact_header(bytes: &[u8], pos: usize) -> Result<Header, FrameProblem> {
    let rest = &bytes[pos..];
    if rest.len() < FRAME_HEADER_LEN {
        return Err(if rest.iter().all(|&b| b == 0) {
            FrameProblem::Zeroed
        } else {
            FrameProblem::Incomplete {
                have: rest.len(),
                need: FRAME_HEADER_LEN,
            }
        });
    }
    let h = &rest[..FRAME_HEADER_LEN];
    if h.iter().all(|&b| b == 0) {
        return Err(FrameProblem::Zeroed);
    }
    if le_u32(&h[0..4]) != crc32c::crc32c(&h[4..]) {
        return Err(FrameProblem::HeaderChecksum);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&h[8..16]);
    Ok(Header {
        payload_crc: le_u32(&h[4..8]),
        offset: u64::from_le_bytes(offset),
        payload_len: le_u32(&h[16..20]) as usize,
        kind: h[20],
        version: h[21],
        reserved: u16::from_le_bytes([h[22], h[23]]),
    })
}

/// A frame whose checksums matched and which was written for the position it was found at.
pub(crate) struct IntactFrame<'a> {
    pub(crate) kind: u8,
    pub(crate) payload: &'a [u8],
    pub(crate) len: usize,
}

/// Reads the frame at byte `pos` of `bytes`, whose logical offset is `offset`.
///
/// `Ok(Ok(frame))`: intact. `Ok(Err(problem))`: not intact in a way a torn write can cause, so
/// possibly the end of the log. `Err(_)`: checksums matched but the content is wrong, which no
/// torn write produces, so it is an error wherever it occurs.
pub(crate) fn read_frame(
    bytes: &[u8],
    pos: usize,
    offset: u64,
) -> Result<Result<IntactFrame<'_>, FrameProblem>, WalError> {
    let header = match intact_header(bytes, pos) {
        Ok(header) => header,
        Err(problem) => return Ok(Err(problem)),
    };
    let bad = |reason: String| WalError::BadRecord { offset, reason };
    if header.version != FRAME_VERSION {
        return Err(bad(format!(
            "frame format version {} (this build reads version {FRAME_VERSION})",
            header.version
        )));
    }
    if header.reserved != 0 {
        return Err(bad(format!(
            "reserved header bytes are {:#06x}, not zero",
            header.reserved
        )));
    }
    if header.payload_len > RECORD_PAYLOAD_MAX {
        return Err(bad(format!(
            "payload length {} exceeds the {RECORD_PAYLOAD_MAX}-byte limit",
            header.payload_len
        )));
    }
    let need = frame_len(header.payload_len);
    let have = bytes.len() - pos;
    if have < need {
        return Ok(Err(FrameProblem::Incomplete { have, need }));
    }
    let body = &bytes[pos + FRAME_HEADER_LEN..pos + need];
    if crc32c::crc32c(body) != header.payload_crc {
        return Ok(Err(if header.offset == offset {
            FrameProblem::PayloadChecksum
        } else {
            FrameProblem::StaleHeader {
                claimed_offset: header.offset,
            }
        }));
    }
    if header.offset != offset {
        return Err(WalError::Misplaced {
            offset,
            claimed_offset: header.offset,
        });
    }
    let (payload, padding) = body.split_at(header.payload_len);
    if padding.iter().any(|&b| b != 0) {
        return Err(bad("padding bytes are not zero".to_string()));
    }
    Ok(Ok(IntactFrame {
        kind: header.kind,
        payload,
        len: need,
    }))
}

/// Whether an intact frame (both checksums match) starts at `pos`, wherever it was written for
/// and whatever it holds. Used after a damaged frame: any such frame proves that data after the
/// damage reached the disk, so the damage is not a torn tail.
pub(crate) fn is_intact_frame_at(bytes: &[u8], pos: usize) -> bool {
    let Ok(header) = intact_header(bytes, pos) else {
        return false;
    };
    if header.payload_len > RECORD_PAYLOAD_MAX {
        return false;
    }
    let need = frame_len(header.payload_len);
    bytes.len() - pos >= need
        && crc32c::crc32c(&bytes[pos + FRAME_HEADER_LEN..pos + need]) == header.payload_crc
}

/// The first aligned position at or after `from` holding an intact frame. The header checksum
/// is checked before the payload's, so a scan over garbage costs a 20-byte checksum per 8 bytes.
pub(crate) fn find_intact_frame(bytes: &[u8], from: usize) -> Option<usize> {
    let mut pos = align_up(from);
    while pos + FRAME_HEADER_LEN <= bytes.len() {
        if is_intact_frame_at(bytes, pos) {
            return Some(pos);
        }
        pos += RECORD_ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(offset, KIND_SNAPSHOT, &mut out, |o| {
            o.extend_from_slice(payload)
        });
        out
    }

    #[test]
    fn frames_are_aligned_and_padded_with_zeros() {
        for len in 0..20 {
            let f = frame(8, &vec![0xAB; len]);
            assert_eq!(f.len() % RECORD_ALIGN, 0);
            assert_eq!(f.len(), FRAME_HEADER_LEN + align_up(len));
            assert!(f[FRAME_HEADER_LEN + len..].iter().all(|&b| b == 0));
            let read = read_frame(&f, 0, 8).unwrap().unwrap();
            assert_eq!(read.payload, &vec![0xAB; len][..]);
            assert_eq!(read.len, f.len());
        }
    }

    #[test]
    fn a_frame_read_at_another_offset_is_misplaced() {
        let f = frame(16, b"abc");
        assert_eq!(
            read_frame(&f, 0, 24).err(),
            Some(WalError::Misplaced {
                offset: 24,
                claimed_offset: 16
            })
        );
        assert!(is_intact_frame_at(&f, 0));
    }

    #[test]
    fn an_intact_header_with_a_huge_length_is_an_error_not_an_allocation() {
        let mut f = frame(0, b"abc");
        f[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&f[4..24]);
        f[0..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_frame(&f, 0, 0),
            Err(WalError::BadRecord { .. })
        ));
        assert!(!is_intact_frame_at(&f, 0));
    }

    #[test]
    fn zeros_and_short_garbage_are_recognised() {
        assert_eq!(
            read_frame(&[0; 40], 0, 0).unwrap().err(),
            Some(FrameProblem::Zeroed)
        );
        assert_eq!(
            read_frame(&[0; 8], 0, 0).unwrap().err(),
            Some(FrameProblem::Zeroed)
        );
        assert_eq!(
            read_frame(&[1; 8], 0, 0).unwrap().err(),
            Some(FrameProblem::Incomplete { have: 8, need: 24 })
        );
    }
}
