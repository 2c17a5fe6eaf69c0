//! `v3electionpb.Election`: clientv3's `Election` run by the member.

use bytes::Bytes;

use super::wait::{WaitDeletes, Waited};
use super::{
    contender_key, create_revision_is, expect, first_created, get, op, prefix_end, prefix_of,
    txn_range, Recipe, RecipeBugs, RecipeError, Step, SESSION_TTL_SECONDS,
};
use crate::api::{ClientRequest, ClientResponse};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::range_request::SortOrder;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, ResponseHeader, TxnRequest,
    WatchCreateRequest, WatchResponse,
};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::KeyValue;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};

/// Puts `value` on the leader key, if it is still the key created at `revision`.
fn proclaim_txn(leader: &LeaderKey, value: &Bytes) -> ClientRequest {
    let put = PutRequest {
        key: leader.key.clone(),
        value: value.clone(),
        lease: leader.lease,
        ..Default::default()
    };
    TxnRequest {
        compare: vec![create_revision_is(&leader.key, leader.rev)],
        success: vec![op(put)],
        failure: vec![],
    }
    .into()
}

/// Deletes the leader key, if it is still the key created at `revision`.
fn resign_txn(leader: &LeaderKey) -> ClientRequest {
    let delete = DeleteRangeRequest {
        key: leader.key.clone(),
        ..Default::default()
    };
    TxnRequest {
        compare: vec![create_revision_is(&leader.key, leader.rev)],
        success: vec![op(delete)],
        failure: vec![],
    }
    .into()
}

/// `Campaign{name, lease, value}`: puts `<name>/<lease hex>` = value with the lease (or, if
/// this lease already campaigns, proclaims the new value on its key), waits until every older
/// candidate is gone, and answers with the leader key.
pub struct Campaign {
    request: CampaignRequest,
    phase: CampaignPhase,
    leader: LeaderKey,
    /// The header of the txn that entered the election: etcd answers with it.
    header: Option<ResponseHeader>,
    wait: Option<WaitDeletes>,
    /// The revision at which the candidate was seen to lead (its key the oldest).
    won_at: Option<i64>,
}

enum CampaignPhase {
    Grant,
    Enter,
    /// This lease was a candidate already, with another value.
    Proclaim,
    Waiting,
    Confirm,
    /// Withdrawing after a failed proclaim, then failing with this.
    Resign(RecipeError),
}

impl Campaign {
    pub fn new(request: CampaignRequest) -> Campaign {
        let leader = LeaderKey {
            name: request.name.clone(),
            lease: request.lease,
            ..Default::default()
        };
        Campaign {
            request,
            phase: CampaignPhase::Grant,
            leader,
            header: None,
            wait: None,
            won_at: None,
        }
    }

    /// The revision at which the candidate was seen to lead, once it won (the answer's header
    /// is the older one of the txn that entered, as etcd's): for the simulator's checker.
    pub fn won_at(&self) -> Option<i64> {
        self.won_at
    }

    /// The candidate's leader key, once its create revision is known (for the simulator).
    pub fn candidate(&self) -> Option<&LeaderKey> {
        (self.leader.rev > 0).then_some(&self.leader)
    }

    fn enter(&mut self) -> Step<CampaignResponse> {
        self.leader.key = contender_key(&prefix_of(&self.request.name), self.leader.lease);
        self.phase = CampaignPhase::Enter;
        let put = PutRequest {
            key: self.leader.key.clone(),
            value: self.request.value.clone(),
            lease: self.leader.lease,
            ..Default::default()
        };
        Step::Call(
            TxnRequest {
                compare: vec![create_revision_is(&self.leader.key, 0)],
                success: vec![op(put)],
                failure: vec![op(get(&self.leader.key))],
            }
            .into(),
        )
    }

    fn on_enter(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<CampaignResponse> {
        let response = match expect::<TxnRequest>(reply) {
            Ok(response) => response,
            Err(error) => return Step::Done(Err(error)),
        };
        self.header = response.header;
        self.leader.rev = self.header.as_ref().map_or(0, |h| h.revision);
        if let Some(own) = txn_range(&response, 0).and_then(|r| r.kvs.first()) {
            self.leader.rev = own.create_revision;
            if own.value != self.request.value {
                self.phase = CampaignPhase::Proclaim;
                return Step::Call(proclaim_txn(&self.leader, &self.request.value));
            }
        }
        self.wait_for_older()
    }

    fn wait_for_older(&mut self) -> Step<CampaignResponse> {
        self.phase = CampaignPhase::Waiting;
        let wait = self.wait.insert(WaitDeletes::new(
            prefix_of(&self.request.name),
            self.leader.rev - 1,
            self.leader.key.clone(),
            false,
        ));
        let step = wait.read().step();
        self.waiting(step)
    }

    fn waiting(&mut self, step: Result<Step<CampaignResponse>, Waited>) -> Step<CampaignResponse> {
        match step {
            Ok(step) => step,
            Err(Waited::Finished) => {
                self.phase = CampaignPhase::Confirm;
                Step::Call(get(&self.leader.key).into())
            }
            Err(Waited::Failed(error)) => Step::Done(Err(error)),
        }
    }

    fn on_confirm(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<CampaignResponse> {
        match expect::<RangeRequest>(reply) {
            Ok(read) if read.kvs.is_empty() => Step::Done(Err(RecipeError::SessionExpired)),
            Ok(read) => {
                self.won_at = read.header.map(|h| h.revision);
                Step::Done(Ok(CampaignResponse {
                    header: self.header,
                    leader: Some(self.leader.clone()),
                }))
            }
            Err(error) => Step::Done(Err(error)),
        }
    }
}

impl Recipe for Campaign {
    type Answer = CampaignResponse;

    fn start(&mut self) -> Step<CampaignResponse> {
        if self.leader.lease != 0 {
            return self.enter();
        }
        Step::Call(
            LeaseGrantRequest {
                ttl: SESSION_TTL_SECONDS,
                id: 0,
            }
            .into(),
        )
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<CampaignResponse> {
        match &self.phase {
            CampaignPhase::Grant => match expect::<LeaseGrantRequest>(reply) {
                Ok(granted) => {
                    self.leader.lease = granted.id;
                    self.enter()
                }
                Err(error) => Step::Done(Err(error)),
            },
            CampaignPhase::Enter => self.on_enter(reply),
            CampaignPhase::Proclaim => match expect::<TxnRequest>(reply) {
                Ok(proclaimed) if proclaimed.succeeded => self.wait_for_older(),
                Ok(_) => self.resign_and_fail(RecipeError::NotLeader),
                Err(error) => self.resign_and_fail(error),
            },
            CampaignPhase::Waiting => match expect::<RangeRequest>(reply) {
                Ok(read) => {
                    let wait = self.wait.as_mut().expect("waiting has a wait");
                    let step = wait.on_read(read).step();
                    self.waiting(step)
                }
                Err(error) => Step::Done(Err(error)),
            },
            CampaignPhase::Confirm => self.on_confirm(reply),
            CampaignPhase::Resign(error) => Step::Done(Err(error.clone())),
        }
    }

    fn on_watch(&mut self, response: &WatchResponse) -> Step<CampaignResponse> {
        match (&self.phase, self.wait.as_mut()) {
            (CampaignPhase::Waiting, Some(wait)) => {
                let step = wait.on_watch(response).step();
                self.waiting(step)
            }
            _ => Step::Wait,
        }
    }

    fn abandon(&self) -> Option<ClientRequest> {
        matches!(
            self.phase,
            CampaignPhase::Proclaim | CampaignPhase::Waiting | CampaignPhase::Confirm
        )
        .then(|| resign_txn(&self.leader))
    }
}

impl Campaign {
    fn resign_and_fail(&mut self, error: RecipeError) -> Step<CampaignResponse> {
        self.phase = CampaignPhase::Resign(error);
        Step::Call(resign_txn(&self.leader))
    }
}

/// `Proclaim{leader, value}`: a new value on the leader key, only while it is that key.
pub struct Proclaim {
    request: ProclaimRequest,
}

impl Proclaim {
    pub fn new(request: ProclaimRequest) -> Proclaim {
        Proclaim { request }
    }
}

impl Recipe for Proclaim {
    type Answer = ProclaimResponse;

    fn start(&mut self) -> Step<ProclaimResponse> {
        match &self.request.leader {
            Some(leader) => Step::Call(proclaim_txn(leader, &self.request.value)),
            None => Step::Done(Err(RecipeError::MissingLeaderKey)),
        }
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<ProclaimResponse> {
        Step::Done(match expect::<TxnRequest>(reply) {
            Ok(txn) if txn.succeeded => Ok(ProclaimResponse { header: txn.header }),
            Ok(_) => Err(RecipeError::NotLeader),
            Err(error) => Err(error),
        })
    }

    fn on_watch(&mut self, _: &WatchResponse) -> Step<ProclaimResponse> {
        Step::Wait
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}

/// `Resign{leader}`: deletes the leader key if it is still that key; answers either way.
pub struct Resign {
    request: ResignRequest,
}

impl Resign {
    pub fn new(request: ResignRequest) -> Resign {
        Resign { request }
    }
}

impl Recipe for Resign {
    type Answer = ResignResponse;

    fn start(&mut self) -> Step<ResignResponse> {
        match &self.request.leader {
            Some(leader) => Step::Call(resign_txn(leader)),
            None => Step::Done(Err(RecipeError::MissingLeaderKey)),
        }
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<ResignResponse> {
        Step::Done(expect::<TxnRequest>(reply).map(|txn| ResignResponse { header: txn.header }))
    }

    fn on_watch(&mut self, _: &WatchResponse) -> Step<ResignResponse> {
        Step::Wait
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}

/// `Leader{name}`: the oldest candidate's key and value.
pub struct Leader {
    prefix: Bytes,
    bugs: RecipeBugs,
}

impl Leader {
    pub fn new(request: LeaderRequest, bugs: RecipeBugs) -> Leader {
        Leader {
            prefix: prefix_of(&request.name),
            bugs,
        }
    }
}

impl Recipe for Leader {
    type Answer = LeaderResponse;

    fn start(&mut self) -> Step<LeaderResponse> {
        let mut oldest = first_created(&self.prefix);
        if self.bugs.leader_newest {
            oldest.sort_order = SortOrder::Descend as i32;
        }
        Step::Call(oldest.into())
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<LeaderResponse> {
        Step::Done(expect::<RangeRequest>(reply).and_then(|mut read| {
            if read.kvs.is_empty() {
                return Err(RecipeError::NoLeader);
            }
            Ok(LeaderResponse {
                header: read.header,
                kv: Some(read.kvs.swap_remove(0)),
            })
        }))
    }

    fn on_watch(&mut self, _: &WatchResponse) -> Step<LeaderResponse> {
        Step::Wait
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}

/// `Observe{name}`: a stream of the leader, once now (or as soon as there is one) and then at
/// every change: each new value the leader proclaims, and each new leader.
pub struct Observe {
    prefix: Bytes,
    phase: ObservePhase,
}

enum ObservePhase {
    /// Reading who leads.
    Find,
    /// No leader: watching the prefix for the first candidate.
    AwaitFirst,
    /// Watching the leader's key until it is deleted.
    Follow,
}

impl Observe {
    pub fn new(request: LeaderRequest) -> Observe {
        Observe {
            prefix: prefix_of(&request.name),
            phase: ObservePhase::Find,
        }
    }

    fn find(&mut self) -> Step<LeaderResponse> {
        self.phase = ObservePhase::Find;
        Step::Call(first_created(&self.prefix).into())
    }

    /// Reports `kv` as the leader and follows its key from the revision after the header's.
    fn lead(&mut self, mut header: ResponseHeader, kv: KeyValue) -> Step<LeaderResponse> {
        // The first leader after none is reported at its own revision, as etcd does.
        if matches!(self.phase, ObservePhase::AwaitFirst) {
            header.revision = kv.mod_revision;
        }
        let follow = WatchCreateRequest {
            key: kv.key.clone(),
            start_revision: header.revision + 1,
            ..Default::default()
        };
        self.phase = ObservePhase::Follow;
        let answer = LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        };
        Step::Emit(answer, Box::new(Step::Watch(vec![follow])))
    }
}

impl Recipe for Observe {
    type Answer = LeaderResponse;

    fn start(&mut self) -> Step<LeaderResponse> {
        self.find()
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<LeaderResponse> {
        let mut read = match expect::<RangeRequest>(reply) {
            Ok(read) => read,
            Err(error) => return Step::Done(Err(error)),
        };
        let header = read.header.take().unwrap_or_default();
        if read.kvs.is_empty() {
            self.phase = ObservePhase::AwaitFirst;
            return Step::Watch(vec![WatchCreateRequest {
                key: self.prefix.clone(),
                range_end: prefix_end(&self.prefix),
                start_revision: header.revision,
                ..Default::default()
            }]);
        }
        self.lead(header, read.kvs.swap_remove(0))
    }

    fn on_watch(&mut self, response: &WatchResponse) -> Step<LeaderResponse> {
        if response.canceled {
            return self.find();
        }
        let header = response.header.unwrap_or_default();
        let mut emitted = Vec::new();
        let mut then = Step::Wait;
        for event in &response.events {
            let Some(kv) = event.kv.clone() else { continue };
            let deleted = event.r#type == EventType::Delete as i32;
            match (&self.phase, deleted) {
                (ObservePhase::AwaitFirst, false) => {
                    then = self.lead(header, kv);
                    break;
                }
                (ObservePhase::Follow, true) => {
                    then = self.find();
                    break;
                }
                (ObservePhase::Follow, false) => emitted.push(LeaderResponse {
                    header: Some(header),
                    kv: Some(kv),
                }),
                _ => {}
            }
        }
        emitted
            .into_iter()
            .rev()
            .fold(then, |step, answer| Step::Emit(answer, Box::new(step)))
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}
