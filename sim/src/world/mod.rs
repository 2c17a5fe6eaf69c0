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
    answers_locally, ClientRequest, ClientResponse, Config, DecodedSnapshot, DiskError, DiskOp,
    Input, IoId, LocalKeepAlives, LocalReads, MemberId, Node, Output, PeerMessage, ReadRounds,
    RequestId,
};
use detcd::proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use detcd::time::Instant;
use detcd::wal;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

mod auth_clients;
mod checks;
mod clients;
mod faults;
mod hub_streams;
mod kv_workload;
mod lease_clients;
mod liveness;
mod member_clients;
mod member_table;
mod network;
mod queue;
mod read_barriers;
mod recipe_clients;
mod watch_clients;

use crate::disk::SimDisk;
use crate::history::{AppliedEntry, Op, Outcome, RecipeLog, SimNanos, Timing, WatchStreamLog};
use crate::options::{Bug, Draw, Options};
use detcd::watch::{WatchBugs, WatchConfig, WatchHub};
use lease_clients::LeaseClient;
use member_table::MemberTable;
use queue::EventQueue;
use recipe_clients::{RecipeClient, RecipeRun};
use watch_clients::WatchClient;

const MS: u64 = 1_000_000;
/// How often a watch feed stands for feeds the server's slot merged past its bound.
const FEED_OVERFLOW_CHANCE: f64 = 0.02;
/// After the faults heal, a leader must be elected and serve within this bound.
pub const LIVENESS_BOUND_NS: u64 = 20_000 * MS;
/// After the liveness probe, every member must have applied everything committed within this.
const CATCH_UP_BOUND_NS: SimNanos = 5_000 * MS;
/// The client id of the liveness phase's probes.
const PROBE_CLIENT: u64 = u64::MAX;
/// The safety phase ends by this time even if clients are still busy (they then time out).
const SAFETY_PHASE_MAX_NS: u64 = 600_000 * MS;
/// How long a client request may wait at a member before it times out.
const REQUEST_TIMEOUT_NS: u64 = 3_000 * MS;
/// The members' lease checkpoint interval: short, so that runs of a few seconds exercise it.
pub const LEASE_CHECKPOINT_INTERVAL_NS: u64 = 1_000 * MS;

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
    /// Of those, installs of a snapshot decoded before its member stepped it.
    pub snapshots_installed_decoded: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    /// Answers the locks checker judged: Lock answers, Campaign answers, and leaders reported
    /// by Leader and Observe.
    pub locks_held: u64,
    pub campaigns_won: u64,
    pub leaders_reported: u64,
    /// What the run reached (see `coverage`).
    pub coverage: crate::coverage::Coverage,
}

/// A member's clock: local = offset + global * (1 + drift).
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_ns: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, global: SimNanos) -> Instant {
        // In 64 bits while the product fits (always, for runs of hours): 128-bit division is
        // a library call, and this runs for every input.
        let skew = match i64::try_from(global)
            .ok()
            .and_then(|g| g.checked_mul(self.drift_ppm))
        {
            Some(product) => product / 1_000_000,
            None => (global as i128 * self.drift_ppm as i128 / 1_000_000) as i64,
        };
        Instant::from_nanos((self.offset_ns as i128 + global as i128 + skew as i128).max(0) as u64)
    }

    /// The global time at which the local clock reads `local` (rounded up).
    fn global(&self, local: Instant) -> SimNanos {
        let local = local.as_nanos() as i128 - self.offset_ns as i128;
        let rate = 1_000_000 + self.drift_ppm as i128;
        let global = match i64::try_from(local)
            .ok()
            .and_then(|l| l.checked_mul(1_000_000))
        {
            Some(product) => (product / rate as i64) as i128,
            None => local * 1_000_000 / rate,
        };
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
    /// The commit index this incarnation last reported.
    last_commit: u64,
    /// The applied index at which this incarnation's raft configuration was last checked
    /// against its member list.
    configuration_checked_at: Option<u64>,
    /// The view serializable reads of one key are answered from (as the server's client-port
    /// workers answer them), refreshed after each of the node's batches.
    local_reads: LocalReads,
    /// Such a read came since the last batch.
    reads_wanted: bool,
    /// The node's batches so far, and the read barrier linearizable reads of one key may share
    /// while the node has not taken it (`read_barriers`).
    batches: u64,
    rounds: ReadRounds<RequestId>,
    /// The reads waiting for each barrier asked and not answered yet.
    barrier_reads: BTreeMap<RequestId, read_barriers::BarrierReads>,
    /// The copy of the lease table keepalives the leader's records cover are acknowledged
    /// from (as the server's client-port workers acknowledge them), and the renewals made
    /// since the last batch.
    local_keepalives: LocalKeepAlives,
    /// The watch hub of the running incarnation, fed by its node while a stream is open.
    hub: WatchHub,
    /// A stream is being opened on a hub that had none: the node is woken for a fresh feed
    /// first, as the server's watch service does.
    stream_opening: bool,
    /// Streams their clients left whose close has not reached the hub yet (`hub_streams`).
    late_closes: Vec<u64>,
    /// A wake for a fresh view is on its way to the node (`hub_streams`).
    wake_pending: bool,
    /// What the last incarnation promised would survive its crash; checked at the restart.
    promise: Option<DurablePromise>,
    /// The disk was damaged since the member last started: it may refuse to start.
    damaged: bool,
}

/// A member's durable state as it believed it at a crash: its last synced hard state and the
/// last log entry (index, term) raft counted as durable.
struct DurablePromise {
    hard_state: raft::eraftpb::HardState,
    log_tip: (u64, u64),
}

impl Member {
    /// A member that has not started yet, with an empty disk.
    fn new(config: Config, clock: Clock, join_taken_rounds: bool) -> Member {
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
            configuration_checked_at: None,
            local_reads: LocalReads::default(),
            reads_wanted: false,
            batches: 0,
            rounds: ReadRounds::new(join_taken_rounds),
            barrier_reads: BTreeMap::new(),
            local_keepalives: LocalKeepAlives::default(),
            hub: WatchHub::new(WatchConfig::new(0, 0)),
            stream_opening: false,
            late_closes: Vec::new(),
            wake_pending: false,
            promise: None,
            damaged: false,
        }
    }
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
    /// The member's hub has a stream and no view: its node is woken for one, as the server's
    /// watch thread wakes the driver (`hub_streams.rs`).
    WakeForView {
        member: MemberId,
        incarnation: u64,
    },
    ClientNext {
        client: u64,
    },
    WatchTurn {
        client: u64,
    },
    RecipeTurn {
        client: u64,
    },
    RecipeAdvance {
        run: u64,
    },
    RecipeGiveUp {
        run: u64,
    },
    MembershipTurn,
    /// The auth workload's administrator sends its next request.
    AuthTurn,
    Hashed {
        member: MemberId,
        incarnation: u64,
        revision: i64,
        hash: u32,
    },
    /// A read barrier reaches the member's node.
    ReadBarrier {
        member: MemberId,
        incarnation: u64,
        barrier: RequestId,
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
/// A fault or a recovery at one moment: `member` 0 is the whole network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMark {
    pub at: SimNanos,
    pub member: MemberId,
    pub what: FaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Crash,
    Start,
    RefusedToStart,
    Pause,
    Resume,
    Partition,
    Clog,
    LinksHealed,
    ClockJump,
    DiskDamage,
}

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
    members: MemberTable<Member>,
    /// What happens next, earliest first (ties in the order scheduled).
    events: EventQueue<Event>,
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
    /// What the lease checker needs to know of time: when entries were applied, leaders
    /// elected, members started, clocks jumped.
    pub timing: Timing,
    lease_clients: BTreeMap<u64, LeaseClient>,
    /// Every lease id a grant answered, for KV clients to attach keys to.
    leases_granted: Vec<i64>,
    /// Revocations (id) and expiries (id, generation) some member applied, in log order.
    leases_ended: Vec<(i64, Option<u64>)>,
    /// Grants (id) some member applied, each with the length of `leases_ended` then: the
    /// lease it started (if the grant did not fail) ends at one of the entries after that.
    lease_grants_applied: Vec<(i64, usize)>,
    watch_clients: BTreeMap<u64, WatchClient>,
    /// Every watch stream any client opened, as the client saw it.
    pub watch_logs: Vec<WatchStreamLog>,
    next_stream: u64,
    recipe_clients: BTreeMap<u64, RecipeClient>,
    /// Lock and Election requests in progress.
    recipe_runs: BTreeMap<u64, RecipeRun>,
    next_run: u64,
    /// Which run each op of a recipe belongs to, until answered.
    recipe_ops: BTreeMap<usize, u64>,
    /// Every Lock and Election request, as its client saw it.
    pub recipe_logs: Vec<RecipeLog>,
    pub counters: Counters,
    pub trace_hash: u64,
    /// (time, member, what happened); kept only when tracing.
    pub trace: Option<Vec<(SimNanos, MemberId, String)>>,
    faults_on: bool,
    pub failure: Option<Failure>,
    /// Every fault and recovery, in time order, for the failure report's timeline.
    pub fault_marks: Vec<FaultMark>,
    /// Members the cluster removed: they never run again.
    removed: BTreeSet<MemberId>,
    /// The minority of members whose disks damage what they hold (`Options::disk_corruption`).
    bad_disks: BTreeSet<MemberId>,
    /// Members that found their disk damaged and refused to start: down for good.
    refused: BTreeSet<MemberId>,
    /// Peer URLs given to members the operator added so far.
    next_joiner: u64,
    /// What each user last logged in with: the simple token the administrator got, or the
    /// identity of a JWT (as the client port would pass it on once it verified the token).
    auth_tokens: BTreeMap<String, detcd::api::Credentials>,
    auth_logins: u64,
    /// Steps of the administrator's setup answered so far.
    auth_setup_done: usize,
}

impl World {
    pub fn new(seed: u64, options: Options, trace: bool) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0fd_e7cd);
        let peers: Vec<MemberId> = (1..=options.members).collect();
        let mut members = MemberTable::new();
        for &id in &peers {
            let mut config = Config::new(id, peers.clone());
            config.observe = true;
            config.snapshot_count = options.snapshot_count;
            config.snapshot_catchup_entries = options.snapshot_count / 2;
            config.cold_batch_bytes = options.cold_batch_bytes;
            config.compaction_slice_keys = options.compaction_slice_keys;
            config.memory_release_interval = (options.compaction_release_ms > 0)
                .then(|| std::time::Duration::from_millis(options.compaction_release_ms));
            config.request_timeout = std::time::Duration::from_nanos(REQUEST_TIMEOUT_NS);
            config.lease_checkpoint_interval =
                std::time::Duration::from_nanos(LEASE_CHECKPOINT_INTERVAL_NS);
            config.auto_promote_learners = options.auto_promote;
            config.quota_bytes = options.quota_bytes;
            config.max_range_bytes = options.range_bytes_max;
            config.auto_compaction = options.auto_compaction;
            config.bugs = detcd::node::Bugs {
                ack_before_durable: options.bug == Some(Bug::AckBeforeDurable),
                read_without_read_index: options.bug == Some(Bug::ReadWithoutReadIndex),
                apply_twice: options.bug == Some(Bug::ApplyTwice),
                follower_lease_expiry: options.bug == Some(Bug::FollowerLeaseExpiry),
                lease_ttl_reset_on_leader_change: options.bug == Some(Bug::LeaseTtlReset),
                lease_not_found_unconfirmed: options.bug == Some(Bug::LeaseNotFoundUnconfirmed),
                stale_conf_after_restart: options.bug == Some(Bug::StaleConfAfterRestart),
                hard_state_only_without_entries: options.bug
                    == Some(Bug::HardStateOnlyWithoutEntries),
                space_alarm_latched: options.bug == Some(Bug::SpaceAlarmLatched),
                watch_view_not_refreshed: options.bug == Some(Bug::WatchViewNotRefreshed),
                local_reads_by_term_only: options.bug == Some(Bug::LocalReadsByTermOnly),
                local_keepalives_ignore_floor: options.bug == Some(Bug::LocalKeepAlivesIgnoreFloor),
                auto_compaction_keeps_one_less: options.bug
                    == Some(Bug::AutoCompactionKeepsOneLess),
                signed_identity_at_store_revision: options.bug
                    == Some(Bug::JwtIdentityAtStoreRevision),
                reader_checked_on_arrival: options.bug == Some(Bug::ReaderCheckedOnArrival),
                stale_decoded_snapshot: options.bug == Some(Bug::StaleDecodedSnapshot),
                key_space: key_space_bugs(options.bug),
                auth: detcd::auth::AuthBugs {
                    range_as_first_key: options.bug == Some(Bug::AuthRangeAsFirstKey),
                },
            };
            let drift = options.clock_drift_ppm_max as i64;
            let clock = Clock {
                offset_ns: rng.below(10_000 * MS),
                drift_ppm: rng.below(2 * drift as u64 + 1) as i64 - drift,
            };
            members.insert(
                id,
                Member::new(config, clock, options.bug == Some(Bug::ReadRoundsJoinTaken)),
            );
        }
        // The workload's operations and the probes and retries beyond them, without the
        // history's copies as it grows.
        let ops = Vec::with_capacity(options.ops as usize * 2);
        let mut world = World {
            seed,
            options,
            rng,
            now: 0,
            members,
            events: EventQueue::new(),
            cut: BTreeSet::new(),
            clogged: BTreeMap::new(),
            ops,
            issued: 0,
            next_request: 0,
            busy_clients: BTreeMap::new(),
            revision_seen: 1,
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            timing: Timing::default(),
            lease_clients: BTreeMap::new(),
            leases_granted: Vec::new(),
            leases_ended: Vec::new(),
            lease_grants_applied: Vec::new(),
            watch_clients: BTreeMap::new(),
            watch_logs: Vec::new(),
            next_stream: 0,
            recipe_clients: BTreeMap::new(),
            recipe_runs: BTreeMap::new(),
            next_run: 0,
            recipe_ops: BTreeMap::new(),
            recipe_logs: Vec::new(),
            counters: Counters::default(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            trace: trace.then(Vec::new),
            faults_on: true,
            failure: None,
            removed: BTreeSet::new(),
            bad_disks: BTreeSet::new(),
            refused: BTreeSet::new(),
            fault_marks: Vec::new(),
            next_joiner: 0,
            auth_tokens: BTreeMap::new(),
            auth_logins: 0,
            auth_setup_done: 0,
        };
        if world.options.disk_corruption {
            let bad = (peers.len() - 1) / 2;
            while world.bad_disks.len() < bad {
                let id = peers[world.rng.below(peers.len() as u64) as usize];
                world.bad_disks.insert(id);
            }
        }
        for id in peers {
            world.start(id);
        }
        let (kv_clients, lease_clients) = (world.options.clients, world.options.lease_clients);
        for client in kv_clients..kv_clients + lease_clients {
            world.lease_clients.insert(client, LeaseClient::default());
        }
        for client in 0..kv_clients + lease_clients {
            let at = world.rng.below(50 * MS);
            world.schedule(at, Event::ClientNext { client });
        }
        let first_watcher = kv_clients + lease_clients;
        for client in first_watcher..first_watcher + world.options.watch_clients {
            let watch_client = world.new_watch_client();
            world.watch_clients.insert(client, watch_client);
            let at = world.rng.below(100 * MS);
            world.schedule(at, Event::WatchTurn { client });
        }
        let first_recipe_client = first_watcher + world.options.watch_clients;
        for client in first_recipe_client..first_recipe_client + world.options.recipe_clients {
            let recipe_client = world.new_recipe_client();
            world.recipe_clients.insert(client, recipe_client);
            let at = world.rng.below(100 * MS);
            world.schedule(at, Event::RecipeTurn { client });
        }
        if world.options.membership {
            world.schedule_membership_turn();
        }
        if world.options.auth {
            world.schedule_auth_turn();
        }
        world.timing.drift_ppm_max = world.options.clock_drift_ppm_max;
        world.timing.checkpoint_interval_ns = LEASE_CHECKPOINT_INTERVAL_NS;
        world.timing.request_timeout_ns = REQUEST_TIMEOUT_NS;
        world.timing.message_delay_max_ns = world.options.net_delay_max_ns + faults::CLOG_MAX_NS;
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
        self.events.push(at, event);
    }

    fn mark(&mut self, member: MemberId, what: FaultKind) {
        self.fault_marks.push(FaultMark {
            at: self.now,
            member,
            what,
        });
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

    /// The replicated state every member starts from: the initial members, nothing else.
    pub fn initial_state(&self) -> detcd::state::State {
        let first = self
            .members
            .values()
            .next()
            .expect("a member")
            .config
            .clone();
        let members = detcd::members::Members::bootstrap(first.cluster_id, first.initial_members);
        let mut state = detcd::state::State::bootstrap(members);
        // The checker replays the log on the core's own code, bugs and all: only the reference
        // model can tell.
        state.inject_bugs(first.bugs.key_space, first.bugs.auth);
        state
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
        if self.removed.contains(&id) || self.refused.contains(&id) {
            return;
        }
        let now = self.now;
        let seed = self.rng.next_u64();
        let member = self.members.get_mut(&id).expect("member");
        let bugs = wal::RecoveryBugs {
            damage_taken_for_torn_tail: self.options.bug == Some(Bug::DamageTakenForTornTail),
        };
        let recovered = match wal::recover_with(&member.disk.image(), bugs) {
            Ok(r) => r,
            Err(e) if member.damaged => {
                // Refusing to start is the right answer to a damaged disk; the majority
                // carries on without this member.
                self.refused.insert(id);
                self.mark(id, FaultKind::RefusedToStart);
                self.counters.coverage.hit("recovery.corruption-refused");
                self.log(id, || {
                    format!("refuses to start from its damaged disk: {e}")
                });
                return;
            }
            Err(e) => {
                let what = format!("member {id} cannot recover its disk: {e:?}");
                self.fail(what);
                return;
            }
        };
        if !recovered.unusable_snapshots.is_empty() {
            self.counters.coverage.hit("recovery.snapshot-set-aside");
        }
        member.damaged = false;
        if recovered.torn_tail_bytes > 0 {
            self.counters.coverage.hit("recovery.torn-tail-truncated");
        }
        if recovered.snapshot.is_some() {
            self.counters.coverage.hit("recovery.from-snapshot");
        }
        if let Some(broken) = member.promise.take().and_then(|p| p.broken_by(&recovered)) {
            self.fail(format!(
                "member {id} restarted with less than it promised: {broken}"
            ));
            return;
        }
        // The driver truncates a torn tail before appending again (docs/wal.md); the injected
        // bug forgets to, so new records land after the garbage.
        if self.options.bug != Some(Bug::KeepTornTail) {
            let valid = (recovered.wal_end_offset - member.disk.wal_start_offset) as usize;
            member.disk.wal.truncate(valid);
            member.disk.synced_len = member.disk.synced_len.min(valid);
        }
        member.incarnation += 1;
        count_catch_up_reads(&mut self.counters, &member.hub);
        member.hub = WatchHub::new(watch_config(id, self.options.bug));
        member.late_closes.clear();
        member.wake_pending = false;
        self.timing.started_at.entry(id).or_default().push(now);
        self.fault_marks.push(FaultMark {
            at: now,
            member: id,
            what: FaultKind::Start,
        });
        member.paused = false;
        member.deferred.clear();
        member.timer_at = None;
        member.last_commit = 0;
        member.configuration_checked_at = None;
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

    /// Closes `id`'s pause, if one is open: on resume, or on a crash (what it held is lost).
    fn pause_ended(&mut self, id: MemberId) {
        let now = self.now;
        if let Some(last) = self.timing.pauses.get_mut(&id).and_then(|p| p.last_mut()) {
            if last.1 == SimNanos::MAX {
                last.1 = now;
            }
        }
    }

    fn crash(&mut self, id: MemberId) {
        let torn = self.options.torn_write > 0.0 && self.rng.chance(self.options.torn_write);
        let member = self.members.get_mut(&id).expect("member");
        let Some(node) = member.node.take() else {
            return;
        };
        let (hard_state, log_tip) = node.durable_promise();
        member.promise = Some(DurablePromise {
            hard_state,
            log_tip,
        });
        member.deferred.clear();
        member.paused = false;
        member.local_reads.clear();
        member.reads_wanted = false;
        member.barrier_reads.clear();
        member.rounds.clear();
        member.local_keepalives.clear();
        self.pause_ended(id);
        let member = self.members.get_mut(&id).expect("member");
        member.cold = MemoryColdStore::default();
        let tore = member.disk.crash(&mut self.rng, torn);
        let damage = (self.bad_disks.contains(&id) && self.rng.chance(0.5))
            .then(|| member.disk.damage(&mut self.rng))
            .flatten();
        member.damaged |= damage.is_some();
        let lost: Vec<usize> = std::mem::take(&mut member.requests).into_values().collect();
        for op in lost {
            self.ops[op].outcome = Outcome::Unknown;
            self.client_done(op);
        }
        self.recipes_crashed(id);
        self.counters.crashes += 1;
        self.counters.torn_writes += u64::from(tore);
        self.mark(id, FaultKind::Crash);
        if let Some(kind) = damage {
            self.mark(id, FaultKind::DiskDamage);
            self.counters.coverage.hit(kind);
            self.log(id, || format!("disk damage: {kind}"));
        }
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
        // A paused process's watch task is paused too; resuming wakes the member.
        let hub_due = member.hub.next_deadline().filter(|_| !member.paused);
        let due = [node.poll_timeout(), hub_due];
        if let Some(local) = due.into_iter().flatten().min() {
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
        let local = member.clock.local(now);
        let watched = member.watched() || member.stream_opening;
        let Member {
            node,
            deferred,
            hub,
            stream_opening,
            local_reads,
            reads_wanted,
            local_keepalives,
            batches,
            ..
        } = member;
        let Some(node) = node.as_mut() else {
            return;
        };
        // As the server's driver does before each batch, once its time is read: the renewals
        // acknowledged away from the node, no feeds (and no views of the key space) while
        // nobody watches, and a fresh view for a stream that opens on a hub without one.
        local_keepalives.hand_over(node);
        node.set_watched(watched);
        if *stream_opening || hub.needs_view() {
            node.refresh_watch_view();
        }
        *batches += 1;
        node.handle_batch(local, deferred.drain(..).chain([input]));
        node.check_invariants();
        // As the driver does after each batch, before its messages and answers leave.
        local_reads.refresh(node, std::mem::take(reads_wanted));
        local_keepalives.refresh(node);
        self.observe_raft(id);
        self.drain(id);
        self.arm_timer(id);
        self.watch_tick(id, local);
        self.late_closes_may_arrive(id);
    }

    /// The catch-up reads of the hubs still up at the end of the run, as coverage (those of
    /// hubs gone with a restart were counted then).
    pub(crate) fn count_live_catch_up_reads(&mut self) {
        for member in self.members.values() {
            count_catch_up_reads(&mut self.counters, &member.hub);
        }
    }

    /// Progress notifications: after each of the member's inputs, and at the hub's own
    /// deadline (`arm_timer` wakes the member for it, as the server's watch task has a timer).
    fn watch_tick(&mut self, id: MemberId, local: Instant) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.hub.next_deadline().is_some_and(|due| due <= local) {
            member.hub.tick(local);
            self.watchers_read(id);
        }
    }

    fn drain(&mut self, id: MemberId) {
        loop {
            let Some(member) = self.members.get_mut(&id) else {
                return;
            };
            let Some(mut output) = member.node.as_mut().and_then(|n| n.poll_output()) else {
                return;
            };
            output
                .resolve(&member.cold)
                .expect("the cold values an output needs are in the member's segments");
            match output {
                Output::Send { to, msg } => self.send(id, to, msg),
                Output::SendSnapshot { .. } => unreachable!("resolved when polled"),
                Output::Disk { io, op } => self.disk_op(id, io, op),
                Output::Cold(op) => member.cold.apply(&op),
                Output::Reply {
                    id: rid, result, ..
                } => self.reply(id, rid, result.map(|response| *response)),
                Output::Proposed {
                    id: rid,
                    origin,
                    proposal,
                } => {
                    if let Some(&op) = self.members[&id].requests.get(&rid) {
                        self.ops[op].proposal = Some((origin, proposal));
                    }
                }
                Output::Applied { index, term, data } => self.applied(id, index, term, data),
                Output::Members(_) | Output::Free(_) => {}
                Output::HashAt { revision, view } => {
                    // Computed at once; delivered back like any input, a little later.
                    let (hash, _) = view
                        .hash_kv(revision, &member.cold)
                        .expect("a compaction revision can be hashed");
                    let incarnation = member.incarnation;
                    let at = self.now + MS;
                    self.schedule(
                        at,
                        Event::Hashed {
                            member: id,
                            incarnation,
                            revision,
                            hash,
                        },
                    );
                }
                Output::Watch(mut feed) => {
                    if self.rng.chance(FEED_OVERFLOW_CHANCE) {
                        // The server's feed slot merged more revisions than it keeps while
                        // the watch thread was busy: it hands over the latest view, a gap.
                        feed.revisions.clear();
                        feed.gap = true;
                        self.counters.coverage.hit("fault.watch-feeds-overflowed");
                    }
                    // The hub reads the view's cold values as they were when the feed left.
                    let local = member.clock.local(self.now);
                    let cold = Box::new(member.cold.clone());
                    member.hub.feed(local, feed, cold);
                    self.watchers_read(id);
                    self.recipes_read(id);
                }
                Output::Stopped {
                    reason: detcd::node::StopReason::Removed,
                } => {
                    self.log(id, || "stopped: removed from the cluster".to_string());
                    self.removed.insert(id);
                    self.crash(id);
                    return;
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
    // The run
    // -----------------------------------------------------------------------------------------

    /// A peer's message as the node gets it: a snapshot, half the time, decoded first, as the
    /// server's driver decodes it off the node's thread (`node::DecodedSnapshot`).
    fn peer_input(&mut self, from: MemberId, msg: PeerMessage) -> Input {
        if !DecodedSnapshot::carries_snapshot(&msg) || self.rng.below(2) == 0 {
            return Input::Peer { from, msg };
        }
        let PeerMessage::Raft(msg) = msg else {
            unreachable!("a snapshot is a raft message");
        };
        let snapshot = Box::new(DecodedSnapshot::decode(msg));
        Input::DecodedSnapshot { from, snapshot }
    }

    fn step(&mut self) -> bool {
        let Some((at, event)) = self.events.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        self.counters.events += 1;
        match event {
            Event::Deliver { from, to, msg } => {
                if !self.cut.contains(&(from, to)) && self.members[&to].node.is_some() {
                    // A paused process's socket buffers the message until it resumes: `input`
                    // defers it.
                    self.mix(from ^ (to << 8));
                    let input = self.peer_input(from, msg);
                    self.input(to, input);
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
                        // The hub's progress notifications are due, or the node's deadline
                        // moved later since this wake-up was scheduled.
                        if self.node(member).is_some() && !self.members[&member].paused {
                            self.watch_tick(member, local);
                        }
                        self.arm_timer(member);
                    }
                }
            }
            Event::WakeForView {
                member,
                incarnation,
            } => self.wake_for_view(member, incarnation),
            Event::ClientNext { client } => self.client_next(client),
            Event::WatchTurn { client } => self.watch_client_turn(client),
            Event::RecipeTurn { client } => self.recipe_turn(client),
            Event::RecipeAdvance { run } => self.recipe_advance(run),
            Event::RecipeGiveUp { run } => self.recipe_give_up(run),
            Event::MembershipTurn => self.membership_turn(),
            Event::AuthTurn => self.auth_turn(),
            Event::Hashed {
                member,
                incarnation,
                revision,
                hash,
            } => {
                if self.members[&member].incarnation == incarnation
                    && self.members[&member].node.is_some()
                {
                    self.input(member, Input::Hashed { revision, hash });
                }
            }
            Event::ClientGiveUp { op } => self.client_give_up(op),
            Event::ReadBarrier {
                member,
                incarnation,
                barrier,
            } => self.ask_read_barrier(member, incarnation, barrier),
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
            self.lease_phase();
        }
        if self.failure.is_none() {
            self.check_log_matching();
            // A member restarted at the very end (the lease phase's leader) writes the cold
            // values its key space points at with its first batch, as the server's does
            // before it answers anything; the hash reads them.
            for id in self.member_ids() {
                if self.node(id).is_some() {
                    self.input(id, Input::Tick);
                }
            }
            self.check_convergence();
        }
        self.timing.end = self.now;
    }

    /// How many client operations (KV, lease, and lock or election runs) the workload issued.
    pub fn issued(&self) -> u64 {
        self.issued
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

/// The catch-up reads of a hub about to go (its member restarts, or the run ends), as coverage.
fn count_catch_up_reads(counters: &mut Counters, hub: &WatchHub) {
    let (from_recent, from_key_space) = hub.catch_up_reads();
    counters
        .coverage
        .hit_n("watch.catch-up-from-recent-feeds", from_recent);
    counters
        .coverage
        .hit_n("watch.catch-up-from-key-space", from_key_space);
}

/// A member's watch hub: small queues, so that streams fill up and watchers catch up often,
/// and the injected watch bug, if any.
fn watch_config(member: MemberId, bug: Option<Bug>) -> WatchConfig {
    let mut config = WatchConfig::new(0x1000, member);
    config.queue_responses_max = 4;
    config.queue_bytes_max = 4 << 10;
    config.queued_bytes_total_max = 16 << 10;
    config.fragment_bytes = 512;
    config.response_bytes_target = 256;
    config.catch_up_revisions_max = 5;
    // A few feeds' worth, so that catch-up reads come from the latest feeds and from the key
    // space alike.
    config.recent_changes_bytes_max = 2 << 10;
    config.catch_up_reads_bytes_max = 2 << 10;
    config.progress_interval = std::time::Duration::from_millis(300);
    config.bugs = WatchBugs {
        drop_at_compaction_boundary: bug == Some(Bug::WatchDropAtCompaction),
        progress_before_synced: bug == Some(Bug::WatchProgressBeforeSynced),
        duplicate_after_catch_up: bug == Some(Bug::WatchDuplicateEvent),
        start_at_local_revision: bug == Some(Bug::WatchBackInTime),
        recent_changes_across_gaps: bug == Some(Bug::WatchRecentAcrossGaps),
        cancel_at_compaction_boundary: bug == Some(Bug::WatchCancelAtCompaction),
    };
    config
}

/// The key space's share of an injected bug.
fn key_space_bugs(bug: Option<Bug>) -> detcd::mvcc::KeySpaceBugs {
    detcd::mvcc::KeySpaceBugs {
        range_without_lookahead: bug == Some(Bug::RangeWithoutLookahead),
        range_compare_first_key_only: bug == Some(Bug::RangeCompareFirstKeyOnly),
        range_bound_skips_cold_values: bug == Some(Bug::RangeBoundSkipsColdValues),
        release_skips_a_key: bug == Some(Bug::ReleaseSkipsAKey),
        cooling_skips_a_key: bug == Some(Bug::CoolingSkipsAKey),
    }
}
