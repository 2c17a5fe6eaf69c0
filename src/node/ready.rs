//! raft's ready loop: for each `Ready`, send what may go at once, install a snapshot from the
//! leader, apply what is committed, persist new entries and the hard state as one WAL append,
//! and hold the messages that must wait for that append.

use raft::eraftpb::{Message, MessageType, Snapshot};
use raft::Ready;

use super::disk::{InflightReady, WalBatch};
use super::types::{DiskOp, Output, PeerMessage, SnapshotFile};
use super::Node;
use crate::wal::Record;

/// What one ready asks to write besides entries and the hard state.
#[derive(Default)]
struct ReadyWrites {
    /// A snapshot from the leader to save, with its index and term.
    save_snapshot: Option<(u64, u64, SnapshotFile)>,
    /// The installed snapshot's marker offset and index: the WAL before it goes once durable.
    release_wal_before: Option<(u64, u64)>,
}

impl Node {
    pub(super) fn process_ready(&mut self) {
        while self.stopped.is_none() && self.raw.has_ready() {
            // Between ready() and advance_append_async() nothing may touch raft's log: raft-rs
            // asserts that the entries it handed out are still the unstable ones.
            let mut rd = self.raw.ready();
            let leader_changed = rd.ss().is_some();
            for m in rd.take_messages() {
                self.send(m);
            }
            let mut wal = WalBatch::new(self.disk.wal_end_offset);
            let Some(writes) = self.install_ready_snapshot(&rd, &mut wal) else {
                return;
            };
            self.apply_entries(rd.take_committed_entries());
            self.take_read_states(&mut rd);
            self.persist_ready(rd, wal, writes);
            if leader_changed {
                self.propose_awaiting();
            }
            self.complete_readies();
            self.serve_reads_up_to_applied();
            self.maybe_snapshot();
            self.trim_log_mirror();
        }
    }

    /// Installs the ready's snapshot, if it carries one, and puts its WAL marker first in
    /// `wal`. `None` if the member had to stop because the snapshot is unreadable.
    fn install_ready_snapshot(&mut self, rd: &Ready, wal: &mut WalBatch) -> Option<ReadyWrites> {
        if rd.snapshot().is_empty() {
            return Some(ReadyWrites::default());
        }
        let snapshot: Snapshot = rd.snapshot().clone();
        if !self.install_snapshot(&snapshot) {
            return None;
        }
        let meta = snapshot.get_metadata();
        // The marker tells recovery the log was replaced; everything before it may go once it
        // is durable.
        let release_wal_before = Some((wal.offset(), meta.index));
        self.disk.wal_offset_at_snapshot = wal.offset();
        wal.push(&Record::Snapshot {
            index: meta.index,
            term: meta.term,
        });
        Some(ReadyWrites {
            save_snapshot: Some((meta.index, meta.term, SnapshotFile::received(&snapshot))),
            release_wal_before,
        })
    }

    fn take_read_states(&mut self, rd: &mut Ready) {
        for rs in rd.take_read_states() {
            if self.lease_read_index_known(&rs.request_ctx, rs.index) {
                continue;
            }
            if let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                self.reads
                    .read_index_known(u64::from_be_bytes(ctx), rs.index);
            }
        }
    }

    /// Appends the ready's entries and hard state to the WAL as one write, and records what
    /// waits for it; then lets raft go on.
    fn persist_ready(&mut self, mut rd: Ready, mut wal: WalBatch, writes: ReadyWrites) {
        let entries = rd.take_entries();
        let carries_entries = !entries.is_empty();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.appended.appended(first.index, last.index, self.now);
            self.disk
                .entry_records
                .push_back((wal.offset(), last.index));
            self.raw.mut_store().append(&entries);
            wal.push(&Record::Entries(entries));
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        let lazy = self.bug(|b| b.hard_state_only_without_entries) && carries_entries;
        if (rd.hs().is_some() || writes.save_snapshot.is_some()) && !lazy {
            // A marker always travels with the hard state, so a release after it can never
            // drop the only record of the current term and vote.
            wal.push(&Record::HardState(self.raw.store().hard_state().clone()));
        }
        let synced_hard_state =
            (rd.hs().is_some() && rd.must_sync()).then(|| self.raw.store().hard_state().clone());
        if let Some((index, term, file)) = writes.save_snapshot {
            self.emit_disk(DiskOp::SaveSnapshot { index, term, file });
        }
        let io = (!wal.bytes.is_empty()).then(|| self.append_wal(wal.bytes, rd.must_sync()));
        let mut messages = rd.take_persisted_messages();
        if self.bug(|b| b.ack_before_durable) {
            for m in std::mem::take(&mut messages) {
                self.send(m);
            }
        }
        self.disk.readies.push_back(InflightReady {
            number: rd.number(),
            io,
            done: io.is_none(),
            messages,
            release_wal_before: writes.release_wal_before,
            synced_hard_state,
        });
        self.raw.advance_append_async(rd);
    }

    /// Keeps the in-memory log to the catch-up window behind what is applied and durable, rather
    /// than everything since the last snapshot (with etcd 3.4's default snapshot count of
    /// 100,000, that would be 100,000 entries in memory). Trims in steps of a quarter of the
    /// window (at most 1024 entries), so the front of the vector is moved rarely.
    fn trim_log_mirror(&mut self) {
        let step = (self.cfg.snapshot_catchup_entries / 4).clamp(1, 1_024);
        let done = self.applied_index.min(self.raw.raft.raft_log.persisted);
        let keep_from = done.saturating_sub(self.cfg.snapshot_catchup_entries) + 1;
        if keep_from >= self.raw.store().first_index() + step {
            self.raw.mut_store().compact_before(keep_from);
        }
    }

    pub(super) fn send(&mut self, m: Message) {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            self.send_snapshot(m);
            return;
        }
        self.outputs.push_back(Output::Send {
            to: m.to,
            msg: PeerMessage::Raft(Box::new(m)),
        });
    }
}
