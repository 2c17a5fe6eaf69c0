//! A leader's snapshot, decoded before the node steps it. Decoding a snapshot's data takes time
//! in proportion to the key space (120-170 ms at 100,000 keys here, seconds at millions), and
//! on the node's thread that time stops everything else the member does: heartbeats, reads,
//! other members' messages. So a driver may decode the data on a thread of its own and hand the
//! node the message together with the state it holds ([`Input::DecodedSnapshot`]); the node
//! keeps that state while raft holds the snapshot and installs it instead of decoding. A
//! snapshot that arrives as a plain `Input::Peer` is decoded when it is installed, as before.
//!
//! [`Input::DecodedSnapshot`]: super::Input::DecodedSnapshot

use raft::eraftpb::{Message, MessageType, SnapshotMetadata};

use super::types::PeerMessage;
use super::{MemberId, Node};
use crate::state::{State, StateSnapshotError};

/// A snapshot message and what its data decoded to.
#[derive(Debug)]
pub struct DecodedSnapshot {
    msg: Box<Message>,
    state: Result<State, StateSnapshotError>,
}

impl DecodedSnapshot {
    /// Whether `msg` carries a snapshot for the node to install, whose data is worth decoding
    /// before it reaches the node.
    pub fn carries_snapshot(msg: &PeerMessage) -> bool {
        matches!(msg, PeerMessage::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot)
    }

    /// Decodes the snapshot's data; takes time in proportion to its key space.
    pub fn decode(msg: Box<Message>) -> DecodedSnapshot {
        let state = State::decode_snapshot(msg.get_snapshot().get_data());
        DecodedSnapshot { msg, state }
    }
}

/// The state of the snapshot raft holds, decoded, until the node installs it.
#[derive(Debug)]
pub(super) struct Decoded {
    index: u64,
    term: u64,
    state: Result<State, StateSnapshotError>,
}

impl Node {
    /// Steps a decoded snapshot's message, and keeps its state if raft took the snapshot.
    pub(super) fn step_decoded_snapshot(&mut self, from: MemberId, snapshot: DecodedSnapshot) {
        let DecodedSnapshot { msg, state } = snapshot;
        let meta = msg.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        if !self.step_raft(from, *msg) && !self.bug(|b| b.stale_decoded_snapshot) {
            return;
        }
        let held = self.raw.raft.raft_log.unstable_snapshot().as_ref();
        let taken =
            held.is_some_and(|s| s.get_metadata().index == index && s.get_metadata().term == term);
        if taken || self.bug(|b| b.stale_decoded_snapshot) {
            self.snapshots.decoded = Some(Decoded { index, term, state });
        }
    }

    /// The state of the snapshot `meta` describes: the one decoded before it was stepped if
    /// there is one, otherwise `data` decoded now.
    pub(super) fn snapshot_state(
        &mut self,
        meta: &SnapshotMetadata,
        data: &[u8],
    ) -> Result<State, StateSnapshotError> {
        let any_taken = self.bug(|b| b.stale_decoded_snapshot);
        match self.snapshots.decoded.take() {
            Some(decoded)
                if any_taken || (decoded.index == meta.index && decoded.term == meta.term) =>
            {
                self.snapshots_installed_decoded += 1;
                decoded.state
            }
            _ => State::decode_snapshot(data),
        }
    }
}
