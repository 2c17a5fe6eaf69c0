//! What the linearizability checker reports: counts when the history passes, and otherwise the
//! first violation found, naming every op involved (id, client, member, times) and what was
//! expected against what was observed, so a failing seed reads without a debugger.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::etcdserverpb::response_op::Response;
use detcd::proto::mvccpb::KeyValue;

use super::requests::Answer;
use crate::history::{Op, SimNanos};

/// What a passing history held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Log entries that carry a client request.
    pub log_requests: u64,
    /// Writes with a definite answer, checked against the replay of the log.
    pub puts: u64,
    pub deletes: u64,
    pub write_txns: u64,
    pub compactions: u64,
    /// Lease grants and revocations, checked like the other writes.
    pub lease_writes: u64,
    /// Membership changes and alarms, checked like the other writes.
    pub member_changes: u64,
    pub auth_changes: u64,
    /// Alarm changes the members made on their own: NOSPACE raised and cleared.
    pub nospace_raised: u64,
    pub nospace_cleared: u64,
    /// The model's HashKV after the whole log, with the log's length: every member that applied
    /// exactly that much must hash its key space the same.
    pub final_hash: Option<(u64, u32)>,
    /// The store's revision after each log index, the empty store's first.
    pub revisions: Vec<i64>,
    /// The log indexes whose request the model answered with an error: writes that changed
    /// nothing (refused by auth or an alarm, or failed), for the checkers that read the log.
    pub failed_entries: BTreeSet<u64>,
    /// Reads checked against the model (answers and revision errors alike).
    pub linearizable_reads: u64,
    pub serializable_reads: u64,
    /// Definite errors a member answers before proposing or reading, checked as such.
    pub refused: u64,
    /// Writes whose client never learned the outcome, found in the log (took effect once).
    pub indeterminate_applied: u64,
    /// Writes whose client never learned the outcome, absent from the log (never took effect).
    pub indeterminate_absent: u64,
    /// Reads without an answer: nothing to check.
    pub indeterminate_reads: u64,
}

/// An op as a violation names it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRef {
    pub id: u64,
    pub client: u64,
    pub member: MemberId,
    pub invoked_at: SimNanos,
    pub returned_at: Option<SimNanos>,
    pub request: ClientRequest,
}

impl OpRef {
    /// Boxed, since a violation travels in a `Result` and should keep it small.
    pub fn of(op: &Op) -> Box<OpRef> {
        Box::new(OpRef {
            id: op.id,
            client: op.client,
            member: op.member,
            invoked_at: op.invoked_at,
            returned_at: op.outcome.returned_at(),
            request: op.request.clone(),
        })
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} (client {}, member {:x}, {}, invoked at {} ns, ",
            self.id,
            self.client,
            self.member,
            RequestSummary(&self.request),
            self.invoked_at
        )?;
        match self.returned_at {
            Some(t) => write!(f, "returned at {t} ns)"),
            None => write!(f, "never returned)"),
        }
    }
}

/// A place in the linearization, in doubled coordinates: `2p` is the write at log index `p`,
/// `2q + 1` is a read between the entries at log indexes `q` and `q + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Point(pub u64);

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 2 == 0 {
            write!(f, "log index {}", self.0 / 2)
        } else {
            write!(f, "after log index {}", self.0 / 2)
        }
    }
}

/// How a history breaks etcd's guarantees. Each names the ops involved.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// The log handed to the checker skips or repeats an index.
    LogNotContiguous { position: u64, index: u64 },
    /// Two ops claim the same proposal: the history itself is inconsistent.
    ProposalClaimedTwice {
        first: Box<OpRef>,
        second: Box<OpRef>,
    },
    /// An applied entry carries a request no client sent.
    PhantomWrite {
        index: u64,
        origin: MemberId,
        request_id: u64,
    },
    /// One proposal applied twice: a retried or re-proposed write took effect twice.
    DuplicateApply {
        op: Box<OpRef>,
        first_index: u64,
        second_index: u64,
    },
    /// The entry for an op's proposal carries a different request than the client sent.
    EntryMismatch { op: Box<OpRef>, index: u64 },
    /// The entry for an op's proposal acts as someone other than its credentials name: another
    /// user, or a JWT's user at another auth revision than the token's.
    WrongIdentity {
        op: Box<OpRef>,
        index: u64,
        entry: String,
    },
    /// A write acknowledged as successful never took effect.
    LostWrite { op: Box<OpRef> },
    /// A write's answer differs from what applying the log in order gives.
    WrongWriteAnswer {
        op: Box<OpRef>,
        index: u64,
        expected: Box<Answer>,
        observed: Box<Answer>,
    },
    /// A definite error that the member can only answer before proposing, for a write that was
    /// proposed or that the member should have accepted; or an error no path produces.
    UnexplainedError { op: Box<OpRef>, why: &'static str },
    /// `earlier` finished before `later` started, yet the witness orders it after `later`.
    RealTimeInversion {
        earlier: Box<OpRef>,
        earlier_at: Point,
        later: Box<OpRef>,
        later_at: Point,
    },
    /// A read answered at a revision superseded before an op that finished before the read
    /// started.
    StaleRead {
        read: Box<OpRef>,
        revision: i64,
        last_at: Point,
        after: Box<OpRef>,
        after_at: Point,
    },
    /// A read answered at a revision the log never produced.
    UnknownRevision {
        read: Box<OpRef>,
        revision: i64,
        last_revision: i64,
    },
    /// A read's answer differs from the model's at the place the read is linearized.
    WrongReadAnswer {
        read: Box<OpRef>,
        at: Point,
        revision: i64,
        expected: Box<Answer>,
        observed: Box<Answer>,
    },
    /// A lease list that matches no lease table between the positions the read may take.
    WrongLeaseList {
        read: Box<OpRef>,
        from: Point,
        to: Point,
    },
    /// A member list that the cluster never had at any point of the log.
    WrongMemberList { read: Box<OpRef> },
    /// The replayed state broke an invariant after the entry at `index` (a key outlived its
    /// lease, say).
    StateBroken { index: u64, why: String },
    /// The core, replaying the log, answers or holds something other than the reference model:
    /// wrong on every member alike, whatever the clients saw.
    CoreDisagreesWithModel { index: u64, what: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            LogNotContiguous { position, index } => write!(
                f,
                "malformed log: entry {position} of the applied log has index {index}"
            ),
            ProposalClaimedTwice { first, second } => {
                write!(f, "{first} and {second} claim the same proposal")
            }
            PhantomWrite {
                index,
                origin,
                request_id,
            } => write!(
                f,
                "phantom write: the entry at log index {index} (origin {origin:x}, proposal \
                 {request_id:#x}) belongs to no client operation"
            ),
            DuplicateApply {
                op,
                first_index,
                second_index,
            } => write!(
                f,
                "duplicate apply: {op} took effect at log indexes {first_index} and {second_index}"
            ),
            EntryMismatch { op, index } => write!(
                f,
                "the entry at log index {index} carries {op}'s proposal but another request"
            ),
            WrongIdentity { op, index, entry } => write!(
                f,
                "the entry at log index {index} acts for {op} as {entry}, which its \
                 credentials do not name"
            ),
            LostWrite { op } => write!(
                f,
                "lost write: {op} was acknowledged but is not in the applied log"
            ),
            WrongWriteAnswer {
                op,
                index,
                expected,
                observed,
            } => write!(
                f,
                "wrong answer: {op}, applied at log index {index}, was answered {} but the \
                 replay of the log gives {}",
                AnswerSummary(observed),
                AnswerSummary(expected)
            ),
            UnexplainedError { op, why } => write!(f, "unexplained error: {op}: {why}"),
            RealTimeInversion {
                earlier,
                earlier_at,
                later,
                later_at,
            } => write!(
                f,
                "real-time order violated: {earlier} finished before {later} started, yet the \
                 log orders it at {earlier_at}, after {later_at}"
            ),
            StaleRead {
                read,
                revision,
                last_at,
                after,
                after_at,
            } => write!(
                f,
                "stale read: {read} observed revision {revision}, which was current at \
                 {last_at} at the latest, but {after} (at {after_at}) finished before it started"
            ),
            UnknownRevision {
                read,
                revision,
                last_revision,
            } => write!(
                f,
                "{read} observed revision {revision}, which the log never produced (it ends at \
                 revision {last_revision})"
            ),
            WrongReadAnswer {
                read,
                at,
                revision,
                expected,
                observed,
            } => write!(
                f,
                "wrong read: {read} was answered {} but the store at {at} (revision \
                 {revision}) answers {}",
                AnswerSummary(observed),
                AnswerSummary(expected)
            ),
            WrongLeaseList { read, from, to } => write!(
                f,
                "wrong lease list: {read} lists leases the state never held between {from} and                  {to}"
            ),
            WrongMemberList { read } => write!(
                f,
                "wrong member list: {read} lists members the cluster never had at once"
            ),
            StateBroken { index, why } => {
                write!(f, "the state after log index {index} is impossible: {why}")
            }
            CoreDisagreesWithModel { index, what } => write!(
                f,
                "at log index {index} the core disagrees with the reference model: {what}"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// A request in one line: its kind, keys and the options that change the answer most.
pub struct RequestSummary<'a>(pub &'a ClientRequest);

impl fmt::Display for RequestSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ClientRequest::Range(r) => {
                write!(f, "range {}", Keys(&r.key, &r.range_end))?;
                if r.revision != 0 {
                    write!(f, " at revision {}", r.revision)?;
                }
                if r.serializable {
                    write!(f, " serializable")?;
                }
                Ok(())
            }
            ClientRequest::Put(p) => write!(f, "put {:?} = {:?}", p.key, p.value),
            ClientRequest::DeleteRange(d) => write!(f, "delete {}", Keys(&d.key, &d.range_end)),
            ClientRequest::Txn(t) => write!(
                f,
                "txn of {} compares, {} success and {} failure ops",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            ClientRequest::Compact(c) => write!(f, "compact to {}", c.revision),
            ClientRequest::LeaseGrant(g) => write!(f, "lease grant {:x} ttl {}", g.id, g.ttl),
            ClientRequest::LeaseRevoke(r) => write!(f, "lease revoke {:x}", r.id),
            ClientRequest::LeaseKeepAlive(k) => write!(f, "lease keepalive {:x}", k.id),
            ClientRequest::LeaseTimeToLive(t) => write!(f, "lease timetolive {:x}", t.id),
            ClientRequest::LeaseLeases(_) => write!(f, "lease list"),
            ClientRequest::MemberAdd(a) => write!(f, "member add {:?}", a.peer_ur_ls),
            ClientRequest::MemberRemove(r) => write!(f, "member remove {:x}", r.id),
            ClientRequest::MemberPromote(p) => write!(f, "member promote {:x}", p.id),
            other => write!(f, "{}", other.name()),
        }
    }
}

struct Keys<'a>(&'a Bytes, &'a Bytes);

impl fmt::Display for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.1[..] {
            [] => write!(f, "{:?}", self.0),
            [0] => write!(f, "{:?}..", self.0),
            _ => write!(f, "{:?}..{:?}", self.0, self.1),
        }
    }
}

/// An answer in one line: the header revision and the data a client would look at.
struct AnswerSummary<'a>(&'a Answer);

impl fmt::Display for AnswerSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Err(e) => write!(f, "error {e:?} ({e})"),
            Ok(resp) => write_response(f, resp),
        }
    }
}

fn write_response(f: &mut fmt::Formatter<'_>, resp: &ClientResponse) -> fmt::Result {
    let revision = resp.revision();
    match resp {
        ClientResponse::Range(r) => write!(
            f,
            "range at revision {revision:?}: [{}], count {}, more {}",
            KeyValues(&r.kvs),
            r.count,
            r.more
        ),
        ClientResponse::Put(p) => write!(
            f,
            "put at revision {revision:?}, prev_kv [{}]",
            KeyValues(p.prev_kv.as_slice())
        ),
        ClientResponse::DeleteRange(d) => write!(
            f,
            "delete at revision {revision:?}: {} deleted, prev_kvs [{}]",
            d.deleted,
            KeyValues(&d.prev_kvs)
        ),
        ClientResponse::Txn(t) => {
            write!(
                f,
                "txn at revision {revision:?}, succeeded {}: [",
                t.succeeded
            )?;
            for (i, op) in t.responses.iter().enumerate() {
                if i > 0 {
                    write!(f, "; ")?;
                }
                let nested = match &op.response {
                    Some(Response::ResponseRange(r)) => ClientResponse::Range(r.clone()),
                    Some(Response::ResponsePut(r)) => ClientResponse::Put(r.clone()),
                    Some(Response::ResponseDeleteRange(r)) => {
                        ClientResponse::DeleteRange(r.clone())
                    }
                    Some(Response::ResponseTxn(r)) => ClientResponse::Txn(r.clone()),
                    None => {
                        write!(f, "empty")?;
                        continue;
                    }
                };
                write_response(f, &nested)?;
            }
            write!(f, "]")
        }
        ClientResponse::Compact(_) => write!(f, "compaction at revision {revision:?}"),
        ClientResponse::LeaseGrant(g) => {
            write!(
                f,
                "lease {:x} granted, ttl {} at revision {revision:?}",
                g.id, g.ttl
            )
        }
        ClientResponse::LeaseRevoke(_) => write!(f, "lease revoked at revision {revision:?}"),
        ClientResponse::LeaseKeepAlive(k) => {
            write!(f, "lease {:x} kept alive, ttl {}", k.id, k.ttl)
        }
        ClientResponse::LeaseTimeToLive(t) => write!(
            f,
            "lease {:x} ttl {} of {}, {} keys",
            t.id,
            t.ttl,
            t.granted_ttl,
            t.keys.len()
        ),
        ClientResponse::LeaseLeases(l) => {
            let ids: Vec<String> = l.leases.iter().map(|s| format!("{:x}", s.id)).collect();
            write!(f, "leases [{}] at revision {revision:?}", ids.join(", "))
        }
        ClientResponse::MemberList(l) => write!(f, "members {:?}", member_ids(&l.members)),
        ClientResponse::MemberAdd(a) => write!(
            f,
            "member {:x} added, members {:?}",
            a.member.as_ref().map_or(0, |m| m.id),
            member_ids(&a.members)
        ),
        other => write!(f, "{} answered", other.name()),
    }
}

fn member_ids(members: &[detcd::proto::etcdserverpb::Member]) -> Vec<String> {
    members
        .iter()
        .map(|m| format!("{:x}{}", m.id, if m.is_learner { "(learner)" } else { "" }))
        .collect()
}

struct KeyValues<'a>(&'a [KeyValue]);

impl fmt::Display for KeyValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kv) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(
                f,
                "{:?}={:?} (create {}, mod {}, version {}, lease {})",
                kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
            )?;
        }
        Ok(())
    }
}
