//! Snapshots: taking one of the state when enough was applied, installing one from the leader,
//! and serving one to a follower that fell behind the log. The node only freezes views of the
//! state (O(1)); drivers encode them off the node's thread.

use std::collections::BTreeMap;
use std::time::Duration;

use raft::eraftpb::{Message, Snapshot, SnapshotMetadata};

use super::decoded_snapshot::Decoded;
use super::disk::IoPurpose;
use super::timers::Timer;
use super::types::{DiskOp, MemberId, OutgoingSnapshot, Output, SnapshotFile};
use super::{Node, StopReason};
use crate::mvcc::ColdOp;
use crate::state::StateView;

/// How fast a snapshot is assumed to travel at worst, for giving up on one that was lost:
/// a snapshot is given two election timeouts plus its size at this rate.
const SNAPSHOT_TRANSFER_BYTES_PER_SEC_MIN: u64 = 32 << 20;

#[derive(Default)]
pub(super) struct SnapshotDuty {
    /// Peers sent a snapshot, and until when it may take to arrive: if raft still waits on it
    /// then, the message was lost and raft is told so, to send another.
    in_flight: BTreeMap<MemberId, crate::time::Instant>,
    /// The state as of the snapshot raft sends to followers behind the log (the log store holds
    /// its metadata); the driver encodes it when it sends.
    outgoing_view: Option<StateView>,
    /// Cold segment releases held back while `outgoing_view` may still be sent again: raft
    /// resends the same snapshot, and the view reads the segments as they were when it was
    /// taken. Emitted once the view is dropped or replaced.
    held_cold_releases: Vec<ColdOp>,
    /// The state of the snapshot raft holds, decoded before it was stepped.
    pub(super) decoded: Option<Decoded>,
}

impl Node {
    /// Snapshots the state and compacts the log once `snapshot_count` entries were applied
    /// since the last snapshot and the WAL written since then is at least as large as the
    /// snapshot would be. The second condition is ours, not etcd's: a snapshot rewrites the
    /// whole store, so taking one every `snapshot_count` entries of a large store writes many
    /// times more than the WAL does and competes with its syncs; this way snapshots never write
    /// more bytes than the WAL, and a restart still replays no more WAL than a snapshot's worth
    /// (or `snapshot_count` entries). The node only freezes a view of the state (O(1)); the
    /// driver encodes and writes it.
    pub(super) fn maybe_snapshot(&mut self) {
        if self.applied_index < self.snapshot_index + self.cfg.snapshot_count.max(1) {
            return;
        }
        let wal_since = self.disk.wal_end_offset - self.disk.wal_offset_at_snapshot;
        if wal_since < self.state.snapshot_bytes_estimate() {
            return;
        }
        let Some(meta) = self.applied_snapshot_metadata() else {
            return;
        };
        let (index, term) = (meta.index, meta.term);
        let keep_from = index.saturating_sub(self.cfg.snapshot_catchup_entries) + 1;
        self.raw
            .mut_store()
            .set_local_snapshot(meta.clone(), keep_from);
        self.snapshot_index = index;
        let file = SnapshotFile::local(meta, self.state.view());
        self.disk.wal_offset_at_snapshot = self.disk.wal_end_offset;
        // The driver encodes the view, reading its cold values: their writes go first.
        self.emit_cold_ops();
        let io = self.emit_disk(DiskOp::SaveSnapshot { index, term, file });
        self.disk
            .other_ios
            .insert(io, IoPurpose::SnapshotSaved { index, term });
    }

    /// The metadata of a snapshot of the state as it is now.
    fn applied_snapshot_metadata(&self) -> Option<SnapshotMetadata> {
        let index = self.applied_index;
        let term = self.raw.store().term_of(index)?;
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(self.raw.store().conf_state().clone());
        Some(meta)
    }

    /// raft asked for a snapshot to send to a follower that is behind the log's compaction
    /// point: freeze the state as it is now (O(1)) and have raft send it straight away; the
    /// driver encodes the data as it sends. Freed once no follower waits for one.
    pub(super) fn serve_snapshot_request(&mut self) {
        let Some(to) = self.raw.store().take_snapshot_wanted() else {
            return;
        };
        if !self.is_leader() {
            return;
        }
        let Some(meta) = self.applied_snapshot_metadata() else {
            return;
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        self.raw.mut_store().set_outgoing_snapshot(snapshot);
        // The new view reads no segment released so far; the old one is never sent again.
        self.snapshots.outgoing_view = Some(self.state.view());
        self.outputs.extend(
            self.snapshots
                .held_cold_releases
                .drain(..)
                .map(Output::Cold),
        );
        self.raw.raft.send_append(to);
    }

    /// raft sends the snapshot the node built: the driver encodes its view as it sends. A
    /// snapshot raft made while leading and then held until a write was durable (it stepped
    /// down in the same batch, so its messages waited for the new term's write) may find the
    /// view freed meanwhile: it is dropped, as the network may drop it, and raft told so if a
    /// follower still waits for it.
    pub(super) fn send_snapshot(&mut self, m: Message) {
        let Some(view) = self.snapshots.outgoing_view.clone() else {
            self.snapshot_dropped(m.to);
            return;
        };
        debug_assert_eq!(
            Some(m.get_snapshot().get_metadata().index),
            self.raw.store().outgoing_snapshot_index()
        );
        let transfer_secs = self.state.snapshot_bytes_estimate() as f64
            / SNAPSHOT_TRANSFER_BYTES_PER_SEC_MIN as f64;
        let deadline =
            self.now + self.cfg.election_timeout * 2 + Duration::from_secs_f64(transfer_secs);
        self.snapshots.in_flight.insert(m.to, deadline);
        self.timers.set_earlier(
            Timer::SnapshotTransfer,
            self.now + self.cfg.heartbeat_interval,
        );
        // The driver encodes the view, reading its cold values: their writes go first.
        self.emit_cold_ops();
        self.outputs.push_back(Output::SendSnapshot {
            to: m.to,
            snapshot: Box::new(OutgoingSnapshot { msg: m, view }),
        });
    }

    fn snapshot_dropped(&mut self, to: MemberId) {
        let awaited = self.is_leader()
            && self
                .raw
                .raft
                .prs()
                .get(to)
                .is_some_and(|pr| pr.state == raft::ProgressState::Snapshot);
        if awaited {
            self.raw.report_snapshot(to, raft::SnapshotStatus::Failure);
        }
    }

    /// Reports to raft the snapshots that were lost (still awaited past their deadline), and
    /// frees the follower view once no follower waits for a snapshot.
    pub(super) fn check_snapshot_transfers(&mut self) {
        let now = self.now;
        let lost: Vec<MemberId> = self
            .snapshots
            .in_flight
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(peer, _)| *peer)
            .collect();
        let awaited = |node: &Node, peer: MemberId| {
            node.is_leader()
                && node
                    .raw
                    .raft
                    .prs()
                    .get(peer)
                    .is_some_and(|pr| pr.state == raft::ProgressState::Snapshot)
        };
        let sending = self.is_leader()
            && self
                .raw
                .raft
                .prs()
                .iter()
                .any(|(_, pr)| pr.state == raft::ProgressState::Snapshot);
        if !sending {
            self.forget_outgoing_snapshot();
        }
        for peer in lost {
            self.snapshots.in_flight.remove(&peer);
            if awaited(self, peer) {
                self.raw
                    .report_snapshot(peer, raft::SnapshotStatus::Failure);
            }
        }
        if self.snapshots.outgoing_view.is_some() || !self.snapshots.in_flight.is_empty() {
            self.timers.set(
                Timer::SnapshotTransfer,
                self.now + self.cfg.heartbeat_interval,
            );
        }
    }

    /// Frees the snapshot built for followers: no follower waits for it any more, or raft's
    /// configuration changed since it was built (a new member would refuse a snapshot whose
    /// configuration does not name it).
    pub(super) fn forget_outgoing_snapshot(&mut self) {
        if self.snapshots.outgoing_view.is_some() {
            self.raw.mut_store().drop_outgoing_snapshot();
            self.snapshots.outgoing_view = None;
            self.emit_cold_ops();
        }
    }

    /// Replaces the state with a snapshot the leader sent. Returns false if the member had to
    /// stop because the snapshot is unreadable.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) -> bool {
        let index = snapshot.get_metadata().index;
        match self.snapshot_state(snapshot.get_metadata(), &snapshot.data) {
            Ok(state) => {
                let replaced = self.state.replace_with(state);
                self.outputs.push_back(Output::Free(Box::new(replaced)));
                self.applied_index = index;
                self.snapshot_index = index;
                self.snapshots_installed += 1;
                self.raw
                    .mut_store()
                    .install_snapshot(snapshot.get_metadata());
                self.state_replaced();
                self.watch_feed.state_replaced();
                self.members_changed();
                true
            }
            Err(error) => {
                self.stop(StopReason::SnapshotUnreadable { index, error });
                false
            }
        }
    }

    /// Hands the driver the key space's cold segment writes and releases so far, holding back
    /// releases while the snapshot view for followers may still read them.
    pub(super) fn emit_cold_ops(&mut self) {
        let holding = self.snapshots.outgoing_view.is_some();
        if !self.state.has_cold_ops() && (holding || self.snapshots.held_cold_releases.is_empty()) {
            return;
        }
        for op in self.state.take_cold_ops() {
            match op {
                ColdOp::Release { .. } if holding => self.snapshots.held_cold_releases.push(op),
                op => self.outputs.push_back(Output::Cold(op)),
            }
        }
        if !holding && !self.snapshots.held_cold_releases.is_empty() {
            self.outputs.extend(
                self.snapshots
                    .held_cold_releases
                    .drain(..)
                    .map(Output::Cold),
            );
        }
    }
}
