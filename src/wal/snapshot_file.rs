//! The snapshot file: one raft `Snapshot` (index, term, conf state, and the opaque state bytes
//! produced by the key space and node modules) with a magic, a version and a CRC32C.
//!
//! Layout (little-endian, byte diagram in docs/wal.md):
//! `magic "DETCDSNP" | crc u32 | version u32 | index u64 | term u64 | conf_state_len u32 |
//!  reserved u32 | data_len u64 | conf_state | data`; the checksum covers bytes 12..end.
//!
//! Invariants: a file decodes only if its length is exactly what its header declares and the
//! checksum over everything after the checksum field matches, so a torn, truncated, extended or
//! bit-rotted file is always rejected, never half-read. Drivers write the file whole (write a
//! temporary, sync, rename, sync the directory), so in practice a rejected file is damage.

use std::io::{self, Cursor, Seek, SeekFrom, Write};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};

use super::codec::{put_len_u32, put_u32, put_u64, Malformed, Reader};
use super::error::SnapshotFileError;

/// The first 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"DETCDSNP";
/// The snapshot file format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes before the conf state.
pub const SNAPSHOT_HEADER_LEN: usize = 48;
/// Bytes the checksum does not cover: the magic and the checksum itself.
const CRC_START: usize = 12;

/// Encodes `snapshot` (metadata and data) as a complete snapshot file.
pub fn encode_snapshot_file(snapshot: &Snapshot) -> Vec<u8> {
    let meta = snapshot.get_metadata();
    let data = &snapshot.data;
    // A conf state of a few members is a few dozen bytes; the capacity only saves a realloc.
    let mut out = Cursor::new(Vec::with_capacity(SNAPSHOT_HEADER_LEN + 128 + data.len()));
    write_snapshot_file(&mut out, meta, data.len() as u64, |w| w.write_all(data))
        .expect("a Vec grows as needed");
    out.into_inner()
}

/// Writes a snapshot file to `out`, from its current position, without ever holding the file
/// in memory: the `data_len` bytes of state come from `write_data`, piece by piece. The bytes
/// equal [`encode_snapshot_file`]'s. The checksum is known only at the end, so it is written
/// last, by seeking back; a writer that stops half way leaves a file that never decodes.
pub fn write_snapshot_file<W: Write + Seek>(
    out: &mut W,
    meta: &SnapshotMetadata,
    data_len: u64,
    write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let start = out.stream_position()?;
    let mut conf = Vec::new();
    put_conf_state(&mut conf, meta.get_conf_state());
    let mut head = Vec::with_capacity(SNAPSHOT_HEADER_LEN + conf.len());
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut head, 0); // checksum, written last
    put_u32(&mut head, SNAPSHOT_VERSION);
    put_u64(&mut head, meta.index);
    put_u64(&mut head, meta.term);
    put_len_u32(&mut head, conf.len(), "conf state");
    put_u32(&mut head, 0);
    put_u64(&mut head, data_len);
    debug_assert_eq!(head.len(), SNAPSHOT_HEADER_LEN);
    head.extend_from_slice(&conf);
    out.write_all(&head)?;

    let mut data = ChecksummedWriter {
        inner: &mut *out,
        crc: crc32c::crc32c(&head[CRC_START..]),
        written: 0,
    };
    write_data(&mut data)?;
    let (crc, written) = (data.crc, data.written);
    if written != data_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot state was {written} bytes, {data_len} announced"),
        ));
    }
    let end = out.stream_position()?;
    out.seek(SeekFrom::Start(start + 8))?;
    out.write_all(&crc.to_le_bytes())?;
    out.seek(SeekFrom::Start(end))?;
    Ok(())
}

/// Passes bytes through, computing their CRC32C and counting them.
struct ChecksummedWriter<'a, W: Write> {
    inner: &'a mut W,
    crc: u32,
    written: u64,
}

impl<W: Write> Write for ChecksummedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes a snapshot file. Never panics; allocates only the conf state and a copy of the data.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<Snapshot, SnapshotFileError> {
    check_snapshot_file(bytes).map(CheckedSnapshotFile::into_snapshot)
}

/// A snapshot file that passed every check, not yet copied out of its bytes.
pub(crate) struct CheckedSnapshotFile<'a> {
    pub(crate) index: u64,
    pub(crate) term: u64,
    conf_state: ConfState,
    data: &'a [u8],
}

impl CheckedSnapshotFile<'_> {
    pub(crate) fn into_snapshot(self) -> Snapshot {
        let mut meta = SnapshotMetadata {
            index: self.index,
            term: self.term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(self.conf_state);
        let mut snapshot = Snapshot {
            data: Bytes::copy_from_slice(self.data),
            ..Snapshot::default()
        };
        snapshot.set_metadata(meta);
        snapshot
    }
}

/// Validates a snapshot file without copying its data, so recovery can look at every file and
/// copy only the one it uses (snapshot data can be gigabytes).
pub(crate) fn check_snapshot_file(
    bytes: &[u8],
) -> Result<CheckedSnapshotFile<'_>, SnapshotFileError> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(SnapshotFileError::TooShort(bytes.len()));
    }
    if bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotFileError::BadMagic);
    }
    let invalid = |reason: Malformed| SnapshotFileError::Invalid(reason);
    let mut r = Reader::new(&bytes[8..]);
    let stored_crc = r.u32("checksum").map_err(invalid)?;
    let version = r.u32("version").map_err(invalid)?;
    // Checked before the checksum so that a newer format is reported as such, not as damage.
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotFileError::UnsupportedVersion(version));
    }
    let index = r.u64("index").map_err(invalid)?;
    let term = r.u64("term").map_err(invalid)?;
    let conf_len = r.u32("conf state length").map_err(invalid)?;
    let reserved = r.u32("reserved").map_err(invalid)?;
    let data_len = r.u64("data length").map_err(invalid)?;
    let declared = SNAPSHOT_HEADER_LEN as u128 + u128::from(conf_len) + u128::from(data_len);
    if declared != bytes.len() as u128 {
        return Err(SnapshotFileError::LengthMismatch {
            declared,
            actual: bytes.len(),
        });
    }
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    if computed != stored_crc {
        return Err(SnapshotFileError::Checksum {
            stored: stored_crc,
            computed,
        });
    }
    if reserved != 0 {
        return Err(invalid(format!(
            "reserved field is {reserved:#x}, not zero"
        )));
    }
    // The lengths were checked against the file size above, so these reads cannot fail.
    let conf_bytes = r.take(conf_len as usize, "conf state").map_err(invalid)?;
    let data = r.take(r.remaining(), "data").map_err(invalid)?;
    let conf_state = decode_conf_state(conf_bytes).map_err(invalid)?;
    Ok(CheckedSnapshotFile {
        index,
        term,
        conf_state,
        data,
    })
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_len_u32(out, ids.len(), "conf state id list");
    for id in ids {
        put_u64(out, *id);
    }
}

fn put_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    out.push(u8::from(cs.auto_leave));
}

fn read_ids(r: &mut Reader<'_>, what: &str) -> Result<Vec<u64>, Malformed> {
    let count = r.u32(what)?;
    let mut ids = Vec::with_capacity(r.capacity_for(u64::from(count), 8));
    for _ in 0..count {
        ids.push(r.u64(what)?);
    }
    Ok(ids)
}

fn decode_conf_state(bytes: &[u8]) -> Result<ConfState, Malformed> {
    let mut r = Reader::new(bytes);
    let cs = ConfState {
        voters: read_ids(&mut r, "voters")?,
        learners: read_ids(&mut r, "learners")?,
        voters_outgoing: read_ids(&mut r, "outgoing voters")?,
        learners_next: read_ids(&mut r, "next learners")?,
        auto_leave: match r.u8("auto leave")? {
            0 => false,
            1 => true,
            other => return Err(format!("auto leave flag is {other}, not 0 or 1")),
        },
        ..ConfState::default()
    };
    r.expect_end("conf state")?;
    Ok(cs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1, 2, 5],
            learners_next: vec![5],
            auto_leave: true,
            ..ConfState::default()
        };
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(cs);
        let mut snap = Snapshot {
            data: Bytes::copy_from_slice(data),
            ..Snapshot::default()
        };
        snap.set_metadata(meta);
        snap
    }

    #[test]
    fn a_streamed_file_equals_the_encoded_one_and_checks_its_length() {
        let snap = snapshot(9, 3, &[7u8; 10_000]);
        let mut out = Cursor::new(b"prefix".to_vec());
        out.seek(SeekFrom::End(0)).unwrap();
        write_snapshot_file(&mut out, snap.get_metadata(), 10_000, |w| {
            for chunk in snap.data.chunks(333) {
                w.write_all(chunk)?;
            }
            Ok(())
        })
        .unwrap();
        let written = out.into_inner();
        assert_eq!(&written[..6], b"prefix");
        assert_eq!(written[6..], encode_snapshot_file(&snap)[..]);

        let mut out = Cursor::new(Vec::new());
        let short = write_snapshot_file(&mut out, snap.get_metadata(), 10_001, |w| {
            w.write_all(&snap.data)
        });
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_snapshot_file_round_trips() {
        for data in [&b""[..], b"key space and node state"] {
            let snap = snapshot(42, 7, data);
            let file = encode_snapshot_file(&snap);
            assert_eq!(&file[..8], b"DETCDSNP");
            assert_eq!(decode_snapshot_file(&file).unwrap(), snap);
        }
        // A snapshot without metadata reads back with empty metadata.
        let decoded = decode_snapshot_file(&encode_snapshot_file(&Snapshot::default())).unwrap();
        assert_eq!(decoded.get_metadata().index, 0);
        assert_eq!(
            decoded.get_metadata().get_conf_state(),
            &ConfState::default()
        );
        assert!(decoded.data.is_empty());
    }

    #[test]
    fn a_truncated_snapshot_file_is_rejected_at_every_length() {
        let file = encode_snapshot_file(&snapshot(42, 7, b"some data"));
        for len in 0..file.len() {
            assert!(decode_snapshot_file(&file[..len]).is_err(), "length {len}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            decode_snapshot_file(&longer),
            Err(SnapshotFileError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn any_flipped_bit_in_a_snapshot_file_is_rejected() {
        let file = encode_snapshot_file(&snapshot(42, 7, b"some data"));
        for byte in 0..file.len() {
            let mut bad = file.clone();
            bad[byte] ^= 0x04;
            assert!(decode_snapshot_file(&bad).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn a_newer_format_is_named_as_such() {
        let mut file = encode_snapshot_file(&snapshot(1, 1, b""));
        file[12] = 2;
        assert_eq!(
            decode_snapshot_file(&file),
            Err(SnapshotFileError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn huge_declared_lengths_are_rejected_without_allocating() {
        let mut file = encode_snapshot_file(&snapshot(1, 1, b""));
        file[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        file[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_snapshot_file(&file),
            Err(SnapshotFileError::LengthMismatch { .. })
        ));
    }
}
