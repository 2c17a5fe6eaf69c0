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
