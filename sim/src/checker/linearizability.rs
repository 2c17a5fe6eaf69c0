//! Linearizability of a client history against etcd's KV semantics, decided by verifying a
//! witness instead of searching for one, so the answer is never "unknown" and the cost is
//! O(n log n) plus two replays of the log.
//!
//! The witness is the applied log: in etcd the log order *is* the linearization order of writes.
//! The check:
//! 1. maps every log entry to the client op whose proposal it carries (an entry nobody proposed
//!    is a phantom write; a proposal applied twice is a duplicate apply);
//! 2. replays the log on a fresh [`KeySpace`] and compares every write's definite answer with
//!    the replayed one (ignoring the header fields that name who answered); an acknowledged
//!    write missing from the log is lost; a definite error for a write that is not in the log
//!    must be one a member answers before proposing; an indeterminate write may be either way;
//! 3. places every op on one line in doubled coordinates (see [`Point`]): a write at its log
//!    index, a linearizable read anywhere the store had the revision its answer carries, and
//!    checks real time with one sweep over invocations and returns;
//! 4. replays the log again, evaluating each read on the model where it was placed.
//!
//! Reads never enter the log, so their only witness is the revision in their answer; a read
//! answered with a revision error carries no header and is placed where the model gives that
//! error (see `timeline`).

mod auth_reads;
mod report;
mod requests;
mod timeline;

pub use report::{OpRef, Point, RequestSummary, Stats, Violation};
pub use requests::{normalized_answer, Answer};

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use detcd::auth::AuthInfo;
use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::authpb::Permission;
use detcd::proto::detcdpb::internal_request;
use detcd::proto::etcdserverpb::{alarm_request::AlarmAction, RangeRequest};
use detcd::proto::mvccpb::KeyValue;
use detcd::state::State;
use prost::Message as _;

use crate::history::{AppliedEntry, Op, Outcome, SimNanos};
use crate::model::{Applied, Model};
use auth_reads::{check_auth_reads, check_read_permissions, AuthStores, Windows};
use requests::{Class, WriteKind};
use timeline::Timeline;

/// Checks `ops` against `log`, the longest applied sequence of any member (index order, from
/// index 1), on members whose `--max-range-bytes` is `range_bytes_max`. Returns the first
/// violation found, or what was checked.
pub fn check(
    ops: &[Op],
    log: &[AppliedEntry],
    initial: &State,
    range_bytes_max: u64,
) -> Result<Stats, Violation> {
    let mut stats = Stats {
        revisions: vec![1],
        ..Stats::default()
    };
    let proposals = index_proposals(ops)?;
    let model = Model::bootstrap(initial.members().list(), range_bytes_max);
    let replay = replay_writes(ops, log, initial, model, &proposals, &mut stats)?;
    let plan = plan(ops, &replay, &mut stats)?;
    let mut reads = order_in_real_time(ops, &plan.ordered, &replay)?;
    reads.extend(plan.unordered_reads);
    let (lease_reads, reads): (Vec<_>, Vec<_>) = reads
        .into_iter()
        .partition(|(_, slot)| matches!(ops[*slot].request, ClientRequest::LeaseLeases(_)));
    check_lease_reads(ops, &replay, lease_reads)?;
    check_member_lists(ops, &replay)?;
    let windows = Windows::new(ops, &replay, log.len() as u64);
    check_auth_reads(ops, &replay, &windows)?;
    check_read_permissions(ops, &replay, &windows)?;
    evaluate_reads(ops, &replay, reads)?;
    let hash = replay.model.kv().hash_kv(0).ok();
    stats.final_hash = hash.map(|(hash, _)| (log.len() as u64, hash));
    Ok(stats)
}

/// Which op (by slot in `ops`) each proposal belongs to.
fn index_proposals(ops: &[Op]) -> Result<BTreeMap<(MemberId, u64), usize>, Violation> {
    let mut proposals = BTreeMap::new();
    for (slot, op) in ops.iter().enumerate() {
        let Some(proposal) = op.proposal else {
            continue;
        };
        if let Some(first) = proposals.insert(proposal, slot) {
            return Err(Violation::ProposalClaimedTwice {
                first: OpRef::of(&ops[first]),
                second: OpRef::of(op),
            });
        }
    }
    Ok(proposals)
}

/// The client request an entry carries. Leader no-ops have no data; configuration changes do
/// not decode as a request with an operation; the node skips both, and so do we.
fn decode(entry: &AppliedEntry) -> Option<(MemberId, u64, &internal_request::Op)> {
    let request = entry.request()?;
    Some((request.origin, request.request_id, request.op.as_ref()?))
}

/// What the first replay established.
struct Replay {
    /// The log index each op (by slot) was applied at.
    position: Vec<Option<u64>>,
    timeline: Timeline,
    /// The set of lease ids after each log position, as a digest: leases change without a new
    /// revision, so a lease read's revision does not pin its position.
    lease_digests: Vec<u64>,
    /// The reference model after the whole log: it keeps every revision, so it serves a read
    /// placed at any position.
    model: Model,
    /// Every member list the cluster had, encoded.
    member_lists: BTreeSet<Vec<u8>>,
    /// Every auth store the cluster had, in log order.
    auth_stores: AuthStores,
}

/// A member list as bytes, to compare lists without a total order on members.
fn encode_members(members: &[detcd::proto::etcdserverpb::Member]) -> Vec<u8> {
    members
        .iter()
        .flat_map(|m| m.encode_length_delimited_to_vec())
        .collect()
}

/// A digest of a set of lease ids, in ascending order.
fn lease_digest(ids: impl Iterator<Item = i64>) -> u64 {
    ids.fold(0xcbf2_9ce4_8422_2325, |h, id| {
        (h ^ id as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Replays the log on the reference model, tying each entry to its op and checking each
/// definite write answer against the model's. The core's `State` replays it alongside: it
/// answers what the model leaves to it (members, alarms), must agree with the model on the rest,
/// and must keep its own invariants.
fn replay_writes(
    ops: &[Op],
    log: &[AppliedEntry],
    initial: &State,
    model: Model,
    proposals: &BTreeMap<(MemberId, u64), usize>,
    stats: &mut Stats,
) -> Result<Replay, Violation> {
    let mut state = initial.clone();
    let mut replay = Replay {
        position: vec![None; ops.len()],
        timeline: Timeline::new(),
        lease_digests: vec![lease_digest(std::iter::empty())],
        member_lists: BTreeSet::from([encode_members(&initial.members().list())]),
        auth_stores: AuthStores::new(model.auth().clone()),
        model,
    };
    for (i, entry) in log.iter().enumerate() {
        let index = i as u64 + 1;
        if entry.index != index {
            return Err(Violation::LogNotContiguous {
                position: index,
                index: entry.index,
            });
        }
        match decode(entry) {
            Some((origin, id, op))
                if requests::is_internal(op)
                    || requests::raised_by_member(op, proposals.contains_key(&(origin, id))) =>
            {
                let _ = requests::apply(&mut state, op, &entry.caller());
                if let Applied::Answered(Some(answer)) = replay.model.apply_as(op, &entry.caller())
                {
                    if answer.is_err() {
                        stats.failed_entries.insert(index);
                    }
                }
                if let internal_request::Op::Alarm(alarm) = op {
                    match AlarmAction::try_from(alarm.action) {
                        Ok(AlarmAction::Activate) => stats.nospace_raised += 1,
                        _ => stats.nospace_cleared += 1,
                    }
                }
            }
            Some((origin, request_id, op)) => {
                stats.log_requests += 1;
                let slot = proposals.get(&(origin, request_id)).copied().ok_or(
                    Violation::PhantomWrite {
                        index,
                        origin,
                        request_id,
                    },
                )?;
                claim(&ops[slot], op, &mut replay.position[slot], index)?;
                let caller = entry.caller();
                check_identity(&ops[slot], &caller, index)?;
                let expected = apply_judged(&mut state, &mut replay.model, op, &caller, index)?;
                if expected.is_err() {
                    stats.failed_entries.insert(index);
                }
                check_write_answer(&ops[slot], index, expected, stats)?;
            }
            None => {}
        }
        check_state(&state, index)?;
        if entry_changes_members(entry) {
            let list = replay.model.members().list();
            replay.member_lists.insert(encode_members(&list));
        }
        replay.auth_stores.after(index, replay.model.auth());
        let kv = replay.model.kv();
        replay.timeline.push(kv.current(), kv.compact_main());
        stats.revisions.push(kv.current());
        replay
            .lease_digests
            .push(lease_digest(replay.model.lease_ids()));
    }
    check_final_state(&state, &replay.model, log.len() as u64)?;
    Ok(replay)
}

/// Applies a client's entry to the core and to the model; returns the answer the client must
/// have got.
fn apply_judged(
    state: &mut State,
    model: &mut Model,
    op: &internal_request::Op,
    caller: &AuthInfo,
    index: u64,
) -> Result<Answer, Violation> {
    let core = requests::apply(state, op, caller).expect("a client's op answers");
    match model.apply_as(op, caller) {
        Applied::NotModeled => Ok(core),
        Applied::Answered(Some(mut expected)) => {
            if requests::normalized_answer(&core) != *expected {
                return Err(Violation::CoreDisagreesWithModel {
                    index,
                    what: format!("the core answers {core:?}, the model {expected:?}"),
                });
            }
            // The member that made a simple token names it after its entry (a JWT login's
            // answer carries none: the server signs one).
            if let Ok(ClientResponse::Authenticate(r)) = expected.as_mut() {
                if !r.token.is_empty() {
                    r.token = format!("{}.{index}", r.token);
                }
            }
            Ok(*expected)
        }
        Applied::Answered(None) => unreachable!("the model answers every client's op"),
    }
}

/// The core's auth store holds what the model's does: the switch, the revision, each user's
/// password hash and roles, each role's permissions.
fn check_final_auth(state: &State, model: &Model, index: u64) -> Result<(), Violation> {
    let (core, expected) = (state.auth(), model.auth());
    let users: Vec<(String, String, Vec<String>)> = core
        .users()
        .map(|u| {
            let name = String::from_utf8_lossy(&u.name).into_owned();
            (
                name,
                String::from_utf8_lossy(&u.password).into_owned(),
                u.roles.clone(),
            )
        })
        .collect();
    let model_users: Vec<(String, String, Vec<String>)> = expected
        .users
        .iter()
        .map(|(name, u)| {
            (
                name.clone(),
                u.password.clone(),
                u.roles.iter().cloned().collect(),
            )
        })
        .collect();
    let mut roles: Vec<(String, Vec<Permission>)> = core
        .roles()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.name).into_owned(),
                r.key_permission.clone(),
            )
        })
        .collect();
    for (_, perms) in &mut roles {
        perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
    }
    let model_roles: Vec<(String, Vec<Permission>)> = expected
        .roles
        .keys()
        .map(|name| (name.clone(), expected.permissions(name).unwrap_or_default()))
        .collect();
    let core_switch = (core.is_enabled(), core.revision());
    let model_switch = (expected.enabled, expected.revision);
    if (core_switch, &users, &roles) != (model_switch, &model_users, &model_roles) {
        return Err(Violation::CoreDisagreesWithModel {
            index,
            what: format!(
                "the core's auth store is {core_switch:?} {users:?} {roles:?}, the model's \
                 {model_switch:?} {model_users:?} {model_roles:?}"
            ),
        });
    }
    Ok(())
}

fn entry_changes_members(entry: &AppliedEntry) -> bool {
    matches!(
        decode(entry),
        Some((_, _, internal_request::Op::MemberChange(_)))
    )
}

/// A member answers MemberList from its own applied state: every list a client got must be one
/// the cluster had at some point of the log.
fn check_member_lists(ops: &[Op], replay: &Replay) -> Result<(), Violation> {
    for op in ops {
        if let Outcome::Ok {
            response: ClientResponse::MemberList(answer),
            ..
        } = &op.outcome
        {
            if !replay
                .member_lists
                .contains(&encode_members(&answer.members))
            {
                return Err(Violation::WrongMemberList {
                    read: OpRef::of(op),
                });
            }
        }
    }
    Ok(())
}

/// After the whole log, the core's key space, leases and members are the model's.
fn check_final_state(state: &State, model: &Model, index: u64) -> Result<(), Violation> {
    let everything = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    };
    let core_kvs = state.kv().range(&everything).map(|r| r.kvs);
    let model_kvs: Vec<KeyValue> = model.kv().keys().values().cloned().collect();
    if core_kvs.as_ref() != Ok(&model_kvs) {
        return Err(Violation::CoreDisagreesWithModel {
            index,
            what: format!("the core holds {core_kvs:?}, the model {model_kvs:?}"),
        });
    }
    let (core_members, model_members) = (state.members().list(), model.members().list());
    if core_members != model_members {
        return Err(Violation::CoreDisagreesWithModel {
            index,
            what: format!("the core has members {core_members:?}, the model {model_members:?}"),
        });
    }
    let core_alarms: Vec<(u64, i32)> = state
        .alarms()
        .list()
        .iter()
        .map(|a| (a.member_id, a.alarm))
        .collect();
    let model_alarms: Vec<(u64, i32)> = model.alarms().collect();
    if core_alarms != model_alarms {
        return Err(Violation::CoreDisagreesWithModel {
            index,
            what: format!("the core has alarms {core_alarms:?}, the model {model_alarms:?}"),
        });
    }
    check_final_auth(state, model, index)?;
    let core_leases: Vec<i64> = state.leases().iter().map(|(id, _)| id).collect();
    let model_leases: Vec<i64> = model.lease_ids().collect();
    if core_leases != model_leases {
        return Err(Violation::CoreDisagreesWithModel {
            index,
            what: format!("the core holds leases {core_leases:?}, the model {model_leases:?}"),
        });
    }
    Ok(())
}

/// Records that `op` took effect at `index`: once, and with the request the client sent.
fn claim(
    op: &Op,
    entry_op: &internal_request::Op,
    position: &mut Option<u64>,
    index: u64,
) -> Result<(), Violation> {
    if let Some(first_index) = *position {
        return Err(Violation::DuplicateApply {
            op: OpRef::of(op),
            first_index,
            second_index: index,
        });
    }
    if !requests::same_request(entry_op, &op.request) {
        return Err(Violation::EntryMismatch {
            op: OpRef::of(op),
            index,
        });
    }
    *position = Some(index);
    Ok(())
}

/// An entry identified (auth on at admission, revision not 0) acts as the user the op's
/// credentials name, and a JWT's identity at the token's own revision, however far the store
/// has moved since (the store then refuses it as old).
fn check_identity(op: &Op, caller: &detcd::auth::AuthInfo, index: u64) -> Result<(), Violation> {
    let Some(user) = &op.acting_as else {
        return Ok(());
    };
    let identified = caller.revision != 0;
    let signed_right = op.signed_at.is_none_or(|at| at == caller.revision);
    if identified && (caller.user != *user || !signed_right) {
        return Err(Violation::WrongIdentity {
            op: OpRef::of(op),
            index,
            entry: format!("{:?} at auth revision {}", caller.user, caller.revision),
        });
    }
    Ok(())
}

/// A write in the log answered exactly what applying it there gives (errors included); an
/// indeterminate one just took effect.
fn check_write_answer(
    op: &Op,
    index: u64,
    expected: Answer,
    stats: &mut Stats,
) -> Result<(), Violation> {
    let observed = match &op.outcome {
        outcome if outcome.is_indeterminate() => {
            stats.indeterminate_applied += 1;
            return Ok(());
        }
        Outcome::Ok { response, .. } => Ok(requests::normalized(response)),
        Outcome::Err { error, .. } => Err(error.clone()),
        Outcome::Unknown => unreachable!("an unknown outcome is indeterminate"),
    };
    if observed != expected {
        return Err(Violation::WrongWriteAnswer {
            op: OpRef::of(op),
            index,
            expected: Box::new(expected),
            observed: Box::new(observed),
        });
    }
    match requests::classify(&op.request) {
        Class::Write(WriteKind::Put) => stats.puts += 1,
        Class::Write(WriteKind::Delete) => stats.deletes += 1,
        Class::Write(WriteKind::Txn) => stats.write_txns += 1,
        Class::Write(WriteKind::Compact) => stats.compactions += 1,
        Class::Write(WriteKind::LeaseGrant | WriteKind::LeaseRevoke) => stats.lease_writes += 1,
        Class::Write(WriteKind::Membership | WriteKind::Alarm) => stats.member_changes += 1,
        Class::Write(WriteKind::Auth) => stats.auth_changes += 1,
        Class::Read { .. } | Class::LeaseClock | Class::Local => {
            unreachable!("the entry carries this op's request, a write")
        }
    }
    Ok(())
}

/// Where an op may sit on the line of [`Point`]s.
enum Place {
    /// A write in the log: exactly at its index.
    Write(Point),
    /// A read answered at `revision`: anywhere after the entries `first..=last`.
    Revision {
        revision: i64,
        first: u64,
        last: u64,
    },
    /// A read answered with an error of the store (revision checks, the range bound):
    /// wherever the store gives that error.
    StoreError(EtcdError),
}

/// An op that real time constrains.
struct Ordered {
    slot: usize,
    place: Place,
    /// When its answer reached the client; None for an indeterminate write.
    returned_at: Option<SimNanos>,
}

struct Plan {
    ordered: Vec<Ordered>,
    /// Serializable reads, with the position their answer is checked at.
    unordered_reads: Vec<(u64, usize)>,
}

/// Sorts every op into what real time constrains, what was checked already, and what needs no
/// check; checks the writes that are not in the log on the way.
fn plan(ops: &[Op], replay: &Replay, stats: &mut Stats) -> Result<Plan, Violation> {
    let mut plan = Plan {
        ordered: Vec::new(),
        unordered_reads: Vec::new(),
    };
    for (slot, op) in ops.iter().enumerate() {
        match requests::classify(&op.request) {
            Class::Write(_) => match replay.position[slot] {
                Some(index) => plan.ordered.push(Ordered {
                    slot,
                    place: Place::Write(Point(2 * index)),
                    returned_at: (!op.outcome.is_indeterminate())
                        .then(|| op.outcome.returned_at())
                        .flatten(),
                }),
                None => check_unapplied_write(op, stats)?,
            },
            Class::Read { linearizable } => {
                plan_read(slot, op, linearizable, replay, &mut plan, stats)?
            }
            // The lease checker judges what the leader's clocks answered; the membership checks
            // what members answer from their own raft state.
            Class::LeaseClock | Class::Local => {}
        }
    }
    Ok(plan)
}

/// A write that never took effect: it must not have been acknowledged, and a definite error
/// must be one the member answers before proposing.
fn check_unapplied_write(op: &Op, stats: &mut Stats) -> Result<(), Violation> {
    let error = match &op.outcome {
        outcome if outcome.is_indeterminate() => {
            stats.indeterminate_absent += 1;
            return Ok(());
        }
        Outcome::Ok { .. } => return Err(Violation::LostWrite { op: OpRef::of(op) }),
        Outcome::Err { error, .. } => error,
        Outcome::Unknown => unreachable!("an unknown outcome is indeterminate"),
    };
    let why = if op.proposal.is_some() {
        // Once proposed, only the apply of its entry answers a write with a definite error.
        "the write was proposed and answered with a definite error, but never applied"
    } else if !requests::refused_before_proposing(&op.request, error) {
        "a member answers this error to this request only when applying it, yet it is not in \
         the log"
    } else {
        stats.refused += 1;
        return Ok(());
    };
    Err(Violation::UnexplainedError {
        op: OpRef::of(op),
        why,
    })
}

fn plan_read(
    slot: usize,
    op: &Op,
    linearizable: bool,
    replay: &Replay,
    plan: &mut Plan,
    stats: &mut Stats,
) -> Result<(), Violation> {
    let timeline = &replay.timeline;
    let (place, returned_at) = match &op.outcome {
        outcome if outcome.is_indeterminate() => {
            stats.indeterminate_reads += 1;
            return Ok(());
        }
        Outcome::Ok {
            response,
            returned_at,
        } => (read_span(op, response, timeline)?, *returned_at),
        Outcome::Err { error, returned_at } if requests::is_store_error(error) => {
            (Place::StoreError(error.clone()), *returned_at)
        }
        Outcome::Err { error, .. } if requests::refused_before_proposing(&op.request, error) => {
            stats.refused += 1;
            return Ok(());
        }
        Outcome::Err { .. } => {
            return Err(Violation::UnexplainedError {
                op: OpRef::of(op),
                why: "a read gets no such error",
            })
        }
        Outcome::Unknown => unreachable!("an unknown outcome is indeterminate"),
    };
    if linearizable {
        stats.linearizable_reads += 1;
        plan.ordered.push(Ordered {
            slot,
            place,
            returned_at: Some(returned_at),
        });
    } else {
        // A serializable read may come from any member however far behind, so real time says
        // nothing; its answer must still be the store's at some point of the log.
        stats.serializable_reads += 1;
        let at = match place {
            Place::Revision { first, .. } => first,
            Place::StoreError(error) => earliest_error(op, &error, 0, replay).unwrap_or(0),
            Place::Write(_) => unreachable!("reads are never in the log"),
        };
        plan.unordered_reads.push((at, slot));
    }
    Ok(())
}

/// The positions a read answered at the revision of `response` may occupy.
fn read_span(
    op: &Op,
    response: &detcd::node::ClientResponse,
    timeline: &Timeline,
) -> Result<Place, Violation> {
    let revision = response.revision().unwrap_or(0);
    let (first, last) =
        timeline
            .positions_at(revision)
            .ok_or_else(|| Violation::UnknownRevision {
                read: OpRef::of(op),
                revision,
                last_revision: timeline.last_revision(),
            })?;
    Ok(Place::Revision {
        revision,
        first,
        last,
    })
}

/// Checks real-time order and chooses each linearizable read's position: one sweep over
/// invocations and returns in time order, invocations first at equal times (ops that touch in
/// time are concurrent). It keeps the latest point of any op returned so far; every op invoked
/// later must sit at or after it.
///
/// Choosing each read's earliest admissible position is optimal: a constraint is always "an op
/// that returned before B was invoked sits at or before B", writes' points are fixed, and a read
/// affects others only by raising the latest point once it returns. The earliest choice raises
/// it least, so if any placement satisfies every constraint, the greedy one does. A read
/// answered with data gives the same answer anywhere its revision was current (compaction
/// changes only which past revisions fail), so its position never changes its answer; a read
/// answered with a revision error goes to the earliest position where that error holds.
///
/// Returns the chosen position of every read, for [`evaluate_reads`].
fn order_in_real_time(
    ops: &[Op],
    ordered: &[Ordered],
    replay: &Replay,
) -> Result<Vec<(u64, usize)>, Violation> {
    let mut events: Vec<(SimNanos, bool, usize)> = Vec::with_capacity(2 * ordered.len());
    for (i, o) in ordered.iter().enumerate() {
        events.push((ops[o.slot].invoked_at, false, i));
        if let Some(t) = o.returned_at {
            events.push((t, true, i));
        }
    }
    events.sort_unstable();
    let mut chosen: Vec<Point> = vec![Point(0); ordered.len()];
    // The latest point of an op returned so far, and which op (by index in `ordered`).
    let mut latest: Option<(Point, usize)> = None;
    for (_, is_return, i) in events {
        if is_return {
            if latest.is_none_or(|(point, _)| chosen[i] > point) {
                latest = Some((chosen[i], i));
            }
            continue;
        }
        chosen[i] = place_at_invocation(ops, &ordered[i], latest, ordered, replay)?;
    }
    let reads = ordered
        .iter()
        .zip(&chosen)
        .filter(|(o, _)| !matches!(o.place, Place::Write(_)))
        .map(|(o, point)| (point.0 / 2, o.slot))
        .collect();
    Ok(reads)
}

/// Where `o` sits, given that it must not precede `latest`, the latest point of an op that
/// returned before `o` was invoked.
fn place_at_invocation(
    ops: &[Op],
    o: &Ordered,
    latest: Option<(Point, usize)>,
    ordered: &[Ordered],
    replay: &Replay,
) -> Result<Point, Violation> {
    let floor = latest.map_or(Point(0), |(point, _)| point);
    let before = || {
        let (_, i) = latest.expect("a floor above 0 comes from a returned op");
        OpRef::of(&ops[ordered[i].slot])
    };
    // A read after log index q sits at 2q + 1, which is at or after the floor from q = floor / 2.
    let from = floor.0 / 2;
    match &o.place {
        Place::Write(point) if *point < floor => Err(Violation::RealTimeInversion {
            earlier: before(),
            earlier_at: floor,
            later: OpRef::of(&ops[o.slot]),
            later_at: *point,
        }),
        Place::Write(point) => Ok(*point),
        Place::Revision {
            revision,
            first,
            last,
        } => {
            let q = from.max(*first);
            if q > *last {
                return Err(Violation::StaleRead {
                    read: OpRef::of(&ops[o.slot]),
                    revision: *revision,
                    last_at: Point(2 * last + 1),
                    after: before(),
                    after_at: floor,
                });
            }
            Ok(Point(2 * q + 1))
        }
        Place::StoreError(error) => {
            // Nowhere: keep the floor, and the evaluation reports what the store answers there.
            let q = earliest_error(&ops[o.slot], error, from, replay).unwrap_or(from);
            Ok(Point(2 * q + 1))
        }
    }
}

/// The earliest position from `from` on where the model answers the read `op` with `error`.
/// For a plain Range the timeline knows it exactly. In a txn the branch its compares take
/// decides which ranges run, so from the first position where one of them could fail, positions
/// are tried in turn until the model gives the error (the first candidate if it never does:
/// the evaluation then reports the difference).
fn earliest_error(op: &Op, error: &EtcdError, from: u64, replay: &Replay) -> Option<u64> {
    let answers_error = |q: &u64| {
        let answer = replay
            .model
            .read_at(&op.request, replay.timeline.moment(*q));
        answer.as_ref().err() == Some(error)
    };
    // The bound on a range's size depends on what the keys hold, not on revisions alone.
    if *error == EtcdError::RangeTooLarge {
        return (from..replay.timeline.positions())
            .find(answers_error)
            .or(Some(from));
    }
    let checks = requests::revision_checks(&op.request);
    let first = replay.timeline.earliest_error(&checks, error, from)?;
    if !matches!(op.request, ClientRequest::Txn(_)) {
        return Some(first);
    }
    (first..replay.timeline.positions())
        .find(answers_error)
        .or(Some(first))
}

/// Checks every read where it was placed: `(q, slot)` means "after the entry at log index q"
/// (0: the empty store), where the model serves it.
fn evaluate_reads(ops: &[Op], replay: &Replay, reads: Vec<(u64, usize)>) -> Result<(), Violation> {
    for (q, slot) in reads {
        check_read(&ops[slot], q, replay)?;
    }
    Ok(())
}

/// The replayed state keeps its own invariants after every entry: in particular, no key
/// outlives its lease (every live key's lease exists) and a revocation takes every key of the
/// lease with it.
fn check_state(state: &State, index: u64) -> Result<(), Violation> {
    state
        .leases()
        .check_against(state.kv())
        .map_err(|why| Violation::StateBroken { index, why })
}

/// A lease read (LeaseLeases) lists the leases of some position from where real time placed it
/// to the last position at its answer's revision: leases come and go without a revision.
fn check_lease_reads(
    ops: &[Op],
    replay: &Replay,
    reads: Vec<(u64, usize)>,
) -> Result<(), Violation> {
    for (q, slot) in reads {
        let op = &ops[slot];
        let Outcome::Ok {
            response: ClientResponse::LeaseLeases(answer),
            ..
        } = &op.outcome
        else {
            continue;
        };
        let mut ids: Vec<i64> = answer.leases.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let digest = lease_digest(ids.into_iter());
        let revision = answer.header.as_ref().map_or(0, |h| h.revision);
        let last = replay
            .timeline
            .positions_at(revision)
            .map_or(q, |(_, last)| last);
        let seen = (q..=last.max(q)).any(|p| replay.lease_digests.get(p as usize) == Some(&digest));
        if !seen {
            return Err(Violation::WrongLeaseList {
                read: OpRef::of(op),
                from: Point(2 * q + 1),
                to: Point(2 * last + 1),
            });
        }
    }
    Ok(())
}

fn check_read(op: &Op, q: u64, replay: &Replay) -> Result<(), Violation> {
    let observed = match &op.outcome {
        Outcome::Ok { response, .. } => Ok(requests::normalized(response)),
        Outcome::Err { error, .. } => Err(error.clone()),
        Outcome::Unknown => unreachable!("only answered reads are evaluated"),
    };
    let at = replay.timeline.moment(q);
    let expected = replay.model.read_at(&op.request, at);
    if observed != expected {
        return Err(Violation::WrongReadAnswer {
            read: OpRef::of(op),
            at: Point(2 * q + 1),
            revision: at.current,
            expected: Box::new(expected),
            observed: Box::new(observed),
        });
    }
    Ok(())
}
