//! The durable formats and their recovery: WAL records, snapshot files, and the decoding of a
//! disk image into the state a node starts from. Bytes in, records out; docs/wal.md is the
//! byte-by-byte description and the reasoning.
//!
//! Architecture invariant: this module is pure. It never touches files, clocks, threads or
//! randomness, and it iterates nothing in hash order. Drivers do the I/O: the server reads
//! segment files and snapshot files, the simulator hands over its in-memory disk, and both call
//! the same [`recover`].
//!
//! Invariants kept throughout:
//! - Decoding untrusted bytes returns errors, never panics, and allocates at most in proportion
//!   to the bytes given (lengths are checked against what is present before anything is
//!   reserved, and a record's payload is bounded by [`RECORD_PAYLOAD_MAX`]).
//! - A torn or zero-filled tail is truncated and reported; damage followed by intact data is an
//!   error with its offset. Nothing is ever dropped silently.
//! - Encoding asserts what decoding checks: a record that could not be read back is never
//!   written.
//!
//! Submodules: `codec` (bounded little-endian reading), `frame` (the record frame and its
//! checksums), `record` (record payloads), `stream` (the WAL stream, torn tail versus
//! corruption), `snapshot_file` (the snapshot file), `recover` (choosing a snapshot and
//! replaying the log), `error` (every failure, with offsets).

mod codec;
mod error;
mod frame;
mod record;
mod recover;
mod snapshot_file;
mod stream;

#[cfg(test)]
mod tests;

pub use error::{FrameProblem, RecoveryError, SnapshotFileError, WalError};
pub use frame::{FRAME_HEADER_LEN, FRAME_VERSION, RECORD_ALIGN, RECORD_PAYLOAD_MAX};
pub use record::{encode_record, encoded_len, payload_len, Record};
pub use recover::{
    recover, recover_with, DiskImage, EntryRun, Recovered, RecoveryBugs, UnusableSnapshot,
    WalSegment,
};
pub use snapshot_file::{
    decode_snapshot_file, encode_snapshot_file, write_snapshot_file, SNAPSHOT_HEADER_LEN,
    SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};
pub use stream::{decode_wal, DecodedRecord, DecodedWal};
