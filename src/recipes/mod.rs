//! etcd's concurrency recipes as a member serves them: the Lock service (`v3lockpb`) and the
//! Election service (`v3electionpb`).
//!
//! As in etcd, they are not node logic: each is a client of the member's public API (KV, Lease,
//! Watch), running the algorithm of clientv3's `concurrency` package. Here each request is a
//! pure step machine, a [`Recipe`]: it asks for a KV or lease request ([`Step::Call`]) or for
//! watchers ([`Step::Watch`]), and is handed the answers. The server drives it with the driver
//! and its watch task (`server::recipes`); the simulator drives the very same machines against
//! simulated members and judges what their clients were told (`sim/src/checker/locks.rs`). A
//! waiting request holds no thread: it is a watcher in the member's watch hub.
//!
//! The keys follow etcd's scheme, so detcd's recipes and clientv3's (`etcdctl lock`, `elect`)
//! contend for the same locks: a contender's key is `<name>/<lease id in hex>`, attached to its
//! lease; the owner is the key with the lowest create revision under `<name>/`.

mod election;
mod lock;
mod wait;

pub use election::{Campaign, Leader, Observe, Proclaim, Resign};
pub use lock::{Lock, Unlock};

use bytes::Bytes;
use thiserror::Error;

use crate::api::{ClientRequest, ClientResponse};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{
    compare, request_op, Compare, RangeRequest, RangeResponse, RequestOp, WatchCreateRequest,
    WatchResponse,
};

/// What a recipe asks its driver to do next.
#[derive(Debug)]
pub enum Step<A> {
    /// Send this request to the member, as a client would, and hand its answer to
    /// [`Recipe::on_reply`].
    Call(ClientRequest),
    /// Drop the watchers it had, create these on a fresh stream of the member, and hand every
    /// response to [`Recipe::on_watch`].
    Watch(Vec<WatchCreateRequest>),
    /// Nothing to do until the next watch response.
    Wait,
    /// Give this answer to the client and go on with the next step (a stream: Observe).
    Emit(A, Box<Step<A>>),
    /// The final answer.
    Done(Result<A, RecipeError>),
}

impl<A> Step<A> {
    pub fn map<B>(self, f: impl Fn(A) -> B + Copy) -> Step<B> {
        match self {
            Step::Call(request) => Step::Call(request),
            Step::Watch(creates) => Step::Watch(creates),
            Step::Wait => Step::Wait,
            Step::Emit(answer, then) => Step::Emit(f(answer), Box::new(then.map(f))),
            Step::Done(result) => Step::Done(result.map(f)),
        }
    }
}

/// One request of the Lock or Election service, as a step machine.
pub trait Recipe {
    type Answer;
    /// The first step.
    fn start(&mut self) -> Step<Self::Answer>;
    /// The answer to the last [`Step::Call`].
    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<Self::Answer>;
    /// A response of the watchers of the last [`Step::Watch`]; a canceled one (compaction, or
    /// the stream ended) the recipe recovers from by reading again.
    fn on_watch(&mut self, response: &WatchResponse) -> Step<Self::Answer>;
    /// What to send, fire and forget, if the client goes away before the final answer (etcd
    /// deletes a waiting contender's key, or resigns a candidacy).
    fn abandon(&self) -> Option<ClientRequest>;
}

/// How a recipe fails. The gRPC services answer every one with code Unknown and the message,
/// as etcd's do: its recipes return plain Go errors, which gRPC reports that way.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum RecipeError {
    /// A request of the recipe failed.
    #[error("{0}")]
    Etcd(EtcdError),
    /// The contender's key went away (its lease expired or was revoked) before it won.
    #[error("session expired")]
    SessionExpired,
    #[error("election: no leader")]
    NoLeader,
    #[error("election: not leader")]
    NotLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
}

/// Deliberately wrong behaviours, for showing that the simulator catches them; all off in the
/// server.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecipeBugs {
    /// A lock waiter takes the lock as soon as the one key it watches is deleted, without
    /// reading again whether older contenders remain.
    pub lock_skip_recheck: bool,
    /// Leader answers with the newest candidate instead of the oldest.
    pub leader_newest: bool,
}

/// The TTL of the lease a recipe grants itself when asked with lease 0 (clientv3's default
/// session TTL, which etcd's services use then).
const SESSION_TTL_SECONDS: i64 = 60;

/// `<prefix><lease id in hex>`: a contender's key.
fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(key)
}

/// `<name>/`: where a lock's or an election's contenders put their keys.
fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// The end of the range of every key starting with `prefix` (clientv3's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

/// The key under `prefix` with the lowest create revision (clientv3's `WithFirstCreate`).
fn first_created(prefix: &Bytes) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

fn get(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

fn create_revision_is(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

fn op(request: impl Into<request_op::Request>) -> RequestOp {
    RequestOp {
        request: Some(request.into()),
    }
}

impl From<RangeRequest> for request_op::Request {
    fn from(request: RangeRequest) -> Self {
        request_op::Request::RequestRange(request)
    }
}

impl From<crate::proto::etcdserverpb::PutRequest> for request_op::Request {
    fn from(request: crate::proto::etcdserverpb::PutRequest) -> Self {
        request_op::Request::RequestPut(request)
    }
}

impl From<crate::proto::etcdserverpb::DeleteRangeRequest> for request_op::Request {
    fn from(request: crate::proto::etcdserverpb::DeleteRangeRequest) -> Self {
        request_op::Request::RequestDeleteRange(request)
    }
}

/// The range response inside a txn's `index`th response, if it is one.
fn txn_range(
    response: &crate::proto::etcdserverpb::TxnResponse,
    index: usize,
) -> Option<&RangeResponse> {
    use crate::proto::etcdserverpb::response_op::Response;
    match response.responses.get(index)?.response.as_ref()? {
        Response::ResponseRange(range) => Some(range),
        _ => None,
    }
}

/// A reply of the kind the recipe asked for, or the error to end with.
fn expect<R: crate::api::Rpc>(
    reply: Result<ClientResponse, EtcdError>,
) -> Result<R::Response, RecipeError> {
    let response = reply.map_err(RecipeError::Etcd)?;
    let name = response.name();
    Ok(R::response(response)
        .unwrap_or_else(|| panic!("the member answers each request with its kind, not {name}")))
}

#[cfg(test)]
mod tests;
