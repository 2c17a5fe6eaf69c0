//! Lease clocks: when each lease expires, as one member sees it on its own clock. Volatile (a
//! restart rebuilds them from the replicated table), and pure: time comes in as `now`.
//!
//! Every member keeps an **estimate** per lease: the local time at which it applied the lease's
//! last grant or checkpoint, plus the remaining time that entry recorded. Only the leader acts on
//! time: once it has applied everything committed before its term (it is *ready*), it starts
//! from its estimates and keeps an exact **expiry** per lease (TTL after the last renewal it
//! acknowledged), answers keepalives, proposes a revocation when a lease expires, and records
//! remaining times through raft.
//!
//! A keepalive is acknowledged at once from memory only when the lease's **floor** covers the
//! promise: the floor is the proposal time plus the recorded remaining time of this leader's
//! latest committed checkpoint of the lease. Every member applies that checkpoint after it was
//! proposed, so every estimate, and hence the expiry any later leader starts from, is at or past
//! the floor. When the floor does not cover a keepalive, the leader proposes a checkpoint that
//! records `TTL + prepay` from now and answers once it is applied: with a prepay, most renewals
//! are answered from memory (see `Config::lease_prepay`). The records a leader proposes never
//! record an earlier end than its earlier records did, so the latest one applied is always the
//! one that covers every acknowledgement.
//!
//! The guarantees this gives, on the clocks of the members (drift aside):
//! - **never early**: a lease is revoked for expiry no earlier than TTL after the leader
//!   received its last acknowledged keepalive, or after the leader appended its grant;
//! - **bounded**: a lease nobody renews is revoked within TTL + prepay + checkpoint interval +
//!   the time to elect a leader and commit the revocation, after its last renewal or after the
//!   cluster last had no leader, whichever is later. A leader change does not reset the TTL: a
//!   new leader starts from its estimates, which age from the last record, and periodic
//!   checkpoints (every `checkpoint_interval`) keep a member that applies old entries late (a
//!   restart, a partition healed) from extending a lease by more than that interval.

mod held;

use std::collections::BTreeMap;
use std::time::Duration;

use held::{Held, HeldLeases};
use imbl::OrdMap;

use super::LeaseId;
use crate::time::Instant;

/// What a leader answers a keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: the lease's full TTL from now.
    Renewed,
    /// The lease does not exist, or it expired and its revocation is under way: TTL 0.
    NotFound,
    /// The floor does not cover the promise yet; the waiter is answered once a checkpoint is.
    Waiting,
}

/// One keepalive waiting for a record, and the expiry it would make.
struct Waiter<W> {
    need: Instant,
    token: W,
}

/// What a checkpoint this leader proposed carries, kept until it is applied.
struct InFlightRecord {
    proposed_at: Instant,
}

struct LeaderClocks<W> {
    held: HeldLeases,
    waiting: BTreeMap<LeaseId, Vec<Waiter<W>>>,
    waiting_count: usize,
    in_flight: BTreeMap<u64, InFlightRecord>,
}

/// What acknowledging a keepalive away from the leader's step needs to know of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewable {
    pub generation: u64,
    pub ttl: Duration,
    /// The floor of this leader's committed records (it only rises).
    pub floor: Instant,
}

impl Renewable {
    /// Whether a keepalive received at `now` is renewed by the floor alone, as
    /// [`LeaseClocks::keep_alive`] renews it from memory.
    pub fn covers(&self, now: Instant) -> bool {
        self.floor >= now + self.ttl
    }
}

/// Timing settings, from the node's configuration.
#[derive(Clone, Copy, Debug)]
pub struct ClockConfig {
    /// How long a checkpoint may go without being renewed before it is recorded again.
    pub checkpoint_interval: Duration,
    /// The most of a lease's TTL a renewal record adds beyond the TTL itself.
    pub prepay_max: Duration,
    /// Keepalives waiting for a record at once, past which they are refused.
    pub waiting_max: usize,
    /// How long a proposed revocation may stay unapplied before it is proposed again.
    pub revoke_retry: Duration,
}

/// A member's lease clocks; `W` names whom to answer a keepalive that had to wait.
pub struct LeaseClocks<W> {
    config: ClockConfig,
    /// Per lease: its generation and when this member estimates it expires.
    estimates: BTreeMap<LeaseId, (u64, Instant)>,
    leader: Option<LeaderClocks<W>>,
}

/// A lease as the leader's entries name it.
pub type Life = (LeaseId, u64);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<W> LeaseClocks<W> {
    pub fn new(config: ClockConfig) -> LeaseClocks<W> {
        LeaseClocks {
            config,
            estimates: BTreeMap::new(),
            leader: None,
        }
    }

    pub fn is_leading(&self) -> bool {
        self.leader.is_some()
    }

    /// Forgets everything (the replicated table was replaced by a snapshot).
    pub fn reset(&mut self) {
        self.estimates.clear();
        self.leader = None;
    }

    /// A grant or checkpoint of `(id, generation)` recording `remaining` was applied; the
    /// remaining time counts `from` when its entry reached this member's log (at or after the
    /// leader proposed it, so the estimate is never earlier than what the leader promised).
    pub fn recorded(
        &mut self,
        (id, generation): Life,
        ttl: Duration,
        remaining: Duration,
        from: Instant,
    ) {
        self.estimates.insert(id, (generation, from + remaining));
        if let Some(leader) = &mut self.leader {
            // A grant applied while leading: the lease starts with its full TTL.
            leader.held.insert_if_absent(id, || Held {
                generation,
                ttl,
                expiry: from + remaining,
                floor: None,
                proposed_floor: None,
                recorded_at: from,
                revoke_proposed_at: None,
            });
            debug_assert_eq!(
                leader.held.get(id).map(|h| h.generation),
                Some(generation),
                "one lease per id at a time"
            );
        }
    }

    /// This leader's checkpoint `proposal` was applied, recording `remaining` for `id`: the
    /// floor rises. Returns the waiters it now covers with whether each is renewed: not when a
    /// revocation for expiry was proposed meanwhile, since the lease is then as good as gone.
    pub fn own_record_applied(
        &mut self,
        proposal: u64,
        (id, generation): Life,
        remaining: Duration,
    ) -> Vec<(W, bool)> {
        let Some(leader) = &mut self.leader else {
            return Vec::new();
        };
        let Some(record) = leader.in_flight.get(&proposal) else {
            return Vec::new();
        };
        if leader.held.get(id).map(|h| h.generation) != Some(generation) {
            return Vec::new();
        }
        let end = record.proposed_at + remaining;
        let (floor, doomed) = leader
            .held
            .update(id, |held| {
                let floor = held.floor.map_or(end, |f| f.max(end));
                held.floor = Some(floor);
                (floor, held.revoke_proposed_at.is_some())
            })
            .expect("held");
        let Some(waiters) = leader.waiting.remove(&id) else {
            return Vec::new();
        };
        let (covered, kept): (Vec<_>, Vec<_>) =
            waiters.into_iter().partition(|w| doomed || w.need <= floor);
        leader.waiting_count -= covered.len();
        if !kept.is_empty() {
            leader.waiting.insert(id, kept);
        }
        if !doomed {
            if let Some(need) = covered.iter().map(|w| w.need).max() {
                leader
                    .held
                    .update(id, |held| held.expiry = held.expiry.max(need));
            }
        }
        covered.into_iter().map(|w| (w.token, !doomed)).collect()
    }

    /// Every lease whose own record `proposal` named has been handled; forget the proposal.
    pub fn proposal_applied(&mut self, proposal: u64) {
        if let Some(leader) = &mut self.leader {
            leader.in_flight.remove(&proposal);
        }
    }

    /// The lease is gone (revoked or expired). Returns the keepalives that waited on it, to be
    /// answered as not found.
    pub fn removed(&mut self, id: LeaseId) -> Vec<W> {
        self.estimates.remove(&id);
        let Some(leader) = &mut self.leader else {
            return Vec::new();
        };
        leader.held.remove(id);
        let waiters = leader.waiting.remove(&id).unwrap_or_default();
        leader.waiting_count -= waiters.len();
        waiters.into_iter().map(|w| w.token).collect()
    }

    /// This member is now the leader and has applied everything committed before its term: it
    /// starts every lease's clock from its estimate. `ttl` gives each lease's granted TTL.
    /// `reset_bug` is the injected bug of etcd without checkpoints: every lease restarts from
    /// its full TTL.
    pub fn lead(
        &mut self,
        now: Instant,
        reset_bug: bool,
        ttl: impl Fn(LeaseId) -> Option<Duration>,
    ) {
        let leases = self
            .estimates
            .iter()
            .filter_map(|(id, (generation, estimate))| {
                let ttl = ttl(*id)?;
                let held = Held {
                    generation: *generation,
                    ttl,
                    expiry: if reset_bug { now + ttl } else { *estimate },
                    floor: None,
                    proposed_floor: None,
                    recorded_at: now,
                    revoke_proposed_at: None,
                };
                Some((*id, held))
            });
        self.leader = Some(LeaderClocks {
            held: HeldLeases::new(self.config.revoke_retry, leases),
            waiting: BTreeMap::new(),
            waiting_count: 0,
            in_flight: BTreeMap::new(),
        });
    }

    /// This member stopped leading: its clocks stop at once. Returns the keepalives that were
    /// waiting; their members ask the new leader.
    pub fn step_down(&mut self) -> Vec<W> {
        let Some(leader) = self.leader.take() else {
            return Vec::new();
        };
        leader
            .waiting
            .into_values()
            .flatten()
            .map(|w| w.token)
            .collect()
    }

    /// A keepalive for `id` received now. `Waiting` keeps `token` until a record covers it; the
    /// caller must then propose [`LeaseClocks::records_needed`].
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant, token: W) -> (Renewal, Option<W>) {
        let Some(leader) = &mut self.leader else {
            return (Renewal::NotFound, Some(token));
        };
        let Some(held) = leader.held.get(id) else {
            return (Renewal::NotFound, Some(token));
        };
        if held.expiry <= now || held.revoke_proposed_at.is_some() {
            return (Renewal::NotFound, Some(token));
        }
        let need = now + held.ttl;
        if held.floor.is_some_and(|floor| floor >= need) {
            leader
                .held
                .update(id, |held| held.expiry = held.expiry.max(need));
            return (Renewal::Renewed, Some(token));
        }
        if leader.waiting_count >= self.config.waiting_max {
            return (Renewal::NotFound, Some(token));
        }
        leader.waiting_count += 1;
        leader
            .waiting
            .entry(id)
            .or_default()
            .push(Waiter { need, token });
        (Renewal::Waiting, None)
    }

    /// The leases a keepalive may be acknowledged for away from this leader's step
    /// (`node::LocalKeepAlives`), with what the decision needs; `None` when not leading. A
    /// lease is left out while a revocation is under way or no record of this leader covers
    /// it yet. A copy in constant time, whatever the number of leases.
    pub fn renewable(&self) -> Option<OrdMap<LeaseId, Renewable>> {
        Some(self.leader.as_ref()?.held.renewable().clone())
    }

    /// A keepalive for `life` was acknowledged at `at` away from this leader's step, as
    /// [`Renewable::covers`] allowed: its expiry moves as [`LeaseClocks::keep_alive`] moves it.
    /// Nothing changes for a lease gone since (or granted again), or no longer led here.
    ///
    /// Applied before the expiries of the batch that follows are looked at, such an
    /// acknowledgement is never overtaken by an expiry: the floor that covered it is at most
    /// a prepay (half the TTL at most) past the lease's expiry, so the expiry was more than
    /// half a TTL after `at` when it was acknowledged, and only a batch that reads its time
    /// after `at` can see it pass, which hands this renewal over first.
    pub fn renewed_away(&mut self, (id, generation): Life, at: Instant) {
        let Some(leader) = &mut self.leader else {
            return;
        };
        leader.held.update(id, |held| {
            if held.generation == generation
                && held.revoke_proposed_at.is_none()
                && held.expiry > at
            {
                held.expiry = held.expiry.max(at + held.ttl);
            }
        });
    }

    /// Whether the waiting list is full (a keepalive then gets `too many requests`).
    pub fn waiting_full(&self) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|l| l.waiting_count >= self.config.waiting_max)
    }

    /// The records to propose now, as `(lease, remaining)`: for every lease whose waiting
    /// keepalives no proposed record covers yet, one that covers the latest of them with a
    /// prepay. `proposal` is the id the caller will propose them under.
    pub fn records_needed(&mut self, now: Instant, proposal: u64) -> Vec<(Life, Duration)> {
        let prepay_max = self.config.prepay_max;
        let Some(leader) = &mut self.leader else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (id, waiters) in &leader.waiting {
            let need = waiters.iter().map(|w| w.need).max().expect("non-empty");
            let needed = leader.held.update(*id, |held| {
                if held.proposed_floor.is_some_and(|f| f >= need) {
                    return None;
                }
                let prepay = (held.ttl / 2).min(prepay_max);
                Some(((*id, held.generation), record(held, now, need + prepay)))
            });
            out.extend(needed.flatten());
        }
        if !out.is_empty() {
            leader
                .in_flight
                .insert(proposal, InFlightRecord { proposed_at: now });
        }
        out
    }

    /// Periodic checkpoints: leases not recorded for a checkpoint interval, with what they have
    /// left, at most `max` of them. `proposal` is the id the caller will propose them under.
    pub fn checkpoints_due(
        &mut self,
        now: Instant,
        max: usize,
        proposal: u64,
    ) -> Vec<(Life, Duration)> {
        let interval = self.config.checkpoint_interval;
        let Some(leader) = &mut self.leader else {
            return Vec::new();
        };
        // A scan of every lease, but once per a quarter of the checkpoint interval.
        let due: Vec<LeaseId> = leader
            .held
            .iter()
            .filter(|(_, held)| {
                held.expiry > now && now.saturating_since(held.recorded_at) >= interval
            })
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        let out: Vec<_> = due
            .into_iter()
            .filter_map(|id| {
                leader.held.update(id, |held| {
                    ((id, held.generation), record(held, now, held.expiry))
                })
            })
            .collect();
        if !out.is_empty() {
            leader
                .in_flight
                .insert(proposal, InFlightRecord { proposed_at: now });
        }
        out
    }

    /// Leases that expired on this leader's clock with no revocation proposed within the retry
    /// interval, at most `max`, the earliest due first; each is marked as being revoked.
    pub fn expired(&mut self, now: Instant, max: usize) -> Vec<Life> {
        let Some(leader) = &mut self.leader else {
            return Vec::new();
        };
        let due = leader.held.due_at(now, max);
        due.into_iter()
            .filter_map(|id| {
                leader.held.update(id, |held| {
                    held.revoke_proposed_at = Some(now);
                    (id, held.generation)
                })
            })
            .collect()
    }

    /// When the leader must next look for expired leases.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leader.as_ref()?.held.next_due()
    }

    /// What the leader would answer for TimeToLive: the time left, or `None` when this member
    /// does not lead or does not hold the lease.
    pub fn remaining(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        let held = self.leader.as_ref()?.held.get(id)?;
        Some(held.expiry.saturating_since(now))
    }

    /// This member's estimate of when `id` expires (every member keeps one), with the lease's
    /// generation.
    pub fn estimate(&self, id: LeaseId) -> Option<(u64, Instant)> {
        self.estimates.get(&id).copied()
    }
}

/// Records `end` for `held` as of `now` (never an earlier end than a record proposed before):
/// returns the remaining time to record.
fn record(held: &mut Held, now: Instant, end: Instant) -> Duration {
    let end = held
        .proposed_floor
        .map_or(end, |f| f.max(end))
        .max(held.expiry);
    held.proposed_floor = Some(end);
    held.recorded_at = now;
    end.saturating_since(now)
}

/// The remaining time a record carries, in whole milliseconds rounded up, so that applying it
/// never yields an earlier end than the leader computed.
pub fn remaining_ms(remaining: Duration) -> i64 {
    let whole = ms(remaining);
    if Duration::from_millis(whole as u64) < remaining {
        whole.saturating_add(1)
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    const TTL: Duration = Duration::from_secs(10);

    /// A leader holding lease 7 (generation 1, granted at 0) whose keepalive at 1 s was
    /// covered by a record: floor 16 s (TTL + a prepay of half the TTL), expiry 11 s.
    fn leader_with_a_record() -> LeaseClocks<u32> {
        let mut clocks = LeaseClocks::new(ClockConfig {
            checkpoint_interval: Duration::from_secs(300),
            prepay_max: Duration::from_secs(300),
            waiting_max: 10,
            revoke_retry: Duration::from_secs(2),
        });
        clocks.lead(at(0), false, |_| Some(TTL));
        clocks.recorded((7, 1), TTL, TTL, at(0));
        assert_eq!(clocks.renewable(), Some(OrdMap::new()), "no record yet");
        assert_eq!(clocks.keep_alive(7, at(1_000), 0), (Renewal::Waiting, None));
        let records = clocks.records_needed(at(1_000), 1);
        assert_eq!(records, vec![((7, 1), Duration::from_secs(15))]);
        assert_eq!(
            clocks.own_record_applied(1, (7, 1), Duration::from_secs(15)),
            vec![(0, true)]
        );
        clocks
    }

    #[test]
    fn a_renewal_away_from_the_step_is_one_the_floor_covers_and_moves_the_expiry() {
        let mut clocks = leader_with_a_record();
        let renewable = clocks.renewable().expect("leading")[&7];
        assert_eq!(renewable.floor, at(16_000));
        assert!(renewable.covers(at(6_000)));
        assert!(!renewable.covers(at(6_001)));
        assert_eq!(clocks.remaining(7, at(6_000)), Some(Duration::from_secs(5)));
        clocks.renewed_away((7, 1), at(6_000));
        assert_eq!(clocks.remaining(7, at(6_000)), Some(TTL));
        // A later grant of the id is another lease: its renewal does not touch this one.
        clocks.renewed_away((7, 2), at(6_500));
        assert_eq!(clocks.remaining(7, at(6_000)), Some(TTL));
    }

    #[test]
    fn leases_being_revoked_and_members_not_leading_renew_nothing_away_from_the_step() {
        let mut clocks = leader_with_a_record();
        assert_eq!(clocks.expired(at(11_000), 10), vec![(7, 1)]);
        assert_eq!(clocks.renewable(), Some(OrdMap::new()));
        clocks.renewed_away((7, 1), at(11_000));
        assert_eq!(clocks.remaining(7, at(11_000)), Some(Duration::ZERO));
        clocks.step_down();
        assert_eq!(clocks.renewable(), None);
    }
}
