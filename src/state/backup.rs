//! The backup file `Maintenance/Snapshot` streams and `detcd snapshot restore` reads: the whole
//! replicated state at one moment, framed so that damage is found before anything is restored.
//!
//! Layout: `magic "DTCDBKP1" | state length (u64, little-endian) | StateSnapshot bytes | zeros
//! | SHA-256 of everything before it`, the zeros making the length a multiple of 512 before the
//! digest. That frame is what etcdctl checks when it saves a snapshot stream (etcd's bbolt
//! backups are page-sized with a SHA-256 appended); the content is detcd's own: etcd's tools
//! cannot restore it, and detcd cannot restore theirs.

use std::io::{self, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{State, StateSnapshotError, StateView};
use crate::mvcc::ColdRead;

const MAGIC: [u8; 8] = *b"DTCDBKP1";
const HEAD_BYTES: usize = MAGIC.len() + 8;
const DIGEST_BYTES: usize = 32;
/// The body (everything before the digest) is a multiple of this many bytes.
const ALIGN: usize = 512;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("not a detcd snapshot file (it does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    NotABackup,
    #[error(
        "snapshot file is corrupt: {0} bytes is not a whole backup; it was truncated or extended"
    )]
    Length(usize),
    #[error("snapshot file is corrupt: sha256 checksum mismatch; it was damaged")]
    Checksum,
    #[error("snapshot file is corrupt: {0}")]
    State(#[from] StateSnapshotError),
}

/// The length of the body that holds a state of `state_len` bytes; `None` past `usize::MAX`,
/// which only a forged length can ask for.
fn body_len(state_len: usize) -> Option<usize> {
    HEAD_BYTES
        .checked_add(state_len)?
        .checked_next_multiple_of(ALIGN)
}

/// The body length for a state this member holds in memory.
fn held_body_len(state_len: usize) -> usize {
    body_len(state_len).expect("a state in memory is far smaller than the address space")
}

/// Exactly how many bytes [`write_backup`] writes for `view`.
pub fn backup_len(view: &StateView) -> usize {
    held_body_len(view.encoded_len()) + DIGEST_BYTES
}

/// Writes the backup of `view`, reading its superseded values through `cold`.
pub fn write_backup(view: &StateView, out: &mut dyn Write, cold: &dyn ColdRead) -> io::Result<()> {
    let state_len = view.encoded_len();
    let mut hashed = Hashed {
        out,
        digest: Sha256::new(),
    };
    hashed.write_all(&MAGIC)?;
    hashed.write_all(&(state_len as u64).to_le_bytes())?;
    view.encode_to(&mut hashed, cold)?;
    let padding = held_body_len(state_len) - HEAD_BYTES - state_len;
    hashed.write_all(&vec![0; padding])?;
    let digest = hashed.digest.finalize();
    hashed.out.write_all(&digest)
}

/// Reads a backup, checking its frame and then every invariant of the state it holds.
pub fn read_backup(bytes: &[u8]) -> Result<State, BackupError> {
    if bytes.len() < HEAD_BYTES || bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if bytes.len() % ALIGN != DIGEST_BYTES {
        return Err(BackupError::Length(bytes.len()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
    if Sha256::digest(body).as_slice() != digest {
        return Err(BackupError::Checksum);
    }
    let state_len = u64::from_le_bytes(body[MAGIC.len()..HEAD_BYTES].try_into().expect("8 bytes"));
    let state_len = usize::try_from(state_len).map_err(|_| BackupError::Length(bytes.len()))?;
    if body_len(state_len) != Some(body.len()) {
        return Err(BackupError::Length(bytes.len()));
    }
    Ok(State::decode_snapshot(
        &body[HEAD_BYTES..HEAD_BYTES + state_len],
    )?)
}

/// Passes bytes through while hashing them.
struct Hashed<'a> {
    out: &'a mut dyn Write,
    digest: Sha256,
}

impl Write for Hashed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::NoColdValues;
    use crate::proto::detcdpb::internal_request::Op;
    use crate::proto::etcdserverpb::PutRequest;

    fn backup_of_a_small_state() -> (State, Vec<u8>) {
        let mut state = State::new();
        for i in 0..20u8 {
            state.apply(Op::Put(PutRequest {
                key: vec![b'k', i % 5].into(),
                value: vec![i; 100].into(),
                ..PutRequest::default()
            }));
        }
        let mut bytes = Vec::new();
        write_backup(&state.view(), &mut bytes, &NoColdValues).unwrap();
        assert_eq!(bytes.len(), backup_len(&state.view()));
        // What etcdctl checks before it keeps a snapshot it saved.
        assert_eq!(bytes.len() % 512, 32);
        (state, bytes)
    }

    #[test]
    fn a_backup_restores_the_state_it_was_taken_of() {
        let (state, bytes) = backup_of_a_small_state();
        assert_eq!(read_backup(&bytes).unwrap(), state);
    }

    #[test]
    fn any_damage_is_refused() {
        let (_, bytes) = backup_of_a_small_state();
        for at in [0, 9, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                read_backup(&damaged).is_err(),
                "a flip at {at} went unnoticed"
            );
        }
        assert!(matches!(
            read_backup(&bytes[..bytes.len() - 10]),
            Err(BackupError::Length(_))
        ));
        assert!(matches!(
            read_backup(b"bbolt? no"),
            Err(BackupError::NotABackup)
        ));
    }

    /// The digest is a checksum anyone can compute: a file framed with a valid one but a state
    /// length near `u64::MAX` is refused, not a slice out of bounds (found by `fuzz/backup_read`).
    #[test]
    fn a_forged_state_length_is_refused() {
        for state_len in [u64::MAX, u64::MAX - 15, u64::MAX - 511, 1 << 63] {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&state_len.to_le_bytes());
            body.resize(ALIGN, 0);
            let mut file = body.clone();
            file.extend_from_slice(&Sha256::digest(&body));
            assert!(
                matches!(read_backup(&file), Err(BackupError::Length(_))),
                "state length {state_len}"
            );
        }
    }
}
