//! Peer connections the node's thread reads itself. A plain-TCP connection whose handshake
//! checked out on the listener's task is handed to the driver ([`AdoptedPeer`]), which
//! registers it with the poll its thread waits on (`server::inbox`). A peer's message then
//! reaches the node on the thread that steps it, with no second thread to wake in between:
//! that hand-off took about 30 us here, twice on every write's path (the append at a
//! follower, its acknowledgement at the leader). TLS connections stay on their tasks.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::wire::{self, Handshake, MessageReader, WireError, MESSAGE_BYTES_MAX};
use crate::node::Input;
use crate::server::log;

/// The bytes one connection may read in a turn before the others get theirs.
const TURN_BYTES_MAX: usize = 4 << 20;
/// Members are few; as many connections as the listener itself accepts at once.
const CONNECTIONS_MAX: usize = 1024;

/// A checked connection on its way from the listener's task to the node's thread, with the
/// bytes that arrived behind its handshake.
pub struct AdoptedPeer {
    pub(super) stream: std::net::TcpStream,
    pub(super) addr: SocketAddr,
    pub(super) handshake: Handshake,
    pub(super) early: Vec<u8>,
}

struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
    handshake: Handshake,
    reader: MessageReader,
}

/// How a connection's turn ended.
enum Turn {
    /// Everything it had was read and every whole message taken.
    Drained,
    /// It may have more: the turn's room or its bytes ran out first.
    More,
    /// The peer closed it between messages.
    Closed,
}

/// The connections the node's thread reads, by poll token (`first_token` onwards).
pub struct NodeInbound {
    first_token: usize,
    connections: Vec<Option<Connection>>,
    /// Connections whose last turn ended before they were drained: no readiness event will
    /// come for what they already hold.
    backlog: Vec<usize>,
}

impl NodeInbound {
    pub fn new(first_token: usize) -> NodeInbound {
        NodeInbound {
            first_token,
            connections: Vec::new(),
            backlog: Vec::new(),
        }
    }

    /// Registers a handed-over connection; its first turn comes with the backlog's, for the
    /// bytes that came with its handshake.
    pub fn adopt(&mut self, registry: &Registry, peer: AdoptedPeer) {
        let AdoptedPeer {
            stream,
            addr,
            handshake,
            early,
        } = peer;
        let slot = match self.connections.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if self.connections.len() < CONNECTIONS_MAX => {
                self.connections.push(None);
                self.connections.len() - 1
            }
            None => {
                log::warning!("detcd: peer {addr}: refused, {CONNECTIONS_MAX} connections open");
                return;
            }
        };
        let mut stream = TcpStream::from_std(stream);
        let token = Token(self.first_token + slot);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
            log::warning!("detcd: peer {addr}: closing connection: {e}");
            return;
        }
        let reader = MessageReader::new(MESSAGE_BYTES_MAX).with_bytes(&early);
        self.connections[slot] = Some(Connection {
            stream,
            addr,
            handshake,
            reader,
        });
        self.backlog.push(slot);
    }

    /// Whether `token` is one of these connections'.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token
    }

    /// A connection became readable: its turn, adding at most `room` messages to `inputs`.
    pub fn readable(
        &mut self,
        registry: &Registry,
        token: Token,
        inputs: &mut Vec<Input>,
        room: usize,
    ) {
        self.turn(registry, token.0 - self.first_token, inputs, room);
    }

    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// A turn for each connection in the backlog while there is room.
    pub fn serve_backlog(&mut self, registry: &Registry, inputs: &mut Vec<Input>, room: usize) {
        let limit = inputs.len() + room;
        for slot in std::mem::take(&mut self.backlog) {
            let room = limit.saturating_sub(inputs.len());
            self.turn(registry, slot, inputs, room);
        }
    }

    fn turn(&mut self, registry: &Registry, slot: usize, inputs: &mut Vec<Input>, room: usize) {
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match connection.take(inputs, room) {
            Ok(Turn::Drained) => {}
            Ok(Turn::More) => {
                if !self.backlog.contains(&slot) {
                    self.backlog.push(slot);
                }
            }
            Ok(Turn::Closed) => self.close(registry, slot),
            Err(e) => {
                log::warning!("detcd: peer {}: closing connection: {e}", connection.addr);
                self.close(registry, slot);
            }
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut connection) = self.connections[slot].take() {
            let _ = registry.deregister(&mut connection.stream);
        }
        self.backlog.retain(|&s| s != slot);
    }
}

impl Connection {
    /// Takes the whole messages it holds and reads more, until its socket has nothing left,
    /// `room` messages were taken or a turn's bytes were read.
    fn take(&mut self, inputs: &mut Vec<Input>, room: usize) -> Result<Turn, WireError> {
        let mut taken = 0;
        let mut read = 0;
        loop {
            while taken < room {
                let Some((kind, bytes)) = self.reader.next()? else {
                    break;
                };
                let msg = wire::decode_message(kind, bytes, &self.handshake)?;
                inputs.push(Input::Peer {
                    from: self.handshake.from,
                    msg,
                });
                taken += 1;
            }
            if taken == room || read >= TURN_BYTES_MAX {
                return Ok(Turn::More);
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => {
                    self.reader.ended()?;
                    return Ok(Turn::Closed);
                }
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
