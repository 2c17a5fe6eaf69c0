//! The client API the node answers, declared once.
//!
//! Every RPC is one line of [`client_api!`]: its name, its request type and its response type.
//! The line generates the variant of [`ClientRequest`] and of [`ClientResponse`], the
//! [`Rpc`] pairing that lets a driver call the node with a typed request and get the typed
//! response back, and the accessors every response shares (its header). Adding an RPC is this
//! line plus the node's handler for it; the gRPC services, the simulator's clients and the
//! trace derive from the table.
//!
//! Invariant: the node answers a request of kind `K` with a response of kind `K` or an error
//! (`tests` in this module and the node's own tests check it for every kind).

use std::io;

use crate::mvcc::{ColdRead, ColdValues};
use crate::proto::detcdpb::{
    AuthorizeRequest, AuthorizeResponse, PasswordHashRequest, PasswordHashResponse,
    ReadBarrierRequest, ReadBarrierResponse, TokenRequest,
};
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AuthDisableRequest, AuthDisableResponse, AuthEnableRequest,
    AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest,
    AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest,
    AuthRoleListResponse, AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse,
    AuthStatusRequest, AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest,
    AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateResponse, CompactionRequest,
    CompactionResponse, DefragmentRequest, DefragmentResponse, DeleteRangeRequest,
    DeleteRangeResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MemberAddRequest,
    MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, StatusRequest, StatusResponse, TxnRequest,
    TxnResponse,
};

/// Who sent a request, as the client port learned it (used only while auth is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The `token` metadata (the gateway's `Authorization` header) a client authenticated for.
    Token(String),
    /// The common name of the client's verified certificate (`--client-cert-auth`), when it
    /// sent no token.
    CommonName(String),
    /// A JWT the client port verified (`--auth-token jwt,...`): the user it names and the
    /// auth store's revision it was issued at, which the store may have passed since.
    Signed { user: String, revision: u64 },
}

/// A request type of the client API and the response type the node answers it with.
pub trait Rpc: Into<ClientRequest> {
    type Response;
    /// The typed response inside `response`, which the node built for a request of this kind.
    fn response(response: ClientResponse) -> Option<Self::Response>;
}

macro_rules! client_api {
    ($($(#[$doc:meta])* $name:ident($request:ident) -> $response:ident,)*) => {
        /// A client request, as the node receives it.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ClientRequest {
            $($(#[$doc])* $name($request),)*
        }

        /// The node's answer to a [`ClientRequest`] of the same kind.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ClientResponse {
            $($name($response),)*
        }

        $(
            impl From<$request> for ClientRequest {
                fn from(request: $request) -> ClientRequest {
                    ClientRequest::$name(request)
                }
            }

            impl Rpc for $request {
                type Response = $response;
                fn response(response: ClientResponse) -> Option<$response> {
                    match response {
                        ClientResponse::$name(r) => Some(r),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }

            impl From<$response> for ClientResponse {
                fn from(response: $response) -> ClientResponse {
                    ClientResponse::$name(response)
                }
            }
        )*

        impl ClientRequest {
            /// The RPC's name, as etcd's service method calls it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(ClientRequest::$name(_) => stringify!($name),)*
                }
            }
        }

        impl ClientResponse {
            /// The response header's slot, whichever kind of response this is.
            pub fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                match self {
                    $(ClientResponse::$name(r) => &mut r.header,)*
                }
            }

            pub fn header(&self) -> Option<&ResponseHeader> {
                match self {
                    $(ClientResponse::$name(r) => r.header.as_ref(),)*
                }
            }

            /// The RPC's name, as for [`ClientRequest::name`].
            pub fn name(&self) -> &'static str {
                match self {
                    $(ClientResponse::$name(_) => stringify!($name),)*
                }
            }

            /// The response's protobuf encoding, whichever kind it is.
            pub fn encode_to_vec(&self) -> Vec<u8> {
                match self {
                    $(ClientResponse::$name(r) => prost::Message::encode_to_vec(r),)*
                }
            }
        }
    };
}

client_api! {
    /// `etcdserverpb.KV/Range`.
    Range(RangeRequest) -> RangeResponse,
    /// `etcdserverpb.KV/Put`.
    Put(PutRequest) -> PutResponse,
    /// `etcdserverpb.KV/DeleteRange`.
    DeleteRange(DeleteRangeRequest) -> DeleteRangeResponse,
    /// `etcdserverpb.KV/Txn`.
    Txn(TxnRequest) -> TxnResponse,
    /// `etcdserverpb.KV/Compact`.
    Compact(CompactionRequest) -> CompactionResponse,
    /// `etcdserverpb.Lease/LeaseGrant`.
    LeaseGrant(LeaseGrantRequest) -> LeaseGrantResponse,
    /// `etcdserverpb.Lease/LeaseRevoke`.
    LeaseRevoke(LeaseRevokeRequest) -> LeaseRevokeResponse,
    /// One request of an `etcdserverpb.Lease/LeaseKeepAlive` stream.
    LeaseKeepAlive(LeaseKeepAliveRequest) -> LeaseKeepAliveResponse,
    /// `etcdserverpb.Lease/LeaseTimeToLive`.
    LeaseTimeToLive(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse,
    /// `etcdserverpb.Lease/LeaseLeases`.
    LeaseLeases(LeaseLeasesRequest) -> LeaseLeasesResponse,
    /// `etcdserverpb.Cluster/MemberAdd`.
    MemberAdd(MemberAddRequest) -> MemberAddResponse,
    /// `etcdserverpb.Cluster/MemberRemove`.
    MemberRemove(MemberRemoveRequest) -> MemberRemoveResponse,
    /// `etcdserverpb.Cluster/MemberUpdate`.
    MemberUpdate(MemberUpdateRequest) -> MemberUpdateResponse,
    /// `etcdserverpb.Cluster/MemberList`.
    MemberList(MemberListRequest) -> MemberListResponse,
    /// `etcdserverpb.Cluster/MemberPromote`.
    MemberPromote(MemberPromoteRequest) -> MemberPromoteResponse,
    /// `etcdserverpb.Maintenance/Alarm`.
    Alarm(AlarmRequest) -> AlarmResponse,
    /// `etcdserverpb.Maintenance/Status`.
    Status(StatusRequest) -> StatusResponse,
    /// `etcdserverpb.Maintenance/Defragment`.
    Defragment(DefragmentRequest) -> DefragmentResponse,
    /// `etcdserverpb.Maintenance/Hash`.
    Hash(HashRequest) -> HashResponse,
    /// `etcdserverpb.Maintenance/HashKV`.
    HashKv(HashKvRequest) -> HashKvResponse,
    /// `etcdserverpb.Maintenance/MoveLeader`.
    MoveLeader(MoveLeaderRequest) -> MoveLeaderResponse,
    /// `etcdserverpb.Maintenance/Downgrade`.
    Downgrade(DowngradeRequest) -> DowngradeResponse,
    /// `etcdserverpb.Auth/AuthEnable`.
    AuthEnable(AuthEnableRequest) -> AuthEnableResponse,
    /// `etcdserverpb.Auth/AuthDisable`.
    AuthDisable(AuthDisableRequest) -> AuthDisableResponse,
    /// `etcdserverpb.Auth/AuthStatus`.
    AuthStatus(AuthStatusRequest) -> AuthStatusResponse,
    /// `etcdserverpb.Auth/Authenticate`, once the driver checked the password
    /// ([`PasswordHashRequest`]): a token for the user, through raft.
    Authenticate(TokenRequest) -> AuthenticateResponse,
    /// The stored password hash of a user, for the driver to check a password against.
    PasswordHash(PasswordHashRequest) -> PasswordHashResponse,
    /// Whether the caller may read the keys a watch names.
    Authorize(AuthorizeRequest) -> AuthorizeResponse,
    /// `etcdserverpb.Auth/UserAdd`.
    UserAdd(AuthUserAddRequest) -> AuthUserAddResponse,
    /// `etcdserverpb.Auth/UserGet`.
    UserGet(AuthUserGetRequest) -> AuthUserGetResponse,
    /// `etcdserverpb.Auth/UserList`.
    UserList(AuthUserListRequest) -> AuthUserListResponse,
    /// `etcdserverpb.Auth/UserDelete`.
    UserDelete(AuthUserDeleteRequest) -> AuthUserDeleteResponse,
    /// `etcdserverpb.Auth/UserChangePassword`.
    UserChangePassword(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse,
    /// `etcdserverpb.Auth/UserGrantRole`.
    UserGrantRole(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse,
    /// `etcdserverpb.Auth/UserRevokeRole`.
    UserRevokeRole(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse,
    /// `etcdserverpb.Auth/RoleAdd`.
    RoleAdd(AuthRoleAddRequest) -> AuthRoleAddResponse,
    /// `etcdserverpb.Auth/RoleGet`.
    RoleGet(AuthRoleGetRequest) -> AuthRoleGetResponse,
    /// `etcdserverpb.Auth/RoleList`.
    RoleList(AuthRoleListRequest) -> AuthRoleListResponse,
    /// `etcdserverpb.Auth/RoleDelete`.
    RoleDelete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse,
    /// `etcdserverpb.Auth/RoleGrantPermission`.
    RoleGrantPermission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse,
    /// `etcdserverpb.Auth/RoleRevokePermission`.
    RoleRevokePermission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse,
    /// The client port's barrier for linearizable reads it answers itself (`node::LocalReads`);
    /// no client sends it.
    ReadBarrier(ReadBarrierRequest) -> ReadBarrierResponse,
}

impl ClientResponse {
    /// Reads the cold values `cold` names into the response.
    pub fn fill_cold(&mut self, cold: ColdValues, reader: &dyn ColdRead) -> io::Result<()> {
        if cold.is_empty() {
            return Ok(());
        }
        match self {
            ClientResponse::Range(r) => cold.fill_range(r, reader),
            ClientResponse::Txn(r) => cold.fill_txn(r, reader),
            ClientResponse::HashKv(r) => {
                (r.hash, r.compact_revision) = cold.fill_hash(reader)?;
                Ok(())
            }
            ClientResponse::Hash(r) => {
                r.hash = cold.fill_hash(reader)?.0;
                Ok(())
            }
            _ => Err(io::Error::other(
                "only ranges, txns and hashes read cold values",
            )),
        }
    }

    /// The store revision the response reports.
    pub fn revision(&self) -> Option<i64> {
        self.header().map(|h| h.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_converts_back_only_to_its_own_kind() {
        let put = ClientResponse::from(PutResponse::default());
        assert!(PutRequest::response(put.clone()).is_some());
        assert!(RangeRequest::response(put.clone()).is_none());
        assert_eq!(
            put.name(),
            ClientRequest::from(PutRequest::default()).name()
        );
    }
}
