//! etcd's auth store restated: users, roles and their permissions, the switch and its
//! revision, and what a request from a user may do, decided without the core's interval
//! sweep: a range is permitted when every key at which some permission begins or ends (and the
//! range's own first key) inside the range is covered by a permission. Between two such keys
//! nothing begins or ends, so those keys decide the whole range.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use detcd::auth::AuthInfo;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse};
use detcd::proto::authpb::permission::Type;
use detcd::proto::authpb::Permission;
use detcd::proto::detcdpb::{auth_change::Change, internal_request::Op, AuthChange};
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse, AuthRoleDeleteResponse,
    AuthRoleGetResponse, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionResponse, AuthStatusResponse, AuthUserAddResponse,
    AuthUserChangePasswordResponse, AuthUserDeleteResponse, AuthUserGetResponse,
    AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleResponse,
    AuthenticateResponse, TxnRequest,
};

const ROOT: &str = "root";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserModel {
    pub password: String,
    pub roles: BTreeSet<String>,
    pub no_password: bool,
}

/// A role's permissions by (key, range end), with their type.
pub type RoleModel = BTreeMap<(Bytes, Bytes), i32>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthModel {
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<String, UserModel>,
    pub roles: BTreeMap<String, RoleModel>,
}

impl Default for AuthModel {
    fn default() -> AuthModel {
        AuthModel {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// A key, or past every key (`None`).
type Bound = Option<Bytes>;

/// The keys a permission or request names, as `[begin, end)`.
fn span(key: &Bytes, range_end: &Bytes) -> (Bytes, Bound) {
    match &range_end[..] {
        [] => (key.clone(), Some(Bytes::from([&key[..], &[0u8]].concat()))),
        [0] => (key.clone(), None),
        _ => (key.clone(), Some(range_end.clone())),
    }
}

fn below(key: &Bytes, end: &Bound) -> bool {
    end.as_ref().is_none_or(|e| key < e)
}

impl AuthModel {
    fn bump(&mut self) -> Result<(), EtcdError> {
        self.revision += 1;
        Ok(())
    }

    /// Applies a committed auth change, answering as etcd does (the answer without header).
    pub fn apply(&mut self, change: &AuthChange) -> Result<ClientResponse, EtcdError> {
        let Some(change) = &change.change else {
            return Err(EtcdError::NotCapable);
        };
        self.change(change)?;
        Ok(match change {
            Change::Enable(_) => AuthEnableResponse::default().into(),
            Change::Disable(_) => AuthDisableResponse::default().into(),
            Change::UserAdd(_) => AuthUserAddResponse::default().into(),
            Change::UserDelete(_) => AuthUserDeleteResponse::default().into(),
            Change::UserChangePassword(_) => AuthUserChangePasswordResponse::default().into(),
            Change::UserGrantRole(_) => AuthUserGrantRoleResponse::default().into(),
            Change::UserRevokeRole(_) => AuthUserRevokeRoleResponse::default().into(),
            Change::RoleAdd(_) => AuthRoleAddResponse::default().into(),
            Change::RoleDelete(_) => AuthRoleDeleteResponse::default().into(),
            Change::RoleGrantPermission(_) => AuthRoleGrantPermissionResponse::default().into(),
            Change::RoleRevokePermission(_) => AuthRoleRevokePermissionResponse::default().into(),
            Change::Authenticate(r) => AuthenticateResponse {
                header: None,
                token: r.token.clone(),
            }
            .into(),
        })
    }

    fn change(&mut self, change: &Change) -> Result<(), EtcdError> {
        use EtcdError::*;
        let enabled = self.enabled;
        match change {
            Change::Enable(_) => {
                if !enabled {
                    let root = self.users.get(ROOT).ok_or(RootUserNotExist)?;
                    if !root.roles.contains(ROOT) {
                        return Err(RootRoleNotExist);
                    }
                    self.enabled = true;
                }
                Ok(())
            }
            Change::Disable(_) if enabled => {
                self.enabled = false;
                self.bump()
            }
            Change::Disable(_) => Ok(()),
            Change::UserAdd(r) if r.name.is_empty() => Err(UserEmpty),
            Change::UserAdd(r) if self.users.contains_key(&r.name) => Err(UserAlreadyExist),
            Change::UserAdd(r) => {
                let no_password = r.options.is_some_and(|o| o.no_password);
                let user = UserModel {
                    password: if no_password {
                        String::new()
                    } else {
                        r.hashed_password.clone()
                    },
                    roles: BTreeSet::new(),
                    no_password,
                };
                self.users.insert(r.name.clone(), user);
                self.bump()
            }
            Change::UserDelete(r) if enabled && r.name == ROOT => Err(InvalidAuthMgmt),
            Change::UserDelete(r) => {
                self.users.remove(&r.name).ok_or(UserNotFound)?;
                self.bump()
            }
            Change::UserChangePassword(r) => {
                let user = self.users.get_mut(&r.name).ok_or(UserNotFound)?;
                user.password = r.hashed_password.clone();
                self.bump()
            }
            Change::UserGrantRole(r) => {
                let exists = r.role == ROOT || self.roles.contains_key(&r.role);
                let user = self.users.get_mut(&r.user).ok_or(UserNotFound)?;
                if !exists {
                    return Err(RoleNotFound);
                }
                if user.roles.insert(r.role.clone()) {
                    self.bump()?;
                }
                Ok(())
            }
            Change::UserRevokeRole(r) if enabled && r.name == ROOT && r.role == ROOT => {
                Err(InvalidAuthMgmt)
            }
            Change::UserRevokeRole(r) => {
                let user = self.users.get_mut(&r.name).ok_or(UserNotFound)?;
                if !user.roles.remove(&r.role) {
                    return Err(RoleNotGranted);
                }
                self.bump()
            }
            Change::RoleAdd(r) if r.name.is_empty() => Err(RoleEmpty),
            Change::RoleAdd(r) if self.roles.contains_key(&r.name) => Err(RoleAlreadyExist),
            Change::RoleAdd(r) => {
                self.roles.insert(r.name.clone(), RoleModel::new());
                self.bump()
            }
            Change::RoleDelete(r) if enabled && r.role == ROOT => Err(InvalidAuthMgmt),
            Change::RoleDelete(r) => {
                self.roles.remove(&r.role).ok_or(RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(&r.role);
                }
                self.bump()
            }
            Change::RoleGrantPermission(r) => {
                let role = self.roles.get_mut(&r.name).ok_or(RoleNotFound)?;
                let perm = r.perm.as_ref().ok_or(PermissionNotGiven)?;
                role.insert((perm.key.clone(), perm.range_end.clone()), perm.perm_type);
                self.bump()
            }
            Change::RoleRevokePermission(r) => {
                let role = self.roles.get_mut(&r.role).ok_or(RoleNotFound)?;
                let key = (r.key.clone(), r.range_end.clone());
                role.remove(&key).ok_or(PermissionNotGranted)?;
                self.bump()
            }
            Change::Authenticate(r) => {
                if !enabled {
                    return Err(AuthNotEnabled);
                }
                let user = self.users.get(&r.name).ok_or(AuthFailed)?;
                if user.no_password {
                    return Err(AuthFailed);
                }
                if r.checked_revision != self.revision {
                    return Err(AuthOldRevision);
                }
                Ok(())
            }
        }
    }

    /// A role's permissions in order of key and range end.
    pub fn permissions(&self, role: &str) -> Option<Vec<Permission>> {
        let perms = self.roles.get(role)?;
        Some(
            perms
                .iter()
                .map(|((key, range_end), t)| Permission {
                    perm_type: *t,
                    key: key.clone(),
                    range_end: range_end.clone(),
                })
                .collect(),
        )
    }

    /// The answer to one of the Auth service's reads, without header.
    pub fn read(&self, request: &ClientRequest) -> Option<Result<ClientResponse, EtcdError>> {
        let answer = match request {
            ClientRequest::AuthStatus(_) => Ok(AuthStatusResponse {
                header: None,
                enabled: self.enabled,
                auth_revision: self.revision,
            }
            .into()),
            ClientRequest::UserGet(r) => match self.users.get(&r.name) {
                Some(u) => Ok(AuthUserGetResponse {
                    header: None,
                    roles: u.roles.iter().cloned().collect(),
                }
                .into()),
                None => Err(EtcdError::UserNotFound),
            },
            ClientRequest::UserList(_) => Ok(AuthUserListResponse {
                header: None,
                users: self.users.keys().cloned().collect(),
            }
            .into()),
            ClientRequest::RoleGet(r) => match self.permissions(&r.role) {
                Some(perm) => Ok(AuthRoleGetResponse { header: None, perm }.into()),
                None => Err(EtcdError::RoleNotFound),
            },
            ClientRequest::RoleList(_) => Ok(AuthRoleListResponse {
                header: None,
                roles: self.roles.keys().cloned().collect(),
            }
            .into()),
            _ => return None,
        };
        Some(answer)
    }

    fn grants(&self, user: &UserModel, write: bool) -> Vec<(Bytes, Bound)> {
        user.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|perms| perms.iter())
            .filter(|(_, t)| {
                **t == Type::Readwrite as i32
                    || **t == if write { Type::Write } else { Type::Read } as i32
            })
            .map(|((key, end), _)| span(key, end))
            .collect()
    }

    /// Whether `user` may read (or write) the keys `key`..`range_end` name.
    fn may(&self, user: &str, write: bool, key: &Bytes, range_end: &Bytes) -> bool {
        let Some(user) = self.users.get(user) else {
            return false;
        };
        if user.roles.contains(ROOT) {
            return true;
        }
        let (begin, end) = span(key, range_end);
        if !below(&begin, &end) {
            return false;
        }
        let grants = self.grants(user, write);
        let mut witnesses = vec![begin.clone()];
        for (b, e) in &grants {
            witnesses.push(b.clone());
            witnesses.extend(e.clone());
        }
        witnesses
            .iter()
            .filter(|w| **w >= begin && below(w, &end))
            .all(|w| grants.iter().any(|(b, e)| b <= w && below(w, e)))
    }

    /// Whether this store lets `user` make a read (a Range, or a txn without writes); `None`
    /// for any other request.
    pub fn lets_read(&self, user: &str, request: &ClientRequest) -> Option<bool> {
        let caller = AuthInfo {
            user: user.to_string(),
            revision: self.revision,
        };
        let checked = match request {
            ClientRequest::Range(r) => self.check(&caller, false, &r.key, &r.range_end),
            ClientRequest::Txn(t) => self.check_txn(&caller, t),
            // Their own entry and the roles they hold are users' to read; the rest root's.
            ClientRequest::UserGet(r) if r.name == user => Ok(()),
            ClientRequest::RoleGet(r) if self.holds(user, &r.role) => Ok(()),
            ClientRequest::UserGet(_) | ClientRequest::RoleGet(_) => self.check_admin(&caller),
            _ => return None,
        };
        Some(!self.enabled || checked.is_ok())
    }

    /// The check of a key or range at apply, for the entry's `caller`.
    fn check(
        &self,
        caller: &AuthInfo,
        write: bool,
        key: &Bytes,
        range_end: &Bytes,
    ) -> Result<(), EtcdError> {
        if caller.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if caller.revision < self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        if self.may(&caller.user, write, key, range_end) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    fn check_txn(&self, caller: &AuthInfo, t: &TxnRequest) -> Result<(), EtcdError> {
        for c in &t.compare {
            self.check(caller, false, &c.key, &c.range_end)?;
        }
        let none = Bytes::new();
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    self.check(caller, false, &r.key, &r.range_end)?
                }
                Some(Request::RequestPut(p)) => {
                    self.check(caller, true, &p.key, &none)?;
                    if p.prev_kv {
                        self.check(caller, false, &p.key, &none)?;
                    }
                }
                Some(Request::RequestDeleteRange(d)) => {
                    self.check(caller, true, &d.key, &d.range_end)?;
                    if d.prev_kv {
                        self.check(caller, false, &d.key, &d.range_end)?;
                    }
                }
                Some(Request::RequestTxn(inner)) => self.check_txn(caller, inner)?,
                None => {}
            }
        }
        Ok(())
    }

    /// What etcd's apply refuses of a client's entry while auth is on; `lease_keys` are the
    /// live keys attached to a lease.
    pub fn refuses(
        &self,
        op: &Op,
        caller: &AuthInfo,
        lease_keys: &dyn Fn(i64) -> Vec<Bytes>,
    ) -> Option<EtcdError> {
        if !self.enabled {
            return None;
        }
        let none = Bytes::new();
        let leased = |lease: i64| -> Result<(), EtcdError> {
            lease_keys(lease)
                .iter()
                .try_for_each(|k| self.check(caller, true, k, &none))
        };
        let checked = match op {
            Op::Put(p) => self
                .check(caller, true, &p.key, &none)
                .and_then(|()| leased(p.lease))
                .and_then(|()| match p.prev_kv {
                    true => self.check(caller, false, &p.key, &none),
                    false => Ok(()),
                }),
            Op::DeleteRange(d) => self
                .check(caller, true, &d.key, &d.range_end)
                .and_then(|()| match d.prev_kv {
                    true => self.check(caller, false, &d.key, &d.range_end),
                    false => Ok(()),
                }),
            Op::Txn(t) => self
                .check_txn(caller, t)
                .and_then(|()| txn_leases(t).into_iter().try_for_each(leased)),
            Op::LeaseRevoke(r) => leased(r.id),
            Op::Auth(AuthChange {
                change: Some(Change::Authenticate(_)),
            }) => Ok(()),
            Op::Auth(_) => self.check_admin(caller),
            _ => Ok(()),
        };
        checked.err()
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    fn holds(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(role))
    }

    fn check_admin(&self, caller: &AuthInfo) -> Result<(), EtcdError> {
        if caller.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        let user = self
            .users
            .get(&caller.user)
            .ok_or(EtcdError::UserNotFound)?;
        if user.roles.contains(ROOT) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }
}

fn txn_leases(t: &TxnRequest) -> Vec<i64> {
    t.success
        .iter()
        .chain(&t.failure)
        .flat_map(|op| match &op.request {
            Some(Request::RequestPut(p)) if p.lease != 0 => vec![p.lease],
            Some(Request::RequestTxn(inner)) => txn_leases(inner),
            _ => Vec::new(),
        })
        .collect()
}
