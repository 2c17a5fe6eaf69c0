//! The listening side: accepts peer connections, checks each one's handshake and frames, and
//! hands every whole, valid message to the driver, or, given a [`HandOver`], each plain-TCP
//! connection whose handshake checked out (the node's thread reads those itself:
//! `node_inbound`). A bad connection is closed and logged; it never stops the listener or
//! reaches the node.

use crate::server::log;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::server::tls::PeerAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::join::MemberBoard;
use super::node_inbound::AdoptedPeer;
use super::wire::{self, Handshake, WireError, MESSAGE_BYTES_MAX};
use super::PeerIdentity;
use crate::node::{MemberId, PeerMessage};

/// A dialler that connects but does not introduce itself must not hold a connection forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Members are few; this many inbound connections at once means something is misbehaving, and
/// refusing more keeps it from exhausting our file descriptors and memory.
const CONNECTIONS_MAX: usize = 1024;
/// After a failed accept (typically out of file descriptors), retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Takes a plain-TCP connection whose handshake checked out, to read it elsewhere.
pub type HandOver = Arc<dyn Fn(AdoptedPeer) + Send + Sync>;

/// Accepts peer connections on `listener` for as long as the returned future is polled, and hands
/// every valid message to `deliver(from, msg)`. `deliver` is called from many tasks and must not
/// block; it may drop the message when the node's queue is full (raft retransmits). With `tls`,
/// each connection is read once its TLS handshake is done; without, and with `hand_over`, each
/// connection goes to `hand_over` once its handshake checked out.
///
/// Dropping the future closes the listener and every connection it is still reading.
pub async fn serve<F>(
    listener: TcpListener,
    (tls, hand_over): (Option<PeerAcceptor>, Option<HandOver>),
    me: PeerIdentity,
    board: Arc<MemberBoard>,
    deliver: F,
) where
    F: Fn(MemberId, PeerMessage) + Send + Sync + 'static,
{
    let deliver = Arc::new(deliver);
    // The JoinSet owns the connection tasks, so dropping `serve` aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) if connections.len() < CONNECTIONS_MAX => {
                    let connection = Connection { addr, me, board: Arc::clone(&board), deliver: Arc::clone(&deliver) };
                    connections.spawn(connection.handle(stream, tls.clone(), hand_over.clone()));
                }
                Ok((_, addr)) => log::warning!("detcd: peer {addr}: refused, {CONNECTIONS_MAX} connections open"),
                Err(e) => {
                    log::warning!("detcd: peer listener: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One accepted connection and what reading it needs.
struct Connection<F> {
    addr: SocketAddr,
    me: PeerIdentity,
    board: Arc<MemberBoard>,
    deliver: Arc<F>,
}

impl<F: Fn(MemberId, PeerMessage)> Connection<F> {
    async fn handle(
        self,
        stream: TcpStream,
        tls: Option<PeerAcceptor>,
        hand_over: Option<HandOver>,
    ) {
        let Some(tls) = tls else {
            if let Some(hand_over) = hand_over {
                return self.hand_over(stream, &*hand_over).await;
            }
            let (read, write) = stream.into_split();
            return self.serve(read, write).await;
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream, self.addr.ip())).await {
            Ok(Ok(stream)) => {
                let (read, write) = tokio::io::split(stream);
                self.serve(read, write).await;
            }
            Ok(Err(e)) => log::warning!("detcd: peer {}: rejected connection: {e}", self.addr),
            Err(_) => log::warning!(
                "detcd: peer {}: rejected connection: TLS handshake timed out",
                self.addr
            ),
        }
    }

    async fn serve<R, W>(self, read: R, write: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match receive(read, self.me, &self.board, &*self.deliver).await {
            Ok(Ended::Closed) => {}
            Ok(Ended::JoinQuestion) => self.board.answer(write).await,
            Ok(Ended::Removed) => self.board.refuse_removed(write).await,
            Err(e) => log::warning!("detcd: peer {}: closing connection: {e}", self.addr),
        }
    }
}

impl<F> Connection<F> {
    /// Reads the handshake, answers what is not a member's connection, and hands a member's
    /// over with the bytes that came behind its handshake.
    async fn hand_over(self, stream: TcpStream, hand_over: &(dyn Fn(AdoptedPeer) + Send + Sync)) {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
        let handshake = match open(&mut reader, self.me, &self.board).await {
            Ok(Opened::Member(handshake)) => handshake,
            Ok(Opened::JoinQuestion) => return self.board.answer(reader.into_inner()).await,
            Ok(Opened::Removed) => return self.board.refuse_removed(reader.into_inner()).await,
            Err(e) => {
                return log::warning!("detcd: peer {}: closing connection: {e}", self.addr);
            }
        };
        let early = reader.buffer().to_vec();
        match reader.into_inner().into_std() {
            Ok(stream) => hand_over(AdoptedPeer {
                stream,
                addr: self.addr,
                handshake,
                early,
            }),
            Err(e) => log::warning!("detcd: peer {}: closing connection: {e}", self.addr),
        }
    }
}

/// What a connection's handshake says it is.
enum Opened {
    /// A member's, to read messages from.
    Member(Handshake),
    /// A joining member's question for the member list (see `join`).
    JoinQuestion,
    /// A member's that the cluster removed.
    Removed,
}

/// Reads and checks a connection's handshake.
async fn open<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    me: PeerIdentity,
    board: &MemberBoard,
) -> Result<Opened, WireError> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::read_handshake(reader))
        .await
        .map_err(|_| WireError::HandshakeTimeout)??;
    if handshake.is_join_question() {
        return Ok(Opened::JoinQuestion);
    }
    handshake.check(me)?;
    if board.is_removed(handshake.from) {
        return Ok(Opened::Removed);
    }
    Ok(Opened::Member(handshake))
}

/// How a connection ended well.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The dialler closed it.
    Closed,
    /// It was a joining member's question for the member list (see `join`).
    JoinQuestion,
    /// The dialer is a member the cluster removed.
    Removed,
}

/// Reads one connection to its end. Returns `Ok` only when the dialler closed it cleanly.
/// Generic over the stream so tests can check each refusal's reason on bytes in memory.
pub(super) async fn receive<S, F>(
    stream: S,
    me: PeerIdentity,
    board: &MemberBoard,
    deliver: &F,
) -> Result<Ended, WireError>
where
    S: AsyncRead + Unpin,
    F: Fn(MemberId, PeerMessage),
{
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let handshake = match open(&mut reader, me, board).await? {
        Opened::Member(handshake) => handshake,
        Opened::JoinQuestion => return Ok(Ended::JoinQuestion),
        Opened::Removed => return Ok(Ended::Removed),
    };
    while let Some((kind, bytes)) = wire::read_message(&mut reader, MESSAGE_BYTES_MAX).await? {
        let msg = wire::decode_message(kind, bytes, &handshake)?;
        deliver(handshake.from, msg);
    }
    Ok(Ended::Closed)
}
