//! The lock and election workload: clients of the Lock and Election services, whose requests
//! run the core's recipes (`detcd::recipes`) against a member exactly as the server runs them:
//! each request the recipe makes is a client request to the member's node (recorded as an op,
//! so linearizability covers it too), and each wait is a stream of the member's watch hub.
//!
//! A lock client grants itself a short lease, locks one of two names, holds the lock a while,
//! then unlocks, revokes its lease, or dies holding it (its lease expires). An election client
//! campaigns, proclaims new values, asks who leads, then resigns, revokes or dies. Requests that
//! wait too long are given up, as a client's context would be, and clean up as the server does.

use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, WatchRequest, WatchResponse,
};
use detcd::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ResignRequest,
};
use detcd::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest};
use detcd::recipes::{self, Recipe, RecipeBugs, RecipeError, Step};
use detcd::watch::StreamId;

use super::*;
use crate::checker::linearizability::RequestSummary;
use crate::history::{RecipeLog, RecipeOutcome, RecipeRequest};

/// How long a client waits for a Lock or Campaign before it gives up (its context ends).
const RECIPE_GIVE_UP_NS: SimNanos = 8_000 * MS;
const LOCK_NAMES: [&[u8]; 2] = [b"lock/a", b"lock/b"];
pub(super) const ELECTION_NAME: &[u8] = b"election/e";

/// A recipe of the workload, or a plain request (lease grants and revocations).
enum Machine {
    Lock(recipes::Lock),
    Unlock(recipes::Unlock),
    Campaign(recipes::Campaign),
    Proclaim(recipes::Proclaim),
    Resign(recipes::Resign),
    Leader(recipes::Leader),
    Observe(recipes::Observe),
    Plain(Plain),
}

/// What a finished run answered.
enum Answer {
    Lock(LockResponse),
    Campaign(CampaignResponse),
    Leader(LeaderResponse),
    Plain(ClientResponse),
    Other,
}

/// Calls `$body` with the machine inside `$machine` as `$m`, mapping its answers to `Answer`.
macro_rules! each_machine {
    ($machine:expr, $m:ident => $body:expr) => {
        match $machine {
            Machine::Lock($m) => $body.map(Answer::Lock),
            Machine::Unlock($m) => $body.map(|_| Answer::Other),
            Machine::Campaign($m) => $body.map(Answer::Campaign),
            Machine::Proclaim($m) => $body.map(|_| Answer::Other),
            Machine::Resign($m) => $body.map(|_| Answer::Other),
            Machine::Leader($m) => $body.map(Answer::Leader),
            Machine::Observe($m) => $body.map(Answer::Leader),
            Machine::Plain($m) => $body.map(Answer::Plain),
        }
    };
}

impl Machine {
    fn start(&mut self) -> Step<Answer> {
        each_machine!(self, m => m.start())
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<Answer> {
        each_machine!(self, m => m.on_reply(reply))
    }

    fn on_watch(&mut self, response: &WatchResponse) -> Step<Answer> {
        each_machine!(self, m => m.on_watch(response))
    }

    fn abandon(&self) -> Option<ClientRequest> {
        match self {
            Machine::Lock(m) => m.abandon(),
            Machine::Campaign(m) => m.abandon(),
            _ => None,
        }
    }
}

/// One request as a recipe: sends it, answers with its reply.
struct Plain(Option<ClientRequest>);

impl Recipe for Plain {
    type Answer = ClientResponse;

    fn start(&mut self) -> Step<ClientResponse> {
        Step::Call(self.0.take().expect("started once"))
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<ClientResponse> {
        Step::Done(reply.map_err(RecipeError::Etcd))
    }

    fn on_watch(&mut self, _: &WatchResponse) -> Step<ClientResponse> {
        Step::Wait
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}

/// A request of the workload in progress on a member.
pub(super) struct RecipeRun {
    client: u64,
    member: MemberId,
    incarnation: u64,
    machine: Machine,
    /// The step to carry out at the next `RecipeAdvance`.
    next: Option<Step<Answer>>,
    stream: Option<StreamId>,
    /// Waiting for a response of `stream`.
    watching: bool,
    /// Index of its log in `World::recipe_logs`.
    log: usize,
}

/// What a lock or election client holds.
#[derive(Clone, Debug, Default)]
pub(super) struct RecipeClient {
    elects: bool,
    busy: bool,
    lease: Option<i64>,
    lock: Option<Bytes>,
    leader: Option<LeaderKey>,
    proclaims_left: u64,
}

impl World {
    pub(super) fn new_recipe_client(&mut self) -> RecipeClient {
        RecipeClient {
            elects: self.rng.chance(0.4),
            ..RecipeClient::default()
        }
    }

    /// A client's next request, if it is not waiting for one.
    pub(super) fn recipe_turn(&mut self, client: u64) {
        let state = self.recipe_clients[&client].clone();
        if state.busy || self.issued >= self.options.ops {
            return;
        }
        self.issued += 1;
        let Some(lease) = state.lease else {
            let ttl = self.rng.between(1, 3) as i64;
            let grant = ClientRequest::LeaseGrant(LeaseGrantRequest { ttl, id: 0 });
            return self.start_plain(client, grant);
        };
        if let Some(key) = state.lock {
            return self.release_lock(client, key, lease);
        }
        if let Some(leader) = state.leader {
            return self.lead(client, leader, state.proclaims_left);
        }
        if !state.elects {
            let name = Bytes::from_static(LOCK_NAMES[self.rng.below(2) as usize]);
            let request = RecipeRequest::Lock {
                name: name.clone(),
                lease,
            };
            let lock = recipes::Lock::new(LockRequest { name, lease }, self.recipe_bugs());
            return self.start_run(client, Machine::Lock(lock), request);
        }
        let name = Bytes::from_static(ELECTION_NAME);
        if self.rng.chance(0.1) {
            let request = RecipeRequest::Observe { name: name.clone() };
            let observe = recipes::Observe::new(LeaderRequest { name });
            return self.start_run(client, Machine::Observe(observe), request);
        }
        if self.rng.chance(0.2) {
            let request = RecipeRequest::Leader { name: name.clone() };
            let leader = recipes::Leader::new(LeaderRequest { name }, self.recipe_bugs());
            return self.start_run(client, Machine::Leader(leader), request);
        }
        let value = Bytes::from(format!("c{client}.{}", self.issued));
        let request = RecipeRequest::Campaign {
            name: name.clone(),
            lease,
        };
        let campaign = recipes::Campaign::new(CampaignRequest { name, lease, value });
        self.start_run(client, Machine::Campaign(campaign), request);
    }

    fn recipe_bugs(&self) -> RecipeBugs {
        RecipeBugs {
            lock_skip_recheck: self.options.bug == Some(Bug::LockSkipRecheck),
            leader_newest: self.options.bug == Some(Bug::LeaderNewest),
        }
    }

    /// Unlocks, revokes the lease, or dies holding the lock (the lease then expires).
    fn release_lock(&mut self, client: u64, key: Bytes, lease: i64) {
        match self.rng.below(10) {
            0..=6 => {
                let request = RecipeRequest::Unlock { key: key.clone() };
                let unlock = recipes::Unlock::new(UnlockRequest { key });
                self.start_run(client, Machine::Unlock(unlock), request);
            }
            7 | 8 => self.start_plain(client, revoke(lease)),
            _ => self.dies(client),
        }
    }

    fn lead(&mut self, client: u64, leader: LeaderKey, proclaims_left: u64) {
        if proclaims_left > 0 {
            let value = Bytes::from(format!("c{client}.{}", self.issued));
            let request = RecipeRequest::Proclaim {
                key: leader.key.clone(),
            };
            let proclaim = recipes::Proclaim::new(ProclaimRequest {
                leader: Some(leader),
                value,
            });
            return self.start_run(client, Machine::Proclaim(proclaim), request);
        }
        match self.rng.below(10) {
            0..=6 => {
                let request = RecipeRequest::Resign {
                    key: leader.key.clone(),
                };
                let resign = recipes::Resign::new(ResignRequest {
                    leader: Some(leader.clone()),
                });
                self.start_run(client, Machine::Resign(resign), request);
            }
            7 | 8 => self.start_plain(client, revoke(leader.lease)),
            _ => self.dies(client),
        }
    }

    /// The client process dies: it forgets all it held; its lease expires.
    fn dies(&mut self, client: u64) {
        let state = self
            .recipe_clients
            .get_mut(&client)
            .expect("a recipe client");
        let elects = state.elects;
        *state = RecipeClient {
            elects,
            ..RecipeClient::default()
        };
        self.log(0, || {
            format!("recipe client {client} dies holding its lease")
        });
        let at = self.now + self.rng.below(200 * MS);
        self.schedule(at, Event::RecipeTurn { client });
    }

    fn start_plain(&mut self, client: u64, request: ClientRequest) {
        let plain = Machine::Plain(Plain(Some(request)));
        // Plain requests are judged by the linearizability checker; the log keeps no entry.
        self.start_run_logged(client, plain, None);
    }

    fn start_run(&mut self, client: u64, machine: Machine, request: RecipeRequest) {
        self.start_run_logged(client, machine, Some(request));
    }

    fn start_run_logged(
        &mut self,
        client: u64,
        mut machine: Machine,
        request: Option<RecipeRequest>,
    ) {
        let member = 1 + self.rng.below(self.options.members);
        let log = match request {
            Some(request) => {
                self.recipe_logs.push(RecipeLog {
                    client,
                    member,
                    request,
                    invoked_at: self.now,
                    outcome: RecipeOutcome::Unknown,
                    observed: Vec::new(),
                });
                self.recipe_logs.len() - 1
            }
            None => usize::MAX,
        };
        self.recipe_clients.get_mut(&client).expect("client").busy = true;
        self.next_run += 1;
        let id = self.next_run;
        let m = &self.members[&member];
        if m.node.is_none() {
            // Connection refused: nothing happened.
            let refused = Err(RecipeError::Etcd(EtcdError::Stopped));
            let run = self.new_run(client, member, machine, log, None);
            self.recipe_runs.insert(id, run);
            return self.recipe_finish(id, refused);
        }
        let first = machine.start();
        let run = self.new_run(client, member, machine, log, Some(first));
        self.recipe_runs.insert(id, run);
        self.schedule(self.now, Event::RecipeAdvance { run: id });
        // An observer watches for a while, then cancels its stream.
        let patience = match self.recipe_runs[&id].machine {
            Machine::Observe(_) => self.rng.between(500 * MS, 3_000 * MS),
            _ => RECIPE_GIVE_UP_NS,
        };
        let give_up = self.now + patience;
        self.schedule(give_up, Event::RecipeGiveUp { run: id });
    }

    fn new_run(
        &self,
        client: u64,
        member: MemberId,
        machine: Machine,
        log: usize,
        next: Option<Step<Answer>>,
    ) -> RecipeRun {
        RecipeRun {
            client,
            member,
            incarnation: self.members[&member].incarnation,
            machine,
            next,
            stream: None,
            watching: false,
            log,
        }
    }
}

fn revoke(lease: i64) -> ClientRequest {
    ClientRequest::LeaseRevoke(LeaseRevokeRequest { id: lease })
}

impl World {
    /// Carries out a run's next step on its member.
    pub(super) fn recipe_advance(&mut self, id: u64) {
        let Some(run) = self.recipe_runs.get_mut(&id) else {
            return;
        };
        let Some(step) = run.next.take() else {
            return;
        };
        let (client, member) = (run.client, run.member);
        let m = &self.members[&member];
        if m.node.is_none() || m.incarnation != run.incarnation {
            return self.recipe_lost(id);
        }
        match step {
            Step::Call(request) => self.recipe_call(id, client, member, request),
            Step::Watch(creates) => {
                self.recipe_close_stream(id);
                self.next_stream += 1;
                let stream = self.next_stream;
                self.open_hub_stream(member, stream, false);
                let local = self.members[&member].clock.local(self.now);
                let hub = &mut self.members.get_mut(&member).expect("member").hub;
                for create in creates {
                    let request = WatchRequest {
                        request_union: Some(RequestUnion::CreateRequest(create)),
                    };
                    hub.request(local, stream, request);
                }
                let run = self.recipe_runs.get_mut(&id).expect("run");
                run.stream = Some(stream);
                run.watching = true;
                self.recipe_read(id);
            }
            Step::Wait => {
                self.recipe_runs.get_mut(&id).expect("run").watching = true;
                self.recipe_read(id);
            }
            Step::Emit(answer, then) => {
                if let Answer::Leader(observed) = answer {
                    let log = self.recipe_runs[&id].log;
                    self.recipe_logs[log].observed.push(observed);
                }
                self.recipe_next(id, *then)
            }
            Step::Done(result) => self.recipe_finish(id, result),
        }
    }

    /// A request of a run, sent to its member as a client's (and recorded as an op).
    fn recipe_call(&mut self, id: u64, client: u64, member: MemberId, request: ClientRequest) {
        let op = self.record_op(client, member, &request);
        self.recipe_ops.insert(op, id);
        let rid = self.track(member, op);
        self.log(member, || {
            format!("recipe run {id} op {op}: {}", RequestSummary(&request))
        });
        self.mix(op as u64 ^ (member << 32) ^ 0x7ec1);
        self.input(
            member,
            Input::Client {
                id: rid,
                request,
                credentials: None,
            },
        );
    }

    /// The answer to a run's request (from `reply`).
    pub(super) fn recipe_reply(&mut self, op: usize, result: Result<ClientResponse, EtcdError>) {
        let Some(id) = self.recipe_ops.remove(&op) else {
            return;
        };
        let Some(run) = self.recipe_runs.get_mut(&id) else {
            return;
        };
        let step = run.machine.on_reply(result);
        self.recipe_next(id, step);
    }

    fn recipe_next(&mut self, id: u64, step: Step<Answer>) {
        if let Some(run) = self.recipe_runs.get_mut(&id) {
            run.watching = false;
            run.next = Some(step);
            self.schedule(self.now, Event::RecipeAdvance { run: id });
        }
    }

    /// Hands a waiting run the responses its stream has.
    fn recipe_read(&mut self, id: u64) {
        loop {
            let Some(run) = self.recipe_runs.get(&id) else {
                return;
            };
            let (Some(stream), true) = (run.stream, run.watching) else {
                return;
            };
            let hub = &mut self.members.get_mut(&run.member).expect("member").hub;
            let ended = hub.ended(stream).is_some();
            let response = match (
                ended,
                hub.pop(stream).map(super::watch_clients::as_received),
            ) {
                (_, Some(response)) => response,
                (true, None) => WatchResponse {
                    canceled: true,
                    ..Default::default()
                },
                (false, None) => return,
            };
            let run = self.recipe_runs.get_mut(&id).expect("run");
            let step = run.machine.on_watch(&response);
            if !matches!(step, Step::Wait) {
                return self.recipe_next(id, step);
            }
        }
    }

    /// After a member's hub took a feed: its waiting runs read.
    pub(super) fn recipes_read(&mut self, member: MemberId) {
        let waiting: Vec<u64> = self
            .recipe_runs
            .iter()
            .filter(|(_, r)| r.member == member && r.watching)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.recipe_read(id);
        }
    }

    fn recipe_close_stream(&mut self, id: u64) {
        let run = self.recipe_runs.get_mut(&id).expect("run");
        if let Some(stream) = run.stream.take() {
            let (member, incarnation) = (run.member, run.incarnation);
            self.close_hub_stream(member, incarnation, stream);
        }
    }

    /// The client's context ends: it stops waiting, and the recipe's cleanup goes out.
    pub(super) fn recipe_give_up(&mut self, id: u64) {
        let Some(run) = self.recipe_runs.get(&id) else {
            return;
        };
        let (client, member, incarnation) = (run.client, run.member, run.incarnation);
        let cleanup = run.machine.abandon();
        self.log(0, || format!("recipe client {client} gives up run {id}"));
        self.recipe_lost(id);
        let m = &self.members[&member];
        if let (Some(request), true) = (cleanup, m.node.is_some() && m.incarnation == incarnation) {
            let op = self.record_op(client, member, &request);
            let rid = self.track(member, op);
            self.input(
                member,
                Input::Client {
                    id: rid,
                    request,
                    credentials: None,
                },
            );
        }
    }

    /// Every run on a member that crashed ends without an answer.
    pub(super) fn recipes_crashed(&mut self, member: MemberId) {
        let lost: Vec<u64> = self
            .recipe_runs
            .iter()
            .filter(|(_, r)| r.member == member)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.recipe_lost(id);
        }
    }

    /// A run ends without an answer: the client does not know what it holds, and starts over
    /// with a new session.
    fn recipe_lost(&mut self, id: u64) {
        self.recipe_close_stream(id);
        let run = self.recipe_runs.remove(&id).expect("run");
        self.recipe_ops.retain(|_, r| *r != id);
        self.recipe_client_over(run.client, true);
    }

    /// A run's final answer: logged for the checker, and learned by its client.
    fn recipe_finish(&mut self, id: u64, result: Result<Answer, RecipeError>) {
        self.recipe_close_stream(id);
        let run = self.recipe_runs.remove(&id).expect("run");
        let now = self.now;
        self.log(run.member, || match &result {
            Ok(_) => format!("recipe run {id} answers"),
            Err(e) => format!("recipe run {id} fails: {e}"),
        });
        if let Some(log) = self.recipe_logs.get_mut(run.log) {
            log.outcome = outcome(&run.machine, &result, now);
        }
        let client = run.client;
        let state = self.recipe_clients.get_mut(&client).expect("client");
        match result {
            Ok(Answer::Plain(ClientResponse::LeaseGrant(granted))) => {
                state.lease = Some(granted.id)
            }
            Ok(Answer::Plain(_)) => return self.recipe_client_over(client, true),
            Ok(Answer::Lock(locked)) => state.lock = Some(locked.key),
            Ok(Answer::Campaign(won)) => {
                state.leader = won.leader;
                state.proclaims_left = self.rng.below(3);
            }
            Ok(Answer::Leader(_)) => {}
            Ok(Answer::Other) if matches!(run.machine, Machine::Proclaim(_)) => {
                state.proclaims_left = state.proclaims_left.saturating_sub(1);
            }
            Ok(Answer::Other) => {
                state.lock = None;
                state.leader = None;
            }
            Err(RecipeError::NotLeader) => state.leader = None,
            Err(_) => return self.recipe_client_over(client, true),
        }
        self.recipe_client_over(client, false);
    }

    /// The client's request is over; with `forget`, it drops its session and starts afresh.
    fn recipe_client_over(&mut self, client: u64, forget: bool) {
        if forget {
            self.dies(client);
        } else {
            self.recipe_clients.get_mut(&client).expect("client").busy = false;
            let holding = {
                let state = &self.recipe_clients[&client];
                state.lock.is_some() || state.leader.is_some()
            };
            let pause = if holding {
                self.rng.between(10 * MS, 1_500 * MS)
            } else {
                self.rng.below(100 * MS)
            };
            let at = self.now + pause;
            self.schedule(at, Event::RecipeTurn { client });
        }
    }
}

fn outcome(
    machine: &Machine,
    result: &Result<Answer, RecipeError>,
    returned_at: SimNanos,
) -> RecipeOutcome {
    let revision = |header: &Option<detcd::proto::etcdserverpb::ResponseHeader>| {
        header.as_ref().map_or(0, |h| h.revision)
    };
    match (result, machine) {
        (Ok(Answer::Lock(locked)), _) => RecipeOutcome::Locked {
            key: locked.key.clone(),
            revision: revision(&locked.header),
        },
        (Ok(Answer::Campaign(won)), Machine::Campaign(campaign)) => {
            let leader = won.leader.clone().unwrap_or_default();
            RecipeOutcome::Won {
                key: leader.key,
                rev: leader.rev,
                won_at: campaign.won_at().unwrap_or(0),
            }
        }
        (Ok(Answer::Leader(leader)), _) => RecipeOutcome::Leader {
            revision: revision(&leader.header),
            kv: leader.kv.clone().unwrap_or_default(),
        },
        (Ok(_), _) => RecipeOutcome::Ok { returned_at },
        (Err(error), _) => RecipeOutcome::Failed {
            error: error.to_string(),
            returned_at,
        },
    }
}
