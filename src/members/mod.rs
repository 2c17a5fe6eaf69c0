//! The member list: a replicated state machine beside the key space and the leases.
//!
//! etcd's cluster membership, as `MemberList` reports it: each member's id, name, peer and
//! client URLs and whether it is a learner, plus every id ever removed (an id is never reused:
//! a removed member must not come back under it). Additions, removals and promotions are
//! applied here in the same entries that change raft's configuration, so the list and raft's
//! voters never disagree; a member's peer URLs and its published name and client URLs change
//! through normal entries.
//!
//! Everything is checked again when applied, whatever the proposing member checked: two
//! changes proposed at once must not both pass (two additions of one URL, a removal of a
//! member removed meanwhile). A refused change changes nothing, on every member alike.
//!
//! Invariants (`Members::check_invariants`): no id is both a member and removed; no peer URL
//! belongs to two members; at most `LEARNERS_MAX` learners.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::EtcdError;
use crate::proto::detcdpb::{member_change::Change, MemberChange, MemberTable};
use crate::proto::etcdserverpb::Member;

pub type MemberId = u64;

/// Learners the list ever holds. The limit an operator sets (`--max-learners`, etcd's
/// default 1) is checked before proposing; this one, the same on every member whatever its
/// flags, holds when additions race each other.
pub const LEARNERS_MAX: usize = 16;

/// What an applied change did to raft's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftChange {
    AddVoter(MemberId),
    AddLearner(MemberId),
    Remove(MemberId),
}

/// The member list. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Members {
    members: BTreeMap<MemberId, Member>,
    removed: BTreeSet<MemberId>,
    cluster_id: u64,
}

impl Members {
    /// The list a new cluster starts with: every initial member, a voter, with the name and
    /// peer URLs its `--initial-cluster` gives (client URLs come when each member publishes).
    pub fn bootstrap(cluster_id: u64, initial: impl IntoIterator<Item = Member>) -> Members {
        let members = initial
            .into_iter()
            .map(|m| {
                let member = Member {
                    client_ur_ls: Vec::new(),
                    is_learner: false,
                    ..m
                };
                (member.id, member)
            })
            .collect();
        Members {
            members,
            removed: BTreeSet::new(),
            cluster_id,
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn get(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn is_removed(&self, id: MemberId) -> bool {
        self.removed.contains(&id)
    }

    /// Every id the cluster removed, ascending.
    pub fn removed(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.removed.iter().copied()
    }

    /// Every member, in id order, as `MemberList` reports them.
    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !m.is_learner)
    }

    pub fn learner_count(&self) -> usize {
        self.members.values().filter(|m| m.is_learner).count()
    }

    /// Whether another member than `except` already has one of `urls` as a peer URL.
    pub fn peer_url_taken(&self, urls: &[String], except: Option<MemberId>) -> bool {
        self.members
            .values()
            .filter(|m| Some(m.id) != except)
            .any(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)))
    }

    /// Checks a change against the list as it is, as every member does when it applies it.
    pub fn check(&self, change: &MemberChange) -> Result<(), EtcdError> {
        match &change.change {
            Some(Change::Add(member)) => {
                if self.members.contains_key(&member.id) || self.removed.contains(&member.id) {
                    return Err(EtcdError::MemberExist);
                }
                if self.peer_url_taken(&member.peer_ur_ls, None) {
                    return Err(EtcdError::PeerUrlExist);
                }
                if member.is_learner && self.learner_count() >= LEARNERS_MAX {
                    return Err(EtcdError::TooManyLearners);
                }
                Ok(())
            }
            Some(Change::Remove(id)) => self.existing(*id).map(drop),
            Some(Change::Promote(id)) => match self.existing(*id)?.is_learner {
                true => Ok(()),
                false => Err(EtcdError::MemberNotLearner),
            },
            Some(Change::Update(update)) => {
                self.existing(update.id)?;
                match self.peer_url_taken(&update.peer_ur_ls, Some(update.id)) {
                    true => Err(EtcdError::PeerUrlExist),
                    false => Ok(()),
                }
            }
            Some(Change::Attributes(member)) => self.existing(member.id).map(drop),
            None => Err(EtcdError::MemberNotFound),
        }
    }

    fn existing(&self, id: MemberId) -> Result<&Member, EtcdError> {
        self.members.get(&id).ok_or(EtcdError::MemberNotFound)
    }

    /// Applies a change that [`Members::check`] accepted; returns what raft's configuration
    /// must do, if anything.
    pub fn apply(&mut self, change: MemberChange) -> Result<Option<RaftChange>, EtcdError> {
        self.check(&change)?;
        Ok(match change.change.expect("checked") {
            Change::Add(member) => {
                let id = member.id;
                let learner = member.is_learner;
                self.members.insert(
                    id,
                    Member {
                        name: String::new(),
                        client_ur_ls: Vec::new(),
                        ..member
                    },
                );
                Some(match learner {
                    true => RaftChange::AddLearner(id),
                    false => RaftChange::AddVoter(id),
                })
            }
            Change::Remove(id) => {
                self.members.remove(&id);
                self.removed.insert(id);
                Some(RaftChange::Remove(id))
            }
            Change::Promote(id) => {
                self.members.get_mut(&id).expect("checked").is_learner = false;
                Some(RaftChange::AddVoter(id))
            }
            Change::Update(update) => {
                self.members
                    .get_mut(&update.id)
                    .expect("checked")
                    .peer_ur_ls = update.peer_ur_ls;
                None
            }
            Change::Attributes(attributes) => {
                let member = self.members.get_mut(&attributes.id).expect("checked");
                member.name = attributes.name;
                member.client_ur_ls = attributes.client_ur_ls;
                None
            }
        })
    }

    pub fn to_snapshot(&self) -> MemberTable {
        MemberTable {
            members: self.list(),
            removed: self.removed.iter().copied().collect(),
            cluster_id: self.cluster_id,
        }
    }

    /// Rebuilds the list from a snapshot section, refusing an impossible one.
    pub fn from_snapshot(table: MemberTable) -> Result<Members, String> {
        let mut members = BTreeMap::new();
        for member in table.members {
            if member.id == 0 {
                return Err("a member has id 0".into());
            }
            if members.insert(member.id, member).is_some() {
                return Err("a member id appears twice".into());
            }
        }
        let restored = Members {
            members,
            removed: table.removed.into_iter().collect(),
            cluster_id: table.cluster_id,
        };
        restored.check_invariants()?;
        Ok(restored)
    }

    /// Verifies the invariants of the module documentation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(id) = self.members.keys().find(|id| self.removed.contains(id)) {
            return Err(format!("member {id:x} is both present and removed"));
        }
        let mut urls = BTreeSet::new();
        for member in self.members.values() {
            for url in &member.peer_ur_ls {
                if !urls.insert(url) {
                    return Err(format!("peer URL {url} belongs to two members"));
                }
            }
        }
        if self.learner_count() > LEARNERS_MAX {
            return Err(format!("{} learners", self.learner_count()));
        }
        Ok(())
    }
}
