//! Watch: etcd's Watch API as a pure, deterministic hub, served by each member from its own
//! applied state (never through raft).
//!
//! The node applies entries; after each batch it reports a [`WatchFeed`]: the key changes of
//! every revision it applied (the effects of `State::apply`) and an O(1) view of the key space as
//! of the last one. The [`WatchHub`] owns the streams and their watchers: it matches each
//! revision's changes against the synced watchers, catches the others up from the view
//! (reading superseded values through the cold segments the driver pinned with it), cancels
//! watchers whose history was compacted, answers progress requests and sends progress
//! notifications. Drivers run it beside the node, not inside it: the server on a task of its own,
//! so that fan-out to many watchers never delays an apply; the simulator inline, so it runs the
//! very code the server runs.
//!
//! Bounds: each stream queues at most `queue_responses_max` responses (and about
//! `queue_bytes_max` bytes; all streams together about `queued_bytes_total_max`); past that its
//! watchers stop receiving events as they happen and catch up from the key space once the
//! client reads again, in revision order, never losing, repeating or reordering an event, or
//! are canceled with `compact_revision` once their history is compacted. A response gathers
//! whole revisions up to about `response_bytes_target`, so a catch-up never builds one giant
//! response. Each stream holds at most `watchers_per_stream_max` watchers. A stream whose
//! client keeps sending requests without reading answers is closed.
//!
//! Guarantees to each watcher, as etcd's robustness tests name them: ordered (revisions only
//! grow), unique (no event twice), atomic (a revision's events travel together, unless the
//! watcher asked for fragments and they do not fit one response), reliable (no gap between the
//! start revision and the last delivered one), resumable (a watch created again from the next
//! revision continues), bookmarkable (the header revision of every response, progress included,
//! is one up to which the watcher has received everything).

mod events;
mod hub;
mod ranges;
mod reads;
mod recent;
mod table;
mod watcher;

pub use events::HubResponse;
pub use hub::{StreamEnd, WatchHub};

use std::time::Duration;

use crate::mvcc::{KeyChange, KeySpaceView};

/// A watch stream, as the driver numbers them.
pub type StreamId = u64;

/// A watcher of a stream, as etcd numbers them (per stream, from 0; -1 names the stream).
pub type WatchId = i64;

/// Settings of a hub.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub cluster_id: u64,
    pub member_id: u64,
    /// A watcher that asked for fragments gets a revision larger than this split over several
    /// responses. etcd: `--max-request-bytes` plus 512 KiB it allows for gRPC's overhead.
    pub fragment_bytes: usize,
    /// A response gathers whole revisions until its events pass this size (one revision larger
    /// than this still travels whole, or in fragments).
    pub response_bytes_target: usize,
    /// Responses one stream may have queued for its client.
    pub queue_responses_max: usize,
    /// Bytes one stream may have queued (a single larger response still goes, alone), counted
    /// as `hub::footprint` counts them (encoded size plus the events' memory).
    pub queue_bytes_max: usize,
    /// Bytes all streams together may have queued: what a member's watchers may hold however
    /// many streams there are.
    pub queued_bytes_total_max: usize,
    pub watchers_per_stream_max: usize,
    /// How often a watcher that asked for progress notifications gets one when it received
    /// nothing. etcd: `--watch-progress-notify-interval`, 10 minutes.
    pub progress_interval: Duration,
    /// How long the member must have had no leader before the streams that require one
    /// (`hasleader=true`) end. etcd checks once per election timeout and ends them at the third
    /// check in a row that finds none: re-creating every watch costs clients far more than a
    /// short election. A stream opened while there is no leader is refused at once.
    pub leaderless_grace: Duration,
    /// The most revisions one catch-up step reads from the key space.
    pub catch_up_revisions_max: i64,
    /// Bytes of the latest feeds' changes kept for watchers catching up (`recent`).
    pub recent_changes_bytes_max: usize,
    /// Bytes the catch-up reads shared between watchers may hold (`reads`).
    pub catch_up_reads_bytes_max: usize,
    /// Deliberate bugs, for the simulator (all off in the server).
    pub bugs: WatchBugs,
}

impl WatchConfig {
    pub fn new(cluster_id: u64, member_id: u64) -> WatchConfig {
        WatchConfig {
            cluster_id,
            member_id,
            fragment_bytes: 3 * 1024 * 1024 / 2,
            response_bytes_target: 64 << 10,
            queue_responses_max: 1_024,
            queue_bytes_max: 1 << 20,
            queued_bytes_total_max: 64 << 20,
            watchers_per_stream_max: 100_000,
            progress_interval: Duration::from_secs(600),
            // Three of etcd's default election timeouts.
            leaderless_grace: Duration::from_secs(3),
            catch_up_revisions_max: 1_000,
            recent_changes_bytes_max: 8 << 20,
            catch_up_reads_bytes_max: 8 << 20,
            bugs: WatchBugs::default(),
        }
    }
}

/// Wrong behaviours the simulator must catch, in the classes etcd shipped. All off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchBugs {
    /// A watcher catching up from the compact revision skips the events at it (etcd #18089).
    pub drop_at_compaction_boundary: bool,
    /// A progress request answers the current revision although some watcher is behind
    /// (etcd #15220).
    pub progress_before_synced: bool,
    /// A catch-up step delivers its last revision again in the next one (etcd #17247).
    pub duplicate_after_catch_up: bool,
    /// A watch created with a start revision past this member's goes back to this member's
    /// next revision (etcd #15271).
    pub start_at_local_revision: bool,
    /// The latest feeds' changes are kept across a gap in the feeds, as if the revisions left
    /// out had changed none of the keys a watcher catching up watches.
    pub recent_changes_across_gaps: bool,
    /// A watcher whose next revision is the compact revision is canceled as compacted,
    /// though that revision is still served (etcd cancels only below it).
    pub cancel_at_compaction_boundary: bool,
}

/// The key changes of one applied revision, in the order the write made them.
#[derive(Clone, Debug)]
pub struct RevisionChanges {
    pub revision: i64,
    pub changes: Vec<KeyChange>,
}

/// What the node reports to the hub after a batch of inputs.
#[derive(Clone, Debug)]
pub struct WatchFeed {
    /// Every revision applied since the last feed, in order.
    pub revisions: Vec<RevisionChanges>,
    /// The key space as of the last of them (or as it is, if none).
    pub view: KeySpaceView,
    pub raft_term: u64,
    pub has_leader: bool,
    /// Revisions were left out since the last feed (a snapshot replaced the state, or a driver
    /// could not keep up): every watcher catches up from the view.
    pub gap: bool,
}
