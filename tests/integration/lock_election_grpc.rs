//! The `v3lockpb.Lock` and `v3electionpb.Election` services through gRPC clients (detcd's
//! generated tonic clients), each scenario run against a detcd member and a real etcd 3.4
//! member (when etcd is installed): every response or error is written down as a line and the
//! two transcripts must be equal; the properties that matter are then asserted on detcd's
//! transcript alone, so that they hold without etcd.
//!
//! A line shows a response's header revision only (cluster_id, member_id and raft_term name the
//! member and the election), an error as `error <gRPC code> <message>`. Lease ids differ between
//! servers: each is written `<Ln>`, numbered by first appearance in the transcript, in key names
//! (`name/<lease id in hex>`) as in numeric fields, so a transcript still shows which lease is
//! which. Both servers start empty and see the same requests, so revisions must match exactly.
//!
//! The calls are shaped like clientv3's: etcd 3.4 implements both services on its own client
//! (the `concurrency` package's Mutex and Election over an in-process client), so a lock is a
//! key `name/<lease hex>` under the caller's lease, held by the oldest such key; a campaign is
//! the same with the proposal as the value.
//!
//! Covered: Lock acquiring, re-entering with the same lease, queueing behind the holder and
//! returning on Unlock; Lock with an unknown lease and with lease 0 (the server grants a 60 s
//! lease of its own); a queued Lock, and a queued Campaign, whose lease is revoked (where detcd
//! differs from etcd on purpose: both transcripts are asserted, each against its own tail); a
//! queued Lock the client gives up on;
//! Unlock of a missing key; Leader without candidates; Campaign, Leader, Proclaim (right and wrong
//! revision, no leader key), Resign (right and wrong revision, no leader key); a second Campaign
//! queueing until the leader resigns; Observe following proclamations and leaders; Campaign again
//! with the same lease and another value; Campaign with lease 0 and with an unknown lease.
//!
//! Debugging aids: `DETCD_LOCK_TEST_ETCD_ONLY=1` runs the etcd half only, prints its transcripts
//! and checks the properties on them (the spec detcd must meet, without building detcd's side);
//! `LOCK_TEST_DUMP=1` prints both transcripts of every scenario.

use crate::common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, etcd_available, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::lease_client::LeaseClient;
use detcd::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    RangeRequest, ResponseHeader,
};
use detcd::proto::mvccpb::KeyValue;
use detcd::proto::v3electionpb::election_client::ElectionClient;
use detcd::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ResignRequest,
};
use detcd::proto::v3lockpb::lock_client::LockClient;
use detcd::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// A client endpoint (`host:port`) of the member a scenario runs against.
type Endpoint = String;

type Answer<T> = Result<Response<T>, Status>;

/// The four clients a scenario uses, on one channel.
#[derive(Clone)]
struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
}

async fn clients(endpoint: &str) -> Clients {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoint}: {e}"));
    Clients {
        kv: KvClient::new(channel.clone()),
        lease: LeaseClient::new(channel.clone()),
        lock: LockClient::new(channel.clone()),
        election: ElectionClient::new(channel),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Bytes {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    Bytes::from(end)
}

// ---------------------------------------------------------------------------------------------
// Transcripts
// ---------------------------------------------------------------------------------------------

/// The lines of one scenario, with the lease ids seen so far (numbered by first appearance).
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
    leases: Vec<i64>,
}

fn rev(header: &Option<ResponseHeader>) -> String {
    match header {
        Some(h) => format!("rev={}", h.revision),
        None => "no header".to_string(),
    }
}

fn error(status: &Status) -> String {
    format!("error {:?} {}", status.code(), status.message())
}

impl Transcript {
    fn push(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// A lease id as `<Ln>` (0 stays 0).
    fn lease(&mut self, id: i64) -> String {
        if id == 0 {
            return "0".to_string();
        }
        let n = match self.leases.iter().position(|&l| l == id) {
            Some(n) => n,
            None => {
                self.leases.push(id);
                self.leases.len() - 1
            }
        };
        format!("<L{}>", n + 1)
    }

    /// A key, with a lease id in hex after its last `/` written `<Ln>`.
    fn key(&mut self, key: &[u8]) -> String {
        let text = String::from_utf8_lossy(key).into_owned();
        if let Some((name, hex)) = text.rsplit_once('/') {
            let lower_hex = hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if lower_hex && (1..=16).contains(&hex.len()) {
                let id = u64::from_str_radix(hex, 16).unwrap() as i64;
                return format!("{name}/{}", self.lease(id));
            }
        }
        text
    }

    fn kv(&mut self, kv: &KeyValue) -> String {
        format!(
            "[{}={} c{} m{} v{} lease={}]",
            self.key(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            self.lease(kv.lease)
        )
    }

    fn leader_key(&mut self, leader: &Option<LeaderKey>) -> String {
        match leader {
            None => "no leader key".to_string(),
            Some(l) => format!(
                "leader(name={} key={} rev={} lease={})",
                String::from_utf8_lossy(&l.name),
                self.key(&l.key),
                l.rev,
                self.lease(l.lease)
            ),
        }
    }

    /// Writes `what: <the response as `show` puts it>` or `what: error ...`; returns the
    /// response.
    fn answer<T>(
        &mut self,
        what: &str,
        answer: Answer<T>,
        show: impl FnOnce(&mut Self, &T) -> String,
    ) -> Option<T> {
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                let line = show(self, &response);
                self.push(format!("{what}: {line}"));
                Some(response)
            }
            Err(status) => {
                self.push(format!("{what}: {}", error(&status)));
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Calls, each written down as it is answered
// ---------------------------------------------------------------------------------------------

/// A scenario in progress: its clients and its transcript.
struct Run {
    c: Clients,
    t: Transcript,
}

/// A call running on its own task (one that may wait: Lock, Campaign), and its line's label.
struct Pending<T> {
    what: String,
    task: JoinHandle<Answer<T>>,
}

/// An Observe stream read by its own task; the task ends when this is dropped.
struct Observer {
    name: String,
    rx: mpsc::UnboundedReceiver<Result<LeaderResponse, Status>>,
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Run {
    async fn new(endpoint: &str) -> Run {
        Run {
            c: clients(endpoint).await,
            t: Transcript::default(),
        }
    }

    fn push(&mut self, line: impl Into<String>) {
        self.t.push(line)
    }

    async fn sleep(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await
    }

    async fn grant(&mut self, ttl: i64) -> i64 {
        let request = LeaseGrantRequest { ttl, id: 0 };
        let r = self.c.lease.lease_grant(request).await.expect("grant");
        let r = r.into_inner();
        let line = format!("grant ttl={ttl}: {} ttl={}", self.t.lease(r.id), r.ttl);
        self.push(line);
        r.id
    }

    async fn revoke(&mut self, id: i64) {
        let answer = self.c.lease.lease_revoke(LeaseRevokeRequest { id }).await;
        let what = format!("revoke {}", self.t.lease(id));
        self.t.answer(&what, answer, |_, r| rev(&r.header));
    }

    /// TimeToLive with keys; the remaining TTL shown only as within (0, granted] or not.
    async fn time_to_live(&mut self, id: i64) {
        let request = LeaseTimeToLiveRequest { id, keys: true };
        let answer = self.c.lease.lease_time_to_live(request).await;
        let what = format!("timetolive {}", self.t.lease(id));
        self.t.answer(&what, answer, |t, r| {
            let ttl = match r.ttl {
                ttl if ttl > 0 && ttl <= r.granted_ttl => "ttl>0".to_string(),
                ttl => format!("ttl={ttl}"),
            };
            let keys: Vec<String> = r.keys.iter().map(|k| t.key(k)).collect();
            format!(
                "{} id={} granted={} {ttl} keys={keys:?}",
                rev(&r.header),
                t.lease(r.id),
                r.granted_ttl
            )
        });
    }

    /// LeaseLeases, the ids sorted by their placeholders.
    async fn leases(&mut self) {
        let answer = self.c.lease.lease_leases(LeaseLeasesRequest {}).await;
        self.t.answer("leases", answer, |t, r| {
            let mut ids: Vec<String> = r.leases.iter().map(|l| t.lease(l.id)).collect();
            ids.sort();
            format!("{} {ids:?}", rev(&r.header))
        });
    }

    /// The key `key` (or, with `prefix`, the keys under it), oldest first.
    async fn range(&mut self, key: &[u8], prefix: bool) {
        let text = String::from_utf8_lossy(key).into_owned();
        let request = RangeRequest {
            key: Bytes::copy_from_slice(key),
            range_end: if prefix {
                prefix_end(&text)
            } else {
                Bytes::new()
            },
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        let answer = self.c.kv.range(request).await;
        let what = format!("range {}{}", self.t.key(key), if prefix { "*" } else { "" });
        self.t.answer(&what, answer, |t, r| {
            let kvs: Vec<String> = r.kvs.iter().map(|kv| t.kv(kv)).collect();
            format!("{} {}", rev(&r.header), kvs.join(" "))
                .trim_end()
                .to_string()
        });
    }
}

/// Waits (at most `max`) for a pending call; `None` if it is still waiting.
async fn join<T>(pending: &mut Pending<T>, max: Duration) -> Option<Answer<T>> {
    match tokio::time::timeout(max, &mut pending.task).await {
        Ok(joined) => Some(joined.expect("the call's task")),
        Err(_) => None,
    }
}

fn lock_line(t: &mut Transcript, r: &LockResponse) -> String {
    format!("{} key={}", rev(&r.header), t.key(&r.key))
}

fn campaign_line(t: &mut Transcript, r: &CampaignResponse) -> String {
    format!("{} {}", rev(&r.header), t.leader_key(&r.leader))
}

fn leader_line(t: &mut Transcript, r: &LeaderResponse) -> String {
    match &r.kv {
        Some(kv) => format!("{} {}", rev(&r.header), t.kv(kv)),
        None => format!("{} no kv", rev(&r.header)),
    }
}

/// The Lock service.
impl Run {
    fn lock_request(&mut self, name: &str, lease: i64) -> (String, LockRequest) {
        let what = format!("lock {name} lease={}", self.t.lease(lease));
        let name = b(name);
        (what, LockRequest { name, lease })
    }

    async fn lock(&mut self, name: &str, lease: i64) -> Option<Bytes> {
        let (what, request) = self.lock_request(name, lease);
        let answer = self.c.lock.lock(request).await;
        self.t.answer(&what, answer, lock_line).map(|r| r.key)
    }

    fn spawn_lock(&mut self, name: &str, lease: i64) -> Pending<LockResponse> {
        let (what, request) = self.lock_request(name, lease);
        let mut client = self.c.lock.clone();
        let task = tokio::spawn(async move { client.lock(request).await });
        Pending { what, task }
    }

    /// Writes down whether `pending` is still waiting after `ms` milliseconds.
    async fn still_waiting<T>(&mut self, pending: &Pending<T>, ms: u64) {
        Run::sleep(ms).await;
        let waiting = !pending.task.is_finished();
        self.push(format!(
            "{}: waiting after {ms} ms: {waiting}",
            pending.what
        ));
    }

    /// Waits (at most `max`) for a pending Lock; its key if it got one.
    async fn join_lock(
        &mut self,
        mut pending: Pending<LockResponse>,
        max: Duration,
    ) -> Option<Bytes> {
        match join(&mut pending, max).await {
            Some(answer) => self
                .t
                .answer(&pending.what, answer, lock_line)
                .map(|r| r.key),
            None => {
                self.push(format!("{}: still waiting after {max:?}", pending.what));
                pending.task.abort();
                None
            }
        }
    }

    async fn unlock(&mut self, key: &[u8]) {
        let request = UnlockRequest {
            key: Bytes::copy_from_slice(key),
        };
        let answer = self.c.lock.unlock(request).await;
        let what = format!("unlock {}", self.t.key(key));
        self.t.answer(&what, answer, |_, r| rev(&r.header));
    }
}

/// The Election service.
impl Run {
    fn campaign_request(
        &mut self,
        name: &str,
        lease: i64,
        value: &str,
    ) -> (String, CampaignRequest) {
        let what = format!(
            "campaign {name} lease={} value={value}",
            self.t.lease(lease)
        );
        let request = CampaignRequest {
            name: b(name),
            lease,
            value: b(value),
        };
        (what, request)
    }

    async fn campaign(&mut self, name: &str, lease: i64, value: &str) -> Option<LeaderKey> {
        let (what, request) = self.campaign_request(name, lease, value);
        let answer = self.c.election.campaign(request).await;
        self.t.answer(&what, answer, campaign_line)?.leader
    }

    fn spawn_campaign(&mut self, name: &str, lease: i64, value: &str) -> Pending<CampaignResponse> {
        let (what, request) = self.campaign_request(name, lease, value);
        let mut client = self.c.election.clone();
        let task = tokio::spawn(async move { client.campaign(request).await });
        Pending { what, task }
    }

    async fn join_campaign(
        &mut self,
        mut pending: Pending<CampaignResponse>,
        max: Duration,
    ) -> Option<LeaderKey> {
        match join(&mut pending, max).await {
            Some(answer) => self.t.answer(&pending.what, answer, campaign_line)?.leader,
            None => {
                self.push(format!("{}: still waiting after {max:?}", pending.what));
                pending.task.abort();
                None
            }
        }
    }

    async fn leader(&mut self, name: &str) {
        let answer = self
            .c
            .election
            .leader(LeaderRequest { name: b(name) })
            .await;
        self.t
            .answer(&format!("leader {name}"), answer, leader_line);
    }

    async fn proclaim(&mut self, leader: Option<LeaderKey>, value: &str) {
        let what = format!("proclaim {} value={value}", self.t.leader_key(&leader));
        let request = ProclaimRequest {
            leader,
            value: b(value),
        };
        let answer = self.c.election.proclaim(request).await;
        self.t.answer(&what, answer, |_, r| rev(&r.header));
    }

    async fn resign(&mut self, leader: Option<LeaderKey>) {
        let what = format!("resign {}", self.t.leader_key(&leader));
        let answer = self.c.election.resign(ResignRequest { leader }).await;
        self.t.answer(&what, answer, |_, r| rev(&r.header));
    }

    /// Opens an Observe stream on its own task (the call itself only returns once the server
    /// sends something, which it does only when there is a leader).
    fn observe(&self, name: &str) -> Observer {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client = self.c.election.clone();
        let request = LeaderRequest { name: b(name) };
        let task = tokio::spawn(async move {
            let mut stream = match client.observe(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = tx.send(Err(status));
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if tx.send(Ok(r)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status));
                        return;
                    }
                }
            }
        });
        Observer {
            name: name.to_string(),
            rx,
            task,
        }
    }

    /// The observer's next response, if one comes within `ms` milliseconds.
    async fn observed(&mut self, observer: &mut Observer, ms: u64) {
        let what = format!("observe {}", observer.name);
        let max = Duration::from_millis(ms);
        match tokio::time::timeout(max, observer.rx.recv()).await {
            Ok(Some(Ok(r))) => {
                let line = leader_line(&mut self.t, &r);
                self.push(format!("{what}: {line}"));
            }
            Ok(Some(Err(status))) => self.push(format!("{what}: {}", error(&status))),
            Ok(None) => self.push(format!("{what}: the stream ended")),
            Err(_) => self.push(format!("{what}: nothing within {ms} ms")),
        }
    }
}

/// The lease of a lock or election key `name/<lease id in hex>`.
fn lease_of_key(key: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(key);
    let hex = text.rsplit_once('/').expect("name/lease").1;
    u64::from_str_radix(hex, 16).expect("a lease id in hex") as i64
}

/// A leader key with its revision changed (to one that is not the key's).
fn wrong_rev(leader: &Option<LeaderKey>) -> Option<LeaderKey> {
    leader.clone().map(|l| LeaderKey {
        rev: l.rev + 100,
        ..l
    })
}

// ---------------------------------------------------------------------------------------------
// Running a scenario on both servers
// ---------------------------------------------------------------------------------------------

fn start(flavor: Flavor, tag: &str) -> Vec<Member> {
    let mut members = cluster(flavor, 1, tag, &[]);
    start_all(&mut members);
    members
}

/// Whether only the etcd half runs (see the file's header).
fn etcd_only() -> bool {
    std::env::var_os("DETCD_LOCK_TEST_ETCD_ONLY").is_some()
}

/// Runs `scenario` against a fresh etcd member (when installed) and, unless only etcd runs, a
/// fresh detcd member; returns (detcd's transcript, etcd's).
fn run_both<F, Fut>(tag: &str, scenario: F) -> (Option<Vec<String>>, Option<Vec<String>>)
where
    F: Fn(Endpoint) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let theirs = if etcd_available() {
        let mut etcd = start(Flavor::Etcd, &format!("{tag}-etcd"));
        let t = runtime.block_on(scenario(etcd[0].spec.endpoint()));
        etcd[0].kill();
        Some(t)
    } else {
        assert!(
            !etcd_only(),
            "DETCD_LOCK_TEST_ETCD_ONLY=1 needs etcd installed"
        );
        eprintln!("NOTE: real etcd is not installed; only detcd's own answers are checked");
        None
    };
    if etcd_only() {
        eprintln!("--- {tag}, etcd:\n{}", theirs.as_ref().unwrap().join("\n"));
        return (None, theirs);
    }
    let mut detcd = start(Flavor::Detcd, &format!("{tag}-detcd"));
    let ours = common::with_logs_on_failure(&detcd, || {
        runtime.block_on(scenario(detcd[0].spec.endpoint()))
    });
    detcd[0].kill();
    if std::env::var_os("LOCK_TEST_DUMP").is_some() {
        eprintln!("--- {tag} etcd:\n{theirs:#?}\n--- {tag} detcd:\n{ours:#?}");
    }
    (Some(ours), theirs)
}

/// Runs `scenario` against etcd and detcd (see `run_both`); asserts their transcripts are equal;
/// returns the one to check properties on: detcd's, or etcd's when only etcd runs.
fn compare<F, Fut>(tag: &str, scenario: F) -> Vec<String>
where
    F: Fn(Endpoint) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    match run_both(tag, scenario) {
        (Some(ours), Some(theirs)) => {
            assert_same(tag, &ours, &theirs);
            ours
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => unreachable!("one of them ran"),
    }
}

/// Asserts two transcripts are equal, showing the lines that differ.
fn assert_same(tag: &str, got: &[String], expected: &[String]) {
    let mut diff = String::new();
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            diff += &format!("#{i}\n  etcd:  {e:?}\n  detcd: {g:?}\n");
        }
    }
    assert!(
        diff.is_empty(),
        "{tag}: detcd answers differently:\n{diff}etcd's transcript:\n{}",
        expected.join("\n")
    );
}

/// Asserts the whole transcript, showing it if it differs.
fn assert_transcript(t: &[String], expected: &[&str]) {
    assert_eq!(t, expected, "the transcript:\n{}", t.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Lock. Revisions: the start-up probe's put and delete take 2 and 3.
// ---------------------------------------------------------------------------------------------

/// Lock, Lock again with the same lease, a second Lock queueing behind, Unlock.
async fn lock_queue(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let l1 = r.grant(10).await;
    let key1 = r.lock("l1", l1).await.expect("the first lock");
    r.range(&key1, false).await;
    // The same lease's key is already there, and the oldest: held at once.
    r.lock("l1", l1).await;
    let l2 = r.grant(10).await;
    let second = r.spawn_lock("l1", l2);
    r.still_waiting(&second, 500).await;
    r.range(b"l1/", true).await;
    r.unlock(&key1).await;
    if let Some(key2) = r.join_lock(second, Duration::from_secs(5)).await {
        r.range(&key2, false).await;
        r.unlock(&key2).await;
        r.unlock(&key2).await;
    }
    r.unlock(b"l1/nosuch").await;
    r.range(b"l1/", true).await;
    r.t.lines
}

#[test]
fn lock_queues_behind_the_holder_until_unlock() {
    let t = compare("lock-queue", lock_queue);
    let expected = [
        "grant ttl=10: <L1> ttl=10",
        "lock l1 lease=<L1>: rev=4 key=l1/<L1>",
        "range l1/<L1>: rev=4 [l1/<L1>= c4 m4 v1 lease=<L1>]",
        // Re-entered: the same key, the header of the txn that found it.
        "lock l1 lease=<L1>: rev=4 key=l1/<L1>",
        "grant ttl=10: <L2> ttl=10",
        "lock l1 lease=<L2>: waiting after 500 ms: true",
        "range l1/*: rev=5 [l1/<L1>= c4 m4 v1 lease=<L1>] [l1/<L2>= c5 m5 v1 lease=<L2>]",
        "unlock l1/<L1>: rev=6",
        // The queued key was put at 5; the header is the revision the lock was seen free at.
        "lock l1 lease=<L2>: rev=6 key=l1/<L2>",
        "range l1/<L2>: rev=6 [l1/<L2>= c5 m5 v1 lease=<L2>]",
        "unlock l1/<L2>: rev=7",
        // Unlock of a key that is not there: a header, no error, no new revision.
        "unlock l1/<L2>: rev=7",
        "unlock l1/nosuch: rev=7",
        "range l1/*: rev=7",
    ];
    assert_transcript(&t, &expected);
}

/// A lease that no server has granted here.
const UNKNOWN_LEASE: i64 = 12345;

/// Lock with a lease that does not exist, and with lease 0 (the server grants one of its own,
/// with etcd's default session TTL, 60 s, and keeps it after Unlock).
async fn lock_leases(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    r.lock("l", UNKNOWN_LEASE).await;
    r.range(b"l/", true).await;
    let key = r
        .lock("l0", 0)
        .await
        .expect("a lock under the server's lease");
    r.range(&key, false).await;
    r.time_to_live(lease_of_key(&key)).await;
    r.leases().await;
    r.unlock(&key).await;
    r.time_to_live(lease_of_key(&key)).await;
    r.t.lines
}

#[test]
fn lock_with_an_unknown_lease_or_lease_zero() {
    let t = compare("lock-leases", lock_leases);
    let expected = [
        // etcd's own client reports the txn's error; the gRPC code is lost on the way.
        "lock l lease=<L1>: error Unknown etcdserver: requested lease not found",
        "range l/*: rev=3",
        "lock l0 lease=0: rev=4 key=l0/<L2>",
        "range l0/<L2>: rev=4 [l0/<L2>= c4 m4 v1 lease=<L2>]",
        "timetolive <L2>: rev=4 id=<L2> granted=60 ttl>0 keys=[\"l0/<L2>\"]",
        "leases: rev=4 [\"<L2>\"]",
        // Unlock deletes the key only: the server's lease stays until it expires.
        "unlock l0/<L2>: rev=5",
        "timetolive <L2>: rev=5 id=<L2> granted=60 ttl>0 keys=[]",
    ];
    assert_transcript(&t, &expected);
}

/// A queued Lock whose lease is revoked while it waits (its key goes with the lease).
async fn lock_waiter_revoked(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let l1 = r.grant(10).await;
    let key1 = r.lock("w", l1).await.expect("the first lock");
    let l2 = r.grant(10).await;
    let waiter = r.spawn_lock("w", l2);
    r.still_waiting(&waiter, 300).await;
    r.range(b"w/", true).await;
    r.revoke(l2).await;
    r.still_waiting(&waiter, 1000).await;
    r.range(b"w/", true).await;
    r.unlock(&key1).await;
    r.join_lock(waiter, Duration::from_secs(5)).await;
    r.range(b"w/", true).await;
    r.t.lines
}

/// Asserts, where each ran, etcd's transcript is `shared` then `etcd_tail` and detcd's is
/// `shared` then `detcd_tail`: for what detcd does differently on purpose.
fn assert_each(
    (ours, theirs): (Option<Vec<String>>, Option<Vec<String>>),
    shared: &[&str],
    etcd_tail: &[&str],
    detcd_tail: &[&str],
) {
    if let Some(t) = theirs {
        assert_transcript(&t, &[shared, etcd_tail].concat());
    }
    if let Some(t) = ours {
        assert_transcript(&t, &[shared, detcd_tail].concat());
    }
}

/// detcd differs from etcd here on purpose (README.md, ARCHITECTURE.md "Lock and Election"): its
/// waiter also watches its own key and fails with `session expired` as soon as it goes; etcd
/// 3.4 waits for the holder and then answers with a key it no longer has.
#[test]
fn a_queued_lock_whose_lease_is_revoked() {
    let shared = [
        "grant ttl=10: <L1> ttl=10",
        "lock w lease=<L1>: rev=4 key=w/<L1>",
        "grant ttl=10: <L2> ttl=10",
        "lock w lease=<L2>: waiting after 300 ms: true",
        "range w/*: rev=5 [w/<L1>= c4 m4 v1 lease=<L1>] [w/<L2>= c5 m5 v1 lease=<L2>]",
        "revoke <L2>: rev=6",
    ];
    let etcd = [
        "lock w lease=<L2>: waiting after 1000 ms: true",
        "range w/*: rev=6 [w/<L1>= c4 m4 v1 lease=<L1>]",
        "unlock w/<L1>: rev=7",
        "lock w lease=<L2>: rev=7 key=w/<L2>",
        "range w/*: rev=7",
    ];
    let detcd = [
        "lock w lease=<L2>: waiting after 1000 ms: false",
        "range w/*: rev=6 [w/<L1>= c4 m4 v1 lease=<L1>]",
        "unlock w/<L1>: rev=7",
        "lock w lease=<L2>: error Unknown session expired",
        "range w/*: rev=7",
    ];
    assert_each(
        run_both("lock-revoked", lock_waiter_revoked),
        &shared,
        &etcd,
        &detcd,
    );
}

/// A queued Campaign whose lease is revoked while it waits.
async fn campaign_waiter_revoked(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let l1 = r.grant(10).await;
    let first = r.campaign("r", l1, "v1").await;
    let l2 = r.grant(10).await;
    let waiter = r.spawn_campaign("r", l2, "v2");
    r.still_waiting(&waiter, 300).await;
    r.range(b"r/", true).await;
    r.revoke(l2).await;
    r.still_waiting(&waiter, 1000).await;
    r.range(b"r/", true).await;
    r.resign(first).await;
    r.join_campaign(waiter, Duration::from_secs(5)).await;
    r.range(b"r/", true).await;
    r.leader("r").await;
    r.t.lines
}

/// As with Lock, detcd's queued Campaign fails with `session expired` as soon as its key goes.
#[test]
fn a_queued_campaign_whose_lease_is_revoked() {
    let shared = [
        "grant ttl=10: <L1> ttl=10",
        "campaign r lease=<L1> value=v1: rev=4 leader(name=r key=r/<L1> rev=4 lease=<L1>)",
        "grant ttl=10: <L2> ttl=10",
        "campaign r lease=<L2> value=v2: waiting after 300 ms: true",
        "range r/*: rev=5 [r/<L1>=v1 c4 m4 v1 lease=<L1>] [r/<L2>=v2 c5 m5 v1 lease=<L2>]",
        "revoke <L2>: rev=6",
    ];
    // etcd 3.4 elects a candidate whose key is gone (and Leader then finds none).
    let etcd = [
        "campaign r lease=<L2> value=v2: waiting after 1000 ms: true",
        "range r/*: rev=6 [r/<L1>=v1 c4 m4 v1 lease=<L1>]",
        "resign leader(name=r key=r/<L1> rev=4 lease=<L1>): rev=7",
        "campaign r lease=<L2> value=v2: rev=5 leader(name=r key=r/<L2> rev=5 lease=<L2>)",
        "range r/*: rev=7",
        "leader r: error Unknown election: no leader",
    ];
    let detcd = [
        "campaign r lease=<L2> value=v2: waiting after 1000 ms: false",
        "range r/*: rev=6 [r/<L1>=v1 c4 m4 v1 lease=<L1>]",
        "resign leader(name=r key=r/<L1> rev=4 lease=<L1>): rev=7",
        "campaign r lease=<L2> value=v2: error Unknown session expired",
        "range r/*: rev=7",
        "leader r: error Unknown election: no leader",
    ];
    assert_each(
        run_both("campaign-revoked", campaign_waiter_revoked),
        &shared,
        &etcd,
        &detcd,
    );
}

/// How many keys start with `prefix`.
async fn count(r: &mut Run, prefix: &str) -> i64 {
    let request = RangeRequest {
        key: b(prefix),
        range_end: prefix_end(prefix),
        count_only: true,
        ..Default::default()
    };
    r.c.kv
        .range(request)
        .await
        .expect("range")
        .into_inner()
        .count
}

/// A queued Lock the client stops waiting for: the server takes its key away.
async fn lock_given_up(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let l1 = r.grant(10).await;
    let key1 = r.lock("g", l1).await.expect("the first lock");
    let l2 = r.grant(10).await;
    let (what, request) = r.lock_request("g", l2);
    let max = Duration::from_millis(500);
    match tokio::time::timeout(max, r.c.lock.lock(request)).await {
        Ok(answer) => {
            r.t.answer(&what, answer, lock_line);
        }
        Err(_) => r.push(format!("{what}: given up after {max:?}")),
    }
    // The server notices the cancellation, then deletes the key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while count(&mut r, "g/").await > 1 && tokio::time::Instant::now() < deadline {
        Run::sleep(50).await;
    }
    r.range(b"g/", true).await;
    r.unlock(&key1).await;
    r.range(b"g/", true).await;
    r.t.lines
}

#[test]
fn a_queued_lock_given_up_by_its_client() {
    let t = compare("lock-given-up", lock_given_up);
    let expected = [
        "grant ttl=10: <L1> ttl=10",
        "lock g lease=<L1>: rev=4 key=g/<L1>",
        "grant ttl=10: <L2> ttl=10",
        "lock g lease=<L2>: given up after 500ms",
        // The server deleted the waiter's key (at 6) when the call was cancelled.
        "range g/*: rev=6 [g/<L1>= c4 m4 v1 lease=<L1>]",
        "unlock g/<L1>: rev=7",
        "range g/*: rev=7",
    ];
    assert_transcript(&t, &expected);
}

// ---------------------------------------------------------------------------------------------
// Election
// ---------------------------------------------------------------------------------------------

/// Leader without candidates; Campaign; Proclaim right and wrong; requests without a leader
/// key; Observe; a second Campaign queueing until the leader resigns; Resign right and wrong.
async fn election_lifecycle(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    r.leader("e").await;
    let l1 = r.grant(10).await;
    let l2 = r.grant(10).await;
    let first = r.campaign("e", l1, "v1").await;
    r.leader("e").await;
    r.proclaim(first.clone(), "v2").await;
    r.leader("e").await;
    r.proclaim(wrong_rev(&first), "v3").await;
    r.proclaim(None, "v3").await;
    r.resign(None).await;
    r.leader("e").await;
    let mut observer = r.observe("e");
    r.observed(&mut observer, 2000).await;
    let second = r.spawn_campaign("e", l2, "w1");
    r.still_waiting(&second, 500).await;
    r.range(b"e/", true).await;
    // A wrong revision resigns nothing (and is no error).
    r.resign(wrong_rev(&first)).await;
    r.leader("e").await;
    r.resign(first.clone()).await;
    let second = r.join_campaign(second, Duration::from_secs(5)).await;
    r.observed(&mut observer, 2000).await;
    r.leader("e").await;
    r.proclaim(second.clone(), "w2").await;
    r.observed(&mut observer, 2000).await;
    // The first leader's key is gone.
    r.proclaim(first, "v4").await;
    r.resign(second).await;
    r.observed(&mut observer, 500).await;
    r.leader("e").await;
    r.campaign("e", l1, "v5").await;
    r.observed(&mut observer, 2000).await;
    r.t.lines
}

#[test]
fn election_campaign_proclaim_observe_resign() {
    let t = compare("election", election_lifecycle);
    let expected = [
        // etcd's errors here are plain Go errors: gRPC code Unknown.
        "leader e: error Unknown election: no leader",
        "grant ttl=10: <L1> ttl=10",
        "grant ttl=10: <L2> ttl=10",
        "campaign e lease=<L1> value=v1: rev=4 leader(name=e key=e/<L1> rev=4 lease=<L1>)",
        "leader e: rev=4 [e/<L1>=v1 c4 m4 v1 lease=<L1>]",
        "proclaim leader(name=e key=e/<L1> rev=4 lease=<L1>) value=v2: rev=5",
        "leader e: rev=5 [e/<L1>=v2 c4 m5 v2 lease=<L1>]",
        "proclaim leader(name=e key=e/<L1> rev=104 lease=<L1>) value=v3: error Unknown election: not leader",
        "proclaim no leader key value=v3: error Unknown \"leader\" field must be provided",
        "resign no leader key: error Unknown \"leader\" field must be provided",
        "leader e: rev=5 [e/<L1>=v2 c4 m5 v2 lease=<L1>]",
        "observe e: rev=5 [e/<L1>=v2 c4 m5 v2 lease=<L1>]",
        "campaign e lease=<L2> value=w1: waiting after 500 ms: true",
        "range e/*: rev=6 [e/<L1>=v2 c4 m5 v2 lease=<L1>] [e/<L2>=w1 c6 m6 v1 lease=<L2>]",
        // A wrong revision: the txn's compare fails, nothing is deleted, no error.
        "resign leader(name=e key=e/<L1> rev=104 lease=<L1>): rev=6",
        "leader e: rev=6 [e/<L1>=v2 c4 m5 v2 lease=<L1>]",
        "resign leader(name=e key=e/<L1> rev=4 lease=<L1>): rev=7",
        // The queued Campaign's header is that of the txn that put its key, not the latest.
        "campaign e lease=<L2> value=w1: rev=6 leader(name=e key=e/<L2> rev=6 lease=<L2>)",
        "observe e: rev=7 [e/<L2>=w1 c6 m6 v1 lease=<L2>]",
        "leader e: rev=7 [e/<L2>=w1 c6 m6 v1 lease=<L2>]",
        "proclaim leader(name=e key=e/<L2> rev=6 lease=<L2>) value=w2: rev=8",
        "observe e: rev=8 [e/<L2>=w2 c6 m8 v2 lease=<L2>]",
        "proclaim leader(name=e key=e/<L1> rev=4 lease=<L1>) value=v4: error Unknown election: not leader",
        "resign leader(name=e key=e/<L2> rev=6 lease=<L2>): rev=9",
        "observe e: nothing within 500 ms",
        "leader e: error Unknown election: no leader",
        "campaign e lease=<L1> value=v5: rev=10 leader(name=e key=e/<L1> rev=10 lease=<L1>)",
        "observe e: rev=10 [e/<L1>=v5 c10 m10 v1 lease=<L1>]",
    ];
    assert_transcript(&t, &expected);
}

/// Campaign again with the same lease (another value, then the same), with lease 0, with an
/// unknown lease.
async fn campaign_leases(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let l1 = r.grant(10).await;
    r.campaign("c", l1, "a").await;
    r.campaign("c", l1, "b").await;
    r.leader("c").await;
    r.campaign("c", l1, "b").await;
    r.leader("c").await;
    let zero = r.campaign("z", 0, "x").await;
    if let Some(leader) = zero {
        r.time_to_live(leader.lease).await;
    }
    r.campaign("u", UNKNOWN_LEASE, "y").await;
    r.range(b"u/", true).await;
    r.leader("u").await;
    r.t.lines
}

#[test]
fn campaign_again_with_the_same_lease_and_with_other_leases() {
    let t = compare("election-leases", campaign_leases);
    let expected = [
        "grant ttl=10: <L1> ttl=10",
        "campaign c lease=<L1> value=a: rev=4 leader(name=c key=c/<L1> rev=4 lease=<L1>)",
        // The key is there: the new value is proclaimed (at 5), the header is the first txn's.
        "campaign c lease=<L1> value=b: rev=4 leader(name=c key=c/<L1> rev=4 lease=<L1>)",
        "leader c: rev=5 [c/<L1>=b c4 m5 v2 lease=<L1>]",
        // The same value: nothing written.
        "campaign c lease=<L1> value=b: rev=5 leader(name=c key=c/<L1> rev=4 lease=<L1>)",
        "leader c: rev=5 [c/<L1>=b c4 m5 v2 lease=<L1>]",
        // Lease 0: the server grants a 60 s lease of its own.
        "campaign z lease=0 value=x: rev=6 leader(name=z key=z/<L2> rev=6 lease=<L2>)",
        "timetolive <L2>: rev=6 id=<L2> granted=60 ttl>0 keys=[\"z/<L2>\"]",
        "campaign u lease=<L3> value=y: error Unknown etcdserver: requested lease not found",
        "range u/*: rev=6",
        "leader u: error Unknown election: no leader",
    ];
    assert_transcript(&t, &expected);
}

/// Observe before there is a leader: it answers only once one is elected, then follows its
/// proclamations; a leader whose lease is revoked is gone; the next one is observed.
async fn observe_from_no_leader(ep: Endpoint) -> Vec<String> {
    let mut r = Run::new(&ep).await;
    let mut observer = r.observe("o");
    r.observed(&mut observer, 500).await;
    let l1 = r.grant(10).await;
    let leader = r.campaign("o", l1, "a").await;
    r.observed(&mut observer, 2000).await;
    r.proclaim(leader, "b").await;
    r.observed(&mut observer, 2000).await;
    r.revoke(l1).await;
    r.observed(&mut observer, 500).await;
    r.leader("o").await;
    let l2 = r.grant(10).await;
    r.campaign("o", l2, "c").await;
    r.observed(&mut observer, 2000).await;
    r.t.lines
}

#[test]
fn observe_waits_for_a_leader_and_follows_it() {
    let t = compare("election-observe", observe_from_no_leader);
    let expected = [
        "observe o: nothing within 500 ms",
        "grant ttl=10: <L1> ttl=10",
        "campaign o lease=<L1> value=a: rev=4 leader(name=o key=o/<L1> rev=4 lease=<L1>)",
        "observe o: rev=4 [o/<L1>=a c4 m4 v1 lease=<L1>]",
        "proclaim leader(name=o key=o/<L1> rev=4 lease=<L1>) value=b: rev=5",
        "observe o: rev=5 [o/<L1>=b c4 m5 v2 lease=<L1>]",
        // The leader's key goes with its lease; the stream stays open, quiet.
        "revoke <L1>: rev=6",
        "observe o: nothing within 500 ms",
        "leader o: error Unknown election: no leader",
        "grant ttl=10: <L2> ttl=10",
        "campaign o lease=<L2> value=c: rev=7 leader(name=o key=o/<L2> rev=7 lease=<L2>)",
        "observe o: rev=7 [o/<L2>=c c7 m7 v1 lease=<L2>]",
    ];
    assert_transcript(&t, &expected);
}
