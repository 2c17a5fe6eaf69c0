//! The checks a request passes while auth is on, as etcd makes them: reads at the API layer
//! of the member that serves them, writes when applied (against the store as it is then).
//!
//! A request from nobody (`AuthInfo::revision` 0) is refused with "user name is empty", one
//! identified at an older revision of the store with "revision of auth store is old" (the
//! client authenticates again and retries); then each key or range it reads needs a read
//! permission and each it writes a write permission. A put or delete that returns the previous
//! values reads them too. A txn needs every compare's keys and both branches' requests.

use bytes::Bytes;

use super::{Access, Auth, AuthInfo, KeyRange};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

static NO_END: Bytes = Bytes::new();

impl Auth {
    /// The user a request may act as: refused when nobody was identified, or when the store
    /// changed since they were.
    pub fn identified<'a>(&self, info: &'a AuthInfo) -> Result<&'a str, EtcdError> {
        if info.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        Ok(&info.user)
    }

    fn may(
        &self,
        info: &AuthInfo,
        access: Access,
        key: &Bytes,
        end: &Bytes,
    ) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.identified(info)?;
        self.permits(
            user,
            access,
            KeyRange {
                key,
                range_end: end,
            },
        )
    }

    pub fn check_range(&self, info: &AuthInfo, r: &RangeRequest) -> Result<(), EtcdError> {
        self.may(info, Access::Read, &r.key, &r.range_end)
    }

    pub fn check_put(&self, info: &AuthInfo, r: &PutRequest) -> Result<(), EtcdError> {
        self.may(info, Access::Write, &r.key, &NO_END)?;
        if r.prev_kv {
            self.may(info, Access::Read, &r.key, &NO_END)?;
        }
        Ok(())
    }

    pub fn check_delete(&self, info: &AuthInfo, r: &DeleteRangeRequest) -> Result<(), EtcdError> {
        self.may(info, Access::Write, &r.key, &r.range_end)?;
        if r.prev_kv {
            self.may(info, Access::Read, &r.key, &r.range_end)?;
        }
        Ok(())
    }

    pub fn check_txn(&self, info: &AuthInfo, t: &TxnRequest) -> Result<(), EtcdError> {
        for compare in &t.compare {
            self.may(info, Access::Read, &compare.key, &compare.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => self.check_range(info, r)?,
                Some(Request::RequestPut(r)) => self.check_put(info, r)?,
                Some(Request::RequestDeleteRange(r)) => self.check_delete(info, r)?,
                Some(Request::RequestTxn(inner)) => self.check_txn(info, inner)?,
                None => {}
            }
        }
        Ok(())
    }

    /// May the user write `key` (a key attached to a lease it revokes or attaches to)?
    pub fn check_write(&self, info: &AuthInfo, key: &Bytes) -> Result<(), EtcdError> {
        self.may(info, Access::Write, key, &NO_END)
    }

    /// The root role's requests: auth management, and the maintenance that reads or rewrites
    /// the whole store. Unlike a key's check, the store's revision does not matter here.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        self.permits_admin(&info.user)
    }

    /// A user's own entry: its own to read without the root role, as etcd lets it be.
    pub fn check_user_get(&self, info: &AuthInfo, name: &str) -> Result<(), EtcdError> {
        self.check_admin(info)
            .or_else(|refused| match info.revision != 0 && info.user == name {
                true => Ok(()),
                false => Err(refused),
            })
    }

    /// A role: readable without the root role by the users who hold it, as in etcd.
    pub fn check_role_get(&self, info: &AuthInfo, role: &str) -> Result<(), EtcdError> {
        self.check_admin(info).or_else(|refused| {
            let holds = info.revision != 0
                && self
                    .user(&info.user)
                    .is_some_and(|u| u.roles.iter().any(|r| r == role));
            match holds {
                true => Ok(()),
                false => Err(refused),
            }
        })
    }
}
