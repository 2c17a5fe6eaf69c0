//! Bookkeeping for client requests in flight: deadlines, the proposals that carry writes, and
//! the linearizable reads waiting for a read index. Everything here is bounded by the number of
//! pending requests, which `PendingRequests::admit` caps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::types::RequestId;
use super::ClientRequest;
use crate::error::EtcdError;
use crate::time::Instant;

struct Pending {
    deadline: Instant,
    proposal: Option<u64>,
}

pub struct PendingRequests {
    max: usize,
    requests: BTreeMap<RequestId, Pending>,
    by_deadline: BTreeSet<(Instant, RequestId)>,
    proposals: BTreeMap<u64, RequestId>,
}

impl PendingRequests {
    pub fn new(max: usize) -> PendingRequests {
        PendingRequests {
            max,
            requests: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            proposals: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Starts tracking a request, or refuses it when too many are waiting already. A request id
    /// that is already pending is refused too: the driver must not reuse one.
    pub fn admit(&mut self, id: RequestId, deadline: Instant) -> Result<(), EtcdError> {
        if self.requests.len() >= self.max || self.requests.contains_key(&id) {
            return Err(EtcdError::TooManyRequests);
        }
        self.requests.insert(
            id,
            Pending {
                deadline,
                proposal: None,
            },
        );
        self.by_deadline.insert((deadline, id));
        Ok(())
    }

    pub fn contains(&self, id: RequestId) -> bool {
        self.requests.contains_key(&id)
    }

    pub fn bind_proposal(&mut self, id: RequestId, proposal: u64) {
        if let Some(p) = self.requests.get_mut(&id) {
            p.proposal = Some(proposal);
            self.proposals.insert(proposal, id);
        }
    }

    /// The request waiting for the proposal, if any still is.
    pub fn take_proposal(&mut self, proposal: u64) -> Option<RequestId> {
        self.proposals.remove(&proposal)
    }

    /// Stops tracking a request; false if it was not tracked (already answered or expired).
    pub fn remove(&mut self, id: RequestId) -> bool {
        match self.requests.remove(&id) {
            Some(p) => {
                self.by_deadline.remove(&(p.deadline, id));
                if let Some(proposal) = p.proposal {
                    self.proposals.remove(&proposal);
                }
                true
            }
            None => false,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<RequestId> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.remove(id);
            expired.push(id);
        }
        expired
    }

    /// Removes and returns every pending request (the member is stopping).
    pub fn drain(&mut self) -> Vec<RequestId> {
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in &ids {
            self.remove(*id);
        }
        ids
    }
}

type Reads = Vec<(RequestId, ClientRequest)>;

struct Batch {
    reads: Reads,
    issued_at: Instant,
}

/// Linearizable reads: queued while no batch waits for its read index, asked for one read index
/// together, then served once the member has applied up to that index. One batch at a time, as
/// etcd's read loop: under load every read index costs a round of heartbeats to the followers
/// (and from a follower a round trip to the leader), and the reads that arrive during one round
/// all share the next instead of each input asking for its own.
pub struct ReadBatches {
    queued: Reads,
    issued: BTreeMap<u64, Batch>,
    waiting: BTreeMap<(u64, u64), Reads>,
    next_ctx: u64,
}

impl ReadBatches {
    /// `first_ctx` must differ between incarnations of a member, so that a late answer to a
    /// previous incarnation's request is never taken for an answer to a new one.
    pub fn new(first_ctx: u64) -> ReadBatches {
        ReadBatches {
            queued: Vec::new(),
            issued: BTreeMap::new(),
            waiting: BTreeMap::new(),
            next_ctx: first_ctx,
        }
    }

    pub fn queue(&mut self, id: RequestId, request: ClientRequest) {
        self.queued.push((id, request));
    }

    /// Turns the queued reads into a batch unless one still waits for its read index; returns
    /// the context to ask raft a read index with.
    pub fn issue_queued(&mut self, now: Instant) -> Option<u64> {
        if self.queued.is_empty() || !self.issued.is_empty() {
            return None;
        }
        let ctx = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1);
        self.issued.insert(
            ctx,
            Batch {
                reads: std::mem::take(&mut self.queued),
                issued_at: now,
            },
        );
        Some(ctx)
    }

    /// Batches asked for longer than `retry` ago that still have a request waiting; batches
    /// whose requests all expired are dropped.
    pub fn stale_batches(
        &mut self,
        now: Instant,
        retry: Duration,
        is_pending: impl Fn(RequestId) -> bool,
    ) -> Vec<u64> {
        self.issued
            .retain(|_, b| b.reads.iter().any(|(id, _)| is_pending(*id)));
        self.waiting
            .retain(|_, reads| reads.iter().any(|(id, _)| is_pending(*id)));
        self.issued
            .iter()
            .filter(|(_, b)| now.saturating_since(b.issued_at) >= retry)
            .map(|(ctx, _)| *ctx)
            .collect()
    }

    /// Whether a batch still waits for raft's answer to its read index.
    pub fn has_issued(&self) -> bool {
        !self.issued.is_empty()
    }

    pub fn mark_issued(&mut self, ctx: u64, now: Instant) {
        if let Some(b) = self.issued.get_mut(&ctx) {
            b.issued_at = now;
        }
    }

    /// raft confirmed that reading at `index` is linearizable for the batch `ctx`.
    pub fn read_index_known(&mut self, ctx: u64, index: u64) {
        if let Some(batch) = self.issued.remove(&ctx) {
            self.waiting.insert((index, ctx), batch.reads);
        }
    }

    /// Reads whose read index the member has applied.
    pub fn take_servable(&mut self, applied: u64) -> Reads {
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > applied {
                break;
            }
            out.extend(entry.remove());
        }
        out
    }
}
