//! Swarm testing: every seed draws its own cluster size, fault rates and workload mix, so that a
//! run of many seeds explores combinations nobody would think to write down.

use std::fmt;
use std::time::Duration;

use detcd::node::AutoCompaction;

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Uniform draws on top of the run's seeded RNG.
pub trait Draw {
    fn below(&mut self, n: u64) -> u64;
    fn chance(&mut self, p: f64) -> bool;
    fn between(&mut self, lo: u64, hi: u64) -> u64;
}

impl Draw for ChaCha8Rng {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

const MS: u64 = 1_000_000;
/// etcd's default quota (2 GiB): no simulated run comes near it.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// detcd's default `--max-range-bytes` (gRPC's message limit): no simulated range nears it.
pub const DEFAULT_RANGE_BYTES_MAX: u64 = i32::MAX as u64;

/// Everything a seed decides before the run starts.
#[derive(Clone, Debug)]
pub struct Options {
    pub members: u64,
    pub clients: u64,
    /// Clients that hold leases: grant, keep alive, attach keys, ask TTLs, then revoke or
    /// abandon them (beside the `clients` of the KV workload).
    pub lease_clients: u64,
    /// The longest TTL a lease client asks for, in seconds (at least the 2 s minimum).
    pub lease_ttl_max_s: u64,
    /// Clients that keep watch streams: watches on keys and ranges that resume after their
    /// member fails, reading as responses come or (slow clients) only now and then.
    pub watch_clients: u64,
    /// Clients of the Lock and Election services: lock, hold, unlock or die holding; campaign,
    /// proclaim, resign.
    pub recipe_clients: u64,
    /// An operator changes the membership: adds learners, promotes them, removes members
    /// (the leader too), moves the leader.
    pub membership: bool,
    /// The leader promotes learners by itself once they are in sync.
    pub auto_promote: bool,
    /// A minority of members have bad disks: while such a member is down its synced WAL bytes
    /// may flip or be overwritten by a misdirected write, or a snapshot file may be damaged.
    pub disk_corruption: bool,
    /// Client operations issued in the safety phase.
    pub ops: u64,
    /// Distinct keys the workload touches (few, so operations collide).
    pub keys: u64,
    pub net_delay_min_ns: u64,
    pub net_delay_max_ns: u64,
    pub net_loss: f64,
    pub net_duplicate: f64,
    pub disk_latency_max_ns: u64,
    /// Chance that a crash keeps a torn part of the unsynced WAL bytes.
    pub torn_write: f64,
    /// Chance that one disk operation fails (the member stops, as the server would).
    pub disk_error: f64,
    /// Per-member clock rate error, in parts per million, at most.
    pub clock_drift_ppm_max: u64,
    /// Mean time between fault events (crash, partition, pause, clock jump...), 0 for none.
    pub fault_interval_ns: u64,
    /// Workload mix: relative weights of each operation kind.
    pub mix: Mix,
    /// Snapshot often, so snapshot install and log compaction run in short histories.
    pub snapshot_count: u64,
    /// Superseded values move to the cold segments in batches of about this many bytes
    /// (`Config::cold_batch_bytes`): at each write, or after a few writes, or (at the server's
    /// size) rarely, so that reads of the past find values in memory, in segments, and both.
    pub cold_batch_bytes: u64,
    /// Keys a slice of a compaction's release walks (`Config::compaction_slice_keys`):
    /// mostly a few, so that histories run with compactions half released (the workload's key
    /// space is small), sometimes the server's.
    pub compaction_slice_keys: usize,
    /// How often members release more of a compaction by themselves, in milliseconds
    /// (`Config::memory_release_interval`; 0: never, only entries release): off in half
    /// the runs, so that histories still end with compactions half released.
    pub compaction_release_ms: u64,
    /// The members' quota (`--quota-backend-bytes`): small in some runs, so that writes fill
    /// it and NOSPACE is raised and cleared.
    pub quota_bytes: u64,
    /// The members' `--max-range-bytes`: small in some runs, so that ranges are refused.
    pub range_bytes_max: u64,
    pub client_timeout_ns: u64,
    /// The auth workload: an administrator of users, roles and permissions, and KV clients
    /// acting as users (`world::auth_clients`).
    pub auth: bool,
    /// The members' auto compaction, on a simulated history's scale of time.
    pub auto_compaction: Option<AutoCompaction>,
    /// A deliberately injected bug, to prove the checkers catch it.
    pub bug: Option<Bug>,
}

/// The bugs the simulator must find (see sim/tests/injected_bugs.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Core: acknowledge appends and votes before they are durable.
    AckBeforeDurable,
    /// Core: serve linearizable reads locally, without ReadIndex.
    ReadWithoutReadIndex,
    /// Core: apply some committed entries twice.
    ApplyTwice,
    /// Driver: after a crash, keep appending after a torn tail instead of truncating it.
    KeepTornTail,
    /// Core: followers revoke leases on their own clocks, counting from the grant.
    FollowerLeaseExpiry,
    /// Core: a new leader restarts every lease from its full TTL (etcd without checkpoints).
    LeaseTtlReset,
    /// Core: the leader answers "not found" to a keepalive without confirming it leads and has
    /// applied what is committed.
    LeaseNotFoundUnconfirmed,
    /// Watch: catching up from the compact revision skips the events at it (etcd #18089).
    WatchDropAtCompaction,
    /// Watch: progress answers the current revision while a watcher is behind (etcd #15220).
    WatchProgressBeforeSynced,
    /// Watch: a catch-up step delivers its last revision again (etcd #17247).
    WatchDuplicateEvent,
    /// Watch: a resumed watch past the member's revision starts at the member's (etcd #15271).
    WatchBackInTime,
    /// Watch: the latest feeds' changes are kept across a gap in the feeds, so a watcher
    /// catching up through the gap misses what the left-out revisions changed.
    WatchRecentAcrossGaps,
    /// Watch: a watcher whose next revision is the compact revision is canceled as compacted.
    WatchCancelAtCompaction,
    /// Lock: a waiter takes the lock once the one key it watches is deleted, without reading
    /// whether older contenders remain.
    LockSkipRecheck,
    /// Election: Leader answers with the newest candidate instead of the oldest.
    LeaderNewest,
    /// Membership: a member restarting from a snapshot takes raft's configuration from its
    /// initial cluster instead of the snapshot.
    StaleConfAfterRestart,
    /// Key space: a limited range never reports `more` (wrong alike on every member, and in
    /// the checker's own replay of the core).
    RangeWithoutLookahead,
    /// WAL: a ready that appends entries leaves its hard state out, so term, vote and commit
    /// can go back at a restart.
    HardStateOnlyWithoutEntries,
    /// Key space: a txn compare over a range judges only its first key (reachable only by a
    /// workload that compares over ranges).
    RangeCompareFirstKeyOnly,
    /// WAL recovery takes damage inside the log for a torn tail and drops everything after it.
    DamageTakenForTornTail,
    /// Quota: the leader never clears NOSPACE once there is room again.
    SpaceAlarmLatched,
    /// Key space: a range's size against `--max-range-bytes` leaves out its cold values (those
    /// of reads of the past).
    RangeBoundSkipsColdValues,
    /// Core: the node ignores the driver's request for a fresh watch view, so watchers on a
    /// hub that let go of its view stay behind until some write comes along.
    WatchViewNotRefreshed,
    /// Core: the view serializable reads of one key are answered from counts as current while
    /// the raft term stays the same.
    LocalReadsByTermOnly,
    /// Core: a linearizable read of one key shares a read barrier its node took already, whose
    /// read index may predate the read.
    ReadRoundsJoinTaken,
    /// Core: keepalives acknowledged away from the leader's step renew any lease it holds,
    /// whether or not its committed records cover the promise.
    LocalKeepAlivesIgnoreFloor,
    /// Core: auto compaction compacts one revision more than its retention allows.
    AutoCompactionKeepsOneLess,
    /// Auth: a range is permitted when its first key is, so a user writes or reads past its
    /// permissions.
    AuthRangeAsFirstKey,
    /// Core: a JWT's identity is taken at the store's auth revision, not the token's, so a
    /// token older than a revoked permission still acts with it.
    JwtIdentityAtStoreRevision,
    /// Core: a linearizable read's sender is checked when the read arrives, by a store that
    /// may not hold yet a change acknowledged before it.
    ReaderCheckedOnArrival,
    /// Core: a snapshot decoded before it was stepped keeps its state though raft refused the
    /// snapshot, and the next install takes that state whatever snapshot raft installs.
    StaleDecodedSnapshot,
    /// Key space: a slice of a compaction's release skips the key after it, which keeps its
    /// dropped records in memory (no answer changes: only the state's invariants see it).
    ReleaseSkipsAKey,
    /// Key space: a slice of the move of a snapshot's superseded values to cold segments skips
    /// the key after it, which keeps its values in memory (only the state's invariants see it).
    CoolingSkipsAKey,
}

impl Bug {
    pub const ALL: [Bug; 33] = [
        Bug::AckBeforeDurable,
        Bug::ReadWithoutReadIndex,
        Bug::ApplyTwice,
        Bug::KeepTornTail,
        Bug::FollowerLeaseExpiry,
        Bug::LeaseTtlReset,
        Bug::LeaseNotFoundUnconfirmed,
        Bug::WatchDropAtCompaction,
        Bug::WatchProgressBeforeSynced,
        Bug::WatchDuplicateEvent,
        Bug::WatchBackInTime,
        Bug::WatchRecentAcrossGaps,
        Bug::WatchCancelAtCompaction,
        Bug::LockSkipRecheck,
        Bug::LeaderNewest,
        Bug::StaleConfAfterRestart,
        Bug::RangeWithoutLookahead,
        Bug::HardStateOnlyWithoutEntries,
        Bug::RangeCompareFirstKeyOnly,
        Bug::DamageTakenForTornTail,
        Bug::SpaceAlarmLatched,
        Bug::RangeBoundSkipsColdValues,
        Bug::WatchViewNotRefreshed,
        Bug::LocalReadsByTermOnly,
        Bug::ReadRoundsJoinTaken,
        Bug::LocalKeepAlivesIgnoreFloor,
        Bug::AutoCompactionKeepsOneLess,
        Bug::AuthRangeAsFirstKey,
        Bug::JwtIdentityAtStoreRevision,
        Bug::ReaderCheckedOnArrival,
        Bug::StaleDecodedSnapshot,
        Bug::ReleaseSkipsAKey,
        Bug::CoolingSkipsAKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::ReadWithoutReadIndex => "read-without-read-index",
            Bug::ApplyTwice => "apply-twice",
            Bug::KeepTornTail => "keep-torn-tail",
            Bug::FollowerLeaseExpiry => "follower-lease-expiry",
            Bug::LeaseTtlReset => "lease-ttl-reset",
            Bug::LeaseNotFoundUnconfirmed => "lease-not-found-unconfirmed",
            Bug::WatchDropAtCompaction => "watch-drop-at-compaction",
            Bug::WatchProgressBeforeSynced => "watch-progress-before-synced",
            Bug::WatchDuplicateEvent => "watch-duplicate-event",
            Bug::WatchBackInTime => "watch-back-in-time",
            Bug::WatchRecentAcrossGaps => "watch-recent-across-gaps",
            Bug::WatchCancelAtCompaction => "watch-cancel-at-compaction",
            Bug::LockSkipRecheck => "lock-skip-recheck",
            Bug::LeaderNewest => "leader-newest",
            Bug::StaleConfAfterRestart => "stale-conf-after-restart",
            Bug::RangeWithoutLookahead => "range-without-lookahead",
            Bug::HardStateOnlyWithoutEntries => "hard-state-only-without-entries",
            Bug::RangeCompareFirstKeyOnly => "range-compare-first-key-only",
            Bug::DamageTakenForTornTail => "damage-taken-for-torn-tail",
            Bug::SpaceAlarmLatched => "space-alarm-latched",
            Bug::RangeBoundSkipsColdValues => "range-bound-skips-cold-values",
            Bug::WatchViewNotRefreshed => "watch-view-not-refreshed",
            Bug::LocalReadsByTermOnly => "local-reads-by-term-only",
            Bug::ReadRoundsJoinTaken => "read-rounds-join-taken",
            Bug::LocalKeepAlivesIgnoreFloor => "local-keepalives-ignore-floor",
            Bug::AutoCompactionKeepsOneLess => "auto-compaction-keeps-one-less",
            Bug::AuthRangeAsFirstKey => "auth-range-as-first-key",
            Bug::JwtIdentityAtStoreRevision => "jwt-identity-at-store-revision",
            Bug::ReaderCheckedOnArrival => "reader-checked-on-arrival",
            Bug::StaleDecodedSnapshot => "stale-decoded-snapshot",
            Bug::ReleaseSkipsAKey => "release-skips-a-key",
            Bug::CoolingSkipsAKey => "cooling-skips-a-key",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[derive(Clone, Debug)]
pub struct Mix {
    pub get: u64,
    pub get_serializable: u64,
    pub range: u64,
    pub put: u64,
    pub delete: u64,
    pub txn: u64,
    pub compact: u64,
}

impl Options {
    /// The standard profile's draw for one seed.
    pub fn draw(rng: &mut ChaCha8Rng, ops: u64) -> Options {
        let members = [1, 3, 3, 3, 5, 5][rng.below(6) as usize];
        let delay_min = rng.between(100_000, 2 * MS);
        let mut options = Options {
            members,
            clients: rng.between(1, 6),
            // Drawn last (below), so that adding them left every earlier draw as it was.
            lease_clients: 0,
            lease_ttl_max_s: 0,
            watch_clients: 0,
            recipe_clients: 0,
            membership: false,
            auto_promote: false,
            disk_corruption: false,
            ops,
            keys: rng.between(1, 8),
            net_delay_min_ns: delay_min,
            net_delay_max_ns: delay_min + rng.between(0, 30 * MS),
            net_loss: [0.0, 0.01, 0.05, 0.2][rng.below(4) as usize],
            net_duplicate: [0.0, 0.01, 0.05][rng.below(3) as usize],
            disk_latency_max_ns: rng.between(10_000, 20 * MS),
            torn_write: [0.0, 0.5, 1.0][rng.below(3) as usize],
            disk_error: [0.0, 0.0, 0.001][rng.below(3) as usize],
            clock_drift_ppm_max: [0, 1_000, 50_000][rng.below(3) as usize],
            fault_interval_ns: [0, 300 * MS, 1_000 * MS, 3_000 * MS][rng.below(4) as usize],
            mix: Mix {
                get: rng.between(0, 10),
                get_serializable: rng.between(0, 4),
                range: rng.between(0, 5),
                put: rng.between(1, 10),
                delete: rng.between(0, 4),
                txn: rng.between(0, 6),
                compact: rng.between(0, 1),
            },
            snapshot_count: [5, 20, 100, 10_000][rng.below(4) as usize],
            cold_batch_bytes: 0,
            compaction_slice_keys: detcd::mvcc::RELEASE_SLICE_KEYS,
            compaction_release_ms: 100,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            range_bytes_max: DEFAULT_RANGE_BYTES_MAX,
            client_timeout_ns: rng.between(500 * MS, 5_000 * MS),
            auto_compaction: None,
            auth: false,
            bug: None,
        };
        options.lease_clients = [0, 2, 3, 5][rng.below(4) as usize];
        options.lease_ttl_max_s = rng.between(2, 6);
        options.watch_clients = [0, 1, 2, 3][rng.below(4) as usize];
        options.recipe_clients = [0, 2, 3, 5][rng.below(4) as usize];
        options.membership = rng.chance(0.3);
        options.auto_promote = rng.chance(0.5);
        // A member that refuses to start from a damaged disk stays down: only clusters whose
        // majority stays intact whatever the other faults do, and a fixed membership.
        options.disk_corruption = rng.chance(0.3) && members >= 3 && !options.membership;
        if rng.chance(0.2) {
            options.quota_bytes = rng.between(3 << 10, 16 << 10);
        }
        // Small enough that whole-keyspace ranges cross it (its boundary is where a miscounted
        // byte shows).
        if rng.chance(0.4) {
            options.range_bytes_max = rng.between(16, 400);
        }
        options.auto_compaction = match rng.below(5) {
            0 => Some(AutoCompaction::Periodic(Duration::from_millis(
                rng.between(100, 3_000),
            ))),
            1 => Some(AutoCompaction::Revision {
                keep: rng.between(1, 30) as i64,
                every: Duration::from_millis(rng.between(20, 1_000)),
            }),
            _ => None,
        };
        options.cold_batch_bytes = [0, 64, 1 << 10, 1 << 20][rng.below(4) as usize];
        options.auth = rng.chance(0.45);
        options.compaction_slice_keys =
            [1, 2, 5, detcd::mvcc::RELEASE_SLICE_KEYS][rng.below(4) as usize];
        options.compaction_release_ms = [0, 0, 10, 100, 1_000, 1_000][rng.below(6) as usize];
        options
    }
}

impl fmt::Display for Options {
    /// Every option, as `--options` reads them back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.overrides())
    }
}

impl Options {
    /// Candidates one step smaller than these options, most promising first: fewer operations,
    /// fewer clients and members, then one kind of fault switched off at a time.
    pub fn smaller(&self) -> Vec<Options> {
        let mut out = Vec::new();
        let mut push = |change: &dyn Fn(&mut Options)| {
            let mut o = self.clone();
            change(&mut o);
            if o.overrides() != self.overrides() {
                out.push(o);
            }
        };
        push(&|o| o.ops /= 2);
        push(&|o| o.ops = o.ops.saturating_sub(1).max(1));
        push(&|o| o.clients = (o.clients / 2).max(1));
        push(&|o| o.lease_clients /= 2);
        push(&|o| o.watch_clients /= 2);
        push(&|o| o.recipe_clients /= 2);
        push(&|o| o.membership = false);
        push(&|o| o.auth = false);
        push(&|o| o.disk_corruption = false);
        push(&|o| o.members = if o.members > 3 { 3 } else { o.members });
        push(&|o| o.fault_interval_ns = 0);
        push(&|o| o.net_loss = 0.0);
        push(&|o| o.net_duplicate = 0.0);
        push(&|o| o.torn_write = 0.0);
        push(&|o| o.disk_error = 0.0);
        push(&|o| o.clock_drift_ppm_max = 0);
        push(&|o| o.net_delay_max_ns = o.net_delay_min_ns);
        push(&|o| o.keys = (o.keys / 2).max(1));
        push(&|o| o.quota_bytes = DEFAULT_QUOTA_BYTES);
        push(&|o| o.range_bytes_max = DEFAULT_RANGE_BYTES_MAX);
        push(&|o| o.auto_compaction = None);
        out
    }

    /// The options as `key=value` pairs, the form `--options` reads back.
    pub fn overrides(&self) -> String {
        format!(
            "members={},clients={},lease_clients={},lease_ttl_s={},watch_clients={},recipe_clients={},\
             membership={},auto_promote={},corrupt={},ops={},keys={},\
             delay_min_us={},\
             delay_max_us={},loss={},dup={},torn={},diskerr={},drift_ppm={},faults_ms={},snap={},\
             quota={},range_max={},timeout_ms={},disk_us={},get={},ser={},range={},put={},del={},txn={},compact={},\
             autocompact={},cold_batch={},auth={},compact_slice={},compact_release_ms={}",
            self.members,
            self.clients,
            self.lease_clients,
            self.lease_ttl_max_s,
            self.watch_clients,
            self.recipe_clients,
            u8::from(self.membership),
            u8::from(self.auto_promote),
            u8::from(self.disk_corruption),
            self.ops,
            self.keys,
            in_units(self.net_delay_min_ns, 1000),
            in_units(self.net_delay_max_ns, 1000),
            self.net_loss,
            self.net_duplicate,
            self.torn_write,
            self.disk_error,
            self.clock_drift_ppm_max,
            self.fault_interval_ns / MS,
            self.snapshot_count,
            self.quota_bytes,
            self.range_bytes_max,
            in_units(self.client_timeout_ns, MS),
            in_units(self.disk_latency_max_ns, 1000),
            self.mix.get,
            self.mix.get_serializable,
            self.mix.range,
            self.mix.put,
            self.mix.delete,
            self.mix.txn,
            self.mix.compact,
            auto_compaction_text(self.auto_compaction),
            self.cold_batch_bytes,
            u8::from(self.auth),
            self.compaction_slice_keys,
            self.compaction_release_ms,
        )
    }

    /// Applies `key=value,...` pairs (as printed by `overrides`) on top of these options.
    pub fn apply_overrides(&mut self, text: &str) -> Result<(), String> {
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let int = || value.parse::<u64>().map_err(|e| format!("{key}: {e}"));
            let float = || value.parse::<f64>().map_err(|e| format!("{key}: {e}"));
            match key {
                "members" => self.members = int()?,
                "clients" => self.clients = int()?,
                "lease_clients" => self.lease_clients = int()?,
                "lease_ttl_s" => self.lease_ttl_max_s = int()?.max(2),
                "watch_clients" => self.watch_clients = int()?,
                "recipe_clients" => self.recipe_clients = int()?,
                "membership" => self.membership = int()? != 0,
                "auto_promote" => self.auto_promote = int()? != 0,
                "corrupt" => self.disk_corruption = int()? != 0,
                "ops" => self.ops = int()?,
                "keys" => self.keys = int()?.max(1),
                "delay_min_us" => self.net_delay_min_ns = parse_units(value, 1000)?,
                "delay_max_us" => self.net_delay_max_ns = parse_units(value, 1000)?,
                "loss" => self.net_loss = float()?,
                "dup" => self.net_duplicate = float()?,
                "torn" => self.torn_write = float()?,
                "diskerr" => self.disk_error = float()?,
                "drift_ppm" => self.clock_drift_ppm_max = int()?,
                "faults_ms" => self.fault_interval_ns = int()? * MS,
                "snap" => self.snapshot_count = int()?.max(1),
                "quota" => self.quota_bytes = int()?,
                "range_max" => self.range_bytes_max = int()?,
                "timeout_ms" => self.client_timeout_ns = parse_units(value, MS)?,
                "disk_us" => self.disk_latency_max_ns = parse_units(value, 1000)?.max(2000),
                "get" => self.mix.get = int()?,
                "ser" => self.mix.get_serializable = int()?,
                "range" => self.mix.range = int()?,
                "put" => self.mix.put = int()?,
                "del" => self.mix.delete = int()?,
                "txn" => self.mix.txn = int()?,
                "compact" => self.mix.compact = int()?,
                "autocompact" => self.auto_compaction = parse_auto_compaction(value)?,
                "cold_batch" => self.cold_batch_bytes = int()?,
                "auth" => self.auth = int()? != 0,
                "compact_slice" => self.compaction_slice_keys = int()?.max(1) as usize,
                "compact_release_ms" => self.compaction_release_ms = int()?,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(())
    }
}

/// `ns` in `unit`s (1,000 for microseconds, `MS` for milliseconds), with the fraction the draw
/// left, if any: printed options must replay the very history they came from.
fn in_units(ns: u64, unit: u64) -> String {
    let (whole, rest) = (ns / unit, ns % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let fraction = format!("{rest:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Reads back what [`in_units`] printed, as nanoseconds.
fn parse_units(text: &str, unit: u64) -> Result<u64, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = unit.ilog10() as usize;
    let malformed = || format!("{text:?} is not a number of units of {unit} ns");
    if fraction.len() > digits || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let whole: u64 = whole.parse().map_err(|_| malformed())?;
    let rest: u64 = format!("{fraction:0<digits$}")
        .parse()
        .map_err(|_| malformed())?;
    Ok(whole * unit + rest)
}

/// `0` (off), `p:MS` (periodic, the retention in ms) or `r:KEEP:MS` (revision: revisions kept,
/// and how often the leader looks).
fn auto_compaction_text(compaction: Option<AutoCompaction>) -> String {
    match compaction {
        None => "0".to_string(),
        Some(AutoCompaction::Periodic(retention)) => format!("p:{}", retention.as_millis()),
        Some(AutoCompaction::Revision { keep, every }) => {
            format!("r:{keep}:{}", every.as_millis())
        }
    }
}

fn parse_auto_compaction(text: &str) -> Result<Option<AutoCompaction>, String> {
    let number = |s: &str| s.parse::<u64>().map_err(|e| format!("autocompact: {e}"));
    match text.split(':').collect::<Vec<_>>()[..] {
        ["0"] => Ok(None),
        ["p", ms] => Ok(Some(AutoCompaction::Periodic(Duration::from_millis(
            number(ms)?.max(1),
        )))),
        ["r", keep, ms] => Ok(Some(AutoCompaction::Revision {
            keep: number(keep)?.max(1) as i64,
            every: Duration::from_millis(number(ms)?.max(1)),
        })),
        _ => Err(format!("autocompact: {text:?} is not 0, p:MS or r:KEEP:MS")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::draw_options;

    #[test]
    fn printed_options_read_back_as_drawn() {
        for seed in 0..200 {
            let drawn = draw_options(seed, 100);
            let mut read = draw_options(seed + 1, 7);
            read.apply_overrides(&drawn.overrides()).expect("valid");
            assert_eq!(read.overrides(), drawn.overrides());
            assert_eq!(
                (read.net_delay_min_ns, read.net_delay_max_ns),
                (drawn.net_delay_min_ns, drawn.net_delay_max_ns)
            );
            assert_eq!(read.client_timeout_ns, drawn.client_timeout_ns);
            assert_eq!(read.disk_latency_max_ns, drawn.disk_latency_max_ns);
        }
    }

    #[test]
    fn units_print_exactly_and_refuse_what_is_not_a_number() {
        assert_eq!(in_units(1_479_000, 1000), "1479");
        assert_eq!(in_units(1_479_120, 1000), "1479.12");
        assert_eq!(in_units(5_000_001, MS), "5.000001");
        assert_eq!(parse_units("1479.12", 1000), Ok(1_479_120));
        assert_eq!(parse_units("5.000001", MS), Ok(5_000_001));
        assert_eq!(parse_units("7", MS), Ok(7 * MS));
        assert!(parse_units("1.2345", 1000).is_err());
        assert!(parse_units("1.-2", 1000).is_err());
        assert!(parse_units("x", 1000).is_err());
    }
}
