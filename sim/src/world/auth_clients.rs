//! The auth workload (`Options::auth`): an administrator that adds and removes users and
//! roles, grants and revokes roles and key permissions, logs users in and turns auth on and
//! off, while the KV clients act as users (each client one of them, with the token the
//! administrator last got for it). Every request is a recorded client op: the linearizability
//! checker judges each applied one (the auth changes, the tokens, and every write a user's
//! permissions decide) against the reference model's auth store (`model::auth`), with the
//! identity the entry carries.
//!
//! A login is what the server's Auth service does after it checked the password: a token
//! request tied to the auth revision of the member asked, which the simulated client reads
//! from that member as the driver's `PasswordHash` call would. Half the logins are for a JWT
//! (`--auth-token jwt,...`): the request carries no token, and the user then acts with the
//! identity the server's JWT would carry, tied to the revision checked at, which the store
//! may pass while the user still uses it (the crypto is the server's; the node's part is this).

use detcd::api::Credentials;
use detcd::proto::authpb::{permission::Type, Permission};
use detcd::proto::detcdpb::TokenRequest;
use detcd::proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest, AuthUserDeleteRequest,
    AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest,
    AuthenticateResponse,
};

use crate::checker::linearizability::RequestSummary;

use super::*;

/// The administrator's client id.
pub(super) const ADMIN: u64 = u64::MAX - 2;
const ROOT: &str = "root";
/// The users the KV clients act as (client `c` as `USERS[c % 3]`), and the roles.
const USERS: [&str; 3] = ["u0", "u1", "u2"];
const ROLES: [&str; 3] = ["r0", "r1", "r2"];
/// The administrator's setup steps (`World::setup_step`).
const SETUP_STEPS: usize = 19;

fn hash_of(user: &str) -> String {
    format!("bcrypt-of-{user}-password")
}

impl World {
    /// The administrator's next request, at a member that runs.
    pub(super) fn auth_turn(&mut self) {
        if !self.faults_on || self.busy_clients.contains_key(&ADMIN) {
            return;
        }
        let Some(member) = self.pick_running() else {
            return self.schedule_auth_turn();
        };
        let request = self.admin_request(member);
        let op = self.invoke(ADMIN, member, &request);
        let give_up = self.now + self.options.client_timeout_ns;
        self.schedule(give_up, Event::ClientGiveUp { op });
        let rid = self.track(member, op);
        self.log(member, || {
            format!("admin op {op}: {}", RequestSummary(&request))
        });
        let credentials = self.credentials_of(ROOT);
        self.input(
            member,
            Input::Client {
                id: rid,
                request,
                credentials,
            },
        );
    }

    /// The setup runs as a script does, a step right after the other, so that most of a
    /// history runs with users acting under their permissions; then the changes come slower.
    pub(super) fn schedule_auth_turn(&mut self) {
        let pause = match self.auth_setup_done < SETUP_STEPS {
            true => self.rng.between(MS / 10, MS),
            false => self.rng.between(MS, 100 * MS),
        };
        let at = self.now + pause;
        self.schedule(at, Event::AuthTurn);
    }

    /// The token the world holds for `user`, if any.
    pub(super) fn credentials_of(&self, user: &str) -> Option<Credentials> {
        self.auth_tokens.get(user).cloned()
    }

    /// What the liveness probes and the operator send: in runs with auth, root's certificate
    /// name (auth may be on, and root's token lost with a restart; root itself always exists
    /// while it is on).
    pub(super) fn root_credentials(&self) -> Option<Credentials> {
        self.options
            .auth
            .then(|| Credentials::CommonName(ROOT.to_string()))
    }

    /// The user a KV client acts as in runs with the auth workload.
    pub(super) fn client_user(&self, client: u64) -> String {
        USERS[(client % USERS.len() as u64) as usize].to_string()
    }

    /// The credentials a KV client sends: its user's, in runs with the auth workload.
    pub(super) fn client_credentials(&self, client: u64) -> Option<Credentials> {
        if !self.options.auth {
            return None;
        }
        self.credentials_of(&self.client_user(client))
    }

    fn admin_request(&mut self, member: MemberId) -> ClientRequest {
        let user = USERS[self.rng.below(USERS.len() as u64) as usize].to_string();
        let role = ROLES[self.rng.below(ROLES.len() as u64) as usize].to_string();
        // First the setup an operator makes (each step until it was answered, in order), so
        // that most of a history runs with auth on; then anything, at random.
        if let Some(step) = self.setup_step(member) {
            return step;
        }
        match self.rng.below(20) {
            0 => self.login(member, ROOT),
            1..=3 => self.login(member, &user),
            4 => ClientRequest::UserAdd(AuthUserAddRequest {
                name: if self.rng.chance(0.3) {
                    ROOT.into()
                } else {
                    user
                },
                hashed_password: hash_of(ROOT),
                ..AuthUserAddRequest::default()
            }),
            5 => ClientRequest::UserDelete(AuthUserDeleteRequest { name: user }),
            6 | 7 => ClientRequest::UserGrantRole(AuthUserGrantRoleRequest {
                user: if self.rng.chance(0.2) {
                    ROOT.into()
                } else {
                    user
                },
                role: if self.rng.chance(0.2) {
                    ROOT.into()
                } else {
                    role
                },
            }),
            8 => ClientRequest::UserRevokeRole(AuthUserRevokeRoleRequest { name: user, role }),
            9 => ClientRequest::RoleAdd(AuthRoleAddRequest { name: role }),
            10 => ClientRequest::RoleDelete(AuthRoleDeleteRequest { role }),
            11..=13 => {
                let perm = self.permission();
                ClientRequest::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                    name: role,
                    perm: Some(perm),
                })
            }
            14 => {
                let perm = self.permission();
                ClientRequest::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                    role,
                    key: perm.key,
                    range_end: perm.range_end,
                })
            }
            15 => ClientRequest::AuthEnable(AuthEnableRequest {}),
            16 => ClientRequest::AuthDisable(AuthDisableRequest {}),
            17 => ClientRequest::AuthStatus(AuthStatusRequest {}),
            18 => ClientRequest::UserGet(AuthUserGetRequest { name: user }),
            _ => match self.rng.below(3) {
                0 => ClientRequest::UserList(AuthUserListRequest {}),
                1 => ClientRequest::RoleList(AuthRoleListRequest {}),
                _ => ClientRequest::RoleGet(AuthRoleGetRequest { role }),
            },
        }
    }

    /// The setup's next request: root with the root role, the users, the roles granted to
    /// them with a permission each, logins, auth on. `None` once it is done.
    fn setup_step(&mut self, member: MemberId) -> Option<ClientRequest> {
        let step = self.auth_setup_done;
        let user = |i: usize| USERS[i % USERS.len()].to_string();
        let role = |i: usize| ROLES[i % ROLES.len()].to_string();
        Some(match step {
            0 => ClientRequest::UserAdd(AuthUserAddRequest {
                name: ROOT.into(),
                hashed_password: hash_of(ROOT),
                ..AuthUserAddRequest::default()
            }),
            1 => ClientRequest::UserGrantRole(AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            }),
            2..=4 => ClientRequest::UserAdd(AuthUserAddRequest {
                name: user(step),
                hashed_password: hash_of(&user(step)),
                ..AuthUserAddRequest::default()
            }),
            5..=7 => ClientRequest::RoleAdd(AuthRoleAddRequest { name: role(step) }),
            8..=10 => {
                let perm = self.permission();
                ClientRequest::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                    name: role(step),
                    perm: Some(perm),
                })
            }
            11..=13 => ClientRequest::UserGrantRole(AuthUserGrantRoleRequest {
                user: user(step),
                role: role(step + 1),
            }),
            14 => ClientRequest::AuthEnable(AuthEnableRequest {}),
            15 => self.login(member, ROOT),
            16..=18 => self.login(member, &user(step)),
            SETUP_STEPS.. => return None,
        })
    }

    /// A permission on the workload's keys: one key, a range of them, or every key from one.
    fn permission(&mut self) -> Permission {
        let key = self.key();
        let range_end = match self.rng.below(3) {
            0 => Bytes::new(),
            1 => Bytes::from_static(b"\0"),
            _ => self.key(),
        };
        let perm_type = [Type::Read, Type::Write, Type::Readwrite][self.rng.below(3) as usize];
        Permission {
            perm_type: perm_type as i32,
            key,
            range_end,
        }
    }

    /// A login, as the Auth service asks for one once the password matched the hash the
    /// member holds: tied to that member's auth revision.
    fn login(&mut self, member: MemberId, user: &str) -> ClientRequest {
        self.auth_logins += 1;
        let checked_revision = self.node(member).map_or(0, |n| n.state().auth().revision());
        let token = match self.rng.chance(0.5) {
            true => String::new(),
            false => format!("sim{}", self.auth_logins),
        };
        ClientRequest::Authenticate(TokenRequest {
            name: user.to_string(),
            token,
            checked_revision,
        })
    }

    /// After an administrator's op: a token it got is kept for its user; a setup step answered
    /// (whatever the answer) is done.
    pub(super) fn admin_done(&mut self, op: usize) {
        if !self.ops[op].outcome.is_indeterminate() {
            self.auth_setup_done += 1;
        }
        if let (
            ClientRequest::Authenticate(login),
            Outcome::Ok {
                response: ClientResponse::Authenticate(AuthenticateResponse { token, .. }),
                ..
            },
        ) = (&self.ops[op].request, &self.ops[op].outcome)
        {
            let credentials = match login.token.is_empty() {
                true => {
                    self.counters.coverage.hit("auth.jwt-login");
                    Credentials::Signed {
                        user: login.name.clone(),
                        revision: login.checked_revision,
                    }
                }
                false => {
                    self.counters.coverage.hit("auth.token-issued");
                    Credentials::Token(token.clone())
                }
            };
            self.auth_tokens.insert(login.name.clone(), credentials);
        }
        if let Outcome::Err { error, .. } = &self.ops[op].outcome {
            self.counters.coverage.hit(auth_probe(error));
        }
        self.schedule_auth_turn();
    }

    /// A user's look at an auth entry: its own or another user's, or a role it may hold.
    pub(super) fn user_auth_read(&mut self, client: u64) -> ClientRequest {
        let user = match self.rng.chance(0.5) {
            true => self.client_user(client),
            false => USERS[self.rng.below(USERS.len() as u64) as usize].to_string(),
        };
        let role = ROLES[self.rng.below(ROLES.len() as u64) as usize].to_string();
        match self.rng.chance(0.5) {
            true => ClientRequest::UserGet(AuthUserGetRequest { name: user }),
            false => ClientRequest::RoleGet(AuthRoleGetRequest { role }),
        }
    }

    /// After a KV client's op in a run with auth: what its answer says of the user's token.
    pub(super) fn user_op_done(&mut self, op: usize) {
        let error = match &self.ops[op].outcome {
            Outcome::Ok { .. } => {
                if matches!(
                    self.ops[op].request,
                    ClientRequest::UserGet(_) | ClientRequest::RoleGet(_)
                ) {
                    self.counters.coverage.hit("auth.user-reads-an-entry");
                }
                return;
            }
            Outcome::Err { error, .. } => error,
            _ => return,
        };
        self.counters.coverage.hit(auth_probe(error));
        if matches!(error, EtcdError::InvalidAuthToken) {
            let user = USERS[(self.ops[op].client % USERS.len() as u64) as usize];
            self.auth_tokens.remove(user);
        }
    }
}

/// The coverage probe an auth answer reaches, if any.
fn auth_probe(error: &EtcdError) -> &'static str {
    match error {
        EtcdError::PermissionDenied => "auth.permission-denied",
        EtcdError::UserEmpty => "auth.user-empty",
        EtcdError::AuthOldRevision => "auth.old-revision",
        EtcdError::InvalidAuthToken => "auth.invalid-token",
        _ => "auth.other-error",
    }
}
