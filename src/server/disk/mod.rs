//! The disk executor: the only code that touches the data directory's files. It loads the WAL
//! and snapshots at start ([`load`]) and then executes the node's `Output::Disk` operations, in
//! emission order, on one dedicated thread ([`DiskExecutor`]).
//!
//! # Files
//! ```text
//! <data-dir>/member/wal/<start>.wal     WAL segments; <start> = 16 lowercase hex digits, the logical
//!                                       WAL offset of the segment's first byte
//! <data-dir>/member/wal/spare.wal.tmp   the next segment, preallocated (zeros) before it is needed
//! <data-dir>/member/snap/<index>.snap   snapshot files; <index> = 16 hex digits, the raft index
//! <data-dir>/member/snap/<index>.snap.tmp   a snapshot being written; never read
//! <data-dir>/member/cold/<segment>.cold      values of superseded revisions; a cache, see [`cold`]
//! ```
//! The WAL is one logical append-only byte stream (`wal_start_offset` onward, see `crate::wal`);
//! segments cut it into files at record boundaries. A segment is preallocated with zeros and synced
//! when created, so a later `fdatasync` need not update the file size; the zeros after the last
//! record decode as a torn tail.
//!
//! # Invariants
//! - Segments chain: every segment but the last holds valid records up to exactly the next
//!   segment's start offset. The executor keeps this by syncing a segment before the next one is
//!   given its name (a rename, then a directory sync), and [`load`] refuses a directory where it
//!   does not hold.
//! - An append is never split across segments. A new segment starts only between appends, when the
//!   current one cannot hold the next append; an append larger than a segment gets one of its own.
//! - After [`load`], the bytes after the last valid record are zeros on disk, so a torn write from
//!   an earlier run can never be read back as records once new records are written around it.
//! - A snapshot file appears under its final name only whole and synced (write, sync, rename, sync
//!   the directory).
//!
//! # Ordering and group commit
//! Operations execute in the order submitted and complete in that order. The thread takes every
//! operation already queued (up to [`BATCH_OPS_MAX`] operations or [`BATCH_BYTES_MAX`] bytes of
//! appends) as one batch, writes the appends in order, issues ONE `fdatasync` if any append in the
//! batch asked for sync, and only then reports the batch's completions. `SaveSnapshot` and
//! `Release` are barriers: a sync the batch owes is issued before them, and they are durable when
//! they complete, so nothing is deleted while what replaces it may still be lost.
//!
//! The driver hands over each node batch's operations together ([`DiskExecutor::submit_all`]):
//! when they are only appends (up to 1 MiB) and the disk thread has nothing queued or running,
//! the driver's thread executes them itself as one batch, which saves two thread wake-ups per
//! write; the order above holds either way. After a batch that took more than 10 ms there (a
//! slow disk), appends go through the disk thread for a second, so the node's heartbeats do not
//! wait behind a stalled `fdatasync`.
//!
//! # Failures
//! An I/O error fails the whole batch it happened in and every later operation: the node stops,
//! because a disk in an unknown state must not be trusted again (after a failed `fsync` the page
//! cache may already have dropped the data, so retrying would lie).

mod cold;
mod executor;
mod files;
mod load;
mod segments;
mod snapshots;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::PathBuf;

pub use cold::{ColdFiles, ColdReader};
pub use executor::{DiskExecutor, BATCH_BYTES_MAX, BATCH_OPS_MAX};
pub(crate) use files::lower_thread_priority;
pub use load::{load, load_with};

/// Default size of a WAL segment (etcd's).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// Size a segment is preallocated to. Smaller in tests, to exercise rotation.
    pub segment_bytes: u64,
    /// `--wal-dir`: the WAL segments' directory, instead of `<data-dir>/member/wal` (a disk of
    /// their own keeps the syncs of appends away from snapshots and cold segments).
    pub wal_dir: Option<PathBuf>,
    /// `--unsafe-no-fsync`: the WAL's appends are never synced, so a crash of the machine
    /// (not of the process) loses acknowledged writes. For tests that want speed, as etcd's.
    pub unsafe_no_fsync: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            wal_dir: None,
            unsafe_no_fsync: false,
        }
    }
}

/// Why the data directory cannot be used. The binary prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum DiskSetupError {
    /// The directory or a file in it cannot be created, read or written.
    #[error("data dir unusable: {0}")]
    Io(String),
    /// The files are there but do not hold a consistent WAL: recovery would lose or invent data.
    #[error("data dir corrupt: {0}")]
    Corrupt(String),
}

/// What [`load`] found: the state to build the node from, and the files to continue writing.
pub struct Loaded {
    pub recovered: crate::wal::Recovered,
    pub files: DiskFiles,
}

/// The open data directory, positioned where the next WAL append goes. Handed to
/// [`DiskExecutor::spawn`].
#[derive(Debug)]
pub struct DiskFiles {
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    pub options: DiskOptions,
    /// Start offsets of the segments on disk, ascending; the last is the current segment.
    pub segment_starts: Vec<u64>,
    /// The current (last) segment, opened for writing.
    pub current: File,
    pub current_path: PathBuf,
    /// Bytes of valid records in the current segment: the next append goes here.
    pub current_write_pos: u64,
    /// Preallocated length of the current segment.
    pub current_capacity: u64,
}

impl DiskFiles {
    /// Logical start offset of the current segment.
    pub fn current_start(&self) -> u64 {
        *self
            .segment_starts
            .last()
            .expect("there is always a current segment")
    }

    /// Logical offset where the next append goes: the node's `wal_end_offset`.
    pub fn wal_end_offset(&self) -> u64 {
        self.current_start() + self.current_write_pos
    }
}
