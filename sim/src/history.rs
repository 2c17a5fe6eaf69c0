//! What the simulator's clients saw, and what the members applied: the inputs of the checkers.

use bytes::Bytes;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, MemberId};

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
    pub request: ClientRequest,
    pub invoked_at: SimNanos,
    pub outcome: Outcome,
    /// The log entry this request became, as the member reported when proposing it: `(origin,
    /// proposal id)`. None if it was never proposed (a read, or refused before proposing).
    pub proposal: Option<(MemberId, u64)>,
}

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

/// One applied log entry, as the members reported it (`Output::Applied`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}
