//! THE step machine: one etcd member as a pure, single-threaded, sans-IO state machine.
//!
//! Inputs (time, peer messages, client requests, disk completions) go in through
//! [`Node::handle`]; outputs (peer messages, disk operations, client replies) come out of
//! [`Node::poll_output`]; [`Node::poll_timeout`] says when the driver must call again.
//!
//! The node orders and persists entries; the replicated state machines live in [`State`], which
//! applies each committed entry and reports its effects. This file orchestrates one batch of
//! inputs; each duty lives in its own file: `start` (recovery), `timers`, `ready` (raft's ready
//! loop), `disk` (durability gating), `apply`, `clients` (requests, proposals, reads, replies),
//! `snapshots` (`decoded_snapshot`: a snapshot whose state a driver decoded before the node
//! stepped it), `leases` (lease clocks, the leader's lease duties, forwarding to the leader),
//! `space` (the NOSPACE alarm kept in step with the quota), `memory_release` (a compaction's
//! dropped records, and a snapshot's superseded values, let go a slice per ready that applied
//! entries, and on a timer of their own, so that an idle member lets go of them too).
//!
//! Invariants (checked by [`Node::check_invariants`] after every input in tests and the simulator):
//! - nothing here reads a clock, draws unseeded randomness, or performs I/O;
//! - a message raft wants sent only after a durable write (votes, append acks) is released only
//!   after the `DiskDone` of that write; a client write is answered only once it is applied, which
//!   raft-rs allows only for entries durable on this member and committed by a quorum;
//! - `applied_index <= commit index`, and the state holds exactly the effects of entries
//!   `1..=applied_index`;
//! - every client request is answered exactly once: with its result, an error, or a timeout.

mod apply;
mod auth;
mod clients;
mod cluster;
mod compaction;
mod config;
mod decoded_snapshot;
mod disk;
mod error;
mod leases;
mod local_keepalives;
mod local_reads;
mod maintenance;
mod memory_release;
mod ready;
mod requests;
mod snapshots;
mod space;
mod start;
mod timers;
mod types;
mod watch;

pub use crate::api::{ClientRequest, ClientResponse, Rpc};
pub use compaction::AutoCompaction;
pub use config::{Bugs, Config};
pub use decoded_snapshot::DecodedSnapshot;
pub use error::{DiskError, StartError, StopReason};
pub use local_keepalives::LocalKeepAlives;
pub use local_reads::{answers_after_barrier, answers_locally, LocalReads, LocalView, ReadRounds};
pub use maintenance::{ETCD_VERSION, STORAGE_VERSION};
pub use types::*;

use std::collections::VecDeque;

use raft::eraftpb::HardState;
use raft::{RawNode, StateRole};
use rand_chacha::ChaCha8Rng;

use crate::error::EtcdError;
use crate::raftlog::{election, LogStore};
use crate::state::State;
use crate::time::Instant;
use apply::AppendTimes;
use auth::AuthDuty;
use clients::Proposals;
use cluster::ClusterDuty;
use disk::DiskState;
use leases::LeaseDuty;
use maintenance::MaintenanceDuty;
use requests::{PendingRequests, ReadBatches};
use snapshots::SnapshotDuty;
use space::SpaceDuty;
use timers::{Timer, TimerTable};
use watch::FeedBuilder;

pub struct Node {
    cfg: Config,
    raw: RawNode<LogStore>,
    rng: ChaCha8Rng,
    state: State,
    applied_index: u64,
    /// Index of the latest snapshot taken or installed.
    snapshot_index: u64,
    /// Snapshots received from a leader and installed, for operators and tests.
    snapshots_installed: u64,
    /// Of those, the ones whose state was decoded before the node stepped them, for the
    /// simulator's coverage.
    snapshots_installed_decoded: u64,
    /// Slices of memory released on the release timer (`memory_release`), for the
    /// simulator's coverage.
    memory_slices_released_on_time: u64,
    now: Instant,
    /// When raft's next tick falls: ticks come every heartbeat interval, whether or not the
    /// node was woken for them (see [`Node::catch_up_raft_ticks`]).
    next_raft_tick: Instant,
    timers: TimerTable,
    outputs: VecDeque<Output>,
    stopped: Option<StopReason>,
    pending: PendingRequests,
    reads: ReadBatches,
    /// Read barriers passed so far (`local_reads`): a view is frozen after a batch that passed
    /// one, for the reads that waited for it.
    read_barriers_passed: u64,
    proposals: Proposals,
    disk: DiskState,
    /// When entries reached the log, for the lease records they carry.
    appended: AppendTimes,
    snapshots: SnapshotDuty,
    leases: LeaseDuty,
    /// The auto compaction schedule, when configured.
    compactor: Option<compaction::Compactor>,
    cluster: ClusterDuty,
    maintenance: MaintenanceDuty,
    space: SpaceDuty,
    auth: AuthDuty,
    watch_feed: FeedBuilder,
}

impl Node {
    // ---------------------------------------------------------------------------------------
    // The driver's API
    // ---------------------------------------------------------------------------------------

    /// Feeds one input at time `now`. Never blocks, never does I/O, never panics on any input a
    /// peer, client or disk can produce; errors become replies.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.handle_batch(now, std::iter::once(input));
    }

    /// Feeds several inputs that arrived together, then runs raft's ready loop once: the
    /// proposals of many clients become one WAL append and one round of messages.
    pub fn handle_batch(&mut self, now: Instant, inputs: impl IntoIterator<Item = Input>) {
        // A member's clock never runs backwards from the node's point of view.
        self.now = self.now.max(now);
        self.catch_up_raft_ticks();
        self.run_timers();
        for input in inputs {
            if self.stopped.is_some() {
                if let Input::Client { id, .. } = input {
                    self.reply(id, Err(EtcdError::Stopped));
                }
                continue;
            }
            match input {
                Input::Tick => {}
                Input::Peer { from, msg } => self.handle_peer(from, msg),
                Input::DecodedSnapshot { from, snapshot } => {
                    self.step_decoded_snapshot(from, *snapshot)
                }
                Input::Client {
                    id,
                    request,
                    credentials,
                } => self.handle_client(id, request, credentials),
                Input::DiskDone { io, result } => self.handle_disk_done(io, result),
                Input::Hashed { revision, hash } => self.report_hash(revision, hash),
            }
        }
        if self.stopped.is_none() {
            self.flush_reads();
            self.confirm_lease_reads();
            self.serve_snapshot_request();
            self.process_ready();
            // A read index that came back in that ready lets the reads queued behind it ask.
            if self.flush_reads() {
                self.process_ready();
            }
            self.follow_leadership();
            self.finish_leader_transfers();
            self.publish_attributes();
            self.auto_promote();
            self.serve_requests_awaiting_apply();
            self.serve_parked_requests();
            self.propose_lease_records();
            self.keep_space_alarm();
            self.expire_requests();
            self.arm_timers();
            // The feed's view reads cold values: their writes go first.
            self.emit_cold_ops();
            self.feed_watchers();
        }
        self.emit_cold_ops();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the driver must call `handle(.., Input::Tick)` at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped.is_some() {
            return None;
        }
        self.timers.next_deadline()
    }

    /// Runs every timer that is due, each through its handler, until none is.
    fn run_timers(&mut self) {
        while self.stopped.is_none() {
            let Some((timer, _)) = self.timers.take_expired(self.now) else {
                return;
            };
            match timer {
                // The ticks themselves were caught up before any timer or input.
                Timer::RaftTick => {}
                Timer::ReadIndexRetry => self.retry_read_indexes(),
                Timer::SnapshotTransfer => self.check_snapshot_transfers(),
                Timer::ProposalRetry => self.propose_awaiting(),
                Timer::ForwardRetry => self.retry_forwards(),
                Timer::LeaseExpiry => self.expire_leases(),
                Timer::LeaseCheckpoint => self.checkpoint_leases(),
                Timer::RequestExpiry => self.expire_requests(),
                Timer::AutoCompaction => self.auto_compact(),
                Timer::MemoryRelease => self.release_memory_on_time(),
            }
        }
    }

    /// Sets the timers whose deadline follows from the state after a batch.
    fn arm_timers(&mut self) {
        self.timers.set(Timer::RaftTick, self.raft_wake_up());
        self.timers
            .set_or_stop(Timer::RequestExpiry, self.pending.next_deadline());
        self.timers
            .set_or_stop(Timer::LeaseExpiry, self.leases.next_expiry());
        let heartbeat = self.now + self.cfg.heartbeat_interval;
        if self.proposals.awaiting_leader() {
            self.timers.set_earlier(Timer::ProposalRetry, heartbeat);
        }
        if self.reads.has_issued() {
            self.timers.set_earlier(Timer::ReadIndexRetry, heartbeat);
        }
        if self.leases.has_forwards() {
            self.timers.set_earlier(Timer::ForwardRetry, heartbeat);
        }
        self.arm_memory_release();
    }

    // ---------------------------------------------------------------------------------------
    // Observation, for drivers, tests and the simulator's checkers
    // ---------------------------------------------------------------------------------------

    pub fn id(&self) -> MemberId {
        self.cfg.id
    }

    /// The cluster's id: the member list's (a joining member learns it with its first
    /// snapshot), or the configured one.
    pub fn cluster_id(&self) -> u64 {
        match self.state.members().cluster_id() {
            0 => self.cfg.cluster_id,
            id => id,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<MemberId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// What this member has promised survives a crash: the hard state of its last synced
    /// write, and the last entry (index, term) raft counts as durable. The simulator checks
    /// every restart against it.
    pub fn durable_promise(&self) -> (HardState, (u64, u64)) {
        let log = &self.raw.raft.raft_log;
        let tip = (log.persisted, log.term(log.persisted).unwrap_or(0));
        (self.disk.durable_hard_state.clone(), tip)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    pub fn snapshots_installed_decoded(&self) -> u64 {
        self.snapshots_installed_decoded
    }

    pub fn first_log_index(&self) -> u64 {
        self.raw.store().first_index()
    }

    pub fn hard_state(&self) -> HardState {
        self.raw.raft.hard_state()
    }

    /// The replicated state as this member has applied it.
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn key_space(&self) -> &crate::mvcc::KeySpace {
        self.state.kv()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// Whether this member is the leader and runs the lease clocks (it has applied everything
    /// committed before its term).
    pub fn leads_leases(&self) -> bool {
        self.leases.is_leading()
    }

    /// Term of the log entry at `index`, where this member still holds it (in memory, durable
    /// or not).
    pub fn log_term(&self, index: u64) -> Option<u64> {
        self.raw
            .raft
            .raft_log
            .term(index)
            .ok()
            .filter(|_| index <= self.raw.raft.raft_log.last_index())
    }

    /// Asserts the member's own invariants; cheap enough to call after every input.
    pub fn check_invariants(&self) {
        let log = &self.raw.raft.raft_log;
        assert!(
            self.applied_index <= log.committed,
            "applied {} > committed {}",
            self.applied_index,
            log.committed
        );
        assert!(
            self.snapshot_index <= self.applied_index,
            "snapshot beyond applied"
        );
        assert!(
            log.applied <= self.applied_index,
            "raft applied ahead of the state"
        );
        let kv = self.state.kv();
        assert!(
            kv.compact_revision() <= kv.current_revision(),
            "compacted beyond the current revision"
        );
        assert!(
            self.pending.len() <= self.cfg.pending_requests_max,
            "pending requests over their bound"
        );
        assert!(
            !self.leases.is_leading() || (self.is_leader() && self.stopped.is_none()),
            "a member that is not the leader runs the lease clocks"
        );
        if self.is_leader() {
            assert_eq!(
                self.leader_id(),
                Some(self.cfg.id),
                "a leader must know itself as leader"
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // Raft ticks and peers
    // ---------------------------------------------------------------------------------------

    /// Hands raft the ticks that fell due since it last ran, before the node does anything
    /// else, so that raft sees them in the same order against messages as if it had been woken
    /// for each. After a long pause, a member ticks at most two election timeouts' worth at
    /// once: what matters is that the timeout fired, not how often.
    fn catch_up_raft_ticks(&mut self) {
        let interval = self.cfg.heartbeat_interval;
        if self.now < self.next_raft_tick {
            return;
        }
        // While a snapshot from the leader is installed but not yet durable, raft has not been
        // told it is applied, and an election timeout would make raft-rs read the log from its
        // old applied index, which the snapshot replaced (it panics on that). The wait is one
        // disk write; time still passes, the ticks are just not handed to raft until then.
        if self.disk.installing_snapshot() {
            self.next_raft_tick = self.now + interval;
            return;
        }
        let mut ticks = 0;
        while self.now >= self.next_raft_tick {
            if ticks > self.cfg.election_ticks() * 2 {
                self.next_raft_tick = self.now + interval;
                break;
            }
            self.raw.tick();
            self.override_jitter();
            ticks += 1;
            self.next_raft_tick = self.next_raft_tick + interval;
        }
    }

    /// The first tick that does more than count: every tick of a leader (heartbeats, quorum
    /// checks), otherwise the one at which the election timeout passes. A follower hearing
    /// from its leader is not woken for the ticks in between, which only add to raft's
    /// `election_elapsed`; they are caught up when the next input arrives.
    fn raft_wake_up(&self) -> Instant {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader || self.disk.installing_snapshot() {
            return self.next_raft_tick;
        }
        let ticks_left = raft
            .randomized_election_timeout()
            .saturating_sub(raft.election_elapsed)
            .max(1);
        let ticks_after_next = u32::try_from(ticks_left - 1).unwrap_or(u32::MAX);
        self.next_raft_tick + self.cfg.heartbeat_interval * ticks_after_next
    }

    fn override_jitter(&mut self) {
        election::override_jitter(&mut self.raw.raft, &mut self.rng, self.cfg.election_ticks());
    }

    fn handle_peer(&mut self, from: MemberId, msg: PeerMessage) {
        match msg {
            PeerMessage::Raft(m) => {
                self.step_raft(from, *m);
            }
            PeerMessage::Forward { id, request } => self.serve_for_member(from, id, request),
            PeerMessage::ForwardReply { id, result } => self.forward_answered(id, result),
            PeerMessage::Removed => self.removed_by(from),
        }
    }

    /// Steps a peer's raft message; false if it was dropped or raft refused it.
    fn step_raft(&mut self, from: MemberId, m: raft::eraftpb::Message) -> bool {
        // raft-rs trusts `from`; a message claiming another sender or addressed to someone
        // else is dropped rather than stepped, as is one from a removed member.
        if m.from != from || m.to != self.cfg.id || raft::raw_node::is_local_msg(m.get_msg_type()) {
            return false;
        }
        if self.is_removed_member(from) {
            self.tell_removed(from);
            return false;
        }
        if self.raw.step(m).is_err() {
            return false;
        }
        self.override_jitter();
        true
    }

    /// Whether a deliberately injected bug is on (simulator tests only; every bug is off unless
    /// a test turns it on through `Config::bugs`).
    fn bug(&self, which: impl Fn(&Bugs) -> bool) -> bool {
        which(&self.cfg.bugs)
    }

    fn stop(&mut self, reason: StopReason) {
        for id in self.pending.drain() {
            self.outputs.push_back(Output::Reply {
                id,
                result: Err(EtcdError::Stopped),
                cold: Default::default(),
            });
        }
        self.outputs.push_back(Output::Stopped {
            reason: reason.clone(),
        });
        // A stopped member leads nothing, even if raft still calls it leader: it must not be
        // taken for the lease clock's owner.
        self.stop_lease_clocks();
        self.stopped = Some(reason);
    }
}
