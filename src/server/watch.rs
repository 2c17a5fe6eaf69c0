//! The watch task: runs the member's watch hub (`crate::watch`) on a thread of its own, at a
//! lower priority, so that fan-out to many watchers never delays the node's applies or the gRPC
//! workers, and serves etcd's Watch service from it. Responses are encoded here, not by the
//! gRPC workers.
//!
//! The node thread hands each batch's feed to a [`FeedSlot`], which merges feeds while the task
//! is busy (up to `FEED_REVISIONS_MAX` revisions; past that it keeps only the latest view and
//! marks a gap, and watchers catch up from the key space: memory stays bounded whatever the
//! write rate). Each stream's answers go through a bounded channel; when a client does not
//! read, the channel fills, the hub's queue for that stream fills, and its watchers fall behind
//! and catch up later. A stream's requests come through a bounded channel too, so a client that
//! floods requests is slowed to the hub's pace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tonic::Status;

use super::direct::Unframer;
use super::disk::{lower_thread_priority, ColdReader};
use super::driver::DriverHandle;
use super::grpc::status;
use super::watch_answers;
use crate::api::Credentials;
use crate::error::EtcdError;
use crate::proto::detcdpb::AuthorizeRequest;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::time::Instant;
use crate::watch::{StreamId, WatchConfig, WatchFeed, WatchHub};

/// How long a first stream waits for a fresh feed; past it (the node is stopped or swamped) it
/// goes on with the view the hub has.
const FRESH_FEED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Revisions a feed may gather while the watch task is busy; past that they are dropped and the
/// watchers catch up from the key space.
const FEED_REVISIONS_MAX: usize = 10_000;
/// Requests from all streams waiting for the watch task.
const INPUTS_MAX: usize = 4_096;
/// Batches of answers buffered in a stream's channel (the hub queues more behind them, within
/// its bounds): one being written while the next is ready.
const BATCHES_BUFFERED_MAX: usize = 2;
/// A batch takes responses from the hub until their encoded size passes this (at least one). A
/// batch per channel slot, rather than a response, spares a task hand-off per response when a
/// stream carries many watchers.
const BATCH_BYTES_TARGET: usize = 64 << 10;
/// The blocks a batch's responses are encoded into: one is cut once it holds this much.
const BATCH_BLOCK_BYTES: usize = 16 << 10;
/// A batch's last block holding at most this much goes out as a copy of its own size, and the
/// block stays for the next batch: a stream's block lives as long as its client takes to read
/// it, and a block per stream for one small response each (an event, a progress notification)
/// held 16 KiB per stream of the watch task's memory.
const BATCH_TAIL_COPIED_BYTES_MAX: usize = 4 << 10;
/// A gRPC message's prefix: the compressed flag and the message's length.
const GRPC_PREFIX: usize = 5;

/// A batch of a stream's responses: blocks of whole gRPC messages (each with its 5-byte prefix),
/// written to the stream as they are; or the status that ends the stream (boxed: the channel's
/// room for each answer is as large as the largest).
pub(super) type Answer = Result<Vec<Bytes>, Box<Status>>;

/// Where the node thread leaves feeds for the watch task.
pub struct FeedSlot {
    pending: Mutex<Option<(WatchFeed, ColdReader)>>,
    notify: Notify,
    /// Watch streams open. With none, the driver asks the node for no feeds (`is_watched`): a
    /// member nobody watches pays nothing per write for watch.
    streams: AtomicU64,
    /// Feeds offered so far, for a first stream waiting for a fresh one.
    offers: tokio::sync::watch::Sender<u64>,
    /// The hub wants a fresh view of the key space (`ask_for_view`).
    view_wanted: AtomicBool,
}

impl Default for FeedSlot {
    fn default() -> FeedSlot {
        FeedSlot {
            pending: Mutex::new(None),
            notify: Notify::new(),
            streams: AtomicU64::new(0),
            offers: tokio::sync::watch::Sender::new(0),
            view_wanted: AtomicBool::new(false),
        }
    }
}

impl FeedSlot {
    /// Leaves a feed (with the cold segments pinned when it left the node), merged with one the
    /// task has not taken yet.
    pub fn offer(&self, feed: WatchFeed, cold: ColdReader) {
        let mut pending = self
            .pending
            .lock()
            .expect("the feed slot is never poisoned");
        if !self.is_watched() {
            // Nobody to deliver it to, and its view would keep what writes replace. A stream
            // that opens meanwhile asks for a fresh one (`stream_opened`).
            *pending = None;
            return;
        }
        match pending.as_mut() {
            Some((merged, reader)) => {
                merged.revisions.extend(feed.revisions);
                if merged.revisions.len() > FEED_REVISIONS_MAX {
                    merged.revisions.clear();
                    merged.gap = true;
                }
                merged.view = feed.view;
                merged.raft_term = feed.raft_term;
                merged.has_leader = feed.has_leader;
                merged.gap |= feed.gap;
                *reader = cold;
            }
            None => *pending = Some((feed, cold)),
        }
        drop(pending);
        self.offers.send_modify(|n| *n += 1);
        self.notify.notify_one();
    }

    /// Whether any watch stream is open (the driver then asks the node for feeds).
    pub fn is_watched(&self) -> bool {
        self.streams.load(Ordering::SeqCst) > 0
    }

    /// Asks the node for a feed with a fresh view at its next batch, which runs now.
    fn ask_for_view(&self, driver: &DriverHandle) {
        if !self.view_wanted.swap(true, Ordering::SeqCst) {
            driver.wake();
        }
    }

    /// Whether the hub asked for a fresh view since the last call (the driver then has the
    /// node send one: `Node::refresh_watch_view`).
    pub fn take_view_request(&self) -> bool {
        // A load first: the driver asks before every batch, and a request is rare.
        self.view_wanted.load(Ordering::SeqCst) && self.view_wanted.swap(false, Ordering::SeqCst)
    }

    /// Counts a new stream. The first one after none waits (briefly) for a feed with a fresh
    /// view: while nobody watched, the node sent no feeds and the hub let go of its view.
    async fn stream_opened(&self, driver: &DriverHandle) {
        let mut offers = self.offers.subscribe();
        offers.borrow_and_update();
        if self.streams.fetch_add(1, Ordering::SeqCst) == 0 {
            self.ask_for_view(driver);
            let _ = tokio::time::timeout(FRESH_FEED_WAIT, offers.changed()).await;
        }
    }

    fn take(&self) -> Option<(WatchFeed, ColdReader)> {
        self.pending
            .lock()
            .expect("the feed slot is never poisoned")
            .take()
    }
}

pub(super) enum Input {
    Open {
        stream: StreamId,
        require_leader: bool,
        answers: watch_answers::Sender<Answer>,
    },
    Request {
        stream: StreamId,
        request: WatchRequest,
    },
    /// A create the member's auth check refused, for this reason.
    Refuse {
        stream: StreamId,
        reason: String,
    },
    Close {
        stream: StreamId,
    },
}

/// The gRPC side's end of the watch task. Cheap to clone.
#[derive(Clone)]
pub struct WatchHandle {
    pub(super) inputs: mpsc::Sender<Input>,
    feeds: Arc<FeedSlot>,
    next_stream: Arc<AtomicU64>,
    /// The watch thread's runtime, which also serves the client connections that carry watch
    /// streams (`client_port::Relocation`).
    pub(super) runtime: tokio::runtime::Handle,
}

/// Starts the watch task on a thread of its own, at a lower CPU priority than the node, disk
/// and gRPC threads: fan-out is bulk work, and under load writes go first. Measured on 3 members
/// with 10,000 watchers (docs/bench.md): the writer's put p99 fell from about 20x its unwatched
/// value to about 3x, and events per second rose (less contention with the gRPC workers).
/// Returns the handle the Watch service uses.
pub fn spawn(
    config: WatchConfig,
    feeds: Arc<FeedSlot>,
    driver: DriverHandle,
    clock_origin: std::time::Instant,
) -> Result<WatchHandle, String> {
    let (inputs, rx) = mpsc::channel(INPUTS_MAX);
    let task = WatchTask {
        hub: WatchHub::new(config),
        feeds: feeds.clone(),
        driver,
        inputs: rx,
        answers: BTreeMap::new(),
        waiting: FuturesUnordered::new(),
        waiting_streams: BTreeSet::new(),
        clock_origin,
        block: BytesMut::new(),
    };
    let runtime =
        super::memory::collect_when_parked(&mut tokio::runtime::Builder::new_current_thread())
            .enable_time()
            .build()
            .map_err(|e| format!("starting the watch runtime: {e}"))?;
    runtime.spawn(super::memory::wake_to_collect());
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("detcd-watch".into())
        .spawn(move || {
            lower_thread_priority();
            runtime.block_on(task.run())
        })
        .map_err(|e| format!("starting the watch thread: {e}"))?;
    Ok(WatchHandle {
        inputs,
        feeds,
        next_stream: Arc::new(AtomicU64::new(0)),
        runtime: handle,
    })
}

impl WatchHandle {
    /// Opens a stream in the hub: its id, the channel its answers come on, and the guard that
    /// closes it when dropped.
    pub(super) async fn open(
        &self,
        driver: &DriverHandle,
        require_leader: bool,
    ) -> Result<(StreamId, watch_answers::Receiver<Answer>, CloseOnDrop), Status> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.feeds.stream_opened(driver).await;
        let closer = CloseOnDrop {
            stream,
            inputs: self.inputs.clone(),
            feeds: self.feeds.clone(),
        };
        let (answers, rx) = watch_answers::channel(BATCHES_BUFFERED_MAX);
        let open = Input::Open {
            stream,
            require_leader,
            answers,
        };
        self.inputs
            .send(open)
            .await
            .map_err(|_| status(crate::error::EtcdError::Stopped))?;
        Ok((stream, rx, closer))
    }

    /// A stream for the member's own use (the lock and election recipes, the JSON gateway),
    /// with `creates` sent on it.
    pub async fn internal(
        &self,
        driver: &DriverHandle,
        creates: Vec<WatchCreateRequest>,
    ) -> Result<InternalWatch, Status> {
        let (stream, answers, closer) = self.open(driver, false).await?;
        let requests = WatchRequests {
            stream,
            inputs: self.inputs.clone(),
        };
        for create in creates {
            requests
                .send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create)),
                })
                .await?;
        }
        Ok(InternalWatch {
            answers,
            messages: Unframer::new(usize::MAX),
            blocks: VecDeque::new(),
            requests,
            _closer: closer,
        })
    }
}

/// Sends requests on a stream of the member's own.
#[derive(Clone)]
pub struct WatchRequests {
    stream: StreamId,
    inputs: mpsc::Sender<Input>,
}

impl WatchRequests {
    /// Hands `request` to the watch task, waiting while its input channel is full.
    pub async fn send(&self, request: WatchRequest) -> Result<(), Status> {
        let stream = self.stream;
        self.send_input(Input::Request { stream, request }).await
    }

    /// [`WatchRequests::send`] for a client's request, checked as `caller`'s.
    pub async fn send_as(&self, request: WatchRequest, caller: &WatchCaller) -> Result<(), Status> {
        self.send_input(caller.checked(self.stream, request).await)
            .await
    }

    async fn send_input(&self, input: Input) -> Result<(), Status> {
        self.inputs
            .send(input)
            .await
            .map_err(|_| status(crate::error::EtcdError::Stopped))
    }
}

/// Who opened a stream: while auth is on, each watcher it creates must be theirs to read.
pub struct WatchCaller {
    driver: DriverHandle,
    credentials: Option<Credentials>,
}

impl WatchCaller {
    pub fn new(driver: DriverHandle, credentials: Option<Credentials>) -> WatchCaller {
        WatchCaller {
            driver,
            credentials,
        }
    }

    /// The request for the watch task: a create the sender may not read becomes its refusal
    /// (etcd's text: the gRPC error's, as grpc-go prints it).
    pub(super) async fn checked(&self, stream: StreamId, request: WatchRequest) -> Input {
        match self.unchecked(stream, request) {
            Ok(input) => input,
            Err(request) => self.authorized(stream, request).await,
        }
    }

    /// The request as it goes to the watch task when it needs no auth check (auth is off, or
    /// it creates no watcher); otherwise the request back, for [`WatchCaller::authorized`].
    pub(super) fn unchecked(
        &self,
        stream: StreamId,
        request: WatchRequest,
    ) -> Result<Input, WatchRequest> {
        let creates = matches!(request.request_union, Some(RequestUnion::CreateRequest(_)));
        if creates && self.driver.auth_enabled() {
            return Err(request);
        }
        Ok(Input::Request { stream, request })
    }

    /// The request for the watch task once the caller's permission to read what it watches
    /// was checked.
    pub(super) async fn authorized(&self, stream: StreamId, request: WatchRequest) -> Input {
        let Some(RequestUnion::CreateRequest(create)) = &request.request_union else {
            return Input::Request { stream, request };
        };
        let check = AuthorizeRequest {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            admin: false,
        };
        match self.driver.call_as(check, self.credentials.clone()).await {
            Ok(_) => Input::Request { stream, request },
            Err(_) => Input::Refuse {
                stream,
                reason: format!(
                    "rpc error: code = PermissionDenied desc = {}",
                    EtcdError::PermissionDenied
                ),
            },
        }
    }
}

/// A watch stream of the member's own; closed when dropped.
pub struct InternalWatch {
    answers: watch_answers::Receiver<Answer>,
    /// The responses of the blocks received, not yet taken.
    messages: Unframer,
    blocks: VecDeque<Bytes>,
    requests: WatchRequests,
    _closer: CloseOnDrop,
}

impl InternalWatch {
    /// A sender of further requests on this stream.
    pub fn requests(&self) -> WatchRequests {
        self.requests.clone()
    }

    /// The next response; once the stream ended, a canceled one.
    pub async fn next(&mut self) -> WatchResponse {
        loop {
            let message = self
                .messages
                .next_message()
                .expect("the watch task frames its responses as gRPC does");
            if let Some(message) = message {
                return WatchResponse::decode(message)
                    .expect("the watch task encodes what it decodes");
            }
            if let Some(block) = self.blocks.pop_front() {
                self.messages.push(block);
                continue;
            }
            let Some(Ok(batch)) = self.answers.recv().await else {
                return WatchResponse {
                    canceled: true,
                    ..Default::default()
                };
            };
            self.blocks.extend(batch);
        }
    }
}

/// A stream whose channel was full, once it has room (true) or its reader is gone (false).
type Waiting = Pin<Box<dyn std::future::Future<Output = (StreamId, bool)> + Send>>;

struct WatchTask {
    hub: WatchHub,
    feeds: Arc<FeedSlot>,
    /// For the fresh views the hub needs (`WatchHub::needs_view`).
    driver: DriverHandle,
    inputs: mpsc::Receiver<Input>,
    answers: BTreeMap<StreamId, watch_answers::Sender<Answer>>,
    /// Streams whose channel was full, each until its client reads.
    waiting: FuturesUnordered<Waiting>,
    waiting_streams: BTreeSet<StreamId>,
    clock_origin: std::time::Instant,
    /// Where the next batch is encoded (see `BATCH_TAIL_COPIED_BYTES_MAX`).
    block: BytesMut,
}

impl WatchTask {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.clock_origin.elapsed().as_nanos() as u64)
    }

    async fn run(mut self) {
        loop {
            let progress = self.hub.next_deadline().map(|at| {
                let wait = at.saturating_since(self.now());
                tokio::time::Instant::now() + wait
            });
            tokio::select! {
                () = self.feeds.notify.notified() => self.take_feed(),
                input = self.inputs.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                Some((stream, has_room)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    self.waiting_streams.remove(&stream);
                    if !has_room {
                        self.forget(stream);
                    }
                }
                () = sleep_until(progress) => {
                    let now = self.now();
                    self.hub.tick(now);
                }
            }
            self.drain();
            if self.hub.needs_view() {
                // A stream opened after the last one closed, and the feed its opening asked for
                // was taken before that close.
                self.feeds.ask_for_view(&self.driver);
            }
            // The client connections that carry watch streams are served on this thread too
            // (`client_port::Relocation`): their writes, and the other requests a client sends
            // over them, wait at most one turn of the hub's.
            tokio::task::yield_now().await;
        }
    }

    fn take_feed(&mut self) {
        if let Some((feed, cold)) = self.feeds.take() {
            let now = self.now();
            self.hub.feed(now, feed, Box::new(cold));
        }
    }

    fn handle(&mut self, input: Input) {
        // The driver leaves a batch's feed before it sends the batch's answers: taking it first
        // makes a watch created after a write was acknowledged start after that write, and a
        // progress answer cover it.
        self.take_feed();
        let now = self.now();
        match input {
            Input::Open {
                stream,
                require_leader,
                answers,
            } => {
                self.answers.insert(stream, answers);
                self.hub.open(stream, require_leader);
            }
            Input::Request { stream, request } => self.hub.request(now, stream, request),
            Input::Refuse { stream, reason } => self.hub.refuse_create(stream, &reason),
            Input::Close { stream } => self.forget(stream),
        }
    }

    fn forget(&mut self, stream: StreamId) {
        self.hub.close(stream);
        self.answers.remove(&stream);
    }

    /// Moves answers from the hub to every stream's channel while it has room.
    fn drain(&mut self) {
        let ready: Vec<StreamId> = self.hub.ready().collect();
        for stream in ready {
            if let Some(end) = self.hub.ended(stream) {
                let error = status(end.error());
                if let Some(answers) = self.answers.get(&stream) {
                    answers.try_send(Err(Box::new(error)));
                }
                self.forget(stream);
                continue;
            }
            if self.waiting_streams.contains(&stream) {
                continue;
            }
            self.drain_stream(stream);
        }
    }

    fn drain_stream(&mut self, stream: StreamId) {
        let Some(answers) = self.answers.get(&stream).cloned() else {
            self.hub.close(stream);
            return;
        };
        loop {
            match answers.has_room() {
                Ok(true) => match self.batch(stream) {
                    // The watch task is the only one that sends: the room is still there.
                    Some(batch) => _ = answers.try_send(Ok(batch)),
                    None => return,
                },
                Ok(false) => {
                    self.waiting_streams.insert(stream);
                    self.waiting
                        .push(Box::pin(async move { (stream, answers.room().await) }));
                    return;
                }
                Err(watch_answers::Closed) => {
                    self.forget(stream);
                    return;
                }
            }
        }
    }
}

impl WatchTask {
    /// The stream's next responses, encoded with their gRPC prefixes, up to the batch target;
    /// None if it has none. They are encoded into blocks of about `BATCH_BLOCK_BYTES`, which go
    /// to the stream as they are: an allocation per block rather than per response, and no
    /// copy between here and the socket (but for a small last block's).
    fn batch(&mut self, stream: StreamId) -> Option<Vec<Bytes>> {
        let mut block = std::mem::take(&mut self.block);
        block.reserve(BATCH_BLOCK_BYTES);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES_TARGET {
            let Some(response) = self.hub.pop(stream) else {
                break;
            };
            let start = block.len();
            block.put_bytes(0, GRPC_PREFIX);
            response.encode(&mut block);
            let len = u32::try_from(block.len() - start - GRPC_PREFIX)
                .expect("a watch response is far below 4 GiB (the hub's queue bounds it)");
            block[start + 1..start + GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
            bytes += block.len() - start;
            if block.len() >= BATCH_BLOCK_BYTES {
                batch.push(block.split().freeze());
                block = BytesMut::with_capacity(BATCH_BLOCK_BYTES);
            }
        }
        if block.len() > BATCH_TAIL_COPIED_BYTES_MAX {
            batch.push(block.freeze());
        } else {
            if !block.is_empty() {
                batch.push(Bytes::copy_from_slice(&block));
            }
            block.clear();
            self.block = block;
        }
        (!batch.is_empty()).then_some(batch)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Closes a stream's watchers in the hub once gRPC drops its responses (the client went away or
/// canceled the call).
pub(super) struct CloseOnDrop {
    stream: StreamId,
    inputs: mpsc::Sender<Input>,
    feeds: Arc<FeedSlot>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.feeds.streams.fetch_sub(1, Ordering::SeqCst);
        let close = Input::Close {
            stream: self.stream,
        };
        if let Err(TrySendError::Full(close)) = self.inputs.try_send(close) {
            // Past a full queue the hub would only notice at the stream's next answer.
            let inputs = self.inputs.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { inputs.send(close).await });
            }
        }
    }
}
