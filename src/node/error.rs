//! Why a member cannot start, why it stopped, and how a disk operation failed: the typed errors
//! at the node's boundary. None of them is ever shown to a client (clients get
//! `etcdserver: server stopped`); operators and the simulator's reports read them.

use thiserror::Error;

use super::types::MemberId;
use crate::state::StateSnapshotError;

/// A disk operation the driver could not carry out.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{kind:?}: {message}")]
pub struct DiskError {
    pub kind: std::io::ErrorKind,
    pub message: String,
}

impl DiskError {
    /// A failure the driver describes in words (with the file and operation it concerns).
    pub fn described(message: String) -> DiskError {
        DiskError {
            kind: std::io::ErrorKind::Other,
            message,
        }
    }
}

impl From<std::io::Error> for DiskError {
    fn from(e: std::io::Error) -> DiskError {
        DiskError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Why [`super::Node::new`] refused to build a member from its recovered state.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("the snapshot at index {index} is unreadable: {error}")]
    SnapshotUnreadable {
        index: u64,
        error: StateSnapshotError,
    },
    #[error("member {id:x} is not in the cluster {voters:x?}")]
    NotAMember { id: MemberId, voters: Vec<MemberId> },
    #[error("raft refused the configuration: {0}")]
    Raft(#[from] raft::Error),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

/// Why a running member stopped (the driver shuts it down; it may restart on its disk).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StopReason {
    /// The disk's state is unknown after a failed operation; continuing could acknowledge what
    /// is not durable.
    #[error("disk operation {io} failed: {error}")]
    DiskFailed { io: u64, error: DiskError },
    #[error("the snapshot at index {index} from the leader is unreadable: {error}")]
    SnapshotUnreadable {
        index: u64,
        error: StateSnapshotError,
    },
    /// The cluster removed this member; it must not start again under its id.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}
