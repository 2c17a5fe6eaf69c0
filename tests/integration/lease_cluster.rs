//! Leases in a 3-member detcd cluster of real processes across the loss of the leader.
//!
//! Two leases of TTL 6 s, each with a key. A is kept alive through a follower (keepalives every
//! second on one stream, reopened on errors); B is abandoned. The leader is SIGKILLed a second
//! after the grants. A must never expire; B must expire, not before its TTL and within the
//! stated bound for an abandoned lease: TTL + prepay + checkpoint interval + election time, where
//! prepay = min(TTL/2, checkpoint interval) = 3 s and the checkpoint interval is 5 s by default,
//! so 6 + 3 + 5 + 3 = 17 s after the grant. Then the killed member restarts and catches up.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, kv_client, leader_of, lease_client, start_all, stdout, Flavor, Member};
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TTL: i64 = 6;
/// TTL + prepay + checkpoint interval + election time.
const EXPIRY_BOUND: Duration = Duration::from_secs(6 + 3 + 5 + 3);
/// The election time the bound allows.
const ELECTION: Duration = Duration::from_secs(3);

/// The highest term any member's log says it became leader at.
fn latest_term(members: &[Member]) -> Option<u64> {
    members
        .iter()
        .flat_map(|m| {
            let log = m.log.lock().unwrap();
            log.iter()
                .filter_map(|l| l.strip_prefix("detcd: became leader at term "))
                .filter_map(|t| t.trim().parse::<u64>().ok())
                .max()
        })
        .max()
}

fn wait_for_leader(members: &[Member], max: Duration) -> usize {
    let deadline = Instant::now() + max;
    loop {
        if let Some(i) = leader_of(members) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the keepalive task saw.
#[derive(Default)]
struct KeptAlive {
    renewals: AtomicUsize,
    errors: AtomicUsize,
    /// Set if any answer said the lease is gone (TTL 0).
    lost: AtomicBool,
    last_renewal: Mutex<Option<Instant>>,
}

/// Renews `id` every second on a keepalive stream to `endpoint`, reopening the stream after an
/// error or an answer that does not come within 2 s.
async fn keep_alive(endpoint: String, id: i64, stop: Arc<AtomicBool>, seen: Arc<KeptAlive>) {
    while !stop.load(Ordering::Relaxed) {
        let url = format!("http://{endpoint}");
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            detcd::proto::etcdserverpb::lease_client::LeaseClient::connect(url),
        )
        .await;
        let Ok(Ok(mut client)) = connected else {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(LeaseKeepAliveRequest { id }).await;
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            client.lease_keep_alive(ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(response)) = opened else {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut answers = response.into_inner();
        loop {
            match tokio::time::timeout(Duration::from_secs(2), answers.message()).await {
                Ok(Ok(Some(answer))) => {
                    assert_eq!(answer.id, id);
                    if answer.ttl <= 0 {
                        seen.lost.store(true, Ordering::Relaxed);
                    } else {
                        assert_eq!(answer.ttl, TTL);
                        seen.renewals.fetch_add(1, Ordering::Relaxed);
                        *seen.last_renewal.lock().unwrap() = Some(Instant::now());
                    }
                }
                _ => {
                    seen.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stop.load(Ordering::Relaxed) || tx.send(LeaseKeepAliveRequest { id }).await.is_err()
            {
                break;
            }
        }
    }
}

/// One linearizable read of both keys through a member: when it was issued and answered, and
/// whether each key exists. `None` if the member did not answer within 2 s.
async fn poll(endpoint: &str) -> Option<(Instant, Instant, bool, bool)> {
    let issued = Instant::now();
    let read = async {
        let url = format!("http://{endpoint}");
        let mut kv = detcd::proto::etcdserverpb::kv_client::KvClient::connect(url)
            .await
            .ok()?;
        let mut exists = Vec::new();
        for key in ["lease-a", "lease-b"] {
            let resp = kv
                .range(RangeRequest {
                    key: Bytes::from(key),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            exists.push(!resp.kvs.is_empty());
        }
        Some((exists[0], exists[1]))
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()??;
    Some((issued, Instant::now(), a, b))
}

fn serializable_get(member: &Member, key: &str) -> Option<String> {
    let out = member.etcdctl(&[
        "get",
        key,
        "--print-value-only",
        "--consistency=s",
        "--command-timeout=2s",
    ]);
    out.status.success().then(|| stdout(&out))
}

fn scenario(members: &mut [Member]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leader = wait_for_leader(members, Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let survivors = [
        members[follower].spec.endpoint(),
        members[other].spec.endpoint(),
    ];

    // Grants and keys, through the follower.
    let (a, b, b_sent, b_granted) = runtime.block_on(async {
        let mut leases = lease_client(&members[follower]).await;
        let mut kv = kv_client(&members[follower]).await;
        let a = leases
            .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
            .await
            .expect("grant A")
            .into_inner();
        let b_sent = Instant::now();
        let b = leases
            .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
            .await
            .expect("grant B")
            .into_inner();
        let b_granted = Instant::now();
        assert_eq!((a.ttl, b.ttl), (TTL, TTL));
        for (key, lease) in [("lease-a", a.id), ("lease-b", b.id)] {
            kv.put(PutRequest {
                key: Bytes::from(key),
                value: Bytes::from("v"),
                lease,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        }
        (a.id, b.id, b_sent, b_granted)
    });

    // The leader answers keepalives; make sure it has applied the grants first (detcd's leader
    // may answer a forwarded request from before an entry a follower already acknowledged; that
    // is tested, and reported, by lease_read_your_writes.rs).
    runtime.block_on(async {
        let mut leases = lease_client(&members[follower]).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        for id in [a, b] {
            while leases
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
                .await
                .expect("timetolive")
                .into_inner()
                .granted_ttl
                != TTL
            {
                assert!(
                    Instant::now() < deadline,
                    "the leader never knew lease {id:x}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(KeptAlive::default());
    let keeper = runtime.spawn(keep_alive(
        members[follower].spec.endpoint(),
        a,
        stop.clone(),
        seen.clone(),
    ));

    // The leader dies a second after the grants.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(b_granted.elapsed()));
    members[leader].kill();
    let killed = Instant::now();
    eprintln!(
        "killed leader {} {:?} after B's grant",
        members[leader].spec.name,
        killed - b_sent
    );

    // Both keys, every 500 ms, alternately through the two survivors, for 15 s, until enough
    // reads were answered after the election, and until B is seen gone or its bound has passed.
    //
    // B's bound counts from its grant or from when the cluster last had no leader, whichever is
    // later: normally the election after the kill is over within the 3 s the bound allows for
    // it, so B must be gone 17 s after its grant; on a machine so loaded that leadership changes
    // again, the bound is 14 s (TTL + prepay + checkpoint interval) after the last new leader
    // was seen in the logs.
    let mut polls: Vec<(String, (Instant, Instant, bool, bool))> = Vec::new();
    let mut failed_polls = 0;
    let mut b_gone_at = None;
    let mut term = latest_term(members);
    let mut b_deadline = b_granted + EXPIRY_BOUND;
    let mut i = 0;
    loop {
        if latest_term(members) != term {
            term = latest_term(members);
            b_deadline = b_deadline.max(Instant::now() + EXPIRY_BOUND - ELECTION);
        }
        let late = polls
            .iter()
            .filter(|(_, (issued, ..))| *issued > killed + Duration::from_secs(6))
            .count();
        let since_grant = b_sent.elapsed();
        let done = since_grant > Duration::from_secs(15)
            && late >= 8
            && (b_gone_at.is_some() || Instant::now() > b_deadline + Duration::from_secs(1));
        if done || since_grant > Duration::from_secs(60) {
            break;
        }
        let endpoint = &survivors[i % 2];
        i += 1;
        match runtime.block_on(poll(endpoint)) {
            Some(p) => {
                if !p.3 && b_gone_at.is_none() {
                    b_gone_at = Some(p.1);
                }
                polls.push((endpoint.clone(), p));
            }
            None => failed_polls += 1,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let new_leader = leader_of(members);
    eprintln!(
        "new leader {:?}; {} polls answered, {failed_polls} not; A renewed {} times ({} stream \
         errors); B seen gone {:?} after its grant",
        new_leader.map(|l| &members[l].spec.name),
        polls.len(),
        seen.renewals.load(Ordering::Relaxed),
        seen.errors.load(Ordering::Relaxed),
        b_gone_at.map(|t| t - b_sent),
    );

    // A never expired.
    for (endpoint, (issued, _, a_exists, _)) in &polls {
        assert!(
            *a_exists,
            "A's key was gone {:?} after the grants (read through {endpoint})",
            *issued - b_sent
        );
    }
    assert!(
        !seen.lost.load(Ordering::Relaxed),
        "a keepalive of A was answered TTL 0"
    );
    // The reads did happen after the election.
    let late = polls
        .iter()
        .filter(|(_, (issued, ..))| *issued > killed + Duration::from_secs(6))
        .count();
    assert!(late >= 8, "only {late} reads answered after the election");
    assert!(
        seen.renewals.load(Ordering::Relaxed) >= 5,
        "A was renewed only {} times",
        seen.renewals.load(Ordering::Relaxed)
    );
    let last = seen.last_renewal.lock().unwrap().expect("a renewal");
    assert!(
        last.elapsed() < Duration::from_secs(3),
        "A's renewals stopped {:?} ago",
        last.elapsed()
    );

    // B: not early, and within its bound.
    for (endpoint, (_, answered, _, b_exists)) in &polls {
        if *answered < b_sent + Duration::from_secs(TTL as u64) {
            assert!(
                *b_exists,
                "B's key was gone {:?} after its grant was sent, before its TTL (read through \
                 {endpoint})",
                *answered - b_sent
            );
        }
    }
    let gone = b_gone_at.expect("B's key never went away");
    assert!(
        gone <= b_deadline,
        "B's key went away {:?} after its grant, past its bound ({:?} after the grant)",
        gone - b_granted,
        b_deadline - b_granted
    );
    for (endpoint, (issued, _, _, b_exists)) in &polls {
        if *issued > gone {
            assert!(!*b_exists, "B's key came back (read through {endpoint})");
        }
    }

    runtime.block_on(async {
        let mut leases = lease_client(&members[follower]).await;
        let ask = |id| LeaseTimeToLiveRequest { id, keys: true };
        let a_now = leases
            .lease_time_to_live(ask(a))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a_now.granted_ttl, TTL);
        assert!(a_now.ttl > 0, "{a_now:?}");
        assert_eq!(a_now.keys, vec![Bytes::from("lease-a")]);
        let b_now = leases
            .lease_time_to_live(ask(b))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((b_now.ttl, b_now.granted_ttl), (-1, 0), "{b_now:?}");
        keeper.await.unwrap();
    });

    // The killed member comes back and catches up: A's key is there, B's is not.
    members[leader].start();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let a_value = serializable_get(&members[leader], "lease-a");
        let b_value = serializable_get(&members[leader], "lease-b");
        if a_value.as_deref() == Some("v\n") && b_value.as_deref() == Some("") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up: lease-a {a_value:?}, lease-b {b_value:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kept_alive_lease_survives_leader_loss_and_abandoned_lease_expires_in_bound() {
    let mut members = cluster(Flavor::Detcd, 3, "lease-c3", &[]);
    start_all(&mut members);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut members)));
    if let Err(panic) = result {
        for m in &members {
            eprintln!("--- log of {} ---\n{}", m.spec.name, m.log_text());
        }
        std::panic::resume_unwind(panic);
    }
}

/// A single member restarted (SIGTERM, down for 4 s) keeps its leases: a long one is still there
/// with its key and can be renewed; a short one (TTL 3 s, which passed while the member was
/// down) expires after the restart, within TTL + prepay + checkpoint interval + election time of
/// it, deleting its key at one revision. (As etcd does, the time a member is down does not
/// count against a lease's TTL.)
#[test]
fn restarted_member_keeps_its_leases_and_expires_them() {
    let mut members = cluster(Flavor::Detcd, 1, "lease-restart", &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let member = &mut members[0];
    let (a, b, b_sent, revision) = runtime.block_on(async {
        let mut leases = lease_client(member).await;
        let mut kv = kv_client(member).await;
        let a = leases
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id;
        let b_sent = Instant::now();
        let b = leases
            .lease_grant(LeaseGrantRequest { ttl: 3, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id;
        let mut revision = 0;
        for (key, lease) in [("ka", a), ("kb", b), ("plain", 0)] {
            revision = kv
                .put(PutRequest {
                    key: Bytes::from(key),
                    value: Bytes::from("v"),
                    lease,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .header
                .unwrap()
                .revision;
        }
        (a, b, b_sent, revision)
    });
    assert_eq!(member.terminate(), Some(0), "{}", member.log_text());
    // Down for longer than B's TTL.
    std::thread::sleep(Duration::from_secs(4));
    member.start();
    let restarted = Instant::now();
    common::wait_until_writable(member, Duration::from_secs(40));
    // The member leads again (and so the cluster has a leader) by now at the latest.
    let writable = Instant::now();
    runtime.block_on(async {
        let mut leases = lease_client(member).await;
        let mut kv = kv_client(member).await;
        let ask = |id| LeaseTimeToLiveRequest { id, keys: true };
        let a_now = leases
            .lease_time_to_live(ask(a))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a_now.granted_ttl, 60, "{a_now:?}");
        // The time since the restart counts (at most 60, truncated).
        assert!((40..60).contains(&a_now.ttl), "{a_now:?}");
        assert_eq!(a_now.keys, vec![Bytes::from("ka")]);

        // B goes away, with its key, at one revision.
        let read = |key: &'static str| RangeRequest {
            key: Bytes::from(key),
            ..Default::default()
        };
        // TTL + prepay + checkpoint interval, after the cluster last had no leader, plus 3 s of
        // slack for committing the revocation.
        let bound = writable + Duration::from_secs(3 + 2 + 5 + 3);
        loop {
            let resp = kv.range(read("kb")).await.unwrap().into_inner();
            if resp.kvs.is_empty() {
                let gone = Instant::now();
                assert!(
                    gone >= b_sent + Duration::from_secs(3),
                    "B expired {:?} after its grant, TTL is 3 s",
                    gone - b_sent
                );
                eprintln!(
                    "B gone {:?} after the restart began, {:?} after its grant",
                    gone - restarted,
                    gone - b_sent
                );
                // The ready probe's put and delete, then B's revocation.
                assert_eq!(resp.header.unwrap().revision, revision + 3);
                break;
            }
            assert!(
                Instant::now() < bound,
                "B still there {:?} after the restart",
                restarted.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let b_now = leases
            .lease_time_to_live(ask(b))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((b_now.ttl, b_now.granted_ttl), (-1, 0));
        for key in ["ka", "plain"] {
            let resp = kv.range(read(key)).await.unwrap().into_inner();
            assert_eq!(resp.kvs.len(), 1, "{key} survives");
        }

        // A can still be renewed.
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id: a }).await.unwrap();
        let mut answers = leases
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("a keepalive answer")
            .unwrap()
            .unwrap();
        assert_eq!((answer.id, answer.ttl), (a, 60));
    });
}
