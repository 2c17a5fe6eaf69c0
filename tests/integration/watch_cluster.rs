//! The Kubernetes pattern on a 3-member detcd cluster of real processes, across the loss of the
//! leader.
//!
//! A watcher, as kube-apiserver's: one watch of the prefix `/registry/` with `prev_kv` and
//! `progress_notify`, on a stream opened with the gRPC metadata `hasleader=true` (what clientv3's
//! `WithRequireLeader` sends), through a follower. Three writers update 20 keys under the prefix
//! with optimistic concurrency, as the apiserver's GuaranteedUpdate does: a Txn that compares
//! the key's mod_revision with the one the writer last read and puts the new value if it holds,
//! and reads the key if it does not (then the writer retries from what it read). Each request
//! goes to the next member in turn. Every 250 ms the watcher sends a WatchProgressRequest on its
//! stream; the members send progress notifications every second
//! (`--watch-progress-notify-interval=1s`) to a watcher that got nothing for that long.
//!
//! Timeline: 4 s of writes; SIGKILL the leader; 4 s; the watcher is moved to the other survivor
//! (as clientv3's balancer may do); 3 s; the killed member restarts and the watcher moves to it
//! as soon as it listens (a resume on a member that may still be catching up); 4 s more of
//! writes; then the writers stop.
//!
//! The watcher resumes the way clientv3 does when its stream breaks (a member ends a
//! `hasleader` stream once it has had no leader for three election timeouts; the member it is
//! on may die): it reconnects, to
//! the next member, and creates the watch again from the revision after the last one it
//! received, or after the revision of the last progress response if that is later (a progress
//! revision is a bookmark: everything up to it was received). clientv3 3.4 resumes from the last
//! response's header revision itself after a progress response (`nextRev =
//! wr.Header.Revision`), which may replay an event; taking the later of the two also keeps a
//! progress revision below an event already received (which a member behind may rightly answer)
//! from replaying events.
//!
//! A member the watcher is moved to is tried again until a watch is created there: a restarted
//! member refuses `hasleader` streams ("etcdserver: no leader") until the leader reaches it,
//! which takes 1 to 2 s (the leader redials a dead peer with a backoff of up to 2 s), as etcd
//! refuses them on a member without a leader. A Txn the dead leader never answered waits for
//! the writer's 3 s timeout (a member's own request timeout is 7 s, as etcd's); its outcome is
//! then unknown to the writer.
//!
//! Checked at the end:
//! - the events received are exactly the history of the writes: every acknowledged Txn put
//!   appears once, at the revision it was acknowledged at; the revisions are consecutive from the
//!   watch's start revision to the cluster's final revision (failed compares write nothing, and
//!   nothing else writes), so nothing was lost or repeated across the reconnects; an event not
//!   acknowledged is a put whose Txn failed with an error (its outcome unknown to the writer);
//!   every event is a PUT whose prev_kv is the previous event's key-value of that key (none for
//!   the key's first);
//! - bookmarks: every progress response (answer or notification) of revision R came after every
//!   event of revision <= R;
//! - freshness, as the apiserver's consistent reads from its cache wait for it: once the writes
//!   stop, a progress answer reaches the cluster's final revision, and so does a progress
//!   notification;
//! - every member (the restarted one too) reads, linearizably, exactly the watcher's last
//!   key-values.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, leader_of, start_all, Flavor, Member};
use detcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::watch_client::WatchClient;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    request_op, response_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use detcd::proto::mvccpb::{event::EventType, Event, KeyValue};
use tokio::sync::mpsc;
use tonic::transport::Channel;

type Kv = KvClient<Channel>;

const PREFIX: &str = "/registry/";
const PREFIX_END: &str = "/registry0";
const KEYS: usize = 20;
const WRITERS: usize = 3;
/// How often the watcher asks for progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// What a client waits for an answer (detcd's own request timeout is 7 s: a request a dead
/// leader never answered would hold a writer that long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn key_name(i: usize) -> String {
    format!("{PREFIX}pods/default/pod-{i:02}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn connect(endpoint: &str) -> Result<Channel, String> {
    let url = format!("http://{endpoint}");
    let endpoint_ = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1));
    match tokio::time::timeout(Duration::from_secs(2), endpoint_.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("connecting to {endpoint}: {e}")),
        Err(_) => Err(format!("connecting to {endpoint}: timed out")),
    }
}

/// Everything under the prefix, read linearizably through `endpoint`: the header's revision and
/// the key-values.
async fn read_all(endpoint: &str) -> Result<(i64, Vec<KeyValue>), String> {
    let mut kv = KvClient::new(connect(endpoint).await?).max_decoding_message_size(usize::MAX);
    let request = RangeRequest {
        key: Bytes::from(PREFIX),
        range_end: Bytes::from(PREFIX_END),
        ..Default::default()
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, kv.range(request)).await {
        Ok(Ok(resp)) => {
            let resp = resp.into_inner();
            Ok((resp.header.map_or(0, |h| h.revision), resp.kvs))
        }
        Ok(Err(status)) => Err(format!("{:?} {}", status.code(), status.message())),
        Err(_) => Err("timed out".into()),
    }
}

/// `read_all`, retried until it succeeds or `max` has passed.
async fn read_all_retrying(endpoint: &str, max: Duration) -> (i64, Vec<KeyValue>) {
    let deadline = Instant::now() + max;
    loop {
        match read_all(endpoint).await {
            Ok(read) => return read,
            Err(e) if Instant::now() > deadline => panic!("reading through {endpoint}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

/// What the writers did.
#[derive(Default)]
struct Writes {
    /// Acknowledged puts: revision, key, value.
    acked: Vec<(i64, String, String)>,
    /// Puts whose Txn failed with an error: key, value (they may or may not have happened).
    unknown: Vec<(String, String)>,
    /// When each acknowledged put was acknowledged: revision, time.
    ack_times: Vec<(i64, Instant)>,
    /// Txns whose compare failed.
    conflicts: usize,
    /// The errors, as "member: error".
    errors: Vec<String>,
}

struct Writer {
    id: usize,
    endpoints: Vec<String>,
    clients: Vec<Option<Kv>>,
    /// Members that just failed are skipped until then.
    down_until: Vec<Option<Instant>>,
    turn: usize,
    /// The mod_revision of each key as last read or written (0: absent); None: read it first.
    known: Vec<Option<i64>>,
    writes: Arc<Mutex<Writes>>,
}

impl Writer {
    /// The next member in turn that did not just fail, and a client for it.
    async fn next_client(&mut self) -> (usize, Kv) {
        loop {
            let member = self.turn % self.endpoints.len();
            self.turn += 1;
            if self.down_until[member].is_some_and(|t| Instant::now() < t) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            if let Some(client) = &self.clients[member] {
                return (member, client.clone());
            }
            match connect(&self.endpoints[member]).await {
                Ok(channel) => {
                    let client = KvClient::new(channel);
                    self.clients[member] = Some(client.clone());
                    return (member, client);
                }
                Err(_) => self.down_until[member] = Some(Instant::now() + Duration::from_secs(1)),
            }
        }
    }

    fn failed(&mut self, member: usize, error: String) {
        self.clients[member] = None;
        self.down_until[member] = Some(Instant::now() + Duration::from_millis(500));
        self.writes
            .lock()
            .unwrap()
            .errors
            .push(format!("m{member}: {error}"));
    }

    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ (self.id as u64 + 1);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let k = (rng >> 33) as usize % KEYS;
            let key = Bytes::from(key_name(k));
            let (member, mut kv) = self.next_client().await;
            let Some(expected) = self.known[k] else {
                // After an error: read the key before writing it again.
                let read = RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, kv.range(read)).await {
                    Ok(Ok(resp)) => {
                        let kvs = resp.into_inner().kvs;
                        self.known[k] = Some(kvs.first().map_or(0, |kv| kv.mod_revision));
                    }
                    Ok(Err(status)) => self.failed(member, format!("range: {}", status.message())),
                    Err(_) => self.failed(member, "range: timed out".into()),
                }
                continue;
            };
            n += 1;
            let value = format!("w{}-{n}", self.id);
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(expected)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: Bytes::from(value.clone()),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                }],
            };
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await;
            match outcome {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    let revision = resp.header.as_ref().expect("a header").revision;
                    if resp.succeeded {
                        self.known[k] = Some(revision);
                        let mut writes = self.writes.lock().unwrap();
                        writes.acked.push((revision, key_name(k), value));
                        writes.ack_times.push((revision, Instant::now()));
                    } else {
                        let read = match resp.responses.first().and_then(|r| r.response.as_ref()) {
                            Some(response_op::Response::ResponseRange(range)) => range,
                            other => panic!("a failed compare's answer is its read: {other:?}"),
                        };
                        self.known[k] = Some(read.kvs.first().map_or(0, |kv| kv.mod_revision));
                        self.writes.lock().unwrap().conflicts += 1;
                    }
                }
                Ok(Err(status)) => {
                    self.known[k] = None;
                    self.writes
                        .lock()
                        .unwrap()
                        .unknown
                        .push((key_name(k), value));
                    self.failed(
                        member,
                        format!("txn: {:?} {}", status.code(), status.message()),
                    );
                }
                Err(_) => {
                    self.known[k] = None;
                    self.writes
                        .lock()
                        .unwrap()
                        .unknown
                        .push((key_name(k), value));
                    self.failed(member, "txn: timed out".into());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum What {
    Created,
    Event(Event),
    /// The answer to a WatchProgressRequest (watch id -1).
    ProgressAnswer,
    /// A periodic progress notification (the watcher's id, no events).
    ProgressNotification,
    /// Something a watcher must never get here (a refusal, a cancellation).
    Wrong(String),
}

/// A response (or one event of one) as the watcher received it, in order.
#[derive(Clone, Debug)]
struct Received {
    /// Which stream (index into `WatchLog::streams`).
    stream: usize,
    /// The event's mod_revision, or the header's revision.
    revision: i64,
    what: What,
    at: Instant,
}

#[derive(Debug)]
struct StreamRecord {
    member: usize,
    /// The start revision the watch was created with.
    from: i64,
    opened: Instant,
    /// When and how the stream ended.
    ended: Option<(Instant, String)>,
}

#[derive(Default)]
struct WatchLog {
    received: Vec<Received>,
    streams: Vec<StreamRecord>,
    failed_opens: Vec<String>,
}

impl WatchLog {
    fn current_member(&self) -> Option<usize> {
        self.streams
            .last()
            .filter(|s| s.ended.is_none())
            .map(|s| s.member)
    }

    fn events(&self) -> impl Iterator<Item = (usize, &Event)> {
        self.received.iter().filter_map(|r| match &r.what {
            What::Event(e) => Some((r.stream, e)),
            _ => None,
        })
    }
}

enum Control {
    /// Leave the current stream and resume on this member (a client-side reconnect).
    MoveTo(usize),
    Stop,
}

fn progress_request() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

/// Opens a `hasleader` stream to `endpoint` with one watch of the prefix from `from`.
async fn open_watch(endpoint: &str, from: i64) -> Result<common::WatchStream, String> {
    let mut client = WatchClient::new(connect(endpoint).await?);
    let create = WatchCreateRequest {
        key: Bytes::from(PREFIX),
        range_end: Bytes::from(PREFIX_END),
        start_revision: from,
        progress_notify: true,
        prev_kv: true,
        ..Default::default()
    };
    let first = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    };
    let call = common::watch_call(&mut client, first, true);
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(status)) => Err(format!("{:?} {}", status.code(), status.message())),
        Err(_) => Err("the watch call timed out".into()),
    }
}

/// Records a response; moves `next_revision` past it. False if the watcher is gone.
fn note(log: &mut WatchLog, stream: usize, resp: &WatchResponse, next_revision: &mut i64) -> bool {
    let at = Instant::now();
    let header = resp.header.as_ref().map_or(0, |h| h.revision);
    let mut push = |revision, what| {
        log.received.push(Received {
            stream,
            revision,
            what,
            at,
        })
    };
    if resp.canceled || (resp.created && resp.watch_id == -1) {
        push(header, What::Wrong(format!("{resp:?}")));
        return false;
    }
    if resp.created {
        push(header, What::Created);
        return true;
    }
    if resp.events.is_empty() {
        let what = if resp.watch_id == -1 {
            What::ProgressAnswer
        } else {
            What::ProgressNotification
        };
        push(header, what);
        *next_revision = (*next_revision).max(header + 1);
        return true;
    }
    for event in &resp.events {
        let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        push(revision, What::Event(event.clone()));
        *next_revision = revision + 1;
    }
    true
}

async fn watch_loop(
    endpoints: Vec<String>,
    mut member: usize,
    mut next_revision: i64,
    mut control: mpsc::UnboundedReceiver<Control>,
    log: Arc<Mutex<WatchLog>>,
) {
    // A member moved to is tried again (for up to 10 s) until a watch is created there.
    let mut pinned: Option<Instant> = None;
    loop {
        let after_failure = |member: usize, pinned: &mut Option<Instant>| {
            if pinned.is_some_and(|until| Instant::now() < until) {
                member
            } else {
                *pinned = None;
                (member + 1) % endpoints.len()
            }
        };
        let (tx, mut rx) = match open_watch(&endpoints[member], next_revision).await {
            Ok(opened) => opened,
            Err(e) => {
                log.lock()
                    .unwrap()
                    .failed_opens
                    .push(format!("m{member}: {e}"));
                member = after_failure(member, &mut pinned);
                match control.try_recv() {
                    Ok(Control::Stop) => return,
                    Ok(Control::MoveTo(m)) => {
                        member = m;
                        pinned = Some(Instant::now() + Duration::from_secs(10));
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let stream = {
            let mut log = log.lock().unwrap();
            log.streams.push(StreamRecord {
                member,
                from: next_revision,
                opened: Instant::now(),
                ended: None,
            });
            log.streams.len() - 1
        };
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        let (ended, next_member) = loop {
            tokio::select! {
                message = rx.message() => match message {
                    Ok(Some(resp)) => {
                        if resp.created {
                            pinned = None;
                        }
                        let mut log = log.lock().unwrap();
                        if !note(&mut log, stream, &resp, &mut next_revision) {
                            break ("the watcher was canceled".to_string(), None);
                        }
                    }
                    Ok(None) => break ("the stream ended".to_string(), None),
                    Err(status) => {
                        break (format!("{:?} {}", status.code(), status.message()), None)
                    }
                },
                _ = ticker.tick() => {
                    let _ = tx.try_send(progress_request());
                }
                command = control.recv() => match command {
                    Some(Control::MoveTo(m)) => break (format!("moved to m{m}"), Some(m)),
                    Some(Control::Stop) | None => {
                        log.lock().unwrap().streams[stream].ended =
                            Some((Instant::now(), "stopped".into()));
                        return;
                    }
                },
            }
        };
        log.lock().unwrap().streams[stream].ended = Some((Instant::now(), ended));
        drop(tx);
        member = match next_member {
            Some(m) => {
                pinned = Some(Instant::now() + Duration::from_secs(10));
                m
            }
            None => after_failure(member, &mut pinned),
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The events against the writes: see the module documentation. Returns the problems.
fn check_history(
    log: &WatchLog,
    writes: &Writes,
    first_revision: i64,
    final_revision: i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let acked: HashMap<&str, (i64, &str)> = writes
        .acked
        .iter()
        .map(|(r, k, v)| (v.as_str(), (*r, k.as_str())))
        .collect();
    let unknown: HashMap<&str, &str> = writes
        .unknown
        .iter()
        .map(|(k, v)| (v.as_str(), k.as_str()))
        .collect();
    let mut previous: HashMap<Bytes, KeyValue> = HashMap::new();
    let mut values_seen: HashSet<String> = HashSet::new();
    let mut expected = first_revision;
    for (stream, event) in log.events() {
        let Some(kv) = &event.kv else {
            problems.push(format!(
                "an event without a kv (stream {stream}): {event:?}"
            ));
            continue;
        };
        let (key, value, revision) = (text(&kv.key), text(&kv.value), kv.mod_revision);
        let at = format!("{key}={value} at {revision} (stream {stream})");
        if event.r#type != EventType::Put as i32 {
            problems.push(format!("not a PUT: {at}"));
        }
        if revision > expected {
            problems.push(format!("revisions {expected}..{revision} lost before {at}"));
        } else if revision < expected {
            problems.push(format!(
                "{at} after {}: repeated or out of order",
                expected - 1
            ));
        }
        expected = expected.max(revision + 1);
        if !values_seen.insert(value.clone()) {
            problems.push(format!("{at}: that value was delivered before"));
        }
        match acked.get(value.as_str()) {
            Some((r, k)) if (*r, *k) != (revision, key.as_str()) => {
                problems.push(format!("{at}: acknowledged as {k} at {r}"));
            }
            Some(_) => {}
            None if unknown.get(value.as_str()) == Some(&key.as_str()) => {}
            None => problems.push(format!("{at}: nobody wrote that")),
        }
        let before = previous.get(&kv.key);
        if event.prev_kv.as_ref() != before {
            problems.push(format!(
                "{at}: prev_kv {:?}, the previous value was {:?}",
                event.prev_kv, before
            ));
        }
        let (version, create) =
            before.map_or((1, revision), |p| (p.version + 1, p.create_revision));
        if (kv.version, kv.create_revision) != (version, create) {
            problems.push(format!(
                "{at}: version {} created {}, expected version {version} created {create}",
                kv.version, kv.create_revision
            ));
        }
        previous.insert(kv.key.clone(), kv.clone());
    }
    if expected - 1 != final_revision {
        problems.push(format!(
            "the last event is at {}, the cluster's revision is {final_revision}",
            expected - 1
        ));
    }
    for (revision, key, value) in &writes.acked {
        if !values_seen.contains(value) {
            problems.push(format!(
                "acknowledged {key}={value} at {revision} never came"
            ));
        }
    }
    problems
}

/// Every progress response of revision R came after every event of revision <= R.
fn check_bookmarks(log: &WatchLog) -> Vec<String> {
    let mut problems = Vec::new();
    let mut earliest_later_event = i64::MAX;
    for r in log.received.iter().rev() {
        match &r.what {
            What::Event(_) => earliest_later_event = earliest_later_event.min(r.revision),
            What::ProgressAnswer | What::ProgressNotification
                if earliest_later_event <= r.revision =>
            {
                problems.push(format!(
                    "{:?} of revision {} (stream {}, m{}) came before the event at {}",
                    r.what,
                    r.revision,
                    r.stream,
                    log.streams[r.stream].member,
                    earliest_later_event
                ));
            }
            _ => {}
        }
    }
    problems
}

fn shown(problems: &[String]) -> String {
    let mut out = problems
        .iter()
        .take(30)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if problems.len() > 30 {
        out += &format!("\n... {} more", problems.len() - 30);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

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

/// Waits until `check` holds of the watch log, or fails after `max`.
fn wait_for_log(
    log: &Mutex<WatchLog>,
    max: Duration,
    what: &str,
    check: impl Fn(&WatchLog) -> bool,
) {
    let deadline = Instant::now() + max;
    while !check(&log.lock().unwrap()) {
        assert!(Instant::now() < deadline, "{what} within {max:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scenario(members: &mut [Member]) {
    let began = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoints: Vec<String> = members.iter().map(|m| m.spec.endpoint()).collect();
    let leader = wait_for_leader(members, Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    let (base, _) = runtime.block_on(read_all_retrying(
        &endpoints[follower],
        Duration::from_secs(10),
    ));
    let first_revision = base + 1;

    // The watcher, from the next revision, through a follower.
    let log = Arc::new(Mutex::new(WatchLog::default()));
    let (control, control_rx) = mpsc::unbounded_channel();
    let watcher = runtime.spawn(watch_loop(
        endpoints.clone(),
        follower,
        first_revision,
        control_rx,
        log.clone(),
    ));
    wait_for_log(
        &log,
        Duration::from_secs(10),
        "the watch was created",
        |l| l.received.iter().any(|r| matches!(r.what, What::Created)),
    );

    // The writers.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let writer = Writer {
                id,
                endpoints: endpoints.clone(),
                clients: vec![None; endpoints.len()],
                down_until: vec![None; endpoints.len()],
                turn: id,
                known: vec![Some(0); KEYS],
                writes: writes.clone(),
            };
            runtime.spawn(writer.run(stop.clone()))
        })
        .collect();

    std::thread::sleep(Duration::from_secs(4));
    let before_kill = writes.lock().unwrap().acked.len();
    members[leader].kill();
    let killed = Instant::now();
    eprintln!(
        "killed the leader m{leader} (watcher on {:?}) after {before_kill} acknowledged writes \
         ({:?} in)",
        log.lock().unwrap().current_member(),
        killed - began
    );

    std::thread::sleep(Duration::from_secs(4));
    // A client-side reconnect to the other survivor.
    let on = log.lock().unwrap().current_member();
    let to = if on == Some(follower) {
        other
    } else {
        follower
    };
    control.send(Control::MoveTo(to)).unwrap();
    eprintln!("watcher moved from {on:?} to m{to}");

    std::thread::sleep(Duration::from_secs(3));
    members[leader].start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&endpoints[leader]).is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted member never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    control.send(Control::MoveTo(leader)).unwrap();
    eprintln!("restarted m{leader}, watcher moved to it");

    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        runtime.block_on(w).expect("a writer panicked");
    }
    let writes_stopped = Instant::now();

    // The cluster's final revision, and the watcher catching up with it.
    let (final_revision, _) = runtime.block_on(read_all_retrying(
        &endpoints[follower],
        Duration::from_secs(20),
    ));
    let fresh = |what: fn(&What) -> bool| {
        move |l: &WatchLog| {
            l.received
                .iter()
                .any(|r| r.at > writes_stopped && what(&r.what) && r.revision >= final_revision)
        }
    };
    wait_for_log(
        &log,
        Duration::from_secs(15),
        "a progress answer reached the final revision",
        fresh(|w| matches!(w, What::ProgressAnswer)),
    );
    wait_for_log(
        &log,
        Duration::from_secs(5),
        "a progress notification reached the final revision",
        fresh(|w| matches!(w, What::ProgressNotification)),
    );
    control.send(Control::Stop).unwrap();
    runtime.block_on(watcher).expect("the watcher panicked");

    let log = log.lock().unwrap();
    let writes = writes.lock().unwrap();
    let count = |f: fn(&What) -> bool| log.received.iter().filter(|r| f(&r.what)).count();
    eprintln!(
        "{} acknowledged writes, {} with unknown outcome, {} conflicts, {} errors (first: {:?}); \
         revisions {first_revision}..={final_revision}",
        writes.acked.len(),
        writes.unknown.len(),
        writes.conflicts,
        writes.errors.len(),
        writes.errors.iter().take(5).collect::<Vec<_>>(),
    );
    eprintln!(
        "watcher: {} events, {} progress answers, {} progress notifications, streams:",
        count(|w| matches!(w, What::Event(_))),
        count(|w| matches!(w, What::ProgressAnswer)),
        count(|w| matches!(w, What::ProgressNotification)),
    );
    // Consecutive streams that got nothing and ended the same way (a member without a leader
    // refusing `hasleader` streams) are shown as one line.
    let mut i = 0;
    while i < log.streams.len() {
        let s = &log.streams[i];
        let (end, how) = s.ended.clone().expect("every stream ended");
        let events = |i: usize| {
            log.received
                .iter()
                .filter(|r| r.stream == i && matches!(r.what, What::Event(_)))
                .count()
        };
        let mut same = 1;
        while events(i) == 0
            && log.streams.get(i + same).is_some_and(|t| {
                t.member == s.member
                    && events(i + same) == 0
                    && t.ended.as_ref().map(|(_, h)| h) == Some(&how)
            })
        {
            same += 1;
        }
        let end = log.streams[i + same - 1]
            .ended
            .as_ref()
            .map_or(end, |(e, _)| *e);
        eprintln!(
            "  #{i}{} m{} from {}, {:.1?}..{:.1?}: {} events, then {how}",
            if same > 1 {
                format!("..#{} ({same} streams)", i + same - 1)
            } else {
                String::new()
            },
            s.member,
            s.from,
            s.opened - began,
            end - began,
            events(i),
        );
        i += same;
    }
    let after_kill = log
        .received
        .iter()
        .find(|r| r.at > killed && matches!(r.what, What::Event(_)));
    let first_ack_after_kill = writes
        .ack_times
        .iter()
        .filter(|(_, at)| *at > killed)
        .min_by_key(|(_, at)| *at);
    eprintln!(
        "first event received after the kill: {:?}; first write acknowledged after it: {:?}",
        after_kill.map(|r| (r.revision, r.at - killed)),
        first_ack_after_kill.map(|(r, at)| (r, *at - killed)),
    );
    if !log.failed_opens.is_empty() {
        eprintln!("  failed opens: {:?}", log.failed_opens);
    }

    let wrong: Vec<String> = log
        .received
        .iter()
        .filter_map(|r| match &r.what {
            What::Wrong(w) => Some(format!("stream {}: {w}", r.stream)),
            _ => None,
        })
        .collect();
    assert!(wrong.is_empty(), "unexpected responses:\n{}", shown(&wrong));
    let problems = check_history(&log, &writes, first_revision, final_revision);
    assert!(
        problems.is_empty(),
        "the events are not the history of the writes:\n{}",
        shown(&problems)
    );
    let problems = check_bookmarks(&log);
    assert!(
        problems.is_empty(),
        "progress revisions ahead of the events received:\n{}",
        shown(&problems)
    );
    assert!(
        writes.acked.len() > 100,
        "only {} writes were acknowledged",
        writes.acked.len()
    );
    assert!(
        writes
            .acked
            .iter()
            .any(|(r, ..)| *r > base + before_kill as i64 + 50),
        "hardly any writes after the leader died"
    );
    assert!(
        count(|w| matches!(w, What::ProgressAnswer)) >= 20,
        "too few progress answers"
    );
    assert!(log.streams.len() >= 3, "the watcher never resumed");

    // Every member reads the watcher's last key-values.
    let mut last: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
    for (_, event) in log.events() {
        let kv = event.kv.clone().unwrap();
        last.insert(kv.key.clone(), kv);
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let (revision, kvs) =
            runtime.block_on(read_all_retrying(endpoint, Duration::from_secs(20)));
        assert_eq!(revision, final_revision, "m{i}'s revision");
        let read: BTreeMap<Bytes, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        assert!(
            read == last,
            "m{i} reads {read:#?}\nthe watcher's last values are {last:#?}"
        );
    }
    eprintln!("done in {:?}", began.elapsed());
}

#[test]
fn kubernetes_watch_pattern_across_leader_loss() {
    let mut members = cluster(
        Flavor::Detcd,
        3,
        "watch-c3",
        &["--watch-progress-notify-interval=1s"],
    );
    start_all(&mut members);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut members)));
    if let Err(panic) = result {
        for m in &members {
            eprintln!("--- log of {} ---\n{}", m.spec.name, m.log_text());
        }
        std::panic::resume_unwind(panic);
    }
}
