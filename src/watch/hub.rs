//! The hub: every watch stream of a member, fed the revisions the member applies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::events::{ChangeBatch, HubResponse};
use super::ranges::WatchedRange;
use super::reads::{CatchUpReads, Sources, Step};
use super::recent::RecentChanges;
use super::table::WatcherTable;
use super::watcher::{watched_range, PicksMemo, Watcher};
use super::{StreamId, WatchConfig, WatchFeed, WatchId};
use crate::error::EtcdError;
use crate::mvcc::{ColdRead, KeyChange, KeySpaceView};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::time::Instant;

/// etcd's reasons, which clients match by text.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const TOO_MANY_WATCHERS: &str = "etcdserver: too many watchers on one stream";

/// How many requests' answers beyond the queue bound a stream may have waiting before the hub
/// gives up on a client that sends but does not read.
const CONTROL_SLACK: usize = 1_024;

/// Why a stream ended on the hub's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The stream asked for a leader (`hasleader`) and the member has none.
    NoLeader,
    /// The client sent requests without reading their answers.
    TooManyRequests,
}

impl StreamEnd {
    pub fn error(&self) -> EtcdError {
        match self {
            StreamEnd::NoLeader => EtcdError::NoLeader,
            StreamEnd::TooManyRequests => EtcdError::TooManyRequests,
        }
    }
}

#[derive(Default)]
struct Stream {
    require_leader: bool,
    watchers: WatcherTable,
    next_id: WatchId,
    queue: Queue,
    /// Where the next catch-up step looks for a watcher behind, so that every one gets a turn.
    catch_up_cursor: WatchId,
    /// False once a search found no watcher behind, until one falls behind: every response
    /// taken looks for watchers to catch up, and most of the time none is.
    maybe_behind: bool,
    ended: Option<StreamEnd>,
}

impl Stream {
    /// The next watcher behind, from the cursor on, wrapping around.
    fn next_behind(&mut self) -> Option<WatchId> {
        if !self.maybe_behind {
            return None;
        }
        let behind = |w: &&Watcher| !w.synced();
        let found = self
            .watchers
            .starting_at(self.catch_up_cursor)
            .find(behind)
            .or_else(|| self.watchers.values().find(behind));
        let Some(id) = found.map(|w| w.id) else {
            self.maybe_behind = false;
            return None;
        };
        self.catch_up_cursor = id + 1;
        Some(id)
    }
}

/// Room an empty queue keeps for responses; what a burst grew beyond it is given back. One: a
/// stream that gets one response at a time never reallocates, and an idle one holds 160
/// bytes (a queued response is that large), not the 640 of four, the least a vector of them
/// grows to. Most of a member's streams are idle at any time, often with a watcher each.
const QUEUE_CAPACITY_KEPT: usize = 1;

/// A stream's responses waiting for its client, each with its [`footprint`], and their total.
#[derive(Default)]
struct Queue {
    responses: VecDeque<(HubResponse, usize)>,
    bytes: usize,
    /// The batch the last response pushed names: the next response of the same batch does not
    /// count the batch again (held, so that no other batch can take its address meanwhile).
    last_batch: Option<Arc<ChangeBatch>>,
}

impl Queue {
    /// Whether another response may join, given the bytes queued on all streams (`total`). An
    /// empty queue always takes one, so a response larger than the bounds still goes.
    fn has_room(&self, config: &WatchConfig, total: usize) -> bool {
        self.responses.is_empty()
            || (self.responses.len() < config.queue_responses_max
                && self.bytes < config.queue_bytes_max
                && total < config.queued_bytes_total_max)
    }

    /// Queues `response`. Its cost is its [`footprint`], plus the memory of the batch it names
    /// when the response before it named another: a response keeps its whole batch alive, so
    /// a stream's bounds must cover the batches its responses hold, not only their bytes.
    fn push(&mut self, response: impl Into<HubResponse>, total: &mut usize) {
        let response = response.into();
        let mut len = footprint(&response);
        if let Some(batch) = response.batch() {
            if !self
                .last_batch
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, batch))
            {
                len += batch.bytes();
                self.last_batch = Some(batch.clone());
            }
        }
        self.bytes += len;
        *total += len;
        self.responses.push_back((response, len));
    }

    fn pop(&mut self, total: &mut usize) -> Option<(HubResponse, usize)> {
        let (response, len) = self.responses.pop_front()?;
        self.bytes -= len;
        *total -= len;
        if self.responses.is_empty() {
            self.last_batch = None;
        }
        if self.responses.is_empty() && self.responses.capacity() > QUEUE_CAPACITY_KEPT {
            // A burst (a client creating a hundred watchers) need not keep its room for good.
            self.responses.shrink_to(QUEUE_CAPACITY_KEPT);
        }
        Some((response, len))
    }

    fn clear(&mut self, total: &mut usize) {
        *total -= self.bytes;
        self.bytes = 0;
        self.responses.clear();
        self.last_batch = None;
    }
}

/// What a queued response costs on its own: its encoded size and its own memory (the batch it
/// names is counted by `Queue::push`).
fn footprint(response: &HubResponse) -> usize {
    response.encoded_len() + response.own_bytes()
}

/// Changes a watcher is owed: `changes` of `batch`, then nothing else through revision
/// `through`.
struct Unserved<'a> {
    batch: &'a Arc<ChangeBatch>,
    changes: std::ops::Range<usize>,
    through: i64,
}

/// Queues the events `watcher` (of `range`) wants from its `unserved` revisions (in order), in
/// responses of whole revisions, while the stream has room. The watcher's next revision moves
/// past what was queued; false if room ran out first.
fn serve(
    queue: &mut Queue,
    (watcher, range): (&mut Watcher, WatchedRange),
    mut unserved: Unserved,
    context: &Context,
    memo: &mut PicksMemo,
    total: &mut usize,
) -> bool {
    let (config, batch) = (context.config, unserved.batch);
    loop {
        let changes = unserved.changes.clone();
        let bytes_max = config.response_bytes_target;
        let (picks, next) = memo.take(watcher, range, batch, changes, bytes_max);
        let upto = batch.changes()[next..unserved.changes.end]
            .first()
            .map_or(unserved.through, |next| next.revision.main - 1);
        if !picks.is_empty() {
            if !queue.has_room(config, *total) {
                return false;
            }
            let template = WatchResponse {
                header: header(config, context.raft_term, upto),
                ..WatchResponse::default()
            };
            let push = |response| queue.push(response, total);
            watcher.responses(&template, batch, picks, config.fragment_bytes, push);
            watcher.last_sent = context.now;
        }
        watcher.next_revision = upto + 1;
        unserved.changes.start = next;
        if unserved.changes.is_empty() {
            return true;
        }
    }
}

/// What serving a watcher needs from the hub.
struct Context<'a> {
    config: &'a WatchConfig,
    raft_term: u64,
    now: Instant,
}

fn header(config: &WatchConfig, raft_term: u64, revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        revision,
        raft_term,
    })
}

/// The key space the latest feed described, and the cold values it reads.
struct Store {
    view: KeySpaceView,
    cold: Box<dyn ColdRead + Send>,
}

/// Every watch stream of one member. See the module documentation.
pub struct WatchHub {
    config: WatchConfig,
    /// The last revision applied (0 before the first feed).
    revision: i64,
    raft_term: u64,
    has_leader: bool,
    /// Since when the member has had no leader, by the feeds (`None` while it has one).
    leaderless_since: Option<Instant>,
    /// The latest feed's key space, while a stream is open: with none, the hub lets go of it
    /// (the node sends no feeds then, and an old view would keep what writes replace since),
    /// and a stream opened later waits for a fresh one (`needs_view`).
    store: Option<Store>,
    /// The compacted revision of the latest feed's view (-1 before the first).
    compacted: i64,
    /// Reads that watchers catching up share.
    reads: CatchUpReads,
    /// The latest feeds' changes, which those reads gather from while they last.
    recent: RecentChanges,
    /// What the last watcher served picked from its changes, for the next one that selects
    /// the same.
    picks_memo: PicksMemo,
    streams: BTreeMap<StreamId, Stream>,
    /// Bytes queued on all streams.
    queued_bytes: usize,
    /// Streams with responses queued or an end to report, for the driver to drain.
    ready: BTreeSet<StreamId>,
    /// When `tick` may next owe a progress notification (never earlier).
    progress_due: Option<Instant>,
    now: Instant,
    /// The injected bug `duplicate_after_catch_up`: the revision each watcher already got
    /// twice (empty without the bug).
    repeated: BTreeMap<(StreamId, WatchId), i64>,
}

impl WatchHub {
    pub fn new(config: WatchConfig) -> WatchHub {
        let recent = RecentChanges::new(config.recent_changes_bytes_max, config.bugs);
        WatchHub {
            config,
            revision: 0,
            raft_term: 0,
            has_leader: false,
            leaderless_since: None,
            store: None,
            compacted: -1,
            reads: CatchUpReads::default(),
            recent,
            picks_memo: PicksMemo::default(),
            streams: BTreeMap::new(),
            queued_bytes: 0,
            ready: BTreeSet::new(),
            progress_due: None,
            now: Instant::ZERO,
            repeated: BTreeMap::new(),
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        header(&self.config, self.raft_term, revision)
    }

    // ---------------------------------------------------------------------------------------
    // Streams
    // ---------------------------------------------------------------------------------------

    /// A client opened a stream; with `require_leader` (gRPC metadata `hasleader=true`) it is
    /// refused while the member has no leader, and ends once the member has had none for
    /// `leaderless_grace`.
    pub fn open(&mut self, stream: StreamId, require_leader: bool) {
        let mut state = Stream {
            require_leader,
            ..Stream::default()
        };
        if require_leader && !self.has_leader {
            state.ended = Some(StreamEnd::NoLeader);
            self.ready.insert(stream);
        }
        self.streams.insert(stream, state);
    }

    /// Whether any stream is open (ended ones count until closed): the driver turns the node's
    /// feeds off while none is (`Node::set_watched`).
    pub fn is_watched(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Whether a stream is open on a hub that holds no view of the key space (its last stream
    /// closed since the latest feed): the driver then asks the node for a fresh feed
    /// (`Node::refresh_watch_view`), without which its watchers could not catch up.
    pub fn needs_view(&self) -> bool {
        self.is_watched() && self.store.is_none()
    }

    /// Streams open (ended ones count until closed).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Catch-up reads made so far: how many gathered their changes from the latest feeds, and
    /// how many read the key space.
    pub fn catch_up_reads(&self) -> (u64, u64) {
        (self.reads.from_recent, self.reads.from_key_space)
    }

    /// The stream is gone (the client left, or the driver ended it): its watchers with it.
    pub fn close(&mut self, stream: StreamId) {
        if let Some(mut state) = self.streams.remove(&stream) {
            state.queue.clear(&mut self.queued_bytes);
        }
        self.ready.remove(&stream);
        if self.streams.is_empty() {
            // The node sends no feeds while no stream is open (`is_watched`), so the view, the
            // latest feeds and the reads would stay as they are for as long as nobody watches:
            // the view shares the key space's index and values as they were, which writes then
            // replace (a second copy of the key space, at worst). The next stream's watchers
            // catch up from the fresh view it waits for (`needs_view`).
            self.store = None;
            self.recent.clear();
            self.reads.clear();
        }
    }

    /// Why the stream ended, if it did: the driver ends it with this error, then closes it.
    pub fn ended(&self, stream: StreamId) -> Option<&StreamEnd> {
        self.streams.get(&stream)?.ended.as_ref()
    }

    /// Streams that have responses to take or an end to report.
    pub fn ready(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.ready.iter().copied()
    }

    /// The next response for the client of `stream`; taking one makes room, which lets the
    /// watchers behind catch up.
    pub fn pop(&mut self, stream: StreamId) -> Option<HubResponse> {
        let state = self.streams.get_mut(&stream)?;
        let popped = state.queue.pop(&mut self.queued_bytes);
        self.catch_up(stream);
        self.update_ready(stream);
        popped.map(|(response, _)| response)
    }

    fn update_ready(&mut self, stream: StreamId) {
        let busy = self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.queue.responses.is_empty() || s.ended.is_some());
        if busy {
            self.ready.insert(stream);
        } else {
            self.ready.remove(&stream);
        }
    }

    /// Watchers in all streams (for operators and tests).
    pub fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    // ---------------------------------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------------------------------

    pub fn request(&mut self, now: Instant, stream: StreamId, request: WatchRequest) {
        self.now = self.now.max(now);
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        if state.ended.is_some() {
            return;
        }
        if state.queue.responses.len() >= self.config.queue_responses_max + CONTROL_SLACK {
            state.ended = Some(StreamEnd::TooManyRequests);
            self.ready.insert(stream);
            return;
        }
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(stream, create),
            Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })) => {
                self.cancel(stream, watch_id)
            }
            Some(RequestUnion::ProgressRequest(_)) => self.progress(stream),
            None => {}
        }
        self.update_ready(stream);
    }

    /// Answers a create the member's auth check refused (`reason`), as etcd does: created and
    /// canceled at once, with no watcher id.
    pub fn refuse_create(&mut self, stream: StreamId, reason: &str) {
        let header = self.header(self.revision);
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        let refused = WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        };
        state.queue.push(refused, &mut self.queued_bytes);
        self.update_ready(stream);
    }

    fn create(&mut self, stream: StreamId, req: WatchCreateRequest) {
        let next_revision = self.start_revision(req.start_revision);
        let now = self.now;
        let header = self.header(self.revision);
        let total = &mut self.queued_bytes;
        let state = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        let refused = |reason: &str| WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        };
        let id = if req.watch_id != 0 {
            req.watch_id
        } else {
            while state.watchers.contains(state.next_id) {
                state.next_id += 1;
            }
            state.next_id
        };
        let range = watched_range(&req);
        if state.watchers.contains(id) {
            state.queue.push(refused(DUPLICATE_ID), total);
            return;
        }
        if range.is_empty() {
            state.queue.push(refused(EMPTY_RANGE), total);
            return;
        }
        if state.watchers.len() >= self.config.watchers_per_stream_max {
            state.queue.push(refused(TOO_MANY_WATCHERS), total);
            return;
        }
        if req.watch_id == 0 {
            state.next_id += 1;
        }
        state.queue.push(
            WatchResponse {
                header,
                watch_id: id,
                created: true,
                ..WatchResponse::default()
            },
            total,
        );
        if req.progress_notify {
            let due = now + self.config.progress_interval;
            self.progress_due = Some(self.progress_due.map_or(due, |d| d.min(due)));
        }
        let synced = next_revision > self.revision;
        state.maybe_behind |= !synced;
        state.watchers.insert(range, |range| {
            let mut watcher = Watcher::new(id, range, &req, next_revision, now);
            watcher.set_synced(synced);
            watcher
        });
        self.catch_up(stream);
    }

    /// The first revision a new watcher is owed: the next one for 0, otherwise the one asked
    /// for. A negative one below the compacted revision is compacted; one that is not (only -1,
    /// while nothing was compacted: etcd's compacted revision is then -1) means "from now" in
    /// etcd, whose store reads it as a revision above every stored one.
    fn start_revision(&self, asked: i64) -> i64 {
        match asked {
            0 => self.revision + 1,
            asked if asked < 0 && asked >= self.compacted => self.revision + 1,
            asked if self.config.bugs.start_at_local_revision && asked > self.revision + 1 => {
                self.revision + 1
            }
            asked => asked,
        }
    }

    fn cancel(&mut self, stream: StreamId, watch_id: WatchId) {
        let header = self.header(self.revision);
        let state = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        // etcd answers nothing for a watcher it does not know.
        if state.watchers.remove(watch_id).is_some() {
            let canceled = WatchResponse {
                header,
                watch_id,
                canceled: true,
                ..WatchResponse::default()
            };
            state.queue.push(canceled, &mut self.queued_bytes);
        }
    }

    /// A response with no events and watch id -1, whose header revision is one up to which
    /// every watcher of the stream has received all its events.
    fn progress(&mut self, stream: StreamId) {
        let state = &self.streams[&stream];
        let complete = state
            .watchers
            .values()
            .map(|w| (w.next_revision - 1).min(self.revision))
            .min()
            .unwrap_or(self.revision);
        let revision = if self.config.bugs.progress_before_synced {
            self.revision
        } else {
            complete
        };
        let response = WatchResponse {
            header: self.header(revision),
            watch_id: -1,
            ..WatchResponse::default()
        };
        self.streams
            .get_mut(&stream)
            .expect("checked by the caller")
            .queue
            .push(response, &mut self.queued_bytes);
    }

    // ---------------------------------------------------------------------------------------
    // Revisions
    // ---------------------------------------------------------------------------------------

    /// What the node applied since the last feed, with the cold values its view reads (pinned
    /// by the driver as of the feed).
    pub fn feed(&mut self, now: Instant, feed: WatchFeed, cold: Box<dyn ColdRead + Send>) {
        self.now = self.now.max(now);
        self.raft_term = feed.raft_term;
        self.set_leader(feed.has_leader);
        if feed.gap || self.store.is_none() {
            self.unsync_everyone();
        }
        let changes: Vec<KeyChange> = feed.revisions.into_iter().flat_map(|r| r.changes).collect();
        let batch = Arc::new(ChangeBatch::new(changes));
        self.deliver(&batch);
        self.recent.push(&batch, feed.gap);
        self.revision = self.revision.max(feed.view.revision());
        self.compacted = feed.view.compact_revision();
        self.store = Some(Store {
            view: feed.view,
            cold,
        });
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            self.catch_up(stream);
            self.update_ready(stream);
        }
    }

    fn set_leader(&mut self, has_leader: bool) {
        self.has_leader = has_leader;
        if has_leader {
            self.leaderless_since = None;
            return;
        }
        self.leaderless_since.get_or_insert(self.now);
        self.end_leaderless_streams();
    }

    /// When the streams that require a leader end, if the member still has none by then.
    fn leaderless_deadline(&self) -> Option<Instant> {
        let since = self.leaderless_since?;
        let waiting = self.streams.values();
        let mut waiting = waiting.filter(|s| s.require_leader && s.ended.is_none());
        waiting.next()?;
        Some(since + self.config.leaderless_grace)
    }

    fn end_leaderless_streams(&mut self) {
        if self.leaderless_deadline().is_none_or(|end| end > self.now) {
            return;
        }
        for (id, state) in self.streams.iter_mut() {
            if state.require_leader && state.ended.is_none() {
                state.ended = Some(StreamEnd::NoLeader);
                state.watchers.clear();
                state.queue.clear(&mut self.queued_bytes);
                self.ready.insert(*id);
            }
        }
    }

    fn unsync_everyone(&mut self) {
        for state in self.streams.values_mut() {
            for watcher in state.watchers.values_mut() {
                watcher.set_synced(false);
            }
            state.maybe_behind = true;
        }
    }

    /// Hands the changes of the revisions just applied (in order) to every synced watcher that
    /// wants some, a response per watcher for all of them where they fit; a watcher whose
    /// stream runs out of room falls behind, and catches up later from the key space.
    fn deliver(&mut self, batch: &Arc<ChangeBatch>) {
        let changes = batch.changes();
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return;
        };
        let (first, last) = (first.revision.main, last.revision.main);
        let context = Context {
            config: &self.config,
            raft_term: self.raft_term,
            now: self.now,
        };
        for state in self.streams.values_mut() {
            for (watcher, range) in state.watchers.ranged_mut() {
                if !watcher.synced() || watcher.next_revision > last {
                    continue;
                }
                if watcher.next_revision < first {
                    // Revisions it is owed are missing here: the key space has them.
                    watcher.set_synced(false);
                    state.maybe_behind = true;
                    continue;
                }
                let start = changes.partition_point(|c| c.revision.main < watcher.next_revision);
                let queue = &mut state.queue;
                let total = &mut self.queued_bytes;
                let unserved = Unserved {
                    batch,
                    changes: start..changes.len(),
                    through: last,
                };
                let memo = &mut self.picks_memo;
                let synced = serve(queue, (watcher, range), unserved, &context, memo, total);
                watcher.set_synced(synced);
                state.maybe_behind |= !watcher.synced();
            }
        }
    }

    /// Serves the watchers of `stream` that are behind, one step each in turn, while the stream
    /// has room: cancels those whose history was compacted, reads the others' next revisions
    /// from the key space.
    fn catch_up(&mut self, stream: StreamId) {
        if self.store.is_none() {
            // Nothing to read from before the first feed.
            return;
        }
        while let Some(state) = self.streams.get_mut(&stream) {
            if !state.queue.has_room(&self.config, self.queued_bytes) {
                return;
            }
            let Some(id) = state.next_behind() else {
                return;
            };
            self.catch_up_step(stream, id);
        }
    }

    /// One step for watcher `id`: it is canceled, or it moves its next revision forward, or
    /// its stream runs out of room (so the loop above ends).
    fn catch_up_step(&mut self, stream: StreamId, id: WatchId) {
        let compact = self.compacted;
        let (revision, config, term) = (self.revision, &self.config, self.raft_term);
        let state = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        let (watcher, range) = state.watchers.get_mut(id).expect("found by next_behind");
        if watcher.next_revision > revision {
            watcher.set_synced(true);
            return;
        }
        let Some(store) = &self.store else {
            return;
        };
        let cancel = |compact_revision, reason: String, header_revision| WatchResponse {
            header: header(config, term, header_revision),
            watch_id: id,
            canceled: true,
            compact_revision,
            cancel_reason: reason,
            ..WatchResponse::default()
        };
        let compacted_away = if config.bugs.cancel_at_compaction_boundary {
            watcher.next_revision <= compact
        } else {
            watcher.next_revision < compact
        };
        if compacted_away {
            // etcd 3.4 leaves the revision out of this header.
            let response = cancel(compact, String::new(), 0);
            state.watchers.remove(id);
            state.queue.push(response, &mut self.queued_bytes);
            return;
        }
        let mut from = watcher.next_revision;
        if config.bugs.drop_at_compaction_boundary && from == compact {
            from += 1;
        }
        let to = revision.min(from + config.catch_up_revisions_max - 1);
        let sources = Sources {
            view: &store.view,
            cold: store.cold.as_ref(),
            recent: &self.recent,
        };
        let read_max = config.catch_up_reads_bytes_max;
        let Ok(Step {
            batch,
            slice,
            through,
        }) = self
            .reads
            .changes(&sources, (range.key, range.end), from, to, read_max)
        else {
            // The segments no longer hold a value the view names: this member's store is
            // unreadable; the watcher ends rather than skip events.
            let response = cancel(0, EtcdError::Corrupt.to_string(), revision);
            state.watchers.remove(id);
            state.queue.push(response, &mut self.queued_bytes);
            return;
        };
        let context = Context {
            config,
            raft_term: term,
            now: self.now,
        };
        let queued_before = state.queue.responses.len();
        let total = &mut self.queued_bytes;
        let unserved = Unserved {
            batch: &batch,
            changes: slice,
            through,
        };
        let memo = &mut self.picks_memo;
        serve(
            &mut state.queue,
            (watcher, range),
            unserved,
            &context,
            memo,
            total,
        );
        let delivered = state.queue.responses.len() > queued_before;
        if config.bugs.duplicate_after_catch_up && delivered {
            let last = watcher.next_revision - 1;
            if self.repeated.insert((stream, id), last) != Some(last) {
                watcher.next_revision = last;
            }
        }
        watcher.set_synced(watcher.next_revision > revision);
    }

    // ---------------------------------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------------------------------

    /// Ends the streams that require a leader once the member has had none for the grace, and
    /// sends a progress notification to every synced watcher that asked for them and got
    /// nothing for an interval.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.end_leaderless_streams();
        if self.progress_due.is_none_or(|due| due > now) {
            return;
        }
        let interval = self.config.progress_interval;
        let template = WatchResponse {
            header: self.header(self.revision),
            ..WatchResponse::default()
        };
        let mut next_due: Option<Instant> = None;
        let mut touched = Vec::new();
        for (stream, state) in self.streams.iter_mut() {
            let queue = &mut state.queue;
            let progress_watchers = state.watchers.values_mut().filter(|w| w.progress_notify());
            for watcher in progress_watchers {
                let idle = now.saturating_since(watcher.last_sent) >= interval;
                if idle && watcher.synced() && queue.has_room(&self.config, self.queued_bytes) {
                    let notification = WatchResponse {
                        watch_id: watcher.id,
                        ..template.clone()
                    };
                    queue.push(notification, &mut self.queued_bytes);
                    watcher.last_sent = now;
                    touched.push(*stream);
                }
                let due = watcher.last_sent + interval;
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
            }
        }
        // Not sooner than an eighth of the interval: watchers whose deadlines are spread out
        // share ticks instead of costing a pass over every watcher each.
        self.progress_due = next_due.map(|due| due.max(now + interval / 8));
        for stream in touched {
            self.update_ready(stream);
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let due = [self.progress_due, self.leaderless_deadline()];
        due.into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests;
