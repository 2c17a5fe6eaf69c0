//! The driver: one thread owns the `Node`, feeds it what the sockets, the disk thread and the
//! clock produce, and carries out everything it outputs. No node logic lives here.
//!
//! Every producer talks to the driver over one channel. Client requests and peer messages are
//! bounded by a counter (past it, clients get `etcdserver: too many requests` and peer messages
//! are dropped, which raft tolerates); disk completions are never refused, since the node waits
//! for them, and their number is bounded by the disk queue.

use crate::server::log;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use super::disk::{ColdFiles, ColdReader, DiskExecutor};
use super::inbox::{self, Inbox, NodeSender, Received};
use super::jwt::JwtTokens;
use super::leader_presence::LeaderPresence;
use super::local_keepalives::SharedLocalKeepAlives;
use super::local_reads::SharedLocalReads;
use super::metrics::ServerMetrics;
use super::peer::{AdoptedPeer, PeerSender};
use super::snapshot_decoder::SnapshotDecoder;
use super::watch::FeedSlot;
use crate::api::Credentials;
use crate::error::EtcdError;
use crate::mvcc::ColdValues;
use crate::node::{
    ClientRequest, ClientResponse, DecodedSnapshot, DiskError, DiskOp, Input, IoId, MemberId, Node,
    Output, PeerMessage, RequestId, Rpc, StopReason,
};
use crate::state::{ReplacedState, StateView};
use crate::time::Instant;

/// The warning of batches the node took long to step (`--warning-apply-duration`), at most
/// one line a second however many there are, so a struggling member does not also flood its
/// log.
#[derive(Default)]
struct SlowBatches {
    after: Duration,
    /// When the last warning was logged, and the slow batches since.
    last_warning: Option<Instant>,
    unlogged: u64,
}

impl SlowBatches {
    fn note(&mut self, started: Instant, ended: Instant, inputs: usize) {
        let took = Duration::from_nanos(ended.as_nanos().saturating_sub(started.as_nanos()));
        if self.after.is_zero() || took <= self.after {
            return;
        }
        self.unlogged += 1;
        let quiet = self
            .last_warning
            .is_some_and(|at| ended.as_nanos() < at.as_nanos() + 1_000_000_000);
        if quiet {
            return;
        }
        log::warning!(
            "detcd: apply request took too long: took {took:?}, expected-duration {:?} \
             ({inputs} inputs in the batch; {} slow batches since the last warning)",
            self.after,
            self.unlogged
        );
        self.last_warning = Some(ended);
        self.unlogged = 0;
    }
}

/// Inputs taken from the channel for one `handle_batch`.
const BATCH_INPUTS_MAX: usize = 1024;

/// A reply as the node gave it, with the cold values it still needs and the segments to read
/// them from (pinned when the reply left the node).
pub struct Reply {
    result: Result<Box<ClientResponse>, EtcdError>,
    cold: ColdValues,
    reader: ColdReader,
}

type ReplySender = oneshot::Sender<Reply>;

pub enum Event {
    Client {
        request: ClientRequest,
        credentials: Option<Credentials>,
        reply: ReplySender,
    },
    Peer {
        from: MemberId,
        msg: PeerMessage,
    },
    DiskDone {
        io: IoId,
        result: Result<(), DiskError>,
    },
    Wake,
    /// A leader's snapshot, decoded off the node's thread (`snapshot_decoder`).
    DecodedSnapshot {
        from: MemberId,
        snapshot: Box<DecodedSnapshot>,
    },
    /// The hash an `Output::HashAt` asked for, computed off the node's thread.
    Hashed {
        revision: i64,
        hash: u32,
    },
    /// A frozen view of the state and the cold segments it reads, for a backup.
    View {
        reply: oneshot::Sender<(StateView, ColdReader)>,
    },
    Shutdown,
    /// A peer's connection for the node's thread to read (the inbox adopts it).
    PeerConnection(Box<AdoptedPeer>),
}

/// The producers' end of the driver's channel. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    tx: NodeSender,
    queued: Arc<AtomicUsize>,
    queued_max: usize,
    /// Whether auth was on after the node's latest batch.
    auth_enabled: Arc<AtomicBool>,
    /// `--auth-token jwt,...`: tokens are JWTs, checked here before their request goes on.
    jwt: Option<Arc<JwtTokens>>,
}

impl DriverHandle {
    pub fn new(queued_max: usize) -> std::io::Result<(DriverHandle, Inbox)> {
        let (tx, inbox) = inbox::channel()?;
        let handle = DriverHandle {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            queued_max,
            auth_enabled: Arc::new(AtomicBool::new(false)),
            jwt: None,
        };
        Ok((handle, inbox))
    }

    /// Tokens are JWTs made and checked with these keys.
    pub fn with_jwt(mut self, jwt: Option<Arc<JwtTokens>>) -> DriverHandle {
        self.jwt = jwt;
        self
    }

    pub fn jwt(&self) -> Option<&JwtTokens> {
        self.jwt.as_deref()
    }

    /// Whether auth was on after the node's latest batch: what a watch stream needs to know
    /// to have its creates checked.
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Acquire)
    }

    /// Sends a client request to the node and waits for its answer, typed as the request's.
    pub async fn call<R: Rpc>(&self, request: R) -> Result<R::Response, EtcdError> {
        self.call_as(request, None).await
    }

    /// [`DriverHandle::call`] for a client that sent `credentials`.
    pub async fn call_as<R: Rpc>(
        &self,
        request: R,
        credentials: Option<Credentials>,
    ) -> Result<R::Response, EtcdError> {
        self.call_any_as(request.into(), credentials)
            .await
            .map(typed::<R>)
    }

    pub async fn call_any(&self, request: ClientRequest) -> Result<ClientResponse, EtcdError> {
        self.call_any_as(request, None).await
    }

    pub async fn call_any_as(
        &self,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) -> Result<ClientResponse, EtcdError> {
        let (mut response, cold, reader) = self.call_unfilled(request, credentials).await?;
        if !cold.is_empty() {
            response =
                read_cold_off_workers(move || response.fill_cold(cold, &reader).map(|()| response))
                    .await?;
        }
        Ok(response)
    }

    /// The node's answer as it left the node: the response, the cold values it still needs
    /// (reads of the past), and the reader of the segments that hold them.
    pub async fn call_unfilled(
        &self,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) -> Result<(ClientResponse, ColdValues, ColdReader), EtcdError> {
        let Ok(Reply {
            result,
            cold,
            reader,
        }) = self.send(request, credentials)?.await
        else {
            return Err(EtcdError::Stopped);
        };
        Ok((*result?, cold, reader))
    }

    /// Sends a request that reads no superseded values (a keepalive, say) to the node; its
    /// answer is a plain future, for streams that keep many in flight without boxing each.
    pub fn submit<R: Rpc>(&self, request: R) -> Answer<R> {
        Answer {
            reply: self.send(request.into(), None).map_err(Some),
            kind: PhantomData,
        }
    }

    fn send(
        &self,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) -> Result<oneshot::Receiver<Reply>, EtcdError> {
        let credentials = self.verified(credentials)?;
        let (reply, answer) = oneshot::channel();
        let event = Event::Client {
            request,
            credentials,
            reply,
        };
        if !self.offer(event) {
            return Err(EtcdError::TooManyRequests);
        }
        Ok(answer)
    }

    /// With JWTs, a token as the identity it carries, or refused as etcd refuses a token it
    /// cannot verify (while auth is off, tokens are not looked at, simple or not).
    fn verified(&self, credentials: Option<Credentials>) -> Result<Option<Credentials>, EtcdError> {
        match (&self.jwt, credentials) {
            (Some(jwt), Some(Credentials::Token(token))) if self.auth_enabled() => {
                let (user, revision) = jwt.verify(&token)?;
                Ok(Some(Credentials::Signed { user, revision }))
            }
            (_, credentials) => Ok(credentials),
        }
    }

    /// Hands a peer's message to the node, or drops it when the node is overloaded.
    pub fn deliver_peer(&self, from: MemberId, msg: PeerMessage) {
        self.offer(Event::Peer { from, msg });
    }

    /// Hands a peer's connection to the node's thread, which reads it from now on.
    pub fn adopt_peer(&self, peer: AdoptedPeer) {
        self.tx.send(Event::PeerConnection(Box::new(peer)));
    }

    pub fn disk_done(&self, io: IoId, result: Result<(), DiskError>) {
        self.tx.send(Event::DiskDone { io, result });
    }

    pub fn shutdown(&self) {
        self.tx.send(Event::Shutdown);
    }

    /// The state as the node has applied it, frozen (O(1)), with the cold segments its view
    /// reads; `None` once the node is gone.
    pub async fn state_view(&self) -> Option<(StateView, ColdReader)> {
        let (reply, view) = oneshot::channel();
        if !self.offer(Event::View { reply }) {
            return None;
        }
        view.await.ok()
    }

    /// Makes the driver run a batch now (for the watch feed a new stream waits for).
    pub fn wake(&self) {
        self.offer(Event::Wake);
    }

    fn offer(&self, event: Event) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queued_max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.tx.send(event)
    }

    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The typed response inside `response`, which the node built for a request of kind `R`.
/// Runs `read` (which reads superseded values from the cold segments) off the async workers.
pub async fn read_cold_off_workers<T: Send + 'static>(
    read: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, EtcdError> {
    tokio::task::spawn_blocking(read)
        .await
        .expect("reading cold values does not panic")
        .map_err(|e| {
            log::error!("detcd: cannot read a superseded value from its cold segment: {e}");
            EtcdError::Corrupt
        })
}

pub(super) fn typed<R: Rpc>(response: ClientResponse) -> R::Response {
    let name = response.name();
    R::response(response).unwrap_or_else(|| {
        panic!("the node answers each request with its own kind, not with {name}")
    })
}

/// The answer to a request sent with [`DriverHandle::submit`].
pub struct Answer<R> {
    /// The node's reply to come, or why the request never reached the node (taken once).
    reply: Result<oneshot::Receiver<Reply>, Option<EtcdError>>,
    kind: PhantomData<fn() -> R>,
}

impl<R: Rpc> Future for Answer<R> {
    type Output = Result<R::Response, EtcdError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let receiver = match &mut self.get_mut().reply {
            Ok(receiver) => receiver,
            Err(refused) => {
                return Poll::Ready(Err(refused
                    .take()
                    .expect("an answer is polled to its end once")))
            }
        };
        let Ok(reply) = ready!(Pin::new(receiver).poll(cx)) else {
            return Poll::Ready(Err(EtcdError::Stopped));
        };
        assert!(
            reply.cold.is_empty(),
            "a request sent with submit reads no superseded values"
        );
        Poll::Ready(reply.result.map(|response| typed::<R>(*response)))
    }
}

/// The member's files: the disk thread (WAL and snapshots) and the cold segments.
pub struct Storage {
    pub disk: DiskExecutor,
    pub cold: ColdFiles,
}

/// Where the driver's outputs go besides the disk: the peers, the watch task and the
/// serializable reads served on the client-port workers.
pub struct Links {
    pub peers: PeerSender,
    pub watch: Arc<FeedSlot>,
    pub reads: Arc<SharedLocalReads>,
    pub keepalives: Arc<SharedLocalKeepAlives>,
    /// The member list as this member last applied it, for members asking to join.
    pub members: Arc<super::peer::MemberBoard>,
    pub metrics: Arc<ServerMetrics>,
    pub presence: Arc<LeaderPresence>,
}

/// Why the driver loop ended.
pub enum Exit {
    Shutdown,
    /// The cluster removed this member.
    Removed,
    /// The member cannot go on (a failed disk, say): why.
    Failed(String),
}

pub struct Driver {
    node: Node,
    inbox: Inbox,
    handle: DriverHandle,
    disk: DiskExecutor,
    cold: ColdFiles,
    peers: PeerSender,
    watch: Arc<FeedSlot>,
    reads: Arc<SharedLocalReads>,
    keepalives: Arc<SharedLocalKeepAlives>,
    members: Arc<super::peer::MemberBoard>,
    metrics: Arc<ServerMetrics>,
    presence: Arc<LeaderPresence>,
    clock_origin: std::time::Instant,
    replies: BTreeMap<RequestId, ReplySender>,
    next_request: u64,
    announced_ready: bool,
    ready_message: String,
    was_leader: bool,
    /// The leader the node last knew, to count the changes.
    last_leader: Option<MemberId>,
    snapshots_installed: u64,
    /// Of those, the ones `snapshot_decoder` decoded.
    snapshots_decoded: u64,
    snapshot_decoder: SnapshotDecoder,
    slow_batches: SlowBatches,
}

impl Driver {
    pub fn new(
        node: Node,
        inbox: Inbox,
        handle: DriverHandle,
        storage: Storage,
        links: Links,
        clock_origin: std::time::Instant,
        ready_message: String,
    ) -> Driver {
        let Storage { disk, cold } = storage;
        let snapshot_decoder = SnapshotDecoder::new(handle.tx.clone());
        let Links {
            peers,
            watch,
            reads,
            keepalives,
            members,
            metrics,
            presence,
        } = links;
        Driver {
            node,
            inbox,
            handle,
            disk,
            cold,
            peers,
            watch,
            reads,
            keepalives,
            members,
            metrics,
            presence,
            clock_origin,
            replies: BTreeMap::new(),
            next_request: 0,
            announced_ready: false,
            ready_message,
            was_leader: false,
            last_leader: None,
            snapshots_installed: 0,
            snapshots_decoded: 0,
            snapshot_decoder,
            slow_batches: SlowBatches::default(),
        }
    }

    /// Logs a warning when a batch takes the node longer than `after` (etcd's
    /// `--warning-apply-duration`).
    pub fn warn_of_batches_slower_than(mut self, after: Duration) -> Driver {
        self.slow_batches.after = after;
        self
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.clock_origin.elapsed().as_nanos() as u64)
    }

    /// Runs until shutdown or until the node stops; returns which.
    pub fn run(self) -> Exit {
        let (reads, keepalives) = (self.reads.clone(), self.keepalives.clone());
        let exit = self.run_batches();
        reads.close();
        keepalives.close();
        exit
    }

    /// Drains the node's outputs after every batch, so the node is never left holding work.
    fn run_batches(mut self) -> Exit {
        self.dispatch_outputs();
        loop {
            let wait = self
                .node
                .poll_timeout()
                .map(|t| Duration::from_nanos(t.as_nanos().saturating_sub(self.now().as_nanos())))
                .unwrap_or(Duration::from_secs(1));
            let (mut events, mut inputs) = (Vec::new(), Vec::new());
            let mut shutdown = false;
            match self
                .inbox
                .receive(wait, BATCH_INPUTS_MAX, &mut events, &mut inputs)
            {
                Received::Some => {}
                Received::TimedOut => inputs.push(Input::Tick),
                Received::Disconnected => shutdown = true,
            }
            for event in events {
                shutdown |= self.take(event, &mut inputs);
            }
            self.snapshot_decoder.divert(&mut inputs);
            let now = self.now();
            // After the time is read: see `local_keepalives`.
            self.keepalives.hand_over(&mut self.node);
            // The request first: a stream asks for a view after it counts itself as watching.
            let view_requested = self.watch.take_view_request();
            self.node.set_watched(self.watch.is_watched());
            if view_requested {
                self.node.refresh_watch_view();
            }
            self.reads.batch_starts();
            let inputs_count = inputs.len();
            self.node.handle_batch(now, inputs);
            self.slow_batches.note(now, self.now(), inputs_count);
            // Before the batch's messages leave, not only its answers: a follower acknowledges
            // what this leader's messages tell it is committed, and a keepalive sent here after
            // that must not be acknowledged from a lease table older than the commit.
            self.keepalives.refresh(&self.node);
            // Before the batch's answers leave: a Status answer that names a leader must not
            // reach `/metrics` before the count of leaders seen includes it.
            self.log_leadership();
            if let Some(exit) = self.dispatch_outputs() {
                self.disk.shutdown();
                return exit;
            }
            if !self.announced_ready && self.node.leader_id().is_some() {
                self.announced_ready = true;
                log::info!("{}", self.ready_message);
            }
            if shutdown {
                self.disk.shutdown();
                return Exit::Shutdown;
            }
        }
    }

    /// One log line per change of this member's leadership or snapshot installed, so operators
    /// (and tests) can tell what happened; and a count of the leaders seen, for `/metrics`.
    fn log_leadership(&mut self) {
        if self.node.snapshots_installed() > self.snapshots_installed {
            self.snapshots_installed = self.node.snapshots_installed();
            let decoded = self.node.snapshots_installed_decoded() > self.snapshots_decoded;
            self.snapshots_decoded = self.node.snapshots_installed_decoded();
            log::info!(
                "detcd: installed a snapshot at index {} from the leader (decoded {} the node's thread)",
                self.node.snapshot_index(),
                if decoded { "off" } else { "on" }
            );
        }
        let leader_id = self.node.leader_id();
        self.presence.set(leader_id.is_some());
        if leader_id.is_some() && leader_id != self.last_leader {
            self.metrics.leader_changed();
        }
        self.last_leader = leader_id;
        let leader = self.node.is_leader();
        if leader != self.was_leader {
            self.was_leader = leader;
            if leader {
                log::info!("detcd: became leader at term {}", self.node.term());
            } else {
                log::info!("detcd: lost leadership at term {}", self.node.term());
            }
        }
    }

    /// Turns a channel event into a node input; true when it asks for shutdown.
    fn take(&mut self, event: Event, inputs: &mut Vec<Input>) -> bool {
        match event {
            Event::Client {
                request,
                credentials,
                reply,
            } => {
                self.handle.taken();
                self.next_request += 1;
                let id = RequestId(self.next_request);
                self.replies.insert(id, reply);
                inputs.push(Input::Client {
                    id,
                    request,
                    credentials,
                });
            }
            Event::Peer { from, msg } => {
                self.handle.taken();
                inputs.push(Input::Peer { from, msg });
            }
            Event::DecodedSnapshot { from, snapshot } => {
                self.snapshot_decoder.taken();
                inputs.push(Input::DecodedSnapshot { from, snapshot });
            }
            Event::DiskDone { io, result } => inputs.push(Input::DiskDone { io, result }),
            Event::Wake => {
                self.handle.taken();
                inputs.push(Input::Tick);
            }
            Event::Hashed { revision, hash } => {
                inputs.push(Input::Hashed { revision, hash });
            }
            Event::View { reply } => {
                self.handle.taken();
                // Between batches: every cold write the view reads has been carried out.
                let _ = reply.send((self.node.state().view(), self.cold.reader()));
            }
            Event::Shutdown => return true,
            Event::PeerConnection(_) => unreachable!("the inbox adopts connections"),
        }
        false
    }

    /// Computes a compaction's hash on a thread of its own (it reads every superseded value
    /// up to the revision) and hands it back to the node.
    fn hash_off_thread(&self, revision: i64, view: crate::mvcc::KeySpaceView) {
        let cold = self.cold.reader();
        let tx = self.handle.tx.clone();
        let spawned =
            std::thread::Builder::new()
                .name("detcd-hash".into())
                .spawn(move || match view.hash_kv(revision, &cold) {
                    Ok((hash, _)) => {
                        tx.send(Event::Hashed { revision, hash });
                    }
                    Err(e) => {
                        log::error!("detcd: cannot hash the key space at revision {revision}: {e}")
                    }
                });
        if let Err(e) = spawned {
            log::error!("detcd: cannot start the hash thread: {e}");
        }
    }

    /// Carries out every output; returns the reason if the node stopped.
    fn dispatch_outputs(&mut self) -> Option<Exit> {
        let mut stopped = None;
        // Answers go out after the batch's watch feed, so that whatever a client learns from
        // an answer, a watch it creates next has seen too.
        let mut answers = Vec::new();
        // The batch's disk operations go last: this thread may carry them out itself (see
        // `DiskExecutor::submit_all`), and peers and clients should not wait for that.
        let mut disk_ops = Vec::new();
        // Each peer's messages go out together, in one write when its socket takes them.
        let mut sends = Vec::new();
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send { to, msg } => sends.push((to, msg)),
                Output::SendSnapshot { to, snapshot } => {
                    self.peers.send_snapshot(to, *snapshot, self.cold.reader())
                }
                Output::Disk { io, op } => {
                    let cold = match &op {
                        DiskOp::SaveSnapshot { .. } => self.cold.reader(),
                        _ => ColdReader::default(),
                    };
                    disk_ops.push((io, op, cold));
                }
                Output::Cold(op) => {
                    if let Err(e) = self.cold.apply(&op) {
                        // The node let go of values it believes are on disk; serving on would
                        // answer reads of the past wrongly.
                        stopped = Some(Exit::Failed(e));
                    }
                }
                Output::Reply { id, result, cold } => {
                    if let Some(reply) = self.replies.remove(&id) {
                        let reader = if cold.is_empty() {
                            ColdReader::default()
                        } else {
                            self.cold.reader()
                        };
                        answers.push((
                            reply,
                            Reply {
                                result,
                                cold,
                                reader,
                            },
                        ));
                    }
                }
                Output::Stopped { reason } => {
                    stopped = Some(match reason {
                        StopReason::Removed => Exit::Removed,
                        other => Exit::Failed(other.to_string()),
                    })
                }
                Output::Watch(feed) => self.watch.offer(feed, self.cold.reader()),
                Output::HashAt { revision, view } => self.hash_off_thread(revision, view),
                Output::Free(replaced) => free_off_thread(replaced),
                Output::Members(members) => {
                    self.peers.follow(super::peer::peer_addresses(&members));
                    let removed = self.node.state().members().removed().collect();
                    self.members.set(self.node.cluster_id(), members, removed);
                }
                // The server runs without `observe`; nothing to carry out.
                Output::Proposed { .. } | Output::Applied { .. } => {}
            }
        }
        self.reads.refresh(&self.node);
        let auth_enabled = self.node.state().auth().is_enabled();
        self.handle
            .auth_enabled
            .store(auth_enabled, Ordering::Release);
        // Answers before messages: what is answered is applied, so nothing a peer is told
        // here bears on it, and a leader's commit notices would hold up the answers to the
        // very writes they announce.
        for (reply, answer) in answers {
            // The client may have gone away; its answer is simply dropped.
            let _ = reply.send(answer);
        }
        self.peers.send_all(sends);
        self.disk.submit_all(disk_ops);
        stopped
    }
}

/// Drops a state a snapshot replaced on a thread of its own: at 100,000 keys that takes longer
/// than the batch that installed the snapshot. Installs are rare, so a thread each.
fn free_off_thread(replaced: Box<ReplacedState>) {
    let spawned = std::thread::Builder::new()
        .name("detcd-free".into())
        .spawn(move || drop(replaced));
    if let Err(e) = spawned {
        log::warning!("detcd: cannot start a thread to free a replaced state: {e}");
    }
}
