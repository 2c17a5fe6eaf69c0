//! The reference model the checkers judge answers against: etcd's KV and lease semantics
//! restated as simply as possible, sharing no logic with the core (`detcd::mvcc`,
//! `detcd::lease`, `detcd::state`). A bug that makes every member answer the same wrong thing
//! passes every comparison between members; it cannot pass this.
//!
//! - `kv`: the key space of every revision, by linear scans;
//! - `members`: the member list and the rules of its changes;
//! - `api_checks`: what a member refuses before a request reaches the store;
//! - `alarms`: the alarm table and what each alarm refuses;
//! - `auth`: users, roles, permissions, and what each user may do;
//! - here: the lease table.

pub mod alarms;
pub mod api_checks;
pub mod auth;
pub mod kv;
pub mod members;

use std::collections::BTreeMap;

use bytes::Bytes;
use detcd::auth::AuthInfo;
use detcd::error::EtcdError;
use detcd::lease::MAX_TTL_SECS;
use detcd::node::{ClientRequest, ClientResponse};
use detcd::proto::detcdpb::{internal_request::Op, LeaseExpire};
use detcd::proto::etcdserverpb::{
    AlarmResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse,
};

pub use alarms::AlarmsModel;
pub use auth::AuthModel;
pub use kv::{KvModel, Moment};
use members::MembersModel;

/// A response or an error: both are answers.
pub type Answer = Result<ClientResponse, EtcdError>;

/// What applying a log entry to the model gives.
#[derive(Debug)]
pub enum Applied {
    /// The model executed it; `None` for the leader's own entries, which answer nobody.
    Answered(Option<Box<Answer>>),
    /// Not modeled: hash reports. In the simulator no member's state ever differs from the
    /// others', so the model never raises CORRUPT from them; a core that does is caught
    /// refusing writes the model takes.
    NotModeled,
}

/// The key space, the lease table and the member list.
#[derive(Clone, Debug)]
pub struct Model {
    kv: KvModel,
    members: MembersModel,
    /// Live leases by id, with the number of grants before each (its generation): the leader's
    /// expiry entries name the lease they were decided for by it.
    leases: BTreeMap<i64, u64>,
    grants: u64,
    alarms: AlarmsModel,
    auth: AuthModel,
    /// The members' `--max-range-bytes`.
    range_bytes_max: u64,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            kv: KvModel::default(),
            members: MembersModel::default(),
            leases: BTreeMap::new(),
            grants: 0,
            alarms: AlarmsModel::default(),
            auth: AuthModel::default(),
            range_bytes_max: u64::MAX,
        }
    }
}

impl Model {
    /// A new cluster: its initial members and its bound on a range's size, nothing else.
    pub fn bootstrap(
        members: Vec<detcd::proto::etcdserverpb::Member>,
        range_bytes_max: u64,
    ) -> Model {
        Model {
            members: MembersModel::new(members),
            range_bytes_max,
            ..Model::default()
        }
    }

    pub fn kv(&self) -> &KvModel {
        &self.kv
    }

    pub fn members(&self) -> &MembersModel {
        &self.members
    }

    pub fn lease_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }

    pub fn auth(&self) -> &AuthModel {
        &self.auth
    }

    /// Executes a committed entry's operation as etcd's apply does, for nobody identified.
    pub fn apply(&mut self, op: &Op) -> Applied {
        self.apply_as(op, &AuthInfo::default())
    }

    /// Executes a committed entry's operation as etcd's apply does, for `caller`.
    pub fn apply_as(&mut self, op: &Op, caller: &AuthInfo) -> Applied {
        let kv = &self.kv;
        let lease_keys = |lease: i64| -> Vec<Bytes> {
            kv.keys()
                .values()
                .filter(|v| lease != 0 && v.lease == lease)
                .map(|v| v.key.clone())
                .collect()
        };
        let refused = self.auth.refuses(op, caller, &lease_keys);
        if let Some(refused) = refused.or_else(|| self.alarms.refuses(op)) {
            return Applied::Answered(Some(Box::new(Err(refused))));
        }
        let leases = &self.leases;
        let exists = |id: i64| leases.contains_key(&id);
        let answer = match op {
            Op::Put(p) => Some(self.kv.put(p, &exists).map(ClientResponse::from)),
            Op::DeleteRange(d) => Some(Ok(self.kv.delete(d).into())),
            Op::Txn(t) => Some(self.kv.txn(t, &exists).map(ClientResponse::from)),
            Op::Compaction(c) | Op::AutoCompaction(c) => {
                Some(self.kv.compact(c.revision).map(ClientResponse::from))
            }
            Op::LeaseGrant(g) => Some(self.grant(g).map(ClientResponse::from)),
            Op::LeaseRevoke(r) => Some(self.revoke(r.id).map(ClientResponse::from)),
            Op::LeaseExpire(LeaseExpire { id, generation }) => {
                // Decided for a lease that is gone, or whose id was granted again since.
                if self.leases.get(id) == Some(generation) {
                    let _ = self.revoke(*id);
                }
                None
            }
            // Remaining times to live are the lease checker's business.
            Op::LeaseCheckpoints(_) => None,
            Op::MemberChange(c) => self.members.apply(c),
            Op::Alarm(a) => Some(Ok(AlarmResponse {
                header: kv::header(self.kv.current()),
                alarms: self.alarms.apply(a),
            }
            .into())),
            Op::HashReport(_) => return Applied::NotModeled,
            Op::Auth(change) => Some(self.auth.apply(change).map(|mut answer| {
                *answer.header_mut() = kv::header(self.kv.current());
                answer
            })),
        };
        Applied::Answered(answer.map(Box::new))
    }

    /// The raised alarms, ordered by member and type.
    pub fn alarms(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.alarms.iter()
    }

    fn grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, EtcdError> {
        if g.id == 0 || g.ttl < 1 || g.ttl > MAX_TTL_SECS {
            // The proposing member settles both; detcd never writes such an entry.
            return Err(EtcdError::NotCapable);
        }
        if self.leases.contains_key(&g.id) {
            return Err(EtcdError::LeaseExist);
        }
        self.leases.insert(g.id, self.grants);
        self.grants += 1;
        Ok(LeaseGrantResponse {
            header: kv::header(self.kv.current()),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    /// Deletes the lease and, at one revision, every key whose current version carries it.
    fn revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, EtcdError> {
        if self.leases.remove(&id).is_none() {
            return Err(EtcdError::LeaseNotFound);
        }
        let attached: Vec<Bytes> = self
            .kv
            .keys()
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        let revision = self.kv.delete_keys(&attached);
        Ok(LeaseRevokeResponse {
            header: kv::header(revision),
        })
    }

    /// A read (Range, or Txn without writes) served at `at`.
    pub fn read_at(&self, request: &ClientRequest, at: Moment) -> Answer {
        match request {
            ClientRequest::Range(r) => self
                .kv
                .range_at(r, at, self.range_bytes_max)
                .map(ClientResponse::from),
            ClientRequest::Txn(t) => self.kv.read_txn_at(t, at).map(ClientResponse::from),
            other => unreachable!("{} is not a key-space read", other.name()),
        }
    }
}
