//! Lease keepalives acknowledged away from the node's step, as serializable reads are
//! (`local_reads`): from a copy of the leader's lease table that the node's caller takes after
//! a batch, before that batch's messages and answers leave (a follower acknowledges a revoke
//! once this leader's messages tell it the revoke is committed; a keepalive sent here after
//! that must find the table without the lease). The server answers them on the client-port
//! worker that received them (through the node's thread, a keepalive cost two thread wake-ups
//! and a batch, most of its CPU); the simulator answers them at the member as they arrive, from
//! the same copies, so the lease checker judges this path too.
//!
//! Only what the leader would acknowledge from memory is acknowledged here: a lease whose floor
//! (this leader's committed records) covers the full TTL from now. That promise holds whoever
//! leads next (`lease::clock`). The renewal itself, the lease's expiry on this leader's clock,
//! is handed to the node before its next batch, before that batch looks at expiries; why no
//! expiry can overtake it is told at [`crate::lease::clock::LeaseClocks::renewed_away`].
//! Everything else (a lease not covered yet, not held, or a member not leading) goes through
//! the node, which proposes the record the keepalive needs, or answers not found.
//!
//! Nothing is acknowledged here unless this member leads with its clocks running and had
//! applied everything committed at its last batch: a grant or revocation another member
//! acknowledged is then in its table. The copy of the lease table is taken again after each
//! batch that granted, recorded or removed a lease (or changed the term), not after others:
//! floors only rise, so a copy older than the node's table is cautious, never wrong, and a
//! write load pays nothing for it. The copy is of a persistent map the lease clocks keep
//! (`lease::clock`), so taking it costs the same for ten leases or a hundred thousand. The
//! answers' header is the last batch's. The renewals waiting for the node are kept one per
//! lease, the latest.

use std::collections::BTreeMap;

use imbl::OrdMap;

use super::Node;
use crate::lease::clock::Renewable;
use crate::lease::LeaseId;
use crate::proto::etcdserverpb::{LeaseKeepAliveResponse, ResponseHeader};
use crate::time::Instant;

#[derive(Default)]
pub struct LocalKeepAlives {
    /// The header of answers after the last batch; `None` while nothing may be acknowledged.
    header: Option<ResponseHeader>,
    leases: Option<LeaseTable>,
    /// Acknowledged here, not yet handed to the node: per lease, its generation and the time of
    /// the latest acknowledgement.
    renewals: BTreeMap<LeaseId, (u64, Instant)>,
}

/// The leases a keepalive may be acknowledged for, as the leader held them at one point.
struct LeaseTable {
    mark: TableMark,
    leases: OrdMap<LeaseId, Renewable>,
    /// The injected bug `local_keepalives_ignore_floor`.
    ignore_floor: bool,
}

/// What a copy of the lease table depends on: anything else in a new mark means the table
/// changed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TableMark {
    raft_term: u64,
    lease_epoch: u64,
}

impl LocalKeepAlives {
    /// After each batch, before its messages and answers leave: takes the batch's header, and
    /// a copy of the lease table if the node's changed.
    pub fn refresh(&mut self, node: &Node) {
        let leading = node.leads_leases() && node.applied_index == node.commit_index();
        if !leading {
            self.header = None;
            self.leases = None;
            return;
        }
        self.header = Some(ResponseHeader {
            cluster_id: node.cluster_id(),
            member_id: node.id(),
            revision: node.state().kv().current_revision(),
            raft_term: node.term(),
        });
        let mark = TableMark {
            raft_term: node.term(),
            lease_epoch: node.lease_epoch(),
        };
        if self.leases.as_ref().is_none_or(|t| t.mark != mark) {
            self.leases = table(node, mark);
        }
    }

    /// The answer to a keepalive for `id` received at `now`, acknowledged here, or `None` when
    /// the node must answer it.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Option<LeaseKeepAliveResponse> {
        let header = self.header?;
        let table = self.leases.as_ref()?;
        let &renewable = table.leases.get(&id)?;
        if !renewable.covers(now) && !table.ignore_floor {
            return None;
        }
        let renewal = self
            .renewals
            .entry(id)
            .or_insert((renewable.generation, now));
        *renewal = (renewable.generation, renewal.1.max(now));
        Some(LeaseKeepAliveResponse {
            header: Some(header),
            id,
            ttl: renewable.ttl.as_secs() as i64,
        })
    }

    /// Before each batch, once its time is read: hands the node what was acknowledged here.
    pub fn hand_over(&mut self, node: &mut Node) {
        while let Some((id, (generation, at))) = self.renewals.pop_first() {
            node.renewed_away((id, generation), at);
        }
    }

    /// Once the node is gone: nothing is acknowledged from what it last held.
    pub fn clear(&mut self) {
        self.header = None;
        self.leases = None;
        self.renewals.clear();
    }
}

/// A copy of the node's lease table.
fn table(node: &Node, mark: TableMark) -> Option<LeaseTable> {
    Some(LeaseTable {
        mark,
        leases: node.renewable_leases()?,
        ignore_floor: node.bug(|b| b.local_keepalives_ignore_floor),
    })
}
