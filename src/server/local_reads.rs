//! Serializable single-key ranges answered on the client-port worker that received them, from
//! the key space as the node last applied it, instead of a round trip through the node's
//! thread (two thread wake-ups and a batch per read: on two cores, about a third of a member's
//! CPU under a read load went to switching threads).
//!
//! The node's thread refreshes the view after each batch, before it sends the batch's answers,
//! so whatever a client learned from an answer, a read it sends next sees: the promise of the
//! node's own serializable reads, which read the state as of the batch that takes them. The
//! answer is the key space's own `read_range` on that view, with the header the node gives.
//!
//! A view outlives the batch that froze it only if reads use it: one held while writes go on
//! makes each write copy the index nodes it changes. So a view that is out of date is frozen
//! again only when a read asked for one since the last batch, and dropped otherwise; a write
//! load without serializable reads holds no view at all. Only single keys are served here: a
//! range over many keys walks all of them (for its count), which is work for the node's thread
//! or the large-range encoder, not for an async worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::large_range;
use crate::error::EtcdError;
use crate::mvcc::{self, KeySpaceView};
use crate::node::Node;
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};

pub struct LocalReads {
    slot: Mutex<Slot>,
    /// A read came since the last refresh: freeze a new view if this one is out of date.
    wanted: AtomicBool,
    /// `--max-range-bytes`, as the node applies it.
    range_bytes_max: u64,
}

#[derive(Default)]
struct Slot {
    view: Option<Arc<LocalView>>,
    /// What the view was frozen at: anything else in it means the node moved on.
    frozen_at: Option<NodeMark>,
}

/// What a serializable range's answer depends on besides the key space.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NodeMark {
    applied_index: u64,
    raft_term: u64,
    cluster_id: u64,
}

struct LocalView {
    kv: KeySpaceView,
    mark: NodeMark,
    member_id: u64,
}

impl LocalReads {
    pub fn new(range_bytes_max: u64) -> LocalReads {
        LocalReads {
            slot: Mutex::default(),
            wanted: AtomicBool::new(false),
            range_bytes_max,
        }
    }

    /// After each batch, before its answers leave: keeps the view if the node has not moved,
    /// freezes a new one if a read wants it, drops it otherwise.
    pub fn refresh(&self, node: &Node) {
        let mark = NodeMark {
            applied_index: node.applied_index(),
            raft_term: node.term(),
            cluster_id: node.cluster_id(),
        };
        let mut slot = self.slot.lock().expect("the slot's holders do not panic");
        let wanted = self.wanted.swap(false, Ordering::Relaxed);
        if slot.frozen_at == Some(mark) && slot.view.is_some() {
            return;
        }
        *slot = if wanted {
            Slot {
                view: Some(Arc::new(LocalView {
                    kv: node.state().kv().view(),
                    mark,
                    member_id: node.id(),
                })),
                frozen_at: Some(mark),
            }
        } else {
            Slot::default()
        };
    }

    /// Once the node is gone: nothing is served from what it last applied.
    pub fn close(&self) {
        *self.slot.lock().expect("the slot's holders do not panic") = Slot::default();
    }

    /// The answer to `req` from the latest view, or `None` when the node must answer it: not
    /// a serializable read of one key, no view yet, or an answer that needs superseded values
    /// or the large-range encoder.
    pub fn range(&self, req: &RangeRequest) -> Option<Result<RangeResponse, EtcdError>> {
        if !req.serializable || !req.range_end.is_empty() {
            return None;
        }
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        let view = self
            .slot
            .lock()
            .expect("the slot's holders do not panic")
            .view
            .clone()?;
        if let Err(e) = mvcc::check_range(req) {
            return Some(Err(e));
        }
        let (mut response, cold) = match view.kv.read_range(req, self.range_bytes_max) {
            Ok(answer) => answer,
            Err(e) => return Some(Err(e)),
        };
        if !cold.is_empty() || large_range::is_large(&response) {
            return None;
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        response.header = Some(ResponseHeader {
            cluster_id: view.mark.cluster_id,
            member_id: view.member_id,
            revision,
            raft_term: view.mark.raft_term,
        });
        Some(Ok(response))
    }
}
