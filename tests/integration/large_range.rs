//! Large answers through the real server: encoded in parts on several threads, with the
//! superseded values of a read of the past read from their segments straight into place.
//!
//! One member stores 2,000 values of 1 KiB (2 MiB, so an answer of all of them is encoded in
//! parts), then overwrites every other key. A range of all keys as of before the overwrites must
//! answer each key's first value (half of them from the cold segments), and a range now each
//! key's latest, every pair in key order with its revisions.

use crate::common;

use bytes::Bytes;
use common::{cluster, kv_client, start_all, Flavor};
use detcd::proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};

const KEYS: usize = 2_000;
const VALUE_BYTES: usize = 1024;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("large/{i:05}"))
}

/// A value that names its key and round in every byte run, so that a value in the wrong
/// place (or from the wrong revision) cannot pass.
fn value(i: usize, round: usize) -> Bytes {
    let stamp = format!("[{i:05}:{round}]");
    Bytes::from(stamp.repeat(VALUE_BYTES / stamp.len() + 1)[..VALUE_BYTES].to_string())
}

fn check(answer: &RangeResponse, expected_round: impl Fn(usize) -> usize) {
    assert_eq!(answer.kvs.len(), KEYS);
    assert_eq!(answer.count, KEYS as i64);
    assert!(!answer.more);
    for (i, kv) in answer.kvs.iter().enumerate() {
        assert_eq!(kv.key, key(i));
        assert_eq!(kv.value, value(i, expected_round(i)), "key {i}");
        assert_eq!(kv.version as usize, expected_round(i) + 1, "key {i}");
    }
}

#[test]
fn a_large_read_of_the_past_answers_every_superseded_value() {
    let mut members = cluster(Flavor::Detcd, 1, "large-range", &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut kv = runtime.block_on(kv_client(&members[0]));
    let mut put = |i: usize, round: usize| {
        let request = PutRequest {
            key: key(i),
            value: value(i, round),
            ..Default::default()
        };
        let answer = runtime.block_on(kv.put(request)).expect("put");
        answer.into_inner().header.expect("header").revision
    };
    let mut first_round = 0;
    for i in 0..KEYS {
        first_round = put(i, 0);
    }
    for i in (0..KEYS).step_by(2) {
        put(i, 1);
    }
    let all = |revision: i64| RangeRequest {
        key: Bytes::from("large/"),
        range_end: Bytes::from("large0"),
        revision,
        ..Default::default()
    };
    let mut kv = runtime.block_on(kv_client(&members[0]));
    let past = runtime
        .block_on(kv.range(all(first_round)))
        .expect("range of the past");
    check(&past.into_inner(), |_| 0);
    let now = runtime.block_on(kv.range(all(0))).expect("range now");
    check(&now.into_inner(), |i| usize::from(i % 2 == 0));
}
