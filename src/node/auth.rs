//! Auth at the member: who a request is from, what it may do before it goes further, and the
//! Auth service's own requests.
//!
//! While auth is on, a request's `token` names a user through this member's simple tokens (or
//! is a JWT the client port verified, `Credentials::Signed`);
//! a token `<random>.<index>` names the entry that made it, so a request that reaches a member
//! before that member applied the entry waits for it rather than being refused. Reads and the
//! root role's requests are checked here, against the store as this member has it; writes
//! carry who asked and at which revision of the store into their proposal and are checked
//! when applied (`State::apply`). A password never reaches the node: the driver checks it
//! against the stored hash ([`PasswordHashRequest`]) and hashes new ones before proposing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::types::RequestId;
use super::{ClientRequest, Node};
use crate::api::Credentials;
use crate::auth::api::{change_of, is_read};
use crate::auth::AuthInfo;
use crate::error::EtcdError;
use crate::proto::detcdpb::{
    auth_change::Change, internal_request::Op, AuthChange, AuthorizeResponse, PasswordHashRequest,
    PasswordHashResponse,
};
use crate::proto::etcdserverpb::RangeRequest;
use crate::state::Answer;
use crate::time::Instant;

/// Simple tokens a member keeps at most; past it, the one closest to expiring goes.
const TOKENS_MAX: usize = 65_536;

/// Requests waiting for the entry their token names, at most.
const PARKED_MAX: usize = 1_024;

/// The member's simple tokens: each names a user until `ttl` after its last use.
struct Tokens {
    ttl: Duration,
    users: BTreeMap<String, (String, Instant)>,
    by_expiry: BTreeSet<(Instant, String)>,
}

impl Tokens {
    fn insert(&mut self, token: String, user: String, now: Instant) {
        self.expire(now);
        if self.users.len() >= TOKENS_MAX {
            if let Some((_, oldest)) = self.by_expiry.pop_first() {
                self.users.remove(&oldest);
            }
        }
        let expires = now + self.ttl;
        self.by_expiry.insert((expires, token.clone()));
        self.users.insert(token, (user, expires));
    }

    /// The token's user, its life renewed; `None` for a token unknown or expired.
    fn use_token(&mut self, token: &str, now: Instant) -> Option<String> {
        self.expire(now);
        let (user, expires) = self.users.get_mut(token)?;
        self.by_expiry.remove(&(*expires, token.to_string()));
        *expires = now + self.ttl;
        self.by_expiry.insert((*expires, token.to_string()));
        Some(user.clone())
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_expiry.first() {
            if *at > now {
                break;
            }
            let (_, token) = self.by_expiry.pop_first().expect("just seen");
            self.users.remove(&token);
        }
    }

    fn revoke(&mut self, user: Option<&str>) {
        let gone: Vec<(String, Instant)> = self
            .users
            .iter()
            .filter(|(_, (u, _))| user.is_none_or(|name| name == u))
            .map(|(token, (_, at))| (token.clone(), *at))
            .collect();
        for (token, at) in gone {
            self.users.remove(&token);
            self.by_expiry.remove(&(at, token));
        }
    }
}

/// A request whose token names an entry this member has not applied yet.
struct Parked {
    index: u64,
    id: RequestId,
    request: ClientRequest,
    credentials: Credentials,
}

pub(super) struct AuthDuty {
    tokens: Tokens,
    parked: Vec<Parked>,
    /// The credentials of the linearizable reads waiting for their read index (those sent
    /// with any): their senders are identified and checked when the reads are served.
    readers: BTreeMap<RequestId, Credentials>,
    /// Who the request being handled is from: what its proposal carries.
    caller: AuthInfo,
}

impl AuthDuty {
    pub fn new(token_ttl: Duration) -> AuthDuty {
        AuthDuty {
            tokens: Tokens {
                ttl: token_ttl,
                users: BTreeMap::new(),
                by_expiry: BTreeSet::new(),
            },
            parked: Vec::new(),
            readers: BTreeMap::new(),
            caller: AuthInfo::default(),
        }
    }

    pub fn caller(&self) -> &AuthInfo {
        &self.caller
    }
}

/// The index a simple token names (`<random>.<index>`).
fn token_index(token: &str) -> Option<u64> {
    token.rsplit_once('.')?.1.parse().ok()
}

/// The error a refused request gets: as etcd's maintenance service answers, unconverted, for
/// what only the root role may ask of it.
fn refusal(request: &ClientRequest, err: EtcdError) -> EtcdError {
    match request {
        ClientRequest::Defragment(_) | ClientRequest::Hash(_) | ClientRequest::HashKv(_) => {
            err.unconverted_for_admin()
        }
        ClientRequest::Authorize(r) if r.admin => err.unconverted_for_admin(),
        _ => err,
    }
}

/// A read served after a read index, whose sender is checked when it is served.
fn is_linearizable_read(request: &ClientRequest) -> bool {
    match request {
        ClientRequest::Range(r) => !r.serializable,
        ClientRequest::Txn(t) => {
            !super::clients::txn_has_writes(t) && !super::clients::txn_is_serializable(t)
        }
        other => is_read(other),
    }
}

/// What the node learned of a request's sender.
enum Identity {
    Known(AuthInfo),
    /// The token names the entry at this index, not applied here yet.
    NotYet(u64),
}

impl Node {
    /// Handles an admitted request as the member identifies its sender.
    pub(super) fn handle_as(
        &mut self,
        id: RequestId,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) {
        let caller = match self.identify(credentials.as_ref()) {
            Ok(Identity::Known(caller)) => caller,
            Ok(Identity::NotYet(index)) if self.auth.parked.len() < PARKED_MAX => {
                let credentials = credentials.expect("only a token names an entry");
                let parked = Parked {
                    index,
                    id,
                    request,
                    credentials,
                };
                self.auth.parked.push(parked);
                return;
            }
            Ok(Identity::NotYet(_)) => return self.finish(id, Err(EtcdError::TooManyRequests)),
            Err(err) => return self.finish(id, Err(refusal(&request, err))),
        };
        if self.checks_when_served(&request) {
            // As etcd does, a linearizable read's sender is checked against the store the read
            // is served from, after its read index: this member's store may not hold yet a
            // change (auth enabled, a permission revoked or granted) acknowledged before the
            // read was sent.
            if let Some(credentials) = credentials {
                self.remember_reader(id, credentials);
            }
        } else if let Err(err) = self.admit_as(&request, &caller) {
            return self.finish(id, Err(refusal(&request, err)));
        }
        self.auth.caller = caller;
        self.dispatch_client(id, request);
        self.auth.caller = AuthInfo::default();
    }

    fn checks_when_served(&self, request: &ClientRequest) -> bool {
        is_linearizable_read(request) && !self.bug(|b| b.reader_checked_on_arrival)
    }

    fn remember_reader(&mut self, id: RequestId, credentials: Credentials) {
        let readers = &mut self.auth.readers;
        if readers.len() >= self.cfg.pending_requests_max {
            let pending = &self.pending;
            readers.retain(|id, _| pending.contains(*id));
        }
        readers.insert(id, credentials);
    }

    /// Whether the sender of the linearizable read `id` may have `request` served now, by the
    /// store it is served from (a JWT older than the store gets etcd's "revision of auth store
    /// is old"). Other reads were checked when they arrived.
    pub(super) fn admit_reader(
        &mut self,
        id: RequestId,
        request: &ClientRequest,
    ) -> Result<(), EtcdError> {
        if !self.checks_when_served(request) {
            return Ok(());
        }
        let credentials = self.auth.readers.remove(&id);
        let caller = match self.identify(credentials.as_ref())? {
            Identity::Known(caller) => caller,
            // Its token's entry was applied before the request got this far.
            Identity::NotYet(_) => return Err(EtcdError::InvalidAuthToken),
        };
        self.admit_as(request, &caller)
            .map_err(|err| refusal(request, err))
    }

    /// Handles the requests whose token's entry is applied now, or that timed out waiting.
    pub(super) fn serve_parked_requests(&mut self) {
        let applied = self.applied_index;
        if !self.auth.parked.iter().any(|p| p.index <= applied) {
            return;
        }
        let (ready, waiting) = std::mem::take(&mut self.auth.parked)
            .into_iter()
            .partition(|p| p.index <= applied);
        self.auth.parked = waiting;
        for p in ready {
            if self.pending.contains(p.id) {
                self.handle_as(p.id, p.request, Some(p.credentials));
            }
        }
    }

    fn identify(&mut self, credentials: Option<&Credentials>) -> Result<Identity, EtcdError> {
        let auth = self.state.auth();
        let nobody = Identity::Known(AuthInfo::default());
        if !auth.is_enabled() {
            return Ok(nobody);
        }
        let revision = auth.revision();
        match credentials {
            None => Ok(nobody),
            Some(Credentials::CommonName(user)) => Ok(Identity::Known(AuthInfo {
                user: user.clone(),
                revision,
            })),
            Some(Credentials::Signed { user, revision: at }) => Ok(Identity::Known(AuthInfo {
                user: user.clone(),
                revision: match self.bug(|b| b.signed_identity_at_store_revision) {
                    true => revision,
                    false => *at,
                },
            })),
            Some(Credentials::Token(token)) => {
                if let Some(user) = self.auth.tokens.use_token(token, self.now) {
                    return Ok(Identity::Known(AuthInfo { user, revision }));
                }
                match token_index(token) {
                    Some(index) if index > self.applied_index => Ok(Identity::NotYet(index)),
                    _ => Err(EtcdError::InvalidAuthToken),
                }
            }
        }
    }

    /// The checks made before a request goes further: reads, the root role's requests that
    /// do not go through raft, and membership changes (applied as conf changes, which carry no
    /// caller). Writes are checked when applied.
    fn admit_as(&self, request: &ClientRequest, caller: &AuthInfo) -> Result<(), EtcdError> {
        let auth = self.state.auth();
        if !auth.is_enabled() {
            return Ok(());
        }
        match request {
            ClientRequest::Range(r) => auth.check_range(caller, r),
            ClientRequest::Txn(t) if !super::clients::txn_has_writes(t) => {
                auth.check_txn(caller, t)
            }
            ClientRequest::Authorize(r) if r.admin => auth.check_admin(caller),
            ClientRequest::Authorize(r) => {
                let range = RangeRequest {
                    key: r.key.clone(),
                    range_end: r.range_end.clone(),
                    ..RangeRequest::default()
                };
                auth.check_range(caller, &range)
            }
            ClientRequest::UserGet(r) => auth.check_user_get(caller, &r.name),
            ClientRequest::RoleGet(r) => auth.check_role_get(caller, &r.role),
            ClientRequest::UserList(_)
            | ClientRequest::RoleList(_)
            | ClientRequest::Defragment(_)
            | ClientRequest::Hash(_)
            | ClientRequest::HashKv(_) => auth.check_admin(caller),
            // Changes to the membership are root's too; listing it is anyone's.
            ClientRequest::MemberAdd(_)
            | ClientRequest::MemberRemove(_)
            | ClientRequest::MemberUpdate(_)
            | ClientRequest::MemberPromote(_) => auth.check_admin(caller),
            _ => Ok(()),
        }
    }

    pub(super) fn handle_auth(
        &mut self,
        id: RequestId,
        request: ClientRequest,
    ) -> Result<(), EtcdError> {
        match request {
            ClientRequest::PasswordHash(r) => {
                let answer = self.password_hash(&r)?;
                self.finish(id, Ok(answer));
            }
            ClientRequest::Authorize(_) => self.finish(id, Ok(AuthorizeResponse::default().into())),
            read if is_read(&read) => self.read(id, false, read),
            write => {
                let name = write.name();
                let mut change = change_of(write)
                    .unwrap_or_else(|| unreachable!("{name} is not an Auth request"));
                match &mut change.change {
                    Some(Change::UserAdd(r)) => r.password.clear(),
                    Some(Change::UserChangePassword(r)) => r.password.clear(),
                    _ => {}
                }
                self.propose(id, Op::Auth(change));
            }
        }
        Ok(())
    }

    /// The hash to check a password against, with the store's revision it was read at.
    fn password_hash(&self, r: &PasswordHashRequest) -> Result<Answer, EtcdError> {
        let auth = self.state.auth();
        if !auth.is_enabled() {
            return Err(EtcdError::AuthNotEnabled);
        }
        let user = auth.user(&r.name).ok_or(EtcdError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(EtcdError::NoPasswordUser);
        }
        Ok(Answer::from(PasswordHashResponse {
            header: None,
            hash: user.password.clone(),
            auth_revision: auth.revision(),
        }))
    }

    /// After an auth change applied: a new token kept (named after its entry, `index`), or the
    /// tokens a change ends dropped. Returns the token as the client gets it.
    pub(super) fn auth_applied(&mut self, change: &AuthChange, index: u64) -> Option<String> {
        match change.change.as_ref()? {
            // A login for a JWT (the client port signs it): nothing to keep here.
            Change::Authenticate(r) if r.token.is_empty() => {}
            Change::Authenticate(r) => {
                let token = format!("{}.{index}", r.token);
                let (user, now) = (r.name.clone(), self.now);
                self.auth.tokens.insert(token.clone(), user, now);
                return Some(token);
            }
            Change::UserDelete(r) => self.auth.tokens.revoke(Some(&r.name)),
            Change::UserChangePassword(r) => self.auth.tokens.revoke(Some(&r.name)),
            Change::Disable(_) => self.auth.tokens.revoke(None),
            _ => {}
        }
        None
    }
}
