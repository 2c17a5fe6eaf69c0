//! Member configuration, with etcd's defaults.

use std::time::Duration;

use super::compaction::AutoCompaction;
use super::types::MemberId;
use crate::proto::etcdserverpb::Member;

#[derive(Clone, Debug)]
pub struct Config {
    pub id: MemberId,
    pub cluster_id: u64,
    /// Every voting member of the initial cluster, including `id`.
    pub peers: Vec<MemberId>,
    /// The initial cluster as `MemberList` first reports it: ids (those of `peers`), names and
    /// peer URLs. For a member that joins, the list it was given when it joined, which it
    /// answers MemberList with until the leader's snapshot arrives.
    pub initial_members: Vec<Member>,
    /// Join a running cluster (etcd's `--initial-cluster-state existing`): a member with an
    /// empty disk starts with no configuration and waits for the leader's snapshot.
    pub join: bool,
    /// What this member publishes about itself once it runs (etcd's `--name` and
    /// `--advertise-client-urls`).
    pub name: String,
    pub client_urls: Vec<String>,
    /// Refuse membership changes that could cost the cluster its quorum (etcd's
    /// `--strict-reconfig-check`, on by default).
    pub strict_reconfig_check: bool,
    /// The leader promotes a learner itself once it is in sync (etcd has only an open PR
    /// for this; off by default, as etcd's learners wait for `member promote`).
    pub auto_promote_learners: bool,
    /// Learners a `member add --learner` may bring the cluster to. etcd: `--max-learners` 1.
    pub max_learners: usize,
    /// A member alone in its cluster's configuration campaigns as soon as it starts, instead
    /// of after an election timeout (etcd's `--initial-election-tick-advance`, on by default).
    pub initial_election_tick_advance: bool,
    /// One raft tick. etcd: `--heartbeat-interval` 100 ms.
    pub heartbeat_interval: Duration,
    /// etcd: `--election-timeout` 1000 ms; must be a multiple of the heartbeat interval.
    pub election_timeout: Duration,
    /// Applied entries between snapshots, at least (see `Node::maybe_snapshot` for the other
    /// condition). etcd 3.6: `--snapshot-count` 10,000.
    pub snapshot_count: u64,
    /// Log entries kept behind a snapshot for slow followers. etcd: 5,000.
    pub snapshot_catchup_entries: u64,
    /// Superseded values move out of memory to the cold segments once about this many bytes
    /// of them wait, in key order (`mvcc::cold`). detcd's own; the simulator draws small ones.
    pub cold_batch_bytes: u64,
    /// Keys a slice of a compaction's dropped records holds at most (`mvcc::RELEASE_SLICE_KEYS`):
    /// a member releases one each time it applies entries, and a few per release interval.
    /// detcd's own; the simulator draws small ones.
    pub compaction_slice_keys: usize,
    /// How often a member releases more of a compaction's dropped records (or moves more of a
    /// snapshot's superseded values to cold segments) by itself, besides the slice it releases
    /// each time it applies entries, so that an idle member does not keep them until writes
    /// come; `None`: only applying releases them. detcd's own; the simulator
    /// draws it.
    pub memory_release_interval: Option<Duration>,
    /// Largest proposal accepted. etcd: `--max-request-bytes` 1.5 MiB.
    pub max_request_bytes: usize,
    /// etcd: `--max-txn-ops` 128.
    pub max_txn_ops: usize,
    /// Largest total of keys and values a Range answers with (`mvcc::kv_bytes`); past it,
    /// `RangeTooLarge`. detcd's own `--max-range-bytes`; the default, 2 GiB - 1, is the gRPC
    /// message limit etcd answers within.
    pub max_range_bytes: u64,
    /// How long a request may wait before `etcdserver: request timed out`. etcd: 5 s plus two
    /// election timeouts.
    pub request_timeout: Duration,
    /// Key-space size past which writes that add data are refused with `etcdserver: mvcc:
    /// database space exceeded`. etcd: `--quota-backend-bytes`, 2 GiB by default.
    pub quota_bytes: u64,
    /// Client requests waiting at once; past it new ones get `etcdserver: too many requests`.
    pub pending_requests_max: usize,
    /// Largest raft append message. raft-rs counts entry bytes.
    pub raft_message_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub raft_inflight_messages_max: usize,
    /// How long the leader lets a lease go without recording its remaining TTL through raft;
    /// bounds how much a restart or a long partition can extend a lease (`lease::clock`).
    /// etcd's `--experimental-lease-checkpoint-interval` is 5 minutes and off by default.
    pub lease_checkpoint_interval: Duration,
    /// How long a simple auth token lives after its last use (`--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// Expired leases the leader revokes per second at most. etcd: 1,000.
    pub lease_revokes_per_sec: u64,
    /// What the leader compacts on its own; etcd's default is nothing.
    pub auto_compaction: Option<AutoCompaction>,
    /// Emit `Output::Proposed` and `Output::Applied`, which the simulator's checkers read.
    pub observe: bool,
    /// Deliberate bugs, for proving that the simulator catches them. All off unless a test
    /// turns one on; nothing in the server can.
    pub bugs: Bugs,
}

/// Deliberately wrong behaviours the simulator must catch, all off by default. They are
/// compiled into every build, so that the server the tests run is the server that ships.
#[derive(Clone, Debug, Default)]
pub struct Bugs {
    /// Send votes and append acknowledgements before the write they promise is durable.
    pub ack_before_durable: bool,
    /// Serve linearizable reads from the local key space, without ReadIndex.
    pub read_without_read_index: bool,
    /// Apply some committed entries twice.
    pub apply_twice: bool,
    /// Followers revoke leases on their own clocks, counting from the grant (they do not see
    /// the leader's renewals).
    pub follower_lease_expiry: bool,
    /// A new leader restarts every lease from its full TTL, as etcd without checkpoints does.
    pub lease_ttl_reset_on_leader_change: bool,
    /// The leader answers "not found" to a keepalive from its state as it is, without first
    /// confirming with a read index that it leads and has applied everything committed.
    pub lease_not_found_unconfirmed: bool,
    /// A member restarting from a snapshot takes raft's configuration from its initial
    /// cluster rather than from the snapshot (so it forgets every membership change before it).
    pub stale_conf_after_restart: bool,
    /// A ready that appends entries leaves its hard state (term, vote, commit) out of the WAL.
    pub hard_state_only_without_entries: bool,
    /// The leader never clears NOSPACE once there is room again (etcd's latched alarm).
    pub space_alarm_latched: bool,
    /// The node ignores a request for a fresh watch view (`Node::refresh_watch_view`), so a
    /// stream opened on a hub that let go of its view waits for the next write to catch up.
    pub watch_view_not_refreshed: bool,
    /// The view serializable reads of one key are answered from away from the node counts as
    /// current for as long as the raft term stays the same, whatever the node applied since.
    pub local_reads_by_term_only: bool,
    /// Keepalives acknowledged away from the node's step renew any lease the leader holds,
    /// whether or not its committed records cover the promise.
    pub local_keepalives_ignore_floor: bool,
    /// Auto compaction compacts one revision more than its retention allows.
    pub auto_compaction_keeps_one_less: bool,
    /// A JWT's identity is taken at the store's current auth revision instead of the token's,
    /// so a token issued before a permission was revoked still acts with it.
    pub signed_identity_at_store_revision: bool,
    /// A linearizable read's sender is checked when the read arrives, by a store that may not
    /// hold yet a change acknowledged before it (etcd checks once the read index is applied).
    pub reader_checked_on_arrival: bool,
    /// A snapshot decoded before it was stepped keeps its state though raft refused the
    /// snapshot, and the next install takes that state whatever snapshot raft installs.
    pub stale_decoded_snapshot: bool,
    /// Bugs in the key space itself, wrong the same way on every member.
    pub key_space: crate::mvcc::KeySpaceBugs,
    /// Bugs in the auth store, wrong the same way on every member.
    pub auth: crate::auth::AuthBugs,
}

impl Config {
    pub fn new(id: MemberId, peers: Vec<MemberId>) -> Config {
        let heartbeat_interval = Duration::from_millis(100);
        let election_timeout = Duration::from_millis(1000);
        Config {
            id,
            cluster_id: 0x1000,
            initial_members: peers
                .iter()
                .map(|&id| Member {
                    id,
                    ..Member::default()
                })
                .collect(),
            join: false,
            name: String::new(),
            client_urls: Vec::new(),
            strict_reconfig_check: true,
            auto_promote_learners: false,
            max_learners: 1,
            initial_election_tick_advance: true,
            peers,
            heartbeat_interval,
            election_timeout,
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
            cold_batch_bytes: 1 << 20,
            compaction_slice_keys: crate::mvcc::RELEASE_SLICE_KEYS,
            memory_release_interval: Some(Duration::from_millis(100)),
            max_request_bytes: 3 * 1024 * 1024 / 2,
            max_txn_ops: 128,
            max_range_bytes: i32::MAX as u64,
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
            quota_bytes: 2 << 30,
            pending_requests_max: 10_000,
            raft_message_bytes_max: 1024 * 1024,
            raft_inflight_messages_max: 256,
            lease_checkpoint_interval: Duration::from_secs(5),
            auth_token_ttl: Duration::from_secs(300),
            auto_compaction: None,
            lease_revokes_per_sec: 1_000,
            observe: false,
            bugs: Bugs::default(),
        }
    }

    /// Election timeout in ticks, at least 2 so that a heartbeat fits inside it.
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_nanos() / self.heartbeat_interval.as_nanos().max(1);
        (ticks as usize).max(2)
    }
}
