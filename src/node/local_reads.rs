//! Serializable reads of one key answered away from the node's step: from a view of the key
//! space the node's caller froze after a batch, before that batch's answers left. The server
//! answers them on the client-port worker that received them (a round trip through the node's
//! thread costs two thread wake-ups and a batch per read); the simulator answers them at the
//! member as they arrive, from the same views, so the checkers judge this path too.
//!
//! Freezing the view after a batch and before its answers is what keeps the promise of the
//! node's own serializable reads: whatever a client learned from an answer of this member, a
//! read it sends next sees. The answer is the key space's own `read_range` on the view, with
//! the header the node gives.
//!
//! A view outlives the batch that froze it only while reads use it: one held while writes go
//! on makes each write copy the index nodes it changes. So a view that is out of date is
//! frozen again only when a read wanted one since the last batch, and dropped otherwise; a
//! write load without serializable reads holds no view at all. Only single keys are served
//! this way: a range over many keys walks all of them (for its count), work for the node.

use std::sync::Arc;

use super::Node;
use crate::error::EtcdError;
use crate::mvcc::{self, KeySpaceView};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};

/// The latest view of one member, if one is worth keeping.
#[derive(Default)]
pub struct LocalReads {
    view: Option<Arc<LocalView>>,
}

/// The key space as the node applied it after one batch, with what an answer's header and
/// checks need from the node then.
pub struct LocalView {
    kv: KeySpaceView,
    mark: NodeMark,
    member_id: u64,
    range_bytes_max: u64,
}

/// What a serializable range's answer depends on besides the key space: anything else in a
/// new mark means the node moved on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NodeMark {
    applied_index: u64,
    raft_term: u64,
    cluster_id: u64,
}

/// Whether `req` is a read this path answers: a serializable read of one key.
pub fn answers_locally(req: &RangeRequest) -> bool {
    req.serializable && req.range_end.is_empty()
}

impl LocalReads {
    /// After each batch, before its answers leave: keeps the view if the node has not moved,
    /// freezes a new one if a read `wanted` one since the last batch, drops it otherwise.
    pub fn refresh(&mut self, node: &Node, wanted: bool) {
        let mark = node.read_mark();
        if let Some(view) = &self.view {
            let same_term = view.mark.raft_term == mark.raft_term;
            if view.mark == mark || (same_term && node.bug(|b| b.local_reads_by_term_only)) {
                return;
            }
        }
        self.view = wanted.then(|| {
            Arc::new(LocalView {
                kv: node.state().kv().view(),
                mark,
                member_id: node.id(),
                range_bytes_max: node.cfg.max_range_bytes,
            })
        });
    }

    /// The view to answer from, if there is one.
    pub fn view(&self) -> Option<Arc<LocalView>> {
        self.view.clone()
    }

    /// Once the node is gone: nothing is answered from what it last applied.
    pub fn clear(&mut self) {
        self.view = None;
    }
}

impl LocalView {
    /// The answer to `req` (one that [`answers_locally`]), or `None` when the node must give
    /// it: an answer that needs superseded values (from the cold segments) or is large enough
    /// for the large-range encoder.
    pub fn range(
        &self,
        req: &RangeRequest,
        is_large: impl Fn(&RangeResponse) -> bool,
    ) -> Option<Result<RangeResponse, EtcdError>> {
        debug_assert!(answers_locally(req));
        if let Err(e) = mvcc::check_range(req) {
            return Some(Err(e));
        }
        let (mut response, cold) = match self.kv.read_range(req, self.range_bytes_max) {
            Ok(answer) => answer,
            Err(e) => return Some(Err(e)),
        };
        if !cold.is_empty() || is_large(&response) {
            return None;
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        response.header = Some(ResponseHeader {
            cluster_id: self.mark.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.mark.raft_term,
        });
        Some(Ok(response))
    }
}

impl Node {
    fn read_mark(&self) -> NodeMark {
        NodeMark {
            applied_index: self.applied_index,
            raft_term: self.term(),
            cluster_id: self.cluster_id(),
        }
    }
}
