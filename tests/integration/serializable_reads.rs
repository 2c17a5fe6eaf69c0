//! Serializable reads of one key, which detcd answers on the client port's workers from the key
//! space as its node last applied it (`src/server/local_reads.rs`), not through the node.
//!
//! A client that writes through a member and then reads serializably through the same member
//! sees its write, in etcd as here: the member answers a write once it has applied it, and a
//! serializable read reads what the member applied. The rounds run while busy threads compete
//! for the CPU, so that a view frozen before the write's batch, still in use after its answer,
//! would show. And whatever the path, the answer (or the error) is the node's.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, etcd_available, kv_client, start_all, Flavor};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::range_request::SortTarget;
use detcd::proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use tonic::transport::Channel;

const ROUNDS: usize = 2000;
/// The rounds stop early after this long (a slow machine does fewer).
const ROUNDS_FOR_AT_MOST: Duration = Duration::from_secs(15);

fn put(key: &str, value: String) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value),
        ..Default::default()
    }
}

fn get(key: &str, serializable: bool) -> RangeRequest {
    RangeRequest {
        key: Bytes::from(key.to_string()),
        serializable,
        ..Default::default()
    }
}

fn busy_threads(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                x
            })
        })
        .collect()
}

/// Writes through one member and reads serializably through it, on two members at once (one
/// of them a follower), each round's read of the key it just wrote and of a key written once.
fn reads_see_own_writes(flavor: Flavor) {
    let mut members = cluster(flavor, 3, "ser-ryw", &[]);
    start_all(&mut members);
    let stop = Arc::new(AtomicBool::new(false));
    let hogs = busy_threads(&stop);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stale: Vec<String> = runtime.block_on(async {
        let mut clients = Vec::new();
        for member in &members[..2] {
            clients.push(kv_client(member).await);
        }
        clients[0]
            .put(put("ser-fixed", "fixed".into()))
            .await
            .expect("put");
        let rounds = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| tokio::spawn(own_writes_rounds(client, format!("ser-{i}"))));
        let mut stale = Vec::new();
        for r in rounds {
            stale.extend(r.await.unwrap());
        }
        stale
    });
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    assert!(stale.is_empty(), "{flavor:?}:\n{}", stale.join("\n"));
}

async fn own_writes_rounds(mut kv: KvClient<Channel>, key: String) -> Vec<String> {
    let mut stale = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        if started.elapsed() > ROUNDS_FOR_AT_MOST {
            break;
        }
        let wrote = kv.put(put(&key, round.to_string())).await.expect("put");
        let wrote = wrote.into_inner().header.unwrap();
        let read = kv.range(get(&key, true)).await.expect("get").into_inner();
        let header = read.header.unwrap();
        let value = read.kvs.first().map(|kv| kv.value.clone());
        if value != Some(Bytes::from(round.to_string())) || header.revision < wrote.revision {
            stale.push(format!(
                "{key} round {round}: read {value:?} at revision {} after the put at {}",
                header.revision, wrote.revision
            ));
        }
        if header.member_id != wrote.member_id || header.cluster_id != wrote.cluster_id {
            stale.push(format!(
                "{key} round {round}: header {header:?} after {wrote:?}"
            ));
        }
        let fixed = kv.range(get("ser-fixed", true)).await.expect("get");
        if fixed.into_inner().kvs.len() != 1 {
            stale.push(format!("{key} round {round}: ser-fixed missing"));
        }
    }
    stale
}

#[test]
fn detcd_serializable_reads_see_the_members_acknowledged_writes() {
    reads_see_own_writes(Flavor::Detcd);
}

#[test]
fn etcd_serializable_reads_see_the_members_acknowledged_writes() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    reads_see_own_writes(Flavor::Etcd);
}

/// Every shape of a one-key read, answered serializably and linearizably by the same member
/// with nothing written in between: the same answer, or the same error.
#[test]
fn serializable_answers_are_the_nodes() {
    let mut members = cluster(Flavor::Detcd, 1, "ser-same", &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut kv = kv_client(&members[0]).await;
        for i in 0..5 {
            kv.put(put("k", format!("v{i}"))).await.expect("put");
        }
        kv.compact(CompactionRequest {
            revision: 3,
            physical: true,
        })
        .await
        .expect("compact");
        let cases = [
            get("k", false),
            get("missing", false),
            // A superseded value: its answer reads the cold segments, so the node gives it.
            RangeRequest {
                revision: 4,
                ..get("k", false)
            },
            RangeRequest {
                revision: 2,
                ..get("k", false)
            },
            RangeRequest {
                revision: 99,
                ..get("k", false)
            },
            RangeRequest {
                count_only: true,
                ..get("k", false)
            },
            RangeRequest {
                keys_only: true,
                ..get("k", false)
            },
            RangeRequest {
                limit: 1,
                sort_target: SortTarget::Value as i32,
                ..get("k", false)
            },
            RangeRequest {
                sort_target: 9,
                ..get("k", false)
            },
            RangeRequest {
                min_mod_revision: 99,
                ..get("k", false)
            },
            get("", false),
        ];
        for linearizable in cases {
            let serializable = RangeRequest {
                serializable: true,
                ..linearizable.clone()
            };
            let answer = |r: Result<tonic::Response<_>, tonic::Status>| match r {
                Ok(response) => Ok(response.into_inner()),
                Err(status) => Err((status.code(), status.message().to_string())),
            };
            let want = answer(kv.range(linearizable.clone()).await);
            // Twice: the first read may find no view yet and go through the node.
            for _ in 0..2 {
                let got = answer(kv.range(serializable.clone()).await);
                assert_eq!(got, want, "{linearizable:?}");
            }
        }
    });
}
