//! etcd's member list, restated: members by id, the ids removed for good, and the rules a change
//! must pass when every member applies it.

use std::collections::{BTreeMap, BTreeSet};

use detcd::error::EtcdError;
use detcd::node::ClientResponse;
use detcd::proto::detcdpb::member_change::Change;
use detcd::proto::detcdpb::MemberChange;
use detcd::proto::etcdserverpb::{
    Member, MemberAddResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse,
};

use super::kv::header;
use super::Answer;

/// The most learners a cluster holds, whatever the flags say (detcd's hard cap).
const LEARNERS_MAX: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct MembersModel {
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

impl MembersModel {
    pub fn new(initial: impl IntoIterator<Item = Member>) -> MembersModel {
        MembersModel {
            members: initial.into_iter().map(|m| (m.id, m)).collect(),
            removed: BTreeSet::new(),
        }
    }

    /// The list as etcd answers it: by id.
    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// Applies a committed change; the answer, except for a member publishing its own name
    /// and client URLs, which answers nobody.
    pub fn apply(&mut self, change: &MemberChange) -> Option<Answer> {
        let answer = self.change(change.change.as_ref());
        let publish = matches!(change.change, Some(Change::Attributes(_)));
        (!publish).then_some(answer)
    }

    fn change(&mut self, change: Option<&Change>) -> Answer {
        match change.ok_or(EtcdError::MemberNotFound)? {
            Change::Add(member) => {
                if self.members.contains_key(&member.id) || self.removed.contains(&member.id) {
                    return Err(EtcdError::MemberExist);
                }
                if self.url_taken(&member.peer_ur_ls, member.id) {
                    return Err(EtcdError::PeerUrlExist);
                }
                let learners = self.members.values().filter(|m| m.is_learner).count();
                if member.is_learner && learners >= LEARNERS_MAX {
                    return Err(EtcdError::TooManyLearners);
                }
                // A new member has no name or client URLs until it publishes them.
                let added = Member {
                    name: String::new(),
                    client_ur_ls: Vec::new(),
                    ..member.clone()
                };
                self.members.insert(added.id, added.clone());
                Ok(ClientResponse::from(MemberAddResponse {
                    header: header(0),
                    member: Some(added),
                    members: self.list(),
                }))
            }
            Change::Remove(id) => {
                self.members.remove(id).ok_or(EtcdError::MemberNotFound)?;
                self.removed.insert(*id);
                Ok(ClientResponse::from(MemberRemoveResponse {
                    header: header(0),
                    members: self.list(),
                }))
            }
            Change::Promote(id) => {
                let member = self.members.get_mut(id).ok_or(EtcdError::MemberNotFound)?;
                if !member.is_learner {
                    return Err(EtcdError::MemberNotLearner);
                }
                member.is_learner = false;
                Ok(ClientResponse::from(MemberPromoteResponse {
                    header: header(0),
                    members: self.list(),
                }))
            }
            Change::Update(update) => {
                if !self.members.contains_key(&update.id) {
                    return Err(EtcdError::MemberNotFound);
                }
                if self.url_taken(&update.peer_ur_ls, update.id) {
                    return Err(EtcdError::PeerUrlExist);
                }
                let member = self.members.get_mut(&update.id).expect("present");
                member.peer_ur_ls = update.peer_ur_ls.clone();
                Ok(ClientResponse::from(MemberUpdateResponse {
                    header: header(0),
                    members: self.list(),
                }))
            }
            Change::Attributes(attributes) => {
                let member = self
                    .members
                    .get_mut(&attributes.id)
                    .ok_or(EtcdError::MemberNotFound)?;
                member.name = attributes.name.clone();
                member.client_ur_ls = attributes.client_ur_ls.clone();
                Ok(ClientResponse::from(MemberUpdateResponse {
                    header: header(0),
                    members: self.list(),
                }))
            }
        }
    }

    /// Whether a member other than `except` already has one of `urls`.
    fn url_taken(&self, urls: &[String], except: u64) -> bool {
        self.members
            .values()
            .filter(|m| m.id != except)
            .any(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)))
    }
}
