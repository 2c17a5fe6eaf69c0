//! Every way WAL and snapshot bytes can fail to become a usable disk state, with messages an
//! operator can act on. Offsets are logical WAL offsets (see docs/wal.md), the same numbers the
//! node and the drivers use, so a message points at the exact byte.
//!
//! Invariant: a torn tail is *not* an error anywhere in this module; it is reported through
//! `DecodedWal::torn_tail_bytes` / `Recovered::torn_tail_bytes`. Everything here means the node
//! must not start, because starting would silently drop or invent data.

use std::fmt;

use thiserror::Error;

/// Why decoding stopped at a frame that is not intact. Each of these is what a torn write can
/// leave behind, so on its own it means "end of the log"; it becomes an error only when an intact
/// record follows it (`WalError::Corrupt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameProblem {
    /// The header is all zeros: unwritten, preallocated space.
    Zeroed,
    /// Fewer bytes remain than the frame needs.
    Incomplete { have: usize, need: usize },
    /// The header's checksum does not match: the header was not (fully) written.
    HeaderChecksum,
    /// The header is intact but the payload's checksum does not match.
    PayloadChecksum,
    /// An intact header that belongs at another offset, with a payload that does not match it:
    /// left over from an earlier, overwritten write.
    StaleHeader { claimed_offset: u64 },
}

impl fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameProblem::Zeroed => write!(f, "zero-filled (unwritten) bytes"),
            FrameProblem::Incomplete { have, need } => {
                write!(f, "an incomplete record ({have} of {need} bytes present)")
            }
            FrameProblem::HeaderChecksum => write!(f, "a record header with a bad checksum"),
            FrameProblem::PayloadChecksum => write!(f, "a record payload with a bad checksum"),
            FrameProblem::StaleHeader { claimed_offset } => write!(
                f,
                "a stale record header (it claims offset {claimed_offset}) without a matching payload"
            ),
        }
    }
}

/// The WAL byte stream cannot be decoded without losing or inventing data.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WalError {
    #[error("WAL start offset {0} is not a multiple of 8; records are 8-byte aligned")]
    MisalignedStart(u64),
    #[error("WAL of {len} bytes starting at offset {start} would end beyond offset 2^64")]
    OffsetOverflow { start: u64, len: u64 },
    #[error(
        "WAL corrupt at offset {offset}: {problem}, yet an intact record follows at offset \
         {intact_offset}; this is damage inside the log, not a torn tail, so no data is dropped \
         automatically"
    )]
    Corrupt {
        offset: u64,
        problem: FrameProblem,
        intact_offset: u64,
    },
    #[error(
        "WAL record at offset {offset} is intact but was written for offset {claimed_offset}: the \
         WAL start offset or a segment's position is wrong"
    )]
    Misplaced { offset: u64, claimed_offset: u64 },
    #[error("WAL record at offset {offset} has valid checksums but is invalid: {reason}")]
    BadRecord { offset: u64, reason: String },
}

/// A snapshot file cannot be used. Recovery treats every such file as absent and then checks
/// that nothing it relied on is lost (see `RecoveryError::SnapshotLost`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotFileError {
    #[error("snapshot file is {0} bytes, shorter than its 48-byte header")]
    TooShort(usize),
    #[error("not a detcd snapshot file (bad magic)")]
    BadMagic,
    #[error(
        "snapshot file is {actual} bytes but its header describes {declared} (torn or extended)"
    )]
    LengthMismatch { declared: u128, actual: usize },
    #[error("snapshot file checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot file format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u32),
    #[error("snapshot file has valid checksums but is invalid: {0}")]
    Invalid(String),
}

/// The disk image cannot be turned into a starting state. The node refuses to start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("WAL segment starts at offset {0}, which is not a multiple of 8")]
    SegmentMisaligned(u64),
    #[error("two WAL segments start at offset {0}")]
    SegmentDuplicate(u64),
    #[error(
        "WAL segment at offset {start} holds {len} bytes but the next segment starts at \
         {next_start}: the bytes between are missing"
    )]
    SegmentShort {
        start: u64,
        len: u64,
        next_start: u64,
    },
    #[error(
        "two valid snapshot files at index {index} disagree on its term ({term_a} vs {term_b})"
    )]
    SnapshotConflict {
        index: u64,
        term_a: u64,
        term_b: u64,
    },
    #[error(
        "WAL marker at offset {offset} records snapshot (index {index}, term {marker_term}) but \
         the snapshot file at that index has term {file_term}"
    )]
    SnapshotMarkerMismatch {
        offset: u64,
        index: u64,
        marker_term: u64,
        file_term: u64,
    },
    #[error(
        "WAL marker at offset {offset} says snapshot (index {index}, term {term}) was durable, but \
         no usable snapshot file holds it and the WAL does not hold that entry either (newest \
         usable snapshot: index {fallback_index}); the state at index {index} is lost"
    )]
    SnapshotLost {
        offset: u64,
        index: u64,
        term: u64,
        fallback_index: u64,
    },
    #[error(
        "log gap: the record at WAL offset {offset} starts at index {found} but index {expected} \
         was expected (snapshot index {snapshot_index})"
    )]
    LogGap {
        offset: u64,
        expected: u64,
        found: u64,
        snapshot_index: u64,
    },
    #[error(
        "record at WAL offset {offset} rewrites the log from index {first_index}, contradicting \
         snapshot (index {snapshot_index}, term {snapshot_term}) that an earlier marker made \
         durable"
    )]
    RewritesSnapshot {
        offset: u64,
        first_index: u64,
        snapshot_index: u64,
        snapshot_term: u64,
    },
    #[error(
        "entry {index} (WAL offset {offset}) has term {term}, lower than the {previous_term} \
         before it: raft terms never decrease along the log"
    )]
    TermRegression {
        offset: u64,
        index: u64,
        term: u64,
        previous_term: u64,
    },
    #[error(
        "hard state commit {commit} is beyond the last recovered index {last_index}: committed \
         entries are missing"
    )]
    CommitBeyondLog { commit: u64, last_index: u64 },
    #[error(
        "the WAL starts at offset {wal_start_offset} (older segments were released) but holds no \
         hard state record: the term and vote are lost"
    )]
    MissingHardState { wal_start_offset: u64 },
}
