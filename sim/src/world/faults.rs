//! Faults of the safety phase: crashes, partitions (symmetric and one-way), pauses (of the
//! leader more often than of others), clogged links and clock jumps, each healed after a while.

use super::*;

/// The most a clogged link delays a message.
pub(super) const CLOG_MAX_NS: u64 = 2_000 * MS;
/// A leader's stall outlasts an election timeout (the node's default, one second).
const STALL_MIN_NS: u64 = 1_500 * MS;

impl World {
    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    pub(super) fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let ids = self.member_ids();
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        let leader = ids
            .iter()
            .copied()
            .find(|m| self.node(*m).is_some_and(|n| n.is_leader()));
        // Faults aimed at the leader find the most bugs: prefer it half of the time.
        let target = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => id,
        };
        match self.rng.below(8) {
            0 | 1 => {
                self.crash(target);
                let at = self.now + self.rng.between(10 * MS, 3_000 * MS);
                self.schedule(
                    at,
                    Event::Heal {
                        what: Heal::Restart(target),
                    },
                );
            }
            2 => {
                let one_way = self.rng.chance(0.3);
                self.isolate(target, one_way);
            }
            3 => {
                // A random split of the cluster in two.
                for a in &ids {
                    for b in &ids {
                        if a < b && self.rng.chance(0.5) {
                            self.cut.insert((*a, *b));
                            self.cut.insert((*b, *a));
                        }
                    }
                }
                self.counters.partitions += 1;
                self.mark(0, FaultKind::Partition);
                self.log(0, || "random partition".to_string());
                let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                self.schedule(at, Event::Heal { what: Heal::Links });
            }
            4 => self.pause(target, 100 * MS),
            5 => {
                // Clogging: a link that still delivers, but late (a congested or slow path).
                let other = ids[self.rng.below(ids.len() as u64) as usize];
                if other != target {
                    let extra = self.rng.between(50 * MS, CLOG_MAX_NS);
                    self.clogged.insert((target, other), extra);
                    self.counters.clogs += 1;
                    self.mark(target, FaultKind::Clog);
                    self.log(target, || {
                        format!("link to m{other} clogged (+{}ms)", extra / MS)
                    });
                    let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
                    self.schedule(at, Event::Heal { what: Heal::Links });
                }
            }
            // The classic stale leader: its process stalls (a GC or VM pause) long enough for
            // the others to elect a new one, and wakes to requests that queued for it meanwhile;
            // or it is cut off, and serves its clients until it notices.
            7 if self.rng.chance(0.5) => self.pause(leader.unwrap_or(target), STALL_MIN_NS),
            7 => self.isolate(leader.unwrap_or(target), false),
            _ => {
                let jump = self.rng.between(1, 3_000 * MS);
                let member = self.members.get_mut(&target).expect("member");
                member.clock.offset_ns += jump;
                self.timing.clock_jumps.push((self.now, target, jump));
                self.counters.clock_jumps += 1;
                self.mark(target, FaultKind::ClockJump);
                self.log(target, || format!("clock jumps {}ms ahead", jump / MS));
                self.arm_timer(target);
            }
        }
        self.mix(0xfa017 ^ self.now);
        let next = self.now + self.rng.between(1, 2 * self.options.fault_interval_ns);
        self.schedule(next, Event::Fault);
    }

    /// Cuts `target` off from every other member (only its outbound links if `one_way`).
    fn isolate(&mut self, target: MemberId, one_way: bool) {
        for other in self.member_ids().into_iter().filter(|o| *o != target) {
            self.cut.insert((target, other));
            if !one_way {
                self.cut.insert((other, target));
            }
        }
        self.counters.partitions += 1;
        self.mark(target, FaultKind::Partition);
        let how = if one_way { " (outbound only)" } else { "" };
        self.log(target, || format!("partitioned{how}"));
        let at = self.now + self.rng.between(100 * MS, 5_000 * MS);
        self.schedule(at, Event::Heal { what: Heal::Links });
    }

    fn pause(&mut self, target: MemberId, at_least: u64) {
        let member = self.members.get_mut(&target).expect("member");
        if member.node.is_none() || member.paused {
            return;
        }
        member.paused = true;
        let pauses = self.timing.pauses.entry(target).or_default();
        pauses.push((self.now, SimNanos::MAX));
        self.counters.pauses += 1;
        self.mark(target, FaultKind::Pause);
        self.log(target, || "paused".to_string());
        let at = self.now + self.rng.between(at_least, 5_000 * MS);
        let what = Heal::Resume(target);
        self.schedule(at, Event::Heal { what });
    }

    pub(super) fn heal(&mut self, what: Heal) {
        match what {
            Heal::Restart(id) => {
                if self.members[&id].node.is_none() {
                    self.start(id);
                }
            }
            Heal::Resume(id) => {
                let member = self.members.get_mut(&id).expect("member");
                if member.paused {
                    member.paused = false;
                    self.pause_ended(id);
                    self.mark(id, FaultKind::Resume);
                    self.log(id, || "resumed".to_string());
                    self.input(id, Input::Tick);
                }
            }
            Heal::Links => {
                self.cut.clear();
                self.clogged.clear();
                self.mark(0, FaultKind::LinksHealed);
                self.log(0, || "network healed".to_string());
            }
        }
    }
}
