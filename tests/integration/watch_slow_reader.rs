//! A watch stream whose client stops reading must neither slow the writers down nor make the
//! member hold everything it owes that client in memory, and once the client reads again it must
//! get every event, in order, once.
//!
//! One stream (on a connection of its own, with the smallest HTTP/2 windows, 64 KiB, so that
//! little can pile up in the client's transport) watches the prefix `s/`; after its created
//! response the test stops reading it. 16 writers then put 20,000 keys of 1 KB under the prefix
//! (through another connection). The puts must stay fast (each under 2 s, the 99th percentile
//! under 500 ms, all within 30 s) and the member's resident memory (VmRSS in /proc) must not grow
//! by 150 MB or more over what it was before the writes. Then the client reads: the 20,000 events
//! must arrive, one per revision, the revisions consecutive, every key once, within 30 s.
//!
//! The same runs against real etcd (when installed) as a reference, with the same assertions.

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, etcd_available, rss_kib, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::watch_client::WatchClient;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const KEYS: usize = 20_000;
const VALUE_BYTES: usize = 1024;
const WRITERS: usize = 16;
const RSS_GROWTH_MAX_KIB: u64 = 150 * 1024;

async fn connect(endpoint: &str, small_window: bool) -> tonic::transport::Channel {
    let mut e = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}")).unwrap();
    if small_window {
        e = e
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    e.connect()
        .await
        .unwrap_or_else(|err| panic!("connecting to {endpoint}: {err}"))
}

fn key(i: usize) -> String {
    format!("s/{i:05}")
}

async fn scenario(member: &Member) {
    let endpoint = member.spec.endpoint();
    let pid = member.pid().expect("running");
    let mut kv = KvClient::new(connect(&endpoint, false).await);

    // The stream that will not read.
    let mut watch =
        WatchClient::new(connect(&endpoint, true).await).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from("s/"),
            range_end: Bytes::from("s0"),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut answers = watch
        .watch(ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = answers.message().await.unwrap().unwrap();
    assert!(created.created, "{created:?}");
    let start_revision = created.header.unwrap().revision;

    // Warm up the write path, then take the baseline.
    for i in 0..50 {
        kv.put(PutRequest {
            key: Bytes::from(format!("warm/{i}")),
            value: Bytes::from(vec![b'w'; VALUE_BYTES]),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib(pid).expect("VmRSS");
    let first_revision = kv
        .put(PutRequest {
            key: Bytes::from("warm/last"),
            value: Bytes::from("x"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
        + 1;

    // RSS, sampled every 50 ms while the writes run.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let started = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(KEYS)));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut kv = kv.clone();
        let latencies = latencies.clone();
        writers.push(tokio::spawn(async move {
            let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
            for i in (w..KEYS).step_by(WRITERS) {
                let sent = Instant::now();
                let put = kv.put(PutRequest {
                    key: Bytes::from(key(i)),
                    value: value.clone(),
                    ..Default::default()
                });
                match tokio::time::timeout(Duration::from_secs(10), put).await {
                    Ok(Ok(_)) => latencies.lock().unwrap().push(sent.elapsed()),
                    Ok(Err(e)) => panic!("put {}: {e}", key(i)),
                    Err(_) => panic!("put {} took more than 10 s", key(i)),
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("a writer");
    }
    let writing = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    eprintln!(
        "{:?}: {KEYS} puts by {WRITERS} writers in {writing:?} (p50 {p50:?}, p99 {p99:?}, max \
         {max:?}); RSS {} MiB before, peak {} MiB (+{} MiB)",
        member.flavor,
        baseline / 1024,
        peak / 1024,
        peak.saturating_sub(baseline) / 1024
    );
    assert!(
        writing < Duration::from_secs(30),
        "{:?}: writing took {writing:?}",
        member.flavor
    );
    assert!(
        max < Duration::from_secs(2),
        "{:?}: a put took {max:?}",
        member.flavor
    );
    assert!(
        p99 < Duration::from_millis(500),
        "{:?}: p99 put latency {p99:?}",
        member.flavor
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_MAX_KIB,
        "{:?}: RSS grew from {} MiB to {} MiB while a stream did not read",
        member.flavor,
        baseline / 1024,
        peak / 1024
    );

    // Now read: every event once, one per revision, in order.
    let reading = Instant::now();
    let mut seen = BTreeSet::new();
    let mut next = first_revision;
    let mut responses = 0;
    while seen.len() < KEYS {
        let r = match tokio::time::timeout(Duration::from_secs(10), answers.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!(
                "{:?}: the stream ended after {} events",
                member.flavor,
                seen.len()
            ),
            Ok(Err(e)) => panic!(
                "{:?}: the stream failed after {} events: {e}",
                member.flavor,
                seen.len()
            ),
            Err(_) => panic!(
                "{:?}: no response for 10 s after {} events",
                member.flavor,
                seen.len()
            ),
        };
        responses += 1;
        assert!(
            !r.canceled && !r.created && r.watch_id == created.watch_id,
            "{:?}: unexpected response after {} events: {:?}",
            member.flavor,
            seen.len(),
            WatchSummary(&r)
        );
        for e in &r.events {
            let kv = e.kv.as_ref().unwrap();
            assert_eq!(
                kv.mod_revision,
                next,
                "{:?}: after {} events, an event at revision {} where {next} was due",
                member.flavor,
                seen.len(),
                kv.mod_revision
            );
            assert_eq!(kv.value.len(), VALUE_BYTES);
            let k = String::from_utf8(kv.key.to_vec()).unwrap();
            assert!(seen.insert(k.clone()), "{:?}: {k} twice", member.flavor);
            next += 1;
        }
        assert!(
            reading.elapsed() < Duration::from_secs(30),
            "{:?}: reading took over 30 s ({} events)",
            member.flavor,
            seen.len()
        );
    }
    assert_eq!(seen, (0..KEYS).map(key).collect::<BTreeSet<_>>());
    assert!(start_revision < first_revision);
    eprintln!(
        "{:?}: read {KEYS} events in {responses} responses in {:?}",
        member.flavor,
        reading.elapsed()
    );
    drop(tx);
}

struct WatchSummary<'a>(&'a detcd::proto::etcdserverpb::WatchResponse);

impl std::fmt::Debug for WatchSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(
            f,
            "watch_id {} created {} canceled {} reason {:?} compact {} events {} header {:?}",
            r.watch_id,
            r.created,
            r.canceled,
            r.cancel_reason,
            r.compact_revision,
            r.events.len(),
            r.header
        )
    }
}

fn run(flavor: Flavor) {
    let mut members = cluster(flavor, 1, "watch-slow", &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    common::with_logs_on_failure(&members, || runtime.block_on(scenario(&members[0])));
    members[0].kill();
}

#[test]
fn a_stream_that_does_not_read_slows_nobody_and_loses_nothing() {
    run(Flavor::Detcd);
}

#[test]
fn etcd_reference_a_stream_that_does_not_read() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    run(Flavor::Etcd);
}
