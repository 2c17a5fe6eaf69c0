//! The member-to-member transport: raft messages over plain TCP on the peer port.
//!
//! Every member dials one long-lived connection to each other member ([`PeerSender`]) and accepts
//! theirs ([`serve`]). Connections are one-way: the dialler only writes, the listener only reads,
//! so two members talking use two connections. Delivery is best effort, like the network raft is
//! built for: a message that cannot go out promptly (queue full, peer unreachable, connection
//! broken mid-batch) is dropped and counted, and raft retransmits. The transport knows nothing of
//! raft beyond checking that each message's `from` and `to` match the connection's ends.
//!
//! # Wire format, version 1 (integers big-endian)
//!
//! A connection starts with one 32-byte handshake from the dialler:
//! ```text
//! offset size  field
//!      0    4  magic       b"DTCP"
//!      4    4  version     1
//!      8    8  cluster_id  the dialler's cluster; must equal the listener's
//!     16    8  from        the dialler's member id; non-zero
//!     24    8  to          the member the dialler meant to reach; must be the listener itself
//! ```
//! then any number of frames:
//! ```text
//! offset size  field
//!      0    4  length      payload bytes; at most FRAME_PAYLOAD_BYTES_MAX (4 MiB)
//!      4    1  flags       bit 0 MORE: more chunks of the same message follow; other bits 0
//!      5    4  crc         CRC32C (Castagnoli) of the flags byte followed by the payload
//!      9  len  payload
//! ```
//! A message is the concatenation of the payloads of consecutive frames up to and including the
//! first frame without MORE, and is one `raft::eraftpb::Message` encoded with protobuf. Messages
//! that fit in 4 MiB travel in one frame; larger ones (a snapshot carries the whole key space) in
//! chunks of CHUNK_BYTES_MAX (1 MiB), so no single read ever needs more than 4 MiB of trust. The
//! receiver reassembles at most MESSAGE_BYTES_MAX (512 MiB), in a buffer sized from the first
//! chunk when that chunk shows a snapshot's length; the sender drops bigger messages itself
//! rather than have every attempt break the connection. The CRC covers the flags so that
//! a flipped MORE bit cannot silently glue two messages together or split one.
//!
//! The listener closes a connection, without any other effect on the member, on: bad magic or
//! version, a foreign cluster id, a `to` that is not itself, a zero `from`, a frame longer than
//! allowed, unknown flags, a CRC mismatch, a message over the bound, a connection ending inside a
//! chunked message, undecodable protobuf, or a message whose `from`/`to` differ from the
//! handshake's. Messages delivered before the bad frame stay delivered: each was whole and checked.
//! There is no acknowledgement: a rejected dialler notices the closed socket and redials with
//! backoff.

mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod join;
mod node_inbound;
mod outbound;
mod wire;

#[cfg(test)]
mod tests;

pub use inbound::{serve, HandOver};
pub use join::{lookup, peer_addresses, MemberBoard};
pub use node_inbound::{AdoptedPeer, NodeInbound};
pub use outbound::{OnRemoved, PeerSender, PeerStats};
pub use wire::{CHUNK_BYTES_MAX, FRAME_PAYLOAD_BYTES_MAX, MESSAGE_BYTES_MAX};

use crate::node::MemberId;

/// Who is at either end of a peer connection: a member of one particular cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster_id: u64,
    pub member_id: MemberId,
}
