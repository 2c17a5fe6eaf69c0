//! Availability when a follower dies and comes back: writers on every member of a 3-member
//! cluster put as fast as they can (1 s timeout each) while a follower is killed with SIGKILL
//! and restarted 2 s later, three times; the longest stretch without any acknowledged write,
//! from the kill to 5 s after the restart, must be no worse than real etcd's on the same
//! machine, measured the same way at the same time (plus a quarter second for the noise of a
//! 2-core machine). Without etcd installed, the bound is 1.2 s, the worst etcd 3.4 showed
//! here (scripts/availability/ has the longer side-by-side run with Go clientv3 writers).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, etcd_available, etcdctl, kv_client, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::PutRequest;

const ROUNDS: usize = 3;
const DOWN: Duration = Duration::from_secs(2);
const AFTER_RESTART: Duration = Duration::from_secs(5);
const PUT_TIMEOUT: Duration = Duration::from_secs(1);

/// Puts from one task per member until told to stop; every acknowledgement's instant.
fn start_writers(
    runtime: &tokio::runtime::Runtime,
    members: &[Member],
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<Vec<Instant>>> {
    let acks = Arc::new(Mutex::new(Vec::new()));
    for (w, member) in members.iter().enumerate() {
        let client = runtime.block_on(kv_client(member));
        let (acks, stop) = (acks.clone(), stop.clone());
        runtime.spawn(async move {
            let mut client = client;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let put = PutRequest {
                    key: format!("w{w}/{}", i % 100).into(),
                    value: "v".into(),
                    ..PutRequest::default()
                };
                match tokio::time::timeout(PUT_TIMEOUT, client.put(put)).await {
                    Ok(Ok(_)) => acks.lock().unwrap().push(Instant::now()),
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    acks
}

/// Which member leads, as `endpoint status` says (the same question for both servers).
fn current_leader(members: &[Member]) -> usize {
    let endpoints: Vec<String> = members.iter().map(|m| m.spec.endpoint()).collect();
    let out = etcdctl(
        &endpoints.join(","),
        &["endpoint", "status", "-w", "json"],
        None,
    );
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    statuses
        .as_array()
        .and_then(|all| {
            all.iter().find_map(|s| {
                let status = &s["Status"];
                let leads = status["leader"] == status["header"]["member_id"];
                let endpoint = s["Endpoint"].as_str()?;
                leads.then(|| endpoints.iter().position(|e| e == endpoint))?
            })
        })
        .expect("a member leads")
}

/// The longest stretch in `[from, to]` without an acknowledgement.
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut inside: Vec<Instant> = acks
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort();
    let mut previous = from;
    let mut worst = Duration::ZERO;
    for t in inside.into_iter().chain(std::iter::once(to)) {
        worst = worst.max(t - previous);
        previous = t;
    }
    worst
}

/// The worst gap over the rounds, for one flavor.
fn worst_gap(flavor: Flavor) -> Duration {
    let tag = match flavor {
        Flavor::Detcd => "avail-detcd",
        Flavor::Etcd => "avail-etcd",
    };
    let mut members = cluster(flavor, 3, tag, &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = start_writers(&runtime, &members, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let mut windows = Vec::new();
    for round in 0..ROUNDS {
        let leader = current_leader(&members);
        let victim = (leader + 1 + round % 2) % members.len();
        let killed = Instant::now();
        members[victim].kill();
        std::thread::sleep(DOWN);
        members[victim].start();
        let restarted = Instant::now();
        std::thread::sleep(AFTER_RESTART);
        windows.push((killed, restarted + AFTER_RESTART));
    }
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(PUT_TIMEOUT);
    let acks = acks.lock().unwrap().clone();
    let gaps: Vec<Duration> = windows
        .iter()
        .map(|(from, to)| longest_gap(&acks, *from, *to))
        .collect();
    eprintln!("{tag}: longest stretch without an acknowledged write per round: {gaps:?}");
    gaps.into_iter().max().unwrap()
}

#[test]
fn a_follower_restart_costs_no_more_availability_than_with_etcd() {
    // Side by side, so that a slow moment of the shared machine (other tests, their disk
    // writes) falls on both: one after the other, detcd once measured 592 ms in CI where etcd,
    // a minute later, had 260 ms.
    let (ours, etcds) = std::thread::scope(|s| {
        let etcd = s.spawn(|| etcd_available().then(|| worst_gap(Flavor::Etcd)));
        (worst_gap(Flavor::Detcd), etcd.join().expect("etcd's side"))
    });
    let bound = match etcds {
        Some(gap) => gap.max(Duration::from_millis(300)) + Duration::from_millis(250),
        None => Duration::from_millis(1200),
    };
    assert!(
        ours <= bound,
        "detcd went {ours:?} without acknowledging a write; the bound is {bound:?}"
    );
}
