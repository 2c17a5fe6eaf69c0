//! The hub: every watch stream of a member, fed the revisions the member applies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost::Message as _;

use super::watcher::Watcher;
use super::{StreamId, WatchConfig, WatchFeed, WatchId};
use crate::error::EtcdError;
use crate::mvcc::{ColdRead, KeySpaceView};
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
    watchers: BTreeMap<WatchId, Watcher>,
    next_id: WatchId,
    queue: VecDeque<WatchResponse>,
    queued_bytes: usize,
    /// Where the next catch-up step looks for a watcher behind, so that every one gets a turn.
    catch_up_cursor: WatchId,
    ended: Option<StreamEnd>,
}

impl Stream {
    fn has_room(&self, config: &WatchConfig) -> bool {
        has_room(&self.queue, self.queued_bytes, config)
    }

    fn push(&mut self, response: WatchResponse) {
        self.queued_bytes += response.encoded_len();
        self.queue.push_back(response);
    }

    /// The next watcher behind, from the cursor on, wrapping around.
    fn next_behind(&mut self) -> Option<WatchId> {
        let behind = |w: &&Watcher| !w.synced;
        let id = self
            .watchers
            .range(self.catch_up_cursor..)
            .map(|(_, w)| w)
            .find(behind)
            .or_else(|| self.watchers.values().find(behind))?
            .id;
        self.catch_up_cursor = id + 1;
        Some(id)
    }
}

fn header(config: &WatchConfig, raft_term: u64, revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        revision,
        raft_term,
    })
}

/// Whether a stream with `queue` (of `bytes`) may take another response.
fn has_room(queue: &VecDeque<WatchResponse>, bytes: usize, config: &WatchConfig) -> bool {
    queue.is_empty() || (queue.len() < config.queue_responses_max && bytes < config.queue_bytes_max)
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
    store: Option<Store>,
    streams: BTreeMap<StreamId, Stream>,
    /// Streams with responses queued or an end to report, for the driver to drain.
    ready: BTreeSet<StreamId>,
    now: Instant,
}

impl WatchHub {
    pub fn new(config: WatchConfig) -> WatchHub {
        WatchHub {
            config,
            revision: 0,
            raft_term: 0,
            has_leader: false,
            store: None,
            streams: BTreeMap::new(),
            ready: BTreeSet::new(),
            now: Instant::ZERO,
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        header(&self.config, self.raft_term, revision)
    }

    fn compact_revision(&self) -> i64 {
        self.store
            .as_ref()
            .map_or(-1, |s| s.view.compact_revision())
    }

    // ---------------------------------------------------------------------------------------
    // Streams
    // ---------------------------------------------------------------------------------------

    /// A client opened a stream; with `require_leader` (gRPC metadata `hasleader=true`) it ends
    /// as soon as the member has no leader.
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

    /// The stream is gone (the client left, or the driver ended it): its watchers with it.
    pub fn close(&mut self, stream: StreamId) {
        self.streams.remove(&stream);
        self.ready.remove(&stream);
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
    pub fn pop(&mut self, stream: StreamId) -> Option<WatchResponse> {
        let state = self.streams.get_mut(&stream)?;
        let response = state.queue.pop_front();
        if let Some(r) = &response {
            state.queued_bytes -= r.encoded_len();
        }
        self.catch_up(stream);
        self.update_ready(stream);
        response
    }

    fn update_ready(&mut self, stream: StreamId) {
        let busy = self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.queue.is_empty() || s.ended.is_some());
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
        if state.queue.len() >= self.config.queue_responses_max + CONTROL_SLACK {
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

    fn create(&mut self, stream: StreamId, req: WatchCreateRequest) {
        let next_revision = self.start_revision(req.start_revision);
        let now = self.now;
        let config = self.config.clone();
        let header = self.header(self.revision);
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
            while state.watchers.contains_key(&state.next_id) {
                state.next_id += 1;
            }
            state.next_id
        };
        let mut watcher = Watcher::new(id, &req, next_revision, now);
        if state.watchers.contains_key(&id) {
            state.push(refused(DUPLICATE_ID));
            return;
        }
        if watcher.range_is_empty() {
            state.push(refused(EMPTY_RANGE));
            return;
        }
        if state.watchers.len() >= config.watchers_per_stream_max {
            state.push(refused(TOO_MANY_WATCHERS));
            return;
        }
        if req.watch_id == 0 {
            state.next_id += 1;
        }
        state.push(WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        });
        watcher.synced = watcher.next_revision > self.revision;
        state.watchers.insert(id, watcher);
        self.catch_up(stream);
    }

    /// The first revision a new watcher is owed: the next one for 0, otherwise the one asked
    /// for (a negative one is before every retained revision, hence compacted).
    fn start_revision(&self, asked: i64) -> i64 {
        match asked {
            0 => self.revision + 1,
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
        if state.watchers.remove(&watch_id).is_some() {
            state.push(WatchResponse {
                header,
                watch_id,
                canceled: true,
                ..WatchResponse::default()
            });
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
            .push(response);
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
        for revision in &feed.revisions {
            self.deliver(revision.revision, &revision.changes);
        }
        self.revision = self.revision.max(feed.view.revision());
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
            return;
        }
        for (id, state) in self.streams.iter_mut() {
            if state.require_leader && state.ended.is_none() {
                state.ended = Some(StreamEnd::NoLeader);
                state.watchers.clear();
                state.queue.clear();
                state.queued_bytes = 0;
                self.ready.insert(*id);
            }
        }
    }

    fn unsync_everyone(&mut self) {
        for state in self.streams.values_mut() {
            for watcher in state.watchers.values_mut() {
                watcher.synced = false;
            }
        }
    }

    /// Hands the changes of `revision` to every synced watcher that wants some; a watcher whose
    /// stream has no room falls behind, and catches up later from the key space.
    fn deliver(&mut self, revision: i64, changes: &[crate::mvcc::KeyChange]) {
        let template = WatchResponse {
            header: self.header(revision),
            ..WatchResponse::default()
        };
        let (config, now) = (&self.config, self.now);
        for state in self.streams.values_mut() {
            for watcher in state.watchers.values_mut() {
                if !watcher.synced || watcher.next_revision > revision {
                    continue;
                }
                let events = watcher.events(changes);
                if events.is_empty() {
                    watcher.next_revision = revision + 1;
                    continue;
                }
                if !has_room(&state.queue, state.queued_bytes, config) {
                    watcher.synced = false;
                    continue;
                }
                let responses = watcher.responses(&template, events, config.fragment_bytes);
                for response in responses {
                    state.queued_bytes += response.encoded_len();
                    state.queue.push_back(response);
                }
                watcher.next_revision = revision + 1;
                watcher.last_sent = now;
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
        while self
            .streams
            .get(&stream)
            .is_some_and(|s| s.has_room(&self.config))
        {
            let state = self.streams.get_mut(&stream).expect("checked");
            let Some(id) = state.next_behind() else {
                return;
            };
            self.catch_up_step(stream, id);
        }
    }

    /// One step for watcher `id`: it is canceled, or it moves its next revision forward (so
    /// the loop above ends).
    fn catch_up_step(&mut self, stream: StreamId, id: WatchId) {
        let compact = self.compact_revision();
        let (revision, config, now, term) = (self.revision, &self.config, self.now, self.raft_term);
        let state = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        let watcher = state.watchers.get_mut(&id).expect("found by next_behind");
        if watcher.next_revision > revision {
            watcher.synced = true;
            return;
        }
        let Some(store) = &self.store else {
            return;
        };
        if watcher.next_revision < compact {
            let response = WatchResponse {
                // etcd 3.4 leaves the revision out of this header.
                header: header(config, term, 0),
                watch_id: id,
                canceled: true,
                compact_revision: compact,
                ..WatchResponse::default()
            };
            state.watchers.remove(&id);
            state.push(response);
            return;
        }
        let mut from = watcher.next_revision;
        if config.bugs.drop_at_compaction_boundary && from == compact {
            from += 1;
        }
        let to = revision.min(from + config.catch_up_revisions_max - 1);
        let changes = store.view.changes(
            watcher.key(),
            watcher.range_end(),
            from,
            to,
            store.cold.as_ref(),
        );
        let Ok(changes) = changes else {
            // The segments no longer hold a value the view names: this member's store is
            // unreadable; the watcher ends rather than skip events.
            let response = WatchResponse {
                header: header(config, term, revision),
                watch_id: id,
                canceled: true,
                cancel_reason: EtcdError::Corrupt.to_string(),
                ..WatchResponse::default()
            };
            state.watchers.remove(&id);
            state.push(response);
            return;
        };
        let events = watcher.events(&changes);
        let delivered = !events.is_empty();
        if delivered {
            let template = WatchResponse {
                header: header(config, term, to),
                ..WatchResponse::default()
            };
            for response in watcher.responses(&template, events, config.fragment_bytes) {
                state.queued_bytes += response.encoded_len();
                state.queue.push_back(response);
            }
            watcher.last_sent = now;
        }
        watcher.next_revision =
            if config.bugs.duplicate_after_catch_up && delivered && watcher.repeated_revision != to
            {
                watcher.repeated_revision = to;
                to
            } else {
                to + 1
            };
        watcher.synced = watcher.next_revision > revision;
    }

    // ---------------------------------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------------------------------

    /// Sends a progress notification to every synced watcher that asked for them and got
    /// nothing for an interval.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let interval = self.config.progress_interval;
        let template = WatchResponse {
            header: self.header(self.revision),
            ..WatchResponse::default()
        };
        let mut touched = Vec::new();
        for (stream, state) in self.streams.iter_mut() {
            let due: Vec<WatchId> = state
                .watchers
                .values()
                .filter(|w| w.progress_notify && w.synced)
                .filter(|w| now.saturating_since(w.last_sent) >= interval)
                .map(|w| w.id)
                .collect();
            for id in due {
                if !state.has_room(&self.config) {
                    break;
                }
                state.push(WatchResponse {
                    watch_id: id,
                    ..template.clone()
                });
                state.watchers.get_mut(&id).expect("listed").last_sent = now;
                touched.push(*stream);
            }
        }
        for stream in touched {
            self.update_ready(stream);
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<crate::time::Instant> {
        self.streams
            .values()
            .flat_map(|s| s.watchers.values())
            .filter(|w| w.progress_notify)
            .map(|w| w.last_sent + self.config.progress_interval)
            .min()
    }
}

#[cfg(test)]
mod tests;
