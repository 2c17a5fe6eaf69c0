//! The peer wire format (see the parent module for the byte layout): the handshake, frames and
//! chunked messages, and the checks a listener applies to what it reads. Knows byte streams, not
//! sockets, so both ends and the tests share it.

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::PeerIdentity;
use crate::node::{MemberId, PeerMessage};

const MAGIC: [u8; 4] = *b"DTCP";
const VERSION: u32 = 2;
pub(super) const HANDSHAKE_BYTES: usize = 32;
pub(super) const FRAME_HEADER_BYTES: usize = 9;
pub(super) const FLAG_MORE: u8 = 0x01;
pub(super) const FLAG_FORWARD: u8 = 0x02;
/// The only byte a listener ever writes: "the cluster removed you" (see `join`).
pub(super) const REMOVED_NOTICE: u8 = 0x52;

/// What a message's bytes are: a raft message, or a request forwarded to the leader (or its
/// reply), told apart by the FORWARD flag every frame of the message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Raft,
    Forward,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Raft => 0,
            Kind::Forward => FLAG_FORWARD,
        }
    }
}

/// The largest payload a single frame may carry; a listener trusts a length up to this much.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 4 << 20;
/// The chunk size for messages that do not fit one frame.
pub const CHUNK_BYTES_MAX: usize = 1 << 20;
/// The largest message a listener reassembles; bounds the memory one connection can claim.
pub const MESSAGE_BYTES_MAX: usize = 512 << 20;

const _: () = assert!(CHUNK_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// Why a connection was closed. Every variant is the remote's fault or the network's, never ours.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake not received in time")]
    HandshakeTimeout,
    #[error("bad magic \"{}\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("unsupported version {0}")]
    BadVersion(u32),
    #[error("foreign cluster {theirs:x} (ours is {ours:x})")]
    ForeignCluster { ours: u64, theirs: u64 },
    #[error("meant for member {to:x}, but this is {me:x}")]
    WrongReceiver { me: MemberId, to: MemberId },
    #[error("sender member id is zero")]
    ZeroSender,
    #[error("frame of {0} bytes exceeds {FRAME_PAYLOAD_BYTES_MAX}")]
    FrameTooLarge(u32),
    #[error("unknown frame flags {0:#04x}")]
    BadFlags(u8),
    #[error("frame crc mismatch")]
    BadCrc,
    #[error("message exceeds {0} bytes")]
    MessageTooLarge(usize),
    #[error("connection ended inside a chunked message")]
    TruncatedMessage,
    #[error("undecodable raft message: {0}")]
    Decode(#[from] protobuf::ProtobufError),
    #[error(transparent)]
    Forward(#[from] super::forward::ForwardDecodeError),
    #[error("a chunked message changes kind between frames")]
    MixedKinds,
    #[error("message from {msg:x} on a connection from {conn:x}")]
    WrongFrom { conn: MemberId, msg: MemberId },
    #[error("message to {msg:x} on a connection to {conn:x}")]
    WrongTo { conn: MemberId, msg: MemberId },
}

/// The first 32 bytes of every connection: who dials whom, in which cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Handshake {
    pub cluster_id: u64,
    pub from: MemberId,
    pub to: MemberId,
}

impl Handshake {
    pub fn encode(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut out = [0u8; HANDSHAKE_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&VERSION.to_be_bytes());
        out[8..16].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[16..24].copy_from_slice(&self.from.to_be_bytes());
        out[24..32].copy_from_slice(&self.to.to_be_bytes());
        out
    }

    /// Checks only what the bytes alone can tell (magic, version); [`Handshake::check`] does the rest.
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Handshake, WireError> {
        let magic: [u8; 4] = bytes[0..4].try_into().expect("4-byte slice");
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = u32::from_be_bytes(bytes[4..8].try_into().expect("4-byte slice"));
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Handshake {
            cluster_id: u64_at(8),
            from: u64_at(16),
            to: u64_at(24),
        })
    }

    /// What a member joining the cluster sends to ask for the member list (see `join`).
    pub fn join_question() -> Handshake {
        Handshake {
            cluster_id: 0,
            from: 0,
            to: 0,
        }
    }

    pub fn is_join_question(&self) -> bool {
        *self == Handshake::join_question()
    }

    /// Whether `me` should accept this connection.
    pub fn check(&self, me: PeerIdentity) -> Result<(), WireError> {
        if self.cluster_id != me.cluster_id {
            return Err(WireError::ForeignCluster {
                ours: me.cluster_id,
                theirs: self.cluster_id,
            });
        }
        if self.to != me.member_id {
            return Err(WireError::WrongReceiver {
                me: me.member_id,
                to: self.to,
            });
        }
        if self.from == 0 {
            return Err(WireError::ZeroSender);
        }
        Ok(())
    }
}

pub(super) async fn read_handshake<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Handshake, WireError> {
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    reader.read_exact(&mut bytes).await?;
    Handshake::decode(&bytes)
}

fn frame_crc(flags: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[flags]), payload)
}

pub(super) fn frame_header(flags: u8, payload: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    let length = u32::try_from(payload.len()).expect("chunks are at most FRAME_PAYLOAD_BYTES_MAX");
    let mut out = [0u8; FRAME_HEADER_BYTES];
    out[0..4].copy_from_slice(&length.to_be_bytes());
    out[4] = flags;
    out[5..9].copy_from_slice(&frame_crc(flags, payload).to_be_bytes());
    out
}

/// How an encoded message is cut into frame payloads: whole if it fits one frame, otherwise in
/// CHUNK_BYTES_MAX pieces. Always at least one piece, so an empty message is one empty frame.
fn chunks(message: &[u8]) -> Vec<&[u8]> {
    if message.len() <= FRAME_PAYLOAD_BYTES_MAX {
        return vec![message];
    }
    message.chunks(CHUNK_BYTES_MAX).collect()
}

/// The frames of one encoded message: each frame's header and its payload, in order.
pub(super) fn frames(message: &[u8], kind: Kind) -> Vec<([u8; FRAME_HEADER_BYTES], &[u8])> {
    assert!(
        message.len() <= MESSAGE_BYTES_MAX,
        "the sender drops oversized messages first"
    );
    let pieces = chunks(message);
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let flags = kind.flag() | if i == last { 0 } else { FLAG_MORE };
            (frame_header(flags, piece), piece)
        })
        .collect()
}

/// Appends one encoded message, as frames, to `out`.
pub(super) fn frame_message(message: &[u8], kind: Kind, out: &mut Vec<u8>) {
    for (header, piece) in frames(message, kind) {
        out.extend_from_slice(&header);
        out.extend_from_slice(piece);
    }
}

/// Writes one encoded message as frames. Does not flush.
pub(super) async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &[u8],
    kind: Kind,
) -> std::io::Result<()> {
    for (header, piece) in frames(message, kind) {
        writer.write_all(&header).await?;
        writer.write_all(piece).await?;
    }
    Ok(())
}

/// Reads the next whole message, `None` when the stream ends cleanly between messages.
/// `message_bytes_max` is a parameter so tests can reach the bound without sending 512 MiB.
pub(super) async fn read_message<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    message_bytes_max: usize,
) -> Result<Option<(Kind, Vec<u8>)>, WireError> {
    let mut message = Vec::new();
    let mut kind = None;
    loop {
        if reader.fill_buf().await?.is_empty() {
            return if kind.is_none() {
                Ok(None)
            } else {
                Err(WireError::TruncatedMessage)
            };
        }
        let (frame_kind, more) = read_frame(reader, &mut message, message_bytes_max).await?;
        if kind.is_some_and(|k| k != frame_kind) {
            return Err(WireError::MixedKinds);
        }
        if more && kind.is_none() {
            let hint = chunked_size_hint(frame_kind, &message).min(message_bytes_max);
            message.reserve_exact(hint.saturating_sub(message.len()));
        }
        kind = Some(frame_kind);
        if !more {
            return Ok(Some((frame_kind, message)));
        }
    }
}

/// Appends one frame's checked payload to `message`; returns its kind and MORE flag.
async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    message: &mut Vec<u8>,
    message_bytes_max: usize,
) -> Result<(Kind, bool), WireError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let header = FrameHeader::parse(&header, message.len(), message_bytes_max)?;
    let start = message.len();
    // Reading through `take` grows the buffer as bytes arrive, so a lying length costs the liar
    // bytes on the wire before it costs us memory.
    let read = (&mut *reader)
        .take(u64::from(header.length))
        .read_to_end(message)
        .await?;
    if read != header.length as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    header.check(&message[start..])
}

/// A frame's header, its length and flags checked against the bounds before any of its
/// payload is trusted.
struct FrameHeader {
    length: u32,
    flags: u8,
    crc: u32,
}

impl FrameHeader {
    /// `message_len`: the bytes of its message that earlier frames carried.
    fn parse(
        header: &[u8; FRAME_HEADER_BYTES],
        message_len: usize,
        message_bytes_max: usize,
    ) -> Result<FrameHeader, WireError> {
        let length = u32::from_be_bytes(header[0..4].try_into().expect("4-byte slice"));
        let flags = header[4];
        let crc = u32::from_be_bytes(header[5..9].try_into().expect("4-byte slice"));
        if length as usize > FRAME_PAYLOAD_BYTES_MAX {
            return Err(WireError::FrameTooLarge(length));
        }
        if flags & !(FLAG_MORE | FLAG_FORWARD) != 0 {
            return Err(WireError::BadFlags(flags));
        }
        if message_len + length as usize > message_bytes_max {
            return Err(WireError::MessageTooLarge(message_bytes_max));
        }
        Ok(FrameHeader { length, flags, crc })
    }

    /// Checks the payload against the CRC; returns the frame's kind and MORE flag.
    fn check(&self, payload: &[u8]) -> Result<(Kind, bool), WireError> {
        if frame_crc(self.flags, payload) != self.crc {
            return Err(WireError::BadCrc);
        }
        let kind = if self.flags & FLAG_FORWARD != 0 {
            Kind::Forward
        } else {
            Kind::Raft
        };
        Ok((kind, self.flags & FLAG_MORE != 0))
    }
}

/// Whole messages out of a connection's bytes as they arrive, for a reader that is not a
/// task: the node's thread reads its peers' sockets itself (`node_inbound`). The same checks
/// as [`read_message`]; a frame's payload is buffered only as its bytes arrive.
pub(super) struct MessageReader {
    /// Bytes read: those in `start..end` not yet taken.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// A chunked message's payloads so far, and its kind.
    chunked: Vec<u8>,
    kind: Option<Kind>,
    message_bytes_max: usize,
}

/// A reader's buffer to begin with, and what it shrinks back to once a large frame was taken.
const READER_BUFFER_BYTES: usize = 64 << 10;

impl MessageReader {
    pub fn new(message_bytes_max: usize) -> MessageReader {
        MessageReader {
            buffer: vec![0; READER_BUFFER_BYTES],
            start: 0,
            end: 0,
            chunked: Vec::new(),
            kind: None,
            message_bytes_max,
        }
    }

    /// Bytes that arrived before the reader took over the stream.
    pub fn with_bytes(mut self, bytes: &[u8]) -> MessageReader {
        if bytes.len() > self.buffer.len() {
            self.buffer.resize(bytes.len(), 0);
        }
        self.buffer[..bytes.len()].copy_from_slice(bytes);
        self.end = bytes.len();
        self
    }

    /// Appends what one `read` gives; returns how many bytes (0 at the end of the stream). The
    /// buffer grows only when a frame's bytes fill it, so a lying length costs the liar bytes
    /// on the wire before it costs memory.
    pub fn read_from(&mut self, read: &mut impl std::io::Read) -> std::io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            // Between messages, not between the chunks of one, which would each grow it again.
            if self.buffer.len() > READER_BUFFER_BYTES && self.kind.is_none() {
                self.buffer = vec![0; READER_BUFFER_BYTES];
            }
        } else if self.end == self.buffer.len() && self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buffer.len() {
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        let read = read.read(&mut self.buffer[self.end..])?;
        self.end += read;
        Ok(read)
    }

    /// The next whole message, if its bytes have all arrived.
    pub fn next(&mut self) -> Result<Option<(Kind, Vec<u8>)>, WireError> {
        loop {
            let rest = &self.buffer[self.start..self.end];
            let Some(header) = rest.first_chunk::<FRAME_HEADER_BYTES>() else {
                return Ok(None);
            };
            let header = FrameHeader::parse(header, self.chunked.len(), self.message_bytes_max)?;
            let end = FRAME_HEADER_BYTES + header.length as usize;
            let Some(payload) = rest.get(FRAME_HEADER_BYTES..end) else {
                return Ok(None);
            };
            let (kind, more) = header.check(payload)?;
            if self.kind.is_some_and(|k| k != kind) {
                return Err(WireError::MixedKinds);
            }
            self.start += end;
            if more {
                if self.kind.is_none() {
                    let hint = chunked_size_hint(kind, payload).min(self.message_bytes_max);
                    self.chunked.reserve_exact(hint);
                }
                self.chunked.extend_from_slice(payload);
                self.kind = Some(kind);
                continue;
            }
            let message = if self.kind.take().is_some() {
                self.chunked.extend_from_slice(payload);
                std::mem::take(&mut self.chunked)
            } else {
                payload.to_vec()
            };
            return Ok(Some((kind, message)));
        }
    }

    /// The bytes its read buffer holds room for (bounded by the largest frame, twice).
    pub fn buffer_len(&self) -> usize {
        self.buffer.len()
    }

    /// At the end of the stream: whether it ended between messages.
    pub fn ended(&self) -> Result<(), WireError> {
        if self.kind.is_some() || self.start < self.end {
            return Err(WireError::TruncatedMessage);
        }
        Ok(())
    }
}

/// How many bytes a chunked message will take, guessed from its first chunk, so that it is
/// reassembled in one buffer instead of one that doubles (each doubling copies all that
/// arrived, and faults in twice the pages: a 70 MB snapshot cost the node's thread 80 ms).
/// Chunked raft messages are snapshots nearly always, and a snapshot message's encoding
/// names the length of its snapshot field before the field: fields are encoded in field order,
/// and those before it are numbers and the (empty) entries. 0 when the chunk shows no
/// snapshot. Only address space is reserved: pages are touched as the bytes arrive.
fn chunked_size_hint(kind: Kind, first_chunk: &[u8]) -> usize {
    /// `eraftpb::Message.snapshot`, and room for the small fields encoded after it.
    const SNAPSHOT_FIELD: u64 = 9;
    const TAIL_BYTES: usize = 256;
    if kind != Kind::Raft {
        return 0;
    }
    let mut at = 0;
    while let Some(key) = read_varint(first_chunk, &mut at) {
        let length = match key & 7 {
            0 => read_varint(first_chunk, &mut at).map(|_| 0),
            1 => Some(8),
            2 => read_varint(first_chunk, &mut at),
            5 => Some(4),
            _ => None,
        };
        let Some(length) = length.and_then(|l| usize::try_from(l).ok()) else {
            return 0;
        };
        if key >> 3 == SNAPSHOT_FIELD && key & 7 == 2 {
            return at.saturating_add(length).saturating_add(TAIL_BYTES);
        }
        at = at.saturating_add(length);
    }
    0
}

/// The protobuf varint at `*at`, moving past it; None if the bytes end first or it is too long.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Messages raft relays: a member that receives one but does not lead sends it on to the
/// leader it knows, keeping its originator in `from` (who gets the answer). After a leader
/// change a follower's read index request or proposal can reach the old leader and be relayed
/// this way; refusing it dropped the whole connection.
fn is_relayed(kind: MessageType) -> bool {
    matches!(
        kind,
        MessageType::MsgPropose | MessageType::MsgReadIndex | MessageType::MsgTransferLeader
    )
}

/// Decodes a reassembled message and checks it travels between the connection's two ends
/// (relayed messages aside, which come from the sender but on behalf of their originator).
/// A chunked raft message's byte fields (a snapshot's data) share `bytes` instead of being
/// copies: protobuf copies a field of more than 10 MB in pieces, into a buffer it doubles.
/// Smaller messages are copied from, so that an entry the log keeps holds its own bytes, not
/// the whole buffer it arrived in.
pub(super) fn decode_message(
    kind: Kind,
    bytes: Vec<u8>,
    conn: &Handshake,
) -> Result<PeerMessage, WireError> {
    if kind == Kind::Forward {
        return Ok(super::forward::decode(&bytes)?);
    }
    let msg = if bytes.len() > FRAME_PAYLOAD_BYTES_MAX {
        RaftMessage::parse_from_carllerche_bytes(&bytes::Bytes::from(bytes))?
    } else {
        RaftMessage::parse_from_bytes(&bytes)?
    };
    if msg.from != conn.from && !(is_relayed(msg.get_msg_type()) && msg.from != 0) {
        return Err(WireError::WrongFrom {
            conn: conn.from,
            msg: msg.from,
        });
    }
    if msg.to != conn.to {
        return Err(WireError::WrongTo {
            conn: conn.to,
            msg: msg.to,
        });
    }
    Ok(PeerMessage::Raft(Box::new(msg)))
}
