//! The Watch API through a gRPC client (detcd's generated tonic clients) against a detcd member,
//! each scenario run against a real etcd 3.4 member too (when etcd is installed): every response
//! is written down as a line (the header's cluster_id, member_id and raft_term, which name the
//! member and the election, left out) and the two transcripts must be equal; the properties
//! that matter are then asserted on detcd's transcript alone, so that they hold without etcd.
//!
//! Both servers run with `--max-request-bytes=1048576` and progress notifications every second
//! (`--watch-progress-notify-interval=1s`; etcd 3.4 calls it
//! `--experimental-watch-progress-notify-interval`).
//!
//! Covered: the created response first, then events in revision order, a txn's events in one
//! response; 100 watchers on one stream each getting exactly its events; client-chosen watch ids,
//! a duplicate id, and generated ids skipping taken ones; empty ranges; from-key ranges; NOPUT and
//! NODELETE filters; prev_kv; start revisions in the past, in the future, at and below the
//! compacted revision and negative; WatchCancelRequest of a known and an unknown id;
//! WatchProgressRequest; periodic progress notifications; `hasleader=true` on a member that has
//! a leader; events larger than `--max-request-bytes`, with and without `fragment`, split where
//! etcd splits them; a half-closed stream; a watch created right after an acknowledged write;
//! start revision -1.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, etcd_available, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::watch_create_request::FilterType;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use detcd::proto::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tonic::transport::Channel;

type Kv = KvClient<Channel>;
type Watch = detcd::proto::etcdserverpb::watch_client::WatchClient<Channel>;

/// A client endpoint (`host:port`) of the member a scenario runs against.
type Endpoint = String;

async fn channel(endpoint: &str) -> Channel {
    let url = format!("http://{endpoint}");
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoint}: {e}"))
}

async fn kv_client(endpoint: &str) -> Kv {
    KvClient::new(channel(endpoint).await).max_decoding_message_size(usize::MAX)
}

async fn watch_client(endpoint: &str) -> Watch {
    Watch::new(channel(endpoint).await).max_decoding_message_size(usize::MAX)
}

const MAX_REQUEST_BYTES: usize = 1_048_576;

fn server_args(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Detcd => &[
            "--max-request-bytes=1048576",
            "--watch-progress-notify-interval=1s",
        ],
        Flavor::Etcd => &[
            "--max-request-bytes=1048576",
            "--experimental-watch-progress-notify-interval=1s",
        ],
    }
}

fn start(flavor: Flavor, tag: &str) -> Vec<Member> {
    let mut members = cluster(flavor, 1, tag, server_args(flavor));
    start_all(&mut members);
    members
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn create_req(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    }
}

/// A watch of `key` (to `range_end`) from `start`.
fn watch(key: &str, range_end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(key),
        range_end: b(range_end),
        start_revision: start,
        ..Default::default()
    }
}

fn cancel(watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    }
}

fn progress() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

async fn put(kv: &mut Kv, key: &str, value: &str) -> i64 {
    kv.put(PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("put {key}: {e}"))
    .into_inner()
    .header
    .unwrap()
    .revision
}

async fn delete(kv: &mut Kv, key: &str, range_end: &str) -> i64 {
    kv.delete_range(DeleteRangeRequest {
        key: b(key),
        range_end: b(range_end),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("delete {key}: {e}"))
    .into_inner()
    .header
    .unwrap()
    .revision
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })),
    }
}

async fn txn_puts(kv: &mut Kv, puts: &[(&str, &str)]) -> i64 {
    kv.txn(TxnRequest {
        success: puts.iter().map(|(k, v)| put_op(k, v)).collect(),
        ..Default::default()
    })
    .await
    .expect("txn")
    .into_inner()
    .header
    .unwrap()
    .revision
}

async fn current_revision(kv: &mut Kv) -> i64 {
    kv.range(detcd::proto::etcdserverpb::RangeRequest {
        key: b("\0"),
        count_only: true,
        ..Default::default()
    })
    .await
    .expect("range")
    .into_inner()
    .header
    .unwrap()
    .revision
}

// ---------------------------------------------------------------------------------------------
// One watch stream
// ---------------------------------------------------------------------------------------------

/// One bidirectional Watch stream.
struct Stream {
    tx: Option<mpsc::Sender<WatchRequest>>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream whose first request is `first` (the call returns once the server
    /// answered, which it may only do after a request).
    async fn open(endpoint: &str, first: WatchRequest, has_leader: bool) -> Stream {
        let mut client = watch_client(endpoint).await;
        let call = common::watch_call(&mut client, first, has_leader);
        let (tx, rx) = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the watch call answered in time")
            .expect("the watch call");
        Stream { tx: Some(tx), rx }
    }

    async fn send(&self, request: WatchRequest) {
        self.tx
            .as_ref()
            .expect("not closed")
            .send(request)
            .await
            .unwrap();
    }

    async fn create(&self, create: WatchCreateRequest) {
        self.send(create_req(create)).await
    }

    /// The next response, within 10 s.
    async fn next(&mut self) -> WatchResponse {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(e)) => panic!("the stream failed: {e}"),
            Err(_) => panic!("no response within 10 s"),
        }
    }

    /// The next response if one comes within `wait`.
    async fn maybe_next(&mut self, wait: Duration) -> Option<WatchResponse> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(e)) => panic!("the stream failed: {e}"),
            Err(_) => None,
        }
    }

    /// Responses until `done` says the transcript is complete.
    async fn until(
        &mut self,
        mut done: impl FnMut(&[WatchResponse]) -> bool,
    ) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        while !done(&out) {
            match self.maybe_next(Duration::from_secs(10)).await {
                Some(r) => out.push(r),
                None => panic!("no response within 10 s; so far {out:#?}"),
            }
        }
        out
    }
}

/// Events (of any response) in a transcript.
fn event_count(responses: &[WatchResponse]) -> usize {
    responses.iter().map(|r| r.events.len()).sum()
}

// ---------------------------------------------------------------------------------------------
// Transcripts
// ---------------------------------------------------------------------------------------------

fn text(bytes: &[u8]) -> String {
    if bytes.len() > 64 {
        format!("<{} bytes>", bytes.len())
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

fn kv_line(kv: &detcd::proto::mvccpb::KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{}{}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        if kv.lease != 0 {
            format!(" lease{}", kv.lease)
        } else {
            String::new()
        }
    )
}

/// A response as a line, without what names the member or the election.
fn line(r: &WatchResponse) -> String {
    let header = r
        .header
        .as_ref()
        .expect("every watch response has a header");
    assert!(
        header.cluster_id != 0 && header.member_id != 0 && header.raft_term != 0,
        "{r:?}"
    );
    let mut out = format!("id={} rev={}", r.watch_id, header.revision);
    for (flag, name) in [
        (r.created, "created"),
        (r.canceled, "canceled"),
        (r.fragment, "fragment"),
    ] {
        if flag {
            out += " ";
            out += name;
        }
    }
    if r.compact_revision != 0 {
        out += &format!(" compact={}", r.compact_revision);
    }
    if !r.cancel_reason.is_empty() {
        out += &format!(" reason={:?}", r.cancel_reason);
    }
    for e in &r.events {
        let kind = if e.r#type == EventType::Delete as i32 {
            "DEL"
        } else {
            "PUT"
        };
        out += &format!(
            " [{kind} {}",
            kv_line(e.kv.as_ref().expect("an event has a kv"))
        );
        if let Some(prev) = &e.prev_kv {
            out += &format!(" prev {}", kv_line(prev));
        }
        out += "]";
    }
    out
}

/// A response of events as one line per revision, each headed by that revision: how events of
/// several revisions are grouped into responses is the server's choice (etcd too groups them
/// when a watcher catches up), their order and content are not.
fn revision_lines(r: &WatchResponse) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < r.events.len() {
        let revision = |i: usize| r.events[i].kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let end = (start..r.events.len())
            .find(|&i| revision(i) != revision(start))
            .unwrap_or(r.events.len());
        let group = WatchResponse {
            events: r.events[start..end].to_vec(),
            ..r.clone()
        };
        let line = line(&group);
        let header = format!("rev={}", r.header.as_ref().map_or(0, |h| h.revision));
        out.push(line.replacen(&header, &format!("rev={}", revision(start)), 1));
        start = end;
    }
    out
}

fn lines(responses: &[WatchResponse]) -> Vec<String> {
    responses.iter().map(line).collect()
}

/// Runs `scenario` against a fresh detcd member and, when installed, a fresh etcd member;
/// returns detcd's result and etcd's.
fn run_both<T, F, Fut>(tag: &str, scenario: F) -> (T, Option<T>)
where
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ours = start(Flavor::Detcd, &format!("{tag}-detcd"));
    let mut theirs = if etcd_available() {
        Some(start(Flavor::Etcd, &format!("{tag}-etcd")))
    } else {
        eprintln!("NOTE: real etcd is not installed; only detcd's own answers are checked");
        None
    };
    let expected = theirs
        .as_ref()
        .map(|m| runtime.block_on(scenario(m[0].spec.endpoint())));
    let got = common::with_logs_on_failure(&ours, || {
        runtime.block_on(scenario(ours[0].spec.endpoint()))
    });
    ours[0].kill();
    if let Some(theirs) = theirs.as_mut() {
        theirs[0].kill();
    }
    (got, expected)
}

/// Asserts two transcripts are equal, showing the lines that differ.
fn assert_same(tag: &str, got: &[String], expected: &[String]) {
    if std::env::var_os("WATCH_TEST_DUMP").is_some() {
        eprintln!("--- {tag} etcd:\n{expected:#?}\n--- detcd:\n{got:#?}");
    }
    let width = expected.len().max(got.len());
    let mut diff = String::new();
    for i in 0..width {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            diff += &format!("#{i}\n  etcd:  {e:?}\n  detcd: {g:?}\n");
        }
    }
    assert!(diff.is_empty(), "{tag}: detcd answers differently:\n{diff}");
}

/// Runs `scenario` against detcd and, when installed, etcd; asserts their transcripts are
/// equal; returns detcd's.
fn compare<F, Fut>(tag: &str, scenario: F) -> Vec<String>
where
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let (got, expected) = run_both(tag, scenario);
    if let Some(expected) = expected {
        assert_same(tag, &got, &expected);
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// History, then a watch replaying it and following live writes: the created response first,
/// then the history in one response, then the new revisions (a txn's events together), in
/// revision order; a watch from a future revision starts there.
async fn ordering(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let base = current_revision(&mut kv).await;
    put(&mut kv, "o/a", "1").await;
    put(&mut kv, "o/b", "1").await;
    put(&mut kv, "o/a", "2").await;
    delete(&mut kv, "o/b", "").await;
    put(&mut kv, "p", "outside").await;
    let mut out = vec![format!("base {base}")];

    let mut s = Stream::open(&member, create_req(watch("o/", "o0", 1)), false).await;
    let history = s.until(|r| event_count(r) >= 4).await;
    out.extend(lines(&history));
    // A watch from the future on the same stream.
    let now = current_revision(&mut kv).await;
    s.create(watch("o/", "o0", now + 3)).await;
    out.push(line(&s.next().await));
    put(&mut kv, "o/c", "1").await; // now+1
    txn_puts(&mut kv, &[("o/d", "1"), ("p", "x"), ("o/a", "3")]).await; // now+2
    delete(&mut kv, "o/", "o0").await; // now+3
    put(&mut kv, "o/e", "1").await; // now+4
                                    // Watcher 0 gets 4 revisions, watcher 1 the last two.
    let live = s
        .until(|r| {
            let by = |id| {
                r.iter()
                    .filter(|x| x.watch_id == id)
                    .map(|x| revision_lines(x).len())
                    .sum::<usize>()
            };
            by(0) >= 4 && by(1) >= 2
        })
        .await;
    // Responses of different watchers may interleave either way; each one's are ordered.
    let mut by_watcher: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in &live {
        by_watcher
            .entry(r.watch_id)
            .or_default()
            .extend(revision_lines(r));
    }
    for (id, ls) in by_watcher {
        out.push(format!("watcher {id}:"));
        out.extend(ls);
    }
    assert!(s.maybe_next(Duration::from_millis(300)).await.is_none());
    out
}

#[test]
fn created_first_then_events_in_revision_order() {
    let t = compare("watch-order", ordering);
    // base 3 (after the start-up probe); history at 4..=8.
    assert_eq!(t[0], "base 3");
    assert_eq!(t[1], "id=0 rev=8 created", "{t:#?}");
    assert_eq!(
        t[2],
        "id=0 rev=8 [PUT o/a=1 c4 m4 v1] [PUT o/b=1 c5 m5 v1] [PUT o/a=2 c4 m6 v2] [DEL o/b= c0 m7 v0]",
        "{t:#?}"
    );
    assert_eq!(t[3], "id=1 rev=8 created");
    assert_eq!(
        &t[4..],
        [
            "watcher 0:",
            "id=0 rev=9 [PUT o/c=1 c9 m9 v1]",
            "id=0 rev=10 [PUT o/d=1 c10 m10 v1] [PUT o/a=3 c4 m10 v3]",
            "id=0 rev=11 [DEL o/a= c0 m11 v0] [DEL o/c= c0 m11 v0] [DEL o/d= c0 m11 v0]",
            "id=0 rev=12 [PUT o/e=1 c12 m12 v1]",
            "watcher 1:",
            "id=1 rev=11 [DEL o/a= c0 m11 v0] [DEL o/c= c0 m11 v0] [DEL o/d= c0 m11 v0]",
            "id=1 rev=12 [PUT o/e=1 c12 m12 v1]",
        ],
        "{t:#?}"
    );
}

/// 100 watchers on one stream: 90 on a key each, 5 on prefixes, 5 on all keys from a key on;
/// writes hit some keys several times; each watcher gets exactly its events, in order.
async fn many_watchers(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let key = |i: usize| format!("m/{i:02}");
    let mut s = Stream::open(&member, create_req(watch(&key(0), "", 0)), false).await;
    for i in 1..90 {
        s.create(watch(&key(i), "", 0)).await;
    }
    for p in 0..5 {
        // m/0, m/1, ... m/4 as prefixes: m/0 matches m/00..m/09.
        let prefix = format!("m/{p}");
        let end = format!("m/{}", p + 1);
        s.create(watch(&prefix, &end, 0)).await;
    }
    for f in 0..5 {
        s.create(watch(&key(80 + f), "\0", 0)).await;
    }
    let created = s.until(|r| r.len() >= 100).await;
    let mut out: Vec<String> = Vec::new();
    let ids: Vec<i64> = created.iter().map(|r| r.watch_id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<i64>>(), "{:?}", lines(&created));
    assert!(created.iter().all(|r| r.created && !r.canceled));
    // Writes: each key once, keys 0..10 three more times, one txn over several keys.
    for i in 0..90 {
        put(&mut kv, &key(i), "a").await;
    }
    for round in 0..3 {
        for i in 0..10 {
            put(&mut kv, &key(i), &format!("r{round}")).await;
        }
    }
    txn_puts(&mut kv, &[(&key(5), "t"), (&key(85), "t"), (&key(89), "t")]).await;
    delete(&mut kv, &key(3), "").await;
    // Expected event counts per watcher.
    let mut expected = vec![0usize; 100];
    let mut events_of_key = vec![1usize; 90];
    for n in events_of_key.iter_mut().take(10) {
        *n += 3;
    }
    for i in [5, 85, 89, 3] {
        events_of_key[i] += 1;
    }
    for (i, n) in events_of_key.iter().enumerate() {
        expected[i] += n;
        if i < 50 {
            expected[90 + i / 10] += n;
        }
        for f in 0..5 {
            if i >= 80 + f {
                expected[95 + f] += n;
            }
        }
    }
    let total: usize = expected.iter().sum();
    let mut got: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut count = 0;
    while count < total {
        let r = s.next().await;
        count += r.events.len();
        got.entry(r.watch_id)
            .or_default()
            .extend(revision_lines(&r));
    }
    assert!(
        s.maybe_next(Duration::from_millis(300)).await.is_none(),
        "more events than written"
    );
    for (id, ls) in &got {
        let events: usize = ls.iter().map(|l| l.matches(" [").count()).sum();
        assert_eq!(events, expected[*id as usize], "watcher {id}: {ls:#?}");
        // Revisions only grow.
        let revs: Vec<i64> = ls
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap()[4..].parse().unwrap())
            .collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "watcher {id}: {ls:#?}"
        );
        out.push(format!("watcher {id}:"));
        out.extend(ls.iter().cloned());
    }
    out
}

#[test]
fn many_watchers_on_one_stream_each_get_exactly_their_events() {
    let t = compare("watch-many", many_watchers);
    let watcher = |id: i64| {
        let from = t
            .iter()
            .position(|l| *l == format!("watcher {id}:"))
            .unwrap();
        t[from + 1..]
            .iter()
            .take_while(|l| !l.starts_with("watcher "))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(watcher(3).len(), 5, "{:#?}", watcher(3));
    assert!(watcher(3)[4].contains("[DEL m/03="), "{:#?}", watcher(3));
    assert_eq!(watcher(50).len(), 1);
    // The txn's events for the from-key watchers come together.
    assert!(
        watcher(99)
            .iter()
            .any(|l| l.contains("[PUT m/85=t") && l.contains("[PUT m/89=t")),
        "{:#?}",
        watcher(99)
    );
}

/// Client-chosen ids, a duplicate, generated ids skipping taken ones, events carrying the
/// chosen id, a cancel and a new watcher under a canceled id.
async fn ids(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let with_id = |key: &str, id: i64| WatchCreateRequest {
        watch_id: id,
        ..watch(key, "", 0)
    };
    let mut s = Stream::open(&member, create_req(with_id("a", 7)), false).await;
    s.create(with_id("b", 7)).await; // duplicate
    s.create(with_id("c", 2)).await;
    s.create(watch("d", "", 0)).await; // 0
    s.create(watch("e", "", 0)).await; // 1
    s.create(watch("f", "", 0)).await; // 3: 2 is taken
    s.create(with_id("g", 1)).await; // duplicate of a generated id
    s.create(with_id("h", -5)).await; // a negative id
    let mut out = lines(&s.until(|r| r.len() >= 8).await);
    put(&mut kv, "a", "1").await;
    out.push(line(&s.next().await));
    put(&mut kv, "h", "1").await;
    out.push(line(&s.next().await));
    s.send(cancel(7)).await;
    out.push(line(&s.next().await));
    s.create(with_id("a2", 7)).await; // the id is free again
    out.push(line(&s.next().await));
    put(&mut kv, "a", "2").await;
    put(&mut kv, "a2", "1").await;
    out.push(line(&s.next().await));
    s.create(watch("i", "", 0)).await; // 4
    out.push(line(&s.next().await));
    out
}

#[test]
fn client_chosen_and_duplicate_watch_ids() {
    let t = compare("watch-ids", ids);
    let dup = "id=-1 rev=3 created canceled reason=\"mvcc: duplicate watch ID provided on the WatchStream\"";
    assert_eq!(
        t,
        [
            "id=7 rev=3 created",
            dup,
            "id=2 rev=3 created",
            "id=0 rev=3 created",
            "id=1 rev=3 created",
            "id=3 rev=3 created",
            dup,
            "id=-5 rev=3 created",
            "id=7 rev=4 [PUT a=1 c4 m4 v1]",
            "id=-5 rev=5 [PUT h=1 c5 m5 v1]",
            "id=7 rev=5 canceled",
            "id=7 rev=5 created",
            "id=7 rev=7 [PUT a2=1 c7 m7 v1]",
            "id=4 rev=7 created",
        ]
    );
}

/// Empty ranges are refused; a from-key range (`\0`) is not; NOPUT and NODELETE filters; prev_kv.
async fn ranges_filters_prev_kv(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    put(&mut kv, "f/1", "old").await; // 4
    let filtered = |filters: Vec<FilterType>, prev_kv: bool| WatchCreateRequest {
        filters: filters.into_iter().map(|f| f as i32).collect(),
        prev_kv,
        ..watch("f/", "f0", 0)
    };
    let mut s = Stream::open(&member, create_req(watch("b", "a", 0)), false).await;
    s.create(watch("b", "b", 0)).await;
    s.create(watch("f/", "\0", 0)).await; // 0: from f/ on
    s.create(filtered(vec![FilterType::Noput], false)).await; // 1
    s.create(filtered(vec![FilterType::Nodelete], false)).await; // 2
    s.create(filtered(
        vec![FilterType::Noput, FilterType::Nodelete],
        true,
    ))
    .await; // 3
    s.create(filtered(vec![], true)).await; // 4
    let mut out = lines(&s.until(|r| r.len() >= 7).await);
    put(&mut kv, "f/1", "new").await; // 5
    put(&mut kv, "f/2", "x").await; // 6
    delete(&mut kv, "f/1", "").await; // 7
    put(&mut kv, "g", "x").await; // 8: only the from-key watcher

    // Revisions per watcher: 0: 4, 1: 1, 2: 2, 3: none, 4: 3. A watcher may get several in one
    // response (etcd's do when they catch up; detcd's when a busy machine delays the fan-out).
    let revisions = |r: &[WatchResponse]| r.iter().map(|r| revision_lines(r).len()).sum::<usize>();
    let live = s.until(|r| revisions(r) >= 4 + 1 + 2 + 3).await;
    let mut by_watcher: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in &live {
        by_watcher
            .entry(r.watch_id)
            .or_default()
            .extend(revision_lines(r));
    }
    for (id, ls) in by_watcher {
        out.push(format!("watcher {id}:"));
        out.extend(ls);
    }
    assert!(s.maybe_next(Duration::from_millis(300)).await.is_none());
    out
}

#[test]
fn empty_ranges_filters_and_prev_kv() {
    let t = compare("watch-filters", ranges_filters_prev_kv);
    let empty = "id=-1 rev=4 created canceled reason=\"mvcc: watcher range is empty\"";
    assert_eq!(
        t,
        [
            empty,
            empty,
            "id=0 rev=4 created",
            "id=1 rev=4 created",
            "id=2 rev=4 created",
            "id=3 rev=4 created",
            "id=4 rev=4 created",
            "watcher 0:",
            "id=0 rev=5 [PUT f/1=new c4 m5 v2]",
            "id=0 rev=6 [PUT f/2=x c6 m6 v1]",
            "id=0 rev=7 [DEL f/1= c0 m7 v0]",
            "id=0 rev=8 [PUT g=x c8 m8 v1]",
            "watcher 1:",
            "id=1 rev=7 [DEL f/1= c0 m7 v0]",
            "watcher 2:",
            "id=2 rev=5 [PUT f/1=new c4 m5 v2]",
            "id=2 rev=6 [PUT f/2=x c6 m6 v1]",
            "watcher 4:",
            "id=4 rev=5 [PUT f/1=new c4 m5 v2 prev f/1=old c4 m4 v1]",
            "id=4 rev=6 [PUT f/2=x c6 m6 v1]",
            "id=4 rev=7 [DEL f/1= c0 m7 v0 prev f/1=new c4 m5 v2]",
        ]
    );
}

/// A txn whose nested txns put a key and then delete it changes the key twice at one revision
/// (etcd's duplicate-key check allows it): both events carry, as prev_kv, the key as it was
/// before the txn (etcd reads prev_kv at the revision before the event's).
async fn changed_twice_in_one_txn(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    put(&mut kv, "t/k", "old").await;
    let mut s = Stream::open(
        &member,
        create_req(WatchCreateRequest {
            prev_kv: true,
            ..watch("t/", "t0", 0)
        }),
        false,
    )
    .await;
    let mut out = lines(&s.until(|r| !r.is_empty()).await);
    let nested = |op: RequestOp| RequestOp {
        request: Some(request_op::Request::RequestTxn(TxnRequest {
            success: vec![op],
            ..Default::default()
        })),
    };
    let delete_op = RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b("t/k"),
                ..Default::default()
            },
        )),
    };
    kv.txn(TxnRequest {
        success: vec![nested(put_op("t/k", "mid")), nested(delete_op)],
        ..Default::default()
    })
    .await
    .expect("etcd accepts a put and a delete of one key in two nested txns");
    out.extend(lines(&s.until(|r| event_count(r) >= 2).await));
    out
}

#[test]
fn a_key_changed_twice_in_one_txn_has_the_same_prev_kv_in_both_events() {
    let t = compare("watch-twice", changed_twice_in_one_txn);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t[1].contains("prev t/k=old"), "{t:?}");
    assert!(!t[1].contains("prev t/k=mid"), "{t:?}");
}

/// Cancel of a known watcher (a canceled response), of an unknown one (no response: the next
/// one is the progress response asked after it), progress requests.
async fn cancel_and_progress(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let mut s = Stream::open(&member, progress(), false).await;
    let mut out = vec![line(&s.next().await)]; // no watchers: the current revision
    s.create(watch("c", "", 0)).await;
    out.push(line(&s.next().await));
    put(&mut kv, "c", "1").await;
    out.push(line(&s.next().await));
    put(&mut kv, "other", "1").await;
    s.send(progress()).await;
    out.push(line(&s.next().await)); // synced: the current revision, which c did not change
    s.send(cancel(55)).await;
    s.send(progress()).await;
    out.push(line(&s.next().await));
    s.send(cancel(0)).await;
    out.push(line(&s.next().await));
    s.send(cancel(0)).await; // again: unknown now
    put(&mut kv, "c", "2").await; // nobody watches it any more
    s.send(progress()).await;
    out.push(line(&s.next().await));
    // A watcher from the future: progress still answers the current revision (etcd 3.4).
    let now = current_revision(&mut kv).await;
    s.create(watch("c", "", now + 10)).await;
    out.push(line(&s.next().await));
    s.send(progress()).await;
    out.push(line(&s.next().await));
    assert!(s.maybe_next(Duration::from_millis(300)).await.is_none());
    out
}

#[test]
fn cancel_and_progress_requests() {
    let t = compare("watch-cancel", cancel_and_progress);
    assert_eq!(
        t,
        [
            "id=-1 rev=3",
            "id=0 rev=3 created",
            "id=0 rev=4 [PUT c=1 c4 m4 v1]",
            "id=-1 rev=5",
            "id=-1 rev=5",
            "id=0 rev=5 canceled",
            "id=-1 rev=6",
            "id=1 rev=6 created",
            "id=-1 rev=6",
        ]
    );
}

/// Periodic progress notifications (every second, the server flag): only to the watcher that
/// asked, carrying its id and the current revision, no events.
async fn progress_notify(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let notify = WatchCreateRequest {
        progress_notify: true,
        ..watch("pn", "", 0)
    };
    let mut s = Stream::open(&member, create_req(notify), false).await;
    s.create(watch("pn", "", 0)).await; // 1, no notifications
    let mut out = lines(&s.until(|r| r.len() >= 2).await);
    put(&mut kv, "elsewhere", "1").await; // 4
                                          // Within 3 s, at least one notification; all for watcher 0, at revision 4.
    let mut notes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Some(r) = s
        .maybe_next(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        notes.push(line(&r));
    }
    assert!(!notes.is_empty(), "no progress notification in 3.5 s");
    assert!(notes.len() <= 4, "too many notifications: {notes:#?}");
    notes.dedup();
    out.extend(notes);
    out
}

#[test]
fn periodic_progress_notifications() {
    let t = compare("watch-notify", progress_notify);
    assert_eq!(
        t,
        ["id=0 rev=3 created", "id=1 rev=3 created", "id=0 rev=4"]
    );
}

/// Start revisions at, below and far below the compacted revision, and negative ones: below,
/// the watcher is created and then canceled with the compacted revision (etcd 3.4 leaves the
/// revision out of that response's header, and gives no reason).
async fn compaction(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    for v in ["1", "2", "3", "4"] {
        put(&mut kv, "k", v).await; // 4..=7
    }
    let mut s = Stream::open(&member, create_req(watch("k", "", -5)), false).await;
    // Nothing compacted yet (etcd's compacted revision is then -1): -5 is below it, -1 not.
    let mut out = lines(&s.until(|r| r.len() >= 2).await);
    kv.compact(CompactionRequest {
        revision: 6,
        physical: true,
    })
    .await
    .expect("compact");
    for start in [6, 5, 1, -1, -5] {
        s.create(watch("k", "", start)).await;
        let n = 2;
        out.extend(lines(&s.until(|r| r.len() >= n).await));
    }
    put(&mut kv, "k", "5").await; // 8
    out.push(line(&s.next().await));
    assert!(s.maybe_next(Duration::from_millis(300)).await.is_none());
    out
}

#[test]
fn start_revisions_at_below_and_before_the_compacted_one() {
    let t = compare("watch-compact", compaction);
    assert_eq!(
        t,
        [
            "id=0 rev=7 created",
            "id=0 rev=0 canceled compact=-1",
            "id=1 rev=7 created",
            "id=1 rev=7 [PUT k=3 c4 m6 v3] [PUT k=4 c4 m7 v4]",
            "id=2 rev=7 created",
            "id=2 rev=0 canceled compact=6",
            "id=3 rev=7 created",
            "id=3 rev=0 canceled compact=6",
            "id=4 rev=7 created",
            "id=4 rev=0 canceled compact=6",
            "id=5 rev=7 created",
            "id=5 rev=0 canceled compact=6",
            "id=1 rev=8 [PUT k=5 c4 m8 v5]",
        ]
    );
}

/// `hasleader=true` (what clientv3's WithRequireLeader sends) on a member that has a leader: an
/// ordinary stream.
async fn has_leader(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let mut s = Stream::open(&member, create_req(watch("hl", "", 0)), true).await;
    let mut out = vec![line(&s.next().await)];
    put(&mut kv, "hl", "1").await;
    out.push(line(&s.next().await));
    s.send(progress()).await;
    out.push(line(&s.next().await));
    out
}

#[test]
fn has_leader_metadata_on_a_member_with_a_leader() {
    let t = compare("watch-hasleader", has_leader);
    assert_eq!(
        t,
        [
            "id=0 rev=3 created",
            "id=0 rev=4 [PUT hl=1 c4 m4 v1]",
            "id=-1 rev=4"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Large events and fragments
// ---------------------------------------------------------------------------------------------

/// Four values of 600 KB under f/, written one by one (a txn writing all four is larger than
/// --max-request-bytes and refused, as gRPC refuses any message larger than it + 512 KiB), then
/// deleted at one revision: with prev_kv, that revision's events are 2.4 MB. Returns the
/// transcript of watches from that revision with and without `fragment`, and the sizes of the
/// responses.
async fn large_events(member: Endpoint) -> (Vec<String>, Vec<Vec<(usize, bool, usize)>>) {
    let mut kv = kv_client(&member).await;
    let big = "x".repeat(600_000);
    let mut out = Vec::new();
    let refused = kv
        .txn(TxnRequest {
            success: (0..4).map(|i| put_op(&format!("f/{i}"), &big)).collect(),
            ..Default::default()
        })
        .await
        .expect_err("a 2.4 MB txn is refused");
    out.push(format!("{:?} {}", refused.code(), refused.message()));
    let quarter = "y".repeat(300_000);
    let refused = kv
        .txn(TxnRequest {
            success: (0..4)
                .map(|i| put_op(&format!("f/{i}"), &quarter))
                .collect(),
            ..Default::default()
        })
        .await
        .expect_err("a 1.2 MB txn is refused");
    out.push(format!("{:?} {}", refused.code(), refused.message()));
    for i in 0..4 {
        put(&mut kv, &format!("f/{i}"), &big).await;
    }
    let deleted = delete(&mut kv, "f/", "f0").await;
    out.push(format!("deleted at {deleted}"));
    let mut sizes = Vec::new();
    for (fragment, prev_kv) in [(true, true), (false, true), (true, false)] {
        let create = WatchCreateRequest {
            fragment,
            prev_kv,
            ..watch("f/", "f0", deleted)
        };
        let mut s = Stream::open(&member, create_req(create), false).await;
        let responses = s.until(|r| event_count(r) >= 4).await;
        assert!(s.maybe_next(Duration::from_millis(300)).await.is_none());
        out.push(format!("fragment={fragment} prev_kv={prev_kv}:"));
        // The created response's header revision is checked by
        // `a_watch_created_after_an_acknowledged_write_starts_after_it`.
        let created = &responses[0];
        assert!(created.created && created.events.is_empty(), "{created:?}");
        out.extend(lines(&responses[1..]));
        sizes.push(
            responses
                .iter()
                .filter(|r| !r.created)
                .map(|r| {
                    use prost::Message;
                    (r.events.len(), r.fragment, r.encoded_len())
                })
                .collect(),
        );
    }
    (out, sizes)
}

/// Events larger than --max-request-bytes: a watcher that asked for fragments gets them split
/// over several responses, all but the last marked `fragment`, together the revision's events in
/// order; one that did not gets one large response; small events are never split. Everything but
/// where the events are split is compared with etcd here (see
/// `fragments_split_where_etcd_splits` for that).
#[test]
fn events_larger_than_max_request_bytes_with_and_without_fragments() {
    let ((t, sizes), theirs) = run_both("watch-frag", large_events);
    assert_eq!(
        t[0],
        "ResourceExhausted grpc: received message larger than max (2400068 vs. 1572864)"
    );
    assert_eq!(t[1], "InvalidArgument etcdserver: request is too large");
    // fragment, prev_kv: several responses, all but the last marked fragment, each under the
    // limit, together the four events in order.
    let split = &sizes[0];
    assert!(split.len() > 1, "{split:?}");
    assert!(
        split[..split.len() - 1].iter().all(|(_, f, _)| *f),
        "{split:?}"
    );
    assert!(!split.last().unwrap().1, "{split:?}");
    assert_eq!(split.iter().map(|(n, ..)| n).sum::<usize>(), 4);
    assert!(
        split
            .iter()
            .all(|(_, _, size)| *size < MAX_REQUEST_BYTES + 512 * 1024),
        "{split:?}"
    );
    let joined: String = unsplit(&t, "fragment=true prev_kv=true:");
    let event = |i: i64| {
        format!(
            " [DEL f/{i}= c0 m8 v0 prev f/{i}=<600000 bytes> c{} m{} v1]",
            4 + i,
            4 + i
        )
    };
    assert_eq!(joined, (0..4).map(event).collect::<String>());
    // Without fragment: one response of 2.4 MB.
    assert_eq!(sizes[1].len(), 1, "{:?}", sizes[1]);
    assert!(sizes[1][0].2 > 2_400_000);
    // Small events are never split.
    assert_eq!(sizes[2].len(), 1, "{:?}", sizes[2]);
    if let Some((their_t, _)) = theirs {
        let without_split = |t: &[String]| -> Vec<String> {
            let at = t
                .iter()
                .position(|l| l == "fragment=true prev_kv=true:")
                .unwrap();
            let end = t
                .iter()
                .position(|l| l == "fragment=false prev_kv=true:")
                .unwrap();
            let mut out = t[..at].to_vec();
            out.push(unsplit(t, "fragment=true prev_kv=true:"));
            out.extend(t[end..].iter().cloned());
            out
        };
        assert_same("watch-frag", &without_split(&t), &without_split(&their_t));
    }
}

/// The events of the responses after `title` up to the next title, joined.
fn unsplit(t: &[String], title: &str) -> String {
    let at = t.iter().position(|l| l == title).unwrap();
    t[at + 1..]
        .iter()
        .take_while(|l| !l.ends_with(':'))
        .filter(|l| !l.contains(" created"))
        .map(|l| l[l.find(" [").unwrap_or(l.len())..].to_string())
        .collect()
}

/// etcd splits a fragmented response when it reaches the watch server's limit, which is
/// `--max-request-bytes` + 512 KiB allowed for gRPC overhead: with --max-request-bytes=1048576,
/// four 600 KB events go as 2 + 2 (responses of 1,200,096 and 1,200,094 bytes). detcd once split
/// at `--max-request-bytes` itself (1 + 1 + 1 + 1).
#[test]
fn fragments_split_where_etcd_splits() {
    let ((t, _), theirs) = run_both("watch-frag-split", large_events);
    let Some((their_t, _)) = theirs else {
        eprintln!("NOTE: real etcd is not installed; nothing to compare");
        return;
    };
    assert_same("watch-frag-split", &t, &their_t);
}

// ---------------------------------------------------------------------------------------------
// Differences found while writing these tests, since fixed
// ---------------------------------------------------------------------------------------------

/// A client that sends its create request and then closes its side of the stream (half-close,
/// as a gRPC client does when its request stream ends) still gets the watcher's events: etcd's
/// recvLoop returns on EOF without ending the stream, which lives until the client cancels it.
async fn half_close(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let mut s = Stream::open(&member, create_req(watch("hc", "", 0)), false).await;
    let mut out = vec![line(&s.next().await)];
    s.tx = None; // half-close
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&mut kv, "hc", "1").await;
    match tokio::time::timeout(Duration::from_secs(3), s.rx.message()).await {
        Ok(Ok(Some(r))) => out.push(line(&r)),
        Ok(Ok(None)) => out.push("the stream ended".into()),
        Ok(Err(e)) => out.push(format!("the stream failed: {e}")),
        Err(_) => out.push("nothing within 3 s".into()),
    }
    out
}

/// detcd once ended the response stream as soon as the client half-closed its request stream,
/// dropping its watchers; etcd keeps serving them until the client cancels the call.
#[test]
fn a_half_closed_stream_keeps_delivering() {
    let (got, expected) = run_both("watch-halfclose", half_close);
    if let Some(expected) = &expected {
        assert_eq!(
            expected,
            &["id=0 rev=3 created", "id=0 rev=4 [PUT hc=1 c4 m4 v1]"]
        );
    }
    assert_eq!(
        got,
        ["id=0 rev=3 created", "id=0 rev=4 [PUT hc=1 c4 m4 v1]"]
    );
}

/// Puts a key, then creates a watch of it from the current revision (start_revision 0) on one
/// stream, 1000 times: the created response's header revision must be at least the revision the
/// put was acknowledged at, and the first event the next put's. Returns the misses.
async fn created_after_write(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let mut s = Stream::open(&member, progress(), false).await;
    s.next().await;
    let mut misses = Vec::new();
    for i in 0..1000 {
        let acked = put(&mut kv, "lag", &i.to_string()).await;
        s.create(watch("lag", "", 0)).await;
        let created = s.next().await;
        assert!(created.created, "{created:?}");
        let header = created.header.as_ref().unwrap().revision;
        let next = put(&mut kv, "lag", "next").await;
        let mut first = s.next().await;
        if header < acked {
            misses.push(format!(
                "put acknowledged at {acked}, then the created header says {header}"
            ));
        }
        let first_revision = first.events[0].kv.as_ref().unwrap().mod_revision;
        if first_revision != next {
            misses.push(format!(
                "watch created after the put acknowledged at {acked} delivered it (event at \
                 {first_revision})"
            ));
            first = s.next().await;
            assert_eq!(first.events[0].kv.as_ref().unwrap().mod_revision, next);
        }
        s.send(cancel(created.watch_id)).await;
        assert!(s.next().await.canceled);
    }
    misses
}

/// A watch created from the current revision right after a write was acknowledged by the same
/// member starts after that write, as etcd's do (it updates its watchers within the apply).
/// detcd's watch hub runs on a thread of its own; it once learned of applied revisions after the
/// answers went out (4 to 16 of 1000 rounds started before the write: "put acknowledged at 104,
/// then the created header says 103"). Now the driver leaves each batch's feed before it sends
/// the batch's answers, and the watch task takes pending feeds before each request.
#[test]
fn a_watch_created_after_an_acknowledged_write_starts_after_it() {
    let (got, expected) = run_both("watch-lag", created_after_write);
    if let Some(expected) = &expected {
        assert!(expected.is_empty(), "etcd: {expected:#?}");
    }
    assert!(got.is_empty(), "{} misses: {got:#?}", got.len());
}

/// start_revision -1 before anything was compacted (etcd's compacted revision is then -1, so
/// -1 is not below it).
async fn minus_one(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    put(&mut kv, "k", "1").await; // 4
    let mut s = Stream::open(&member, create_req(watch("k", "", -1)), false).await;
    let mut out = vec![line(&s.next().await)];
    if let Some(r) = s.maybe_next(Duration::from_millis(500)).await {
        out.push(line(&r));
    }
    put(&mut kv, "k", "2").await; // 5
    out.push(line(&s.next().await));
    out
}

/// With nothing compacted, etcd 3.4 treats start_revision -1 as "from now": the watcher is neither
/// canceled (-1 is not below the compacted revision -1) nor served any history (its unsynced
/// range starts at revision -1, which encodes above every stored revision), so it gets only new
/// events. (-5 gives a canceled response with compact_revision -1; after a compaction, every
/// negative start is canceled with the compacted revision.) detcd once served it the whole
/// history.
#[test]
fn start_revision_minus_one_means_from_now() {
    let (got, expected) = run_both("watch-minus-one", minus_one);
    let etcds = ["id=0 rev=4 created", "id=0 rev=5 [PUT k=2 c4 m5 v2]"];
    if let Some(expected) = &expected {
        assert_eq!(expected, &etcds);
    }
    assert_eq!(got, etcds);
}

/// As `created_after_write`, but each watch is the first stream of a member nobody watched
/// while the write was applied (detcd then sends the watch thread no feeds): 30 rounds of a
/// put, then a new stream whose created header and first event must come after that put.
async fn first_stream_after_write(member: Endpoint) -> Vec<String> {
    let mut kv = kv_client(&member).await;
    let mut misses = Vec::new();
    for i in 0..30 {
        // Let the previous stream's close land, so that no stream is open during the put.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked = put(&mut kv, "first", &i.to_string()).await;
        let mut s = Stream::open(&member, create_req(watch("first", "", 0)), false).await;
        let created = s.next().await;
        assert!(created.created, "{created:?}");
        let header = created.header.as_ref().unwrap().revision;
        if header < acked {
            misses.push(format!(
                "put acknowledged at {acked}, created header {header}"
            ));
        }
        let next = put(&mut kv, "first", "next").await;
        let first = s.next().await;
        let revision = first.events[0].kv.as_ref().unwrap().mod_revision;
        if revision != next {
            misses.push(format!("first event at {revision}, expected {next}"));
        }
    }
    misses
}

/// A member nobody watches sends its watch thread no feeds (writes then pay nothing for
/// watch); the first stream to open waits for a fresh one, so it still starts after every
/// write acknowledged before it.
#[test]
fn the_first_stream_after_none_starts_after_acknowledged_writes() {
    let (got, expected) = run_both("watch-first", first_stream_after_write);
    if let Some(expected) = &expected {
        assert!(expected.is_empty(), "etcd: {expected:#?}");
    }
    assert!(got.is_empty(), "{} misses: {got:#?}", got.len());
}
