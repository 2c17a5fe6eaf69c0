//! etcd's watch guarantees, judged against the applied log (etcd's robustness tests name them):
//!
//! - **ordered**, **unique**, **reliable**: the events a logical watch received, over every
//!   stream it lived on, are exactly a prefix of the events it is owed, in order: every change of
//!   its range (minus its filters) from its start revision on, as the log applied them;
//! - **atomic**: the events of one revision arrive in one response, or in consecutive fragments
//!   of one batch;
//! - **resumable**: a watch created again from the revision after the last it received continues
//!   that prefix (the same check, across streams);
//! - **bookmarkable**: whenever a response says the watch is complete up to a revision (the header
//!   of an event response, a progress notification, a stream-wide progress response), every event
//!   owed up to it was received before;
//! - **prev_kv** and **filters**: each event carries the previous pair when asked (it may lack it
//!   only where compaction took it), and none that the filters leave out;
//! - compaction to a revision keeps only each key's last change in it, as etcd's does: a put
//!   that a later txn branch deleted in the same revision may be missing from a watch that
//!   caught up from the compact revision (the only change of one key twice in a revision that
//!   etcd's duplicate-key rules allow);
//! - an event's `kv` is the change the log made, with create revision equal to mod revision
//!   exactly when its version is 1;
//! - **canceled only for cause**: a watch canceled with `compact_revision` still needed a
//!   revision below it (one it was not yet known complete through), which a compaction the log
//!   applied removed; one canceled without a compaction or a reason was canceled by its client.

use std::collections::BTreeMap;

use detcd::proto::etcdserverpb::watch_create_request::FilterType;
use detcd::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use detcd::proto::mvccpb::{event::EventType, Event, KeyValue};

use crate::history::{AppliedEntry, WatchRequestLog, WatchStreamLog};
use crate::model::kv::KeyEvent;
use crate::model::Model;

/// The key changes of every revision the log made, and the highest compaction it applied,
/// from the reference model.
struct Revisions {
    changes: BTreeMap<i64, Vec<KeyEvent>>,
    compacted: i64,
}

fn replay(log: &[AppliedEntry]) -> Revisions {
    let mut model = Model::default();
    for entry in log {
        if let Some(op) = entry.op() {
            model.apply_as(op, &entry.caller());
        }
    }
    Revisions {
        changes: model.kv().events(),
        compacted: model.kv().compact_main().max(0),
    }
}

/// What a logical watch asked for.
#[derive(Clone, Debug)]
struct Spec {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Spec {
    fn of(request: &WatchCreateRequest) -> Spec {
        let key = if request.key.is_empty() {
            vec![0]
        } else {
            request.key.to_vec()
        };
        let has = |f: FilterType| request.filters.contains(&(f as i32));
        Spec {
            key,
            range_end: request.range_end.to_vec(),
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: request.prev_kv,
        }
    }

    /// etcd's `(key, range_end)` convention, restated.
    fn covers(&self, key: &[u8]) -> bool {
        match &self.range_end[..] {
            [] => key == self.key,
            [0] => key >= &self.key[..],
            end => key >= &self.key[..] && key < end,
        }
    }

    fn wants(&self, change: &KeyEvent) -> bool {
        self.covers(change.key())
            && !(change.deleted && self.no_delete)
            && (change.deleted || !self.no_put)
    }
}

/// One event a watch is owed.
struct Owed {
    revision: i64,
    event: Event,
    /// A later change of the same key in the same revision superseded it: compaction to this
    /// revision drops it.
    superseded: bool,
}

/// One logical watch of one client, followed over every stream it lived on.
struct Watch {
    /// The events it is owed from its start on, computed once its start is known.
    owed: Vec<Owed>,
    /// How many of them it received.
    received: usize,
}

/// Checks every watch of every client; `Err` describes the first broken guarantee.
pub fn check(streams: &[WatchStreamLog], log: &[AppliedEntry]) -> Result<(), String> {
    let revisions = replay(log);
    let mut watches: BTreeMap<(u64, usize), Watch> = BTreeMap::new();
    for stream in streams {
        check_stream(stream, &revisions, &mut watches).map_err(|why| {
            format!(
                "watch stream of client {} on member {} opened at {} ns: {why}",
                stream.client, stream.member, stream.opened_at
            )
        })?;
    }
    Ok(())
}

/// The events a watch of `spec` is owed from `start` on.
fn owed(spec: &Spec, start: i64, revisions: &Revisions) -> Vec<Owed> {
    revisions
        .changes
        .range(start..)
        .flat_map(|(revision, changes)| {
            changes
                .iter()
                .enumerate()
                .filter(|(_, c)| spec.wants(c))
                .map(move |(i, c)| Owed {
                    revision: *revision,
                    event: expected_event(spec, c),
                    superseded: changes[i + 1..].iter().any(|d| d.key() == c.key()),
                })
        })
        .collect()
}

fn expected_event(spec: &Spec, change: &KeyEvent) -> Event {
    Event {
        r#type: if change.deleted {
            EventType::Delete as i32
        } else {
            EventType::Put as i32
        },
        kv: Some(change.kv.clone()),
        prev_kv: if spec.prev_kv {
            change.prev.clone()
        } else {
            None
        },
    }
}

fn check_stream(
    stream: &WatchStreamLog,
    revisions: &Revisions,
    watches: &mut BTreeMap<(u64, usize), Watch>,
) -> Result<(), String> {
    let mut creates = stream.requests.iter().filter_map(|r| match r {
        WatchRequestLog::Create { logical, request } => Some((*logical, request)),
        _ => None,
    });
    let mut live: BTreeMap<i64, Live> = BTreeMap::new();
    let mut cancels_asked: BTreeMap<i64, usize> = BTreeMap::new();
    for request in &stream.requests {
        if let WatchRequestLog::Cancel { watch_id } = request {
            *cancels_asked.entry(*watch_id).or_default() += 1;
        }
    }
    let mut batch: Vec<&WatchResponse> = Vec::new();
    for (at, response) in &stream.responses {
        if response.created {
            let (logical, request) = creates
                .next()
                .ok_or("a created response without a create request")?;
            if !response.canceled {
                let key = (stream.client, logical);
                let header = response.header.as_ref().map_or(0, |h| h.revision);
                let start = match request.start_revision {
                    0 => header + 1,
                    asked => asked,
                };
                watches.entry(key).or_insert_with(|| Watch {
                    owed: owed(&Spec::of(request), start, revisions),
                    received: 0,
                });
                let complete = start - 1;
                live.insert(response.watch_id, Live { key, complete });
            }
            continue;
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        if response.watch_id == -1 {
            for watch in live.values_mut() {
                complete_up_to(&watches[&watch.key], revision, revisions.compacted)
                    .map_err(|why| format!("at {at} ns, a progress response: {why}"))?;
                watch.complete = watch.complete.max(revision);
            }
            continue;
        }
        let Some(watch) = live.get_mut(&response.watch_id) else {
            continue;
        };
        let key = watch.key;
        if response.canceled {
            let asked = cancels_asked.entry(response.watch_id).or_default();
            canceled_for_cause(response, watch.complete, asked, revisions.compacted).map_err(
                |why| {
                    format!(
                        "at {at} ns, watch {} (client's watch {}): {why}",
                        response.watch_id, key.1
                    )
                },
            )?;
            live.remove(&response.watch_id);
            continue;
        }
        batch.push(response);
        if response.fragment {
            continue;
        }
        receive(
            watches.get_mut(&key).expect("created above"),
            &batch,
            revisions,
        )
        .map_err(|why| {
            format!(
                "at {at} ns, watch {} (client's watch {}): {why}",
                response.watch_id, key.1
            )
        })?;
        watch.complete = watch.complete.max(revision);
        batch.clear();
    }
    Ok(())
}

/// A watch live on a stream: its logical watch, and the revision it is known to have received
/// everything through (from its start, and the headers of its responses and of progress).
struct Live {
    key: (u64, usize),
    complete: i64,
}

/// A cancel of a live watch that received everything through `complete`: for compaction, only
/// if a revision it still needed was compacted (etcd cancels a watcher whose next revision is
/// below the compact revision, and serves one at it); without a compaction or a reason, only
/// if its client asked (`asked` counts the client's cancels of that id not yet answered).
fn canceled_for_cause(
    response: &WatchResponse,
    complete: i64,
    asked: &mut usize,
    compacted: i64,
) -> Result<(), String> {
    let compact = response.compact_revision;
    if compact > 0 {
        if compact > compacted {
            return Err(format!(
                "canceled as compacted at {compact}, past every compaction applied ({compacted})"
            ));
        }
        if complete + 1 >= compact {
            return Err(format!(
                "canceled as compacted at {compact}, but it had everything through {complete} \
                 and needed nothing below {compact}"
            ));
        }
        return Ok(());
    }
    if response.cancel_reason.is_empty() {
        if *asked == 0 {
            return Err("canceled, though neither its client nor a compaction asked".into());
        }
        *asked -= 1;
    }
    Ok(())
}

/// Every event owed up to `revision` was received (but those compaction may have dropped).
fn complete_up_to(watch: &Watch, revision: i64, compacted: i64) -> Result<(), String> {
    let mut rest = watch.owed[watch.received..].iter();
    match rest.find(|o| !compacted_away(o, compacted)) {
        Some(next) if next.revision <= revision => Err(format!(
            "claims everything up to revision {revision}, but the event at {} on {:?} never came",
            next.revision,
            next.event
                .kv
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        )),
        _ => Ok(()),
    }
}

/// Whether compaction may have dropped the event: superseded within a compacted revision.
fn compacted_away(owed: &Owed, compacted: i64) -> bool {
    owed.superseded && owed.revision <= compacted
}

/// A batch (a response, or consecutive fragments) must continue the owed events exactly, carry
/// whole revisions, and leave the watch complete up to its header revision.
fn receive(
    watch: &mut Watch,
    batch: &[&WatchResponse],
    revisions: &Revisions,
) -> Result<(), String> {
    let events: Vec<&Event> = batch.iter().flat_map(|r| &r.events).collect();
    let compacted = revisions.compacted;
    for event in &events {
        loop {
            let Some(owed) = watch.owed.get(watch.received) else {
                return Err(format!("got an event it is not owed: {}", show(event)));
            };
            match same_event(event, &owed.event, compacted) {
                Ok(()) => break,
                Err(_) if compacted_away(owed, compacted) => watch.received += 1,
                Err(why) => {
                    return Err(format!(
                        "expected {} at revision {}, got {} ({why})",
                        show(&owed.event),
                        owed.revision,
                        show(event)
                    ))
                }
            }
        }
        check_kv(event)?;
        watch.received += 1;
    }
    // Atomic: the batch ends at a revision boundary.
    let next = watch.owed[watch.received..]
        .iter()
        .find(|o| !compacted_away(o, compacted));
    if let (Some(last), Some(next)) = (events.last(), next) {
        let last_revision = last.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        if next.revision == last_revision {
            return Err(format!("the events of revision {last_revision} were split"));
        }
    }
    let header = batch
        .last()
        .and_then(|r| r.header.as_ref())
        .map_or(0, |h| h.revision);
    complete_up_to(watch, header, compacted).map_err(|why| format!("its header {why}"))
}

fn same_event(got: &Event, owed: &Event, compacted: i64) -> Result<(), &'static str> {
    if got.r#type != owed.r#type || got.kv != owed.kv {
        return Err("another change");
    }
    match (&got.prev_kv, &owed.prev_kv) {
        (a, b) if a == b => Ok(()),
        // Catching up after compaction, the previous pair may be gone.
        (None, Some(prev)) if prev.mod_revision <= compacted => Ok(()),
        _ => Err("another previous pair"),
    }
}

/// etcd's `IsCreate`: a put creates the key exactly when its version is 1.
fn check_kv(event: &Event) -> Result<(), String> {
    let Some(kv) = &event.kv else {
        return Err("an event without its key".into());
    };
    if event.r#type == EventType::Put as i32
        && (kv.version == 1) != (kv.create_revision == kv.mod_revision)
    {
        return Err(format!("inconsistent create revision: {}", show(event)));
    }
    Ok(())
}

fn show(event: &Event) -> String {
    let kv = event.kv.clone().unwrap_or_default();
    let prev = event.prev_kv.as_ref().map(|p: &KeyValue| p.mod_revision);
    format!(
        "{} {:?}@{} v{} (prev {:?})",
        if event.r#type == EventType::Delete as i32 {
            "DELETE"
        } else {
            "PUT"
        },
        String::from_utf8_lossy(&kv.key),
        kv.mod_revision,
        kv.version,
        prev
    )
}
