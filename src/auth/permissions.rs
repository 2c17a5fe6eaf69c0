//! What a user may do: its roles' key permissions, merged, against the keys a request touches.
//!
//! A permission with an empty range end covers its one key; with `\0` every key from its key
//! on; otherwise the keys in `[key, range_end)`. A request's single key is permitted when any
//! permission of the right type covers it; a request's range only when the permissions of the
//! right type together cover all of it, with no gap (etcd's interval-tree `Contains`). The
//! `root` role may do everything.

use bytes::Bytes;

use super::{has_root_role, Auth};
use crate::error::EtcdError;
use crate::proto::authpb::permission::Type;

/// What a request does to the keys it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn granted_by(self, perm_type: i32) -> bool {
        match Type::try_from(perm_type) {
            Ok(Type::Readwrite) => true,
            Ok(Type::Read) => self == Access::Read,
            Ok(Type::Write) => self == Access::Write,
            Err(_) => false,
        }
    }
}

/// The keys a request names, as etcd's requests give them: one key (`range_end` empty), every
/// key from `key` on (`range_end` `\0`), or `[key, range_end)`.
#[derive(Clone, Copy, Debug)]
pub struct KeyRange<'a> {
    pub key: &'a Bytes,
    pub range_end: &'a Bytes,
}

/// The end of an interval; `None` is past every key.
type End = Option<Bytes>;

fn interval(key: &Bytes, range_end: &Bytes) -> (Bytes, End) {
    match &range_end[..] {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            (key.clone(), Some(Bytes::from(next)))
        }
        [0] => (key.clone(), None),
        _ => (key.clone(), Some(range_end.clone())),
    }
}

/// Whether `end` reaches at least `goal`.
fn reaches(end: &End, goal: &End) -> bool {
    match (end, goal) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(g)) => e >= g,
    }
}

impl Auth {
    /// Whether `user` may `access` the keys of `range`; Ok when auth is off.
    pub fn permits(&self, user: &str, access: Access, range: KeyRange) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.users.get(user).ok_or(EtcdError::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(());
        }
        let mut granted: Vec<(Bytes, End)> = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| &role.key_permission)
            .filter(|p| access.granted_by(p.perm_type))
            .map(|p| interval(&p.key, &p.range_end))
            .collect();
        granted.sort();
        let range_end = match self.bugs.range_as_first_key {
            true => &Bytes::new(),
            false => range.range_end,
        };
        let (begin, end) = interval(range.key, range_end);
        let inverted = end.as_ref().is_some_and(|e| *e <= begin);
        if inverted || !covered(&granted, begin, &end) {
            return Err(EtcdError::PermissionDenied);
        }
        Ok(())
    }

    /// Whether `user` may administer the cluster (the root role); Ok when auth is off.
    pub fn permits_admin(&self, user: &str) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.users.get(user).ok_or(EtcdError::UserNotFound)?;
        if has_root_role(user) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }
}

/// Whether the intervals (sorted by their beginnings) leave no gap in `[begin, end)`.
fn covered(granted: &[(Bytes, End)], begin: Bytes, end: &End) -> bool {
    let mut reached: End = Some(begin);
    for (from, to) in granted {
        let Some(at) = &reached else {
            return true;
        };
        if from > at {
            break;
        }
        if !reaches(&reached, to) {
            reached = to.clone();
        }
    }
    reaches(&reached, end)
}
