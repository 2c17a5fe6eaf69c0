//! The replicated state: every state machine a committed entry can change (the key space and the
//! leases; later auth, members, alarms), applied in log order.
//!
//! The node only orders and persists entries; [`State::apply`] applies one entry's operation to
//! the state machine(s) it concerns and returns the client's answer plus the [`Effects`] the rest
//! of the node needs: the key changes of the revision (what leases and watchers consume), the
//! lease records (what the lease clocks start from) and the leases that are gone. Everything here
//! is pure and deterministic: every member applying the same entries holds the same state, which
//! is what the snapshot stores and what the convergence digest compares.
//!
//! Invariants: the key space's own (see `mvcc`); the lease table's, including that the keys
//! attached to each lease are exactly the live keys naming it (`State::check_invariants`).

pub mod backup;
mod snapshot;

pub use snapshot::{StateSnapshotError, StateView};

use std::time::Duration;

use bytes::Bytes;

use crate::alarm::Alarms;
use crate::api::{ClientRequest, ClientResponse};
use crate::auth::{Auth, AuthInfo};
use crate::error::EtcdError;
use crate::lease::{LeaseId, Leases};
use crate::members::{Members, RaftChange};
use crate::mvcc::{ColdOp, ColdValues, KeyChange, KeySpace};
use crate::proto::detcdpb::{
    auth_change::Change as AuthOp, internal_request::Op, member_change::Change, LeaseCheckpoints,
    LeaseExpire, MemberChange,
};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    AlarmResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, MemberAddResponse, MemberListResponse, MemberPromoteResponse,
    MemberRemoveResponse, MemberUpdateResponse, ResponseHeader, TxnRequest,
};

/// A response and the cold values it still needs (empty for nearly every response).
#[derive(Debug)]
pub struct Answer {
    pub response: ClientResponse,
    pub cold: ColdValues,
}

impl<T: Into<ClientResponse>> From<T> for Answer {
    fn from(response: T) -> Answer {
        Answer {
            response: response.into(),
            cold: ColdValues::default(),
        }
    }
}

/// A lease's remaining time as an applied grant or checkpoint recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    pub generation: u64,
    /// A grant (the lease is new) rather than a checkpoint.
    pub granted: bool,
    pub ttl: Duration,
    pub remaining: Duration,
}

/// What applying one entry changed, besides the answer.
#[derive(Debug, Default)]
pub struct Effects {
    /// The keys the entry changed, in order, all at one revision.
    pub key_changes: Vec<KeyChange>,
    pub lease_records: Vec<LeaseRecord>,
    pub leases_removed: Vec<LeaseId>,
    /// The member list changed (the peer transport follows it).
    pub members_changed: bool,
    /// What raft's configuration must do, for an applied addition, removal or promotion.
    pub raft_change: Option<RaftChange>,
}

/// The result of applying one entry.
#[derive(Debug)]
pub struct Applied {
    /// The answer for the client that asked; `None` for the leader's own entries (expiry,
    /// checkpoints), which nobody waits for.
    pub result: Option<Result<Answer, EtcdError>>,
    pub effects: Effects,
}

/// The replicated state. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    kv: KeySpace,
    leases: Leases,
    members: Members,
    alarms: Alarms,
    auth: Auth,
}

/// The key space and leases a snapshot's install replaced, held only to be dropped: freeing
/// them takes time in proportion to their keys and leases (tens of milliseconds at 100,000
/// keys), which a member's thread should not spend while it serves.
#[derive(Clone, Debug)]
pub struct ReplacedState {
    _kv: KeySpace,
    _leases: Leases,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// The state a new cluster starts from: nothing but its members.
    pub fn bootstrap(members: Members) -> State {
        State {
            members,
            ..State::default()
        }
    }

    /// A state of the key space alone, without leases (for tests and tools).
    pub fn from_key_space(kv: KeySpace) -> State {
        State {
            kv,
            ..State::default()
        }
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn kv(&self) -> &KeySpace {
        &self.kv
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Applies one committed entry's operation, asked for by nobody identified: the leader's
    /// own entries, and any entry while auth is off.
    pub fn apply(&mut self, op: Op) -> Applied {
        self.apply_as(op, &AuthInfo::default())
    }

    /// Applies one committed entry's operation, asked for by `caller` (see `auth`).
    pub fn apply_as(&mut self, op: Op, caller: &AuthInfo) -> Applied {
        let mut effects = Effects::default();
        let refused = self.refused_by_auth(&op, caller).err();
        if let Some(refused) = refused.or_else(|| self.refused_by_alarm(&op)) {
            return Applied {
                result: Some(Err(refused)),
                effects,
            };
        }
        let result = match op {
            Op::Put(req) => Some(
                self.kv
                    .put_with_leases(&req, &self.leases)
                    .map(Answer::from),
            ),
            Op::DeleteRange(req) => Some(self.kv.delete_range(&req).map(Answer::from)),
            Op::Txn(req) => Some(self.txn(&req)),
            Op::Compaction(req) | Op::AutoCompaction(req) => {
                Some(self.kv.compact(&req).map(Answer::from))
            }
            Op::LeaseGrant(req) => Some(self.grant(&req, &mut effects).map(Answer::from)),
            Op::LeaseRevoke(req) => Some(self.revoke(&req, &mut effects).map(Answer::from)),
            Op::LeaseExpire(LeaseExpire { id, generation }) => {
                // A lease revoked since the leader decided is gone already, or another lease
                // was granted under its id: either way there is nothing to expire.
                if self.leases.get_generation(id, generation).is_some() {
                    let _ = self.revoke(&LeaseRevokeRequest { id }, &mut effects);
                }
                None
            }
            Op::LeaseCheckpoints(checkpoints) => {
                self.checkpoint(checkpoints, &mut effects);
                None
            }
            Op::MemberChange(change) => self.change_members(change, &mut effects),
            Op::Alarm(req) => Some(Ok(Answer::from(AlarmResponse {
                header: header(self.kv.current_revision()),
                alarms: self.alarms.apply(&req),
            }))),
            Op::HashReport(report) => {
                self.alarms.report_hash(&report);
                None
            }
            Op::Auth(change) => Some(self.auth.apply(&change).map(|()| {
                let mut answer = crate::auth::api::answer_of(&change);
                *answer.header_mut() = header(self.kv.current_revision());
                Answer::from(answer)
            })),
        };
        self.absorb_key_changes(&mut effects);
        Applied { result, effects }
    }

    /// Serves a read (a Range, a Txn without writes, LeaseLeases) from the state as it is. A
    /// Range's keys and values may add up to `range_bytes_max` (`--max-range-bytes`).
    pub fn read(
        &mut self,
        request: &ClientRequest,
        range_bytes_max: u64,
    ) -> Result<Answer, EtcdError> {
        match request {
            ClientRequest::Range(req) => {
                let (response, cold) = self.kv.read_range(req, range_bytes_max)?;
                Ok(Answer {
                    response: response.into(),
                    cold,
                })
            }
            ClientRequest::Txn(req) => {
                let answer = self.txn(req);
                debug_assert!(self.kv.take_changes().is_empty(), "a read wrote");
                answer
            }
            ClientRequest::MemberList(_) => Ok(Answer::from(MemberListResponse {
                // etcd's cluster responses carry no revision.
                header: header(0),
                members: self.members.list(),
            })),
            ClientRequest::LeaseLeases(_) => Ok(Answer::from(LeaseLeasesResponse {
                header: header(self.kv.current_revision()),
                leases: self
                    .leases
                    .iter()
                    .map(|(id, _)| LeaseStatus { id })
                    .collect(),
            })),
            auth if crate::auth::api::is_read(auth) => {
                let mut answer = self.auth.read(auth)?;
                *answer.header_mut() = header(self.kv.current_revision());
                Ok(Answer::from(answer))
            }
            other => unreachable!("{} is not a read", other.name()),
        }
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<Answer, EtcdError> {
        let (response, cold) = self.kv.txn_with_leases(req, &self.leases)?;
        Ok(Answer {
            response: response.into(),
            cold,
        })
    }

    fn grant(
        &mut self,
        req: &LeaseGrantRequest,
        effects: &mut Effects,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        self.leases.grant(req.id, req.ttl)?;
        let lease = self.leases.get(req.id).expect("just granted");
        effects.lease_records.push(LeaseRecord {
            id: req.id,
            generation: lease.generation,
            granted: true,
            ttl: Duration::from_secs(lease.ttl_secs as u64),
            remaining: Duration::from_millis(lease.remaining_ms as u64),
        });
        Ok(LeaseGrantResponse {
            header: header(self.kv.current_revision()),
            id: req.id,
            ttl: req.ttl,
            error: String::new(),
        })
    }

    /// Deletes every key attached to the lease at one revision, then the lease itself.
    fn revoke(
        &mut self,
        req: &LeaseRevokeRequest,
        effects: &mut Effects,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        let keys: Vec<Bytes> = self.leases.remove(req.id).ok_or(EtcdError::LeaseNotFound)?;
        let revision = self.kv.delete_keys(&keys);
        effects.leases_removed.push(req.id);
        Ok(LeaseRevokeResponse {
            header: header(revision),
        })
    }

    fn checkpoint(&mut self, checkpoints: LeaseCheckpoints, effects: &mut Effects) {
        for entry in checkpoints.leases {
            if self
                .leases
                .checkpoint(entry.id, entry.generation, entry.remaining_ms)
            {
                let lease = self.leases.get(entry.id).expect("checkpointed");
                effects.lease_records.push(LeaseRecord {
                    id: entry.id,
                    generation: entry.generation,
                    granted: false,
                    ttl: Duration::from_secs(lease.ttl_secs as u64),
                    remaining: Duration::from_millis(lease.remaining_ms as u64),
                });
            }
        }
    }

    /// etcd's checks of a client's write while auth is on (`auth::requests`); a lease's keys
    /// must all be writable by whoever revokes it or attaches a key to it.
    fn refused_by_auth(&self, op: &Op, caller: &AuthInfo) -> Result<(), EtcdError> {
        let auth = &self.auth;
        if !auth.is_enabled() {
            return Ok(());
        }
        match op {
            Op::Put(r) => {
                auth.check_put(caller, r)?;
                self.check_lease_keys(r.lease, caller)
            }
            Op::DeleteRange(r) => auth.check_delete(caller, r),
            Op::Txn(t) => {
                auth.check_txn(caller, t)?;
                txn_leases(t).try_for_each(|lease| self.check_lease_keys(lease, caller))
            }
            Op::LeaseRevoke(r) => self.check_lease_keys(r.id, caller),
            Op::Auth(change) if !matches!(change.change, Some(AuthOp::Authenticate(_))) => {
                auth.check_admin(caller)
            }
            _ => Ok(()),
        }
    }

    fn check_lease_keys(&self, lease: LeaseId, caller: &AuthInfo) -> Result<(), EtcdError> {
        let mut keys = self.leases.get(lease).into_iter().flat_map(|l| l.keys());
        keys.try_for_each(|key| self.auth.check_write(caller, key))
    }

    /// The error a client's write gets while an alarm stands (see `alarm`).
    fn refused_by_alarm(&self, op: &Op) -> Option<EtcdError> {
        if !is_write(op) {
            return None;
        }
        self.alarms.refuses(adds_data(op))
    }

    /// Applies a membership change; answers it unless it is a member's own attributes.
    fn change_members(
        &mut self,
        change: MemberChange,
        effects: &mut Effects,
    ) -> Option<Result<Answer, EtcdError>> {
        let publish = matches!(change.change, Some(Change::Attributes(_)));
        let added = match &change.change {
            Some(Change::Add(member)) => Some(member.id),
            _ => None,
        };
        let kind = change.change.clone();
        let result = self.members.apply(change).map(|raft_change| {
            effects.members_changed = true;
            effects.raft_change = raft_change;
            let members = self.members.list();
            // etcd's cluster responses carry no revision.
            let header = header(0);
            match kind.expect("applied") {
                Change::Add(_) => Answer::from(MemberAddResponse {
                    header,
                    member: added.and_then(|id| self.members.get(id).cloned()),
                    members,
                }),
                Change::Remove(_) => Answer::from(MemberRemoveResponse { header, members }),
                Change::Promote(_) => Answer::from(MemberPromoteResponse { header, members }),
                Change::Update(_) | Change::Attributes(_) => {
                    Answer::from(MemberUpdateResponse { header, members })
                }
            }
        });
        (!publish).then_some(result)
    }

    /// Moves the key changes of the applied write into the lease table and the effects.
    fn absorb_key_changes(&mut self, effects: &mut Effects) {
        let changes = self.kv.take_changes();
        for change in &changes {
            self.leases.apply_key_change(change);
        }
        effects.key_changes = changes;
    }

    /// Bytes the quota counts: the key space's and the leases'.
    pub fn approximate_size_bytes(&self) -> u64 {
        self.kv.approximate_size_bytes() + self.leases.quota_bytes()
    }

    /// About how many bytes a snapshot of the state would take; low rather than high.
    pub fn snapshot_bytes_estimate(&self) -> u64 {
        self.kv.snapshot_bytes_estimate() + self.leases.len() as u64 * 16
    }

    /// Turns the key space's injected bugs on (simulator tests only).
    pub fn inject_bugs(&mut self, bugs: crate::mvcc::KeySpaceBugs, auth: crate::auth::AuthBugs) {
        self.kv.inject_bugs(bugs);
        self.auth.inject_bugs(auth);
    }

    /// Whether applied writes report every key change in their effects (for watchers), or only
    /// those the lease table needs (see `KeySpace::report_every_change`).
    pub fn report_every_key_change(&mut self, every: bool) {
        self.kv.report_every_change(every);
    }

    /// How many keys a slice of a compaction's release walks at most.
    pub fn release_compactions_in_slices_of(&mut self, keys: usize) {
        self.kv.release_compactions_in_slices_of(keys);
    }

    /// Releases up to `slices` slices of the memory the key space holds for no reader (see
    /// [`KeySpace::release_memory_slice`]); returns how many it released. No answer, hash or
    /// snapshot depends on it.
    pub fn release_memory_slices(&mut self, slices: usize) -> usize {
        let mut released = 0;
        while released < slices && self.kv.is_releasing_memory() {
            self.kv.release_memory_slice();
            released += 1;
        }
        released
    }

    /// From now on, superseded values live in cold segments (see `mvcc::cold`).
    pub fn keep_superseded_values_cold(&mut self, batch_bytes: u64) {
        self.kv.keep_superseded_values_cold(batch_bytes);
    }

    pub fn take_cold_ops(&mut self) -> Vec<ColdOp> {
        self.kv.take_cold_ops()
    }

    pub fn has_cold_ops(&self) -> bool {
        self.kv.has_cold_ops()
    }

    /// The state a restored cluster starts from: this one's key space and leases, with the
    /// new cluster's members and no alarms.
    pub fn restored_as(self, members: Members) -> State {
        State {
            members,
            alarms: Alarms::default(),
            ..self
        }
    }

    /// Becomes `other` (a snapshot from the leader), keeping this state's way of holding
    /// superseded values. Returns the large parts replaced, to be freed elsewhere.
    pub fn replace_with(&mut self, other: State) -> ReplacedState {
        let replaced = ReplacedState {
            _kv: self.kv.replace_with(other.kv),
            _leases: std::mem::replace(&mut self.leases, other.leases),
        };
        self.members = other.members;
        self.alarms = other.alarms;
        self.auth.replace_with(other.auth);
        replaced
    }

    /// Verifies every state machine's invariants; `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()?;
        self.leases.check_against(&self.kv)?;
        self.members.check_invariants()?;
        self.auth.check_invariants()
    }
}

/// Whether an operation writes anything a client asked for (alarms refuse only those).
fn is_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Put(_)
            | Op::DeleteRange(_)
            | Op::Txn(_)
            | Op::Compaction(_)
            | Op::AutoCompaction(_)
            | Op::LeaseGrant(_)
            | Op::LeaseRevoke(_)
    )
}

/// The leases a txn's puts attach keys to, in either branch at any depth.
fn txn_leases(txn: &TxnRequest) -> Box<dyn Iterator<Item = LeaseId> + '_> {
    Box::new(txn.success.iter().chain(&txn.failure).flat_map(|op| {
        let leases: Box<dyn Iterator<Item = LeaseId>> = match &op.request {
            Some(Request::RequestPut(p)) if p.lease != 0 => Box::new(std::iter::once(p.lease)),
            Some(Request::RequestTxn(inner)) => txn_leases(inner),
            _ => Box::new(std::iter::empty()),
        };
        leases
    }))
}

/// Whether an operation adds data: what NOSPACE refuses (puts, txns with puts, grants).
fn adds_data(op: &Op) -> bool {
    fn txn_puts(txn: &TxnRequest) -> bool {
        txn.success
            .iter()
            .chain(&txn.failure)
            .any(|op| match &op.request {
                Some(Request::RequestPut(_)) => true,
                Some(Request::RequestTxn(inner)) => txn_puts(inner),
                _ => false,
            })
    }
    match op {
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
