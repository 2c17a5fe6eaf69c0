//! The dialling side: one task per peer owns one long-lived connection. The driver's thread
//! writes a message straight to the peer's socket when nothing waits before it and the socket
//! takes it at once (the common case: a thread wake-up saved on every hop of every write);
//! otherwise the message waits, bounded, for the peer's task, which also dials, redials and
//! writes snapshots. `send` never waits on the network; whatever does not fit, or is in flight
//! when a connection breaks, is dropped and counted. Over TLS, every message goes through the
//! task, which owns the session.

use crate::server::log;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio::time::{timeout, Instant};

use super::forward;
use super::wire::{self, Handshake, Kind, MESSAGE_BYTES_MAX};
use super::PeerIdentity;
use crate::node::{MemberId, OutgoingSnapshot, PeerMessage};
use crate::server::disk::ColdReader;
use crate::server::tls::PeerConnector;

/// Messages waiting for one peer. Raft sends a few messages per tick per peer; a queue this deep
/// only fills while the peer is unreachable, and then older messages are as good as lost anyway.
pub(super) const QUEUE_MESSAGES_MAX: usize = 4096;
/// Bytes waiting for one peer, past which messages are dropped (one message may always wait).
const WAITING_BYTES_MAX: usize = 64 << 20;
/// Snapshots waiting for one peer's task; raft sends another if one is dropped.
const SNAPSHOTS_WAITING_MAX: usize = 4;
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

/// Framed messages waiting for one peer's connection, shared by the driver's thread and the
/// peer's task.
#[derive(Default)]
struct Outbox {
    waiting: Mutex<Waiting>,
    /// Wakes the task when bytes start waiting.
    wake: Notify,
}

#[derive(Default)]
struct Waiting {
    /// The connection, once its handshake is written, until it breaks.
    stream: Option<Arc<TcpStream>>,
    /// Framed messages not yet written, oldest first. May start in the middle of a message
    /// whose beginning the socket took, so it never outlives its connection.
    bytes: Vec<u8>,
    /// Messages (or their rests) in `bytes`.
    messages: usize,
    /// The task is writing bytes it took from here, or a snapshot: nothing may overtake them.
    writing: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .expect("no thread panics holding a peer's outbox")
    }

    /// Writes `framed` (`messages` whole messages) to the socket at once if nothing waits
    /// before it; what the socket does not take waits for the task. Dropped (and counted) when
    /// too much waits already.
    fn push(&self, framed: &[u8], messages: usize, counters: &Counters) {
        let mut waiting = self.lock();
        let mut rest = framed;
        if waiting.bytes.is_empty() && !waiting.writing {
            if let Some(stream) = &waiting.stream {
                rest = &framed[write_now(stream, framed)..];
                if rest.is_empty() {
                    Counters::add(&counters.sent, messages);
                    return;
                }
            }
        }
        let full = waiting.messages + messages > QUEUE_MESSAGES_MAX
            || (!waiting.bytes.is_empty() && waiting.bytes.len() + rest.len() > WAITING_BYTES_MAX);
        // Messages the socket took part of must finish, or the peer would read garbage.
        if full && rest.len() == framed.len() {
            Counters::add(&counters.dropped, messages);
            return;
        }
        waiting.bytes.extend_from_slice(rest);
        waiting.messages += messages;
        drop(waiting);
        self.wake.notify_one();
    }
}

/// Writes what the socket takes without waiting; returns how much that was. An error counts as
/// nothing more written: the task meets it on its next write or read.
fn write_now(stream: &TcpStream, bytes: &[u8]) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match stream.try_write(&bytes[written..]) {
            Ok(n) if n > 0 => written += n,
            _ => break,
        }
    }
    written
}

struct Peer {
    outbox: Arc<Outbox>,
    snapshots: mpsc::Sender<(OutgoingSnapshot, ColdReader)>,
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
    /// Dials with TLS, if the peers speak it.
    tls: Option<PeerConnector>,
}

impl PeerSender {
    /// Spawns one task per peer on the current tokio runtime (panics outside one). `peers` maps
    /// member ids to `host:port`; an entry for `me` is ignored, since a member never dials itself.
    /// With `tls`, every peer is dialled with TLS.
    pub fn new(
        me: PeerIdentity,
        peers: BTreeMap<MemberId, String>,
        on_removed: OnRemoved,
        tls: Option<PeerConnector>,
    ) -> PeerSender {
        let mut sender = PeerSender {
            me,
            on_removed,
            peers: BTreeMap::new(),
            leaving: BTreeMap::new(),
            unknown_dropped: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
            tls,
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
                let removed = self.on_removed.clone();
                let peer = spawn_peer(me, id, addr.clone(), removed, self.tls.clone());
                self.peers.insert(id, (addr, peer));
            }
        }
    }

    /// Sends `msg` to `to` without ever waiting, as `send_all` does.
    pub fn send(&self, to: MemberId, msg: PeerMessage) {
        self.send_all(vec![(to, msg)]);
    }

    /// Sends messages without ever waiting: each peer's, in order, in one write when its socket
    /// takes them at once, otherwise left for the peer's task. Dropped (and counted) when the
    /// peer is unknown, a message cannot be sent, or too much waits already: raft retransmits
    /// what matters.
    pub fn send_all(&self, messages: Vec<(MemberId, PeerMessage)>) {
        let mut framed: BTreeMap<MemberId, (Vec<u8>, usize)> = BTreeMap::new();
        for (to, msg) in messages {
            let Some(peer) = self.peer(to) else { continue };
            let encoded = match msg {
                PeerMessage::Raft(msg) => {
                    (Kind::Raft, msg.write_to_bytes().map_err(|e| e.to_string()))
                }
                other => (
                    Kind::Forward,
                    Ok(forward::encode(&other).expect("not a raft message")),
                ),
            };
            if let Some((kind, bytes)) = sendable(to, encoded, &peer.counters) {
                let (buffer, count) = framed.entry(to).or_default();
                wire::frame_message(&bytes, kind, buffer);
                *count += 1;
            }
        }
        for (to, (bytes, count)) in framed {
            let peer = self.peer(to).expect("known above");
            peer.outbox.push(&bytes, count, &peer.counters);
        }
    }

    /// Queues a snapshot for `to`, as `send` does; the peer's task encodes its data.
    pub fn send_snapshot(&self, to: MemberId, snapshot: OutgoingSnapshot, cold: ColdReader) {
        let Some(peer) = self.peer(to) else { return };
        if peer.snapshots.try_send((snapshot, cold)).is_err() {
            Counters::add(&peer.counters.dropped, 1);
        }
    }

    fn peer(&self, to: MemberId) -> Option<&Peer> {
        let peer = match self.peers.get(&to) {
            Some((_, peer)) => Some(peer),
            None => self.leaving.get(&to),
        };
        if peer.is_none() {
            Counters::add(&self.unknown_dropped, 1);
        }
        peer
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

fn spawn_peer(
    me: PeerIdentity,
    to: MemberId,
    addr: String,
    removed: OnRemoved,
    tls: Option<PeerConnector>,
) -> Peer {
    let (snapshots, snapshots_rx) = mpsc::channel(SNAPSHOTS_WAITING_MAX);
    let counters = Arc::new(Counters::default());
    let outbox = Arc::new(Outbox::default());
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
        outbox: Arc::clone(&outbox),
        removed,
        tls,
    };
    let task = tokio::spawn(link.run(snapshots_rx)).abort_handle();
    Peer {
        outbox,
        snapshots,
        counters,
        task,
    }
}

/// An encoded message that may go on the wire, or `None` after dropping (and counting) one no
/// listener would accept.
fn sendable(
    to: MemberId,
    (kind, encoded): (Kind, Result<Vec<u8>, String>),
    counters: &Counters,
) -> Option<(Kind, Vec<u8>)> {
    let why = match encoded {
        // Sending it would make the listener drop the connection, on every retry.
        Ok(bytes) if bytes.len() > MESSAGE_BYTES_MAX => {
            format!("dropping a {}-byte message", bytes.len())
        }
        Ok(bytes) => return Some((kind, bytes)),
        Err(e) => format!("dropping an unencodable message: {e}"),
    };
    log::warning!("detcd: peer {to:x}: {why}");
    Counters::add(&counters.dropped, 1);
    None
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

/// Everything a peer task needs besides its snapshot queue.
struct Link {
    to: MemberId,
    addr: String,
    handshake: Handshake,
    counters: Arc<Counters>,
    outbox: Arc<Outbox>,
    removed: OnRemoved,
    tls: Option<PeerConnector>,
}

/// Called with the peer that said the cluster removed this member.
pub type OnRemoved = Arc<dyn Fn(MemberId) + Send + Sync>;

type Snapshots = mpsc::Receiver<(OutgoingSnapshot, ColdReader)>;

impl Link {
    async fn run(self, mut snapshots: Snapshots) {
        let mut backoff = Backoff::new();
        let mut reachable = true; // Log the first failed dial only, not one per redial.
        loop {
            match self.connect().await {
                Ok(stream) => {
                    reachable = true;
                    Counters::add(&self.counters.connects, 1);
                    let opened = Instant::now();
                    match self.pump(stream, &mut snapshots).await {
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
        log::warning!("detcd: peer {:x} at {}: {what}", self.to, self.addr);
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        // Raft messages are small and latency-bound; we batch ourselves, so Nagle only delays.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Runs one connection: TLS's handshake if it speaks TLS, ours, then whatever waits, until
    /// something breaks. What still waits then is dropped: it may start in the middle of a
    /// message.
    async fn pump(&self, stream: TcpStream, snapshots: &mut Snapshots) -> Closed {
        let mut conn = match &self.tls {
            None => Conn::Plain(Arc::new(stream)),
            Some(tls) => match with_deadline(0, tls.connect(&self.addr, stream)).await {
                Ok(session) => {
                    let (read, write) = tokio::io::split(session);
                    Conn::Tls { read, write }
                }
                Err(e) => return Closed::Broken(e),
            },
        };
        // Written at once: the listener times out a connection that stays silent.
        let hello = self.handshake.encode();
        if let Err(e) = with_deadline(0, conn.write_all(&hello)).await {
            return Closed::Broken(e);
        }
        if let Conn::Plain(stream) = &conn {
            self.outbox.lock().stream = Some(Arc::clone(stream));
        }
        let closed = self.serve(&mut conn, snapshots).await;
        let mut waiting = self.outbox.lock();
        waiting.stream = None;
        waiting.writing = false;
        waiting.bytes = Vec::new();
        Counters::add(
            &self.counters.dropped,
            std::mem::take(&mut waiting.messages),
        );
        closed
    }

    async fn serve(&self, conn: &mut Conn, snapshots: &mut Snapshots) -> Closed {
        loop {
            if let Err(e) = self.write_waiting(conn).await {
                return Closed::Broken(e);
            }
            let snapshot = tokio::select! {
                () = self.outbox.wake.notified() => continue,
                snapshot = snapshots.recv() => snapshot,
                closed = conn.closed() => return closed,
            };
            let Some((snapshot, cold)) = snapshot else {
                return Closed::SenderGone;
            };
            if let Err(e) = self.write_snapshot(conn, snapshot, cold).await {
                return Closed::Broken(e);
            }
        }
    }

    /// Writes what waits until nothing does. Messages lost to a broken connection are counted
    /// as dropped.
    async fn write_waiting(&self, conn: &mut Conn) -> std::io::Result<()> {
        loop {
            let (bytes, messages) = {
                let mut waiting = self.outbox.lock();
                if waiting.bytes.is_empty() {
                    waiting.writing = false;
                    return Ok(());
                }
                waiting.writing = true;
                let messages = std::mem::take(&mut waiting.messages);
                (std::mem::take(&mut waiting.bytes), messages)
            };
            if let Err(e) = with_deadline(bytes.len(), conn.write_all(&bytes)).await {
                Counters::add(&self.counters.dropped, messages);
                return Err(e);
            }
            Counters::add(&self.counters.sent, messages);
        }
    }

    /// Encodes a snapshot's key space on a blocking thread (it takes time in proportion to its
    /// size) and writes it after what waits, with nothing overtaking it.
    async fn write_snapshot(
        &self,
        conn: &mut Conn,
        snapshot: OutgoingSnapshot,
        cold: ColdReader,
    ) -> std::io::Result<()> {
        let encoded = tokio::task::spawn_blocking(move || {
            let msg = snapshot.into_message(&cold).map_err(|e| e.to_string())?;
            msg.write_to_bytes().map_err(|e| e.to_string())
        })
        .await
        .expect("encoding a snapshot does not panic");
        let Some((kind, bytes)) = sendable(self.to, (Kind::Raft, encoded), &self.counters) else {
            return Ok(());
        };
        loop {
            self.write_waiting(conn).await?;
            let mut waiting = self.outbox.lock();
            if waiting.bytes.is_empty() {
                waiting.writing = true;
                break;
            }
        }
        for (header, piece) in wire::frames(&bytes, kind) {
            let written = async {
                conn.write_all(&header).await?;
                conn.write_all(piece).await
            };
            if let Err(e) = with_deadline(piece.len(), written).await {
                Counters::add(&self.counters.dropped, 1);
                return Err(e);
            }
        }
        Counters::add(&self.counters.sent, 1);
        Ok(())
    }
}

/// One connection to a peer: a plain socket, which the driver's thread may also write to, or
/// a TLS session, which only the peer's task uses.
enum Conn {
    Plain(Arc<TcpStream>),
    Tls {
        read: ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        write: WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    },
}

impl Conn {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(stream) => write_all(stream, bytes).await,
            Conn::Tls { write, .. } => {
                write.write_all(bytes).await?;
                write.flush().await
            }
        }
    }

    /// Resolves when the listener closes the connection, as [`watch_closed`] tells.
    async fn closed(&mut self) -> Closed {
        match self {
            Conn::Plain(stream) => watch_closed(stream).await,
            Conn::Tls { read, .. } => {
                let mut byte = [0u8; 1];
                closed_by(read.read(&mut byte).await, byte[0])
            }
        }
    }
}

/// Writes all of `bytes`, waiting for the socket as needed.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
async fn watch_closed(stream: &TcpStream) -> Closed {
    let mut byte = [0u8; 1];
    let read = loop {
        if let Err(e) = stream.readable().await {
            break Err(e);
        }
        match stream.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => break other,
        }
    };
    closed_by(read, byte[0])
}

/// What a read of one `byte` from the listener means.
fn closed_by(read: std::io::Result<usize>, byte: u8) -> Closed {
    Closed::Broken(match read {
        Ok(0) => std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed by peer"),
        Ok(_) if byte == wire::REMOVED_NOTICE => return Closed::Removed,
        Ok(_) => std::io::Error::new(std::io::ErrorKind::InvalidData, "peer wrote to us"),
        Err(e) => e,
    })
}
