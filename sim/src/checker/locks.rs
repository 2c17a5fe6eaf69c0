//! What etcd's locks and elections guarantee, judged against the applied log (which orders
//! every revision): the owner of a name at a revision is the key under `<name>/` with the lowest
//! create revision. Checked for every answer a client of the Lock or Election service got:
//!
//! - **told only when it owns**: a Lock answer's key owns its name at the answer's revision; a
//!   Campaign answer's key, with the create revision it reports, leads where the recipe saw it
//!   win; a Leader answer names the owner at its revision, as it was then;
//! - **one holder at a time**: the tenures of the clients told they hold a lock (from the
//!   answer's revision to the deletion of the key) never overlap;
//! - **tenure ends only by unlock, revoke or expiry**: an owner's key is deleted only by a
//!   delete request (Unlock), or with its lease (revoked or expired);
//! - **fencing**: the create revision of each owner is higher than its predecessor's;
//! - **observed leaders**: each leader an Observe stream reports, with its value, led with that
//!   value at some revision between the change it reports and the response's header, and the
//!   headers never go back.
//!
//! This is all a lease-based lock promises. A client whose lease expired while it paused may
//! still believe it holds the lock (Jepsen, etcd #11457): no checker can forbid that belief,
//! which is why a careful client sends the create revision (the fencing token) with its writes.

use std::collections::BTreeMap;

use bytes::Bytes;
use detcd::proto::detcdpb::internal_request;

use crate::history::{AppliedEntry, RecipeLog, RecipeOutcome};
use crate::model::kv::KeyEvent;
use crate::model::Model;

/// What deleted a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Delete,
    Txn,
    LeaseRevoke,
    LeaseExpire,
    Other,
}

/// A name's contenders over the revisions of the log.
#[derive(Default)]
struct Contention {
    /// The live keys by create revision.
    live: BTreeMap<i64, Bytes>,
    /// The owner from each revision on where it changed: (key, create revision).
    owners: BTreeMap<i64, Option<(Bytes, i64)>>,
}

impl Contention {
    fn owner_at(&self, revision: i64) -> Option<&(Bytes, i64)> {
        self.owners
            .range(..=revision)
            .next_back()
            .and_then(|(_, o)| o.as_ref())
    }
}

#[derive(Default)]
struct Contentions {
    names: BTreeMap<Bytes, Contention>,
    /// Every deletion of a contender's key: key -> (revision, cause).
    deletions: BTreeMap<Bytes, Vec<(i64, Cause)>>,
    /// The value of each contender key at each revision it was written.
    values: BTreeMap<Bytes, BTreeMap<i64, Bytes>>,
}

/// The name a contender's key belongs to (`<name>/<lease hex>`), for the names the workload uses.
fn name_of(key: &[u8]) -> Option<Bytes> {
    if !(key.starts_with(b"lock/") || key.starts_with(b"election/")) {
        return None;
    }
    let slash = key.iter().rposition(|b| *b == b'/')?;
    Some(Bytes::copy_from_slice(&key[..slash]))
}

fn replay(log: &[AppliedEntry]) -> Contentions {
    let mut model = Model::default();
    let mut out = Contentions::default();
    for entry in log {
        let Some(op) = entry.op() else {
            continue;
        };
        let cause = match op {
            internal_request::Op::DeleteRange(_) => Cause::Delete,
            internal_request::Op::Txn(_) => Cause::Txn,
            internal_request::Op::LeaseRevoke(_) => Cause::LeaseRevoke,
            internal_request::Op::LeaseExpire(_) => Cause::LeaseExpire,
            _ => Cause::Other,
        };
        let seen = model.kv().change_count();
        model.apply_as(op, &entry.caller());
        for change in model.kv().events_from(seen) {
            out.record(change, cause);
        }
    }
    out
}

impl Contentions {
    fn record(&mut self, change: KeyEvent, cause: Cause) {
        let Some(name) = name_of(change.key()) else {
            return;
        };
        let revision = change.revision;
        let contention = self.names.entry(name).or_default();
        if change.deleted {
            let created = change.prev.as_ref().map_or(0, |kv| kv.create_revision);
            contention.live.remove(&created);
            self.deletions
                .entry(change.key().clone())
                .or_default()
                .push((revision, cause));
        } else {
            contention
                .live
                .insert(change.kv.create_revision, change.kv.key.clone());
            self.values
                .entry(change.key().clone())
                .or_default()
                .insert(revision, change.kv.value.clone());
        }
        let owner = contention
            .live
            .iter()
            .next()
            .map(|(created, key)| (key.clone(), *created));
        contention.owners.insert(revision, owner);
    }

    fn owner(&self, name: &[u8], revision: i64) -> Option<&(Bytes, i64)> {
        self.names.get(name)?.owner_at(revision)
    }

    /// The first deletion of `key` after `revision`.
    fn deleted_after(&self, key: &Bytes, revision: i64) -> Option<(i64, Cause)> {
        self.deletions
            .get(key)?
            .iter()
            .find(|(at, _)| *at > revision)
            .copied()
    }
}

/// How many answers were judged.
#[derive(Debug, Default)]
pub struct Stats {
    pub locks: u64,
    pub wins: u64,
    pub leaders: u64,
}

/// Checks every answer of the Lock and Election services; `Err` names the first broken rule.
pub fn check(logs: &[RecipeLog], log: &[AppliedEntry]) -> Result<Stats, String> {
    let contentions = replay(log);
    check_fencing(&contentions)?;
    let mut stats = Stats::default();
    let mut tenures: BTreeMap<Bytes, Vec<(i64, i64, usize)>> = BTreeMap::new();
    for (i, entry) in logs.iter().enumerate() {
        let observed = check_observed(entry, &contentions);
        let judged = observed.and_then(|n| {
            stats.leaders += n;
            judge(entry, &contentions)
        });
        let judged = judged.map_err(|why| {
            format!(
                "request {i} of client {} at member {}: {why}",
                entry.client, entry.member
            )
        })?;
        match judged {
            Judged::Lock { name, from, until } => {
                stats.locks += 1;
                tenures.entry(name).or_default().push((from, until, i));
            }
            Judged::Won => stats.wins += 1,
            Judged::Leader => stats.leaders += 1,
            Judged::Nothing => {}
        }
    }
    check_one_holder(tenures)?;
    Ok(stats)
}

enum Judged {
    /// A client told it holds `name` from `from` until its key went at `until`.
    Lock {
        name: Bytes,
        from: i64,
        until: i64,
    },
    Won,
    Leader,
    Nothing,
}

fn judge(entry: &RecipeLog, contentions: &Contentions) -> Result<Judged, String> {
    match &entry.outcome {
        RecipeOutcome::Locked { key, revision } => judge_lock(key, *revision, contentions),
        RecipeOutcome::Won { key, rev, won_at } => {
            let name = name_of(key).ok_or("a leader key outside the election")?;
            match contentions.owner(&name, *won_at) {
                Some((owner, created)) if owner == key && created == rev => Ok(Judged::Won),
                other => Err(format!(
                    "told it leads with {key:?} (rev {rev}) at revision {won_at}, where the \
                     leader is {other:?}"
                )),
            }
        }
        RecipeOutcome::Leader { revision, kv } => {
            let name = name_of(&kv.key).ok_or("a leader key outside the election")?;
            let owner = contentions.owner(&name, *revision);
            let value = contentions
                .values
                .get(&kv.key)
                .and_then(|v| v.range(..=revision).next_back())
                .map(|(_, value)| value);
            if owner != Some(&(kv.key.clone(), kv.create_revision)) || value != Some(&kv.value) {
                return Err(format!(
                    "told the leader is {:?} = {:?} at revision {revision}, where the leader \
                     is {owner:?} and that key held {value:?}",
                    kv.key, kv.value
                ));
            }
            Ok(Judged::Leader)
        }
        _ => Ok(Judged::Nothing),
    }
}

fn judge_lock(key: &Bytes, revision: i64, contentions: &Contentions) -> Result<Judged, String> {
    let name = name_of(key).ok_or("a lock key outside the workload's names")?;
    let owner = contentions.owner(&name, revision);
    if owner.map(|(k, _)| k) != Some(key) {
        return Err(format!(
            "told it holds {key:?} at revision {revision}, where the owner is {owner:?}"
        ));
    }
    let until = match contentions.deleted_after(key, revision) {
        None => i64::MAX,
        Some((at, Cause::Delete | Cause::LeaseRevoke | Cause::LeaseExpire)) => at,
        Some((at, cause)) => {
            return Err(format!(
                "the tenure of {key:?} ended at revision {at} by {cause:?}, not by unlock, \
                 revoke or expiry"
            ))
        }
    };
    Ok(Judged::Lock {
        name,
        from: revision,
        until,
    })
}

/// Every leader an Observe stream reported led, with the value reported, at some revision
/// between its change and the response's header; headers never go back.
fn check_observed(entry: &RecipeLog, contentions: &Contentions) -> Result<u64, String> {
    let mut last = 0;
    for (n, observed) in entry.observed.iter().enumerate() {
        let header = observed.header.as_ref().map_or(0, |h| h.revision);
        let kv = observed.kv.clone().unwrap_or_default();
        let name = name_of(&kv.key).ok_or("an observed key outside the election")?;
        if header < last || !contentions.led_between(&name, &kv, kv.mod_revision, header) {
            return Err(format!(
                "observed leader {n}: {:?} = {:?} (created {}, modified {}) reported at \
                 revision {header} (previous report at {last}) never led with that value then",
                kv.key, kv.value, kv.create_revision, kv.mod_revision
            ));
        }
        last = header;
    }
    Ok(entry.observed.len() as u64)
}

impl Contentions {
    /// Whether `kv` (its key, create revision and value) owned `name` at some revision in
    /// `from..=to`.
    fn led_between(
        &self,
        name: &[u8],
        kv: &detcd::proto::mvccpb::KeyValue,
        from: i64,
        to: i64,
    ) -> bool {
        let Some(contention) = self.names.get(name) else {
            return false;
        };
        let changes = contention
            .owners
            .range(from + 1..)
            .map(|(at, _)| *at)
            .take_while(|at| *at <= to);
        std::iter::once(from).chain(changes).any(|at| {
            let owns = contention.owner_at(at) == Some(&(kv.key.clone(), kv.create_revision));
            let value = self
                .values
                .get(&kv.key)
                .and_then(|v| v.range(..=at).next_back())
                .map(|(_, value)| value);
            owns && value == Some(&kv.value)
        })
    }
}

/// Tenures of one lock never overlap (a key told twice, to the same session, is one tenure).
fn check_one_holder(tenures: BTreeMap<Bytes, Vec<(i64, i64, usize)>>) -> Result<(), String> {
    for (name, mut held) in tenures {
        held.sort();
        for pair in held.windows(2) {
            let ((from, until, a), (next, _, b)) = (pair[0], pair[1]);
            if next < until && from != next {
                return Err(format!(
                    "lock {name:?}: request {a} held it over revisions {from}..{until} and \
                     request {b} was told it holds it at {next}"
                ));
            }
        }
    }
    Ok(())
}

/// Each new owner of a name was created after its predecessor.
fn check_fencing(contentions: &Contentions) -> Result<(), String> {
    for (name, contention) in &contentions.names {
        let mut last = 0;
        for (revision, owner) in &contention.owners {
            if let Some((_, created)) = owner {
                if *created < last {
                    return Err(format!(
                        "{name:?}: the owner from revision {revision} was created at {created}, \
                         before its predecessor ({last})"
                    ));
                }
                last = *created;
            }
        }
    }
    Ok(())
}
