//! Coverage probes, as FoundationDB's code probes: which requests and options, which answers
//! and errors, which faults and which recovery paths a run reached. A sweep reports them, and
//! with `--require-coverage` fails when one that every sweep should reach never was: a checker
//! cannot fail on code the workload never runs.

use std::collections::BTreeMap;

use detcd::node::{ClientRequest, ClientResponse};
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    compare::CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};

use crate::history::{Op, Outcome};

/// Probe hits by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    hits: BTreeMap<String, u64>,
}

/// What every CI sweep (tens of thousands of seeds) must reach.
pub const EXPECTED: &[&str] = &[
    "range",
    "range.single",
    "range.prefix-or-interval",
    "range.from-key",
    "range.everything",
    "range.limit",
    "range.more",
    "range.sort",
    "range.keys-only",
    "range.count-only",
    "range.revision-filter",
    "range.past-revision",
    "range.serializable",
    "range.answered-locally",
    "range.answered-after-barrier",
    "range.shared-read-barrier",
    "put",
    "put.prev-kv",
    "put.lease",
    "put.ignore-value",
    "put.ignore-lease",
    "put.empty-value",
    "put.large-value",
    "delete",
    "delete.range",
    "delete.prev-kv",
    "delete.deleted-some",
    "txn",
    "txn.succeeded",
    "txn.failed",
    "txn.nested",
    "txn.range-compare",
    "txn.compare-version",
    "txn.compare-create",
    "txn.compare-mod",
    "txn.compare-value",
    "txn.compare-lease",
    "txn.read-only",
    "compact",
    "auth.token-issued",
    "auth.jwt-login",
    "auth.permission-denied",
    "auth.user-empty",
    "auth.old-revision",
    "auth.invalid-token",
    "auth.user-reads-an-entry",
    "lease.grant",
    "lease.revoke",
    "lease.keepalive",
    "lease.keepalive-answered-locally",
    "lease.time-to-live",
    "lease.leases",
    "member.add",
    "member.promote",
    "member.remove",
    "member.list",
    "outcome.unknown",
    "error: etcdserver: key is not provided",
    "error: etcdserver: key not found",
    "error: etcdserver: value is provided",
    "error: etcdserver: lease is provided",
    "error: etcdserver: duplicate key given in txn request",
    "error: etcdserver: invalid sort option",
    "error: etcdserver: requested lease not found",
    "error: etcdserver: mvcc: required revision has been compacted",
    "error: etcdserver: mvcc: required revision is a future revision",
    "error: etcdserver: mvcc: database space exceeded",
    "error: etcdserver: range response is larger than --max-range-bytes",
    "alarm.nospace-raised",
    "alarm.nospace-cleared",
    "auto-compaction",
    "fault.crash",
    "fault.torn-write",
    "fault.disk-error",
    "fault.partition",
    "fault.clogged-link",
    "fault.pause",
    "fault.clock-jump",
    "fault.message-dropped",
    "fault.message-duplicated",
    "fault.bit-flip",
    "fault.misdirected-write",
    "fault.damaged-snapshot",
    "fault.late-watch-feed",
    "fault.late-watch-close",
    "fault.watch-feeds-overflowed",
    "fault.watch-close-after-open",
    "recovery.corruption-refused",
    "recovery.snapshot-set-aside",
    "recovery.torn-tail-truncated",
    "recovery.from-snapshot",
    "recovery.snapshot-installed",
    "recovery.snapshot-installed-decoded",
    "recovery.snapshot-values-cooling",
    "compaction.half-released",
    "compaction.released-on-time",
    "recovery.watch-feed-resumed",
    "watch.catch-up-from-recent-feeds",
    "watch.catch-up-from-key-space",
    "watch.stream-ended-without-leader",
];

impl Coverage {
    pub fn hit(&mut self, probe: &str) {
        self.hit_n(probe, 1);
    }

    pub fn hit_n(&mut self, probe: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.hits.get_mut(probe) {
            Some(count) => *count += n,
            None => {
                self.hits.insert(probe.to_owned(), n);
            }
        }
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (probe, n) in &other.hits {
            self.hit_n(probe, *n);
        }
    }

    /// The expected probes never hit.
    pub fn missing(&self) -> Vec<&'static str> {
        EXPECTED
            .iter()
            .copied()
            .filter(|p| !self.hits.contains_key(*p))
            .collect()
    }

    /// One probe per line, with its count.
    pub fn report(&self) -> String {
        self.hits
            .iter()
            .map(|(probe, n)| format!("  {n:>9}  {probe}\n"))
            .collect()
    }

    /// Records what each client operation asked and what it got.
    pub fn probe_ops(&mut self, ops: &[Op]) {
        for op in ops {
            self.probe_request(&op.request);
            match &op.outcome {
                Outcome::Ok { response, .. } => self.probe_response(response),
                Outcome::Err { error, .. } => self.hit(&format!("error: {error}")),
                Outcome::Unknown => self.hit("outcome.unknown"),
            }
        }
    }

    fn probe_request(&mut self, request: &ClientRequest) {
        match request {
            ClientRequest::Range(r) => self.probe_range(r),
            ClientRequest::Put(p) => self.probe_put(p),
            ClientRequest::DeleteRange(d) => self.probe_delete(d),
            ClientRequest::Txn(t) => {
                self.hit("txn");
                if !has_writes(t) {
                    self.hit("txn.read-only");
                }
                self.probe_txn(t);
            }
            ClientRequest::Compact(_) => self.hit("compact"),
            ClientRequest::LeaseGrant(_) => self.hit("lease.grant"),
            ClientRequest::LeaseRevoke(_) => self.hit("lease.revoke"),
            ClientRequest::LeaseKeepAlive(_) => self.hit("lease.keepalive"),
            ClientRequest::LeaseTimeToLive(_) => self.hit("lease.time-to-live"),
            ClientRequest::LeaseLeases(_) => self.hit("lease.leases"),
            ClientRequest::MemberAdd(_) => self.hit("member.add"),
            ClientRequest::MemberPromote(_) => self.hit("member.promote"),
            ClientRequest::MemberRemove(_) => self.hit("member.remove"),
            ClientRequest::MemberList(_) => self.hit("member.list"),
            other => self.hit(&format!("request.{}", other.name())),
        }
    }

    fn probe_range(&mut self, r: &RangeRequest) {
        self.hit("range");
        self.hit(match (&r.key[..], &r.range_end[..]) {
            (_, []) => "range.single",
            ([0], [0]) => "range.everything",
            (_, [0]) => "range.from-key",
            _ => "range.prefix-or-interval",
        });
        let flags = [
            (r.limit > 0, "range.limit"),
            (r.sort_order != 0 || r.sort_target != 0, "range.sort"),
            (r.keys_only, "range.keys-only"),
            (r.count_only, "range.count-only"),
            (r.revision > 0, "range.past-revision"),
            (r.serializable, "range.serializable"),
            (
                r.min_mod_revision != 0
                    || r.max_mod_revision != 0
                    || r.min_create_revision != 0
                    || r.max_create_revision != 0,
                "range.revision-filter",
            ),
        ];
        self.hit_flags(&flags);
    }

    fn probe_put(&mut self, p: &PutRequest) {
        self.hit("put");
        let flags = [
            (p.prev_kv, "put.prev-kv"),
            (p.lease != 0, "put.lease"),
            (p.ignore_value, "put.ignore-value"),
            (p.ignore_lease, "put.ignore-lease"),
            (p.value.is_empty() && !p.ignore_value, "put.empty-value"),
            (p.value.len() >= 1024, "put.large-value"),
        ];
        self.hit_flags(&flags);
    }

    fn probe_delete(&mut self, d: &DeleteRangeRequest) {
        self.hit("delete");
        let flags = [
            (!d.range_end.is_empty(), "delete.range"),
            (d.prev_kv, "delete.prev-kv"),
        ];
        self.hit_flags(&flags);
    }

    fn probe_txn(&mut self, t: &TxnRequest) {
        for c in &t.compare {
            if !c.range_end.is_empty() {
                self.hit("txn.range-compare");
            }
            self.hit(match CompareTarget::try_from(c.target) {
                Ok(CompareTarget::Version) => "txn.compare-version",
                Ok(CompareTarget::Create) => "txn.compare-create",
                Ok(CompareTarget::Mod) => "txn.compare-mod",
                Ok(CompareTarget::Value) => "txn.compare-value",
                Ok(CompareTarget::Lease) => "txn.compare-lease",
                Err(_) => "txn.compare-unknown",
            });
        }
        for op in t.success.iter().chain(&t.failure) {
            if let Some(Request::RequestTxn(inner)) = &op.request {
                self.hit("txn.nested");
                self.probe_txn(inner);
            }
        }
    }

    fn probe_response(&mut self, response: &ClientResponse) {
        match response {
            ClientResponse::Range(r) if r.more => self.hit("range.more"),
            ClientResponse::DeleteRange(d) if d.deleted > 0 => self.hit("delete.deleted-some"),
            ClientResponse::Txn(t) => self.hit(if t.succeeded {
                "txn.succeeded"
            } else {
                "txn.failed"
            }),
            _ => {}
        }
    }

    fn hit_flags(&mut self, flags: &[(bool, &str)]) {
        for (on, probe) in flags {
            if *on {
                self.hit(probe);
            }
        }
    }
}

fn has_writes(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(inner)) => has_writes(inner),
            _ => false,
        })
}
