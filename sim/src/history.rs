//! What the simulator's clients saw, and what the members applied: the inputs of the checkers.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::detcdpb::{internal_request, InternalRequest};
use prost::Message as _;

/// Simulated global time in nanoseconds (the checkers' real-time order; members' clocks may be
/// skewed, this one is not).
pub type SimNanos = u64;

/// One client operation from invocation to outcome.
#[derive(Clone, Debug)]
pub struct Op {
    /// Unique within a history.
    pub id: u64,
    pub client: u64,
    /// The member the client sent it to.
    pub member: MemberId,
    /// Which run of that member's process it was sent to (a restart begins another).
    pub incarnation: u64,
    pub request: ClientRequest,
    pub invoked_at: SimNanos,
    pub outcome: Outcome,
    /// The log entry this request became, as the member reported when proposing it: `(origin,
    /// proposal id)`. None if it was never proposed (a read, or refused before proposing).
    pub proposal: Option<(MemberId, u64)>,
    /// The user whose token the request carried (the auth workload's clients).
    pub acting_as: Option<String>,
    /// The auth revision a JWT login tied that identity to, when the token was a JWT (the
    /// client port passes the node the identity it carries: `Credentials::Signed`).
    pub signed_at: Option<u64>,
}

// Most outcomes are answers: boxing them would cost an allocation per op to save the
// difference on the few errors.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Answered with a response.
    Ok {
        response: ClientResponse,
        returned_at: SimNanos,
    },
    /// Answered with an error. Errors with gRPC code Unavailable (timeouts, no leader, server
    /// stopped) leave the outcome unknown, exactly as for a real client; the others are definite.
    Err {
        error: EtcdError,
        returned_at: SimNanos,
    },
    /// No answer before the client gave up (or the member crashed): may or may not have happened.
    Unknown,
}

impl Outcome {
    pub fn returned_at(&self) -> Option<SimNanos> {
        match self {
            Outcome::Ok { returned_at, .. } | Outcome::Err { returned_at, .. } => {
                Some(*returned_at)
            }
            Outcome::Unknown => None,
        }
    }

    /// True when the client cannot know whether the operation took effect.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Outcome::Ok { .. } => false,
            Outcome::Err { error, .. } => error.code() == detcd::error::Code::Unavailable,
            Outcome::Unknown => true,
        }
    }
}

/// One applied log entry, as the members reported it (`Output::Applied`), with its request
/// decoded once for every checker that reads it.
#[derive(Clone, Debug)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    /// Private: the decoded request must follow it.
    data: Bytes,
    /// None for a leader's empty entry and for data that is not a request (a configuration
    /// change); shared, as every checker takes its own copy of the log.
    request: Option<Arc<InternalRequest>>,
}

impl AppliedEntry {
    pub fn new(index: u64, term: u64, data: Bytes) -> AppliedEntry {
        let request = if data.is_empty() {
            None
        } else {
            InternalRequest::decode(data.as_ref()).ok().map(Arc::new)
        };
        AppliedEntry {
            index,
            term,
            data,
            request,
        }
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn request(&self) -> Option<&InternalRequest> {
        self.request.as_deref()
    }

    /// The operation the entry's request carries.
    pub fn op(&self) -> Option<&internal_request::Op> {
        self.request()?.op.as_ref()
    }

    /// Who the entry's request is from, as the proposing member identified them.
    pub fn caller(&self) -> detcd::auth::AuthInfo {
        self.request()
            .map_or_else(Default::default, |r| detcd::auth::AuthInfo {
                user: r.auth_user.clone(),
                revision: r.auth_revision,
            })
    }
}

/// The request follows from the bytes.
impl PartialEq for AppliedEntry {
    fn eq(&self, other: &AppliedEntry) -> bool {
        (self.index, self.term, &self.data) == (other.index, other.term, &other.data)
    }
}

impl Eq for AppliedEntry {}

/// What the simulator observed of time, for checking the lease guarantees on true time.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    /// When some member first applied each log index.
    pub applied_at: BTreeMap<u64, SimNanos>,
    /// When each term's leader was first seen leading, and who it was.
    pub leader_since: BTreeMap<u64, (MemberId, SimNanos)>,
    /// When each term's leader started its lease clocks (once it applied every entry of the
    /// terms before).
    pub lease_clocks_since: BTreeMap<u64, SimNanos>,
    /// When each member (re)started, in order.
    pub started_at: BTreeMap<MemberId, Vec<SimNanos>>,
    /// (when, member, how far its clock jumped ahead in ns).
    pub clock_jumps: Vec<(SimNanos, MemberId, u64)>,
    /// When each member was paused, and until when (`SimNanos::MAX` while it still is): a
    /// paused member handles what reached it only once it resumes.
    pub pauses: BTreeMap<MemberId, Vec<(SimNanos, SimNanos)>>,
    /// The bound on every member's clock rate error.
    pub drift_ppm_max: u64,
    pub checkpoint_interval_ns: u64,
    /// How long a member keeps a client's request before answering it timed out.
    pub request_timeout_ns: u64,
    /// The longest a message may take on the network, clogging included.
    pub message_delay_max_ns: u64,
    /// When the liveness phase healed every fault.
    pub healed_at: SimNanos,
    /// When the lease phase began, and the leases alive then (their clients stopped renewing).
    pub lease_phase: Option<(SimNanos, Vec<i64>)>,
    /// When the run ended.
    pub end: SimNanos,
}

impl Timing {
    /// When `member` handles what reached it at `at`: at once, or when the pause it was in
    /// ended (what a pause held until a crash or the end of the run was never handled).
    pub fn handled_by(&self, member: MemberId, at: SimNanos) -> SimNanos {
        self.pauses
            .get(&member)
            .into_iter()
            .flatten()
            .filter(|(from, until)| *from <= at && at < *until && *until != SimNanos::MAX)
            .map(|(_, until)| *until)
            .fold(at, SimNanos::max)
    }

    /// The latest any member handles what reached it at `at` (for a message to whichever
    /// member leads then).
    pub fn handled_by_any(&self, at: SimNanos) -> SimNanos {
        self.pauses
            .keys()
            .map(|member| self.handled_by(*member, at))
            .fold(at, SimNanos::max)
    }
}

/// One watch stream as its client saw it: where it was opened, every request sent on it and
/// every response read from it, in order. A watch client keeps logical watches that outlive
/// streams: each create names the logical watch it (re)creates.
#[derive(Clone, Debug)]
pub struct WatchStreamLog {
    pub client: u64,
    pub member: MemberId,
    pub opened_at: SimNanos,
    /// Requests in the order sent; a create carries the index of its logical watch.
    pub requests: Vec<WatchRequestLog>,
    /// Responses in the order read.
    pub responses: Vec<(SimNanos, detcd::proto::etcdserverpb::WatchResponse)>,
}

#[derive(Clone, Debug)]
pub enum WatchRequestLog {
    Create {
        logical: usize,
        request: detcd::proto::etcdserverpb::WatchCreateRequest,
    },
    Cancel {
        watch_id: i64,
    },
    Progress,
}

/// One request of the Lock or Election service, as its client saw it.
#[derive(Clone, Debug)]
pub struct RecipeLog {
    pub client: u64,
    /// The member that ran the recipe.
    pub member: MemberId,
    pub request: RecipeRequest,
    pub invoked_at: SimNanos,
    pub outcome: RecipeOutcome,
    /// What an Observe stream reported, in order.
    pub observed: Vec<detcd::proto::v3electionpb::LeaderResponse>,
}

#[derive(Clone, Debug)]
pub enum RecipeRequest {
    Lock { name: Bytes, lease: i64 },
    Unlock { key: Bytes },
    Campaign { name: Bytes, lease: i64 },
    Proclaim { key: Bytes },
    Resign { key: Bytes },
    Leader { name: Bytes },
    Observe { name: Bytes },
}

#[derive(Clone, Debug)]
pub enum RecipeOutcome {
    /// No answer (yet): the client gave up, or the member crashed.
    Unknown,
    /// Told it holds the lock with `key`, as of `revision` (the answer's header).
    Locked { key: Bytes, revision: i64 },
    /// Told it leads with `key` (create revision `rev`), seen leading at `won_at`.
    Won { key: Bytes, rev: i64, won_at: i64 },
    /// Told who leads as of `revision`.
    Leader {
        revision: i64,
        kv: detcd::proto::mvccpb::KeyValue,
    },
    /// Another success, with nothing to check beyond its requests.
    Ok { returned_at: SimNanos },
    Failed {
        error: String,
        returned_at: SimNanos,
    },
}
