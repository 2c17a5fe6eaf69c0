//! Client requests: admission, the checks etcd's API layer makes before proposing, proposals,
//! linearizable reads through ReadIndex, and replies with etcd's response header.

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message as _;

use super::types::{Output, RequestId};
use super::{ClientRequest, ClientResponse, Node};
use crate::api::Credentials;
use crate::error::EtcdError;
use crate::mvcc;
use crate::proto::detcdpb::{internal_request, InternalRequest};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{PutRequest, RequestOp, ResponseHeader, TxnRequest};
use crate::state::Answer;

/// How long a ReadIndex request may go unanswered before it is asked again. raft drops a
/// ReadIndex silently when there is no leader or the leader has not committed in its term yet.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

/// etcd refuses new writes when applying lags committing by this many entries.
const APPLY_LAG_MAX: u64 = 5_000;

/// etcd's estimate of what a put adds to the key space: the key and value plus a fixed
/// per-record overhead.
const QUOTA_RECORD_OVERHEAD_BYTES: u64 = 256;

/// The node's proposals: their ids, and those waiting for a leader.
pub(super) struct Proposals {
    /// Distinguishes this incarnation's proposals from those of earlier runs of the same member,
    /// whose entries may still be applied after a restart.
    nonce: u64,
    seq: u64,
    /// Proposals accepted while no leader was known, proposed as soon as one is.
    awaiting_leader: VecDeque<Vec<u8>>,
}

impl Proposals {
    pub fn new(nonce: u64) -> Proposals {
        Proposals {
            nonce,
            seq: 0,
            awaiting_leader: VecDeque::new(),
        }
    }

    pub fn awaiting_leader(&self) -> bool {
        !self.awaiting_leader.is_empty()
    }

    /// A proposal id no earlier proposal of this member has used.
    pub fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.nonce.wrapping_add(self.seq)
    }
}

impl Node {
    pub(super) fn handle_client(
        &mut self,
        id: RequestId,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) {
        if let Err(err) = self.pending.admit(id, self.now + self.cfg.request_timeout) {
            self.reply(id, Err(err));
            return;
        }
        if self.is_learner() && !learner_serves(&request) {
            self.finish(id, Err(EtcdError::NotSupportedForLearner));
            return;
        }
        self.handle_as(id, request, credentials);
    }

    /// Hands an admitted request, its sender identified and checked, to its service.
    pub(super) fn dispatch_client(&mut self, id: RequestId, request: ClientRequest) {
        let result = match request {
            ClientRequest::MemberAdd(_)
            | ClientRequest::MemberRemove(_)
            | ClientRequest::MemberUpdate(_)
            | ClientRequest::MemberList(_)
            | ClientRequest::MemberPromote(_) => self.handle_cluster(id, request),
            ClientRequest::Alarm(_)
            | ClientRequest::Status(_)
            | ClientRequest::Defragment(_)
            | ClientRequest::Hash(_)
            | ClientRequest::HashKv(_)
            | ClientRequest::MoveLeader(_)
            | ClientRequest::Downgrade(_) => self.handle_maintenance(id, request),
            ClientRequest::AuthEnable(_)
            | ClientRequest::AuthDisable(_)
            | ClientRequest::AuthStatus(_)
            | ClientRequest::UserAdd(_)
            | ClientRequest::UserGet(_)
            | ClientRequest::UserList(_)
            | ClientRequest::UserDelete(_)
            | ClientRequest::UserChangePassword(_)
            | ClientRequest::UserGrantRole(_)
            | ClientRequest::UserRevokeRole(_)
            | ClientRequest::RoleAdd(_)
            | ClientRequest::RoleGet(_)
            | ClientRequest::RoleList(_)
            | ClientRequest::RoleDelete(_)
            | ClientRequest::RoleGrantPermission(_)
            | ClientRequest::RoleRevokePermission(_)
            | ClientRequest::Authenticate(_)
            | ClientRequest::PasswordHash(_)
            | ClientRequest::Authorize(_) => self.handle_auth(id, request),
            ClientRequest::ReadBarrier(req) => {
                self.read(id, false, ClientRequest::ReadBarrier(req));
                Ok(())
            }
            ClientRequest::Range(req) => mvcc::check_range(&req)
                .map(|()| self.read(id, req.serializable, ClientRequest::Range(req))),
            ClientRequest::Txn(req) if !txn_has_writes(&req) => {
                mvcc::check_txn(&req, self.cfg.max_txn_ops).map(|()| {
                    let serializable = txn_is_serializable(&req);
                    self.read(id, serializable, ClientRequest::Txn(req))
                })
            }
            ClientRequest::Put(req) => mvcc::check_put(&req)
                .and_then(|()| self.check_quota(put_cost(&req)))
                .map(|()| self.propose(id, internal_request::Op::Put(req))),
            ClientRequest::DeleteRange(req) => mvcc::check_delete_range(&req)
                .map(|()| self.propose(id, internal_request::Op::DeleteRange(req))),
            ClientRequest::Txn(req) => mvcc::check_txn(&req, self.cfg.max_txn_ops)
                .and_then(|()| self.check_quota(txn_cost(&req)))
                .map(|()| self.propose(id, internal_request::Op::Txn(req))),
            ClientRequest::Compact(req) => {
                self.propose(id, internal_request::Op::Compaction(req));
                Ok(())
            }
            ClientRequest::LeaseGrant(req) => self.accept_lease_grant(id, req),
            ClientRequest::LeaseRevoke(req) => {
                self.propose(id, internal_request::Op::LeaseRevoke(req));
                Ok(())
            }
            ClientRequest::LeaseLeases(req) => {
                self.read(id, false, ClientRequest::LeaseLeases(req));
                Ok(())
            }
            ClientRequest::LeaseKeepAlive(req) => self.accept_for_leader(id, req.into()),
            ClientRequest::LeaseTimeToLive(req) => self.accept_for_leader(id, req.into()),
        };
        if let Err(err) = result {
            self.finish(id, Err(err));
        }
    }

    /// Serves a read: at once from the local state when serializable, otherwise once a read
    /// index confirms this member has applied everything committed before the request came.
    pub(super) fn read(&mut self, id: RequestId, serializable: bool, request: ClientRequest) {
        if serializable || self.bug(|b| b.read_without_read_index) {
            self.serve_read(id, &request);
        } else {
            self.reads.queue(id, request);
        }
    }

    /// Turns a client's write into a raft proposal tagged with this member and a fresh
    /// proposal id; the client is answered when the entry is applied here.
    pub(super) fn propose(&mut self, id: RequestId, op: internal_request::Op) {
        if self
            .raw
            .raft
            .raft_log
            .committed
            .saturating_sub(self.applied_index)
            > APPLY_LAG_MAX
        {
            self.finish(id, Err(EtcdError::TooManyRequests));
            return;
        }
        let proposal = self.proposals.next_id();
        let caller = self.auth.caller();
        let data = InternalRequest {
            origin: self.cfg.id,
            request_id: proposal,
            op: Some(op),
            auth_user: caller.user.clone(),
            auth_revision: caller.revision,
        }
        .encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            self.finish(id, Err(EtcdError::RequestTooLarge));
            return;
        }
        self.pending.bind_proposal(id, proposal);
        if self.cfg.observe {
            self.outputs.push_back(Output::Proposed {
                id,
                origin: self.cfg.id,
                proposal,
            });
        }
        self.propose_bytes(data);
    }

    /// Proposes a decision of the leader's own (lease expiry, checkpoints) that no client
    /// waits for. Only a leader proposes one, directly into its own log: a decision is never
    /// queued or forwarded, since a member that is not the leader any more has nothing to
    /// decide (its entry dies with its term if it was deposed meanwhile).
    pub(super) fn propose_as_leader(&mut self, op: internal_request::Op) {
        let proposal = self.proposals.next_id();
        self.propose_as_leader_with(proposal, op);
    }

    /// Proposes a lease expiry from whatever member this is, forwarding it to the leader: only
    /// the injected bug `follower_lease_expiry` does this.
    pub(super) fn propose_expiry_from_anywhere(&mut self, op: internal_request::Op) {
        let proposal = self.proposals.next_id();
        self.propose_bytes(encode_proposal(self.cfg.id, proposal, op));
    }

    /// [`Node::propose_as_leader`] under a proposal id the caller drew already.
    pub(super) fn propose_as_leader_with(&mut self, proposal: u64, op: internal_request::Op) {
        if self.is_leader() {
            let data = encode_proposal(self.cfg.id, proposal, op);
            // A leader refuses only while transferring leadership; the decision is then moot.
            let _ = self.raw.propose(Vec::new(), data);
        }
    }

    pub(super) fn propose_bytes(&mut self, data: Vec<u8>) {
        if self.leader_id().is_some() && self.raw.propose(Vec::new(), data.clone()).is_ok() {
            return;
        }
        self.proposals.awaiting_leader.push_back(data);
    }

    /// Proposes what waited for a leader, once one is known.
    pub(super) fn propose_awaiting(&mut self) {
        while self.leader_id().is_some() {
            let Some(data) = self.proposals.awaiting_leader.pop_front() else {
                break;
            };
            if self.raw.propose(Vec::new(), data.clone()).is_err() {
                self.proposals.awaiting_leader.push_front(data);
                break;
            }
        }
        // Proposals whose requests timed out are dropped rather than kept forever.
        self.proposals
            .awaiting_leader
            .truncate(self.cfg.pending_requests_max);
    }

    /// Issues one ReadIndex for all linearizable reads queued, unless one is outstanding;
    /// answers whether it did.
    pub(super) fn flush_reads(&mut self) -> bool {
        let Some(ctx) = self.reads.issue_queued(self.now) else {
            return false;
        };
        self.raw.read_index(ctx.to_be_bytes().to_vec());
        true
    }

    /// Asks again for read indexes that went unanswered.
    pub(super) fn retry_read_indexes(&mut self) {
        let pending = &self.pending;
        let stale = self
            .reads
            .stale_batches(self.now, READ_INDEX_RETRY, |id| pending.contains(id));
        for ctx in stale {
            self.raw.read_index(ctx.to_be_bytes().to_vec());
            self.reads.mark_issued(ctx, self.now);
        }
    }

    pub(super) fn serve_reads_up_to_applied(&mut self) {
        for (id, request) in self.reads.take_servable(self.applied_index) {
            if self.pending.contains(id) {
                self.serve_read(id, &request);
            }
        }
    }

    fn serve_read(&mut self, id: RequestId, request: &ClientRequest) {
        if let ClientRequest::ReadBarrier(_) = request {
            return self.pass_read_barrier(id);
        }
        if let Err(err) = self.admit_reader(id, request) {
            return self.finish(id, Err(err));
        }
        let mut result = self.state.read(request, self.cfg.max_range_bytes);
        if let Ok(Answer {
            response: ClientResponse::LeaseLeases(leases),
            ..
        }) = &mut result
        {
            self.order_by_expiry(leases);
        }
        self.finish(id, result);
    }

    pub(super) fn expire_requests(&mut self) {
        for id in self.pending.expire(self.now) {
            let err = if self.leader_id().is_none() {
                EtcdError::TimeoutDueToLeaderFail
            } else {
                EtcdError::Timeout
            };
            self.outputs.push_back(Output::Reply {
                id,
                result: Err(err),
                cold: Default::default(),
            });
        }
    }

    /// Answers a request this member is tracking, filling in the response header.
    pub(super) fn finish(&mut self, id: RequestId, result: Result<Answer, EtcdError>) {
        if self.pending.remove(id) {
            self.reply(id, result);
        }
    }

    pub(super) fn reply(&mut self, id: RequestId, result: Result<Answer, EtcdError>) {
        let (result, cold) = match result {
            Ok(Answer { response, cold }) => (Ok(Box::new(response)), cold),
            Err(e) => (Err(e), Default::default()),
        };
        if !cold.is_empty() {
            // The driver reads these values as it sends the reply: the writes that put them in
            // their segments must reach it first.
            self.emit_cold_ops();
        }
        let result = result.map(|mut resp| {
            let header = ResponseHeader {
                cluster_id: self.cluster_id(),
                member_id: self.cfg.id,
                revision: resp
                    .revision()
                    .unwrap_or_else(|| self.state.kv().current_revision()),
                raft_term: self.raw.raft.term,
            };
            *resp.header_mut() = Some(header);
            resp
        });
        self.outputs.push_back(Output::Reply { id, result, cold });
    }
}

/// What a learner answers (etcd's `isRPCSupportedForLearner`): its status and serializable
/// ranges; everything else needs a voter.
fn learner_serves(request: &ClientRequest) -> bool {
    match request {
        ClientRequest::Status(_) => true,
        ClientRequest::Range(r) => r.serializable,
        _ => false,
    }
}

pub(super) fn encode_proposal(origin: u64, proposal: u64, op: internal_request::Op) -> Vec<u8> {
    InternalRequest {
        origin,
        request_id: proposal,
        op: Some(op),
        ..InternalRequest::default()
    }
    .encode_to_vec()
}

fn put_cost(req: &PutRequest) -> u64 {
    QUOTA_RECORD_OVERHEAD_BYTES + req.key.len() as u64 + req.value.len() as u64
}

/// The larger branch's puts, as etcd counts a txn.
fn txn_cost(req: &TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(put)) => put_cost(put),
                Some(Request::RequestTxn(inner)) => txn_cost(inner),
                _ => 0,
            })
            .sum()
    };
    branch(&req.success).max(branch(&req.failure))
}

pub(super) fn txn_has_writes(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => false,
            Some(Request::RequestTxn(inner)) => txn_has_writes(inner),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
        })
}

/// A read-only txn is served locally only when every range in it asked for serializable reads.
pub(super) fn txn_is_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(inner)) => txn_is_serializable(inner),
            _ => true,
        })
}
