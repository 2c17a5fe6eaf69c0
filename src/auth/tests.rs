use super::*;
use crate::proto::authpb::permission::Type;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};

fn apply(auth: &mut Auth, change: Change) -> Result<(), EtcdError> {
    auth.apply(&AuthChange {
        change: Some(change),
    })
}

fn user_add(name: &str) -> Change {
    Change::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: format!("hash-of-{name}"),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Change {
    Change::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant(role: &str, perm_type: Type, key: &str, range_end: &str) -> Change {
    Change::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: perm_type as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        }),
    })
}

fn role_add(name: &str) -> Change {
    Change::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

/// A store with auth on: root, and alice holding r1.
fn enabled_store() -> Auth {
    let mut auth = Auth::default();
    for change in [
        user_add(ROOT),
        grant_role(ROOT, ROOT),
        user_add("alice"),
        role_add("r1"),
        grant_role("alice", "r1"),
        Change::Enable(AuthEnableRequest {}),
    ] {
        apply(&mut auth, change).unwrap();
    }
    auth
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role() {
    let mut auth = Auth::default();
    let enable = || Change::Enable(AuthEnableRequest {});
    assert_eq!(apply(&mut auth, enable()), Err(EtcdError::RootUserNotExist));
    apply(&mut auth, user_add(ROOT)).unwrap();
    assert_eq!(apply(&mut auth, enable()), Err(EtcdError::RootRoleNotExist));
    apply(&mut auth, grant_role(ROOT, ROOT)).unwrap();
    let revision = auth.revision();
    apply(&mut auth, enable()).unwrap();
    assert!(auth.is_enabled());
    assert_eq!(
        auth.revision(),
        revision,
        "enabling does not change the store"
    );
    apply(&mut auth, Change::Disable(AuthDisableRequest {})).unwrap();
    assert!(!auth.is_enabled());
    assert_eq!(auth.revision(), revision + 1);
}

#[test]
fn users_and_roles_answer_etcds_errors() {
    let mut auth = enabled_store();
    assert_eq!(
        apply(&mut auth, user_add("alice")),
        Err(EtcdError::UserAlreadyExist)
    );
    assert_eq!(apply(&mut auth, user_add("")), Err(EtcdError::UserEmpty));
    assert_eq!(
        apply(&mut auth, role_add("r1")),
        Err(EtcdError::RoleAlreadyExist)
    );
    assert_eq!(apply(&mut auth, role_add("")), Err(EtcdError::RoleEmpty));
    assert_eq!(
        apply(&mut auth, grant_role("bob", "r1")),
        Err(EtcdError::UserNotFound)
    );
    assert_eq!(
        apply(&mut auth, grant_role("alice", "r9")),
        Err(EtcdError::RoleNotFound)
    );
    let revoke = |role: &str| {
        Change::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: role.into(),
        })
    };
    assert_eq!(
        apply(&mut auth, revoke(ROOT)),
        Err(EtcdError::InvalidAuthMgmt)
    );
    assert_eq!(
        apply(&mut auth, revoke("r1")),
        Err(EtcdError::RoleNotGranted)
    );
    let delete = Change::UserDelete(AuthUserDeleteRequest { name: ROOT.into() });
    assert_eq!(apply(&mut auth, delete), Err(EtcdError::InvalidAuthMgmt));
    let delete = Change::RoleDelete(AuthRoleDeleteRequest { role: ROOT.into() });
    assert_eq!(apply(&mut auth, delete), Err(EtcdError::InvalidAuthMgmt));
    let revoke = Change::RoleRevokePermission(AuthRoleRevokePermissionRequest {
        role: "r1".into(),
        key: Bytes::from_static(b"a"),
        range_end: Bytes::new(),
    });
    assert_eq!(
        apply(&mut auth, revoke),
        Err(EtcdError::PermissionNotGranted)
    );
    auth.check_invariants().unwrap();
}

#[test]
fn a_deleted_role_leaves_its_users_and_permissions_stay_sorted() {
    let mut auth = enabled_store();
    apply(&mut auth, grant("r1", Type::Read, "m", "")).unwrap();
    apply(&mut auth, grant("r1", Type::Write, "b", "c")).unwrap();
    apply(&mut auth, grant("r1", Type::Readwrite, "m", "")).unwrap();
    let perms = auth.role_get("r1").unwrap().perm;
    let keys: Vec<(&[u8], i32)> = perms.iter().map(|p| (&p.key[..], p.perm_type)).collect();
    assert_eq!(
        keys,
        [
            (&b"b"[..], Type::Write as i32),
            (b"m", Type::Readwrite as i32)
        ]
    );
    let delete = Change::RoleDelete(AuthRoleDeleteRequest { role: "r1".into() });
    apply(&mut auth, delete).unwrap();
    assert!(auth.user_get("alice").unwrap().roles.is_empty());
    assert!(auth.role_list().roles.is_empty());
    let restored = Auth::from_snapshot(Some(auth.to_snapshot())).unwrap();
    assert_eq!(restored, auth);
}

fn permits(auth: &Auth, access: Access, key: &str, range_end: &str) -> bool {
    let (key, range_end) = (
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(range_end.as_bytes()),
    );
    let range = KeyRange {
        key: &key,
        range_end: &range_end,
    };
    auth.permits("alice", access, range).is_ok()
}

#[test]
fn ranges_are_permitted_only_when_the_permissions_cover_them_without_a_gap() {
    let mut auth = enabled_store();
    apply(&mut auth, grant("r1", Type::Read, "a", "c")).unwrap();
    apply(&mut auth, grant("r1", Type::Readwrite, "c", "e")).unwrap();
    apply(&mut auth, grant("r1", Type::Write, "k", "")).unwrap();
    apply(&mut auth, grant("r1", Type::Read, "x", "\0")).unwrap();
    use Access::{Read, Write};
    assert!(permits(&auth, Read, "a", "e"), "two adjacent ranges");
    assert!(permits(&auth, Read, "b", ""));
    assert!(!permits(&auth, Read, "a", "f"), "past the end");
    assert!(!permits(&auth, Write, "a", "d"), "write only from c");
    assert!(permits(&auth, Write, "c", "e"));
    assert!(permits(&auth, Write, "k", ""));
    assert!(
        !permits(&auth, Write, "k", "l"),
        "a single key is not the range after it"
    );
    assert!(!permits(&auth, Read, "k", ""));
    assert!(permits(&auth, Read, "x", "\0"), "from a key on");
    assert!(permits(&auth, Read, "zzz", ""));
    assert!(!permits(&auth, Read, "w", "\0"));
    assert!(!permits(&auth, Read, "d", "b"), "an inverted range");
    let nobody = auth.permits(
        "bob",
        Read,
        KeyRange {
            key: &Bytes::from_static(b"a"),
            range_end: &Bytes::new(),
        },
    );
    assert_eq!(nobody, Err(EtcdError::PermissionDenied));
    assert_eq!(
        auth.permits_admin("alice"),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(auth.permits_admin(ROOT), Ok(()));
    assert!(auth
        .permits(
            ROOT,
            Write,
            KeyRange {
                key: &Bytes::from_static(b"\0"),
                range_end: &Bytes::from_static(b"\0")
            }
        )
        .is_ok());
}

#[test]
fn a_user_reads_its_own_entry_and_its_roles_without_root() {
    let mut auth = enabled_store();
    apply(&mut auth, role_add("r2")).unwrap();
    let as_user = |user: &str| AuthInfo {
        user: user.into(),
        revision: auth.revision(),
    };
    let alice = as_user("alice");
    assert_eq!(auth.check_user_get(&alice, "alice"), Ok(()));
    assert_eq!(
        auth.check_user_get(&alice, ROOT),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(auth.check_role_get(&alice, "r1"), Ok(()));
    assert_eq!(
        auth.check_role_get(&alice, "r2"),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(auth.check_role_get(&as_user(ROOT), "r2"), Ok(()));
    let nobody = AuthInfo::default();
    assert_eq!(auth.check_user_get(&nobody, ""), Err(EtcdError::UserEmpty));
}
