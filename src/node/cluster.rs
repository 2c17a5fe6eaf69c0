//! The Cluster service's duties: membership changes proposed as raft configuration changes and
//! applied to raft's configuration and the member list in the same entry, the checks etcd makes
//! before proposing one, a member publishing its name and client URLs, and stopping once the
//! cluster removed this member.
//!
//! A member added to the cluster starts with an empty disk and no configuration; the leader
//! must bring it up with a snapshot (which carries the member list and raft's configuration),
//! never with the log from its first entry (the initial configuration is not in the log). So
//! once a member is added, the in-memory log no longer starts at entry 1.

use prost::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry};
use raft::{ProgressState, StateRole};
use rand_core::RngCore;

use super::types::{LeaderRequest, LeaderResponse, Output, RequestId};
use super::{ClientRequest, Node, StopReason};
use crate::error::EtcdError;
use crate::members::{MemberId, RaftChange};
use crate::proto::detcdpb::{
    internal_request::Op, member_change::Change, InternalRequest, MemberChange,
};
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest,
};
use crate::state::Answer;
use crate::time::Instant;

/// A learner is in sync when it has matched at least this share of the leader's log (etcd's
/// `readyPercent`).
const LEARNER_READY_PERCENT: u64 = 90;

#[derive(Default)]
pub(super) struct ClusterDuty {
    /// When this member last proposed its attributes, while they differ from the list's.
    published_at: Option<Instant>,
    /// The member list has this member's attributes, and has not changed since it was seen
    /// to: the check runs after every batch, the list changes rarely.
    attributes_listed: bool,
}

impl Node {
    /// A Cluster request: refused or turned into a proposal, a read, or a promotion check.
    pub(super) fn handle_cluster(
        &mut self,
        id: RequestId,
        request: ClientRequest,
    ) -> Result<(), EtcdError> {
        match request {
            ClientRequest::MemberList(req) if req.linearizable => {
                self.read(id, false, ClientRequest::MemberList(req));
            }
            ClientRequest::MemberList(_) => self.finish(id, Ok(self.member_list())),
            ClientRequest::MemberAdd(req) => self.add_member(id, req)?,
            ClientRequest::MemberRemove(req) => self.remove_member(id, req)?,
            ClientRequest::MemberUpdate(req) => {
                check_urls(&req.peer_ur_ls)?;
                self.state.members().check(&update(req.clone()))?;
                self.propose(id, Op::MemberChange(update(req)));
            }
            ClientRequest::MemberPromote(req) => self.promote_member(id, req)?,
            other => unreachable!("{} is not a Cluster request", other.name()),
        }
        Ok(())
    }

    pub(super) fn member_list(&self) -> Answer {
        let mut members = self.state.members().list();
        if members.is_empty() {
            // A member that joined and has no snapshot yet answers with the list it was given
            // when it joined, as etcd's joining member answers the one it fetched.
            members = self.cfg.initial_members.clone();
        }
        Answer::from(MemberListResponse {
            // etcd's cluster responses carry no revision.
            header: Some(Default::default()),
            members,
        })
    }

    fn add_member(&mut self, id: RequestId, req: MemberAddRequest) -> Result<(), EtcdError> {
        check_urls(&req.peer_ur_ls)?;
        if req.is_learner && self.state.members().learner_count() >= self.cfg.max_learners {
            return Err(EtcdError::TooManyLearners);
        }
        if !req.is_learner && self.cfg.strict_reconfig_check {
            self.check_quorum_after(1, None)?;
        }
        let mut member_id = 0;
        let members = self.state.members();
        while member_id == 0 || members.get(member_id).is_some() || members.is_removed(member_id) {
            member_id = self.rng.next_u64();
        }
        let change = Change::Add(Member {
            id: member_id,
            peer_ur_ls: req.peer_ur_ls,
            is_learner: req.is_learner,
            ..Member::default()
        });
        self.propose_conf_change(id, change)
    }

    fn remove_member(&mut self, id: RequestId, req: MemberRemoveRequest) -> Result<(), EtcdError> {
        let member = self
            .state
            .members()
            .get(req.id)
            .ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner && self.cfg.strict_reconfig_check {
            self.check_quorum_after(-1, Some(req.id))?;
        }
        self.propose_conf_change(id, Change::Remove(req.id))
    }

    /// Only the leader knows whether the learner caught up: it is asked first, and the
    /// promotion is proposed once it agrees (`promotion_ready`).
    fn promote_member(
        &mut self,
        id: RequestId,
        req: MemberPromoteRequest,
    ) -> Result<(), EtcdError> {
        self.state
            .members()
            .check(&change(Change::Promote(req.id)))?;
        if self.cfg.strict_reconfig_check {
            self.check_quorum_after(1, None)?;
        }
        self.accept_for_leader(id, LeaderRequest::PromoteCheck(req))
    }

    /// The leader's answer to a promotion check.
    pub(super) fn promotion_check(
        &self,
        req: &MemberPromoteRequest,
    ) -> Result<LeaderResponse, EtcdError> {
        let member = self
            .state
            .members()
            .get(req.id)
            .ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        let leader_match = self.raw.raft.raft_log.last_index();
        let ready = self.raw.raft.prs().get(req.id).is_some_and(|p| {
            p.state == ProgressState::Replicate
                && p.matched * 100 >= leader_match * LEARNER_READY_PERCENT
        });
        match ready {
            true => Ok(LeaderResponse::PromoteReady(
                MemberPromoteResponse::default(),
            )),
            false => Err(EtcdError::LearnerNotReady),
        }
    }

    /// The leader found the learner in sync: propose its promotion for the waiting client.
    pub(super) fn promotion_ready(&mut self, client: RequestId, req: &MemberPromoteRequest) {
        // A client that gave up meanwhile asked for nothing any more.
        if !self.pending.contains(client) {
            return;
        }
        if let Err(e) = self.propose_conf_change(client, Change::Promote(req.id)) {
            self.finish(client, Err(e));
        }
    }

    /// etcd's `--strict-reconfig-check`: after the change (`voters_delta` voters more or fewer,
    /// without `removed`), the members that have started (published their name) must still
    /// form a quorum, and, where this member can tell (it leads), so must those it hears from.
    fn check_quorum_after(
        &self,
        voters_delta: i64,
        removed: Option<MemberId>,
    ) -> Result<(), EtcdError> {
        let voters: Vec<&Member> = self
            .state
            .members()
            .voters()
            .filter(|m| Some(m.id) != removed)
            .collect();
        let after = (self.state.members().voters().count() as i64 + voters_delta).max(0) as usize;
        let quorum = after / 2 + 1;
        let started = voters.iter().filter(|m| !m.name.is_empty()).count();
        // etcd lets a second member join a one-member cluster (how a restored cluster grows).
        let growing_one = after == 2 && started == 1;
        if started < quorum && !growing_one && self.started_names_known() {
            return Err(EtcdError::MemberNotEnoughStarted);
        }
        if self.raw.raft.state == StateRole::Leader {
            let active = voters
                .iter()
                .filter(|m| {
                    m.id == self.cfg.id
                        || self
                            .raw
                            .raft
                            .prs()
                            .get(m.id)
                            .is_some_and(|p| p.recent_active)
                })
                .count();
            if active < quorum && !growing_one {
                return Err(EtcdError::Unhealthy);
            }
        }
        Ok(())
    }

    /// Whether members publish names at all (a cluster of nameless members, as in the
    /// simulator's, counts every member as started).
    fn started_names_known(&self) -> bool {
        !self.cfg.name.is_empty()
    }

    /// With `auto_promote_learners`, the leader promotes a learner once it is in sync, one
    /// configuration change at a time.
    pub(super) fn auto_promote(&mut self) {
        if !self.cfg.auto_promote_learners || !self.is_leader() || self.raw.raft.has_pending_conf()
        {
            return;
        }
        let ready = self.state.members().iter().find(|m| {
            m.is_learner
                && self
                    .promotion_check(&MemberPromoteRequest { id: m.id })
                    .is_ok()
        });
        let Some(id) = ready.map(|m| m.id) else {
            return;
        };
        let proposal = self.proposals.next_id();
        let mut promote = change(Change::Promote(id));
        promote.automatic = true;
        let _ = self.raw.propose_conf_change(
            self.conf_change_context(proposal, promote),
            raft_change_of(id, ConfChangeType::AddNode),
        );
    }

    fn conf_change_context(&self, proposal: u64, change: MemberChange) -> Vec<u8> {
        InternalRequest {
            origin: self.cfg.id,
            request_id: proposal,
            op: Some(Op::MemberChange(change)),
            ..InternalRequest::default()
        }
        .encode_to_vec()
    }

    fn propose_conf_change(&mut self, id: RequestId, change_: Change) -> Result<(), EtcdError> {
        let (kind, node) = match &change_ {
            Change::Add(m) if m.is_learner => (ConfChangeType::AddLearnerNode, m.id),
            Change::Add(m) => (ConfChangeType::AddNode, m.id),
            Change::Promote(member) => (ConfChangeType::AddNode, *member),
            Change::Remove(member) => (ConfChangeType::RemoveNode, *member),
            _ => {
                unreachable!("only additions, promotions and removals change raft's configuration")
            }
        };
        if self.leader_id().is_none() {
            return Err(EtcdError::NoLeader);
        }
        let proposal = self.proposals.next_id();
        let context = self.conf_change_context(proposal, change(change_));
        let cc = raft_change_of(node, kind);
        self.pending.bind_proposal(id, proposal);
        if self.cfg.observe {
            self.outputs.push_back(Output::Proposed {
                id,
                origin: self.cfg.id,
                proposal,
            });
        }
        self.raw
            .propose_conf_change(context, cc)
            .map_err(|_| EtcdError::NoLeader)
    }

    /// Applies a committed configuration change: to the member list, and, if the list accepted
    /// it, to raft's configuration. raft's own entries (leaving a joint configuration) carry no
    /// member change and go to raft alone.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) {
        let Ok(cc) = decode_conf_change(entry) else {
            return;
        };
        let request = InternalRequest::decode(entry.context.as_ref()).ok();
        let Some(request) = request.filter(|r| r.op.is_some()) else {
            self.apply_to_raft(&cc);
            return;
        };
        if let Some(change) = self.apply_request(request) {
            self.apply_to_raft(&cc);
            self.follow_raft_change(change);
        }
    }

    fn apply_to_raft(&mut self, cc: &ConfChangeV2) {
        // raft refuses only impossible changes (removing the last voter), which the member
        // list refused already; the configuration then stays as it was.
        if let Ok(conf) = self.raw.apply_conf_change(cc) {
            self.raw.mut_store().set_conf_state(conf);
            self.forget_outgoing_snapshot();
        }
    }

    fn follow_raft_change(&mut self, change: RaftChange) {
        match change {
            RaftChange::AddVoter(_) | RaftChange::AddLearner(_) => {
                // A new member must start from a snapshot, never from entry 1 (see the module
                // documentation).
                if self.raw.store().first_index() <= 1 && self.applied_index >= 1 {
                    self.raw.mut_store().compact_before(2);
                }
            }
            RaftChange::Remove(id) if id == self.cfg.id => self.stop(StopReason::Removed),
            RaftChange::Remove(id) => self.tell_removed(id),
        }
    }

    /// Tells a removed member so: the leader stops replicating to it once the removal applies,
    /// so it may never apply its own removal.
    pub(super) fn tell_removed(&mut self, id: MemberId) {
        self.outputs.push_back(Output::Send {
            to: id,
            msg: super::PeerMessage::Removed,
        });
    }

    /// A member of the cluster says this one was removed.
    pub(super) fn removed_by(&mut self, from: MemberId) {
        let known = self.state.members().get(from).is_some();
        if known && !self.is_removed_member(from) {
            self.stop(StopReason::Removed);
        }
    }

    /// Tells the driver the member list (for its peer transport). A member that joins knows
    /// none until its first snapshot: the driver keeps dialing whom it asked to join.
    pub(super) fn members_changed(&mut self) {
        self.cluster.attributes_listed = false;
        let members = self.state.members().list();
        if !members.is_empty() {
            self.outputs.push_back(Output::Members(members));
        }
    }

    /// Once a leader is known, a member whose name or client URLs in the list are not what it
    /// runs with proposes them (again after a request timeout, if the first was lost).
    pub(super) fn publish_attributes(&mut self) {
        if self.cluster.attributes_listed {
            return;
        }
        let Some(me) = self.state.members().get(self.cfg.id) else {
            return;
        };
        if me.name == self.cfg.name && me.client_ur_ls == self.cfg.client_urls {
            self.cluster.published_at = None;
            self.cluster.attributes_listed = true;
            return;
        }
        let due = self
            .cluster
            .published_at
            .is_none_or(|at| self.now.saturating_since(at) >= self.cfg.request_timeout);
        if !due || self.leader_id().is_none() {
            return;
        }
        self.cluster.published_at = Some(self.now);
        let attributes = Member {
            id: self.cfg.id,
            name: self.cfg.name.clone(),
            client_ur_ls: self.cfg.client_urls.clone(),
            ..Member::default()
        };
        let proposal = self.proposals.next_id();
        let op = Op::MemberChange(change(Change::Attributes(attributes)));
        let data = super::clients::encode_proposal(self.cfg.id, proposal, op);
        let _ = self.raw.propose(Vec::new(), data);
    }

    /// raft's configuration must be the member list's voters and learners: both change in the
    /// same entries, and both come back from the same snapshot.
    pub fn check_configuration(&self) -> Result<(), String> {
        let conf = self.raw.raft.prs().conf();
        let members = self.state.members();
        let (mut voters, mut learners) = (0, 0);
        let mut agree = true;
        for member in members.iter() {
            if member.is_learner {
                learners += 1;
                agree &= conf.learners().contains(&member.id);
            } else {
                voters += 1;
                agree &= conf.voters().contains(member.id);
            }
        }
        agree &= conf.voters().ids().len() == voters && conf.learners().len() == learners;
        if agree {
            return Ok(());
        }
        Err(format!(
            "raft's voters {:x?} and learners {:x?} differ from the member list {:x?}",
            conf.voters().ids().iter().collect::<Vec<_>>(),
            conf.learners(),
            members
                .iter()
                .map(|m| (m.id, m.is_learner))
                .collect::<Vec<_>>()
        ))
    }

    /// Raft messages from a member the cluster removed are not stepped: it must not vote or
    /// disturb the term again.
    pub(super) fn is_removed_member(&self, from: MemberId) -> bool {
        self.state.members().is_removed(from)
    }
}

fn change(change: Change) -> MemberChange {
    MemberChange {
        change: Some(change),
        automatic: false,
    }
}

/// raft's side of a change: one node added, made a learner or removed.
fn raft_change_of(node: MemberId, kind: ConfChangeType) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = node;
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.mut_changes().push(single);
    cc
}

fn update(req: crate::proto::etcdserverpb::MemberUpdateRequest) -> MemberChange {
    change(Change::Update(req))
}

fn decode_conf_change(entry: &Entry) -> Result<ConfChangeV2, protobuf::ProtobufError> {
    use protobuf::Message as _;
    match entry.get_entry_type() {
        // detcd proposes only version 2 changes; a version 1 one is read as its equivalent.
        raft::eraftpb::EntryType::EntryConfChange => {
            let v1 = raft::eraftpb::ConfChange::parse_from_bytes(&entry.data)?;
            let mut single = ConfChangeSingle::default();
            single.set_change_type(v1.get_change_type());
            single.node_id = v1.node_id;
            let mut cc = ConfChangeV2::default();
            cc.mut_changes().push(single);
            Ok(cc)
        }
        _ => ConfChangeV2::parse_from_bytes(&entry.data),
    }
}

/// etcd accepts only absolute URLs with a host and a port (`types.NewURLs`).
fn check_urls(urls: &[String]) -> Result<(), EtcdError> {
    let valid = |url: &str| {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let host_port = rest.trim_end_matches('/');
        (scheme == "http" || scheme == "https" || scheme == "unix" || scheme == "unixs")
            && !host_port.contains('/')
            && host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(|u| valid(u)) {
        return Err(EtcdError::MemberBadUrls);
    }
    Ok(())
}
