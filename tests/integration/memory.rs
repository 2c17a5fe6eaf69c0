//! A member hands back the memory of a large answer once it is sent.
//!
//! One member stores 320 values of 64 KiB (20 MiB); once its resident memory has settled, it
//! answers four ranges of all of them (20 MiB each: the response, its encoding, the copies on
//! the way out). Within 10 s after the last answer its resident memory (VmRSS) must be back
//! within 12 MiB of where it was before the ranges. glibc alone keeps most of it: it raises its
//! own trim threshold to twice the largest block ever freed, and never trims below it.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, kv_client, rss_kib, start_all, Flavor};
use detcd::proto::etcdserverpb::{PutRequest, RangeRequest};

const KEYS: usize = 320;
const VALUE_BYTES: usize = 64 * 1024;
const RANGES: usize = 4;
const RSS_LEFT_MAX_KIB: u64 = 12 * 1024;
const SETTLE: Duration = Duration::from_secs(10);

/// The lowest VmRSS seen within `SETTLE`, sampled every 250 ms; stops early once at or below
/// `goal`.
fn settled_rss(pid: u32, goal: u64) -> u64 {
    let deadline = Instant::now() + SETTLE;
    let mut lowest = u64::MAX;
    while Instant::now() < deadline && lowest > goal {
        lowest = lowest.min(rss_kib(pid).expect("VmRSS"));
        std::thread::sleep(Duration::from_millis(250));
    }
    lowest
}

#[test]
fn a_member_returns_the_memory_of_large_ranges() {
    let mut members = cluster(Flavor::Detcd, 1, "memory", &[]);
    start_all(&mut members);
    let pid = members[0].pid().expect("running");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut kv = runtime.block_on(kv_client(&members[0]));
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    for i in 0..KEYS {
        let put = PutRequest {
            key: Bytes::from(format!("big/{i:04}")),
            value: value.clone(),
            ..Default::default()
        };
        runtime.block_on(kv.put(put)).expect("put");
    }
    // The puts' own garbage goes first, so that the baseline is the stored data.
    let before = settled_rss(pid, 0);

    for _ in 0..RANGES {
        let range = RangeRequest {
            key: Bytes::from("big/"),
            range_end: Bytes::from("big0"),
            ..Default::default()
        };
        let answer = runtime.block_on(kv.range(range)).expect("range");
        assert_eq!(answer.into_inner().kvs.len(), KEYS);
    }
    let after = settled_rss(pid, before + RSS_LEFT_MAX_KIB);
    assert!(
        after <= before + RSS_LEFT_MAX_KIB,
        "resident memory {after} KiB after the ranges, {before} KiB before"
    );
}
