//! The membership workload: an operator that changes the cluster while the other clients and
//! the faults go on. It adds a learner (a new process with an empty disk joins), promotes it,
//! removes a member (the leader too), moves the leadership and lists the members, one request
//! at a time. Every request is a recorded client op: the linearizability checker judges the
//! member lists and the answers to changes against the replayed log, as it judges writes.
//!
//! The world follows the applied log: an addition starts the new member's process, a removal
//! marks the member as gone for good (it stops itself once it learns, and is never restarted).

use detcd::members::Members;
use detcd::proto::detcdpb::{internal_request, member_change::Change};
use detcd::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest,
};

use crate::checker::linearizability::RequestSummary;

use super::*;

/// The operator's client id.
pub(super) const OPERATOR: u64 = u64::MAX - 1;
/// Voters the operator grows the cluster to at most, and shrinks it to at least.
const VOTERS_MAX: usize = 5;
const VOTERS_MIN: usize = 3;

impl World {
    /// The operator's next request, at a member that runs.
    pub(super) fn membership_turn(&mut self) {
        if !self.faults_on || self.busy_clients.contains_key(&OPERATOR) {
            return;
        }
        let Some(members) = self.latest_member_list() else {
            return self.schedule_membership_turn();
        };
        let request = self.operator_request(&members);
        let target = match &request {
            ClientRequest::MoveLeader(_) => self.current_leader(),
            _ => None,
        };
        let Some(member) = target.or_else(|| self.pick_running()) else {
            return self.schedule_membership_turn();
        };
        let op = self.invoke(OPERATOR, member, &request);
        let give_up = self.now + self.options.client_timeout_ns;
        self.schedule(give_up, Event::ClientGiveUp { op });
        let rid = self.track(member, op);
        self.log(member, || {
            format!("operator op {op}: {}", RequestSummary(&request))
        });
        self.input(
            member,
            Input::Client {
                id: rid,
                request,
                credentials: self.root_credentials(),
            },
        );
    }

    /// A member whose process runs, at random.
    pub(super) fn pick_running(&mut self) -> Option<MemberId> {
        let running: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| *id)
            .collect();
        pick(&mut self.rng, &running)
    }

    pub(super) fn schedule_membership_turn(&mut self) {
        let at = self.now + self.rng.between(300 * MS, 1_500 * MS);
        self.schedule(at, Event::MembershipTurn);
    }

    /// The member list of the member that applied the most.
    fn latest_member_list(&self) -> Option<Members> {
        self.members
            .values()
            .filter_map(|m| m.node.as_ref())
            .max_by_key(|n| n.applied_index())
            .map(|n| n.state().members().clone())
    }

    fn current_leader(&self) -> Option<MemberId> {
        self.members
            .iter()
            .find(|(_, m)| m.node.as_ref().is_some_and(|n| n.is_leader()))
            .map(|(id, _)| *id)
    }

    fn operator_request(&mut self, members: &Members) -> ClientRequest {
        let voters: Vec<MemberId> = members.voters().map(|m| m.id).collect();
        let learner = members.iter().find(|m| m.is_learner).map(|m| m.id);
        match (learner, self.rng.below(10)) {
            (Some(id), 0..=5) => ClientRequest::MemberPromote(MemberPromoteRequest { id }),
            (None, 0..=3) if voters.len() < VOTERS_MAX => {
                self.next_joiner += 1;
                ClientRequest::MemberAdd(MemberAddRequest {
                    peer_ur_ls: vec![format!("http://joiner-{}:2380", self.next_joiner)],
                    is_learner: true,
                })
            }
            (_, 4..=6) if voters.len() > VOTERS_MIN => {
                let id = pick(&mut self.rng, &voters).expect("voters");
                ClientRequest::MemberRemove(MemberRemoveRequest { id })
            }
            // A member that joined and has not yet received its first snapshot knows no voters.
            (_, 7) if !voters.is_empty() => {
                let target_id = pick(&mut self.rng, &voters).expect("voters");
                ClientRequest::MoveLeader(MoveLeaderRequest { target_id })
            }
            _ => ClientRequest::MemberList(MemberListRequest {
                linearizable: self.rng.chance(0.5),
            }),
        }
    }

    /// Follows a membership change the log applied: starts an added member's process, and
    /// remembers a removed one, which never runs again.
    pub(super) fn follow_membership(&mut self, applier: MemberId, entry: &AppliedEntry) {
        let Some(internal_request::Op::MemberChange(change)) = entry.op() else {
            return;
        };
        // The member that applied the entry knows whether the list accepted the change.
        let accepted = |world: &World, id: MemberId| {
            world.node(applier).is_some_and(|n| {
                let members = n.state().members();
                members.get(id).is_some() || members.is_removed(id)
            })
        };
        match change.change.clone() {
            Some(Change::Add(member))
                if !self.members.contains_key(&member.id) && accepted(self, member.id) =>
            {
                // The list the new member learns when it joins: the one this member holds now.
                let list = self.node(applier).map(|n| n.state().members().list());
                self.add_process(member.id, list.unwrap_or_default())
            }
            Some(Change::Remove(id)) if accepted(self, id) => {
                self.removed.insert(id);
            }
            _ => {}
        }
    }

    /// A new member's process: an empty disk, joining the cluster.
    fn add_process(&mut self, id: MemberId, list: Vec<detcd::proto::etcdserverpb::Member>) {
        let first = self.members.values().next().expect("a member");
        let mut config = first.config.clone();
        config.id = id;
        config.peers = Vec::new();
        config.initial_members = list;
        config.join = true;
        let drift = self.options.clock_drift_ppm_max as i64;
        let clock = Clock {
            offset_ns: self.rng.below(10_000 * MS),
            drift_ppm: self.rng.below(2 * drift as u64 + 1) as i64 - drift,
        };
        let join_taken = self.options.bug == Some(Bug::ReadRoundsJoinTaken);
        self.members
            .insert(id, Member::new(config, clock, join_taken));
        self.log(id, || format!("joins as member {id:x}"));
        self.start(id);
    }
}

pub(super) fn pick(rng: &mut ChaCha8Rng, items: &[MemberId]) -> Option<MemberId> {
    if items.is_empty() {
        return None;
    }
    items.get(rng.below(items.len() as u64) as usize).copied()
}
