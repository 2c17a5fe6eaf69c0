//! The client requests a fuzz input can name, by number, each decoded from its protobuf bytes.
//!
//! Left out: `MemberRemove` (removing the only member stops it, which the target would take for
//! a crash) and the node's internal requests that carry nothing a client chose (`ReadBarrier`,
//! `PasswordHash`, and `Authenticate`, whose token the server makes). `Authorize` stays: its key
//! range is a watch request's. A `MemberAdd` adds a learner, so that the one member keeps its
//! quorum and later requests are answered at once.

use detcd::node::ClientRequest;
use detcd::proto::detcdpb::AuthorizeRequest;
use detcd::proto::etcdserverpb::{
    AlarmRequest, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, CompactionRequest,
    DefragmentRequest, DeleteRangeRequest, DowngradeRequest, HashKvRequest, HashRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest, StatusRequest, TxnRequest,
};
use prost::Message;

macro_rules! requests {
    ($($number:literal => $variant:ident($request:ty),)*) => {
        /// The request `kind` names, decoded from `bytes`; `None` for an unknown kind or bytes
        /// that are not its encoding.
        pub fn decode(kind: u8, bytes: &[u8]) -> Option<ClientRequest> {
            match kind {
                $($number => <$request>::decode(bytes).ok().map(ClientRequest::$variant),)*
                _ => None,
            }
        }
    };
}

requests! {
    0 => Range(RangeRequest),
    1 => Put(PutRequest),
    2 => DeleteRange(DeleteRangeRequest),
    3 => Txn(TxnRequest),
    4 => Compact(CompactionRequest),
    5 => LeaseGrant(LeaseGrantRequest),
    6 => LeaseRevoke(LeaseRevokeRequest),
    7 => LeaseKeepAlive(LeaseKeepAliveRequest),
    8 => LeaseTimeToLive(LeaseTimeToLiveRequest),
    9 => LeaseLeases(LeaseLeasesRequest),
    10 => MemberList(MemberListRequest),
    11 => MemberUpdate(MemberUpdateRequest),
    12 => MemberPromote(MemberPromoteRequest),
    13 => Alarm(AlarmRequest),
    14 => Status(StatusRequest),
    15 => Defragment(DefragmentRequest),
    16 => Hash(HashRequest),
    17 => HashKv(HashKvRequest),
    18 => MoveLeader(MoveLeaderRequest),
    19 => Downgrade(DowngradeRequest),
    20 => AuthEnable(AuthEnableRequest),
    21 => AuthDisable(AuthDisableRequest),
    22 => AuthStatus(AuthStatusRequest),
    23 => UserAdd(AuthUserAddRequest),
    24 => UserGet(AuthUserGetRequest),
    25 => UserList(AuthUserListRequest),
    26 => UserDelete(AuthUserDeleteRequest),
    27 => UserChangePassword(AuthUserChangePasswordRequest),
    28 => UserGrantRole(AuthUserGrantRoleRequest),
    29 => UserRevokeRole(AuthUserRevokeRoleRequest),
    30 => RoleAdd(AuthRoleAddRequest),
    31 => RoleGet(AuthRoleGetRequest),
    32 => RoleList(AuthRoleListRequest),
    33 => RoleDelete(AuthRoleDeleteRequest),
    34 => RoleGrantPermission(AuthRoleGrantPermissionRequest),
    35 => RoleRevokePermission(AuthRoleRevokePermissionRequest),
    36 => Authorize(AuthorizeRequest),
    37 => MemberAdd(MemberAddRequest),
}

/// `decode`, with a member added only as a learner (see the module's note).
pub fn decode_for_one_member(kind: u8, bytes: &[u8]) -> Option<ClientRequest> {
    match decode(kind, bytes)? {
        ClientRequest::MemberAdd(mut add) => {
            add.is_learner = true;
            Some(ClientRequest::MemberAdd(add))
        }
        other => Some(other),
    }
}
