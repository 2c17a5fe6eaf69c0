//! What the checker must know of a request, restated from the node so the checker does not trust
//! the code it checks: which requests are writes, which reads are linearizable, how an applied
//! entry is executed, which errors a member answers before proposing, and how a range inside a
//! read fails its revision checks.
//!
//! Everything here mirrors `src/node/mod.rs`; the API checks come from the reference model. If
//! the node changes, the property test of the checker (sequential histories must pass) notices
//! the drift.

use detcd::auth::AuthInfo;
use detcd::error::EtcdError;
use detcd::lease::MAX_TTL_SECS;
use detcd::node::ClientRequest;
use detcd::node::ClientResponse;
use detcd::proto::detcdpb::{internal_request, MemberChange};
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{RequestOp, ResponseHeader, TxnRequest};
use detcd::state::State;

use crate::model::api_checks;

/// What the result of executing a request is: a response or an error, both are answers.
pub type Answer = Result<ClientResponse, EtcdError>;

/// The writes the log carries, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Put,
    Delete,
    Txn,
    Compact,
    LeaseGrant,
    LeaseRevoke,
    Membership,
    Alarm,
    Auth,
}

/// How the node treats a request: a write goes through the log; a read never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Write(WriteKind),
    /// `linearizable` reads wait for a read index; the others answer from the local store.
    Read {
        linearizable: bool,
    },
    /// Answered by the leader from its lease clocks, never through the log; the lease checker
    /// judges these.
    LeaseClock,
    /// Answered from a member's own raft or disk state (Status, hashes, MoveLeader, ...), or
    /// by the leader's view of a learner: not judged against the key space.
    Local,
}

pub fn classify(request: &ClientRequest) -> Class {
    match request {
        ClientRequest::Range(r) => Class::Read {
            linearizable: !r.serializable,
        },
        ClientRequest::Txn(t) if !txn_has_writes(t) => Class::Read {
            linearizable: !txn_is_serializable(t),
        },
        ClientRequest::Put(_) => Class::Write(WriteKind::Put),
        ClientRequest::DeleteRange(_) => Class::Write(WriteKind::Delete),
        ClientRequest::Txn(_) => Class::Write(WriteKind::Txn),
        ClientRequest::Compact(_) => Class::Write(WriteKind::Compact),
        ClientRequest::LeaseGrant(_) => Class::Write(WriteKind::LeaseGrant),
        ClientRequest::LeaseRevoke(_) => Class::Write(WriteKind::LeaseRevoke),
        ClientRequest::LeaseLeases(_) => Class::Read { linearizable: true },
        ClientRequest::LeaseKeepAlive(_) | ClientRequest::LeaseTimeToLive(_) => Class::LeaseClock,
        ClientRequest::MemberAdd(_)
        | ClientRequest::MemberRemove(_)
        | ClientRequest::MemberUpdate(_)
        | ClientRequest::MemberPromote(_) => Class::Write(WriteKind::Membership),
        ClientRequest::Alarm(_) => Class::Write(WriteKind::Alarm),
        ClientRequest::AuthEnable(_)
        | ClientRequest::AuthDisable(_)
        | ClientRequest::Authenticate(_)
        | ClientRequest::UserAdd(_)
        | ClientRequest::UserDelete(_)
        | ClientRequest::UserChangePassword(_)
        | ClientRequest::UserGrantRole(_)
        | ClientRequest::UserRevokeRole(_)
        | ClientRequest::RoleAdd(_)
        | ClientRequest::RoleDelete(_)
        | ClientRequest::RoleGrantPermission(_)
        | ClientRequest::RoleRevokePermission(_) => Class::Write(WriteKind::Auth),
        // Judged against the auth stores the log went through (`check_auth_reads`).
        ClientRequest::AuthStatus(_)
        | ClientRequest::UserGet(_)
        | ClientRequest::UserList(_)
        | ClientRequest::RoleGet(_)
        | ClientRequest::RoleList(_) => Class::Local,
        ClientRequest::MemberList(_)
        | ClientRequest::Status(_)
        | ClientRequest::Defragment(_)
        | ClientRequest::Hash(_)
        | ClientRequest::HashKv(_)
        | ClientRequest::MoveLeader(_)
        | ClientRequest::Downgrade(_)
        | ClientRequest::ReadBarrier(_)
        | ClientRequest::PasswordHash(_)
        | ClientRequest::Authorize(_) => Class::Local,
    }
}

/// Entries the leader proposes on its own (lease expiry and checkpoints, auto compaction): no
/// client op claims them.
pub fn is_internal(op: &internal_request::Op) -> bool {
    use detcd::proto::detcdpb::member_change::Change;
    match op {
        internal_request::Op::LeaseExpire(_)
        | internal_request::Op::LeaseCheckpoints(_)
        | internal_request::Op::AutoCompaction(_)
        | internal_request::Op::HashReport(_) => true,
        // A member publishing its own name and client URLs, a leader promoting a learner.
        internal_request::Op::MemberChange(c) => {
            c.automatic || matches!(c.change, Some(Change::Attributes(_)))
        }
        _ => false,
    }
}

/// An alarm no client proposed: a member raising NOSPACE after a refusal, or the leader
/// clearing it (`detcd::node` `space`).
pub fn raised_by_member(op: &internal_request::Op, client_proposed: bool) -> bool {
    matches!(op, internal_request::Op::Alarm(_)) && !client_proposed
}

fn branches(t: &TxnRequest) -> impl Iterator<Item = &RequestOp> {
    t.success.iter().chain(&t.failure)
}

pub fn txn_has_writes(t: &TxnRequest) -> bool {
    branches(t).any(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => false,
        Some(Request::RequestTxn(inner)) => txn_has_writes(inner),
        Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
    })
}

/// A read-only txn skips the read index only when every range in it asked for serializable.
fn txn_is_serializable(t: &TxnRequest) -> bool {
    branches(t).all(|op| match &op.request {
        Some(Request::RequestRange(r)) => r.serializable,
        Some(Request::RequestTxn(inner)) => txn_is_serializable(inner),
        _ => true,
    })
}

/// Only puts cost quota, so only a txn with a put can be refused with NoSpace.
fn txn_has_puts(t: &TxnRequest) -> bool {
    branches(t).any(|op| match &op.request {
        Some(Request::RequestPut(_)) => true,
        Some(Request::RequestTxn(inner)) => txn_has_puts(inner),
        _ => false,
    })
}

/// Executes an applied entry's request exactly as the node's apply loop does; `None` for the
/// leader's own entries, which answer nobody.
pub fn apply(state: &mut State, op: &internal_request::Op, caller: &AuthInfo) -> Option<Answer> {
    let result = state.apply_as(op.clone(), caller).result?;
    Some(result.map(|answer| answer.response))
}

/// True when the log entry carries the very request the client sent.
pub fn same_request(op: &internal_request::Op, request: &ClientRequest) -> bool {
    match (op, request) {
        (internal_request::Op::Put(a), ClientRequest::Put(b)) => a == b,
        (internal_request::Op::DeleteRange(a), ClientRequest::DeleteRange(b)) => a == b,
        (internal_request::Op::Txn(a), ClientRequest::Txn(b)) => a == b,
        (internal_request::Op::Compaction(a), ClientRequest::Compact(b)) => a == b,
        // The member settles the id (when the client left it to the server) and raises the TTL
        // to the minimum before proposing.
        (internal_request::Op::LeaseGrant(a), ClientRequest::LeaseGrant(b)) => {
            (b.id == 0 || a.id == b.id) && a.ttl >= b.ttl
        }
        (internal_request::Op::LeaseRevoke(a), ClientRequest::LeaseRevoke(b)) => a == b,
        (internal_request::Op::Alarm(a), ClientRequest::Alarm(b)) => a == b,
        (internal_request::Op::MemberChange(a), request) => same_member_change(a, request),
        // The member drops a plain password before proposing (the driver hashed it).
        (internal_request::Op::Auth(a), request) => {
            detcd::auth::api::change_of(request.clone()).is_some_and(|b| *a == b)
        }
        _ => false,
    }
}

/// The member settles a new member's id before proposing; the rest is the client's.
fn same_member_change(change: &MemberChange, request: &ClientRequest) -> bool {
    use detcd::proto::detcdpb::member_change::Change;
    match (&change.change, request) {
        (Some(Change::Add(a)), ClientRequest::MemberAdd(b)) => {
            a.peer_ur_ls == b.peer_ur_ls && a.is_learner == b.is_learner
        }
        (Some(Change::Remove(a)), ClientRequest::MemberRemove(b)) => *a == b.id,
        (Some(Change::Promote(a)), ClientRequest::MemberPromote(b)) => *a == b.id,
        (Some(Change::Update(a)), ClientRequest::MemberUpdate(b)) => a == b,
        _ => false,
    }
}

/// The response with the header fields that depend on who answered (cluster, member, raft
/// term) cleared: the store decides only the revision. Nested txn headers are the store's
/// already.
pub fn normalized_answer(answer: &Answer) -> Answer {
    answer.as_ref().map(normalized).map_err(Clone::clone)
}

pub fn normalized(response: &ClientResponse) -> ClientResponse {
    let mut response = response.clone();
    if let Some(h) = response.header_mut() {
        *h = ResponseHeader {
            revision: h.revision,
            ..ResponseHeader::default()
        };
    }
    response
}

/// Errors a read gets from the store (its revision checks, and a Range's bound on its size);
/// the model decides them. A read's other definite errors are refusals before it reaches the
/// store.
pub fn is_store_error(error: &EtcdError) -> bool {
    matches!(
        error,
        EtcdError::Compacted | EtcdError::FutureRev | EtcdError::RangeTooLarge
    )
}

/// True when a member answers `error` to `request` without proposing it (writes) or reading
/// the store (reads): the API checks, quota, the bound on pending requests and apply lag
/// (TooManyRequests), and the entry size limit.
pub fn refused_before_proposing(request: &ClientRequest, error: &EtcdError) -> bool {
    use EtcdError::{NoSpace, RequestTooLarge, TooManyRequests};
    // Past the bound on pending requests, or at a learner, which serves almost nothing.
    if *error == TooManyRequests || *error == EtcdError::NotSupportedForLearner {
        return true;
    }
    // While auth is on: a token the member does not hold, and a read the member's auth store
    // does not let through (most auth reads need the root role).
    if *error == EtcdError::InvalidAuthToken
        || (auth_read(request)
            && matches!(
                error,
                EtcdError::UserEmpty | EtcdError::PermissionDenied | EtcdError::AuthOldRevision
            ))
    {
        return true;
    }
    let same = |checked: Result<(), EtcdError>| checked.as_ref().err() == Some(error);
    match request {
        ClientRequest::Range(r) => same(api_checks::check_range(r)),
        ClientRequest::Put(p) => {
            matches!(error, NoSpace | RequestTooLarge) || same(api_checks::check_put(p))
        }
        ClientRequest::DeleteRange(d) => {
            *error == RequestTooLarge || same(api_checks::check_delete_range(d))
        }
        ClientRequest::Txn(t) => {
            txn_validation_explains(t, error)
                || (txn_has_writes(t) && *error == RequestTooLarge)
                || (txn_has_puts(t) && *error == NoSpace)
        }
        ClientRequest::Compact(_) | ClientRequest::LeaseRevoke(_) => *error == RequestTooLarge,
        ClientRequest::LeaseGrant(g) => {
            matches!(error, NoSpace | RequestTooLarge)
                || (g.ttl > MAX_TTL_SECS && *error == EtcdError::LeaseTtlTooLarge)
        }
        ClientRequest::MemberAdd(_)
        | ClientRequest::MemberRemove(_)
        | ClientRequest::MemberUpdate(_)
        | ClientRequest::MemberPromote(_) => membership_refusal(request, error),
        ClientRequest::Alarm(_) => *error == RequestTooLarge,
        _ => false,
    }
}

/// A read a member checks against its auth store before serving it.
fn auth_read(request: &ClientRequest) -> bool {
    match request {
        ClientRequest::Range(_) => true,
        ClientRequest::Txn(t) => !txn_has_writes(t),
        _ => detcd::auth::api::is_read(request),
    }
}

/// What a member answers a membership change without proposing it: its checks against the
/// member list and the quorum, a learner not yet in sync, no leader to propose to.
fn membership_refusal(request: &ClientRequest, error: &EtcdError) -> bool {
    use EtcdError::*;
    match request {
        ClientRequest::MemberPromote(_) => matches!(
            error,
            MemberNotFound
                | MemberNotLearner
                | LearnerNotReady
                | MemberNotEnoughStarted
                | Unhealthy
                | NoLeader
        ),
        _ => matches!(
            error,
            MemberNotFound
                | MemberBadUrls
                | PeerUrlExist
                | MemberExist
                | MemberNotEnoughStarted
                | Unhealthy
                | NoLeader
                | TooManyLearners
        ),
    }
}

/// The txn checks depend on the member's `max_txn_ops`, which the checker does not know. With
/// no limit the checks visit the request in the same order and stop at the same first error,
/// unless a limit stopped them earlier with TooManyOps; so any error but TooManyOps must be the
/// unlimited check's error, and TooManyOps is always possible.
fn txn_validation_explains(t: &TxnRequest, error: &EtcdError) -> bool {
    *error == EtcdError::TooManyOps
        || api_checks::check_txn(t, usize::MAX).as_ref().err() == Some(error)
}

/// One range of a read as the store's revision checks see it. A plain Range and a range in a
/// txn are checked differently (see `mvcc/txn.rs`): in a txn the raw revision is compared with
/// etcd's compact revision, which is -1 before the first compaction.
#[derive(Clone, Copy, Debug)]
pub struct RevisionCheck {
    pub revision: i64,
    pub in_txn: bool,
}

impl RevisionCheck {
    /// FutureRev: the store has not reached the revision yet. Holds on a prefix of the log.
    pub fn is_future(&self, current: i64) -> bool {
        self.revision > current
    }

    /// Compacted: the revision exists but was compacted away. Once true it stays true, since
    /// both the current and the compact revision only grow.
    pub fn is_compacted(&self, current: i64, compact_main: i64) -> bool {
        let asks_past = if self.in_txn {
            self.revision != 0
        } else {
            self.revision > 0
        };
        asks_past && !self.is_future(current) && self.revision < compact_main
    }
}

/// Every range of a read, in both branches of a txn and its nested txns: whichever branch the
/// store takes, one of these is what can fail.
pub fn revision_checks(request: &ClientRequest) -> Vec<RevisionCheck> {
    let mut out = Vec::new();
    match request {
        ClientRequest::Range(r) => out.push(RevisionCheck {
            revision: r.revision,
            in_txn: false,
        }),
        ClientRequest::Txn(t) => txn_revision_checks(t, &mut out),
        _ => {}
    }
    out
}

fn txn_revision_checks(t: &TxnRequest, out: &mut Vec<RevisionCheck>) {
    for op in branches(t) {
        match &op.request {
            Some(Request::RequestRange(r)) => out.push(RevisionCheck {
                revision: r.revision,
                in_txn: true,
            }),
            Some(Request::RequestTxn(inner)) => txn_revision_checks(inner, out),
            _ => {}
        }
    }
}
