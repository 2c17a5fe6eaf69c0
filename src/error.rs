//! Errors a client can see, each with etcd's exact message and gRPC status code. Clients such as
//! clientv3 recognise errors by comparing the message string, so these strings are an interface.

use thiserror::Error;

/// gRPC status codes (the numeric values are the wire values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// An error answered to a client. `Display` gives etcd's message; [`EtcdError::code`] its code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    #[error("etcdserver: request timed out, waiting for the applied index took too long")]
    TimeoutWaitAppliedIndex,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: request canceled")]
    Canceled,
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimeoutLeaderTransfer,
    #[error("etcdserver: cluster version not found during downgrade")]
    ClusterVersionUnavailable,
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    /// detcd's own: a Range whose keys and values add up to more than `--max-range-bytes`
    /// (etcd has no such bound short of gRPC's 2 GiB message limit).
    #[error("etcdserver: range response is larger than --max-range-bytes")]
    RangeTooLarge,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// The auth package's own errors, which etcd's maintenance service answers unconverted
    /// (gRPC code Unknown) when it refuses a Defragment, Hash, HashKV or Snapshot.
    #[error("auth: user name is empty")]
    AdminUserEmpty,
    #[error("auth: user name not found")]
    AdminUserNotFound,
    #[error("auth: permission denied")]
    AdminPermissionDenied,
    #[error("auth: invalid auth token")]
    AdminInvalidAuthToken,
    /// Authenticate on a member whose JWT configuration holds only the public key.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnlyKey,
    /// Authenticate for a user added with `no_password` (it authenticates by certificate).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
}

/// Every error, in the order of their stable numbers (`EtcdError::number`): append only.
const ALL: [EtcdError; 66] = [
    EtcdError::EmptyKey,
    EtcdError::KeyNotFound,
    EtcdError::ValueProvided,
    EtcdError::LeaseProvided,
    EtcdError::TooManyOps,
    EtcdError::DuplicateKey,
    EtcdError::InvalidSortOption,
    EtcdError::RequestTooLarge,
    EtcdError::Compacted,
    EtcdError::FutureRev,
    EtcdError::NoSpace,
    EtcdError::TooManyRequests,
    EtcdError::LeaseNotFound,
    EtcdError::LeaseExist,
    EtcdError::LeaseTtlTooLarge,
    EtcdError::NoLeader,
    EtcdError::NotLeader,
    EtcdError::LeaderChanged,
    EtcdError::Stopped,
    EtcdError::Timeout,
    EtcdError::TimeoutDueToLeaderFail,
    EtcdError::TimeoutDueToConnectionLost,
    EtcdError::TimeoutWaitAppliedIndex,
    EtcdError::Unhealthy,
    EtcdError::Corrupt,
    EtcdError::NotCapable,
    EtcdError::Canceled,
    EtcdError::MemberExist,
    EtcdError::PeerUrlExist,
    EtcdError::MemberNotEnoughStarted,
    EtcdError::MemberBadUrls,
    EtcdError::MemberNotFound,
    EtcdError::MemberNotLearner,
    EtcdError::LearnerNotReady,
    EtcdError::TooManyLearners,
    EtcdError::NotSupportedForLearner,
    EtcdError::BadLeaderTransferee,
    EtcdError::TimeoutLeaderTransfer,
    EtcdError::ClusterVersionUnavailable,
    EtcdError::WrongDowngradeVersionFormat,
    EtcdError::NoInflightDowngrade,
    EtcdError::InvalidDowngradeTargetVersion,
    EtcdError::RangeTooLarge,
    EtcdError::RootUserNotExist,
    EtcdError::RootRoleNotExist,
    EtcdError::UserAlreadyExist,
    EtcdError::UserEmpty,
    EtcdError::UserNotFound,
    EtcdError::RoleAlreadyExist,
    EtcdError::RoleNotFound,
    EtcdError::RoleEmpty,
    EtcdError::AuthFailed,
    EtcdError::PermissionNotGiven,
    EtcdError::PermissionDenied,
    EtcdError::RoleNotGranted,
    EtcdError::PermissionNotGranted,
    EtcdError::AuthNotEnabled,
    EtcdError::InvalidAuthToken,
    EtcdError::InvalidAuthMgmt,
    EtcdError::AuthOldRevision,
    EtcdError::AdminUserEmpty,
    EtcdError::AdminUserNotFound,
    EtcdError::AdminPermissionDenied,
    EtcdError::AdminInvalidAuthToken,
    EtcdError::VerifyOnlyKey,
    EtcdError::NoPasswordUser,
];

impl EtcdError {
    /// A number that names this error between members (never 0); stable across versions.
    pub fn number(&self) -> u32 {
        let index = ALL
            .iter()
            .position(|e| e == self)
            .expect("every error is in ALL");
        index as u32 + 1
    }

    /// This error as etcd's maintenance service answers it when refusing a request only the
    /// root role may make: the auth package's own error, unconverted.
    pub fn unconverted_for_admin(self) -> EtcdError {
        match self {
            EtcdError::UserEmpty => EtcdError::AdminUserEmpty,
            EtcdError::UserNotFound => EtcdError::AdminUserNotFound,
            EtcdError::PermissionDenied => EtcdError::AdminPermissionDenied,
            EtcdError::InvalidAuthToken => EtcdError::AdminInvalidAuthToken,
            other => other,
        }
    }

    /// The error a [`EtcdError::number`] names, if any.
    pub fn from_number(number: u32) -> Option<EtcdError> {
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        ALL.get(index).cloned()
    }

    /// The gRPC status code etcd answers this error with. Everything a client should retry is
    /// `Unavailable`: clientv3 retries reads only on that code.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey
            | KeyNotFound
            | ValueProvided
            | LeaseProvided
            | TooManyOps
            | DuplicateKey
            | InvalidSortOption
            | RequestTooLarge
            | MemberBadUrls
            | WrongDowngradeVersionFormat
            | InvalidDowngradeTargetVersion
            | UserEmpty
            | RoleEmpty
            | AuthFailed
            | PermissionNotGiven
            | InvalidAuthMgmt
            | AuthOldRevision => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests | RangeTooLarge => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | NotLeader
            | NotCapable
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotSupportedForLearner
            | BadLeaderTransferee
            | ClusterVersionUnavailable
            | NoInflightDowngrade
            | RootUserNotExist
            | RootRoleNotExist
            | UserAlreadyExist
            | UserNotFound
            | RoleAlreadyExist
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            NoLeader
            | LeaderChanged
            | Stopped
            | Timeout
            | TimeoutDueToLeaderFail
            | TimeoutDueToConnectionLost
            | TimeoutWaitAppliedIndex
            | TimeoutLeaderTransfer
            | Unhealthy => Code::Unavailable,
            Corrupt => Code::DataLoss,
            Canceled => Code::Canceled,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            AdminUserEmpty
            | AdminUserNotFound
            | AdminPermissionDenied
            | AdminInvalidAuthToken
            | VerifyOnlyKey
            | NoPasswordUser => Code::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_number_and_the_number_names_it() {
        let numbers: std::collections::BTreeSet<u32> = ALL.iter().map(|e| e.number()).collect();
        assert_eq!(numbers.len(), ALL.len());
        for error in ALL {
            assert_eq!(EtcdError::from_number(error.number()), Some(error.clone()));
        }
        assert_eq!(EtcdError::from_number(0), None);
        assert_eq!(EtcdError::from_number(ALL.len() as u32 + 1), None);
    }
}
