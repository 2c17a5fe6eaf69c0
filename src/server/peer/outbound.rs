//! The dialling side: one task per peer owns one long-lived connection and a bounded queue.
//! `send` only ever enqueues, so the driver thread never waits on the network; whatever does not
//! fit, or is in flight when a connection breaks, is dropped and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{timeout, Instant};

use super::forward;
use super::wire::{self, Handshake, Kind, MESSAGE_BYTES_MAX};
use super::PeerIdentity;
use crate::node::{MemberId, OutgoingSnapshot, PeerMessage};
use crate::server::disk::ColdReader;

/// Messages waiting for one peer. Raft sends a few messages per tick per peer; a queue this deep
/// only fills while the peer is unreachable, and then older messages are as good as lost anyway.
pub(super) const QUEUE_MESSAGES_MAX: usize = 4096;
/// Messages written per flush; the queue bound already limits it, this keeps one flush short.
const BATCH_MESSAGES_MAX: usize = 256;
const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// A restarted member learns who leads only once the leader's link redials it, and answers no
/// client until then: at 2 s, clients of a restarted member stalled 0.6-0.9 s (etcd redials
/// every 100 ms). A refused dial to a loopback or LAN peer costs next to nothing.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// A connection that lived this long proves the peer accepts us, so the next redial is prompt;
/// one that dies sooner (e.g. rejected handshake) keeps the backoff at its longest.
const CONNECTION_STABLE: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long (plus a second per MiB, for snapshots on slow
/// links) means the peer is stuck or gone without a reset; redialling is the only way out.
const WRITE_TIMEOUT_BASE: Duration = Duration::from_secs(5);
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Counters of one peer's traffic, or their sum over all peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages written and flushed to a connection (not necessarily received).
    pub sent: u64,
    /// Messages given up: queue full, unknown peer, oversized, or lost with a broken connection.
    pub dropped: u64,
    /// Connections established.
    pub connects: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    connects: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PeerStats {
        PeerStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

/// What waits in a peer's queue.
enum Outgoing {
    Message(PeerMessage),
    /// Encoded by the peer task, on a blocking thread, when its turn comes, reading superseded
    /// values from the cold segments pinned when it was queued.
    Snapshot(OutgoingSnapshot, ColdReader),
}

struct Peer {
    queue: mpsc::Sender<Outgoing>,
    counters: Arc<Counters>,
    task: AbortHandle,
}

/// How long a peer that left the member list may still send what was queued for it.
const REMOVED_PEER_DRAIN: Duration = Duration::from_secs(5);

/// Sends raft messages to the other members. Dropping it stops every peer task and closes their
/// connections.
pub struct PeerSender {
    me: PeerIdentity,
    on_removed: OnRemoved,
    peers: BTreeMap<MemberId, (String, Peer)>,
    /// Members that left the list, whose tasks may still send a last notice for a while.
    leaving: BTreeMap<MemberId, Peer>,
    unknown_dropped: AtomicU64,
    /// Where peer tasks run: the member list changes on the node's thread, outside tokio.
    runtime: tokio::runtime::Handle,
}

impl PeerSender {
    /// Spawns one task per peer on the current tokio runtime (panics outside one). `peers` maps
    /// member ids to `host:port`; an entry for `me` is ignored, since a member never dials itself.
    pub fn new(
        me: PeerIdentity,
        peers: BTreeMap<MemberId, String>,
        on_removed: OnRemoved,
    ) -> PeerSender {
        let mut sender = PeerSender {
            me,
            on_removed,
            peers: BTreeMap::new(),
            leaving: BTreeMap::new(),
            unknown_dropped: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        };
        sender.follow(peers);
        sender
    }

    /// Follows the member list: dials new members, stops dialing removed ones, and redials a
    /// member whose address changed. Callable from any thread.
    pub fn follow(&mut self, peers: BTreeMap<MemberId, String>) {
        let me = self.me;
        let _guard = self.runtime.enter();
        self.leaving.retain(|_, peer| !peer.task.is_finished());
        let gone: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(id, (addr, _))| peers.get(id) != Some(addr))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let (_, peer) = self.peers.remove(&id).expect("listed above");
            // What is queued for it, or sent to it soon (a removed member's notice), may
            // still go out for a while.
            let task = peer.task.clone();
            tokio::spawn(async move {
                tokio::time::sleep(REMOVED_PEER_DRAIN).await;
                task.abort();
            });
            self.leaving.insert(id, peer);
        }
        for (id, addr) in peers {
            if id != me.member_id && !self.peers.contains_key(&id) {
                let peer = spawn_peer(me, id, addr.clone(), self.on_removed.clone());
                self.peers.insert(id, (addr, peer));
            }
        }
    }

    /// Queues `msg` for `to` without ever waiting. Dropped (and counted) when `to` is unknown or
    /// its queue is full: raft retransmits what matters.
    pub fn send(&self, to: MemberId, msg: PeerMessage) {
        self.enqueue(to, Outgoing::Message(msg));
    }

    /// Queues a snapshot for `to`, as `send` does; the peer's task encodes its data.
    pub fn send_snapshot(&self, to: MemberId, snapshot: OutgoingSnapshot, cold: ColdReader) {
        self.enqueue(to, Outgoing::Snapshot(snapshot, cold));
    }

    fn enqueue(&self, to: MemberId, item: Outgoing) {
        let peer = match self.peers.get(&to) {
            Some((_, peer)) => peer,
            None => match self.leaving.get(&to) {
                Some(peer) => peer,
                None => {
                    Counters::add(&self.unknown_dropped, 1);
                    return;
                }
            },
        };
        if peer.queue.try_send(item).is_err() {
            Counters::add(&peer.counters.dropped, 1);
        }
    }

    /// One peer's counters, `None` for an unknown peer.
    pub fn peer_stats(&self, to: MemberId) -> Option<PeerStats> {
        self.peers
            .get(&to)
            .map(|(_, peer)| peer.counters.snapshot())
    }

    /// All peers' counters summed, with messages to unknown peers counted as dropped.
    pub fn stats(&self) -> PeerStats {
        let mut total = PeerStats {
            dropped: self.unknown_dropped.load(Ordering::Relaxed),
            ..PeerStats::default()
        };
        for (_, peer) in self.peers.values() {
            let s = peer.counters.snapshot();
            total.sent += s.sent;
            total.dropped += s.dropped;
            total.connects += s.connects;
        }
        total
    }
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        // A task backing off would otherwise notice the closed queue only at its next connect.
        for (_, peer) in self.peers.values() {
            peer.task.abort();
        }
    }
}

fn spawn_peer(me: PeerIdentity, to: MemberId, addr: String, removed: OnRemoved) -> Peer {
    let (queue, rx) = mpsc::channel(QUEUE_MESSAGES_MAX);
    let counters = Arc::new(Counters::default());
    let handshake = Handshake {
        cluster_id: me.cluster_id,
        from: me.member_id,
        to,
    };
    let link = Link {
        to,
        addr,
        handshake,
        counters: Arc::clone(&counters),
        removed,
    };
    let task = tokio::spawn(link.run(rx)).abort_handle();
    Peer {
        queue,
        counters,
        task,
    }
}

/// Exponential backoff between dials. No jitter: a member dials each peer from its own task, so
/// there is no herd to spread.
#[derive(Debug)]
pub(super) struct Backoff {
    delay: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            delay: BACKOFF_INITIAL,
        }
    }

    /// The delay to wait now; the next one is twice as long, up to BACKOFF_MAX.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (delay * 2).min(BACKOFF_MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.delay = BACKOFF_INITIAL;
    }
}

/// Why a connection ended.
enum Closed {
    /// The `PeerSender` is gone: the task ends.
    SenderGone,
    /// The peer says the cluster removed this member.
    Removed,
    /// The connection broke or the peer closed it: redial.
    Broken(std::io::Error),
}

/// Everything a peer task needs besides its queue.
struct Link {
    to: MemberId,
    addr: String,
    handshake: Handshake,
    counters: Arc<Counters>,
    removed: OnRemoved,
}

/// Called with the peer that said the cluster removed this member.
pub type OnRemoved = Arc<dyn Fn(MemberId) + Send + Sync>;

impl Link {
    async fn run(self, mut queue: mpsc::Receiver<Outgoing>) {
        let mut backoff = Backoff::new();
        let mut reachable = true; // Log the first failed dial only, not one per redial.
        loop {
            match self.connect().await {
                Ok(stream) => {
                    reachable = true;
                    Counters::add(&self.counters.connects, 1);
                    let opened = Instant::now();
                    match self.pump(stream, &mut queue).await {
                        Closed::SenderGone => return,
                        Closed::Removed => {
                            self.log(format_args!("says the cluster removed this member"));
                            (self.removed)(self.to);
                        }
                        Closed::Broken(e) => self.log(format_args!("connection lost: {e}")),
                    }
                    if opened.elapsed() >= CONNECTION_STABLE {
                        backoff.reset();
                    }
                }
                Err(e) if reachable => {
                    reachable = false;
                    self.log(format_args!("cannot connect: {e}"));
                }
                Err(_) => {}
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        eprintln!("detcd: peer {:x} at {}: {what}", self.to, self.addr);
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        // Raft messages are small and latency-bound; we batch ourselves, so Nagle only delays.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Runs one connection: the handshake, then batches from the queue until something breaks.
    async fn pump(&self, stream: TcpStream, queue: &mut mpsc::Receiver<Outgoing>) -> Closed {
        let (mut read_half, write_half) = stream.into_split();
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
        // Flushed at once: the listener times out a connection that stays silent.
        let hello = self.handshake.encode();
        if let Err(e) = with_deadline(0, async {
            writer.write_all(&hello).await?;
            writer.flush().await
        })
        .await
        {
            return Closed::Broken(e);
        }
        let mut batch = Vec::with_capacity(BATCH_MESSAGES_MAX);
        loop {
            tokio::select! {
                received = queue.recv_many(&mut batch, BATCH_MESSAGES_MAX) => {
                    if received == 0 {
                        return Closed::SenderGone;
                    }
                }
                closed = watch_closed(&mut read_half) => return closed,
            }
            let encoded = self.encode_batch(batch.drain(..)).await;
            let counter = match write_batch(&mut writer, &encoded).await {
                Ok(()) => &self.counters.sent,
                // What was in the batch may or may not have arrived; raft copes either way.
                Err(e) => {
                    Counters::add(&self.counters.dropped, encoded.len());
                    return Closed::Broken(e);
                }
            };
            Counters::add(counter, encoded.len());
        }
    }

    /// Encodes a batch, dropping (and counting) what no listener would accept. A snapshot's key
    /// space is encoded on a blocking thread: it takes time in proportion to its size.
    async fn encode_batch(&self, batch: impl Iterator<Item = Outgoing>) -> Vec<(Kind, Vec<u8>)> {
        let mut encoded = Vec::new();
        for item in batch {
            let (kind, bytes) = match item {
                Outgoing::Message(PeerMessage::Raft(msg)) => {
                    (Kind::Raft, msg.write_to_bytes().map_err(|e| e.to_string()))
                }
                Outgoing::Message(other) => (
                    Kind::Forward,
                    Ok(forward::encode(&other).expect("not a raft message")),
                ),
                Outgoing::Snapshot(snapshot, cold) => (
                    Kind::Raft,
                    tokio::task::spawn_blocking(move || {
                        let msg = snapshot.into_message(&cold).map_err(|e| e.to_string())?;
                        msg.write_to_bytes().map_err(|e| e.to_string())
                    })
                    .await
                    .expect("encoding a snapshot does not panic"),
                ),
            };
            match bytes {
                // Sending it would make the listener drop the connection, on every retry.
                Ok(bytes) if bytes.len() > MESSAGE_BYTES_MAX => {
                    self.log(format_args!("dropping a {}-byte message", bytes.len()));
                    Counters::add(&self.counters.dropped, 1);
                }
                Ok(bytes) => encoded.push((kind, bytes)),
                Err(e) => {
                    self.log(format_args!("dropping an unencodable message: {e}"));
                    Counters::add(&self.counters.dropped, 1);
                }
            }
        }
        encoded
    }
}

/// Writes a batch with one flush at the end.
async fn write_batch(
    writer: &mut BufWriter<OwnedWriteHalf>,
    encoded: &[(Kind, Vec<u8>)],
) -> std::io::Result<()> {
    for (kind, bytes) in encoded {
        with_deadline(bytes.len(), wire::write_message(writer, bytes, *kind)).await?;
    }
    with_deadline(0, writer.flush()).await
}

/// Bounds a write of `bytes` so a peer that stops reading cannot stall its task forever.
async fn with_deadline<T>(
    bytes: usize,
    write: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let allowed = WRITE_TIMEOUT_BASE + Duration::from_secs((bytes >> 20) as u64);
    timeout(allowed, write)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Resolves when the listener closes the connection. The listener writes nothing but the
/// notice that this member was removed, so any read that returns is the end: EOF, a reset, the
/// notice, or bytes that have no business being there.
async fn watch_closed(read_half: &mut OwnedReadHalf) -> Closed {
    let mut byte = [0u8; 1];
    Closed::Broken(match read_half.read(&mut byte).await {
        Ok(0) => std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed by peer"),
        Ok(_) if byte[0] == wire::REMOVED_NOTICE => return Closed::Removed,
        Ok(_) => std::io::Error::new(std::io::ErrorKind::InvalidData, "peer wrote to us"),
        Err(e) => e,
    })
}
