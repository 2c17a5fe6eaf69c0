//! Crash durability of the real binary: members are SIGKILLed again and again under concurrent
//! write load and restarted on their data dirs. Afterwards every acknowledged write must be
//! present with the revision it was acknowledged with, and no client ever saw revisions go
//! backwards.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    cluster, kv_client, start_all, wait_until_writable, with_logs_on_failure, Flavor, Member,
};
use detcd::proto::etcdserverpb::{PutRequest, RangeRequest};

/// (key, value, revision) of every acknowledged write.
type Acked = Arc<Mutex<Vec<(String, String, i64)>>>;

async fn writer(writer_id: usize, endpoints: Vec<String>, acked: Acked, stop_at: Instant) -> usize {
    let mut last_revision = 0;
    let mut seq = 0u64;
    let mut target = writer_id;
    while Instant::now() < stop_at {
        target = (target + 1) % endpoints.len();
        let url = format!("http://{}", endpoints[target]);
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(1),
            detcd::proto::etcdserverpb::kv_client::KvClient::connect(url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while Instant::now() < stop_at {
            seq += 1;
            let key = format!("w{writer_id}-{seq}");
            let value = format!("{seq}");
            let request = PutRequest {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
                ..Default::default()
            };
            match tokio::time::timeout(Duration::from_secs(3), client.put(request)).await {
                Ok(Ok(resp)) => {
                    let revision = resp.into_inner().header.expect("header").revision;
                    assert!(
                        revision > last_revision,
                        "writer {writer_id}: revision went from {last_revision} to {revision}"
                    );
                    last_revision = revision;
                    acked.lock().unwrap().push((key, value, revision));
                }
                // Unknown outcome (the member died, or timed out): not acknowledged, not checked.
                _ => break,
            }
        }
    }
    seq as usize
}

fn crash_under_load(members: &mut [Member], seconds: u64) {
    start_all(members);
    let endpoints: Vec<String> = members.iter().map(|m| m.spec.endpoint()).collect();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| runtime.spawn(writer(w, endpoints.clone(), acked.clone(), stop_at)))
        .collect();

    let mut kills = 0;
    let mut victim = 0;
    while Instant::now() + Duration::from_millis(1500) < stop_at {
        std::thread::sleep(Duration::from_millis(700));
        victim = (victim + 2) % members.len();
        members[victim].kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(300));
        members[victim].start();
    }
    let attempted: usize = runtime.block_on(async {
        let mut total = 0;
        for w in writers {
            total += w.await.expect("writer finished");
        }
        total
    });
    for m in members.iter_mut() {
        if !m.is_running() {
            m.start();
        }
    }
    with_logs_on_failure(members, || {
        wait_until_writable(&members[0], Duration::from_secs(30))
    });

    let acked = acked.lock().unwrap().clone();
    assert!(kills >= 3, "the test must actually crash members");
    assert!(
        acked.len() > 50,
        "too few writes were acknowledged ({} of {attempted}) to prove anything",
        acked.len()
    );
    with_logs_on_failure(members, || {
        runtime.block_on(async {
            for m in members.iter() {
                let mut client = kv_client(m).await;
                for (key, value, revision) in &acked {
                    let request = RangeRequest {
                        key: Bytes::from(key.clone()),
                        ..Default::default()
                    };
                    // A member just restarted may still be catching up, and answers "request timed
                    // out" (Unavailable) meanwhile, as etcd does; durability is what is checked here.
                    let mut attempts = 0;
                    let resp = loop {
                        match client.range(request.clone()).await {
                            Err(e) if e.code() == tonic::Code::Unavailable && attempts < 20 => {
                                attempts += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            }
                            result => {
                                break result.unwrap_or_else(|e| {
                                    panic!("reading {key} from {}: {e}", m.spec.name)
                                })
                            }
                        }
                    }
                    .into_inner();
                    let kv = resp.kvs.first().unwrap_or_else(|| {
                        panic!("acknowledged write {key} lost on {}", m.spec.name)
                    });
                    assert_eq!(kv.value.as_ref(), value.as_bytes(), "{key}");
                    assert_eq!(
                        kv.mod_revision, *revision,
                        "{key} acknowledged at revision {revision}"
                    );
                }
            }
        })
    });
    eprintln!(
        "crash test: {kills} kills, {} acknowledged writes of {attempted} attempted, all present",
        acked.len()
    );
}

#[test]
fn single_member_sigkill_loses_no_acknowledged_write() {
    let mut members = cluster(Flavor::Detcd, 1, "crash1", &["--snapshot-count=300"]);
    crash_under_load(&mut members, 8);
}

#[test]
fn three_members_sigkill_loses_no_acknowledged_write() {
    let mut members = cluster(
        Flavor::Detcd,
        3,
        "crash3",
        &["--snapshot-count=300", "--snapshot-catchup-entries=50"],
    );
    crash_under_load(&mut members, 10);
}
