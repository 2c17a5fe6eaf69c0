//! TEMPORARY stub with the agreed API; replaced by the real WAL.
#![allow(unused)]
use raft::eraftpb::{Entry, HardState, Snapshot};
pub enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    Snapshot { index: u64, term: u64 },
}
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    todo!()
}
pub fn encode_snapshot_file(snapshot: &Snapshot) -> Vec<u8> {
    todo!()
}
#[derive(Default)]
pub struct DiskImage {
    pub wal_start_offset: u64,
    pub wal: Vec<u8>,
    pub snapshots: Vec<Vec<u8>>,
}
#[derive(Default, Clone)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub wal_end_offset: u64,
    pub torn_tail_bytes: u64,
}
#[derive(Debug)]
pub struct RecoveryError;
pub fn recover(image: &DiskImage) -> Result<Recovered, RecoveryError> {
    todo!()
}
/// What `decode_wal` found in a run of WAL bytes.
pub struct DecodedWal {
    pub records: Vec<Record>,
    /// Length of the prefix made of whole, valid records.
    pub valid_len: u64,
    /// Bytes after `valid_len`: a torn write or a preallocated zero fill.
    pub torn_tail_bytes: u64,
}
#[derive(Debug)]
pub struct WalError(pub String);
/// STUB: treats everything up to the trailing zeros as valid and decodes no records.
pub fn decode_wal(bytes: &[u8]) -> Result<DecodedWal, WalError> {
    let valid_len = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    Ok(DecodedWal {
        records: Vec::new(),
        valid_len: valid_len as u64,
        torn_tail_bytes: (bytes.len() - valid_len) as u64,
    })
}
