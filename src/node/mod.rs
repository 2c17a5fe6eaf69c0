//! THE step machine: one etcd member as a pure, single-threaded, sans-IO state machine.
//!
//! Inputs (time, peer messages, client requests, disk completions) go in through
//! [`Node::handle`]; outputs (peer messages, disk operations, client replies) come out of
//! [`Node::poll_output`]; [`Node::poll_timeout`] says when the driver must call again.
//!
//! Invariants (checked by [`Node::check_invariants`] after every input in tests and the simulator):
//! - nothing here reads a clock, draws unseeded randomness, or performs I/O;
//! - a message raft wants sent only after a durable write (votes, append acks) is released only
//!   after the `DiskDone` of that write; a client write is answered only once it is applied, which
//!   raft-rs allows only for entries durable on this member and committed by a quorum;
//! - `applied_index <= commit index`, and the key space holds exactly the writes of entries
//!   `1..=applied_index`;
//! - every client request is answered exactly once: with its result, an error, or a timeout.

mod config;
mod requests;
mod types;

pub use config::{Bugs, Config};
pub use types::*;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{RawNode, StateRole};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::EtcdError;
use crate::mvcc::{self, ColdOp, ColdValues, KeySpace};
use crate::proto::detcdpb::{internal_request, InternalRequest};
use crate::proto::etcdserverpb::{
    PutRequest, RangeRequest, RangeResponse, ResponseHeader, TxnRequest,
};
use crate::raftlog::{election, LogStore};
use crate::time::Instant;
use crate::wal::{self, Record, Recovered};
use requests::{PendingRequests, ReadBatches};

/// How long a ReadIndex request may go unanswered before it is asked again. raft drops a
/// ReadIndex silently when there is no leader or the leader has not committed in its term yet.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

/// etcd refuses new writes when applying lags committing by this many entries.
const APPLY_LAG_MAX: u64 = 5_000;

pub struct Node {
    cfg: Config,
    raw: RawNode<LogStore>,
    rng: ChaCha8Rng,
    kv: KeySpace,
    applied_index: u64,
    /// Index of the latest snapshot taken or installed.
    snapshot_index: u64,
    /// Snapshots received from a leader and installed, for operators and tests.
    snapshots_installed: u64,
    now: Instant,
    next_tick: Instant,
    outputs: VecDeque<Output>,
    stopped: Option<String>,

    pending: PendingRequests,
    reads: ReadBatches,
    /// Proposals accepted while no leader was known, proposed as soon as one is.
    awaiting_leader: VecDeque<Vec<u8>>,
    /// Distinguishes this incarnation's proposals from those of earlier runs of the same member,
    /// whose entries may still be applied after a restart.
    proposal_nonce: u64,
    proposal_seq: u64,

    disk: DiskState,
    /// Peers sent a snapshot, and until when it may take to arrive: if raft still waits on it
    /// then, the message was lost and raft is told so, to send another.
    snapshots_in_flight: BTreeMap<MemberId, Instant>,
    /// The key space as of the snapshot raft sends to followers behind the log (the log store
    /// holds its metadata); the driver encodes it when it sends.
    outgoing_view: Option<mvcc::KeySpaceView>,
    /// Cold segment releases held back while `outgoing_view` may still be sent again: raft
    /// resends the same snapshot, and the view reads the segments as they were when it was
    /// taken. Emitted once the view is dropped or replaced.
    held_cold_releases: Vec<ColdOp>,
}

/// How fast a snapshot is assumed to travel at worst, for giving up on one that was lost:
/// a snapshot is given two election timeouts plus its size at this rate.
const SNAPSHOT_TRANSFER_BYTES_PER_SEC_MIN: u64 = 32 << 20;

/// WAL records gathered for one append, each encoded for the offset it will occupy.
struct WalBatch {
    start: u64,
    bytes: Vec<u8>,
}

impl WalBatch {
    fn new(start: u64) -> WalBatch {
        WalBatch {
            start,
            bytes: Vec::new(),
        }
    }

    /// Where the next record will start.
    fn offset(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn push(&mut self, record: &Record) {
        let offset = self.offset();
        wal::encode_record(offset, record, &mut self.bytes);
    }
}

/// What the node knows about the WAL it has asked the driver to write.
#[derive(Default)]
struct DiskState {
    next_io: u64,
    /// Logical end of the WAL, counting appends not yet completed.
    wal_end_offset: u64,
    /// For each WAL append that carried entries: its offset and the index of its last entry.
    entry_records: VecDeque<(u64, u64)>,
    /// Where the WAL stood when the last snapshot was taken or installed.
    wal_offset_at_snapshot: u64,
    /// Raft readies whose writes are in flight, in order.
    readies: VecDeque<InflightReady>,
    /// Disk operations that are not raft readies.
    other_ios: BTreeMap<u64, IoPurpose>,
}

struct InflightReady {
    number: u64,
    io: Option<u64>,
    done: bool,
    /// Messages raft allows out only once this ready is durable.
    messages: Vec<raft::eraftpb::Message>,
    /// An installed snapshot's marker offset: the WAL before it is released once durable.
    release_wal_before: Option<(u64, u64)>,
}

enum IoPurpose {
    /// A locally taken snapshot file is durable; next, write its WAL marker.
    SnapshotSaved { index: u64, term: u64 },
    /// The marker is durable; now the WAL before `wal_before` and older snapshots can go.
    MarkerWritten {
        wal_before: u64,
        snapshot_index: u64,
    },
    /// A release; nothing follows it.
    Released,
}

impl Node {
    /// Builds a member from its recovered disk state. `rng_seed` decides every random choice the
    /// member makes; the driver must give each incarnation of a member a different seed.
    pub fn new(
        cfg: Config,
        recovered: Recovered,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Node, String> {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        let (kv, snapshot_index) = match &recovered.snapshot {
            Some(snap) => (
                KeySpace::decode_snapshot(&snap.data).map_err(|e| {
                    format!(
                        "snapshot at index {} is unreadable: {e:?}",
                        snap.get_metadata().index
                    )
                })?,
                snap.get_metadata().index,
            ),
            None => (KeySpace::new(), 0),
        };
        let mut kv = kv;
        kv.keep_superseded_values_cold();
        let conf_state = match &recovered.snapshot {
            Some(snap) => snap.get_metadata().get_conf_state().clone(),
            None => ConfState {
                voters: cfg.peers.clone(),
                ..Default::default()
            },
        };
        if !conf_state.voters.contains(&cfg.id) {
            return Err(format!(
                "member {:x} is not in the cluster {:?}",
                cfg.id, conf_state.voters
            ));
        }
        let hard_state = recovered.hard_state.clone();
        let store = LogStore::new(
            hard_state,
            conf_state,
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        );

        let election_ticks = cfg.election_ticks();
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: election_ticks,
            heartbeat_tick: 1,
            applied: snapshot_index,
            max_size_per_msg: cfg.raft_message_bytes_max,
            max_inflight_msgs: cfg.raft_inflight_messages_max,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| format!("invalid raft configuration: {e}"))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw =
            RawNode::new(&raft_cfg, store, &logger).map_err(|e| format!("starting raft: {e}"))?;
        // A member alone in its cluster needs no election timeout to know it wins; etcd's
        // initial tick advance gets the same effect.
        if raw.raft.prs().conf().voters().ids().len() == 1 && raw.raft.promotable() {
            raw.campaign().map_err(|e| format!("campaigning: {e}"))?;
        }
        election::override_jitter(&mut raw.raft, &mut rng, election_ticks);

        let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
        let proposal_nonce = rng.next_u64() ^ last_index.rotate_left(32);
        let next_tick = now + cfg.heartbeat_interval;
        let pending = PendingRequests::new(cfg.pending_requests_max);
        Ok(Node {
            cfg,
            raw,
            rng,
            kv,
            applied_index: snapshot_index,
            snapshot_index,
            snapshots_installed: 0,
            now,
            next_tick,
            outputs: VecDeque::new(),
            stopped: None,
            pending,
            reads: ReadBatches::new(proposal_nonce),
            awaiting_leader: VecDeque::new(),
            proposal_nonce,
            proposal_seq: 0,
            disk: DiskState {
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
                ..Default::default()
            },
            snapshots_in_flight: BTreeMap::new(),
            outgoing_view: None,
            held_cold_releases: Vec::new(),
        })
    }

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
        if self.stopped.is_none() {
            self.advance_clock();
        }
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
                Input::Client { id, request } => self.handle_client(id, request),
                Input::DiskDone { io, result } => self.handle_disk_done(io, result),
            }
        }
        if self.stopped.is_none() {
            self.flush_reads();
            self.serve_snapshot_request();
            self.process_ready();
            self.expire_requests();
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
        Some(
            self.next_tick
                .min(self.pending.next_deadline().unwrap_or(self.next_tick)),
        )
    }

    // ---------------------------------------------------------------------------------------
    // Observation, for drivers, tests and the simulator's checkers
    // ---------------------------------------------------------------------------------------

    pub fn id(&self) -> MemberId {
        self.cfg.id
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

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    pub fn first_log_index(&self) -> u64 {
        self.raw.store().first_index()
    }

    pub fn hard_state(&self) -> HardState {
        self.raw.raft.hard_state()
    }

    pub fn key_space(&self) -> &KeySpace {
        &self.kv
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
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
            "raft applied ahead of the key space"
        );
        assert!(
            self.kv.compact_revision() <= self.kv.current_revision(),
            "compacted beyond the current revision"
        );
        assert!(
            self.pending.len() <= self.cfg.pending_requests_max,
            "pending requests over their bound"
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
    // Time
    // ---------------------------------------------------------------------------------------

    /// Turns elapsed time into raft ticks. After a long pause, a member ticks at most one
    /// election timeout's worth at once: what matters is that the timeout fired, not how often.
    fn advance_clock(&mut self) {
        let interval = self.cfg.heartbeat_interval;
        let mut ticks = 0;
        // While a snapshot from the leader is installed but not yet durable, raft has not been
        // told it is applied, and an election timeout would make raft-rs read the log from its
        // old applied index, which the snapshot replaced (it panics on that). The wait is one
        // disk write; time still passes, the ticks are just not handed to raft until then.
        let installing = self
            .disk
            .readies
            .iter()
            .any(|r| r.release_wal_before.is_some());
        while self.now >= self.next_tick {
            if installing {
                self.next_tick = self.now + interval;
            } else if ticks <= self.cfg.election_ticks() * 2 {
                self.raw.tick();
                election::override_jitter(
                    &mut self.raw.raft,
                    &mut self.rng,
                    self.cfg.election_ticks(),
                );
                ticks += 1;
                self.next_tick = self.next_tick + interval;
            } else {
                self.next_tick = self.now + interval;
            }
        }
        if ticks > 0 {
            self.on_tick();
        }
    }

    fn on_tick(&mut self) {
        // Ask again for read indexes that went unanswered.
        let pending = &self.pending;
        let stale = self
            .reads
            .stale_batches(self.now, READ_INDEX_RETRY, |id| pending.contains(id));
        for ctx in stale {
            self.raw.read_index(ctx.to_be_bytes().to_vec());
            self.reads.mark_issued(ctx, self.now);
        }
        // A snapshot message that raft still waits on past its deadline was lost.
        let now = self.now;
        let lost: Vec<MemberId> = self
            .snapshots_in_flight
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(peer, _)| *peer)
            .collect();
        let sending_snapshot = self.is_leader()
            && self
                .raw
                .raft
                .prs()
                .iter()
                .any(|(_, pr)| pr.state == raft::ProgressState::Snapshot);
        if !sending_snapshot && self.outgoing_view.is_some() {
            self.raw.mut_store().drop_outgoing_snapshot();
            self.outgoing_view = None;
            self.emit_cold_ops();
        }
        for peer in lost {
            self.snapshots_in_flight.remove(&peer);
            let waiting = self
                .raw
                .raft
                .prs()
                .get(peer)
                .is_some_and(|pr| pr.state == raft::ProgressState::Snapshot);
            if self.is_leader() && waiting {
                self.raw
                    .report_snapshot(peer, raft::SnapshotStatus::Failure);
            }
        }
        self.propose_awaiting();
    }

    fn expire_requests(&mut self) {
        for id in self.pending.expire(self.now) {
            let err = if self.leader_id().is_none() {
                EtcdError::TimeoutDueToLeaderFail
            } else {
                EtcdError::Timeout
            };
            self.outputs.push_back(Output::Reply {
                id,
                result: Err(err),
                cold: ColdValues::default(),
            });
        }
    }

    // ---------------------------------------------------------------------------------------
    // Peers
    // ---------------------------------------------------------------------------------------

    fn handle_peer(&mut self, from: MemberId, msg: PeerMessage) {
        match msg {
            PeerMessage::Raft(m) => {
                // raft-rs trusts `from`; a message claiming another sender or addressed to
                // someone else is dropped rather than stepped.
                if m.from != from
                    || m.to != self.cfg.id
                    || raft::raw_node::is_local_msg(m.get_msg_type())
                {
                    return;
                }
                if self.raw.step(m).is_ok() {
                    election::override_jitter(
                        &mut self.raw.raft,
                        &mut self.rng,
                        self.cfg.election_ticks(),
                    );
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Clients
    // ---------------------------------------------------------------------------------------

    fn handle_client(&mut self, id: RequestId, request: ClientRequest) {
        if let Err(err) = self.pending.admit(id, self.now + self.cfg.request_timeout) {
            self.reply(id, Err(err));
            return;
        }
        let result = match request {
            ClientRequest::Range(req) => self.accept_range(id, req),
            ClientRequest::Txn(req) if !txn_has_writes(&req) => self.accept_read_txn(id, req),
            ClientRequest::Put(req) => mvcc::check_put(&req)
                .and_then(|()| self.check_quota(put_cost(&req)))
                .map(|()| self.propose(id, internal_request::Op::Put(req))),
            ClientRequest::DeleteRange(req) => mvcc::check_delete_range(&req)
                .map(|()| self.propose(id, internal_request::Op::DeleteRange(req))),
            ClientRequest::Txn(req) => mvcc::check_txn(&req, self.cfg.max_txn_ops)
                .and_then(|()| self.check_quota(txn_cost(&req)))
                .map(|()| self.propose(id, internal_request::Op::Txn(req))),
            ClientRequest::Compact(req) => {
                self.propose(id, internal_request::Op::Compaction(req));
                Ok(())
            }
        };
        if let Err(err) = result {
            self.finish(id, Err(err));
        }
    }

    /// Refuses a write that would grow the key space past its quota. Unlike etcd, no alarm is
    /// latched: once compaction and deletes bring the size back under the quota, writes succeed
    /// again without an operator disarming anything.
    fn check_quota(&self, cost: u64) -> Result<(), EtcdError> {
        if cost > 0 && self.kv.approximate_size_bytes() + cost > self.cfg.quota_bytes {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    fn accept_range(&mut self, id: RequestId, req: RangeRequest) -> Result<(), EtcdError> {
        mvcc::check_range(&req)?;
        if req.serializable || self.bug(|b| b.read_without_read_index) {
            let result = self.kv.read_range(&req).map(Answer::range);
            self.finish(id, result);
        } else {
            self.reads.queue(id, ClientRequest::Range(req));
        }
        Ok(())
    }

    fn accept_read_txn(&mut self, id: RequestId, req: TxnRequest) -> Result<(), EtcdError> {
        mvcc::check_txn(&req, self.cfg.max_txn_ops)?;
        if txn_is_serializable(&req) || self.bug(|b| b.read_without_read_index) {
            let result = self.apply_txn(&req);
            self.finish(id, result);
        } else {
            self.reads.queue(id, ClientRequest::Txn(req));
        }
        Ok(())
    }

    /// Turns a write into a raft proposal tagged with this member and a fresh proposal id.
    fn propose(&mut self, id: RequestId, op: internal_request::Op) {
        if self
            .raw
            .raft
            .raft_log
            .committed
            .saturating_sub(self.applied_index)
            > APPLY_LAG_MAX
        {
            self.finish(id, Err(EtcdError::TooManyRequests));
            return;
        }
        self.proposal_seq += 1;
        let proposal_id = self.proposal_nonce.wrapping_add(self.proposal_seq);
        let request = InternalRequest {
            origin: self.cfg.id,
            request_id: proposal_id,
            op: Some(op),
        };
        let data = request.encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            self.finish(id, Err(EtcdError::RequestTooLarge));
            return;
        }
        self.pending.bind_proposal(id, proposal_id);
        if self.cfg.observe {
            self.outputs.push_back(Output::Proposed {
                id,
                origin: self.cfg.id,
                proposal: proposal_id,
            });
        }
        if self.leader_id().is_some() && self.raw.propose(Vec::new(), data).is_ok() {
            return;
        }
        // raft consumed the bytes when it refused them; refusals are rare, so encode again.
        self.awaiting_leader.push_back(request.encode_to_vec());
    }

    fn propose_awaiting(&mut self) {
        while self.leader_id().is_some() {
            let Some(data) = self.awaiting_leader.pop_front() else {
                break;
            };
            if self.raw.propose(Vec::new(), data.clone()).is_err() {
                self.awaiting_leader.push_front(data);
                break;
            }
        }
        // Proposals whose requests timed out are dropped rather than kept forever.
        self.awaiting_leader.truncate(self.cfg.pending_requests_max);
    }

    /// Issues one ReadIndex for all linearizable reads that arrived during this input.
    fn flush_reads(&mut self) {
        if let Some(ctx) = self.reads.issue_queued(self.now) {
            self.raw.read_index(ctx.to_be_bytes().to_vec());
        }
    }

    fn serve_reads_up_to_applied(&mut self) {
        for (id, request) in self.reads.take_servable(self.applied_index) {
            if !self.pending.contains(id) {
                continue;
            }
            let result = match request {
                ClientRequest::Range(req) => self.kv.read_range(&req).map(Answer::range),
                ClientRequest::Txn(req) => self.apply_txn(&req),
                other => unreachable!("only reads wait for a read index, got {other:?}"),
            };
            self.finish(id, result);
        }
    }

    /// Answers a request this member is tracking, filling in the response header.
    fn finish(&mut self, id: RequestId, result: Result<Answer, EtcdError>) {
        if self.pending.remove(id) {
            self.reply(id, result);
        }
    }

    fn reply(&mut self, id: RequestId, result: Result<Answer, EtcdError>) {
        let (result, cold) = match result {
            Ok(Answer { response, cold }) => (Ok(response), cold),
            Err(e) => (Err(e), ColdValues::default()),
        };
        if !cold.is_empty() {
            // The driver reads these values as it sends the reply: the writes that put them in
            // their segments must reach it first.
            self.emit_cold_ops();
        }
        let result = result.map(|mut resp| {
            let header = ResponseHeader {
                cluster_id: self.cfg.cluster_id,
                member_id: self.cfg.id,
                revision: resp
                    .revision()
                    .unwrap_or_else(|| self.kv.current_revision()),
                raft_term: self.raw.raft.term,
            };
            *resp.header_mut() = Some(header);
            resp
        });
        self.outputs.push_back(Output::Reply { id, result, cold });
    }

    /// Hands the driver the key space's cold segment writes and releases so far, holding back
    /// releases while the snapshot view for followers may still read them.
    fn emit_cold_ops(&mut self) {
        for op in self.kv.take_cold_ops() {
            match op {
                ColdOp::Release { .. } if self.outgoing_view.is_some() => {
                    self.held_cold_releases.push(op)
                }
                op => self.outputs.push_back(Output::Cold(op)),
            }
        }
        if self.outgoing_view.is_none() {
            self.outputs
                .extend(self.held_cold_releases.drain(..).map(Output::Cold));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Raft readies: persist, send, apply
    // ---------------------------------------------------------------------------------------

    fn process_ready(&mut self) {
        while self.stopped.is_none() && self.raw.has_ready() {
            // Between ready() and advance_append_async() nothing may touch raft's log: raft-rs
            // asserts that the entries it handed out are still the unstable ones.
            let mut rd = self.raw.ready();
            let leader_changed = rd.ss().is_some();
            for m in rd.take_messages() {
                self.send(m);
            }
            let mut wal = WalBatch::new(self.disk.wal_end_offset);
            let mut save_snapshot = None;
            let mut release_wal_before = None;
            if !rd.snapshot().is_empty() {
                let snapshot = rd.snapshot().clone();
                if !self.install_snapshot(&snapshot) {
                    return;
                }
                let meta = snapshot.get_metadata();
                // The marker tells recovery the log was replaced; everything before it may go
                // once it is durable.
                release_wal_before = Some((wal.offset(), meta.index));
                self.disk.wal_offset_at_snapshot = wal.offset();
                wal.push(&Record::Snapshot {
                    index: meta.index,
                    term: meta.term,
                });
                save_snapshot = Some((meta.index, meta.term, SnapshotFile::received(&snapshot)));
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed);
            for rs in rd.take_read_states() {
                if let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                    self.reads
                        .read_index_known(u64::from_be_bytes(ctx), rs.index);
                }
            }
            let entries = rd.take_entries();
            if let Some(last) = entries.last() {
                self.disk
                    .entry_records
                    .push_back((wal.offset(), last.index));
                self.raw.mut_store().append(&entries);
                wal.push(&Record::Entries(entries));
            }
            if let Some(hs) = rd.hs() {
                self.raw.mut_store().set_hard_state(hs.clone());
            }
            if rd.hs().is_some() || save_snapshot.is_some() {
                // A marker always travels with the hard state, so a release after it can never
                // drop the only record of the current term and vote.
                wal.push(&Record::HardState(self.raw.store().hard_state().clone()));
            }
            if let Some((index, term, file)) = save_snapshot {
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
                release_wal_before,
            });
            self.raw.advance_append_async(rd);
            if leader_changed {
                self.propose_awaiting();
            }
            self.complete_readies();
            self.serve_reads_up_to_applied();
            self.maybe_snapshot();
            self.trim_log_mirror();
        }
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

    fn send(&mut self, m: raft::eraftpb::Message) {
        if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            let view = self
                .outgoing_view
                .clone()
                .expect("raft sends only the snapshot the node built, which has its view");
            debug_assert_eq!(
                Some(m.get_snapshot().get_metadata().index),
                self.raw.store().outgoing_snapshot_index()
            );
            let transfer_secs = self.kv.snapshot_bytes_estimate() as f64
                / SNAPSHOT_TRANSFER_BYTES_PER_SEC_MIN as f64;
            let deadline =
                self.now + self.cfg.election_timeout * 2 + Duration::from_secs_f64(transfer_secs);
            self.snapshots_in_flight.insert(m.to, deadline);
            // The driver encodes the view, reading its cold values: their writes go first.
            self.emit_cold_ops();
            self.outputs.push_back(Output::SendSnapshot {
                to: m.to,
                snapshot: OutgoingSnapshot { msg: m, view },
            });
            return;
        }
        self.outputs.push_back(Output::Send {
            to: m.to,
            msg: PeerMessage::Raft(m),
        });
    }

    fn emit_disk(&mut self, op: DiskOp) -> u64 {
        self.disk.next_io += 1;
        let io = self.disk.next_io;
        self.outputs.push_back(Output::Disk { io: IoId(io), op });
        io
    }

    fn append_wal(&mut self, data: Vec<u8>, sync: bool) -> u64 {
        self.disk.wal_end_offset += data.len() as u64;
        self.emit_disk(DiskOp::AppendWal {
            data: Bytes::from(data),
            sync,
        })
    }

    fn handle_disk_done(&mut self, io: IoId, result: Result<(), DiskError>) {
        if let Err(DiskError(reason)) = result {
            // The disk's state is unknown now; continuing could acknowledge what is not durable.
            self.stop(format!("disk operation {} failed: {reason}", io.0));
            return;
        }
        if let Some(ready) = self.disk.readies.iter_mut().find(|r| r.io == Some(io.0)) {
            ready.done = true;
            self.complete_readies();
            return;
        }
        match self.disk.other_ios.remove(&io.0) {
            Some(IoPurpose::SnapshotSaved { index, term }) => {
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
            Some(IoPurpose::MarkerWritten {
                wal_before,
                snapshot_index,
            }) => {
                self.release(wal_before, snapshot_index);
            }
            Some(IoPurpose::Released) | None => {}
        }
    }

    /// Tells raft about every ready whose write is durable, in order, and releases the messages
    /// that had to wait for it.
    fn complete_readies(&mut self) {
        while self.disk.readies.front().is_some_and(|r| r.done) {
            let ready = self.disk.readies.pop_front().expect("front exists");
            self.raw.on_persist_ready(ready.number);
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

    /// Tells raft how far the key space has applied, once raft agrees those entries are durable.
    fn report_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let limit = log.committed.min(log.persisted);
        if self.applied_index > log.applied && self.applied_index <= limit {
            self.raw.advance_apply_to(self.applied_index);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            assert_eq!(
                entry.index,
                self.applied_index + 1,
                "committed entries must apply in order"
            );
            self.applied_index = entry.index;
            if self.cfg.observe {
                self.outputs.push_back(Output::Applied {
                    index: entry.index,
                    term: entry.term,
                    data: entry.data.clone(),
                });
            }
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let request = match InternalRequest::decode(entry.data.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    // Every member decodes the same bytes the same way, so skipping keeps the
                    // replicas equal; nobody can be waiting for an undecodable entry.
                    let _ = e;
                    continue;
                }
            };
            if self.bug(|b| b.apply_twice) && entry.index % 5 == 0 {
                let _ = self.apply_op(request.op.clone());
            }
            let result = self.apply_op(request.op);
            if request.origin == self.cfg.id {
                if let Some(id) = self.pending.take_proposal(request.request_id) {
                    self.finish(id, result);
                }
            }
        }
        self.report_applied();
    }

    fn apply_op(&mut self, op: Option<internal_request::Op>) -> Result<Answer, EtcdError> {
        match op {
            Some(internal_request::Op::Put(req)) => self
                .kv
                .put(&req)
                .map(|r| Answer::from(ClientResponse::Put(r))),
            Some(internal_request::Op::DeleteRange(req)) => self
                .kv
                .delete_range(&req)
                .map(|r| Answer::from(ClientResponse::DeleteRange(r))),
            Some(internal_request::Op::Txn(req)) => self.apply_txn(&req),
            Some(internal_request::Op::Compaction(req)) => self
                .kv
                .compact(&req)
                .map(|r| Answer::from(ClientResponse::Compact(r))),
            // An entry without an operation is written by nobody; answer as etcd does for an
            // empty request.
            None => Err(EtcdError::NotCapable),
        }
    }

    /// Runs a txn (read-only or not) against the key space; there is no lease module yet.
    fn apply_txn(&mut self, req: &TxnRequest) -> Result<Answer, EtcdError> {
        self.kv
            .txn_with_leases(req, &mvcc::NoLeases)
            .map(|(response, cold)| Answer {
                response: ClientResponse::Txn(response),
                cold,
            })
    }

    /// Whether a deliberately injected bug is on (simulator tests only; always off without the
    /// `bug-injection` feature).
    #[allow(unused_variables)]
    fn bug(&self, which: impl Fn(&config::Bugs) -> bool) -> bool {
        #[cfg(feature = "bug-injection")]
        {
            which(&self.cfg.bugs)
        }
        #[cfg(not(feature = "bug-injection"))]
        {
            false
        }
    }

    /// Replaces the key space with a snapshot the leader sent. Returns false if the member had
    /// to stop because the snapshot is unreadable.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> bool {
        let index = snapshot.get_metadata().index;
        match KeySpace::decode_snapshot(&snapshot.data) {
            Ok(kv) => {
                self.kv.replace_with(kv);
                self.applied_index = index;
                self.snapshot_index = index;
                self.snapshots_installed += 1;
                self.raw
                    .mut_store()
                    .install_snapshot(snapshot.get_metadata());
                true
            }
            Err(e) => {
                self.stop(format!(
                    "snapshot at index {index} from the leader is unreadable: {e:?}"
                ));
                false
            }
        }
    }

    /// Snapshots the key space and compacts the log once `snapshot_count` entries were applied
    /// since the last snapshot and the WAL written since then is at least as large as the
    /// snapshot would be. The second condition is ours, not etcd's: a snapshot rewrites the
    /// whole store, so taking one every `snapshot_count` entries of a large store writes many
    /// times more than the WAL does and competes with its syncs; this way snapshots never write
    /// more bytes than the WAL, and a restart still replays no more WAL than a snapshot's worth
    /// (or `snapshot_count` entries). The node only freezes a view of the key space (O(1)); the
    /// driver encodes and writes it.
    fn maybe_snapshot(&mut self) {
        if self.applied_index < self.snapshot_index + self.cfg.snapshot_count.max(1) {
            return;
        }
        let wal_since = self.disk.wal_end_offset - self.disk.wal_offset_at_snapshot;
        if wal_since < self.kv.snapshot_bytes_estimate() {
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
        let file = SnapshotFile::local(meta, self.kv.view());
        self.disk.wal_offset_at_snapshot = self.disk.wal_end_offset;
        // The driver encodes the view, reading its cold values: their writes go first.
        self.emit_cold_ops();
        let io = self.emit_disk(DiskOp::SaveSnapshot { index, term, file });
        self.disk
            .other_ios
            .insert(io, IoPurpose::SnapshotSaved { index, term });
    }

    /// The metadata of a snapshot of the key space as it is now.
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
    /// point: freeze the key space as it is now (O(1)) and have raft send it straight away;
    /// the driver encodes the data as it sends. Freed once no follower waits for one
    /// (`on_tick`).
    fn serve_snapshot_request(&mut self) {
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
        self.outgoing_view = Some(self.kv.view());
        self.outputs
            .extend(self.held_cold_releases.drain(..).map(Output::Cold));
        self.raw.raft.send_append(to);
    }

    /// The WAL offset before which no record holds an entry after `snapshot_index`.
    fn releasable_wal_offset(&mut self, snapshot_index: u64) -> u64 {
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

    fn stop(&mut self, reason: String) {
        for id in self.pending.drain() {
            self.outputs.push_back(Output::Reply {
                id,
                result: Err(EtcdError::Stopped),
                cold: ColdValues::default(),
            });
        }
        self.outputs.push_back(Output::Stopped {
            reason: reason.clone(),
        });
        self.stopped = Some(reason);
    }
}

/// etcd's estimate of what a put adds to the key space: the key and value plus a fixed
/// per-record overhead.
const QUOTA_RECORD_OVERHEAD_BYTES: u64 = 256;

/// A response and the cold values it still needs.
struct Answer {
    response: ClientResponse,
    cold: ColdValues,
}

impl Answer {
    fn range((response, cold): (RangeResponse, ColdValues)) -> Answer {
        Answer {
            response: ClientResponse::Range(response),
            cold,
        }
    }
}

impl From<ClientResponse> for Answer {
    fn from(response: ClientResponse) -> Answer {
        Answer {
            response,
            cold: ColdValues::default(),
        }
    }
}

fn put_cost(req: &PutRequest) -> u64 {
    QUOTA_RECORD_OVERHEAD_BYTES + req.key.len() as u64 + req.value.len() as u64
}

/// The larger branch's puts, as etcd counts a txn.
fn txn_cost(req: &TxnRequest) -> u64 {
    use crate::proto::etcdserverpb::request_op::Request;
    let branch = |ops: &[crate::proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(put)) => put_cost(put),
                Some(Request::RequestTxn(inner)) => txn_cost(inner),
                _ => 0,
            })
            .sum()
    };
    branch(&req.success).max(branch(&req.failure))
}

fn txn_has_writes(req: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => false,
            Some(Request::RequestTxn(inner)) => txn_has_writes(inner),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
        })
}

/// A read-only txn is served locally only when every range in it asked for serializable reads.
fn txn_is_serializable(req: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(inner)) => txn_is_serializable(inner),
            _ => true,
        })
}
