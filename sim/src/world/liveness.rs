//! The liveness phase: faults healed, a leader must serve a write and a linearizable read
//! within a bound, and every member must catch up with what is committed. Then the lease phase:
//! the leases still alive, which nobody renews any more, must expire within their bound, across
//! one restart of the leader.

use super::*;

/// How long leases age in the lease phase before the leader is restarted.
const LEASE_PHASE_AGING_NS: SimNanos = 2_000 * MS;
/// How long the restarted leader stays down.
const LEASE_PHASE_DOWNTIME_NS: SimNanos = 500 * MS;

fn is_ok(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Ok { .. })
}

impl World {
    /// Heals everything, then requires a leader that serves a write and a linearizable read
    /// within the bound.
    pub(super) fn liveness(&mut self) {
        self.faults_on = false;
        self.timing.healed_at = self.now;
        self.cut.clear();
        self.clogged.clear();
        self.mark(0, FaultKind::LinksHealed);
        self.log(0, || "liveness phase: faults healed".to_string());
        for id in self.member_ids() {
            if self.members[&id].node.is_none() {
                self.start(id);
            }
            if self.members[&id].paused {
                self.heal(Heal::Resume(id));
            }
        }
        let deadline = self.now + LIVENESS_BOUND_NS;
        let probe = self.liveness_probe(deadline);
        if let Err(what) = probe {
            self.fail(format!(
                "liveness: {what} within {}s of healing",
                LIVENESS_BOUND_NS / 1_000_000_000
            ));
            return;
        }
        // Every member must catch up with everything committed: a follower left behind for
        // good (say, one the leader never manages to send a snapshot) is a liveness bug even
        // though the others serve. Once caught up, the replicas can be compared.
        let settle = self.now + CATCH_UP_BOUND_NS;
        loop {
            let commit = self
                .members
                .values()
                .filter_map(|m| m.node.as_ref())
                .map(|n| n.commit_index())
                .max()
                .unwrap_or(0);
            // A member removed before it ever caught up waits for nothing any more.
            let behind = self
                .members
                .iter()
                .filter(|(id, _)| !self.removed.contains(id))
                .filter_map(|(id, m)| Some((*id, m.node.as_ref()?.applied_index())))
                .find(|(_, applied)| *applied < commit);
            let Some((id, applied)) = behind else {
                break;
            };
            if self.now >= settle {
                self.fail(format!(
                    "liveness: member {id} applied only up to {applied} of {commit} committed, \
                     {}s after the write was served",
                    CATCH_UP_BOUND_NS / 1_000_000_000
                ));
                break;
            }
            if self.failure.is_some() || !self.step() {
                break;
            }
        }
    }

    pub(super) fn liveness_probe(&mut self, deadline: SimNanos) -> Result<(), String> {
        let put = ClientRequest::Put(PutRequest {
            key: Bytes::from_static(b"probe"),
            value: Bytes::from_static(b"p"),
            ..Default::default()
        });
        let small_quota = self.options.quota_bytes < crate::options::DEFAULT_QUOTA_BYTES;
        let no_space =
            |o: &Outcome| matches!(o, Outcome::Err { error, .. } if *error == EtcdError::NoSpace);
        loop {
            if small_quota {
                self.make_room(deadline)?;
            }
            // Writes the workload's clients gave up on may still land after the deletes and
            // fill the quota again: then room is made again.
            let outcome = self.serve_until("a write", &put, deadline, |o| {
                is_ok(o) || (small_quota && no_space(o))
            })?;
            if is_ok(&outcome) {
                break;
            }
        }
        let range = ClientRequest::Range(RangeRequest {
            key: Bytes::from_static(b"probe"),
            ..Default::default()
        });
        self.serve_until("a linearizable read", &range, deadline, is_ok)?;
        Ok(())
    }

    /// A small quota may be full, NOSPACE raised: the write probe needs room first. Deletes
    /// and a compaction make it, and the leader must then clear the alarm by itself.
    fn make_room(&mut self, deadline: SimNanos) -> Result<(), String> {
        let everything = ClientRequest::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        });
        let deleted = self.serve_until("a delete", &everything, deadline, is_ok)?;
        let Outcome::Ok { response, .. } = deleted else {
            unreachable!("served")
        };
        let revision = response.header().map_or(0, |h| h.revision);
        let compact = ClientRequest::Compact(CompactionRequest {
            revision,
            physical: false,
        });
        // Compacted already (the workload's last op compacted at the newest revision): as good.
        self.serve_until("a compaction", &compact, deadline, |outcome| {
            is_ok(outcome)
                || matches!(outcome, Outcome::Err { error, .. } if *error == EtcdError::Compacted)
        })?;
        Ok(())
    }

    /// Sends `request` to a member, again and again, until one answers it as `accept` wants.
    fn serve_until(
        &mut self,
        what: &str,
        request: &ClientRequest,
        deadline: SimNanos,
        accept: impl Fn(&Outcome) -> bool,
    ) -> Result<Outcome, String> {
        loop {
            if self.now >= deadline {
                return Err(format!("no member served {what}"));
            }
            let member = self.probe_target();
            let op = self.invoke(PROBE_CLIENT, member, request);
            let rid = self.track(member, op);
            self.log(member, || format!("liveness probe op {op}: {what}"));
            self.input(
                member,
                Input::Client {
                    id: rid,
                    request: request.clone(),
                    credentials: self.root_credentials(),
                },
            );
            let give_up = self.now + 2_000 * MS;
            while self.now < give_up.min(deadline)
                && self.members[&member].requests.contains_key(&rid)
            {
                if !self.step() {
                    break;
                }
                if let Some(Failure { what, .. }) = &self.failure {
                    return Err(what.clone());
                }
            }
            if let Some(m) = self.members.get_mut(&member) {
                m.requests.remove(&rid);
            }
            self.busy_clients.remove(&PROBE_CLIENT);
            if accept(&self.ops[op].outcome) {
                return Ok(self.ops[op].outcome.clone());
            }
            // An answer that came at once (a refusal before proposing) would otherwise have
            // the probe ask again at the same instant, forever.
            self.run_until(self.now + 100 * MS, |_| false);
        }
    }

    /// A member to probe: any initial one, or when membership changed, any that is still in
    /// the cluster.
    fn probe_target(&mut self) -> MemberId {
        if !self.options.membership {
            let healthy: Vec<MemberId> = (1..=self.options.members)
                .filter(|id| !self.refused.contains(id))
                .collect();
            return member_clients::pick(&mut self.rng, &healthy).expect("a majority is intact");
        }
        let current: Vec<MemberId> = self
            .members
            .keys()
            .copied()
            .filter(|id| !self.removed.contains(id))
            .collect();
        member_clients::pick(&mut self.rng, &current).expect("a member is left")
    }

    /// The lease phase: lets the leases still alive age, restarts the leader once (its
    /// successor must neither restart their TTLs nor expire them early), and runs until every
    /// one of them is gone or their bound has long passed. The lease checker judges the times.
    pub(super) fn lease_phase(&mut self) {
        self.watchers_finish();
        let alive = self.alive_leases();
        if alive.is_empty() {
            return;
        }
        let start = self.now;
        self.log(0, || format!("lease phase: {} leases alive", alive.len()));
        let ids = alive.iter().map(|(id, _)| *id).collect();
        self.timing.lease_phase = Some((start, ids));
        let ended_before = self.leases_ended.len();
        let grants_before = self.lease_grants_applied.len();
        self.run_until(start + LEASE_PHASE_AGING_NS, |_| false);
        let leader = self
            .member_ids()
            .into_iter()
            .find(|m| self.node(*m).is_some_and(|n| n.is_leader()));
        if let Some(leader) = leader {
            self.crash(leader);
            let at = self.now + LEASE_PHASE_DOWNTIME_NS;
            self.schedule(
                at,
                Event::Heal {
                    what: Heal::Restart(leader),
                },
            );
        }
        let ttl_max = self.options.lease_ttl_max_s.max(2) * 1_000 * MS;
        let give_up = self.now
            + ttl_max * 2
            + 2 * LEASE_CHECKPOINT_INTERVAL_NS
            + REQUEST_TIMEOUT_NS
            + LIVENESS_BOUND_NS;
        // Also waits for leases granted after the phase began (a grant a client gave up on,
        // or a recipe's, can still be applied): the checker judges those too.
        self.run_until(give_up, |world| {
            let ended = &world.leases_ended[ended_before..];
            let started_ones_ended = alive.iter().all(|(id, generation)| {
                ended
                    .iter()
                    .any(|(e, g)| e == id && g.is_none_or(|g| g == *generation))
            });
            let late = &world.lease_grants_applied[grants_before..];
            let late_ones_ended = late
                .iter()
                .all(|(id, mark)| world.leases_ended[*mark..].iter().any(|(e, _)| e == id));
            // An ending entry may have been refused (a revoke auth did not let through): the
            // leases must also be gone from the state.
            started_ones_ended && late_ones_ended && !world.still_holds(&alive, late)
        });
    }

    /// Whether the member that applied the most still holds one of `started` (id, generation)
    /// or of the leases `late` grants made; taken as so while no running member has applied
    /// all that was applied (none runs, or a restarted one is catching up).
    fn still_holds(&self, started: &[(i64, u64)], late: &[(i64, usize)]) -> bool {
        let tip = self.applied.keys().next_back().copied().unwrap_or(0);
        let current = self
            .most_applied_node()
            .filter(|n| n.applied_index() >= tip);
        current.is_none_or(|n| {
            let leases = n.state().leases();
            let started = started.iter().any(|(id, generation)| {
                leases.get(*id).is_some_and(|l| l.generation == *generation)
            });
            started || late.iter().any(|(id, _)| leases.get(*id).is_some())
        })
    }

    /// The leases (id, generation) in the state of the member that applied the most.
    fn alive_leases(&self) -> Vec<(i64, u64)> {
        self.most_applied_node()
            .map(|n| {
                let leases = n.state().leases().iter();
                leases.map(|(id, l)| (id, l.generation)).collect()
            })
            .unwrap_or_default()
    }

    fn most_applied_node(&self) -> Option<&Node> {
        self.members
            .values()
            .filter_map(|m| m.node.as_ref())
            .max_by_key(|n| n.applied_index())
    }

    /// Steps until `deadline`, a failure, or `done`.
    pub(super) fn run_until(&mut self, deadline: SimNanos, done: impl Fn(&World) -> bool) {
        while self.now < deadline && self.failure.is_none() && !done(self) {
            if !self.step() {
                break;
            }
        }
    }
}
