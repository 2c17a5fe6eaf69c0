//! The Lease API through a gRPC client (detcd's generated tonic clients), against a detcd member.
//! Every check runs against a real etcd member too (when etcd is installed), with the very same
//! assertions: the codes, messages and fields asserted here are etcd's.
//!
//! Covered: LeaseGrant (explicit and generated ids, existing id, TTL bounds, the minimum TTL),
//! LeaseRevoke and LeaseTimeToLive of unknown leases (full headers), LeaseLeases order, a revoke
//! deleting its keys at one revision, Put with unknown leases and `ignore_lease`, Txn compares on
//! LEASE, one LeaseKeepAlive stream carrying several leases, and a keepalive flood on one stream.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, etcd_available, kv_client, lease_client, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::lease_client::LeaseClient;
use detcd::proto::etcdserverpb::{
    request_op, Compare, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

type Leases = LeaseClient<Channel>;
type Kv = KvClient<Channel>;

const UNKNOWN: i64 = 0x9999;
const NOT_FOUND: (Code, &str) = (Code::NotFound, "etcdserver: requested lease not found");

/// Every Lease answer, even for an unknown lease, carries all four header fields.
fn full_header(header: Option<ResponseHeader>, what: &str) -> ResponseHeader {
    let h = header.unwrap_or_else(|| panic!("{what}: no header"));
    assert!(
        h.cluster_id != 0 && h.member_id != 0 && h.revision != 0 && h.raft_term != 0,
        "{what}: header not filled in: {h:?}"
    );
    h
}

fn error<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("an error");
    (status.code(), status.message().to_string())
}

fn is(expected: (Code, &str)) -> (Code, String) {
    (expected.0, expected.1.to_string())
}

async fn grant(leases: &mut Leases, ttl: i64, id: i64) -> LeaseGrantResponse {
    leases
        .lease_grant(LeaseGrantRequest { ttl, id })
        .await
        .unwrap_or_else(|e| panic!("grant ttl {ttl} id {id}: {e}"))
        .into_inner()
}

async fn time_to_live(leases: &mut Leases, id: i64, keys: bool) -> LeaseTimeToLiveResponse {
    leases
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
        .await
        .unwrap_or_else(|e| panic!("timetolive {id}: {e}"))
        .into_inner()
}

fn put_req(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        lease,
        ..Default::default()
    }
}

async fn put(kv: &mut Kv, key: &str, value: &str, lease: i64) -> i64 {
    kv.put(put_req(key, value, lease))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .into_inner()
        .header
        .unwrap()
        .revision
}

/// (header revision, the key's lease if it exists)
async fn get(kv: &mut Kv, key: &str) -> (i64, Option<i64>) {
    let resp = kv
        .range(RangeRequest {
            key: Bytes::from(key.to_string()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .into_inner();
    (
        resp.header.unwrap().revision,
        resp.kvs.first().map(|kv| kv.lease),
    )
}

async fn clients(member: &Member) -> (Leases, Kv) {
    (lease_client(member).await, kv_client(member).await)
}

/// The unary calls: grant, revoke, timetolive, leases, and puts naming leases.
async fn unary_calls(member: &Member) {
    let (mut leases, mut kv) = clients(member).await;

    let generated = grant(&mut leases, 10, 0).await;
    full_header(generated.header, "grant");
    assert!(generated.id > 0, "{generated:?}");
    assert_eq!((generated.ttl, generated.error.as_str()), (10, ""));

    let explicit = grant(&mut leases, 10, 0x1234).await;
    assert_eq!((explicit.id, explicit.ttl), (0x1234, 10));
    assert_eq!(
        error(
            leases
                .lease_grant(LeaseGrantRequest {
                    ttl: 20,
                    id: 0x1234
                })
                .await
        ),
        is((Code::FailedPrecondition, "etcdserver: lease already exists"))
    );
    let too_large = (Code::OutOfRange, "etcdserver: too large lease TTL");
    assert_eq!(
        error(
            leases
                .lease_grant(LeaseGrantRequest {
                    ttl: 9_000_000_001,
                    id: 0
                })
                .await
        ),
        is(too_large)
    );
    // The TTL is checked before the id.
    assert_eq!(
        error(
            leases
                .lease_grant(LeaseGrantRequest {
                    ttl: 9_000_000_001,
                    id: 0x1234
                })
                .await
        ),
        is(too_large)
    );
    assert_eq!(
        grant(&mut leases, 9_000_000_000, 0).await.ttl,
        9_000_000_000
    );
    // The minimum TTL (single member, default election timeout) is 2 s.
    for (asked, granted) in [(0, 2), (1, 2), (-5, 2), (2, 2), (3, 3)] {
        assert_eq!(
            grant(&mut leases, asked, 0).await.ttl,
            granted,
            "asked {asked}"
        );
    }
    // Negative ids are ids like any other.
    let negative = grant(&mut leases, 10, -5).await;
    assert_eq!((negative.id, negative.ttl), (-5, 10));
    assert_eq!(time_to_live(&mut leases, -5, false).await.granted_ttl, 10);
    full_header(
        leases
            .lease_revoke(LeaseRevokeRequest { id: -5 })
            .await
            .expect("revoking a negative id")
            .into_inner()
            .header,
        "revoke -5",
    );

    // Unknown leases.
    for id in [UNKNOWN, 0] {
        assert_eq!(
            error(leases.lease_revoke(LeaseRevokeRequest { id }).await),
            is(NOT_FOUND),
            "revoke {id}"
        );
        for keys in [false, true] {
            let r = time_to_live(&mut leases, id, keys).await;
            full_header(r.header, "timetolive of an unknown lease");
            assert_eq!(
                (r.id, r.ttl, r.granted_ttl, r.keys.len()),
                (id, -1, 0, 0),
                "timetolive {id} keys {keys}"
            );
        }
    }

    // A known lease: the remaining TTL is truncated to whole seconds.
    let r = time_to_live(&mut leases, 0x1234, true).await;
    full_header(r.header, "timetolive");
    assert_eq!((r.id, r.granted_ttl, r.keys.len()), (0x1234, 10, 0));
    assert!((1..=9).contains(&r.ttl), "remaining {}", r.ttl);

    // Puts naming leases.
    assert_eq!(
        error(kv.put(put_req("pa", "v", UNKNOWN)).await),
        is(NOT_FOUND)
    );
    let both = PutRequest {
        ignore_lease: true,
        ..put_req("pa", "v", 0x1234)
    };
    assert_eq!(
        error(kv.put(both).await),
        is((Code::InvalidArgument, "etcdserver: lease is provided"))
    );
    let missing = PutRequest {
        ignore_lease: true,
        ..put_req("nokey", "v", 0)
    };
    assert_eq!(
        error(kv.put(missing).await),
        is((Code::InvalidArgument, "etcdserver: key not found"))
    );
    put(&mut kv, "pa", "v", 0x1234).await;
    let keep = PutRequest {
        ignore_lease: true,
        prev_kv: true,
        ..put_req("pa", "v2", 0)
    };
    let prev = kv.put(keep).await.unwrap().into_inner().prev_kv.unwrap();
    assert_eq!(prev.lease, 0x1234);
    assert_eq!(
        get(&mut kv, "pa").await.1,
        Some(0x1234),
        "ignore_lease keeps it"
    );
    assert_eq!(
        time_to_live(&mut leases, 0x1234, true).await.keys,
        vec![Bytes::from("pa")]
    );
    assert!(time_to_live(&mut leases, 0x1234, false)
        .await
        .keys
        .is_empty());
    put(&mut kv, "pb", "v", 0x1234).await;
    let mut keys = time_to_live(&mut leases, 0x1234, true).await.keys;
    // etcd lists them in Go map order (random); only the set is compared.
    keys.sort();
    assert_eq!(keys, vec![Bytes::from("pa"), Bytes::from("pb")]);
    // A put without a lease detaches the key.
    put(&mut kv, "pc", "v", 0x1234).await;
    put(&mut kv, "pc", "plain", 0).await;
    assert_eq!(get(&mut kv, "pc").await.1, Some(0));
    let mut keys = time_to_live(&mut leases, 0x1234, true).await.keys;
    keys.sort();
    assert_eq!(keys, vec![Bytes::from("pa"), Bytes::from("pb")]);

    // LeaseLeases: ordered by expiry, not by grant order or id.
    for (ttl, id) in [(300, 0x300), (100, 0x100), (200, 0x200)] {
        grant(&mut leases, ttl, id).await;
    }
    let listed = leases
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    full_header(listed.header, "leases");
    let ids: Vec<i64> = listed.leases.iter().map(|l| l.id).collect();
    let at = |id: i64| {
        ids.iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("{id:#x} not listed in {ids:?}"))
    };
    assert!(
        at(0x1234) < at(0x100) && at(0x100) < at(0x200) && at(0x200) < at(0x300),
        "{ids:?}"
    );
    assert!(ids.contains(&generated.id), "{ids:?}");

    // Revoking a lease deletes its keys at exactly one revision, and nothing else.
    let (before, _) = get(&mut kv, "pa").await;
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: 0x1234 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full_header(revoked.header, "revoke").revision, before + 1);
    assert_eq!(get(&mut kv, "pa").await, (before + 1, None));
    assert_eq!(get(&mut kv, "pb").await, (before + 1, None));
    assert_eq!(get(&mut kv, "pc").await.1, Some(0), "pc was detached");
    // A lease without keys: the revision does not move.
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: 0x300 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.header.unwrap().revision, before + 1);
    assert_eq!(
        error(leases.lease_revoke(LeaseRevokeRequest { id: 0x1234 }).await),
        is(NOT_FOUND)
    );
    let gone = time_to_live(&mut leases, 0x1234, true).await;
    assert_eq!((gone.ttl, gone.granted_ttl), (-1, 0));
    // A revoked id can be granted again, as a new lease without keys.
    let again = grant(&mut leases, 30, 0x1234).await;
    assert_eq!((again.id, again.ttl), (0x1234, 30));
    let r = time_to_live(&mut leases, 0x1234, true).await;
    assert_eq!((r.granted_ttl, r.keys.len()), (30, 0));

    // A put with another lease moves the key from one lease to the other.
    grant(&mut leases, 30, 0x5678).await;
    put(&mut kv, "mv", "v", 0x1234).await;
    put(&mut kv, "mv", "v", 0x5678).await;
    assert!(time_to_live(&mut leases, 0x1234, true)
        .await
        .keys
        .is_empty());
    assert_eq!(
        time_to_live(&mut leases, 0x5678, true).await.keys,
        vec![Bytes::from("mv")]
    );
    // Revoking the old lease leaves the key alone: nothing changes, not even the revision.
    let (before, _) = get(&mut kv, "mv").await;
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: 0x1234 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.header.unwrap().revision, before);
    assert_eq!(get(&mut kv, "mv").await, (before, Some(0x5678)));

    // Many keys on one lease go at one revision.
    for i in 0..150 {
        put(&mut kv, &format!("many/{i:03}"), "v", 0x5678).await;
    }
    assert_eq!(
        time_to_live(&mut leases, 0x5678, true).await.keys.len(),
        151
    );
    let (before, _) = get(&mut kv, "mv").await;
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: 0x5678 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.header.unwrap().revision, before + 1);
    let left = kv
        .range(RangeRequest {
            key: Bytes::from("many/"),
            range_end: Bytes::from("many0"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((left.count, left.header.unwrap().revision), (0, before + 1));
    assert_eq!(get(&mut kv, "mv").await, (before + 1, None));
}

fn keep_alive(id: i64) -> LeaseKeepAliveRequest {
    LeaseKeepAliveRequest { id }
}

/// The next keepalive answer (`None`: the stream ended), within 10 s.
async fn next(
    answers: &mut tonic::Streaming<LeaseKeepAliveResponse>,
) -> Option<LeaseKeepAliveResponse> {
    tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("a keepalive answer in time")
        .expect("no stream error")
}

/// One keepalive stream carrying several leases, unknown ones included: each request gets its
/// answer, in order, and the stream stays open.
async fn keep_alive_stream(member: &Member) {
    let (mut leases, _) = clients(member).await;
    let a = grant(&mut leases, 10, 0xa1).await.id;
    let b = grant(&mut leases, 20, 0xb1).await.id;
    let (tx, rx) = mpsc::channel(16);
    for id in [a, b, UNKNOWN, 0, a, b] {
        tx.send(keep_alive(id)).await.unwrap();
    }
    let mut answers = leases
        .clone()
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    for (id, ttl) in [(a, 10), (b, 20), (UNKNOWN, 0), (0, 0), (a, 10), (b, 20)] {
        let r = next(&mut answers).await.expect("an answer, not the end");
        full_header(r.header, "keepalive");
        assert_eq!((r.id, r.ttl), (id, ttl));
    }
    // Revoked meanwhile: TTL 0, and the stream still serves the other lease.
    leases
        .lease_revoke(LeaseRevokeRequest { id: b })
        .await
        .unwrap();
    for id in [b, a] {
        tx.send(keep_alive(id)).await.unwrap();
    }
    for (id, ttl) in [(b, 0), (a, 10)] {
        let r = next(&mut answers).await.expect("an answer, not the end");
        full_header(r.header, "keepalive");
        assert_eq!((r.id, r.ttl), (id, ttl));
    }
    // The renewal took: the full TTL again (truncated).
    assert!(time_to_live(&mut leases, a, false).await.ttl >= 8);
    drop(tx);
    assert!(
        next(&mut answers).await.is_none(),
        "the stream ends when the client closes"
    );
}

fn lease_is(key: &str, result: CompareResult, lease: i64) -> Compare {
    Compare {
        result: result as i32,
        target: CompareTarget::Lease as i32,
        key: Bytes::from(key.to_string()),
        target_union: Some(TargetUnion::Lease(lease)),
        ..Default::default()
    }
}

fn put_op(key: &str, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put_req(key, "t", lease))),
    }
}

async fn txn(kv: &mut Kv, compare: Vec<Compare>) -> bool {
    let what = format!("{compare:?}");
    kv.txn(TxnRequest {
        compare,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("txn {what}: {e}"))
    .into_inner()
    .succeeded
}

/// Txn compares on LEASE: a missing key compares as lease 0.
async fn txn_lease_compares(member: &Member) {
    let (mut leases, mut kv) = clients(member).await;
    let l = grant(&mut leases, 100, 0x7001).await.id;
    put(&mut kv, "ta", "v", l).await;
    put(&mut kv, "tab", "v", l).await;
    use CompareResult::{Equal, Greater, Less, NotEqual};
    for (compare, expected) in [
        (lease_is("ta", Equal, l), true),
        (lease_is("ta", Equal, 0), false),
        (lease_is("ta", Greater, 0), true),
        (lease_is("ta", Less, l), false),
        (lease_is("ta", NotEqual, l), false),
        (lease_is("ta", NotEqual, 0x7002), true),
        (lease_is("missing", Equal, 0), true),
        (lease_is("missing", NotEqual, 0), false),
        (lease_is("missing", Greater, 0), false),
        (lease_is("missing", Less, 5), true),
    ] {
        let what = format!("{compare:?}");
        assert_eq!(txn(&mut kv, vec![compare]).await, expected, "{what}");
    }
    // Over a range: every key must satisfy it.
    let range = |result| Compare {
        range_end: Bytes::from("tb"),
        ..lease_is("ta", result, l)
    };
    assert!(txn(&mut kv, vec![range(Equal)]).await);
    put(&mut kv, "tac", "v", 0).await;
    assert!(!txn(&mut kv, vec![range(Equal)]).await);

    // A put naming an unknown lease fails the txn only if its branch runs.
    let request = |compare| TxnRequest {
        compare: vec![compare],
        success: vec![put_op("tx", UNKNOWN)],
        failure: vec![put_op("tx", l)],
    };
    assert_eq!(
        error(kv.txn(request(lease_is("ta", Equal, l))).await),
        is(NOT_FOUND)
    );
    let resp = kv
        .txn(request(lease_is("ta", Equal, 0)))
        .await
        .expect("the failure branch puts with a live lease")
        .into_inner();
    assert!(!resp.succeeded);
    assert_eq!(get(&mut kv, "tx").await.1, Some(l));
    let mut keys = time_to_live(&mut leases, l, true).await.keys;
    keys.sort();
    assert_eq!(
        keys,
        vec![Bytes::from("ta"), Bytes::from("tab"), Bytes::from("tx")]
    );
}

fn with_member(flavor: Flavor, tag: &str, checks: impl AsyncFnOnce(&Member)) {
    let mut members = cluster(flavor, 1, tag, &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    common::with_logs_on_failure(&members, || runtime.block_on(checks(&members[0])));
    assert!(members[0].is_running(), "{flavor:?} died");
}

async fn all_checks(member: &Member) {
    unary_calls(member).await;
    keep_alive_stream(member).await;
    txn_lease_compares(member).await;
}

#[test]
fn detcd_lease_calls_answer_as_etcd_does() {
    with_member(Flavor::Detcd, "lease-grpc", all_checks);
}

/// The same assertions against real etcd: they describe etcd.
#[test]
fn etcd_lease_calls_reference() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    with_member(Flavor::Etcd, "lease-grpc-etcd", all_checks);
}

/// `n` keepalives (200,000 for detcd) sent on one stream while no answer is read for 3 s: the
/// member keeps serving other clients meanwhile, then answers every one, in order.
///
/// The flooding client's HTTP/2 stream receive window is kept small (64 KiB), so answers it does
/// not read soon stop the member's writes. A member that applies backpressure then stops reading
/// the stream, its receive window (1 MiB by default, about 125,000 requests) fills up, and the
/// client cannot send the rest until it reads; a member that queued answers without bound would
/// read all 200,000 requests. The connection window is large because h2 (the client's HTTP/2)
/// allows buffering only connection-window/2 bytes' worth of small DATA frames before it
/// answers ENHANCE_YOUR_CALM, and etcd writes every answer as a frame of its own.
async fn keep_alive_flood(member: &Member, n: usize, expect_backpressure: bool) {
    let (mut leases, _) = clients(member).await;
    let a = grant(&mut leases, 60, 0xf1).await.id;
    let b = grant(&mut leases, 120, 0xf2).await.id;
    let expected = move |i: usize| match i % 3 {
        0 => (a, 60),
        1 => (b, 120),
        _ => (UNKNOWN, 0),
    };
    // A connection of its own: the flood's unread answers must not block the other client's.
    let mut flooded = {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", member.spec.endpoint()))
                .unwrap()
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(1 << 30);
        LeaseClient::new(endpoint.connect().await.expect("connecting"))
    };
    let (tx, rx) = mpsc::channel(256);
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            if tx.send(keep_alive(expected(i).0)).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut answers = flooded
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    // Not reading for a while; meanwhile the member answers others promptly.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), time_to_live(&mut leases, a, false))
            .await
            .expect("the member answers other clients during a flood");
        assert_eq!(r.granted_ttl, 60);
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent_unread = sent.load(Ordering::Relaxed);
    let reading = Instant::now();
    for i in 0..n {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(10), answers.message()).await
        else {
            panic!("answer {i} of {n} did not come");
        };
        let r = next
            .unwrap_or_else(|e| panic!("answer {i}: stream error {e}"))
            .unwrap_or_else(|| panic!("the stream ended after {i} answers"));
        assert_eq!((r.id, r.ttl), expected(i), "answer {i}");
    }
    sender.await.unwrap();
    if expect_backpressure {
        assert!(
            sent_unread < n,
            "all {n} keepalives were taken while no answer was read: no backpressure"
        );
    }
    eprintln!(
        "flood: {sent_unread} of {n} keepalives sent before reading began; all answered in {:?}",
        reading.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("the stream ends once the client closed it")
            .expect("no stream error")
            .is_none(),
        "no extra answers"
    );
    assert_eq!(grant(&mut leases, 10, 0xf3).await.ttl, 10, "still serving");
}

#[test]
fn detcd_keepalive_flood_on_one_stream_is_answered_in_order() {
    with_member(Flavor::Detcd, "lease-flood", async |m| {
        keep_alive_flood(m, 200_000, true).await
    });
}

#[test]
fn etcd_keepalive_flood_reference() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    // Fewer for etcd, which answers a keepalive in about 200 us. etcd (grpc-go) grows its receive
    // windows with its bandwidth estimate, so backpressure is not asserted there.
    with_member(Flavor::Etcd, "lease-flood-etcd", async |m| {
        keep_alive_flood(m, 20_000, false).await
    });
}
