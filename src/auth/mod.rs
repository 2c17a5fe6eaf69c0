//! The auth store: a replicated state machine of users, roles and their key permissions, and
//! the switch that turns checking on (etcd's `auth` package, its v3 RBAC).
//!
//! Every change arrives as a committed `AuthChange` and is applied here in log order, so every
//! member holds the same store; reads (UserGet, RoleList, AuthStatus...) are served from it as
//! linearizable reads. Passwords never enter the log: the member that accepted a UserAdd or
//! UserChangePassword hashes the password (bcrypt) before proposing, and checks a password
//! against the stored hash before it proposes an Authenticate (`permissions` has what a user
//! may do; the node's `auth` module the tokens).
//!
//! Invariants: each user's roles are sorted and unique; each role's permissions are sorted by
//! key and range end, one per (key, range end); the revision grows with every change that alters the store
//! (etcd's `authRevision`, which a request's check is tied to); auth is only ever on while the
//! `root` user exists and holds the `root` role.

pub mod api;
mod permissions;
mod requests;

pub use permissions::{Access, KeyRange};

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::authpb::{Permission, Role, User, UserAddOptions};
use crate::proto::detcdpb::{auth_change::Change, AuthChange, AuthTable, TokenRequest};
use crate::proto::etcdserverpb::{
    AuthRoleGetResponse, AuthRoleListResponse, AuthStatusResponse, AuthUserGetResponse,
    AuthUserListResponse,
};

/// Who a request is from, as the member that accepted it identified them while auth was on
/// (etcd's `AuthInfo`): nobody (`revision` 0), or `user` checked at the store's `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

/// The user whose `root` role lets it do everything, and that auth cannot be on without.
pub const ROOT: &str = "root";

/// The auth store. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Deliberately injected bugs (simulator tests only; all off otherwise).
    bugs: AuthBugs,
}

/// Bugs the simulator's tests inject into the auth store, wrong alike on every member. Not
/// part of the store's state: never encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthBugs {
    /// A range is permitted when its first key is.
    pub range_as_first_key: bool,
}

impl Default for Auth {
    /// A new store: etcd's starts at revision 1, with nobody in it and checking off.
    fn default() -> Auth {
        Auth {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            bugs: AuthBugs::default(),
        }
    }
}

impl Auth {
    /// Turns the injected bugs on (simulator tests only).
    pub fn inject_bugs(&mut self, bugs: AuthBugs) {
        self.bugs = bugs;
    }

    /// Becomes `other` (a snapshot's store), keeping this store's injected bugs.
    pub fn replace_with(&mut self, other: Auth) {
        let bugs = self.bugs;
        *self = other;
        self.bugs = bugs;
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, in name order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Every role, in name order.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// Applies a committed change, answering as etcd's auth store does.
    pub fn apply(&mut self, change: &AuthChange) -> Result<(), EtcdError> {
        let Some(change) = &change.change else {
            return Err(EtcdError::NotCapable);
        };
        match change {
            Change::Enable(_) => self.enable(),
            Change::Disable(_) => {
                if self.enabled {
                    self.enabled = false;
                    self.revision += 1;
                }
                Ok(())
            }
            Change::UserAdd(r) => self.user_add(&r.name, &r.hashed_password, r.options),
            Change::UserDelete(r) => self.user_delete(&r.name),
            Change::UserChangePassword(r) => self.change_password(&r.name, &r.hashed_password),
            Change::UserGrantRole(r) => self.grant_role(&r.user, &r.role),
            Change::UserRevokeRole(r) => self.revoke_role(&r.name, &r.role),
            Change::RoleAdd(r) => self.role_add(&r.name),
            Change::RoleDelete(r) => self.role_delete(&r.role),
            Change::RoleGrantPermission(r) => self.grant_permission(
                &r.name,
                r.perm.as_ref().ok_or(EtcdError::PermissionNotGiven)?,
            ),
            Change::RoleRevokePermission(r) => {
                self.revoke_permission(&r.role, &r.key, &r.range_end)
            }
            Change::Authenticate(r) => self.check_token_request(r),
        }
    }

    /// A token may be handed out while auth is on, to a user with a password, if nothing
    /// changed since the password was checked.
    fn check_token_request(&self, r: &TokenRequest) -> Result<(), EtcdError> {
        if !self.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        let user = self.users.get(&r.name).ok_or(EtcdError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(EtcdError::AuthFailed);
        }
        if r.checked_revision != self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        Ok(())
    }

    fn enable(&mut self) -> Result<(), EtcdError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(EtcdError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(EtcdError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    fn user_add(
        &mut self,
        name: &str,
        hashed_password: &str,
        options: Option<UserAddOptions>,
    ) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(EtcdError::UserAlreadyExist);
        }
        let options = options.unwrap_or_default();
        let password = if options.no_password {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(hashed_password.as_bytes())
        };
        let user = User {
            name: Bytes::copy_from_slice(name.as_bytes()),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        self.users.insert(name.to_string(), user);
        self.revision += 1;
        Ok(())
    }

    fn user_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(EtcdError::UserNotFound)?;
        self.revision += 1;
        Ok(())
    }

    fn change_password(&mut self, name: &str, hashed_password: &str) -> Result<(), EtcdError> {
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        user.password = Bytes::copy_from_slice(hashed_password.as_bytes());
        self.revision += 1;
        Ok(())
    }

    fn grant_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        // The root role needs no entry of its own: granting it makes the user root.
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(EtcdError::RoleNotFound);
        }
        let Err(at) = user.roles.binary_search_by(|r| r.as_str().cmp(role)) else {
            return Ok(());
        };
        user.roles.insert(at, role.to_string());
        self.revision += 1;
        Ok(())
    }

    fn revoke_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        let at = user
            .roles
            .iter()
            .position(|r| r == role)
            .ok_or(EtcdError::RoleNotGranted)?;
        user.roles.remove(at);
        self.revision += 1;
        Ok(())
    }

    fn role_add(&mut self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(EtcdError::RoleAlreadyExist);
        }
        let role = Role {
            name: Bytes::copy_from_slice(name.as_bytes()),
            key_permission: Vec::new(),
        };
        self.roles.insert(name.to_string(), role);
        self.revision += 1;
        Ok(())
    }

    /// Deletes the role and takes it from every user that held it.
    fn role_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(EtcdError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|r| r != name);
        }
        self.revision += 1;
        Ok(())
    }

    /// Adds the permission, or changes the type of the one with the same key and range end.
    fn grant_permission(&mut self, name: &str, perm: &Permission) -> Result<(), EtcdError> {
        let role = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let same = |p: &&mut Permission| p.key == perm.key && p.range_end == perm.range_end;
        match role.key_permission.iter_mut().find(same) {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                let at = role
                    .key_permission
                    .partition_point(|p| (&p.key, &p.range_end) <= (&perm.key, &perm.range_end));
                role.key_permission.insert(at, perm.clone());
            }
        }
        self.revision += 1;
        Ok(())
    }

    fn revoke_permission(&mut self, name: &str, key: &Bytes, end: &Bytes) -> Result<(), EtcdError> {
        let role = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let at = role
            .key_permission
            .iter()
            .position(|p| p.key == key && p.range_end == end)
            .ok_or(EtcdError::PermissionNotGranted)?;
        role.key_permission.remove(at);
        self.revision += 1;
        Ok(())
    }

    pub fn status(&self) -> AuthStatusResponse {
        AuthStatusResponse {
            header: None,
            enabled: self.enabled,
            auth_revision: self.revision,
        }
    }

    pub fn user_get(&self, name: &str) -> Result<AuthUserGetResponse, EtcdError> {
        let user = self.users.get(name).ok_or(EtcdError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: None,
            roles: user.roles.clone(),
        })
    }

    pub fn user_list(&self) -> AuthUserListResponse {
        AuthUserListResponse {
            header: None,
            users: self.users.keys().cloned().collect(),
        }
    }

    pub fn role_get(&self, name: &str) -> Result<AuthRoleGetResponse, EtcdError> {
        let role = self.roles.get(name).ok_or(EtcdError::RoleNotFound)?;
        Ok(AuthRoleGetResponse {
            header: None,
            perm: role.key_permission.clone(),
        })
    }

    pub fn role_list(&self) -> AuthRoleListResponse {
        AuthRoleListResponse {
            header: None,
            roles: self.roles.keys().cloned().collect(),
        }
    }

    pub fn to_snapshot(&self) -> AuthTable {
        AuthTable {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    /// The store a snapshot section holds; an absent section (`None`) is a new store.
    pub fn from_snapshot(table: Option<AuthTable>) -> Result<Auth, String> {
        let Some(table) = table else {
            return Ok(Auth::default());
        };
        let named = |name: &Bytes, what: &str| {
            String::from_utf8(name.to_vec()).map_err(|_| format!("a {what} name is not UTF-8"))
        };
        let mut auth = Auth {
            enabled: table.enabled,
            revision: table.revision,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            bugs: AuthBugs::default(),
        };
        for user in table.users {
            auth.users.insert(named(&user.name, "user")?, user);
        }
        for role in table.roles {
            auth.roles.insert(named(&role.name, "role")?, role);
        }
        auth.check_invariants()?;
        Ok(auth)
    }

    /// Verifies the invariants of the module documentation.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, user) in &self.users {
            if !user.roles.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("user {name}'s roles are not sorted and unique"));
            }
        }
        for (name, role) in &self.roles {
            let perms = &role.key_permission;
            if !perms.windows(2).all(|w| w[0].key <= w[1].key) {
                return Err(format!("role {name}'s permissions are not sorted by key"));
            }
        }
        if self.enabled && !self.users.get(ROOT).is_some_and(has_root_role) {
            return Err("auth is on without a root user holding the root role".to_string());
        }
        Ok(())
    }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

#[cfg(test)]
mod tests;
