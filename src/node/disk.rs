//! Durability gating: what the node asked the driver to write, and what may happen only once a
//! write is durable. Raft readies complete in order; the messages raft allows out only after
//! persistence (votes, append acks) wait here as data, next to the write they depend on.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::HardState;

use super::types::{DiskOp, IoId, Output};
use super::{DiskError, Node, StopReason};
use crate::wal::{self, Record, Recovered};

/// WAL records gathered for one append, each encoded for the offset it will occupy.
pub(super) struct WalBatch {
    start: u64,
    pub bytes: Vec<u8>,
}

impl WalBatch {
    pub fn new(start: u64) -> WalBatch {
        WalBatch {
            start,
            bytes: Vec::new(),
        }
    }

    /// Where the next record will start.
    pub fn offset(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    pub fn push(&mut self, record: &Record) {
        let offset = self.offset();
        // Room for the whole record at once, rather than growing through every power of two.
        self.bytes.reserve(wal::encoded_len(record));
        wal::encode_record(offset, record, &mut self.bytes);
    }
}

/// What the node knows about the WAL it has asked the driver to write.
#[derive(Default)]
pub(super) struct DiskState {
    next_io: u64,
    /// Logical end of the WAL, counting appends not yet completed.
    pub wal_end_offset: u64,
    /// For each WAL append that carried entries: its offset and the index of its last entry.
    pub entry_records: VecDeque<(u64, u64)>,
    /// Where the WAL stood when the last snapshot was taken or installed.
    pub wal_offset_at_snapshot: u64,
    /// Raft readies whose writes are in flight, in order.
    pub readies: VecDeque<InflightReady>,
    /// Disk operations that are not raft readies.
    pub other_ios: BTreeMap<u64, IoPurpose>,
    /// The hard state of the last ready whose synced write completed: what this member has
    /// promised survives a crash.
    pub durable_hard_state: HardState,
}

pub(super) struct InflightReady {
    pub number: u64,
    pub io: Option<u64>,
    pub done: bool,
    /// Messages raft allows out only once this ready is durable.
    pub messages: Vec<raft::eraftpb::Message>,
    /// An installed snapshot's marker offset: the WAL before it is released once durable.
    pub release_wal_before: Option<(u64, u64)>,
    /// The hard state this ready syncs, if it writes one and syncs.
    pub synced_hard_state: Option<HardState>,
}

pub(super) enum IoPurpose {
    /// A locally taken snapshot file is durable; next, write its WAL marker.
    SnapshotSaved { index: u64, term: u64 },
    /// The marker is durable; now the WAL before `wal_before` and older snapshots can go.
    MarkerWritten {
        wal_before: u64,
        snapshot_index: u64,
    },
    /// A release; nothing follows it.
    Released,
    /// The hard state raised at start is durable.
    HardStateWritten(HardState),
}

impl DiskState {
    /// What the recovered WAL holds, as the node tracks it.
    pub fn recovered(recovered: &Recovered, snapshot_index: u64) -> DiskState {
        DiskState {
            wal_end_offset: recovered.wal_end_offset,
            wal_offset_at_snapshot: recovered
                .entry_runs
                .iter()
                .find(|run| run.last_index > snapshot_index)
                .map_or(recovered.wal_end_offset, |run| run.wal_offset),
            entry_records: recovered
                .entry_runs
                .iter()
                .map(|run| (run.wal_offset, run.last_index))
                .collect(),
            durable_hard_state: recovered.recorded_hard_state.clone(),
            ..Default::default()
        }
    }

    /// Whether a snapshot from the leader was installed but is not durable yet.
    pub fn installing_snapshot(&self) -> bool {
        self.readies.iter().any(|r| r.release_wal_before.is_some())
    }
}

impl Node {
    pub(super) fn emit_disk(&mut self, op: DiskOp) -> u64 {
        self.disk.next_io += 1;
        let io = self.disk.next_io;
        self.outputs.push_back(Output::Disk { io: IoId(io), op });
        io
    }

    pub(super) fn append_wal(&mut self, data: Vec<u8>, sync: bool) -> u64 {
        self.disk.wal_end_offset += data.len() as u64;
        self.emit_disk(DiskOp::AppendWal {
            data: Bytes::from(data),
            sync,
        })
    }

    pub(super) fn handle_disk_done(&mut self, io: IoId, result: Result<(), DiskError>) {
        if let Err(error) = result {
            self.stop(StopReason::DiskFailed { io: io.0, error });
            return;
        }
        if let Some(ready) = self.disk.readies.iter_mut().find(|r| r.io == Some(io.0)) {
            ready.done = true;
            self.complete_readies();
            return;
        }
        match self.disk.other_ios.remove(&io.0) {
            Some(IoPurpose::SnapshotSaved { index, term }) => {
                self.write_snapshot_marker(index, term)
            }
            Some(IoPurpose::MarkerWritten {
                wal_before,
                snapshot_index,
            }) => self.release(wal_before, snapshot_index),
            Some(IoPurpose::HardStateWritten(hs)) => self.disk.durable_hard_state = hs,
            Some(IoPurpose::Released) | None => {}
        }
    }

    /// Writes the recovered hard state when recovery raised it (see `wal::Recovered`): the
    /// member counts on the snapshot's index being committed and on the term of its entries,
    /// so its disk must say so beyond the snapshot file and the torn batch, which a damaged
    /// disk may lose.
    pub(super) fn record_raised_hard_state(&mut self) {
        let hs = self.raw.store().hard_state().clone();
        if hs == self.disk.durable_hard_state {
            return;
        }
        let mut wal = WalBatch::new(self.disk.wal_end_offset);
        wal.push(&Record::HardState(hs.clone()));
        let io = self.append_wal(wal.bytes, true);
        self.disk
            .other_ios
            .insert(io, IoPurpose::HardStateWritten(hs));
    }

    /// A local snapshot file is durable: the WAL marker that names it goes next, with the hard
    /// state, after which the WAL before it may go.
    fn write_snapshot_marker(&mut self, index: u64, term: u64) {
        let wal_before = self.releasable_wal_offset(index);
        let mut wal = WalBatch::new(self.disk.wal_end_offset);
        wal.push(&Record::Snapshot { index, term });
        wal.push(&Record::HardState(self.raw.store().hard_state().clone()));
        let io = self.append_wal(wal.bytes, true);
        self.disk.other_ios.insert(
            io,
            IoPurpose::MarkerWritten {
                wal_before,
                snapshot_index: index,
            },
        );
    }

    /// Tells raft about every ready whose write is durable, in order, and releases the messages
    /// that had to wait for it.
    pub(super) fn complete_readies(&mut self) {
        while self.disk.readies.front().is_some_and(|r| r.done) {
            let ready = self.disk.readies.pop_front().expect("front exists");
            self.raw.on_persist_ready(ready.number);
            if let Some(hs) = ready.synced_hard_state {
                self.disk.durable_hard_state = hs;
            }
            for m in ready.messages {
                self.send(m);
            }
            if let Some((wal_before, snapshot_index)) = ready.release_wal_before {
                self.disk
                    .entry_records
                    .retain(|(offset, _)| *offset >= wal_before);
                self.release(wal_before, snapshot_index);
            }
        }
        self.report_applied();
    }

    fn release(&mut self, wal_before_offset: u64, snapshots_before_index: u64) {
        let io = self.emit_disk(DiskOp::Release {
            wal_before_offset,
            snapshots_before_index,
        });
        self.disk.other_ios.insert(io, IoPurpose::Released);
    }

    /// Tells raft how far the state has applied, once raft agrees those entries are durable.
    pub(super) fn report_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let limit = log.committed.min(log.persisted);
        if self.applied_index > log.applied && self.applied_index <= limit {
            self.raw.advance_apply_to(self.applied_index);
        }
    }

    /// The WAL offset before which no record holds an entry after `snapshot_index`.
    pub(super) fn releasable_wal_offset(&mut self, snapshot_index: u64) -> u64 {
        while self
            .disk
            .entry_records
            .front()
            .is_some_and(|(_, last)| *last <= snapshot_index)
        {
            self.disk.entry_records.pop_front();
        }
        self.disk
            .entry_records
            .front()
            .map_or(self.disk.wal_end_offset, |(offset, _)| *offset)
    }
}
