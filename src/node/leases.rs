//! The node's lease duties: grants and the requests only the leader answers (keepalives and
//! TimeToLive, which read the leader's lease clocks), forwarded there by the member a client
//! asked; and, on the leader, expiry and checkpoints, proposed through raft so that every member
//! revokes a lease at the same revision and a deposed leader decides nothing. The clocks and
//! their guarantees are in `lease::clock`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand_core::RngCore;

use super::timers::Timer;
use super::types::{LeaderRequest, LeaderResponse, MemberId, Output, PeerMessage, RequestId};
use super::{Config, Node};
use crate::error::EtcdError;
use crate::lease::clock::{remaining_ms, ClockConfig, LeaseClocks, Life, Renewable, Renewal};
use crate::lease::{LeaseId, Leases, LEASE_QUOTA_BYTES, MAX_TTL_SECS};
use crate::proto::detcdpb::{internal_request, LeaseCheckpoints, LeaseExpire, LeaseRemaining};
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::state::{Answer, Effects};
use crate::time::Instant;

/// How long a request forwarded to the leader may go unanswered before it is sent again (the
/// leader may have changed, or the message been lost).
const FORWARD_RETRY: Duration = Duration::from_millis(500);

/// Leases a checkpoint entry records at most.
const CHECKPOINT_BATCH_MAX: usize = 1_000;

/// Whom a leader answers: the member that forwarded the request (maybe itself) and its id.
type Asker = (MemberId, u64);

/// A request the leader holds until it has applied an index: the commit index when it came,
/// or the read index that confirmed its leadership.
enum Pending {
    Unconfirmed(Asker, LeaderRequest),
    Confirmed(Asker, LeaderRequest),
}

/// A lease request this member sent (or will send) to the leader for a client.
struct Forward {
    client: RequestId,
    request: LeaderRequest,
    /// When it was last sent; `None` while no leader was known.
    sent_at: Option<Instant>,
}

pub(super) struct LeaseDuty {
    clocks: LeaseClocks<Asker>,
    /// While leading: the index of the first entry of this term. The clocks start once it is
    /// applied, so that they start from every record committed before the term.
    lead_from_index: Option<u64>,
    forwards: BTreeMap<u64, Forward>,
    /// Ids of forwards differ between incarnations of the member (they start from the
    /// incarnation's proposal nonce), so a late answer to an earlier incarnation's request is
    /// never taken for the answer to a new one.
    next_forward: u64,
    /// The smallest TTL a lease gets: etcd's ceil(1.5 x election timeout).
    min_ttl_secs: i64,
    checkpoint_interval: Duration,
    /// Expiry revocations proposed per heartbeat at most (etcd's revoke rate limit).
    revokes_per_tick: usize,
    /// When expiry may resume after the rate limit was reached.
    expiry_paused_until: Option<Instant>,
    /// Requests for the leader waiting for a read index (`serve_leader_request`), those whose
    /// read index raft is asked for, by context, and those waiting to apply their read index.
    confirming: Vec<(Asker, LeaderRequest)>,
    confirm_batches: BTreeMap<u64, Vec<(Asker, LeaderRequest)>>,
    awaiting_apply: VecDeque<(u64, Pending)>,
    next_confirm: u64,
    /// The leases the injected bug `follower_lease_expiry` had this member revoke.
    bug_expired: BTreeSet<LeaseId>,
    /// Counts the applied entries that granted, recorded or removed a lease: a copy of the
    /// lease table made at one count holds at the next only if it is the same.
    epoch: u64,
}

impl LeaseDuty {
    pub fn new(cfg: &Config, first_forward: u64) -> LeaseDuty {
        let per_tick = cfg.lease_revokes_per_sec as f64 * cfg.heartbeat_interval.as_secs_f64();
        LeaseDuty {
            clocks: LeaseClocks::new(ClockConfig {
                checkpoint_interval: cfg.lease_checkpoint_interval,
                prepay_max: cfg.lease_checkpoint_interval,
                waiting_max: cfg.pending_requests_max,
                revoke_retry: cfg.election_timeout * 2,
            }),
            lead_from_index: None,
            forwards: BTreeMap::new(),
            next_forward: first_forward,
            min_ttl_secs: (cfg.election_timeout.as_millis() as i64 * 3 / 2 + 999) / 1000,
            checkpoint_interval: cfg.lease_checkpoint_interval,
            revokes_per_tick: (per_tick as usize).max(1),
            expiry_paused_until: None,
            confirming: Vec::new(),
            confirm_batches: BTreeMap::new(),
            awaiting_apply: VecDeque::new(),
            next_confirm: first_forward,
            bug_expired: BTreeSet::new(),
            epoch: 0,
        }
    }

    /// The state was restored from a snapshot at `now`: every lease starts from what it records.
    pub fn restored(&mut self, leases: &Leases, now: Instant) {
        self.clocks.reset();
        for (id, lease) in leases.iter() {
            self.clocks.recorded(
                (id, lease.generation),
                Duration::from_secs(lease.ttl_secs as u64),
                Duration::from_millis(lease.remaining_ms as u64),
                now,
            );
        }
    }

    pub fn is_leading(&self) -> bool {
        self.clocks.is_leading()
    }

    pub fn has_forwards(&self) -> bool {
        !self.forwards.is_empty()
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        let next = self.clocks.next_expiry()?;
        Some(
            self.expiry_paused_until
                .map_or(next, |until| next.max(until)),
        )
    }
}

impl Node {
    /// A grant is checked and completed here, so that the entry carries the final id and TTL
    /// and every member applies the same: the TTL raised to the minimum, a fresh id if the
    /// client left it to us.
    pub(super) fn accept_lease_grant(
        &mut self,
        id: RequestId,
        mut req: LeaseGrantRequest,
    ) -> Result<(), EtcdError> {
        if req.ttl > MAX_TTL_SECS {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        self.check_quota(LEASE_QUOTA_BYTES)?;
        req.ttl = req.ttl.max(self.leases.min_ttl_secs);
        if req.id == 0 {
            // etcd's ids are positive 63-bit numbers; drawn from the member's seeded RNG.
            while req.id == 0 || self.state.leases().contains(req.id) {
                req.id = (self.rng.next_u64() >> 1) as i64;
            }
        }
        self.propose(id, internal_request::Op::LeaseGrant(req));
        Ok(())
    }

    /// A request only the leader answers: sent there (or served here, on the leader).
    pub(super) fn accept_for_leader(
        &mut self,
        id: RequestId,
        request: LeaderRequest,
    ) -> Result<(), EtcdError> {
        self.leases.next_forward = self.leases.next_forward.wrapping_add(1);
        let forward = self.leases.next_forward;
        self.leases.forwards.insert(
            forward,
            Forward {
                client: id,
                request,
                sent_at: None,
            },
        );
        self.send_forward(forward);
        Ok(())
    }

    fn send_forward(&mut self, forward: u64) {
        let leader = self.leader_id();
        let Some(f) = self.leases.forwards.get_mut(&forward) else {
            return;
        };
        let request = f.request.clone();
        if self.leases.clocks.is_leading() {
            f.sent_at = Some(self.now);
            self.serve_leader_request((self.cfg.id, forward), request);
            return;
        }
        match leader {
            Some(leader) if leader != self.cfg.id => {
                f.sent_at = Some(self.now);
                self.outputs.push_back(Output::Send {
                    to: leader,
                    msg: PeerMessage::Forward {
                        id: forward,
                        request,
                    },
                });
            }
            // No leader yet, or this member leads but has not started its clocks: try again
            // on the next retry.
            _ => f.sent_at = None,
        }
    }

    /// Sends again what the leader has not answered; forgets what no client waits for.
    pub(super) fn retry_forwards(&mut self) {
        let pending = &self.pending;
        self.leases
            .forwards
            .retain(|_, f| pending.contains(f.client));
        let now = self.now;
        let due: Vec<u64> = self
            .leases
            .forwards
            .iter()
            .filter(|(_, f)| {
                f.sent_at
                    .is_none_or(|at| now.saturating_since(at) >= FORWARD_RETRY)
            })
            .map(|(id, _)| *id)
            .collect();
        for forward in due {
            self.send_forward(forward);
        }
    }

    /// Another member forwarded a client's request. A member that does not run the lease clocks
    /// ignores it; the asker sends it again, to whoever leads then.
    pub(super) fn serve_for_member(&mut self, from: MemberId, id: u64, request: LeaderRequest) {
        if from != self.cfg.id && self.leases.clocks.is_leading() {
            self.serve_leader_request((from, id), request);
        }
    }

    /// The leader's answer to a keepalive or TimeToLive, given once it has applied everything
    /// committed when the request came: a member may apply (and acknowledge) a grant or a revoke
    /// before the leader does, and the client's next request must see it (etcd's leader waits
    /// for its applied index too). A renewal the floor covers is then answered from memory
    /// (safe even from a leader deposed meanwhile: see `lease::clock`). Every other answer reads
    /// the lease table and must not come from an isolated old leader that missed a grant: it
    /// waits for a read index, which confirms this member still leads.
    fn serve_leader_request(&mut self, asker: Asker, request: LeaderRequest) {
        let commit = self.commit_index();
        if self.applied_index < commit {
            self.await_apply(commit, Pending::Unconfirmed(asker, request));
            return;
        }
        self.serve_applied(asker, request, false);
    }

    /// Queues a request until this leader has applied `index`. Past the bound it is dropped;
    /// its member asks again.
    fn await_apply(&mut self, index: u64, pending: Pending) {
        let duty = &mut self.leases;
        if duty.confirming.len() + duty.awaiting_apply.len() < self.cfg.pending_requests_max {
            duty.awaiting_apply.push_back((index, pending));
        }
    }

    /// Answers with what this leader has applied; `confirmed` when a read index confirmed it
    /// still leads.
    fn serve_applied(&mut self, asker: Asker, request: LeaderRequest, confirmed: bool) {
        let confirm = !confirmed && !self.bug(|b| b.lease_not_found_unconfirmed);
        match request {
            LeaderRequest::KeepAlive(req) => {
                let id = req.id;
                let (renewal, asker) = self.leases.clocks.keep_alive(id, self.now, asker);
                match (renewal, asker) {
                    (Renewal::Renewed, Some(asker)) => self.answer_keep_alive(asker, id, true),
                    (Renewal::NotFound, Some(asker)) if confirm => self
                        .leases
                        .confirming
                        .push((asker, LeaderRequest::KeepAlive(req))),
                    (_, Some(asker)) => self.answer_keep_alive(asker, id, false),
                    (_, None) => {}
                }
            }
            LeaderRequest::TimeToLive(req) if confirm => self
                .leases
                .confirming
                .push((asker, LeaderRequest::TimeToLive(req))),
            LeaderRequest::TimeToLive(req) => {
                let response = self.time_to_live(&req);
                self.answer(asker, Ok(LeaderResponse::TimeToLive(response)));
            }
            LeaderRequest::PromoteCheck(req) => {
                let result = self.promotion_check(&req);
                self.answer(asker, result);
            }
        }
    }

    /// Asks raft for one read index for every request that needs confirming (once per batch).
    pub(super) fn confirm_lease_reads(&mut self) {
        if self.leases.confirming.is_empty() || !self.leases.clocks.is_leading() {
            self.leases.confirming.clear();
            return;
        }
        self.leases.next_confirm = self.leases.next_confirm.wrapping_add(1);
        let ctx = self.leases.next_confirm;
        let batch = std::mem::take(&mut self.leases.confirming);
        self.leases.confirm_batches.insert(ctx, batch);
        self.raw.read_index(lease_read_ctx(ctx));
    }

    /// raft answered a read index; true if it was one of the lease duty's.
    pub(super) fn lease_read_index_known(&mut self, ctx: &[u8], index: u64) -> bool {
        let Some(ctx) = parse_lease_read_ctx(ctx) else {
            return false;
        };
        for (asker, request) in self.leases.confirm_batches.remove(&ctx).unwrap_or_default() {
            self.leases
                .awaiting_apply
                .push_back((index, Pending::Confirmed(asker, request)));
        }
        true
    }

    /// Serves the requests whose index this leader has applied; when it stops leading,
    /// everything waiting is dropped (the members ask whoever leads then).
    pub(super) fn serve_requests_awaiting_apply(&mut self) {
        if !self.leases.clocks.is_leading() {
            self.leases.awaiting_apply.clear();
            self.leases.confirm_batches.clear();
            return;
        }
        while let Some((index, _)) = self.leases.awaiting_apply.front() {
            if *index > self.applied_index {
                return;
            }
            match self.leases.awaiting_apply.pop_front().expect("front").1 {
                Pending::Unconfirmed(asker, request) => self.serve_applied(asker, request, false),
                Pending::Confirmed(asker, request) => self.serve_applied(asker, request, true),
            }
        }
    }

    fn answer_keep_alive(&mut self, asker: Asker, id: LeaseId, renewed: bool) {
        let ttl = match self.state.leases().get(id) {
            Some(lease) if renewed => lease.ttl_secs,
            _ => 0,
        };
        let response = LeaseKeepAliveResponse {
            header: None,
            id,
            ttl,
        };
        self.answer(asker, Ok(LeaderResponse::KeepAlive(response)));
    }

    fn time_to_live(&self, req: &LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
        let lease = self.state.leases().get(req.id);
        let remaining = self.leases.clocks.remaining(req.id, self.now);
        let (Some(lease), Some(remaining)) = (lease, remaining) else {
            return LeaseTimeToLiveResponse {
                id: req.id,
                ttl: -1,
                ..Default::default()
            };
        };
        LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            // etcd truncates the remaining time to whole seconds. A new leader may hold a lease
            // for a little longer than its TTL (the prepay of its last record); it still never
            // reports more than the TTL, as etcd never does.
            ttl: (remaining.as_secs() as i64).min(lease.ttl_secs),
            granted_ttl: lease.ttl_secs,
            keys: if req.keys {
                lease.keys().cloned().collect()
            } else {
                Vec::new()
            },
        }
    }

    fn answer(&mut self, (member, id): Asker, result: Result<LeaderResponse, EtcdError>) {
        if member == self.cfg.id {
            self.forward_answered(id, result);
        } else {
            self.outputs.push_back(Output::Send {
                to: member,
                msg: PeerMessage::ForwardReply { id, result },
            });
        }
    }

    /// The leader answered a request this member forwarded (a late or repeated answer finds
    /// nothing to do, and an answer that is not about what was asked is ignored).
    pub(super) fn forward_answered(&mut self, id: u64, result: Result<LeaderResponse, EtcdError>) {
        let Some(forward) = self.leases.forwards.get(&id) else {
            return;
        };
        let matches = match (&forward.request, &result) {
            (LeaderRequest::KeepAlive(q), Ok(LeaderResponse::KeepAlive(a))) => q.id == a.id,
            (LeaderRequest::TimeToLive(q), Ok(LeaderResponse::TimeToLive(a))) => q.id == a.id,
            (LeaderRequest::PromoteCheck(_), Ok(LeaderResponse::PromoteReady(_))) => true,
            (_, Err(_)) => true,
            _ => false,
        };
        if !matches {
            return;
        }
        let forward = self.leases.forwards.remove(&id).expect("found above");
        match (forward.request, result) {
            (LeaderRequest::PromoteCheck(req), Ok(_)) => self.promotion_ready(forward.client, &req),
            (_, result) => self.finish(forward.client, result.map(Answer::from)),
        }
    }

    /// Which lease table this member holds: the same number means no lease was granted,
    /// recorded or removed since (while the same member runs the clocks: see `LeaseDuty`).
    pub(super) fn lease_epoch(&self) -> u64 {
        self.leases.epoch
    }

    /// The leases a keepalive may be acknowledged for away from the node's step
    /// (`local_keepalives`); `None` unless this member runs the lease clocks.
    pub(super) fn renewable_leases(&self) -> Option<imbl::OrdMap<LeaseId, Renewable>> {
        self.leases.clocks.renewable()
    }

    /// A keepalive for `life` was acknowledged at `at` away from the node's step.
    pub(super) fn renewed_away(&mut self, life: Life, at: Instant) {
        self.leases.clocks.renewed_away(life, at);
    }

    /// Lists leases soonest expiry first, as etcd does, by this member's estimates.
    pub(super) fn order_by_expiry(&self, leases: &mut LeaseLeasesResponse) {
        let clocks = &self.leases.clocks;
        leases
            .leases
            .sort_by_key(|l| (clocks.estimate(l.id).map(|(_, at)| at), l.id));
    }

    /// Keeps the lease clocks in step with what an applied entry did: the remaining times it
    /// recorded count from `appended_at`, when the entry reached this member's log. `own` is
    /// the proposal id when this member proposed the entry.
    pub(super) fn lease_effects(
        &mut self,
        effects: &Effects,
        appended_at: Instant,
        own: Option<u64>,
    ) {
        if !effects.lease_records.is_empty() || !effects.leases_removed.is_empty() {
            self.leases.epoch += 1;
        }
        for record in &effects.lease_records {
            if !record.granted && self.bug(|b| b.follower_lease_expiry) {
                // The injected bug keeps estimates from grants only.
            } else {
                let life = (record.id, record.generation);
                self.leases
                    .clocks
                    .recorded(life, record.ttl, record.remaining, appended_at);
            }
            if let Some(proposal) = own {
                let life = (record.id, record.generation);
                let covered =
                    self.leases
                        .clocks
                        .own_record_applied(proposal, life, record.remaining);
                for (asker, renewed) in covered {
                    self.answer_keep_alive(asker, record.id, renewed);
                }
            }
        }
        if let Some(proposal) = own {
            self.leases.clocks.proposal_applied(proposal);
        }
        for id in &effects.leases_removed {
            for asker in self.leases.clocks.removed(*id) {
                self.answer_keep_alive(asker, *id, false);
            }
        }
    }

    /// The state was replaced by a snapshot from the leader: the clocks start over from it.
    pub(super) fn state_replaced(&mut self) {
        let leading = self.leases.clocks.is_leading();
        self.leases.epoch += 1;
        self.leases.restored(self.state.leases(), self.now);
        debug_assert!(!leading, "a leader never installs a snapshot");
    }

    /// Starts the lease clocks once this member leads and has applied its term's first entry;
    /// stops them the moment it no longer leads.
    pub(super) fn follow_leadership(&mut self) {
        // A member stopped in this batch (removed from the cluster) leads nothing.
        if !self.is_leader() || self.stopped.is_some() {
            self.stop_lease_clocks();
            return;
        }
        let from = *self
            .leases
            .lead_from_index
            .get_or_insert(self.raw.raft.raft_log.last_index());
        if !self.leases.clocks.is_leading() && self.applied_index >= from {
            let leases = self.state.leases();
            let reset = self.cfg.bugs.lease_ttl_reset_on_leader_change;
            let now = self.now;
            self.leases.clocks.lead(now, reset, |id| {
                leases
                    .get(id)
                    .map(|l| Duration::from_secs(l.ttl_secs as u64))
            });
            self.timers.set(
                Timer::LeaseCheckpoint,
                self.now + self.leases.checkpoint_interval / 4,
            );
        }
    }

    pub(super) fn stop_lease_clocks(&mut self) {
        self.leases.lead_from_index = None;
        if self.leases.clocks.is_leading() {
            self.step_down_from_leases();
        }
    }

    fn step_down_from_leases(&mut self) {
        for (member, id) in self.leases.clocks.step_down() {
            // This member's own clients ask the new leader on the next retry; other members'
            // requests are theirs to send again.
            if member == self.cfg.id {
                if let Some(f) = self.leases.forwards.get_mut(&id) {
                    f.sent_at = None;
                }
            }
        }
        self.timers.stop(Timer::LeaseCheckpoint);
        self.leases.expiry_paused_until = None;
    }

    /// Proposes a revocation for every lease that expired on this leader's clock, at most the
    /// revoke rate's share of a heartbeat at once.
    pub(super) fn expire_leases(&mut self) {
        self.leases.expiry_paused_until = None;
        let max = self.leases.revokes_per_tick;
        let expired = self.leases.clocks.expired(self.now, max);
        if expired.len() >= max {
            self.leases.expiry_paused_until = Some(self.now + self.cfg.heartbeat_interval);
        }
        for (id, generation) in expired {
            let expire = LeaseExpire { id, generation };
            self.propose_as_leader(internal_request::Op::LeaseExpire(expire));
        }
    }

    /// Records the remaining time of leases not recorded for a checkpoint interval.
    pub(super) fn checkpoint_leases(&mut self) {
        if !self.leases.clocks.is_leading() {
            return;
        }
        let proposal = self.proposals.next_id();
        let due = self
            .leases
            .clocks
            .checkpoints_due(self.now, CHECKPOINT_BATCH_MAX, proposal);
        let next = if due.len() >= CHECKPOINT_BATCH_MAX {
            self.cfg.heartbeat_interval
        } else {
            self.leases.checkpoint_interval / 4
        };
        self.propose_checkpoints(proposal, due);
        self.timers.set(Timer::LeaseCheckpoint, self.now + next);
    }

    /// Proposes the checkpoints that waiting keepalives need, once per batch.
    pub(super) fn propose_lease_records(&mut self) {
        if !self.leases.clocks.is_leading() {
            self.expire_as_follower();
            return;
        }
        let proposal = self.proposals.next_id();
        let needed = self.leases.clocks.records_needed(self.now, proposal);
        self.propose_checkpoints(proposal, needed);
    }

    fn propose_checkpoints(&mut self, proposal: u64, leases: Vec<(Life, Duration)>) {
        if leases.is_empty() {
            return;
        }
        let leases = leases
            .into_iter()
            .map(|((id, generation), remaining)| LeaseRemaining {
                id,
                generation,
                remaining_ms: remaining_ms(remaining),
            })
            .collect();
        let op = internal_request::Op::LeaseCheckpoints(LeaseCheckpoints { leases });
        self.propose_as_leader_with(proposal, op);
    }

    /// The injected bug `follower_lease_expiry`: every member revokes leases on its own clock.
    fn expire_as_follower(&mut self) {
        if !self.bug(|b| b.follower_lease_expiry) || self.leader_id().is_none() {
            return;
        }
        let now = self.now;
        let duty = &self.leases;
        let expired: Vec<(LeaseId, u64)> = self
            .state
            .leases()
            .iter()
            .map(|(id, lease)| (id, lease.generation))
            .filter(|(id, _)| !duty.bug_expired.contains(id))
            .filter(|(id, _)| duty.clocks.estimate(*id).is_some_and(|(_, at)| at <= now))
            .take(duty.revokes_per_tick)
            .collect();
        for (id, generation) in expired {
            self.leases.bug_expired.insert(id);
            let expire = LeaseExpire { id, generation };
            self.propose_expiry_from_anywhere(internal_request::Op::LeaseExpire(expire));
        }
    }
}

/// The read-index context of a lease confirmation: nine bytes, so that it is never taken for a
/// client read's (eight).
fn lease_read_ctx(ctx: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(b'L');
    out.extend_from_slice(&ctx.to_be_bytes());
    out
}

fn parse_lease_read_ctx(ctx: &[u8]) -> Option<u64> {
    match ctx {
        [b'L', rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}
