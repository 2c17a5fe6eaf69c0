//! Reads of one key answered away from the node's step: from a view of the key space the
//! node's caller froze after a batch, before that batch's answers left. The server answers them
//! on the client-port worker that received them (a round trip through the node's thread costs
//! two thread wake-ups and a batch per read); the simulator answers them at the member as they
//! arrive, from the same views, so the checkers judge this path too.
//!
//! Freezing the view after a batch and before its answers is what keeps the promise of the
//! node's own serializable reads: whatever a client learned from an answer of this member, a
//! read it sends next sees. The answer is the key space's own `read_range` on the view, with
//! the header the node gives.
//!
//! A linearizable read of one key waits first for a read barrier: a request the node answers
//! through ReadIndex, as it would the read, once it has applied everything committed before
//! the barrier was asked; a view at least that new then answers. The reads that arrive while a
//! barrier waits for the node to take it share that barrier ([`ReadRounds`]): each of them
//! arrived before the node asked its read index, which is all linearizability asks. One
//! barrier per batch of the node's instead of one request per read is what makes this path
//! cheap.
//!
//! A view outlives the batch that froze it only while reads use it: one held while writes go
//! on makes each write copy the index nodes it changes. So a view that is out of date is
//! frozen again only when a read wanted one since the last batch (or a barrier passed), and
//! dropped otherwise; a write load without such reads holds no view at all. Only single keys
//! are served this way: a range over many keys walks all of them (for its count), work for the
//! node.

use std::sync::Arc;

use super::Node;
use crate::error::EtcdError;
use crate::mvcc::{self, KeySpaceView};
use crate::proto::detcdpb::ReadBarrierResponse;
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::state::Answer;

/// The latest view of one member, if one is worth keeping.
#[derive(Default)]
pub struct LocalReads {
    view: Option<Arc<LocalView>>,
    /// The node's count of read barriers passed at the last refresh.
    barriers_seen: u64,
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

/// Whether `req` is a read this path answers at once: a serializable read of one key.
pub fn answers_locally(req: &RangeRequest) -> bool {
    req.serializable && req.range_end.is_empty()
}

/// Whether `req` is a read this path answers after a read barrier: a well-formed linearizable
/// read of one key. (A malformed one goes to the node, which refuses it before any barrier.)
pub fn answers_after_barrier(req: &RangeRequest) -> bool {
    !req.serializable && req.range_end.is_empty() && mvcc::check_range(req).is_ok()
}

impl LocalReads {
    /// After each batch, before its answers leave: keeps the view if the node has not moved,
    /// freezes a new one if a read `wanted` one since the last batch, drops it otherwise.
    pub fn refresh(&mut self, node: &Node, wanted: bool) {
        // While auth is on, the node checks every read against its sender.
        if node.state().auth().is_enabled() {
            self.view = None;
            return;
        }
        let wanted = wanted || node.read_barriers_passed != self.barriers_seen;
        self.barriers_seen = node.read_barriers_passed;
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
    /// Whether this view may answer the reads that waited for `barrier`: it is at least as new
    /// as the node was when the barrier passed.
    pub fn serves(&self, barrier: &ReadBarrierResponse) -> bool {
        self.mark.applied_index >= barrier.applied_index
    }

    /// The answer to `req` (one that [`answers_locally`] or, past a barrier this view
    /// [`serves`](Self::serves), [`answers_after_barrier`]), or `None` when the node must give
    /// it: an answer that needs superseded values (from the cold segments) or is large enough
    /// for the large-range encoder.
    pub fn range(
        &self,
        req: &RangeRequest,
        is_large: impl Fn(&RangeResponse) -> bool,
    ) -> Option<Result<RangeResponse, EtcdError>> {
        debug_assert!(req.range_end.is_empty());
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
    /// Answers a read barrier whose read index this member has applied up to.
    pub(super) fn pass_read_barrier(&mut self, id: super::RequestId) {
        self.read_barriers_passed += 1;
        let response = ReadBarrierResponse {
            header: None,
            applied_index: self.applied_index,
        };
        self.finish(id, Ok(Answer::from(response)));
    }

    fn read_mark(&self) -> NodeMark {
        NodeMark {
            applied_index: self.applied_index,
            raft_term: self.term(),
            cluster_id: self.cluster_id(),
        }
    }
}

/// The read barrier that linearizable reads arriving now may share, by the caller's handle on
/// it (`R`): the last one asked, while the node has not started a batch since. The caller
/// counts the node's batches (its epoch) and bumps the count after it took a batch's inputs
/// and before the node steps them; a read that sees the count unchanged since the barrier was
/// asked arrived before the node took the barrier, so before the read index it will ask.
pub struct ReadRounds<R> {
    open: Option<(u64, R)>,
    /// Injected bug: share a barrier the node took already (its read index may predate the
    /// read).
    join_taken: bool,
}

impl<R: Clone> ReadRounds<R> {
    pub fn new(join_taken: bool) -> ReadRounds<R> {
        ReadRounds {
            open: None,
            join_taken,
        }
    }

    /// The barrier a read arriving at `epoch` may wait for, if one is still open.
    pub fn join(&self, epoch: u64) -> Option<R> {
        let (asked_at, round) = self.open.as_ref()?;
        (*asked_at == epoch || self.join_taken).then(|| round.clone())
    }

    /// Records the barrier just asked at `epoch`, for the reads that come before the node
    /// takes it.
    pub fn open(&mut self, epoch: u64, round: R) {
        self.open = Some((epoch, round));
    }

    /// Forgets the open barrier (its member restarted).
    pub fn clear(&mut self) {
        self.open = None;
    }

    /// Forgets `round` once it passed or failed (only it, not a newer one).
    pub fn close(&mut self, round: &R)
    where
        R: PartialEq,
    {
        if self.open.as_ref().is_some_and(|(_, open)| open == round) {
            self.open = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadRounds;

    #[test]
    fn a_barrier_is_shared_only_until_the_node_starts_a_batch() {
        let mut rounds = ReadRounds::new(false);
        assert_eq!(rounds.join(7), None);
        rounds.open(7, 'a');
        assert_eq!(rounds.join(7), Some('a'));
        assert_eq!(
            rounds.join(8),
            None,
            "the node may have asked its read index"
        );
        rounds.open(8, 'b');
        rounds.close(&'a');
        assert_eq!(
            rounds.join(8),
            Some('b'),
            "closing an older barrier keeps the open one"
        );
        rounds.close(&'b');
        assert_eq!(rounds.join(8), None);
    }

    #[test]
    fn the_injected_bug_shares_a_barrier_the_node_took() {
        let mut rounds = ReadRounds::new(true);
        rounds.open(7, 'a');
        assert_eq!(rounds.join(9), Some('a'));
        rounds.clear();
        assert_eq!(rounds.join(7), None);
    }
}
