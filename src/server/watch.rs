//! The watch task: runs the member's watch hub (`crate::watch`) on a tokio task of its own, so
//! that fan-out to many watchers never delays the node's applies, and serves etcd's Watch
//! service from it.
//!
//! The node thread hands each batch's feed to a [`FeedSlot`], which merges feeds while the task
//! is busy (up to `FEED_REVISIONS_MAX` revisions; past that it keeps only the latest view and
//! marks a gap, and watchers catch up from the key space: memory stays bounded whatever the
//! write rate). Each stream's answers go through a bounded channel; when a client does not
//! read, the channel fills, the hub's queue for that stream fills, and its watchers fall behind
//! and catch up later. A stream's requests come through a bounded channel too, so a client that
//! floods requests is slowed to the hub's pace.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc::{self, error::TrySendError, OwnedPermit};
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::disk::ColdReader;
use super::grpc::status;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::time::Instant;
use crate::watch::{StreamId, WatchConfig, WatchFeed, WatchHub};

/// Revisions a feed may gather while the watch task is busy; past that they are dropped and the
/// watchers catch up from the key space.
const FEED_REVISIONS_MAX: usize = 10_000;
/// Requests from all streams waiting for the watch task.
const INPUTS_MAX: usize = 4_096;
/// Answers buffered in a stream's channel (the hub queues more behind them).
const ANSWERS_BUFFERED_MAX: usize = 16;

type Answer = Result<WatchResponse, Status>;

/// Where the node thread leaves feeds for the watch task.
#[derive(Default)]
pub struct FeedSlot {
    pending: Mutex<Option<(WatchFeed, ColdReader)>>,
    notify: Notify,
}

impl FeedSlot {
    /// Leaves a feed (with the cold segments pinned when it left the node), merged with one the
    /// task has not taken yet.
    pub fn offer(&self, feed: WatchFeed, cold: ColdReader) {
        let mut pending = self
            .pending
            .lock()
            .expect("the feed slot is never poisoned");
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
        self.notify.notify_one();
    }

    fn take(&self) -> Option<(WatchFeed, ColdReader)> {
        self.pending
            .lock()
            .expect("the feed slot is never poisoned")
            .take()
    }
}

enum Input {
    Open {
        stream: StreamId,
        require_leader: bool,
        answers: mpsc::Sender<Answer>,
    },
    Request {
        stream: StreamId,
        request: WatchRequest,
    },
    Close {
        stream: StreamId,
    },
}

/// The gRPC side's end of the watch task. Cheap to clone.
#[derive(Clone)]
pub struct WatchHandle {
    inputs: mpsc::Sender<Input>,
    next_stream: Arc<AtomicU64>,
}

/// Starts the watch task on the current runtime; returns the handle the Watch service uses.
pub fn spawn(
    config: WatchConfig,
    feeds: Arc<FeedSlot>,
    clock_origin: std::time::Instant,
) -> WatchHandle {
    let (inputs, rx) = mpsc::channel(INPUTS_MAX);
    let task = WatchTask {
        hub: WatchHub::new(config),
        feeds,
        inputs: rx,
        answers: BTreeMap::new(),
        waiting: FuturesUnordered::new(),
        waiting_streams: BTreeSet::new(),
        clock_origin,
    };
    tokio::spawn(task.run());
    WatchHandle {
        inputs,
        next_stream: Arc::new(AtomicU64::new(0)),
    }
}

type Waiting =
    Pin<Box<dyn std::future::Future<Output = (StreamId, Option<OwnedPermit<Answer>>)> + Send>>;

struct WatchTask {
    hub: WatchHub,
    feeds: Arc<FeedSlot>,
    inputs: mpsc::Receiver<Input>,
    answers: BTreeMap<StreamId, mpsc::Sender<Answer>>,
    /// Streams whose channel was full: a permit for each, once its client reads.
    waiting: FuturesUnordered<Waiting>,
    waiting_streams: BTreeSet<StreamId>,
    clock_origin: std::time::Instant,
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
                () = self.feeds.notify.notified() => {
                    if let Some((feed, cold)) = self.feeds.take() {
                        let now = self.now();
                        self.hub.feed(now, feed, Box::new(cold));
                    }
                }
                input = self.inputs.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                Some((stream, permit)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    self.waiting_streams.remove(&stream);
                    match permit {
                        Some(permit) => {
                            if let Some(answer) = self.hub.pop(stream) {
                                permit.send(Ok(answer));
                            }
                        }
                        None => self.forget(stream),
                    }
                }
                () = sleep_until(progress) => {
                    let now = self.now();
                    self.hub.tick(now);
                }
            }
            self.drain();
        }
    }

    fn handle(&mut self, input: Input) {
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
                    let _ = answers.try_send(Err(error));
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
            match answers.try_reserve() {
                Ok(permit) => match self.hub.pop(stream) {
                    Some(answer) => permit.send(Ok(answer)),
                    None => return,
                },
                Err(TrySendError::Full(())) => {
                    self.waiting_streams.insert(stream);
                    let answers = answers.clone();
                    self.waiting.push(Box::pin(async move {
                        (stream, answers.reserve_owned().await.ok())
                    }));
                    return;
                }
                Err(TrySendError::Closed(())) => {
                    self.forget(stream);
                    return;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// etcd's `etcdserverpb.Watch`.
pub struct WatchService {
    handle: WatchHandle,
}

impl WatchService {
    pub fn new(handle: WatchHandle) -> WatchService {
        WatchService { handle }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Answer> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        // clientv3's WithRequireLeader: the stream ends with "no leader" once there is none.
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v == "true");
        let stream = self.handle.next_stream.fetch_add(1, Ordering::Relaxed);
        let (answers, rx) = mpsc::channel(ANSWERS_BUFFERED_MAX);
        let inputs = self.handle.inputs.clone();
        let open = Input::Open {
            stream,
            require_leader,
            answers,
        };
        inputs
            .send(open)
            .await
            .map_err(|_| status(crate::error::EtcdError::Stopped))?;
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if inputs
                    .send(Input::Request { stream, request })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = inputs.send(Input::Close { stream }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
