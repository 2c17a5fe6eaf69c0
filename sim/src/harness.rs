//! A small deterministic in-process cluster: real `Node`s, an in-memory network with a fixed
//! latency and cuttable links, and an in-memory disk per member that knows what was written and
//! what was synced. Crashes lose the unsynced bytes; restarts go through `wal::recover`, the same
//! decoding the server uses on its files.
//!
//! Everything is ordered by (time, sequence number), so one seed gives one history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use detcd::api::Credentials;
use detcd::error::EtcdError;
use detcd::mvcc::MemoryColdStore;
use detcd::node::{
    ClientRequest, ClientResponse, Config, DiskError, Input, IoId, MemberId, Node, Output,
    PeerMessage, RequestId,
};
use detcd::time::Instant;
use detcd::wal;

use crate::disk::SimDisk;

enum Event {
    Deliver {
        from: MemberId,
        to: MemberId,
        msg: PeerMessage,
    },
    DiskDone {
        member: MemberId,
        io: IoId,
    },
}

pub struct Member {
    pub node: Option<Node>,
    pub disk: SimDisk,
    /// The running incarnation's cold segments.
    pub cold: MemoryColdStore,
    pub config: Config,
    incarnation: u64,
    /// Every disk operation from now on fails (an fsync error).
    pub disk_failing: bool,
    /// Why the member stopped, if it did.
    pub stopped: Option<String>,
}

pub struct Cluster {
    pub now: Instant,
    pub members: BTreeMap<MemberId, Member>,
    seed: u64,
    latency: Duration,
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    cut: BTreeSet<(MemberId, MemberId)>,
    next_request: u64,
    pub replies: BTreeMap<RequestId, Result<ClientResponse, EtcdError>>,
    /// Every output and delivery, hashed, to compare two runs of one seed.
    pub trace_hash: u64,
}

impl Cluster {
    /// A cluster of members 1..=size, each built from `configure(Config::new(id, peers))`.
    pub fn new(size: u64, seed: u64, configure: impl Fn(Config) -> Config) -> Cluster {
        let peers: Vec<MemberId> = (1..=size).collect();
        let mut cluster = Cluster {
            now: Instant::ZERO,
            members: BTreeMap::new(),
            seed,
            latency: Duration::from_millis(1),
            events: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            next_request: 0,
            replies: BTreeMap::new(),
            trace_hash: 0xcbf29ce484222325,
        };
        for &id in &peers {
            let config = configure(Config::new(id, peers.clone()));
            cluster.members.insert(
                id,
                Member {
                    node: None,
                    disk: SimDisk::default(),
                    cold: MemoryColdStore::default(),
                    config,
                    incarnation: 0,
                    disk_failing: false,
                    stopped: None,
                },
            );
            cluster.start(id).expect("a fresh member starts");
        }
        cluster
    }

    pub fn node(&self, id: MemberId) -> &Node {
        self.members[&id].node.as_ref().expect("member is running")
    }

    /// Starts (or restarts) a member from what its disk holds, through the real recovery path.
    pub fn start(&mut self, id: MemberId) -> Result<(), String> {
        let now = self.now;
        let member = self.members.get_mut(&id).expect("known member");
        let recovered = wal::recover(&member.disk.image()).map_err(|e| format!("{e:?}"))?;
        // The driver truncates a torn tail before appending again.
        let valid = (recovered.wal_end_offset - member.disk.wal_start_offset) as usize;
        member.disk.wal.truncate(valid);
        member.disk.synced_len = member.disk.synced_len.min(valid);
        member.incarnation += 1;
        let seed =
            self.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ member.incarnation.rotate_left(40);
        member.node = Some(
            Node::new(member.config.clone(), recovered, seed, now).map_err(|e| e.to_string())?,
        );
        self.drain(id);
        Ok(())
    }

    /// Kills a member: it loses its in-memory state and every unsynced WAL byte.
    pub fn crash(&mut self, id: MemberId) {
        let member = self.members.get_mut(&id).expect("known member");
        member.node = None;
        member.cold = MemoryColdStore::default();
        member.disk.crash_losing_unsynced();
        self.events.retain(|_, e| match e {
            Event::DiskDone { member, .. } => *member != id,
            Event::Deliver { .. } => true,
        });
    }

    /// Cuts (or heals) both directions between `a` and every other member.
    pub fn isolate(&mut self, a: MemberId, isolated: bool) {
        let ids: Vec<MemberId> = self.members.keys().copied().collect();
        for b in ids {
            if b != a {
                for link in [(a, b), (b, a)] {
                    if isolated {
                        self.cut.insert(link);
                    } else {
                        self.cut.remove(&link);
                    }
                }
            }
        }
    }

    pub fn submit(&mut self, to: MemberId, request: ClientRequest) -> RequestId {
        self.submit_as(to, request, None)
    }

    /// Submits a request that carries what the client port learned of its sender.
    pub fn submit_as(
        &mut self,
        to: MemberId,
        request: ClientRequest,
        credentials: Option<Credentials>,
    ) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.input(
            to,
            Input::Client {
                id,
                request,
                credentials,
            },
        );
        id
    }

    fn input(&mut self, id: MemberId, input: Input) {
        let now = self.now;
        let Some(node) = self.members.get_mut(&id).and_then(|m| m.node.as_mut()) else {
            return;
        };
        node.handle(now, input);
        node.check_invariants();
        self.drain(id);
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn mix(&mut self, value: u64) {
        self.trace_hash = (self.trace_hash ^ value).wrapping_mul(0x100000001b3);
    }

    fn drain(&mut self, id: MemberId) {
        loop {
            let Some(member) = self.members.get_mut(&id) else {
                return;
            };
            let Some(node) = member.node.as_mut() else {
                return;
            };
            let Some(mut output) = node.poll_output() else {
                return;
            };
            output
                .resolve(&member.cold)
                .expect("the cold values an output needs are in the member's segments");
            match output {
                Output::SendSnapshot { .. } => unreachable!("resolved when polled"),
                Output::Send { to, msg } => {
                    self.mix(to ^ (id << 16));
                    if !self.cut.contains(&(id, to)) {
                        let at = self.now + self.latency;
                        self.schedule(at, Event::Deliver { from: id, to, msg });
                    }
                }
                Output::Disk { io, op } => {
                    if !member.disk_failing {
                        member
                            .disk
                            .execute(&op, &member.cold)
                            .expect("a snapshot's cold values are in the member's segments");
                    }
                    self.mix(io.0 ^ 0xd15c);
                    let at = self.now + Duration::from_micros(100);
                    self.schedule(at, Event::DiskDone { member: id, io });
                }
                Output::Cold(op) => member.cold.apply(&op),
                Output::Reply {
                    id: rid, result, ..
                } => {
                    self.mix(rid.0 ^ u64::from(result.is_ok()) << 63);
                    self.replies.insert(rid, result.map(|response| *response));
                }
                Output::Stopped { reason } => member.stopped = Some(reason.to_string()),
                Output::Proposed { .. }
                | Output::Applied { .. }
                | Output::Watch(_)
                | Output::Members(_)
                | Output::HashAt { .. }
                | Output::Free(_) => {}
            }
        }
    }

    /// Runs until `deadline`, delivering events and firing timers in time order.
    pub fn run_until(&mut self, deadline: Instant) {
        loop {
            let next_event = self.events.keys().next().map(|(t, _)| *t);
            let next_timer = self
                .members
                .iter()
                .filter_map(|(id, m)| {
                    m.node
                        .as_ref()
                        .and_then(|n| n.poll_timeout())
                        .map(|t| (t, *id))
                })
                .min();
            let next = match (next_event, next_timer) {
                (Some(e), Some((t, _))) => e.min(t),
                (Some(e), None) => e,
                (None, Some((t, _))) => t,
                (None, None) => {
                    self.now = deadline;
                    return;
                }
            };
            if next > deadline {
                self.now = deadline;
                return;
            }
            self.now = self.now.max(next);
            if next_event == Some(next) {
                let (_, event) = self.events.pop_first().expect("event exists");
                match event {
                    Event::Deliver { from, to, msg } => {
                        if !self.cut.contains(&(from, to)) {
                            self.mix(from ^ (to << 8) ^ self.now.as_nanos());
                            self.input(to, Input::Peer { from, msg });
                        }
                    }
                    Event::DiskDone { member, io } => {
                        let failing = self.members.get(&member).is_some_and(|m| m.disk_failing);
                        let result = if failing {
                            Err(DiskError::described("injected fsync failure".into()))
                        } else {
                            Ok(())
                        };
                        self.input(member, Input::DiskDone { io, result });
                    }
                }
            } else if let Some((_, id)) = next_timer {
                self.input(id, Input::Tick);
            }
        }
    }

    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(deadline);
    }

    /// Runs until the request is answered or `max` passes; returns the answer if any.
    pub fn wait(
        &mut self,
        id: RequestId,
        max: Duration,
    ) -> Option<Result<ClientResponse, EtcdError>> {
        let deadline = self.now + max;
        while self.now < deadline {
            if let Some(r) = self.replies.remove(&id) {
                return Some(r);
            }
            let step = (self.now + Duration::from_millis(5)).min(deadline);
            self.run_until(step);
        }
        self.replies.remove(&id)
    }

    /// Submits and waits.
    pub fn call(
        &mut self,
        to: MemberId,
        request: ClientRequest,
    ) -> Option<Result<ClientResponse, EtcdError>> {
        let id = self.submit(to, request);
        self.wait(id, Duration::from_secs(20))
    }

    pub fn leaders(&self) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.as_ref().is_some_and(|n| n.is_leader()))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Runs until exactly one running member is leader and every running member knows it.
    pub fn wait_for_leader(&mut self, max: Duration) -> Option<MemberId> {
        let deadline = self.now + max;
        while self.now < deadline {
            let leaders = self.leaders();
            if let [leader] = leaders[..] {
                let all_agree = self
                    .members
                    .values()
                    .filter_map(|m| m.node.as_ref())
                    .all(|n| n.leader_id() == Some(leader));
                if all_agree {
                    return Some(leader);
                }
            }
            let step = self.now + Duration::from_millis(10);
            self.run_until(step);
        }
        None
    }

    /// A member's disk, for tests that inspect what was written.
    pub fn disk(&self, id: MemberId) -> &SimDisk {
        &self.members[&id].disk
    }
}

/// Convenience constructors for requests.
pub mod req {
    use super::*;
    use detcd::proto::etcdserverpb::{PutRequest, RangeRequest};

    pub fn put(key: &str, value: &str) -> ClientRequest {
        ClientRequest::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
    }

    pub fn get(key: &str, serializable: bool) -> ClientRequest {
        ClientRequest::Range(RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            serializable,
            ..Default::default()
        })
    }

    pub fn all(serializable: bool) -> ClientRequest {
        ClientRequest::Range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            serializable,
            ..Default::default()
        })
    }
}
