//! The lease guarantees, judged on the simulator's true time (see `detcd::lease::clock`):
//!
//! - **never early**: a lease is revoked for expiry no earlier than its TTL after a client sent
//!   a grant or keepalive that was acknowledged, allowing only for the expiring leader's clock
//!   (its drift, and the jumps it took in the meantime);
//! - **bounded**: in the lease phase (clients stopped, faults healed, the leader restarted once),
//!   every lease still alive is revoked by its last renewal + TTL + prepay + checkpoint interval,
//!   or TTL + prepay after the expiring leader started or the cluster recovered from its faults
//!   (its first leader after they healed), or the expiring leader's election, or the remaining
//!   time of the last record before its term after it started its lease clocks (a record
//!   reaches a member late when its leader falls before committing it: its time counts from
//!   its arrival), plus slack;
//! - **answers**: a keepalive or TimeToLive answered for a lease names the TTL it was granted,
//!   and comes after its grant was applied and before its expiry was; a TimeToLive (which
//!   reads linearizably) knows of every revocation or expiry applied before it was asked.
//!
//! The checker reads leases from the log, not from any member: the grant entries say which
//! leases exist and with what TTL, the expiry entries say who revoked one and when. An id may be
//! granted again once its lease is gone; each grant starts a new life of the id, and a request
//! about the id belongs to the latest life granted before it returned.

use std::collections::{BTreeMap, BTreeSet};

use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::detcdpb::{internal_request, InternalRequest};
use detcd::proto::etcdserverpb::LeaseKeepAliveRequest;

use crate::history::{AppliedEntry, Op, Outcome, SimNanos, Timing};

const MS: u64 = 1_000_000;
/// Time for a proposal to be committed and applied once the leader decides, on a healed
/// network, on top of the clock allowances.
const COMMIT_SLACK_NS: u64 = 500 * MS;

/// What the log says about one lease, from its grant to its end.
#[derive(Clone, Debug, Default)]
struct LeaseLife {
    /// The number of the grant that started it (as the lease table counts them).
    generation: u64,
    ttl_s: i64,
    /// When the grant was first applied.
    granted_at: Option<SimNanos>,
    /// The expiry entry: when first applied, who proposed it, in which term.
    expired: Option<(SimNanos, MemberId, u64)>,
    /// When a client's revocation was first applied.
    revoked_at: Option<SimNanos>,
    /// The members that recorded its remaining time (proposed its checkpoints): every member
    /// estimates its expiry from what they measured.
    recorders: BTreeSet<MemberId>,
    /// The log index and remaining time (ns) of its grant and of each checkpoint.
    records: Vec<(u64, u64)>,
}

impl LeaseLife {
    /// When its expiry or revocation was first applied, if it ended.
    fn ended_at(&self) -> Option<SimNanos> {
        match (self.expired, self.revoked_at) {
            (Some((expired_at, _, _)), Some(revoked_at)) => Some(expired_at.min(revoked_at)),
            (Some((expired_at, _, _)), None) => Some(expired_at),
            (None, revoked_at) => revoked_at,
        }
    }

    fn ended(&self) -> bool {
        self.expired.is_some() || self.revoked_at.is_some()
    }
}

type Lives = BTreeMap<i64, Vec<LeaseLife>>;

/// Checks every lease guarantee; `Err` describes the first violation.
/// `failed` are the log indexes whose request changed nothing (from the model's replay).
pub fn check(
    ops: &[Op],
    log: &[AppliedEntry],
    failed: &BTreeSet<u64>,
    timing: &Timing,
) -> Result<(), String> {
    let lives = lease_lives(log, failed, timing);
    for op in ops {
        check_answer(op, &lives, timing)?;
        check_not_found(op, &lives, ops, timing)?;
    }
    for (id, id_lives) in &lives {
        for life in id_lives {
            if let Some((expired_at, member, _)) = life.expired {
                never_early(*id, life, &lives, expired_at, member, ops, timing)?;
            }
        }
    }
    if let Some((start, alive)) = &timing.lease_phase {
        let term_starts = first_index_of_each_term(log);
        for (id, life) in judged_in_lease_phase(&lives, *start, alive) {
            bounded(id, life, *start, ops, &term_starts, timing)?;
        }
    }
    Ok(())
}

/// The lives the lease phase must see end: those of the leases alive when it began, and any
/// granted after (a grant a client gave up on can still be applied then).
fn judged_in_lease_phase<'a>(
    lives: &'a Lives,
    start: SimNanos,
    alive: &'a [i64],
) -> impl Iterator<Item = (i64, &'a LeaseLife)> {
    lives.iter().flat_map(move |(id, id_lives)| {
        let granted_after = move |life: &&LeaseLife| life.granted_at.is_some_and(|at| at > start);
        let at_start = alive
            .contains(id)
            .then(|| id_lives.iter().rev().find(|life| !granted_after(life)))
            .flatten();
        at_start
            .into_iter()
            .chain(id_lives.iter().filter(granted_after))
            .map(move |life| (*id, life))
    })
}

/// The life of `id` a request that returned at `returned_at` is about.
fn life_at(lives: &Lives, id: i64, returned_at: SimNanos) -> Option<&LeaseLife> {
    lives
        .get(&id)?
        .iter()
        .rev()
        .find(|life| life.granted_at.is_some_and(|at| at <= returned_at))
}

fn lease_lives(log: &[AppliedEntry], failed: &BTreeSet<u64>, timing: &Timing) -> Lives {
    let mut lives = Lives::new();
    let mut grants = 0;
    for entry in log {
        let Some(&InternalRequest { origin, ref op, .. }) = entry.request() else {
            continue;
        };
        // A grant or revoke that failed (refused by an alarm, or by auth for want of
        // permission on the lease's keys) never happened.
        if failed.contains(&entry.index) {
            continue;
        }
        let at = timing.applied_at.get(&entry.index).copied().unwrap_or(0);
        match op {
            Some(internal_request::Op::LeaseGrant(g)) => {
                let id_lives = lives.entry(g.id).or_default();
                // A grant of an id whose lease is alive fails; only a gone one starts anew.
                if id_lives.last().is_none_or(LeaseLife::ended) {
                    id_lives.push(LeaseLife {
                        generation: grants,
                        ttl_s: g.ttl,
                        granted_at: Some(at),
                        records: vec![(entry.index, g.ttl.max(0) as u64 * 1_000 * MS)],
                        ..LeaseLife::default()
                    });
                    grants += 1;
                }
            }
            Some(internal_request::Op::LeaseExpire(e)) => {
                if let Some(life) = lives.get_mut(&e.id).and_then(|l| l.last_mut()) {
                    if !life.ended() && life.generation == e.generation {
                        life.expired = Some((at, origin, entry.term));
                    }
                }
            }
            Some(internal_request::Op::LeaseCheckpoints(c)) => {
                for checkpoint in &c.leases {
                    let life = lives.get_mut(&checkpoint.id).and_then(|l| l.last_mut());
                    if let Some(life) = life.filter(|l| l.generation == checkpoint.generation) {
                        life.recorders.insert(origin);
                        let remaining = checkpoint.remaining_ms.max(0) as u64 * MS;
                        life.records.push((entry.index, remaining));
                    }
                }
            }
            Some(internal_request::Op::LeaseRevoke(r)) => {
                if let Some(life) = lives.get_mut(&r.id).and_then(|l| l.last_mut()) {
                    if !life.ended() {
                        life.revoked_at = Some(at);
                    }
                }
            }
            _ => {}
        }
    }
    lives
}

/// A keepalive or TimeToLive answered for a live lease (a TimeToLive of 0 seconds left found
/// it too) must be about a lease that exists then.
/// The leader may have answered about a life of the id that ended while the answer travelled
/// (a forwarded reply held up by the network past the lease's expiry and a new grant of the
/// same id): any life granted before the answer returned and not ended before the request
/// was made can be the one answered about.
fn check_answer(op: &Op, lives: &Lives, timing: &Timing) -> Result<(), String> {
    let Outcome::Ok {
        response,
        returned_at,
    } = &op.outcome
    else {
        return Ok(());
    };
    let (id, ttl, granted) = match (&op.request, response) {
        (ClientRequest::LeaseKeepAlive(_), ClientResponse::LeaseKeepAlive(k)) if k.ttl > 0 => {
            (k.id, k.ttl, k.ttl)
        }
        (ClientRequest::LeaseTimeToLive(_), ClientResponse::LeaseTimeToLive(t)) if t.ttl >= 0 => {
            (t.id, t.ttl, t.granted_ttl)
        }
        _ => return Ok(()),
    };
    let what = || format!("op {} ({:?}) answered {response:?}", op.id, op.request);
    let latest = life_at(lives, id, *returned_at)
        .ok_or_else(|| format!("{}: but no grant of the lease was applied before", what()))?;
    let earlier_lives_still_alive = lives[&id].iter().rev().filter(|life| {
        life.generation != latest.generation
            && life.granted_at.is_some_and(|at| at <= *returned_at)
            && life.ended_at().is_some_and(|end| end >= op.invoked_at)
    });
    let mut verdicts = std::iter::once(latest)
        .chain(earlier_lives_still_alive)
        .map(|life| answer_fits_life(op, life, ttl, granted, timing, &what));
    let first = verdicts.next().expect("the latest life");
    if first.is_ok() || verdicts.any(|v| v.is_ok()) {
        return Ok(());
    }
    first
}

/// Whether an answer of `ttl` left of `granted` fits `life`: its TTL, and an expiry applied no
/// earlier than the request (allowing for the clocks of the members that kept it).
fn answer_fits_life(
    op: &Op,
    life: &LeaseLife,
    ttl: i64,
    granted: i64,
    timing: &Timing,
    what: &impl Fn() -> String,
) -> Result<(), String> {
    if granted != life.ttl_s || ttl > granted {
        return Err(format!(
            "{}: but the lease was granted TTL {}",
            what(),
            life.ttl_s
        ));
    }
    // A TimeToLive reads the lease table linearizably: an end some member applied before the
    // request was made was committed then, and the answer must know it. (A keepalive may be
    // renewed from the leader's memory: only its clock is judged, below.)
    if matches!(op.request, ClientRequest::LeaseTimeToLive(_)) {
        if let Some(ended_at) = life.ended_at().filter(|end| *end < op.invoked_at) {
            return Err(format!(
                "{}: but the lease's end was applied at {ended_at} ns, before",
                what()
            ));
        }
    }
    if let Some((expired_at, member, _)) = life.expired {
        // The leader that answered saw time left; the one that expired the lease counted on
        // its own clock.
        let since = expired_at.saturating_sub(life.ttl_s as u64 * 1_000 * MS);
        let allowed = clock_allowance(timing, &timekeepers(life, member), since, op.invoked_at);
        if expired_at + allowed < op.invoked_at {
            return Err(format!(
                "{}: but the lease's expiry was applied at {expired_at} ns, before",
                what()
            ));
        }
    }
    Ok(())
}

/// A keepalive answered "not found" (TTL 0), or a TimeToLive (TTL -1), must not be about a
/// lease its client knew alive:
/// one acknowledged (granted or renewed) less than a TTL before the keepalive was answered, and
/// neither revoked nor expired by then. (A leader that answered from a state
/// that had not yet applied the grant another member acknowledged would say so.)
fn check_not_found(op: &Op, lives: &Lives, ops: &[Op], timing: &Timing) -> Result<(), String> {
    let Outcome::Ok {
        response,
        returned_at,
    } = &op.outcome
    else {
        return Ok(());
    };
    let id = match (&op.request, response) {
        (ClientRequest::LeaseKeepAlive(k), ClientResponse::LeaseKeepAlive(a)) if a.ttl == 0 => k.id,
        (ClientRequest::LeaseTimeToLive(t), ClientResponse::LeaseTimeToLive(a)) if a.ttl == -1 => {
            t.id
        }
        _ => return Ok(()),
    };
    let k = LeaseKeepAliveRequest { id };
    let Some(life) = life_at(lives, k.id, op.invoked_at) else {
        return Ok(());
    };
    let ended_by = |at: SimNanos| {
        life.revoked_at.is_some_and(|r| r <= at) || life.expired.is_some_and(|(e, _, _)| e <= at)
    };
    if ended_by(*returned_at) {
        return Ok(());
    }
    let ttl = life.ttl_s as u64 * 1_000 * MS;
    let known_alive = ops
        .iter()
        .filter(|other| {
            other
                .outcome
                .returned_at()
                .is_some_and(|r| r <= op.invoked_at)
        })
        .filter_map(|other| match (&other.request, &other.outcome) {
            (
                ClientRequest::LeaseGrant(_),
                Outcome::Ok {
                    response: ClientResponse::LeaseGrant(g),
                    returned_at,
                },
            ) if g.id == k.id => Some((other.invoked_at, *returned_at)),
            (
                ClientRequest::LeaseKeepAlive(o),
                Outcome::Ok {
                    response: ClientResponse::LeaseKeepAlive(r),
                    returned_at,
                },
            ) if o.id == k.id && r.ttl > 0 => Some((other.invoked_at, *returned_at)),
            _ => None,
        })
        .filter(|(_, returned)| life.granted_at.is_some_and(|g| g <= *returned))
        .map(|(invoked, _)| invoked)
        .max();
    let Some(acked) = known_alive else {
        return Ok(());
    };
    // The leader that answered measured the lease from its estimate, which (as `never_early`
    // allows) may start up to a TTL and two checkpoint intervals before the acknowledgement: a
    // jump ahead its clock took since then brings the expiry forward.
    let measured_from = acked.saturating_sub(ttl + 2 * timing.checkpoint_interval_ns);
    let allowed = timing
        .clock_jumps
        .iter()
        .filter(|(at, _, _)| (measured_from..=*returned_at).contains(at))
        .map(|(_, _, by)| by)
        .sum::<u64>()
        + 2 * timing.drift_ppm_max * (ttl / 1_000_000)
        + MS;
    // The leader may have received the keepalive as late as it answered it (its member was
    // paused, the network slow): the lease must have been alive then, not just when sent.
    if returned_at + allowed < acked + ttl {
        return Err(format!(
            "op {} ({:?}) answered 'not found' at {returned_at} ns, but lease {:x} was \
             acknowledged alive by a request sent at {acked} ns (TTL {}s) and not revoked",
            op.id, op.request, k.id, life.ttl_s
        ));
    }
    Ok(())
}

/// The invocation times of the requests that acknowledged this life of `id` alive: its grant
/// and every keepalive answered with a TTL that returned while it was the id's latest life.
fn acknowledged<'a>(
    id: i64,
    life: &'a LeaseLife,
    lives: &'a Lives,
    ops: &'a [Op],
) -> impl Iterator<Item = SimNanos> + 'a {
    let ours = move |returned_at: SimNanos| {
        life_at(lives, id, returned_at).is_some_and(|l| l.generation == life.generation)
    };
    ops.iter().filter_map(move |op| {
        let Outcome::Ok {
            response,
            returned_at,
        } = &op.outcome
        else {
            return None;
        };
        let acknowledges = match (&op.request, response) {
            (ClientRequest::LeaseGrant(_), ClientResponse::LeaseGrant(g)) => g.id == id,
            (ClientRequest::LeaseKeepAlive(k), ClientResponse::LeaseKeepAlive(r)) => {
                k.id == id && r.ttl > 0
            }
            _ => false,
        };
        (acknowledges && ours(*returned_at)).then_some(op.invoked_at)
    })
}

/// How much earlier than true time the clocks of `members` may measure the time within
/// `[from, to]`: their drift over it, and every jump ahead one of them took.
fn clock_allowance(
    timing: &Timing,
    members: &BTreeSet<MemberId>,
    from: SimNanos,
    to: SimNanos,
) -> u64 {
    let span = to.saturating_sub(from);
    let drift = span as u128 * 2 * timing.drift_ppm_max as u128 / 1_000_000;
    let jumps: u64 = timing
        .clock_jumps
        .iter()
        .filter(|(at, m, _)| members.contains(m) && (from..=to).contains(at))
        .map(|(_, _, by)| by)
        .sum();
    drift as u64 + jumps + MS
}

/// The members whose clocks decided when a life expired: the one that expired it and those
/// that recorded its remaining time.
fn timekeepers(life: &LeaseLife, expirer: MemberId) -> BTreeSet<MemberId> {
    let mut members = life.recorders.clone();
    members.insert(expirer);
    members
}

fn never_early(
    id: i64,
    life: &LeaseLife,
    lives: &Lives,
    expired_at: SimNanos,
    member: MemberId,
    ops: &[Op],
    timing: &Timing,
) -> Result<(), String> {
    let ttl = life.ttl_s as u64 * 1_000 * MS;
    let reach = ttl + 2 * timing.checkpoint_interval_ns;
    for acked in acknowledged(id, life, lives, ops) {
        let keepers = timekeepers(life, member);
        let allowed = clock_allowance(timing, &keepers, acked.saturating_sub(reach), expired_at);
        if expired_at + allowed < acked + ttl {
            return Err(format!(
                "lease {id:x} (TTL {}s) expired early: member {member} revoked it at {expired_at} \
                 ns, but a request sent at {acked} ns was acknowledged ({} ms too early, {} ms \
                 allowed for its clock)",
                life.ttl_s,
                (acked + ttl - expired_at) / MS,
                allowed / MS
            ));
        }
    }
    Ok(())
}

/// The latest moment the leader may have handled a request that kept `id` alive: an answered
/// request reached it before its answer; an unanswered one (or one answered with an error) may
/// have been passed on until the member gave up on it (its time counts from when the member
/// handled it: a paused member, only once it resumed), then spent the longest message delay on
/// the way to a leader that may have been paused too.
fn last_renewal(id: i64, life: &LeaseLife, ops: &[Op], timing: &Timing) -> Option<SimNanos> {
    let granted_at = life.granted_at.unwrap_or(0);
    ops.iter()
        .filter(|op| op.outcome.returned_at().is_none_or(|at| at >= granted_at))
        .filter(|op| match &op.request {
            ClientRequest::LeaseKeepAlive(k) => k.id == id,
            ClientRequest::LeaseGrant(_) => matches!(
                &op.outcome,
                Outcome::Ok { response: ClientResponse::LeaseGrant(g), .. } if g.id == id
            ),
            _ => false,
        })
        .map(|op| match &op.outcome {
            Outcome::Ok { returned_at, .. } => *returned_at,
            Outcome::Err { returned_at, .. } => {
                timing.handled_by_any(*returned_at + timing.message_delay_max_ns)
            }
            Outcome::Unknown => {
                let handled = timing.handled_by(op.member, op.invoked_at);
                let passed_on = handled + timing.request_timeout_ns;
                timing.handled_by_any(passed_on + timing.message_delay_max_ns)
            }
        })
        .max()
}

fn first_index_of_each_term(log: &[AppliedEntry]) -> BTreeMap<u64, u64> {
    let mut starts = BTreeMap::new();
    for entry in log {
        starts.entry(entry.term).or_insert(entry.index);
    }
    starts
}

/// A leader starts a lease's clock from the last record of it applied before its term, counted
/// from when that record reached it, which is no later than when its clocks started: the bound
/// that record carries into `term`.
fn carried_into(
    life: &LeaseLife,
    term: u64,
    term_starts: &BTreeMap<u64, u64>,
    timing: &Timing,
) -> SimNanos {
    let Some(started) = timing.lease_clocks_since.get(&term) else {
        return 0;
    };
    let first = term_starts.get(&term).copied().unwrap_or(u64::MAX);
    let before = life.records.iter().take_while(|(index, _)| *index < first);
    before
        .last()
        .map_or(0, |(_, remaining)| started + remaining)
}

fn bounded(
    id: i64,
    life: &LeaseLife,
    phase_start: SimNanos,
    ops: &[Op],
    term_starts: &BTreeMap<u64, u64>,
    timing: &Timing,
) -> Result<(), String> {
    if life.revoked_at.is_some() {
        return Ok(());
    }
    let ttl = life.ttl_s as u64 * 1_000 * MS;
    let checkpoint = timing.checkpoint_interval_ns;
    let prepay = (ttl / 2).min(checkpoint);
    // A grant applied after the phase began starts the lease's time there.
    let renewed = last_renewal(id, life, ops, timing)
        .unwrap_or(phase_start)
        .max(life.granted_at.unwrap_or(0));
    let Some((expired_at, member, term)) = life.expired else {
        return Err(format!(
            "lease {id:x} (TTL {}s, last renewed by {renewed} ns) was never revoked; the run \
             ended at {} ns",
            life.ttl_s, timing.end
        ));
    };
    let started = timing
        .started_at
        .get(&member)
        .and_then(|starts| starts.iter().filter(|s| **s <= expired_at).max().copied())
        .unwrap_or(0);
    // An expiry proposed just before its leader lost office is committed by a later one: it
    // waits for that leader's election (the last before it was applied).
    let elected = timing
        .leader_since
        .range(term..)
        .map(|(_, (_, at))| *at)
        .filter(|at| *at <= expired_at)
        .max()
        .unwrap_or(0);
    // Records proposed while the cluster could not commit are applied once it can again: the
    // first leader after the faults healed starts their time over.
    let recovered = timing
        .leader_since
        .values()
        .map(|(_, at)| *at)
        .filter(|at| *at >= timing.healed_at)
        .min()
        .unwrap_or(timing.healed_at);
    let span = ttl + prepay + checkpoint;
    let bound = (renewed + span)
        .max(started + ttl + prepay)
        .max(recovered + ttl + prepay)
        .max(elected)
        .max(carried_into(life, term, term_starts, timing))
        + COMMIT_SLACK_NS
        + span * 2 * timing.drift_ppm_max / 1_000_000;
    if expired_at > bound {
        return Err(format!(
            "lease {id:x} (TTL {}s, last renewed by {renewed} ns) outlived its bound: member \
             {member} (started {started} ns) proposed its expiry in term {term}, applied at \
             {expired_at} ns under the leader elected at {elected} ns, {} ms after the bound",
            life.ttl_s,
            (expired_at - bound) / MS
        ));
    }
    Ok(())
}
