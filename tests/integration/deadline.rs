//! A request whose client deadline passes while the cluster cannot answer (here: a 2-member
//! cluster with one member killed, so no quorum) gets etcd's answer, not tonic's CANCELLED
//! "Timeout expired": a put `etcdserver: request timed out` (Unavailable), a linearizable range
//! Unknown `context deadline exceeded`. The deadline is a tonic client's `set_timeout`; the
//! client also gives up by itself at the deadline (CANCELLED "Timeout expired"), so an answer
//! must come before it. Real etcd 3.4 runs the same scenario when installed, and its answers
//! are printed beside detcd's: etcd answers at the deadline itself, so it races with the
//! client's timer (its range answer was seen either way, its put answer only as the client's).

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, etcd_available, kv_client, start_all, Flavor};
use detcd::proto::etcdserverpb::{PutRequest, RangeRequest};

/// A put and a linearizable read, each with a 1 s deadline, on a member without quorum:
/// (code, message, seconds taken) of each answer.
fn without_quorum(flavor: Flavor) -> Vec<(tonic::Code, String, f64)> {
    let mut members = cluster(flavor, 2, "deadline", &[]);
    start_all(&mut members);
    members[1].kill();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut kv = kv_client(&members[0]).await;
        let mut answers = Vec::new();
        for put in [true, false] {
            let started = Instant::now();
            let status = if put {
                let mut request = tonic::Request::new(PutRequest {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(1));
                kv.put(request).await.expect_err("no quorum")
            } else {
                let mut request = tonic::Request::new(RangeRequest {
                    key: Bytes::from_static(b"k"),
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(1));
                kv.range(request).await.expect_err("no quorum")
            };
            let took = started.elapsed().as_secs_f64();
            answers.push((status.code(), status.message().to_string(), took));
        }
        answers
    })
}

#[test]
fn a_passed_client_deadline_is_answered_with_etcds_timeout_error() {
    let detcd = without_quorum(Flavor::Detcd);
    if etcd_available() {
        eprintln!("etcd 3.4:  {:?}", without_quorum(Flavor::Etcd));
    }
    eprintln!("detcd:     {detcd:?}");
    let expected = [
        (tonic::Code::Unavailable, "etcdserver: request timed out"),
        (tonic::Code::Unknown, "context deadline exceeded"),
    ];
    for ((code, message, took), wanted) in detcd.into_iter().zip(expected) {
        assert_eq!((code, message.as_str()), wanted);
        assert!((0.5..1.0).contains(&took), "answered after {took:.3} s");
    }
}
