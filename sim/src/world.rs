//! The simulated world of one seed: members running the real `Node`, a network that delays,
//! loses, duplicates, reorders and partitions messages, disks that lose unsynced bytes and tear
//! the last write on a crash, clocks that drift and jump, processes that crash, restart and
//! pause, and clients that time out. One ChaCha RNG decides everything, and events are ordered
//! by (time, sequence number), so a seed replays bit for bit.
//!
//! A run has two phases: safety (faults on, the workload runs) and liveness (faults healed:
//! every member restarted and reconnected, which must elect a leader and serve a write and a
//! linearizable read within `LIVENESS_BOUND_NS`, after which every member must apply all that
//! is committed within `CATCH_UP_BOUND_NS`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::mvcc::MemoryColdStore;
use detcd::node::{
    ClientRequest, ClientResponse, Config, DiskError, DiskOp, Input, IoId, MemberId, Node, Output,
    PeerMessage, RequestId,
};
use detcd::proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use detcd::time::Instant;
use detcd::wal;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::disk::SimDisk;
use crate::history::{AppliedEntry, Op, Outcome, SimNanos};
use crate::options::{Bug, Draw, Options};

const MS: u64 = 1_000_000;
/// After the faults heal, a leader must be elected and serve within this bound.
pub const LIVENESS_BOUND_NS: u64 = 20_000 * MS;
/// After the liveness probe, every member must have applied everything committed within this.
const CATCH_UP_BOUND_NS: SimNanos = 5_000 * MS;
/// The client id of the liveness phase's probes.
const PROBE_CLIENT: u64 = u64::MAX;
/// The safety phase ends by this time even if clients are still busy (they then time out).
const SAFETY_PHASE_MAX_NS: u64 = 600_000 * MS;

/// Counts of what a run did, for the fault-mix report.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub events: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub torn_writes: u64,
    pub disk_errors: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub clock_jumps: u64,
    pub clogs: u64,
    pub snapshots_installed: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
}

/// A member's clock: local = offset + global * (1 + drift).
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_ns: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, global: SimNanos) -> Instant {
        let skew = (global as i128 * self.drift_ppm as i128 / 1_000_000) as i64;
        Instant::from_nanos((self.offset_ns as i128 + global as i128 + skew as i128).max(0) as u64)
    }

    /// The global time at which the local clock reads `local` (rounded up).
    fn global(&self, local: Instant) -> SimNanos {
        let local = local.as_nanos() as i128 - self.offset_ns as i128;
        let global = local * 1_000_000 / (1_000_000 + self.drift_ppm as i128);
        (global.max(0) as u64).saturating_add(1)
    }
}

struct Member {
    node: Option<Node>,
    disk: SimDisk,
    /// The cold segments of the running incarnation (a cache the server deletes at start).
    cold: MemoryColdStore,
    config: Config,
    clock: Clock,
    incarnation: u64,
    /// A paused member takes no steps; its inputs wait in `deferred`.
    paused: bool,
    deferred: Vec<Input>,
    /// The earliest Timer event scheduled for this incarnation, so each wake-up is scheduled
    /// once instead of after every input.
    timer_at: Option<SimNanos>,
    /// Requests in flight on this member: request id -> op index.
    requests: BTreeMap<RequestId, usize>,
    /// Proposals reported by this incarnation: request id -> (origin, proposal).
    last_commit: u64,
}

enum Event {
    Deliver {
        from: MemberId,
        to: MemberId,
        msg: PeerMessage,
    },
    DiskDone {
        member: MemberId,
        incarnation: u64,
        io: IoId,
        op: DiskOp,
        /// For a local snapshot: the cold segments as they were when it was submitted.
        cold: Option<MemoryColdStore>,
    },
    Timer {
        member: MemberId,
        incarnation: u64,
    },
    ClientNext {
        client: u64,
    },
    ClientGiveUp {
        op: usize,
    },
    Fault,
    Heal {
        what: Heal,
    },
}

#[derive(Clone, Copy, Debug)]
enum Heal {
    Restart(MemberId),
    Resume(MemberId),
    Links,
}

/// What went wrong in a run.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: SimNanos,
    pub what: String,
}

pub struct World {
    pub seed: u64,
    pub options: Options,
    rng: ChaCha8Rng,
    pub now: SimNanos,
    members: BTreeMap<MemberId, Member>,
    /// Boxed: B-tree nodes move their values around, and raft messages are large.
    events: BTreeMap<(SimNanos, u64), Box<Event>>,
    seq: u64,
    cut: BTreeSet<(MemberId, MemberId)>,
    /// Clogged links and the extra delay every message on them suffers.
    clogged: BTreeMap<(MemberId, MemberId), u64>,
    pub ops: Vec<Op>,
    issued: u64,
    next_request: u64,
    /// Clients waiting on an op (client -> op index).
    busy_clients: BTreeMap<u64, usize>,
    /// The highest revision any client has seen, to aim compactions and past reads.
    revision_seen: i64,
    /// Every applied entry any member reported, by index: members must agree.
    pub applied: BTreeMap<u64, AppliedEntry>,
    /// Leader of each term.
    leaders: BTreeMap<u64, MemberId>,
    pub counters: Counters,
    pub trace_hash: u64,
    /// (time, member, what happened); kept only when tracing.
    pub trace: Option<Vec<(SimNanos, MemberId, String)>>,
    faults_on: bool,
    pub failure: Option<Failure>,
}

impl World {
    pub fn new(seed: u64, options: Options, trace: bool) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0fd_e7cd);
        let peers: Vec<MemberId> = (1..=options.members).collect();
        let mut members = BTreeMap::new();
        for &id in &peers {
            let mut config = Config::new(id, peers.clone());
            config.observe = true;
            config.snapshot_count = options.snapshot_count;
            config.snapshot_catchup_entries = options.snapshot_count / 2;
            config.request_timeout = std::time::Duration::from_secs(3);
            config.bugs = detcd::node::Bugs {
                ack_before_durable: options.bug == Some(Bug::AckBeforeDurable),
                read_without_read_index: options.bug == Some(Bug::ReadWithoutReadIndex),
                apply_twice: options.bug == Some(Bug::ApplyTwice),
            };
            let drift = options.clock_drift_ppm_max as i64;
            let clock = Clock {
                offset_ns: rng.below(10_000 * MS),
                drift_ppm: rng.below(2 * drift as u64 + 1) as i64 - drift,
            };
            members.insert(
                id,
                Member {
                    node: None,
                    disk: SimDisk::default(),
                    cold: MemoryColdStore::default(),
                    config,
                    clock,
                    incarnation: 0,
                    paused: false,
                    deferred: Vec::new(),
                    timer_at: None,
                    requests: BTreeMap::new(),
                    last_commit: 0,
                },
            );
        }
        let mut world = World {
            seed,
            options,
            rng,
            now: 0,
            members,
            events: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            clogged: BTreeMap::new(),
            ops: Vec::new(),
            issued: 0,
            next_request: 0,
            busy_clients: BTreeMap::new(),
            revision_seen: 1,
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            counters: Counters::default(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            trace: trace.then(Vec::new),
            faults_on: true,
            failure: None,
        };
        for id in peers {
            world.start(id);
        }
        for client in 0..world.options.clients {
            let at = world.rng.below(50 * MS);
            world.schedule(at, Event::ClientNext { client });
        }
        if world.options.fault_interval_ns > 0 {
            let at = world.rng.below(world.options.fault_interval_ns * 2);
            world.schedule(at, Event::Fault);
        }
        world
    }

    // -----------------------------------------------------------------------------------------
    // Bookkeeping
    // -----------------------------------------------------------------------------------------

    fn schedule(&mut self, at: SimNanos, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), Box::new(event));
    }

    fn log(&mut self, member: MemberId, what: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(trace) = &mut self.trace {
            trace.push((now, member, what()));
        }
    }

    fn mix(&mut self, value: u64) {
        self.trace_hash = (self.trace_hash ^ value).wrapping_mul(0x0100_0000_01b3);
    }

    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.log(0, || format!("FAILURE: {what}"));
            self.failure = Some(Failure { at: self.now, what });
        }
    }

    pub fn member_ids(&self) -> Vec<MemberId> {
        self.members.keys().copied().collect()
    }

    pub fn node(&self, id: MemberId) -> Option<&Node> {
        self.members.get(&id).and_then(|m| m.node.as_ref())
    }

    // -----------------------------------------------------------------------------------------
    // Processes
    // -----------------------------------------------------------------------------------------

    /// Starts a member from its disk through the real recovery path.
    fn start(&mut self, id: MemberId) {
        let now = self.now;
        let seed = self.rng.next_u64();
        let member = self.members.get_mut(&id).expect("member");
        let recovered = match wal::recover(&member.disk.image()) {
            Ok(r) => r,
            Err(e) => {
                let what = format!("member {id} cannot recover its disk: {e:?}");
                self.fail(what);
                return;
            }
        };
        // The driver truncates a torn tail before appending again (docs/wal.md); the injected
        // bug forgets to, so new records land after the garbage.
        if self.options.bug != Some(Bug::KeepTornTail) {
            let valid = (recovered.wal_end_offset - member.disk.wal_start_offset) as usize;
            member.disk.wal.truncate(valid);
            member.disk.synced_len = member.disk.synced_len.min(valid);
        }
        member.incarnation += 1;
        member.paused = false;
        member.deferred.clear();
        member.timer_at = None;
        member.last_commit = 0;
        let local = member.clock.local(now);
        match Node::new(member.config.clone(), recovered, seed, local) {
            Ok(node) => member.node = Some(node),
            Err(e) => {
                self.fail(format!("member {id} refuses to start: {e}"));
                return;
            }
        }
        let incarnation = member.incarnation;
        self.log(id, || format!("start (incarnation {incarnation})"));
        self.mix(id ^ 0x5747);
        self.drain(id);
        self.arm_timer(id);
    }

    fn crash(&mut self, id: MemberId) {
        let torn = self.options.torn_write > 0.0 && self.rng.chance(self.options.torn_write);
        let member = self.members.get_mut(&id).expect("member");
        if member.node.take().is_none() {
            return;
        }
        member.deferred.clear();
        member.paused = false;
        member.cold = MemoryColdStore::default();
        let tore = member.disk.crash(&mut self.rng, torn);
        member.disk.busy_until = self.now;
        let lost: Vec<usize> = std::mem::take(&mut member.requests).into_values().collect();
        for op in lost {
            self.ops[op].outcome = Outcome::Unknown;
            self.client_done(op);
        }
        self.counters.crashes += 1;
        self.counters.torn_writes += u64::from(tore);
        self.log(id, || {
            format!("crash{}", if tore { " (torn write)" } else { "" })
        });
        self.mix(id ^ 0xc4a5);
    }

    fn arm_timer(&mut self, id: MemberId) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let Some(node) = member.node.as_ref() else {
            return;
        };
        if let Some(local) = node.poll_timeout() {
            let at = member.clock.global(local).max(self.now + 1);
            if member.timer_at.is_some_and(|armed| armed <= at) {
                return;
            }
            let incarnation = member.incarnation;
            self.members.get_mut(&id).expect("member").timer_at = Some(at);
            self.schedule(
                at,
                Event::Timer {
                    member: id,
                    incarnation,
                },
            );
        }
    }

    /// Feeds one input to a member and carries out its outputs.
    fn input(&mut self, id: MemberId, input: Input) {
        let now = self.now;
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.node.is_none() {
            return;
        }
        if member.paused {
            if !matches!(input, Input::Tick) {
                member.deferred.push(input);
            }
            return;
        }
        let Some(node) = member.node.as_mut() else {
            return;
        };
        let local = member.clock.local(now);
        let mut inputs = std::mem::take(&mut member.deferred);
        inputs.push(input);
        node.handle_batch(local, inputs);
        node.check_invariants();
        self.observe_raft(id);
        self.drain(id);
        self.arm_timer(id);
    }

    fn drain(&mut self, id: MemberId) {
        loop {
            let Some(member) = self.members.get_mut(&id) else {
                return;
            };
            let Some(output) = member.node.as_mut().and_then(|n| n.poll_output()) else {
                return;
            };
            let output = output
                .resolved(&member.cold)
                .expect("the cold values an output needs are in the member's segments");
            match output {
                Output::Send { to, msg } => self.send(id, to, msg),
                Output::SendSnapshot { .. } => unreachable!("resolved when polled"),
                Output::Disk { io, op } => self.disk_op(id, io, op),
                Output::Cold(op) => member.cold.apply(&op),
                Output::Reply {
                    id: rid, result, ..
                } => self.reply(id, rid, result),
                Output::Proposed {
                    id: rid,
                    origin,
                    proposal,
                } => {
                    if let Some(&op) = self.members[&id].requests.get(&rid) {
                        self.ops[op].proposal = Some((origin, proposal));
                    }
                }
                Output::Applied { index, term, data } => {
                    self.applied(id, AppliedEntry { index, term, data })
                }
                Output::Stopped { reason } => {
                    self.log(id, || format!("stopped: {reason}"));
                    // As the server would exit: the process is gone; it restarts on its disk.
                    self.crash(id);
                    let at = self.now + self.rng.between(100 * MS, 2_000 * MS);
                    self.schedule(
                        at,
                        Event::Heal {
                            what: Heal::Restart(id),
                        },
                    );
                    return;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Network and disk
    // -----------------------------------------------------------------------------------------

    fn send(&mut self, from: MemberId, to: MemberId, msg: PeerMessage) {
        self.counters.messages += 1;
        if self.faults_on && self.rng.chance(self.options.net_loss) {
            self.counters.dropped += 1;
            return;
        }
        // raft tolerates duplicated messages, except a forwarded proposal: two copies become two
        // log entries (neither raft nor etcd deduplicates proposals). The peer transport runs on
        // TCP and never resends, so it cannot duplicate one; neither does the simulator.
        let is_proposal = matches!(&msg, PeerMessage::Raft(m) if m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose);
        let duplicate =
            self.faults_on && !is_proposal && self.rng.chance(self.options.net_duplicate);
        let copies = if duplicate { 2 } else { 1 };
        self.counters.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = self
                .rng
                .between(self.options.net_delay_min_ns, self.options.net_delay_max_ns);
            let clog = self.clogged.get(&(from, to)).copied().unwrap_or(0);
            let at = self.now + delay + clog;
            self.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn disk_op(&mut self, id: MemberId, io: IoId, op: DiskOp) {
        let latency = self.rng.between(1_000, self.options.disk_latency_max_ns);
        let member = self.members.get_mut(&id).expect("member");
        let at = if in_background(&op) {
            // Written by a thread of its own, as the server does: it overtakes and is overtaken
            // by the queue, and takes longer (a whole key space).
            self.now + latency * self.rng.between(1, 10)
        } else {
            let at = member.disk.busy_until.max(self.now) + latency;
            member.disk.busy_until = at;
            // The disk thread runs one operation at a time, in order: an append's bytes reach
            // the page cache when it starts (now, if the disk is idle), and are durable only
            // once its sync completes.
            member.disk.queue.push_back(op.clone());
            if member.disk.queue.len() == 1 {
                member.disk.start_front();
            }
            at
        };
        let incarnation = member.incarnation;
        let cold = matches!(op, DiskOp::SaveSnapshot { .. }).then(|| member.cold.clone());
        self.schedule(
            at,
            Event::DiskDone {
                member: id,
                incarnation,
                io,
                op,
                cold,
            },
        );
    }

    fn disk_done(
        &mut self,
        id: MemberId,
        incarnation: u64,
        io: IoId,
        op: DiskOp,
        cold: Option<MemoryColdStore>,
    ) {
        let fail = self.faults_on
            && self.options.disk_error > 0.0
            && self.rng.chance(self.options.disk_error);
        let member = self.members.get_mut(&id).expect("member");
        if member.incarnation != incarnation || member.node.is_none() {
            return;
        }
        if fail {
            self.counters.disk_errors += 1;
            self.log(id, || format!("disk error on io {}", io.0));
            self.input(
                id,
                Input::DiskDone {
                    io,
                    result: Err(DiskError("simulated fsync failure".into())),
                },
            );
            return;
        }
        match &op {
            // The bytes were written when the op started; completion makes them durable.
            DiskOp::AppendWal { sync, .. } => {
                if *sync {
                    member.disk.synced_len = member.disk.wal.len();
                }
            }
            other => member
                .disk
                .execute(other, &cold.unwrap_or_default())
                .expect("a snapshot's cold values were pinned when it was submitted"),
        }
        if !in_background(&op) {
            member.disk.queue.pop_front();
            member.disk.start_front();
        }
        self.input(id, Input::DiskDone { io, result: Ok(()) });
    }

    // -----------------------------------------------------------------------------------------
    // Checks after every step
    // -----------------------------------------------------------------------------------------

    fn applied(&mut self, id: MemberId, entry: AppliedEntry) {
        match self.applied.get(&entry.index) {
            Some(known) if *known != entry => {
                let what = format!(
                    "member {id} applied index {} with term {} but another member applied term {} there",
                    entry.index, entry.term, known.term
                );
                self.fail(what);
            }
            Some(_) => {}
            None => {
                self.applied.insert(entry.index, entry);
            }
        }
    }

    fn observe_raft(&mut self, id: MemberId) {
        let member = &self.members[&id];
        let Some(node) = member.node.as_ref() else {
            return;
        };
        let (term, is_leader, commit, last_commit) = (
            node.term(),
            node.is_leader(),
            node.commit_index(),
            member.last_commit,
        );
        if is_leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    self.fail(format!(
                        "two leaders in term {term}: members {other} and {id}"
                    ));
                }
                _ => {
                    self.leaders.insert(term, id);
                }
            }
        }
        if commit < last_commit {
            self.fail(format!(
                "member {id}'s commit index went back from {last_commit} to {commit}"
            ));
        }
        self.members.get_mut(&id).expect("member").last_commit = commit;
        let installed = self.members[&id]
            .node
            .as_ref()
            .map_or(0, |n| n.snapshots_installed());
        self.counters.snapshots_installed = self.counters.snapshots_installed.max(installed);
    }

    /// Log matching among running members: where two members both hold an entry at or below
    /// both commit indexes, it has the same term.
    fn check_log_matching(&mut self) {
        let nodes: Vec<(MemberId, &Node)> = self
            .members
            .iter()
            .filter_map(|(id, m)| m.node.as_ref().map(|n| (*id, n)))
            .collect();
        let mut problem = None;
        for (i, (a, na)) in nodes.iter().enumerate() {
            for (b, nb) in &nodes[i + 1..] {
                let top = na.commit_index().min(nb.commit_index());
                let low = na.first_log_index().max(nb.first_log_index());
                for index in low..=top {
                    if let (Some(ta), Some(tb)) = (na.log_term(index), nb.log_term(index)) {
                        if ta != tb {
                            problem = Some(format!(
                                "log matching: index {index} has term {ta} on {a} and {tb} on {b}"
                            ));
                        }
                    }
                }
            }
        }
        if let Some(p) = problem {
            self.fail(p);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Clients
    // -----------------------------------------------------------------------------------------

    fn key(&mut self) -> Bytes {
        Bytes::from(format!("k{}", self.rng.below(self.options.keys)))
    }

    fn request(&mut self, client: u64) -> ClientRequest {
        let m = self.options.mix.clone();
        let weights = [
            m.get,
            m.get_serializable,
            m.range,
            m.put,
            m.delete,
            m.txn,
            m.compact,
        ];
        let total: u64 = weights.iter().sum();
        let mut pick = self.rng.below(total.max(1));
        let mut kind = 0;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= w;
        }
        let value = Bytes::from(format!("c{client}.{}", self.issued));
        match kind {
            0 | 1 => ClientRequest::Range(RangeRequest {
                key: self.key(),
                serializable: kind == 1,
                ..Default::default()
            }),
            2 => {
                let past = self.rng.chance(0.2);
                ClientRequest::Range(RangeRequest {
                    key: Bytes::from_static(b"k"),
                    range_end: Bytes::from_static(b"l"),
                    limit: self.rng.below(3) as i64,
                    revision: if past {
                        self.rng.between(1, self.revision_seen as u64) as i64
                    } else {
                        0
                    },
                    count_only: self.rng.chance(0.1),
                    ..Default::default()
                })
            }
            3 => ClientRequest::Put(PutRequest {
                key: self.key(),
                value,
                prev_kv: self.rng.chance(0.5),
                ..Default::default()
            }),
            4 => {
                let key = self.key();
                let range_end = if self.rng.chance(0.3) {
                    Bytes::from_static(b"l")
                } else {
                    Bytes::new()
                };
                ClientRequest::DeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: self.rng.chance(0.5),
                })
            }
            5 => self.txn(value),
            _ => {
                let revision = self.rng.between(1, self.revision_seen as u64) as i64;
                ClientRequest::Compact(CompactionRequest {
                    revision,
                    physical: false,
                })
            }
        }
    }

    fn txn(&mut self, value: Bytes) -> ClientRequest {
        let key = self.key();
        let target = self.rng.below(3);
        let compare = Compare {
            result: self.rng.below(4) as i32,
            target: match target {
                0 => compare::CompareTarget::Version,
                1 => compare::CompareTarget::Mod,
                _ => compare::CompareTarget::Create,
            } as i32,
            key: key.clone(),
            target_union: Some(match target {
                0 => compare::TargetUnion::Version(self.rng.below(3) as i64),
                1 => compare::TargetUnion::ModRevision(
                    self.rng.below(self.revision_seen as u64 + 1) as i64,
                ),
                _ => compare::TargetUnion::CreateRevision(
                    self.rng.below(self.revision_seen as u64 + 1) as i64,
                ),
            }),
            ..Default::default()
        };
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })),
        };
        let get = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        };
        let other = self.key();
        let delete = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: other,
                    ..Default::default()
                },
            )),
        };
        let success = if self.rng.chance(0.5) {
            vec![put]
        } else {
            vec![put, get.clone()]
        };
        let failure = if self.rng.chance(0.5) {
            vec![get]
        } else {
            vec![delete]
        };
        ClientRequest::Txn(TxnRequest {
            compare: vec![compare],
            success,
            failure,
        })
    }

    /// Records an operation `client` invokes now at `member`; returns its index in `ops`.
    fn invoke(&mut self, client: u64, member: MemberId, request: &ClientRequest) -> usize {
        let op = self.ops.len();
        self.ops.push(Op {
            id: op as u64,
            client,
            member,
            request: request.clone(),
            invoked_at: self.now,
            outcome: Outcome::Unknown,
            proposal: None,
        });
        self.busy_clients.insert(client, op);
        op
    }

    /// A fresh request id for `op` at `member`, by which its reply finds the operation.
    fn track(&mut self, member: MemberId, op: usize) -> RequestId {
        self.next_request += 1;
        let rid = RequestId(self.next_request);
        self.members
            .get_mut(&member)
            .expect("member")
            .requests
            .insert(rid, op);
        rid
    }

    fn client_next(&mut self, client: u64) {
        if self.issued >= self.options.ops || self.busy_clients.contains_key(&client) {
            return;
        }
        self.issued += 1;
        let request = self.request(client);
        let member = 1 + self.rng.below(self.options.members);
        let op = self.invoke(client, member, &request);
        let give_up = self.now + self.options.client_timeout_ns;
        self.schedule(give_up, Event::ClientGiveUp { op });
        let running = self.members[&member].node.is_some();
        if !running {
            // Connection refused: the client learns at once that nothing happened.
            self.ops[op].outcome = Outcome::Err {
                error: EtcdError::Stopped,
                returned_at: self.now,
            };
            self.client_done(op);
            return;
        }
        let rid = self.track(member, op);
        self.log(member, || {
            format!("client {client} op {op}: {}", describe(&request))
        });
        self.mix(op as u64 ^ (member << 32));
        self.input(member, Input::Client { id: rid, request });
    }

    fn reply(
        &mut self,
        member: MemberId,
        rid: RequestId,
        result: Result<ClientResponse, EtcdError>,
    ) {
        let Some(op) = self
            .members
            .get_mut(&member)
            .and_then(|m| m.requests.remove(&rid))
        else {
            return;
        };
        if self.busy_clients.get(&self.ops[op].client) != Some(&op) {
            return; // the client gave up already
        }
        let now = self.now;
        self.log(member, || format!("reply op {op}: {}", summarize(&result)));
        self.mix(op as u64 ^ u64::from(result.is_ok()) << 40);
        self.ops[op].outcome = match result {
            Ok(response) => {
                if let Some(rev) = response.revision() {
                    self.revision_seen = self.revision_seen.max(rev);
                }
                Outcome::Ok {
                    response,
                    returned_at: now,
                }
            }
            Err(error) => Outcome::Err {
                error,
                returned_at: now,
            },
        };
        self.client_done(op);
    }

    fn client_give_up(&mut self, op: usize) {
        if self.busy_clients.get(&self.ops[op].client) == Some(&op) {
            self.log(0, || format!("client gives up op {op}"));
            self.client_done(op);
        }
    }

    fn client_done(&mut self, op: usize) {
        match &self.ops[op].outcome {
            Outcome::Ok { .. } => self.counters.ops_ok += 1,
            Outcome::Err { .. } => self.counters.ops_failed += 1,
            Outcome::Unknown => self.counters.ops_unknown += 1,
        }
        let client = self.ops[op].client;
        if self.busy_clients.get(&client) == Some(&op) {
            self.busy_clients.remove(&client);
            let at = self.now + self.rng.below(20 * MS);
            self.schedule(at, Event::ClientNext { client });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let ids = self.member_ids();
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        let leader = ids
            .iter()
            .copied()
            .find(|m| self.node(*m).is_some_and(|n| n.is_leader()));
        // Faults aimed at the leader find the most bugs: prefer it half of the time.
        let target = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => id,
        };
        match self.rng.below(7) {
            0 | 1 => {
                self.crash(target);
                let at = self.now + self.rng.between(10 * MS, 3_000 * MS);
                self.schedule(
                    at,
                    Event::Heal {
                        what: Heal::Restart(target),
                    },
                );
            }
            2 => {
                // Isolate (symmetric) or cut one direction only (asymmetric).
                let one_way = self.rng.chance(0.3);
                for other in ids.iter().copied().filter(|o| *o != target) {
                    self.cut.insert((target, other));
                    if !one_way {
                        self.cut.insert((other, target));
                    }
                }
                self.counters.partitions += 1;
                self.log(target, || {
                    format!(
                        "partitioned{}",
                        if one_way { " (outbound only)" } else { "" }
                    )
                });
                let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                self.schedule(at, Event::Heal { what: Heal::Links });
            }
            3 => {
                // A random split of the cluster in two.
                for a in &ids {
                    for b in &ids {
                        if a < b && self.rng.chance(0.5) {
                            self.cut.insert((*a, *b));
                            self.cut.insert((*b, *a));
                        }
                    }
                }
                self.counters.partitions += 1;
                self.log(0, || "random partition".to_string());
                let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                self.schedule(at, Event::Heal { what: Heal::Links });
            }
            4 => {
                let member = self.members.get_mut(&target).expect("member");
                if member.node.is_some() && !member.paused {
                    member.paused = true;
                    self.counters.pauses += 1;
                    self.log(target, || "paused".to_string());
                    let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                    self.schedule(
                        at,
                        Event::Heal {
                            what: Heal::Resume(target),
                        },
                    );
                }
            }
            5 => {
                // Clogging: a link that still delivers, but late (a congested or slow path).
                let other = ids[self.rng.below(ids.len() as u64) as usize];
                if other != target {
                    let extra = self.rng.between(50 * MS, 2_000 * MS);
                    self.clogged.insert((target, other), extra);
                    self.counters.clogs += 1;
                    self.log(target, || {
                        format!("link to m{other} clogged (+{}ms)", extra / MS)
                    });
                    let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                    self.schedule(at, Event::Heal { what: Heal::Links });
                }
            }
            _ => {
                let jump = self.rng.between(1, 3_000 * MS);
                let member = self.members.get_mut(&target).expect("member");
                member.clock.offset_ns += jump;
                self.counters.clock_jumps += 1;
                self.log(target, || format!("clock jumps {}ms ahead", jump / MS));
                self.arm_timer(target);
            }
        }
        self.mix(0xfa017 ^ self.now);
        let next = self.now + self.rng.between(1, 2 * self.options.fault_interval_ns);
        self.schedule(next, Event::Fault);
    }

    fn heal(&mut self, what: Heal) {
        match what {
            Heal::Restart(id) => {
                if self.members[&id].node.is_none() {
                    self.start(id);
                }
            }
            Heal::Resume(id) => {
                let member = self.members.get_mut(&id).expect("member");
                if member.paused {
                    member.paused = false;
                    self.log(id, || "resumed".to_string());
                    self.input(id, Input::Tick);
                }
            }
            Heal::Links => {
                self.cut.clear();
                self.clogged.clear();
                self.log(0, || "network healed".to_string());
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The run
    // -----------------------------------------------------------------------------------------

    fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.events.pop_first() else {
            return false;
        };
        let event = *event;
        self.now = self.now.max(at);
        self.counters.events += 1;
        match event {
            Event::Deliver { from, to, msg } => {
                if !self.cut.contains(&(from, to)) && self.members[&to].node.is_some() {
                    if self.members[&to].paused {
                        // A paused process's socket buffers the message until it resumes.
                        let at = self.now + 10 * MS;
                        self.schedule(at, Event::Deliver { from, to, msg });
                    } else {
                        self.mix(from ^ (to << 8));
                        self.input(to, Input::Peer { from, msg });
                    }
                }
            }
            Event::DiskDone {
                member,
                incarnation,
                io,
                op,
                cold,
            } => self.disk_done(member, incarnation, io, op, cold),
            Event::Timer {
                member,
                incarnation,
            } => {
                if let Some(m) = self.members.get_mut(&member) {
                    if m.incarnation == incarnation && m.timer_at == Some(self.now) {
                        m.timer_at = None;
                    }
                }
                if self.members[&member].incarnation == incarnation {
                    let due = self.node(member).and_then(|n| n.poll_timeout());
                    let local = self.members[&member].clock.local(self.now);
                    if due.is_some_and(|d| d <= local) {
                        self.input(member, Input::Tick);
                    } else {
                        // The deadline moved later since this wake-up was scheduled.
                        self.arm_timer(member);
                    }
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientGiveUp { op } => self.client_give_up(op),
            Event::Fault => self.fault(),
            Event::Heal { what } => self.heal(what),
        }
        if self.counters.events % 4096 == 0 {
            self.check_log_matching();
        }
        true
    }

    /// Runs both phases; afterwards `failure` says whether anything went wrong.
    pub fn run(&mut self) {
        while self.failure.is_none() && self.now < SAFETY_PHASE_MAX_NS {
            let done = self.issued >= self.options.ops && self.busy_clients.is_empty();
            if done || !self.step() {
                break;
            }
        }
        if self.failure.is_none() {
            self.liveness();
        }
        if self.failure.is_none() {
            self.check_log_matching();
            self.check_convergence();
        }
    }

    /// Heals everything, then requires a leader that serves a write and a linearizable read
    /// within the bound.
    fn liveness(&mut self) {
        self.faults_on = false;
        self.cut.clear();
        self.clogged.clear();
        self.log(0, || "liveness phase: faults healed".to_string());
        for id in self.member_ids() {
            if self.members[&id].node.is_none() {
                self.start(id);
            }
            if self.members[&id].paused {
                self.heal(Heal::Resume(id));
            }
        }
        let deadline = self.now + LIVENESS_BOUND_NS;
        let probe = self.liveness_probe(deadline);
        if let Err(what) = probe {
            self.fail(format!(
                "liveness: {what} within {}s of healing",
                LIVENESS_BOUND_NS / 1_000_000_000
            ));
            return;
        }
        // Every member must catch up with everything committed: a follower left behind for
        // good (say, one the leader never manages to send a snapshot) is a liveness bug even
        // though the others serve. Once caught up, the replicas can be compared.
        let settle = self.now + CATCH_UP_BOUND_NS;
        loop {
            let commit = self
                .members
                .values()
                .filter_map(|m| m.node.as_ref())
                .map(|n| n.commit_index())
                .max()
                .unwrap_or(0);
            let behind = self
                .members
                .iter()
                .filter_map(|(id, m)| Some((*id, m.node.as_ref()?.applied_index())))
                .find(|(_, applied)| *applied < commit);
            let Some((id, applied)) = behind else {
                break;
            };
            if self.now >= settle {
                self.fail(format!(
                    "liveness: member {id} applied only up to {applied} of {commit} committed, \
                     {}s after the write was served",
                    CATCH_UP_BOUND_NS / 1_000_000_000
                ));
                break;
            }
            if self.failure.is_some() || !self.step() {
                break;
            }
        }
    }

    fn liveness_probe(&mut self, deadline: SimNanos) -> Result<(), String> {
        for (what, request) in [
            (
                "a write",
                ClientRequest::Put(PutRequest {
                    key: Bytes::from_static(b"probe"),
                    value: Bytes::from_static(b"p"),
                    ..Default::default()
                }),
            ),
            (
                "a linearizable read",
                ClientRequest::Range(RangeRequest {
                    key: Bytes::from_static(b"probe"),
                    ..Default::default()
                }),
            ),
        ] {
            loop {
                if self.now >= deadline {
                    return Err(format!("no member served {what}"));
                }
                let member = 1 + self.rng.below(self.options.members);
                let op = self.invoke(PROBE_CLIENT, member, &request);
                let rid = self.track(member, op);
                self.log(member, || format!("liveness probe op {op}: {what}"));
                self.input(
                    member,
                    Input::Client {
                        id: rid,
                        request: request.clone(),
                    },
                );
                let give_up = self.now + 2_000 * MS;
                while self.now < give_up.min(deadline)
                    && self.members[&member].requests.contains_key(&rid)
                {
                    if !self.step() {
                        break;
                    }
                    if let Some(Failure { what, .. }) = &self.failure {
                        return Err(what.clone());
                    }
                }
                if let Some(m) = self.members.get_mut(&member) {
                    m.requests.remove(&rid);
                }
                self.busy_clients.remove(&PROBE_CLIENT);
                if matches!(self.ops[op].outcome, Outcome::Ok { .. }) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// All members that applied the same index hold the same key space (HashKV).
    fn check_convergence(&mut self) {
        let mut by_index: BTreeMap<u64, (MemberId, u32)> = BTreeMap::new();
        let mut problem = None;
        for (id, m) in &self.members {
            let Some(node) = m.node.as_ref() else {
                continue;
            };
            let hash = match node.key_space().hash_kv(0, &m.cold) {
                Ok((h, _)) => h,
                Err(e) => {
                    problem = Some(format!("member {id} cannot hash its key space: {e}"));
                    continue;
                }
            };
            match by_index.get(&node.applied_index()) {
                Some((other, h)) if *h != hash => {
                    problem = Some(format!(
                        "replicas diverge: members {other} and {id} applied index {} but hash {h:08x} vs {hash:08x}",
                        node.applied_index()
                    ));
                }
                _ => {
                    by_index.insert(node.applied_index(), (*id, hash));
                }
            }
        }
        if let Some(p) = problem {
            self.fail(p);
        }
    }

    /// Every applied entry any member reported, in index order (the checker rejects holes).
    pub fn applied_log(&self) -> Vec<AppliedEntry> {
        self.applied.values().cloned().collect()
    }

    /// One line per event: time, member (m0 = the simulator itself), what happened.
    pub fn trace_text(&self) -> String {
        let mut out = String::new();
        for (at, member, what) in self.trace.iter().flatten() {
            let _ = writeln!(out, "{:>12.3}ms m{member} {what}", *at as f64 / MS as f64);
        }
        out
    }

    /// The trace as JSON lines.
    pub fn trace_json(&self) -> String {
        let mut out = String::new();
        for (at, member, what) in self.trace.iter().flatten() {
            let escaped = what.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "{{\"t_ns\":{at},\"member\":{member},\"event\":\"{escaped}\"}}"
            );
        }
        out
    }
}

fn describe(request: &ClientRequest) -> String {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match request {
        ClientRequest::Range(r) => format!(
            "range {}{}{}{}",
            text(&r.key),
            if r.range_end.is_empty() {
                String::new()
            } else {
                format!("..{}", text(&r.range_end))
            },
            if r.serializable { " serializable" } else { "" },
            if r.revision > 0 {
                format!(" @{}", r.revision)
            } else {
                String::new()
            }
        ),
        ClientRequest::Put(r) => format!("put {}={}", text(&r.key), text(&r.value)),
        ClientRequest::DeleteRange(r) => format!(
            "delete {}{}",
            text(&r.key),
            if r.range_end.is_empty() {
                String::new()
            } else {
                format!("..{}", text(&r.range_end))
            }
        ),
        ClientRequest::Txn(t) => format!(
            "txn ({} compares, {}/{} ops)",
            t.compare.len(),
            t.success.len(),
            t.failure.len()
        ),
        ClientRequest::Compact(c) => format!("compact {}", c.revision),
    }
}

fn summarize(result: &Result<ClientResponse, EtcdError>) -> String {
    match result {
        Ok(response) => format!("ok rev {}", response.revision().unwrap_or(0)),
        Err(e) => format!("error {e}"),
    }
}

/// Whether the disk runs `op` beside its queue rather than in it.
fn in_background(op: &DiskOp) -> bool {
    matches!(op, DiskOp::SaveSnapshot { file, .. } if file.may_complete_out_of_order())
}
