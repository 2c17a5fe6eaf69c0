//! The step machine's vocabulary: what goes in (`Input`), what comes out (`Output`), and the
//! identifiers that tie a disk completion or a reply to what caused it.

use std::io::{self, Cursor, Seek, Write};

use bytes::Bytes;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use super::error::{DiskError, StopReason};
use crate::api::{ClientRequest, ClientResponse, Credentials};
use crate::error::EtcdError;
use crate::mvcc::{ColdOp, ColdRead, ColdValues, NoColdValues};
use crate::proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    Member, MemberPromoteRequest, MemberPromoteResponse,
};
use crate::state::{ReplacedState, StateView};
use crate::wal;
use crate::watch::WatchFeed;

/// A raft member id (etcd's member ID).
pub type MemberId = u64;

/// Chosen by the driver for each client request; echoed in the matching `Output::Reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Chosen by the node for each disk operation; echoed in the matching `Input::DiskDone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

#[derive(Debug)]
pub enum Input {
    /// Nothing but the passage of time: the driver's timer from `poll_timeout` fired.
    Tick,
    /// A message from another member.
    Peer { from: MemberId, msg: PeerMessage },
    /// A snapshot message from another member, its data decoded away from the node's thread
    /// (see `decoded_snapshot`). Boxed: it is rare and large.
    DecodedSnapshot {
        from: MemberId,
        snapshot: Box<super::DecodedSnapshot>,
    },
    /// A client request accepted by this member.
    Client {
        id: RequestId,
        request: ClientRequest,
        /// Who sent it; `None` when the client sent no credentials.
        credentials: Option<Credentials>,
    },
    /// A disk operation finished. Completions arrive in the order the operations were emitted.
    DiskDone {
        io: IoId,
        result: Result<(), DiskError>,
    },
    /// The HashKV an `Output::HashAt` asked for.
    Hashed { revision: i64, hash: u32 },
}

#[derive(Clone, Debug)]
pub enum Output {
    /// Deliver to a peer; best effort (the network may lose it; raft retries).
    Send { to: MemberId, msg: PeerMessage },
    /// Deliver a snapshot to a peer that fell behind the log, as `Send` does, once the driver
    /// has encoded its data ([`OutgoingSnapshot::into_message`]): encoding costs time in
    /// proportion to the key space, which the node thread must not spend.
    SendSnapshot {
        to: MemberId,
        /// Boxed: it is rare and twice the size of any other output, which every output's
        /// move through the queue would pay for.
        snapshot: Box<OutgoingSnapshot>,
    },
    /// Execute on this member's disk, in emission order, then report `Input::DiskDone`.
    Disk { io: IoId, op: DiskOp },
    /// Answer a client request, once the driver has read the cold values the response still
    /// needs into it ([`ClientResponse::fill_cold`]; `cold` is empty for nearly every reply).
    /// The response is boxed: it is the largest of all outputs, and messages, far more
    /// frequent, would pay for its size on every move.
    Reply {
        id: RequestId,
        result: Result<Box<ClientResponse>, EtcdError>,
        cold: ColdValues,
    },
    /// Write or release a cold segment (`mvcc::cold`), at once and in order: later outputs may
    /// read what it writes. No completion comes back, and a failure stops the member.
    Cold(ColdOp),
    /// Observation for simulators and tests (only with `Config::observe`): the client request
    /// `id` became the proposal `(origin, proposal)` that a log entry will carry.
    Proposed {
        id: RequestId,
        origin: MemberId,
        proposal: u64,
    },
    /// Observation (only with `Config::observe`): the log entry at `index` was applied.
    Applied { index: u64, term: u64, data: Bytes },
    /// The member stopped (a disk failure, a corrupt snapshot): the driver must shut it down.
    /// Every later input is answered with `etcdserver: server stopped`.
    Stopped { reason: StopReason },
    /// Compute HashKV of `view` at `revision` (a compaction revision just applied; hashing
    /// reads superseded values, which only the driver can) and hand it back as
    /// `Input::Hashed`: the member reports it for the corruption check (`alarm`).
    HashAt {
        revision: i64,
        view: crate::mvcc::KeySpaceView,
    },
    /// The member list changed (applied, or restored from a snapshot): the driver's peer
    /// transport follows it. Also emitted once at start.
    Members(Vec<Member>),
    /// What watchers learn of the batch (`watch`): the key changes of each revision applied,
    /// the key space as of the last one, and whether there is a leader. At most one per batch,
    /// only when something of it changed; the first batch always has one.
    Watch(WatchFeed),
    /// The state a snapshot's install replaced, for the driver to drop where the node's thread
    /// does not wait for it.
    Free(Box<ReplacedState>),
}

impl Output {
    /// Reads in right away the cold values the output needs: a `SendSnapshot` becomes the
    /// `Send` it stands for, a `Reply` gets its values (and an empty `cold`); other outputs stay
    /// as they are. In place, as outputs are large. For drivers with no thread to keep free:
    /// the simulator and tests.
    pub fn resolve(&mut self, cold: &dyn ColdRead) -> io::Result<()> {
        match self {
            Output::SendSnapshot { .. } => {
                let placeholder = Output::Members(Vec::new());
                let Output::SendSnapshot { to, snapshot } = std::mem::replace(self, placeholder)
                else {
                    unreachable!("matched above")
                };
                let msg = PeerMessage::Raft(Box::new(snapshot.into_message(cold)?));
                *self = Output::Send { to, msg };
            }
            Output::Reply {
                result: Ok(response),
                cold: values,
                ..
            } if !values.is_empty() => response.fill_cold(std::mem::take(values), cold)?,
            _ => {}
        }
        Ok(())
    }
}

/// A `MsgSnapshot` whose snapshot data is still to be encoded from `view`.
#[derive(Clone, Debug)]
pub struct OutgoingSnapshot {
    pub msg: raft::eraftpb::Message,
    pub view: StateView,
}

impl OutgoingSnapshot {
    /// The message to send, with the key space encoded into its snapshot.
    pub fn into_message(self, cold: &dyn ColdRead) -> io::Result<raft::eraftpb::Message> {
        let OutgoingSnapshot { mut msg, view } = self;
        msg.mut_snapshot().data = Bytes::from(view.encode(cold)?);
        Ok(msg)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PeerMessage {
    /// Boxed: a raft message is the largest input and output by far (about 200 bytes), and
    /// the node, the driver's queues and the simulator's network move every one several times.
    Raft(Box<raft::eraftpb::Message>),
    /// A member asks the leader to answer a client's request only the leader can answer.
    Forward { id: u64, request: LeaderRequest },
    /// The leader's answer to `Forward { id, .. }`.
    ForwardReply {
        id: u64,
        result: Result<LeaderResponse, EtcdError>,
    },
    /// The cluster removed the receiver: it must stop.
    Removed,
}

/// A client request only the leader answers: it reads the leader's lease clocks.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaderRequest {
    KeepAlive(LeaseKeepAliveRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    /// Whether the learner may be promoted (only the leader sees how far it caught up).
    PromoteCheck(MemberPromoteRequest),
}

impl From<LeaseKeepAliveRequest> for LeaderRequest {
    fn from(request: LeaseKeepAliveRequest) -> LeaderRequest {
        LeaderRequest::KeepAlive(request)
    }
}

impl From<LeaseTimeToLiveRequest> for LeaderRequest {
    fn from(request: LeaseTimeToLiveRequest) -> LeaderRequest {
        LeaderRequest::TimeToLive(request)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum LeaderResponse {
    KeepAlive(LeaseKeepAliveResponse),
    TimeToLive(LeaseTimeToLiveResponse),
    /// The learner is in sync: the asking member proposes the promotion.
    PromoteReady(MemberPromoteResponse),
}

impl From<LeaderResponse> for ClientResponse {
    fn from(response: LeaderResponse) -> ClientResponse {
        match response {
            LeaderResponse::KeepAlive(r) => r.into(),
            LeaderResponse::TimeToLive(r) => r.into(),
            LeaderResponse::PromoteReady(r) => r.into(),
        }
    }
}

/// Disk work for the driver. The WAL is one logical append-only byte stream; offsets are logical
/// positions in it (see docs/wal.md).
#[derive(Clone, Debug, PartialEq)]
pub enum DiskOp {
    /// Append framed WAL records at the end of the WAL, then make them durable (fdatasync) when
    /// `sync` is set. Several appends may share one sync (group commit); each completes only
    /// once its bytes are as durable as asked.
    AppendWal { data: Bytes, sync: bool },
    /// Write a snapshot file durably and atomically (write, sync, rename, sync the directory).
    /// The driver encodes `file` itself, off the node's thread.
    SaveSnapshot {
        index: u64,
        term: u64,
        file: SnapshotFile,
    },
    /// The WAL before `wal_before_offset` and the snapshot files older than `snapshots_before_index`
    /// are no longer needed for recovery; the driver may delete them (whole segments only).
    Release {
        wal_before_offset: u64,
        snapshots_before_index: u64,
    },
}

/// A snapshot file to save: its metadata and the state it holds, not yet encoded. For a snapshot
/// the node takes itself, encoding is the expensive part (the whole key space), so the node hands
/// over an O(1) view and the driver's disk thread encodes it while the node keeps serving.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    meta: SnapshotMetadata,
    state: SnapshotState,
}

#[derive(Clone, Debug)]
enum SnapshotState {
    /// Sent by the leader, already encoded.
    Received(Bytes),
    /// This member's state at the snapshot's index (boxed: it is large, and disk operations
    /// queue by the thousand).
    Local(Box<StateView>),
}

impl SnapshotFile {
    pub(crate) fn received(snapshot: &Snapshot) -> SnapshotFile {
        SnapshotFile {
            meta: snapshot.get_metadata().clone(),
            state: SnapshotState::Received(snapshot.data.clone()),
        }
    }

    pub(crate) fn local(meta: SnapshotMetadata, view: StateView) -> SnapshotFile {
        SnapshotFile {
            meta,
            state: SnapshotState::Local(Box::new(view)),
        }
    }

    /// The raft index the snapshot is at.
    pub fn index(&self) -> u64 {
        self.meta.index
    }

    /// Whether the driver may write this file in the background, completing it out of order
    /// with the operations submitted after it. True for a snapshot the node took itself: the
    /// node relies on it only once it completes. A snapshot received from the leader must be
    /// durable before what follows it, because the WAL marker written next names it.
    pub fn may_complete_out_of_order(&self) -> bool {
        matches!(self.state, SnapshotState::Local(_))
    }

    /// Writes the whole file (the format of [`crate::wal::encode_snapshot_file`]) to `out`,
    /// streaming the state rather than encoding it in memory first, and reading cold values
    /// through `cold`.
    pub fn write_to<W: Write + Seek>(&self, out: &mut W, cold: &dyn ColdRead) -> io::Result<()> {
        match &self.state {
            SnapshotState::Received(data) => {
                wal::write_snapshot_file(out, &self.meta, data.len() as u64, |w| w.write_all(data))
            }
            SnapshotState::Local(view) => {
                let len = view.encoded_len() as u64;
                wal::write_snapshot_file(out, &self.meta, len, |w| view.encode_to(w, cold))
            }
        }
    }

    /// The whole file in memory.
    pub fn encode(&self, cold: &dyn ColdRead) -> io::Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        self.write_to(&mut out, cold)?;
        Ok(out.into_inner())
    }
}

/// Equal when the files would be equal (used by tests; it encodes both, which must need no cold
/// values).
impl PartialEq for SnapshotFile {
    fn eq(&self, other: &SnapshotFile) -> bool {
        let encode = |file: &SnapshotFile| {
            file.encode(&NoColdValues)
                .expect("files compared in tests have no cold values")
        };
        encode(self) == encode(other)
    }
}
