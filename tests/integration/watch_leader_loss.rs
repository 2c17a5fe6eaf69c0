//! A watch stream that requires a leader (`hasleader=true`, clientv3's `WithRequireLeader`)
//! across the loss of leaders, on 3-member clusters of etcd 3.4 and of detcd, whose transcripts
//! must be the same.
//!
//! The stream is on a follower. The leader is killed: the follower is without a leader until
//! the election ends, a second or two, and etcd keeps the stream (it ends such streams only at
//! the third check in a row, one election timeout apart, that finds no leader), so a put after
//! the election arrives on it. Then the other survivor is killed too: the lone member (a leader
//! steps down once it cannot reach a quorum) can elect nobody, and the stream ends with `etcdserver: no leader` a few seconds later, as does a lease
//! keepalive stream that requires a leader (clientv3's lessor always opens them so); a new stream
//! that requires a leader is refused at once, and so is any call that requires one (a
//! serializable Range, which needs no leader otherwise).

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest, RangeRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Responses = tonic::Streaming<WatchResponse>;

/// Opens a `hasleader` stream with one watch of `key`; the error status if it is refused.
async fn open(member: &Member, key: &str) -> Result<common::WatchStream, String> {
    let mut client = common::watch_client(member).await;
    let create = WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    let first = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    };
    let call = common::watch_call(&mut client, first, true).await;
    call.map_err(|status| format!("{:?} {}", status.code(), status.message()))
}

/// The stream's next response as a line, or how it ended.
async fn next(responses: &mut Responses, max: Duration) -> String {
    match tokio::time::timeout(max, responses.message()).await {
        Err(_) => "nothing".into(),
        Ok(Ok(None)) => "ended".into(),
        Ok(Err(status)) => format!("ended: {:?} {}", status.code(), status.message()),
        Ok(Ok(Some(r))) if r.created => "created".into(),
        Ok(Ok(Some(r))) => {
            let events = r.events.iter().map(|e| {
                let kv = e.kv.as_ref().expect("an event has its key-value");
                format!("{}={}", text(&kv.key), text(&kv.value))
            });
            format!("events {}", events.collect::<Vec<_>>().join(" "))
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The member that `members[alive]` say is leader, by their status.
fn leader(members: &[Member], alive: &[usize], max: Duration) -> usize {
    let deadline = Instant::now() + max;
    loop {
        for &i in alive {
            let out =
                members[i].etcdctl(&["endpoint", "status", "-w", "json", "--command-timeout=1s"]);
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            let status = &status[0]["Status"];
            if status["leader"].as_u64().is_some()
                && status["leader"] == status["header"]["member_id"]
            {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {alive:?} within {max:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts `key` through `member`, retrying while its cluster elects a leader.
async fn put_retrying(member: &Member, key: &str, value: &str) {
    let mut kv = common::kv_client(member).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let put = PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        };
        if kv.put(put).await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "no put of {key} acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn scenario(members: &mut [Member]) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = leader(members, &[0, 1, 2], Duration::from_secs(10));
    let watched = (first + 1) % 3;
    let other = (first + 2) % 3;
    let (_requests, mut responses) = runtime
        .block_on(open(&members[watched], "k"))
        .expect("opened");
    let mut out = vec![runtime.block_on(next(&mut responses, Duration::from_secs(5)))];

    members[first].kill();
    // Either survivor may win: the watched one keeps its stream both ways.
    leader(members, &[watched, other], Duration::from_secs(15));
    runtime.block_on(put_retrying(&members[watched], "k", "after-the-election"));
    out.push(runtime.block_on(next(&mut responses, Duration::from_secs(5))));

    let (_keepalives, mut keepalive_answers) =
        runtime.block_on(keep_alive_requiring_a_leader(&members[watched]));
    out.push(runtime.block_on(next_keepalive(&mut keepalive_answers)));

    members[other].kill();
    let killed = Instant::now();
    out.push(runtime.block_on(next(&mut responses, Duration::from_secs(25))));
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(20),
        "the stream ended {waited:?} after the member's last peer died"
    );
    out.push(runtime.block_on(next_keepalive(&mut keepalive_answers)));
    let refused = runtime.block_on(open(&members[watched], "k"));
    out.push(match refused {
        Err(status) => format!("opened again: {status}"),
        Ok((_, mut responses)) => {
            let first = runtime.block_on(next(&mut responses, Duration::from_secs(2)));
            format!("opened again: {first}")
        }
    });
    out.push(runtime.block_on(range_requiring_a_leader(&members[watched])));
    out
}

/// A lease and a keepalive stream for it with `hasleader=true`, as clientv3's lessor opens
/// them; one keepalive sent.
async fn keep_alive_requiring_a_leader(
    member: &Member,
) -> (mpsc::Sender<LeaseKeepAliveRequest>, KeepAliveAnswers) {
    let mut leases = common::lease_client(member).await;
    let granted = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("granted")
        .into_inner();
    let (tx, rx) = mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id: granted.id })
        .await
        .expect("the channel is open");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let metadata = request.metadata_mut();
    metadata.insert("hasleader", "true".parse().unwrap());
    let answers = leases.lease_keep_alive(request).await.expect("opened");
    (tx, answers.into_inner())
}

type KeepAliveAnswers = tonic::Streaming<LeaseKeepAliveResponse>;

async fn next_keepalive(answers: &mut KeepAliveAnswers) -> String {
    match tokio::time::timeout(Duration::from_secs(15), answers.message()).await {
        Err(_) => "keepalive: nothing".into(),
        Ok(Ok(None)) => "keepalive: ended".into(),
        Ok(Err(status)) => format!("keepalive: {:?} {}", status.code(), status.message()),
        Ok(Ok(Some(answer))) => format!("keepalive: ttl {}", answer.ttl),
    }
}

/// A serializable Range (which needs no leader to answer) with `hasleader=true`.
async fn range_requiring_a_leader(member: &Member) -> String {
    let mut kv = common::kv_client(member).await;
    let mut request = tonic::Request::new(RangeRequest {
        key: Bytes::from_static(b"k"),
        serializable: true,
        ..Default::default()
    });
    let metadata = request.metadata_mut();
    metadata.insert("hasleader", "true".parse().unwrap());
    match kv.range(request).await {
        Ok(response) => format!("range: {} keys", response.into_inner().count),
        Err(status) => format!("range: {:?} {}", status.code(), status.message()),
    }
}

fn run(flavor: Flavor, tag: &str) -> Vec<String> {
    let mut members = cluster(flavor, 3, tag, &[]);
    start_all(&mut members);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut members)));
    result.unwrap_or_else(|panic| {
        for m in &members {
            eprintln!("--- log of {} ---\n{}", m.spec.name, m.log_text());
        }
        std::panic::resume_unwind(panic)
    })
}

#[test]
fn a_stream_that_requires_a_leader_outlives_an_election_and_ends_without_a_quorum() {
    let expected = [
        "created",
        "events k=after-the-election",
        "keepalive: ttl 60",
        "ended: Unavailable etcdserver: no leader",
        "keepalive: Unavailable etcdserver: no leader",
        "opened again: Unavailable etcdserver: no leader",
        "range: Unavailable etcdserver: no leader",
    ];
    if common::etcd_available() {
        assert_eq!(run(Flavor::Etcd, "hl-loss-etcd"), expected, "etcd");
    }
    assert_eq!(run(Flavor::Detcd, "hl-loss-detcd"), expected, "detcd");
}
