//! KV sessions judged against the reference model: Range, Put, DeleteRange, Txn and Compact
//! requests (`kv_shapes`) go one at a time to a one-member cluster of the harness and to
//! `model`, which restates etcd's semantics with linear scans and shares no code with the core;
//! every answer (response or error, headers reduced to their revision) must be the model's.
//! The `kv_model` fuzz target runs sessions libFuzzer builds; `tests/kv_sessions.rs` runs
//! sessions built from seeded random bytes.

use std::time::Duration;

use arbitrary::Unstructured;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, Config};
use detcd::proto::detcdpb::internal_request::Op;

use crate::checker::linearizability::normalized_answer;
use crate::harness::Cluster;
use crate::kv_shapes;
use crate::model::{api_checks, Applied, Model};

/// Requests in one session.
pub const REQUESTS_MAX: usize = 32;
/// etcd's `--max-txn-ops` default, which the harness's members keep.
const TXN_OPS_MAX: usize = 128;
/// A write commits and applies on one member in milliseconds of simulated time.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

type Answer = Result<ClientResponse, EtcdError>;

/// The requests `data` builds, up to `REQUESTS_MAX`.
pub fn session(data: &[u8]) -> Vec<ClientRequest> {
    let mut u = Unstructured::new(data);
    let mut requests = Vec::new();
    while requests.len() < REQUESTS_MAX && !u.is_empty() {
        match kv_shapes::request(&mut u) {
            Ok(request) => requests.extend(request),
            Err(_) => break,
        }
    }
    requests
}

/// Serves `requests` in order on a fresh one-member cluster; the first answer that is not the
/// model's, described.
pub fn judge(requests: &[ClientRequest]) -> Result<(), String> {
    judge_on(requests, |config| config)
}

/// `judge` on a member built from `configure(config)` (an injected bug, say).
pub fn judge_on(
    requests: &[ClientRequest],
    configure: impl Fn(Config) -> Config,
) -> Result<(), String> {
    let mut cluster = Cluster::new(1, 0, configure);
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .ok_or("a member alone elects itself")?;
    let mut model = Model::default();
    for request in requests {
        let want = normalized_answer(&expected(&mut model, request));
        let id = cluster.submit(leader, request.clone());
        let got = cluster
            .wait(id, ANSWER_WITHIN)
            .ok_or_else(|| format!("{request:?} unanswered"))?;
        let got = normalized_answer(&got);
        if got != want {
            return Err(format!(
                "the answer to {request:?}\n  was {got:?}\n  the model's {want:?}"
            ));
        }
    }
    Ok(())
}

/// The model's answer to `request`; a write advances its state.
fn expected(model: &mut Model, request: &ClientRequest) -> Answer {
    let write = |model: &mut Model, op: Op| match model.apply(&op) {
        Applied::Answered(Some(answer)) => *answer,
        other => unreachable!("the model answers every KV write: {other:?}"),
    };
    match request {
        ClientRequest::Range(r) => {
            api_checks::check_range(r)?;
            model.kv().range(r).map(Into::into)
        }
        ClientRequest::Put(p) => {
            api_checks::check_put(p)?;
            write(model, Op::Put(p.clone()))
        }
        ClientRequest::DeleteRange(d) => {
            api_checks::check_delete_range(d)?;
            write(model, Op::DeleteRange(d.clone()))
        }
        ClientRequest::Txn(t) => {
            api_checks::check_txn(t, TXN_OPS_MAX)?;
            write(model, Op::Txn(t.clone()))
        }
        ClientRequest::Compact(c) => write(model, Op::Compaction(*c)),
        other => unreachable!("kv_shapes builds no {}", other.name()),
    }
}
