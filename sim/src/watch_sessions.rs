//! Watch sessions judged against the reference model: one hub (`detcd::watch::WatchHub`) beside
//! one replicated state, driven by arbitrary bytes. Writes (puts, deletes of keys and ranges,
//! txns changing several keys in one revision, compactions) are applied and fed to the hub in
//! batches, only while a stream is open (as the node feeds it), now and then after a gap;
//! streams open and close; creates come in every shape (keys and range ends from `kv_shapes`'
//! alphabet, start revisions past, present, future and compacted, filters, prev_kv, fragments,
//! progress notifications, chosen and duplicate ids), with cancels of known and unknown ids and
//! progress requests; clients read a few responses or none for a while; time passes. The
//! hub's bounds are drawn small, so that streams fill up, watchers fall behind and catch up
//! from the key space. At the end each stream asks for progress and reads everything, and the
//! simulator's watch checker (`checker::watch`) judges every stream against the log the model
//! replays: ordered, unique, atomic, reliable, bookmarkable, prev_kv, filters, and canceled
//! only for cause.
//!
//! The `watch_model` fuzz target runs sessions libFuzzer builds; `tests/watch_sessions.rs` runs
//! sessions built from seeded random bytes, and shows the hub's injected bugs caught.

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use detcd::mvcc::NoColdValues;
use detcd::proto::detcdpb::internal_request::Op;
use detcd::proto::detcdpb::InternalRequest;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use detcd::state::State;
use detcd::time::Instant;
use detcd::watch::{HubResponse, RevisionChanges, WatchBugs, WatchConfig, WatchFeed, WatchHub};
use prost::Message;

use crate::checker;
use crate::history::{AppliedEntry, SimNanos, WatchRequestLog, WatchStreamLog};
use crate::kv_shapes::prefix_end;

/// Steps in one session.
pub const STEPS_MAX: usize = 64;
/// Streams open at once.
const STREAMS_MAX: usize = 3;
/// How often a watcher that asked gets a progress notification.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the session `data` describes on a hub with `bugs`; the first broken watch guarantee.
pub fn judge(data: &[u8], bugs: WatchBugs) -> Result<(), String> {
    let mut u = Unstructured::new(data);
    let Ok(config) = config(&mut u, bugs) else {
        return Ok(());
    };
    let mut session = Session::new(config);
    for _ in 0..STEPS_MAX {
        if u.is_empty() || session.step(&mut u).is_err() {
            break;
        }
    }
    let finished = session.finish();
    let streams: Vec<WatchStreamLog> = session.streams.into_values().collect();
    checker::watch::check(&streams, &session.log)?;
    finished
}

/// A hub with small bounds, so that a session of a few dozen steps reaches them.
fn config(u: &mut Unstructured, bugs: WatchBugs) -> Result<WatchConfig> {
    let mut config = WatchConfig::new(1, 1);
    config.fragment_bytes = u.int_in_range(64..=4096)?;
    config.response_bytes_target = u.int_in_range(32..=2048)?;
    config.queue_responses_max = u.int_in_range(1..=8)?;
    config.queue_bytes_max = u.int_in_range(256..=8192)?;
    config.queued_bytes_total_max = u.int_in_range(512..=16384)?;
    config.watchers_per_stream_max = u.int_in_range(1..=6)?;
    config.progress_interval = PROGRESS_INTERVAL;
    config.catch_up_revisions_max = u.int_in_range(1..=8)?;
    config.recent_changes_bytes_max = u.int_in_range(0..=4096)?;
    config.catch_up_reads_bytes_max = u.int_in_range(0..=4096)?;
    config.bugs = bugs;
    Ok(config)
}

struct Session {
    hub: WatchHub,
    state: State,
    log: Vec<AppliedEntry>,
    streams: BTreeMap<u64, WatchStreamLog>,
    open: Vec<u64>,
    /// Revisions applied since the last feed.
    unfed: Vec<RevisionChanges>,
    /// Writes were applied that no feed will carry (nobody watched, or a feed was skipped).
    gap: bool,
    now: Instant,
    logical_watches: usize,
}

impl Session {
    fn new(config: WatchConfig) -> Session {
        Session {
            hub: WatchHub::new(config),
            state: State::new(),
            log: Vec::new(),
            streams: BTreeMap::new(),
            open: Vec::new(),
            unfed: Vec::new(),
            gap: false,
            now: Instant::ZERO,
            logical_watches: 0,
        }
    }

    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=15)? {
            0..=3 => {
                for _ in 0..u.int_in_range(1..=3)? {
                    let op = write(u, self.state.kv().current_revision())?;
                    self.apply(op);
                }
                // A driver that could not keep up skips a feed; the next one says so.
                if u.ratio(1, 8)? {
                    self.gap |= !self.unfed.is_empty();
                    self.unfed.clear();
                } else {
                    self.feed();
                }
            }
            4..=6 => {
                let stream = self.pick(u)?;
                let create = create(u, self.state.kv().current_revision())?;
                self.send_create(stream, create);
            }
            7 => {
                let stream = self.pick(u)?;
                let watch_id = u.int_in_range(-1..=5)?;
                let request = RequestUnion::CancelRequest(WatchCancelRequest { watch_id });
                self.send(stream, request, WatchRequestLog::Cancel { watch_id });
            }
            8 => {
                let stream = self.pick(u)?;
                let request = RequestUnion::ProgressRequest(WatchProgressRequest {});
                self.send(stream, request, WatchRequestLog::Progress);
            }
            9..=11 => {
                let stream = self.pick(u)?;
                let reads = u.int_in_range(0..=8)?;
                self.read(stream, reads);
            }
            12 => {
                let passed = u.int_in_range(0..=2_000)?;
                self.now = self.now + Duration::from_millis(passed);
                self.hub.tick(self.now);
            }
            13 | 14 => self.open_stream(),
            _ => {
                let stream = self.pick(u)?;
                self.hub.close(stream);
                self.open.retain(|s| *s != stream);
            }
        }
        Ok(())
    }

    /// Applies one write as the next entry of the log.
    fn apply(&mut self, op: Op) {
        let request = InternalRequest {
            op: Some(op.clone()),
            ..InternalRequest::default()
        };
        let index = self.log.len() as u64 + 1;
        self.log
            .push(AppliedEntry::new(index, 1, request.encode_to_vec().into()));
        let applied = self.state.apply(op);
        let changes = applied.effects.key_changes;
        if let Some(first) = changes.first() {
            let revision = first.revision.main;
            self.unfed.push(RevisionChanges { revision, changes });
        }
    }

    /// Feeds the hub what was applied since the last feed, if anybody watches: the node feeds
    /// nothing while no stream is open, and its next feed is a gap.
    fn feed(&mut self) {
        if !self.hub.is_watched() {
            self.gap |= !self.unfed.is_empty();
            self.unfed.clear();
            return;
        }
        let feed = WatchFeed {
            revisions: std::mem::take(&mut self.unfed),
            view: self.state.kv().view(),
            raft_term: 1,
            has_leader: true,
            gap: std::mem::take(&mut self.gap),
        };
        self.hub.feed(self.now, feed, Box::new(NoColdValues));
    }

    fn open_stream(&mut self) {
        if self.open.len() >= STREAMS_MAX {
            return;
        }
        let stream = self.streams.len() as u64;
        self.hub.open(stream, false);
        self.open.push(stream);
        self.streams.insert(
            stream,
            WatchStreamLog {
                client: stream,
                member: 1,
                opened_at: self.nanos(),
                requests: Vec::new(),
                responses: Vec::new(),
            },
        );
        // The server's watch service has the node feed a hub without a view first.
        if self.hub.needs_view() {
            self.feed();
        }
    }

    /// An open stream, opening one if there is none.
    fn pick(&mut self, u: &mut Unstructured) -> Result<u64> {
        if self.open.is_empty() {
            self.open_stream();
        }
        u.choose(&self.open).copied()
    }

    fn send_create(&mut self, stream: u64, create: WatchCreateRequest) {
        let logical = self.logical_watches;
        self.logical_watches += 1;
        let log = WatchRequestLog::Create {
            logical,
            request: create.clone(),
        };
        self.send(stream, RequestUnion::CreateRequest(create), log);
    }

    fn send(&mut self, stream: u64, request: RequestUnion, log: WatchRequestLog) {
        let request = WatchRequest {
            request_union: Some(request),
        };
        self.hub.request(self.now, stream, request);
        let log_of = self.streams.get_mut(&stream).expect("an opened stream");
        log_of.requests.push(log);
    }

    /// The client of `stream` reads up to `count` responses.
    fn read(&mut self, stream: u64, count: usize) {
        let at = self.nanos();
        for _ in 0..count {
            let Some(response) = self.hub.pop(stream) else {
                return;
            };
            let log = self.streams.get_mut(&stream).expect("an opened stream");
            log.responses.push((at, HubResponse::into_proto(response)));
        }
    }

    /// Everything fed, every open stream reads all there is until the hub has nothing more
    /// for it, then asks for progress: having read everything, its watchers have caught up,
    /// so the answer must be the current revision.
    fn finish(&mut self) -> Result<(), String> {
        self.feed();
        self.drain();
        let current = self.state.kv().current_revision();
        for stream in self.open.clone() {
            let request = RequestUnion::ProgressRequest(WatchProgressRequest {});
            self.send(stream, request, WatchRequestLog::Progress);
            self.drain();
            let log = &self.streams[&stream];
            let progress = log.responses.last().map(|(_, r)| r);
            let revision = progress.and_then(|r| r.header.as_ref()).map(|h| h.revision);
            if self.hub.ended(stream).is_none() && revision != Some(current) {
                return Err(format!(
                    "stream {stream} read everything, but progress says {revision:?}, not the \
                     current revision {current}"
                ));
            }
        }
        Ok(())
    }

    /// Every open stream reads all there is, until the hub has nothing more for any.
    fn drain(&mut self) {
        let responses = |s: &Session| s.streams.values().map(|l| l.responses.len()).sum();
        loop {
            let before: usize = responses(self);
            for stream in self.open.clone() {
                self.read(stream, usize::MAX);
            }
            self.now = self.now + Duration::from_millis(1);
            self.hub.tick(self.now);
            if responses(self) == before {
                return;
            }
        }
    }

    fn nanos(&self) -> SimNanos {
        self.now.as_nanos()
    }
}

/// Keys of one or two letters of kv_shapes' alphabet, which sort next to each other.
fn key(u: &mut Unstructured) -> Result<Bytes> {
    const LETTERS: [u8; 4] = [0, b'a', b'b', 0xff];
    let length = u.int_in_range(1..=2)?;
    let mut key = Vec::with_capacity(length);
    for _ in 0..length {
        key.push(*u.choose(&LETTERS)?);
    }
    Ok(Bytes::from(key))
}

/// A range end for `key`: none (the key alone), `\0` (from the key on), the end of the key as
/// a prefix, or another key (possibly before it: an empty range).
fn range_end(u: &mut Unstructured, key: &[u8]) -> Result<Bytes> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Bytes::new(),
        1 => Bytes::from_static(b"\0"),
        2 => prefix_end(key),
        _ => self::key(u)?,
    })
}

/// A write: a put (now and then a large value, which fragments), a delete of a key or range, a
/// txn that changes two keys in one revision, or a compaction at or before `revision`.
fn write(u: &mut Unstructured, revision: i64) -> Result<Op> {
    let put = |u: &mut Unstructured| -> Result<PutRequest> {
        let size = if u.ratio(1, 10)? {
            3_000
        } else {
            u.int_in_range(0..=8)?
        };
        Ok(PutRequest {
            key: key(u)?,
            value: Bytes::from(vec![b'v'; size]),
            ..PutRequest::default()
        })
    };
    Ok(match u.int_in_range(0..=9)? {
        0..=4 => Op::Put(put(u)?),
        5 | 6 => {
            let key = key(u)?;
            let range_end = range_end(u, &key)?;
            Op::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                ..DeleteRangeRequest::default()
            })
        }
        7 | 8 => {
            let (first, second) = (put(u)?, put(u)?);
            let mut success = vec![RequestOp {
                request: Some(Request::RequestPut(first.clone())),
            }];
            if second.key != first.key {
                success.push(RequestOp {
                    request: Some(Request::RequestPut(second)),
                });
            }
            Op::Txn(TxnRequest {
                success,
                ..TxnRequest::default()
            })
        }
        _ => Op::Compaction(CompactionRequest {
            revision: u.int_in_range(1..=revision.max(1))?,
            physical: false,
        }),
    })
}

/// A create of any shape etcd accepts: start revisions are 0 (from now), at or before the
/// current one (replay, or compacted), or a few past it. Negative ones are left out: etcd's
/// own meaning for them (from now while nothing is compacted, compacted after) is the hub's
/// unit tests' to check, and the checker does not restate it.
fn create(u: &mut Unstructured, revision: i64) -> Result<WatchCreateRequest> {
    let key = key(u)?;
    let range_end = range_end(u, &key)?;
    let start_revision = match u.int_in_range(0..=3)? {
        0 => 0,
        1 | 2 => u.int_in_range(1..=revision.max(1))?,
        _ => revision + u.int_in_range(1..=3)?,
    };
    let mut filters = Vec::new();
    if u.ratio(1, 5)? {
        filters.push(0);
    }
    if u.ratio(1, 5)? {
        filters.push(1);
    }
    let watch_id = if u.ratio(1, 4)? {
        u.int_in_range(1..=4)?
    } else {
        0
    };
    Ok(WatchCreateRequest {
        key,
        range_end,
        start_revision,
        progress_notify: u.arbitrary()?,
        filters,
        prev_kv: u.arbitrary()?,
        watch_id,
        fragment: u.arbitrary()?,
    })
}
