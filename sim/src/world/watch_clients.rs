//! The watch workload: clients that keep a few logical watches (on a key, a prefix, every key
//! from one on, or everything; with previous values, filters, progress notifications or
//! fragments), each on a stream to some member. They read responses as they come, or (slow
//! clients) only now and then, so that streams fill up and watchers fall behind; they ask for
//! progress, cancel and create watches; and when a stream ends (its member crashed, lost its
//! leader, or the stream was refused) they open another, possibly on another member, and create
//! every watch again from the revision after the last one they received, as clientv3 does.

use detcd::proto::etcdserverpb::watch_create_request::FilterType;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use detcd::watch::{HubResponse, StreamEnd, StreamId};
use prost::Message as _;

use std::collections::VecDeque;

use super::*;
use crate::history::{WatchRequestLog, WatchStreamLog};

/// How long the streams opened at the end may wait for their hubs' views (ns): a member
/// applies a batch within a tick, and a watcher behind catches up from the view as its client
/// reads.
const WATCH_SETTLE_NS: u64 = 300 * MS;

/// A watch the client keeps across streams.
#[derive(Clone, Debug)]
pub(super) struct LogicalWatch {
    spec: WatchCreateRequest,
    /// The revision to start from when created again: one after the last it received.
    resume_from: Option<i64>,
    /// Its history was compacted away: the client stopped it.
    ended: bool,
}

/// A stream a client has open.
#[derive(Clone, Debug)]
struct OpenStream {
    member: MemberId,
    incarnation: u64,
    id: StreamId,
    /// Index of its log in `World::watch_logs`.
    log: usize,
    /// Which logical watch each watch id of the stream serves.
    watches: BTreeMap<i64, usize>,
    /// Logical watches whose create is not answered yet, in the order sent.
    creating: VecDeque<usize>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct WatchClient {
    watches: Vec<LogicalWatch>,
    stream: Option<OpenStream>,
    /// Reads only on its own turns, not as responses come.
    slow: bool,
}

impl World {
    /// One turn of a watch client, every few dozen milliseconds while the workload runs.
    pub(super) fn watch_client_turn(&mut self, client: u64) {
        if self.issued >= self.options.ops {
            return;
        }
        self.read_stream(client);
        if !self.stream_alive(client) {
            self.count_leaderless_end(client);
            self.open_watch_stream(client);
        } else {
            match self.rng.below(10) {
                0..=2 if self.live_watches(client) < 4 => self.new_watch(client),
                3 | 4 => self.send_watch_request(client, progress_request()),
                5 => self.cancel_some_watch(client),
                6 => self.leave_watch_stream(client),
                _ => {}
            }
        }
        let at = self.now + self.rng.between(20 * MS, 300 * MS);
        self.schedule(at, Event::WatchTurn { client });
    }

    fn live_watches(&self, client: u64) -> usize {
        let watches = &self.watch_clients[&client].watches;
        watches.iter().filter(|w| !w.ended).count()
    }

    /// Coverage of a stream that required a leader and ended (or was refused) without one.
    fn count_leaderless_end(&mut self, client: u64) {
        let Some(stream) = &self.watch_clients[&client].stream else {
            return;
        };
        let member = &self.members[&stream.member];
        let on_member = member.node.is_some() && member.incarnation == stream.incarnation;
        if on_member && member.hub.ended(stream.id) == Some(&StreamEnd::NoLeader) {
            self.counters
                .coverage
                .hit("watch.stream-ended-without-leader");
        }
    }

    fn stream_alive(&self, client: u64) -> bool {
        let Some(stream) = &self.watch_clients[&client].stream else {
            return false;
        };
        let member = &self.members[&stream.member];
        member.node.is_some()
            && member.incarnation == stream.incarnation
            && member.hub.ended(stream.id).is_none()
    }

    /// The client goes away from its stream (a restart, a reconnect); on its next turn it opens
    /// another and resumes its watches. Its member may be left unwatched meanwhile.
    fn leave_watch_stream(&mut self, client: u64) {
        self.read_stream(client);
        let watch_client = self.watch_clients.get_mut(&client).expect("a watch client");
        let Some(stream) = watch_client.stream.take() else {
            return;
        };
        self.close_hub_stream(stream.member, stream.incarnation, stream.id);
    }

    /// Opens a stream on a running member and creates every logical watch on it again.
    fn open_watch_stream(&mut self, client: u64) {
        if let Some(old) = self
            .watch_clients
            .get_mut(&client)
            .and_then(|c| c.stream.take())
        {
            self.close_hub_stream(old.member, old.incarnation, old.id);
        }
        let member = 1 + self.rng.below(self.options.members);
        let m = &self.members[&member];
        if m.node.is_none() || m.paused {
            return;
        }
        let require_leader = self.rng.chance(0.3);
        self.next_stream += 1;
        let id = self.next_stream;
        let incarnation = m.incarnation;
        self.open_hub_stream(member, id, require_leader);
        self.watch_logs.push(WatchStreamLog {
            client,
            member,
            opened_at: self.now,
            requests: Vec::new(),
            responses: Vec::new(),
        });
        let log = self.watch_logs.len() - 1;
        let watch_client = self.watch_clients.get_mut(&client).expect("a watch client");
        watch_client.stream = Some(OpenStream {
            member,
            incarnation,
            id,
            log,
            watches: BTreeMap::new(),
            creating: VecDeque::new(),
        });
        self.log(member, || {
            format!("watch client {client} opens stream {id}")
        });
        if self.watch_clients[&client].watches.is_empty() {
            self.add_watch(client);
        }
        for logical in 0..self.watch_clients[&client].watches.len() {
            self.create_watch(client, logical);
        }
    }

    /// A new logical watch, created on the stream at once.
    fn new_watch(&mut self, client: u64) {
        let logical = self.add_watch(client);
        self.create_watch(client, logical);
    }

    fn add_watch(&mut self, client: u64) -> usize {
        let spec = self.watch_spec();
        let watches = &mut self.watch_clients.get_mut(&client).expect("client").watches;
        watches.push(LogicalWatch {
            spec,
            resume_from: None,
            ended: false,
        });
        watches.len() - 1
    }

    fn watch_spec(&mut self) -> WatchCreateRequest {
        let (key, range_end) = match self.rng.below(5) {
            0 | 1 => (self.key(), Bytes::new()),
            2 => (Bytes::from_static(b"k"), Bytes::from_static(b"l")),
            3 => (self.key(), Bytes::from_static(b"\0")),
            _ => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
        };
        let mut filters = Vec::new();
        if self.rng.chance(0.1) {
            filters.push(FilterType::Noput as i32);
        } else if self.rng.chance(0.1) {
            filters.push(FilterType::Nodelete as i32);
        }
        // Half of them start in the past, recent or not, to be caught up from the key space.
        let start_revision = if self.rng.chance(0.5) {
            let seen = self.revision_seen as u64;
            self.rng.between(seen.saturating_sub(20).max(1), seen) as i64
        } else {
            0
        };
        WatchCreateRequest {
            key,
            range_end,
            start_revision,
            progress_notify: self.rng.chance(0.3),
            filters,
            prev_kv: self.rng.chance(0.5),
            watch_id: 0,
            fragment: self.rng.chance(0.1),
        }
    }

    fn create_watch(&mut self, client: u64, logical: usize) {
        let watch = &self.watch_clients[&client].watches[logical];
        if watch.ended {
            return;
        }
        let mut request = watch.spec.clone();
        if let Some(from) = watch.resume_from {
            request.start_revision = from;
        }
        let log = WatchRequestLog::Create {
            logical,
            request: request.clone(),
        };
        let stream = self.watch_clients.get_mut(&client).expect("client");
        stream
            .stream
            .as_mut()
            .expect("an open stream")
            .creating
            .push_back(logical);
        let request = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(request)),
        };
        self.send_logged(client, request, log);
    }

    fn cancel_some_watch(&mut self, client: u64) {
        let Some(stream) = &self.watch_clients[&client].stream else {
            return;
        };
        let Some((&watch_id, &logical)) = stream.watches.iter().next() else {
            return;
        };
        if let Some(s) = self
            .watch_clients
            .get_mut(&client)
            .and_then(|c| c.stream.as_mut())
        {
            s.watches.remove(&watch_id);
        }
        self.watch_clients.get_mut(&client).expect("client").watches[logical].ended = true;
        let request = WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
        };
        self.send_logged(client, request, WatchRequestLog::Cancel { watch_id });
    }

    fn send_watch_request(&mut self, client: u64, request: WatchRequest) {
        self.send_logged(client, request, WatchRequestLog::Progress);
    }

    fn send_logged(&mut self, client: u64, request: WatchRequest, log: WatchRequestLog) {
        let stream = self.watch_clients[&client]
            .stream
            .clone()
            .expect("an open stream");
        self.watch_logs[stream.log].requests.push(log);
        let local = self.members[&stream.member].clock.local(self.now);
        let member = self.members.get_mut(&stream.member).expect("member");
        member.hub.request(local, stream.id, request);
        if !self.watch_clients[&client].slow {
            self.read_stream(client);
        }
    }

    /// The client reads every response its stream has for it.
    pub(super) fn read_stream(&mut self, client: u64) {
        while self.stream_alive(client) {
            let stream = self.watch_clients[&client].stream.as_ref().expect("alive");
            let (member, id, log) = (stream.member, stream.id, stream.log);
            let member = self.members.get_mut(&member).expect("member");
            let Some(response) = member.hub.pop(id).map(as_received) else {
                return;
            };
            self.mix(response.watch_id as u64 ^ (response.events.len() as u64) << 32);
            self.learn(client, &response);
            self.watch_logs[log].responses.push((self.now, response));
        }
    }

    /// What the client takes from a response: which watch a created id serves, how far each
    /// watch got, which watches ended.
    fn learn(&mut self, client: u64, response: &WatchResponse) {
        let watch_client = self.watch_clients.get_mut(&client).expect("client");
        let stream = watch_client.stream.as_mut().expect("alive");
        if response.created {
            let logical = stream.creating.pop_front().expect("a create was sent");
            if !response.canceled {
                stream.watches.insert(response.watch_id, logical);
                let watch = &mut watch_client.watches[logical];
                let created_at = response.header.as_ref().map_or(0, |h| h.revision);
                if watch.resume_from.is_none() {
                    watch.resume_from = Some(match watch.spec.start_revision {
                        0 => created_at + 1,
                        start => start,
                    });
                }
            }
            return;
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        if response.watch_id == -1 {
            for logical in stream.watches.values() {
                let watch = &mut watch_client.watches[*logical];
                watch.resume_from = Some(watch.resume_from.unwrap_or(0).max(revision + 1));
            }
            return;
        }
        let Some(&logical) = stream.watches.get(&response.watch_id) else {
            return;
        };
        let watch = &mut watch_client.watches[logical];
        if response.canceled {
            watch.ended = response.compact_revision != 0 || watch.ended;
            stream.watches.remove(&response.watch_id);
            return;
        }
        let last_event = response
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .max();
        let complete = match (last_event, response.fragment) {
            // The rest of the last revision follows in the next fragment.
            (Some(r), true) => r - 1,
            (Some(r), false) => r.max(revision),
            (None, _) => revision,
        };
        watch.resume_from = Some(watch.resume_from.unwrap_or(0).max(complete + 1));
    }

    /// After a member applied something, fast clients on it read what it has for them.
    pub(super) fn watchers_read(&mut self, member: MemberId) {
        let ready: Vec<u64> = self
            .watch_clients
            .iter()
            .filter(|(_, c)| !c.slow && c.stream.as_ref().is_some_and(|s| s.member == member))
            .map(|(id, _)| *id)
            .collect();
        for client in ready {
            self.read_stream(client);
        }
    }

    /// At the end of the run, with faults healed and every member caught up: every client
    /// reconnects (as clientv3 does when its connection breaks, leaving what it had not read),
    /// adds a watch and asks for progress; a moment later it reads all its new stream has, asks it for progress
    /// and reads the answer, so the checker knows how far each watch got; and that answer
    /// must reach the revision the member applied. The cluster is idle by then: watchers that
    /// wait for a write to come along would stay behind.
    pub(super) fn watchers_finish(&mut self) {
        let clients: Vec<u64> = self.watch_clients.keys().copied().collect();
        for &client in &clients {
            self.open_watch_stream(client);
            if self.stream_alive(client) {
                self.new_watch(client);
                // While its watchers catch up, as Kubernetes asks right after its creates.
                self.send_watch_request(client, progress_request());
            }
        }
        let settled =
            |w: &World| (w.members.values()).all(|m| !m.hub.needs_view() && !m.wake_pending);
        self.run_until(self.now + WATCH_SETTLE_NS, settled);
        for client in clients {
            if self.stream_alive(client) {
                self.read_stream(client);
                self.send_watch_request(client, progress_request());
                self.read_stream(client);
                self.check_watches_caught_up(client);
            }
        }
    }

    /// A drained stream's watchers are complete up to what their member applied: the safety
    /// checks alone would pass a watch that stops receiving (one on a hub left without a view
    /// to catch up from, say).
    fn check_watches_caught_up(&mut self, client: u64) {
        if !self.stream_alive(client) {
            return;
        }
        let stream = self.watch_clients[&client].stream.as_ref().expect("alive");
        let applied = self
            .node(stream.member)
            .map_or(0, |n| n.state().kv().current_revision());
        let progress = self.watch_logs[stream.log]
            .responses
            .last()
            .filter(|(_, r)| r.watch_id == -1 && !r.created && r.events.is_empty())
            .map(|(_, r)| r.header.as_ref().map_or(0, |h| h.revision));
        if progress != Some(applied) {
            let member = stream.member;
            self.fail(format!(
                "watch: the stream of client {client} on member {member}, drained at the end, \
                 reports progress up to {progress:?}, but the member applied up to {applied}"
            ));
        }
    }

    /// A new watch client: a slow reader half of the time.
    pub(super) fn new_watch_client(&mut self) -> WatchClient {
        WatchClient {
            slow: self.rng.chance(0.5),
            ..WatchClient::default()
        }
    }
}

fn progress_request() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

/// A response of the hub as its client receives it: encoded as the server sends it, then
/// decoded, so that the checkers judge the bytes a real client would get.
pub(super) fn as_received(response: HubResponse) -> WatchResponse {
    WatchResponse::decode(response.encode_to_vec().as_slice())
        .expect("the hub encodes valid watch responses")
}
