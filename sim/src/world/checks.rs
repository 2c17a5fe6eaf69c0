//! Checks after every step and at the end of a run: one leader per term, commit indexes never
//! going back, every member applying the same entry at each index, log matching, and equal
//! replicated state at equal applied indexes.

use super::*;

impl World {
    // -----------------------------------------------------------------------------------------
    // Checks after every step
    // -----------------------------------------------------------------------------------------

    pub(super) fn applied(&mut self, id: MemberId, index: u64, term: u64, data: Bytes) {
        if self.trace.is_some() {
            if let Some(what) = describe_lease_entry(&AppliedEntry::new(index, term, data.clone()))
            {
                self.log(id, || format!("applies {index}: {what}"));
            }
        }
        match self.applied.get(&index) {
            Some(known) if (known.term, known.data()) != (term, &data) => {
                let what = format!(
                    "member {id} applied index {index} with term {term} but another member applied term {} there",
                    known.term
                );
                self.fail(what);
            }
            Some(_) => {}
            None => {
                let entry = AppliedEntry::new(index, term, data);
                self.follow_membership(id, &entry);
                self.timing.applied_at.insert(entry.index, self.now);
                if let Some(ended) = ended_lease(&entry) {
                    self.leases_ended.push(ended);
                }
                if let Some(id) = granted_lease(&entry) {
                    self.lease_grants_applied
                        .push((id, self.leases_ended.len()));
                }
                self.applied.insert(entry.index, entry);
            }
        }
    }

    /// Raft's configuration against the member list, whenever the applied index moved (both
    /// change only by applying entries or installing a snapshot). False if they disagree.
    fn check_configuration(&mut self, id: MemberId) -> bool {
        let member = self.members.get_mut(&id).expect("member");
        let Some(node) = member.node.as_ref() else {
            return true;
        };
        let applied = Some(node.applied_index());
        if member.configuration_checked_at == applied {
            return true;
        }
        member.configuration_checked_at = applied;
        if let Err(why) = node.check_configuration() {
            self.fail(format!("member {id}: {why}"));
            return false;
        }
        true
    }

    pub(super) fn observe_raft(&mut self, id: MemberId) {
        if !self.check_configuration(id) {
            return;
        }
        let member = &self.members[&id];
        let Some(node) = member.node.as_ref() else {
            return;
        };
        // Nobody raises alarms in the workload: CORRUPT means the corruption check saw two
        // members disagree, which the replicas never do unless something is broken.
        if node
            .state()
            .alarms()
            .is_raised(detcd::proto::etcdserverpb::AlarmType::Corrupt)
        {
            self.fail(format!(
                "member {id} applied a CORRUPT alarm: members reported different hashes"
            ));
            return;
        }
        if node.leads_leases() {
            let now = self.now;
            self.timing
                .lease_clocks_since
                .entry(node.term())
                .or_insert(now);
        }
        let (term, is_leader, commit, last_commit) = (
            node.term(),
            node.is_leader(),
            node.commit_index(),
            member.last_commit,
        );
        if is_leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    self.fail(format!(
                        "two leaders in term {term}: members {other} and {id}"
                    ));
                }
                _ => {
                    if self.leaders.insert(term, id).is_none() {
                        self.timing.leader_since.insert(term, (id, self.now));
                    }
                }
            }
        }
        if commit < last_commit {
            self.fail(format!(
                "member {id}'s commit index went back from {last_commit} to {commit}"
            ));
        }
        self.members.get_mut(&id).expect("member").last_commit = commit;
        let installed = self.members[&id].node.as_ref().map_or((0, 0), |n| {
            (n.snapshots_installed(), n.snapshots_installed_decoded())
        });
        let c = &mut self.counters;
        c.snapshots_installed = c.snapshots_installed.max(installed.0);
        c.snapshots_installed_decoded = c.snapshots_installed_decoded.max(installed.1);
    }

    /// Log matching among running members: where two members both hold an entry at or below
    /// both commit indexes, it has the same term.
    pub(super) fn check_log_matching(&mut self) {
        let nodes: Vec<(MemberId, &Node)> = self
            .members
            .iter()
            .filter_map(|(id, m)| m.node.as_ref().map(|n| (*id, n)))
            .collect();
        let mut problem = None;
        for (i, (a, na)) in nodes.iter().enumerate() {
            for (b, nb) in &nodes[i + 1..] {
                let top = na.commit_index().min(nb.commit_index());
                let low = na.first_log_index().max(nb.first_log_index());
                for index in low..=top {
                    if let (Some(ta), Some(tb)) = (na.log_term(index), nb.log_term(index)) {
                        if ta != tb {
                            problem = Some(format!(
                                "log matching: index {index} has term {ta} on {a} and {tb} on {b}"
                            ));
                        }
                    }
                }
            }
        }
        if let Some(p) = problem {
            self.fail(p);
        }
    }

    /// All members that applied the same index hold the same key space (HashKV).
    pub(super) fn check_convergence(&mut self) {
        let mut by_index: BTreeMap<u64, (MemberId, (u32, u32))> = BTreeMap::new();
        let mut problem = None;
        for (id, m) in &self.members {
            let Some(node) = m.node.as_ref() else {
                continue;
            };
            if let Err(why) = node.state().check_invariants() {
                problem = Some(format!("member {id}'s state breaks its invariants: {why}"));
            }
            if node.key_space().is_releasing_compaction() {
                self.counters.coverage.hit("compaction.half-released");
            }
            if node.key_space().is_cooling() {
                self.counters
                    .coverage
                    .hit("recovery.snapshot-values-cooling");
            }
            if node.memory_slices_released_on_time() > 0 {
                self.counters.coverage.hit("compaction.released-on-time");
            }
            let hash = match node.key_space().hash_kv(0, &m.cold) {
                Ok((h, _)) => (h, node.state().leases().digest()),
                Err(e) => {
                    problem = Some(format!("member {id} cannot hash its key space: {e}"));
                    continue;
                }
            };
            match by_index.get(&node.applied_index()) {
                Some((other, h)) if *h != hash => {
                    problem = Some(format!(
                        "replicas diverge: members {other} and {id} applied index {} but hash \
                         (kv, leases) {h:08x?} vs {hash:08x?}",
                        node.applied_index()
                    ));
                }
                _ => {
                    by_index.insert(node.applied_index(), (*id, hash));
                }
            }
        }
        if let Some(p) = problem {
            self.fail(p);
        }
    }
}

impl World {
    /// Every member that applied exactly `index` entries hashes its key space (HashKV, which
    /// covers the history compaction kept) as the reference model does: convergence judged
    /// against the model, not only member against member.
    pub fn hashes_match_the_model(&self, index: u64, model_hash: u32) -> Result<(), String> {
        for (id, m) in &self.members {
            let Some(node) = m.node.as_ref().filter(|n| n.applied_index() == index) else {
                continue;
            };
            let hash = node.key_space().hash_kv(0, &m.cold).map(|(h, _)| h);
            if hash != Ok(model_hash) {
                return Err(format!(
                    "convergence: member {id} hashes its key space {hash:08x?} at index \
                     {index}, the model {model_hash:08x}"
                ));
            }
        }
        Ok(())
    }
}

/// The lease an entry revokes or expires, if it does: its id, and its generation when the
/// entry names one.
fn ended_lease(entry: &AppliedEntry) -> Option<(i64, Option<u64>)> {
    use detcd::proto::detcdpb::internal_request::Op;
    match entry.op()? {
        Op::LeaseExpire(e) => Some((e.id, Some(e.generation))),
        Op::LeaseRevoke(r) => Some((r.id, None)),
        _ => None,
    }
}

fn granted_lease(entry: &AppliedEntry) -> Option<i64> {
    use detcd::proto::detcdpb::internal_request::Op;
    match entry.op()? {
        Op::LeaseGrant(g) => Some(g.id),
        _ => None,
    }
}

/// A lease entry in one line, for the trace.
fn describe_lease_entry(entry: &AppliedEntry) -> Option<String> {
    use detcd::proto::detcdpb::internal_request::Op;
    let request = entry.request()?;
    let from = request.origin;
    Some(match request.op.as_ref()? {
        Op::LeaseGrant(g) => format!("lease grant {:x} ttl {} (from m{from})", g.id, g.ttl),
        Op::LeaseRevoke(r) => format!("lease revoke {:x} (from m{from})", r.id),
        Op::LeaseExpire(e) => format!("lease expire {:x}/{} (from m{from})", e.id, e.generation),
        Op::LeaseCheckpoints(c) => {
            let leases: Vec<String> = c
                .leases
                .iter()
                .map(|l| format!("{:x}/{}={}ms", l.id, l.generation, l.remaining_ms))
                .collect();
            format!("lease checkpoints [{}] (from m{from})", leases.join(", "))
        }
        _ => return None,
    })
}

impl DurablePromise {
    /// What a restart recovered that breaks the promise: term, vote or commit gone back, or
    /// the last durable entry lost or replaced. None if the promise holds.
    pub(super) fn broken_by(&self, recovered: &wal::Recovered) -> Option<String> {
        let (was, now) = (&self.hard_state, &recovered.hard_state);
        if now.term < was.term {
            return Some(format!("term {} went back to {}", was.term, now.term));
        }
        if now.term == was.term && was.vote != 0 && now.vote != was.vote {
            return Some(format!(
                "its vote in term {} changed from {} to {}",
                was.term, was.vote, now.vote
            ));
        }
        if now.commit < was.commit {
            return Some(format!("commit {} went back to {}", was.commit, now.commit));
        }
        let (index, term) = self.log_tip;
        let snapshot_index = recovered
            .snapshot
            .as_ref()
            .map_or(0, |s| s.get_metadata().index);
        if term == 0 || index <= snapshot_index {
            return None;
        }
        let recovered_term = recovered
            .entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term);
        (recovered_term != Some(term)).then(|| {
            format!("durable entry {index} of term {term} recovered as {recovered_term:?}")
        })
    }
}
