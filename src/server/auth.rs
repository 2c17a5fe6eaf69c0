//! etcd's `etcdserverpb.Auth` service. Each call is one request to the node, except where a
//! password is involved: a new password is hashed here (bcrypt, `--bcrypt-cost`) before the
//! request goes on, so the log only ever holds its hash; and Authenticate checks the password
//! against the member's stored hash here, off the node's thread, before the node hands out a
//! token through raft.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::driver::{typed, DriverHandle};
use super::grpc::{metadata_credentials, status, unary};
use crate::api::{ClientRequest, Rpc};
use crate::error::EtcdError;
use crate::proto::detcdpb::{PasswordHashRequest, TokenRequest};
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};

/// bcrypt runs (a few tens of milliseconds of CPU each at cost 10) at once, at most: a flood
/// of logins waits for them instead of taking every core from the member.
const BCRYPT_RUNS_MAX: usize = 2;

/// Times Authenticate checks the password again when the store changed between the check and
/// the token (a password changed meanwhile must not let the old one in).
const AUTHENTICATE_ATTEMPTS: usize = 3;

const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[derive(Clone)]
pub struct AuthService {
    driver: DriverHandle,
    bcrypt_cost: u32,
    bcrypt_runs: Arc<Semaphore>,
}

impl AuthService {
    pub fn new(driver: DriverHandle, bcrypt_cost: u32) -> AuthService {
        AuthService {
            driver,
            bcrypt_cost,
            bcrypt_runs: Arc::new(Semaphore::new(BCRYPT_RUNS_MAX)),
        }
    }

    /// Runs bcrypt off the async workers, a bounded number at a time.
    async fn bcrypt<T: Send + 'static>(&self, run: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self.bcrypt_runs.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(run)
            .await
            .expect("bcrypt does not panic")
    }

    /// The password as Go's bcrypt hashes it (`$2a$`), which etcd's stores hold.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.bcrypt_cost;
        self.bcrypt(move || bcrypt::hash_with_result(password, cost))
            .await
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoA))
            .map_err(|e| Status::internal(format!("hashing the password: {e}")))
    }

    /// The request as the node takes it: a new password replaced by its hash.
    pub async fn hashed(&self, request: ClientRequest) -> Result<ClientRequest, Status> {
        let (password, hashed) = match &request {
            ClientRequest::UserAdd(r) if !r.options.is_some_and(|o| o.no_password) => {
                (&r.password, &r.hashed_password)
            }
            ClientRequest::UserChangePassword(r) => (&r.password, &r.hashed_password),
            _ => return Ok(request),
        };
        let hash = match hashed.is_empty() {
            true => Some(self.hash(password.clone()).await?),
            false => None,
        };
        Ok(match request {
            ClientRequest::UserAdd(mut r) => {
                r.hashed_password = hash.unwrap_or(r.hashed_password);
                r.password.clear();
                r.into()
            }
            ClientRequest::UserChangePassword(mut r) => {
                r.hashed_password = hash.unwrap_or(r.hashed_password);
                r.password.clear();
                r.into()
            }
            other => other,
        })
    }

    /// A unary call whose request may carry a new password.
    async fn unary_hashed<R: Rpc>(
        &self,
        request: Request<R>,
    ) -> Result<Response<R::Response>, Status> {
        let credentials = metadata_credentials(&request);
        let request = self.hashed(request.into_inner().into()).await?;
        let response = self.driver.call_any_as(request, credentials).await;
        response
            .map(|r| Response::new(typed::<R>(r)))
            .map_err(status)
    }

    /// Authenticate: the password checked, then a token, checked again if the store changed
    /// between the two.
    pub async fn login(&self, r: &AuthenticateRequest) -> Result<AuthenticateResponse, Status> {
        for _ in 1..AUTHENTICATE_ATTEMPTS {
            match self.try_authenticate(r).await {
                Err(EtcdError::AuthOldRevision) => continue,
                answer => return answer.map_err(status),
            }
        }
        self.try_authenticate(r).await.map_err(status)
    }

    /// One check of the password against the member's stored hash, then a token through
    /// raft, refused if the store changed since the check.
    async fn try_authenticate(
        &self,
        r: &AuthenticateRequest,
    ) -> Result<AuthenticateResponse, EtcdError> {
        let name = r.name.clone();
        let stored = self
            .driver
            .call(PasswordHashRequest { name: name.clone() })
            .await?;
        let (password, hash) = (r.password.clone(), stored.hash.clone());
        let matches = self
            .bcrypt(move || bcrypt::verify(password, &String::from_utf8_lossy(&hash)))
            .await;
        if !matches.unwrap_or(false) {
            return Err(EtcdError::AuthFailed);
        }
        let jwt = self.driver.jwt();
        let token = TokenRequest {
            name: name.clone(),
            token: jwt.map_or_else(random_token, |_| String::new()),
            checked_revision: stored.auth_revision,
        };
        let mut response = self.driver.call(token).await?;
        if let Some(jwt) = jwt {
            // The entry was applied at the revision the password was checked at (else
            // AuthOldRevision): the token carries that one.
            response.token = jwt.sign(&name, stored.auth_revision)?;
        }
        Ok(response)
    }
}

/// 16 random letters, as etcd's simple tokens start.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes
        .iter()
        .map(|b| TOKEN_LETTERS[*b as usize % TOKEN_LETTERS.len()] as char)
        .collect()
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        self.login(request.get_ref()).await.map(Response::new)
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        self.unary_hashed(request).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        self.unary_hashed(request).await
    }

    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        unary(&self.driver, request).await
    }
}
