//! Fuzzes the node's client API with what any client can send: each request is decoded from
//! arbitrary bytes as the gRPC layer decodes it, then served by a one-member cluster of the
//! deterministic harness (the real node, an in-memory disk). No request may panic the node,
//! break its invariants, go unanswered, or be answered with a response of another kind.
//!
//! Input layout: requests one after another, each a kind byte and a length byte followed by
//! that many bytes of the request's protobuf encoding. The kind's low six bits pick the RPC
//! (`rpc::decode`); with its high bit set, a second length-prefixed chunk before the request is
//! the `token` metadata the request carries. A chunk that does not decode is skipped: the gRPC
//! layer refuses it before the node sees it.
#![no_main]

use std::time::Duration;

use detcd::api::Credentials;
use detcd::node::ClientRequest;
use detcd_sim::harness::Cluster;
use libfuzzer_sys::fuzz_target;

mod rpc;

/// Requests per input: enough for a short session (users, roles, auth on, a token's use).
const REQUESTS_MAX: usize = 32;
/// How long a request may take in simulated time: a write's commit and apply on one member, or
/// a request the node refuses at once, take milliseconds.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Splits a length-prefixed chunk off the front of `data`.
fn chunk<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&len, rest) = data.split_first()?;
    let len = usize::from(len).min(rest.len());
    let (bytes, rest) = rest.split_at(len);
    *data = rest;
    Some(bytes)
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mut requests: Vec<(ClientRequest, Option<Credentials>)> = Vec::new();
    while requests.len() < REQUESTS_MAX {
        let Some((&kind, rest)) = data.split_first() else {
            break;
        };
        data = rest;
        let token = if kind & 0x80 != 0 {
            let Some(bytes) = chunk(&mut data) else { break };
            Some(Credentials::Token(
                String::from_utf8_lossy(bytes).into_owned(),
            ))
        } else {
            None
        };
        let Some(bytes) = chunk(&mut data) else { break };
        if let Some(request) = rpc::decode_for_one_member(kind & 0x3f, bytes) {
            requests.push((request, token));
        }
    }
    if requests.is_empty() {
        return;
    }

    let mut cluster = Cluster::new(1, 0, |config| config);
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("one member elects itself");
    for (request, credentials) in requests {
        let kind = request.name();
        let id = cluster.submit_as(leader, request, credentials);
        let answer = cluster.wait(id, ANSWER_WITHIN);
        match answer {
            Some(Ok(response)) => assert_eq!(response.name(), kind, "answered in kind"),
            Some(Err(_)) => {}
            None => panic!("{kind} unanswered within {ANSWER_WITHIN:?}"),
        }
        assert!(
            cluster.members[&leader].stopped.is_none(),
            "the member stopped: {:?}",
            cluster.members[&leader].stopped
        );
    }
});
