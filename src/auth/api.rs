//! The Auth service's requests as the store sees them: which change a write request becomes,
//! the answer an applied change gets, and the reads the store answers itself.

use super::Auth;
use crate::api::{ClientRequest, ClientResponse};
use crate::error::EtcdError;
use crate::proto::detcdpb::{auth_change::Change, AuthChange};
use crate::proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse, AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse, AuthRoleRevokePermissionResponse, AuthUserAddResponse,
    AuthUserChangePasswordResponse, AuthUserDeleteResponse, AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse, AuthenticateResponse,
};

/// The change an Auth write request proposes; `None` for any other request.
pub fn change_of(request: ClientRequest) -> Option<AuthChange> {
    let change = match request {
        ClientRequest::AuthEnable(r) => Change::Enable(r),
        ClientRequest::AuthDisable(r) => Change::Disable(r),
        ClientRequest::UserAdd(r) => Change::UserAdd(r),
        ClientRequest::UserDelete(r) => Change::UserDelete(r),
        ClientRequest::UserChangePassword(r) => Change::UserChangePassword(r),
        ClientRequest::UserGrantRole(r) => Change::UserGrantRole(r),
        ClientRequest::UserRevokeRole(r) => Change::UserRevokeRole(r),
        ClientRequest::RoleAdd(r) => Change::RoleAdd(r),
        ClientRequest::RoleDelete(r) => Change::RoleDelete(r),
        ClientRequest::RoleGrantPermission(r) => Change::RoleGrantPermission(r),
        ClientRequest::RoleRevokePermission(r) => Change::RoleRevokePermission(r),
        ClientRequest::Authenticate(r) => Change::Authenticate(r),
        _ => return None,
    };
    Some(AuthChange {
        change: Some(change),
    })
}

/// The (header-less) response of an applied change.
pub fn answer_of(change: &AuthChange) -> ClientResponse {
    match &change.change {
        Some(Change::Enable(_)) | None => AuthEnableResponse::default().into(),
        Some(Change::Disable(_)) => AuthDisableResponse::default().into(),
        Some(Change::UserAdd(_)) => AuthUserAddResponse::default().into(),
        Some(Change::UserDelete(_)) => AuthUserDeleteResponse::default().into(),
        Some(Change::UserChangePassword(_)) => AuthUserChangePasswordResponse::default().into(),
        Some(Change::UserGrantRole(_)) => AuthUserGrantRoleResponse::default().into(),
        Some(Change::UserRevokeRole(_)) => AuthUserRevokeRoleResponse::default().into(),
        Some(Change::RoleAdd(_)) => AuthRoleAddResponse::default().into(),
        Some(Change::RoleDelete(_)) => AuthRoleDeleteResponse::default().into(),
        Some(Change::RoleGrantPermission(_)) => AuthRoleGrantPermissionResponse::default().into(),
        Some(Change::RoleRevokePermission(_)) => AuthRoleRevokePermissionResponse::default().into(),
        Some(Change::Authenticate(r)) => AuthenticateResponse {
            header: None,
            token: r.token.clone(),
        }
        .into(),
    }
}

/// Whether the request is one of the Auth service's reads.
pub fn is_read(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::AuthStatus(_)
            | ClientRequest::UserGet(_)
            | ClientRequest::UserList(_)
            | ClientRequest::RoleGet(_)
            | ClientRequest::RoleList(_)
    )
}

impl Auth {
    /// Answers one of the Auth service's reads ([`is_read`]), without a header.
    pub fn read(&self, request: &ClientRequest) -> Result<ClientResponse, EtcdError> {
        Ok(match request {
            ClientRequest::AuthStatus(_) => self.status().into(),
            ClientRequest::UserGet(r) => self.user_get(&r.name)?.into(),
            ClientRequest::UserList(_) => self.user_list().into(),
            ClientRequest::RoleGet(r) => self.role_get(&r.role)?.into(),
            ClientRequest::RoleList(_) => self.role_list().into(),
            other => unreachable!("{} is not an auth read", other.name()),
        })
    }
}
