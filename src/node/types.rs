//! The step machine's vocabulary: what goes in (`Input`), what comes out (`Output`), and the
//! identifiers that tie a disk completion or a reply to what caused it.

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};

/// A raft member id (etcd's member ID).
pub type MemberId = u64;

/// Chosen by the driver for each client request; echoed in the matching `Output::Reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Chosen by the node for each disk operation; echoed in the matching `Input::DiskDone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

#[derive(Clone, Debug)]
pub enum Input {
    /// Nothing but the passage of time: the driver's timer from `poll_timeout` fired.
    Tick,
    /// A message from another member.
    Peer { from: MemberId, msg: PeerMessage },
    /// A client request accepted by this member.
    Client {
        id: RequestId,
        request: ClientRequest,
    },
    /// A disk operation finished. Completions arrive in the order the operations were emitted.
    DiskDone {
        io: IoId,
        result: Result<(), DiskError>,
    },
}

#[derive(Clone, Debug)]
pub enum Output {
    /// Deliver to a peer; best effort (the network may lose it; raft retries).
    Send { to: MemberId, msg: PeerMessage },
    /// Execute on this member's disk, in emission order, then report `Input::DiskDone`.
    Disk { io: IoId, op: DiskOp },
    /// Answer a client request.
    Reply {
        id: RequestId,
        result: Result<ClientResponse, EtcdError>,
    },
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
    Stopped { reason: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum PeerMessage {
    Raft(raft::eraftpb::Message),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientRequest {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientResponse {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

impl ClientResponse {
    /// The response header's slot, whichever kind of response this is.
    pub fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
        match self {
            ClientResponse::Range(r) => &mut r.header,
            ClientResponse::Put(r) => &mut r.header,
            ClientResponse::DeleteRange(r) => &mut r.header,
            ClientResponse::Txn(r) => &mut r.header,
            ClientResponse::Compact(r) => &mut r.header,
        }
    }

    pub fn header(&self) -> Option<&ResponseHeader> {
        match self {
            ClientResponse::Range(r) => r.header.as_ref(),
            ClientResponse::Put(r) => r.header.as_ref(),
            ClientResponse::DeleteRange(r) => r.header.as_ref(),
            ClientResponse::Txn(r) => r.header.as_ref(),
            ClientResponse::Compact(r) => r.header.as_ref(),
        }
    }

    /// The store revision the response reports.
    pub fn revision(&self) -> Option<i64> {
        self.header().map(|h| h.revision)
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
    SaveSnapshot { index: u64, term: u64, file: Bytes },
    /// The WAL before `wal_before_offset` and the snapshot files older than `snapshots_before_index`
    /// are no longer needed for recovery; the driver may delete them (whole segments only).
    Release {
        wal_before_offset: u64,
        snapshots_before_index: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskError(pub String);
