//! Leaders' snapshots decoded on threads of their own before the node steps them (see
//! `node::DecodedSnapshot`): decoding one takes time in proportion to the key space, which the
//! node's thread would otherwise spend instead of answering heartbeats, reads and its peers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::driver::Event;
use super::inbox::NodeSender;
use super::log;
use crate::node::{DecodedSnapshot, Input, PeerMessage};

/// Snapshots decoding or decoded and not yet taken by the node, at most: each holds a whole
/// key space. A snapshot past this many goes to the node as it came, to be decoded there.
const DECODING_MAX: usize = 2;

pub struct SnapshotDecoder {
    tx: NodeSender,
    /// Snapshots given to a thread whose result the node has not taken yet.
    pending: Arc<AtomicUsize>,
}

impl SnapshotDecoder {
    pub fn new(tx: NodeSender) -> SnapshotDecoder {
        SnapshotDecoder {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes the snapshot messages out of `inputs` (the others keep their order) and decodes
    /// each on a thread of its own, which sends it back as `Event::DecodedSnapshot`.
    pub fn divert(&self, inputs: &mut Vec<Input>) {
        let mut i = 0;
        while i < inputs.len() {
            match &inputs[i] {
                Input::Peer { msg, .. }
                    if DecodedSnapshot::carries_snapshot(msg)
                        && self.pending.load(Ordering::Relaxed) < DECODING_MAX =>
                {
                    let Input::Peer {
                        from,
                        msg: PeerMessage::Raft(msg),
                    } = inputs.remove(i)
                    else {
                        unreachable!("matched above");
                    };
                    self.decode_off_thread(from, msg);
                }
                _ => i += 1,
            }
        }
    }

    /// The node took a snapshot this decoder sent it.
    pub fn taken(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    fn decode_off_thread(&self, from: u64, msg: Box<raft::eraftpb::Message>) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("detcd-snapshot".into())
            .spawn(move || {
                let snapshot = Box::new(DecodedSnapshot::decode(msg));
                tx.send(Event::DecodedSnapshot { from, snapshot });
            });
        if let Err(e) = spawned {
            // The message is lost with the closure; raft sends the snapshot again.
            self.pending.fetch_sub(1, Ordering::Relaxed);
            log::error!("detcd: cannot start a thread to decode a snapshot: {e}");
        }
    }
}
