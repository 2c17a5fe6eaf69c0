//! Transactions: compares, branch choice, the pre-checks and the atomic execution of a Txn.
//!
//! etcd runs a txn in three phases, and the phase boundaries are visible to clients:
//! 1. **Path.** Every compare is evaluated against the store as it was *before* the txn — also
//!    the compares of nested txns, which therefore never see writes made earlier in the same txn.
//!    The result is which branch runs at each level ([`TxnPath`]).
//! 2. **Check.** The operations on the chosen path are checked against that same pre-txn store:
//!    a range's revision must not be in the future (`FutureRev`) or below the compact revision
//!    (`Compacted`; note etcd compares the raw revision here, so in a txn a *negative* range
//!    revision below the compact revision fails, unlike a plain Range); a put with
//!    `ignore_value`/`ignore_lease` needs the key to exist (`KeyNotFound`), then its lease must
//!    exist (`LeaseNotFound`). The first failure aborts the txn.
//! 3. **Execute.** The operations run in order at one new main revision; reads see the txn's own
//!    earlier writes. Nested txn responses carry an all-zero header (only the outermost header
//!    gets a revision in etcd).
//!
//! Where etcd would crash instead of answering (a put with `ignore_value` on a key the same txn
//! deleted earlier, reachable through a `"\0"`-ended delete that etcd's duplicate check ignores),
//! we answer `KeyNotFound` and leave the store untouched.

use std::cmp::Ordering;

use super::cold::ColdValues;
use super::write::WriteTxn;
use super::{header, KeySpace, LeaseCheck};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

use super::range::KeyRange;

/// Which branch runs at each txn level: this level's outcome, then one path per nested txn of
/// the chosen branch, in operation order.
#[derive(Debug)]
pub(crate) struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

fn branch<'r>(req: &'r TxnRequest, path: &TxnPath) -> &'r [RequestOp] {
    if path.succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// etcd's `compareKV`: compares one key-value pair with a compare's target. A target union of
/// the wrong kind compares against zero / the empty value; unknown targets compare equal and
/// unknown results always hold, exactly as etcd's switches fall through.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int_operand =
        |pick: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(pick).unwrap_or(0);
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let operand: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(operand)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int_operand(|u| match u {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int_operand(|u| match u {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int_operand(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int_operand(|u| match u {
            TargetUnion::Lease(l) => Some(*l),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

impl KeySpace {
    /// etcd's `applyCompare` at the current revision: every existing key in the compare's range
    /// must satisfy it. If none exists, the compare is made against an all-zero key-value pair,
    /// except that a VALUE compare then always fails (a missing value cannot be told from an
    /// empty one on the wire).
    fn compare_holds(&self, c: &Compare) -> bool {
        let at = self.current_revision;
        let mut any = false;
        for (key, history) in self.keys_in(KeyRange::new(&c.key, &c.range_end)) {
            let Some(kv) = history.live_at(at).and_then(|r| r.key_value(key)) else {
                continue;
            };
            any = true;
            if !compare_kv(c, &kv) {
                return false;
            }
            if self.bugs.range_compare_first_key_only {
                return true;
            }
        }
        if any {
            return true;
        }
        if c.target == CompareTarget::Value as i32 {
            return false;
        }
        compare_kv(c, &KeyValue::default())
    }

    fn txn_path(&self, req: &TxnRequest) -> TxnPath {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.txn_path(t)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    fn check_txn_range(&self, r: &RangeRequest) -> Result<(), EtcdError> {
        if r.revision == 0 {
            return Ok(());
        }
        if r.revision > self.current_revision {
            return Err(EtcdError::FutureRev);
        }
        // Raw comparison with etcd's compact revision (-1 before the first compaction).
        if r.revision < self.compact_main {
            return Err(EtcdError::Compacted);
        }
        Ok(())
    }

    fn check_txn_put(&self, p: &PutRequest, leases: &dyn LeaseCheck) -> Result<(), EtcdError> {
        if (p.ignore_value || p.ignore_lease)
            && self.live_kv(&p.key, self.current_revision).is_none()
        {
            return Err(EtcdError::KeyNotFound);
        }
        if p.lease != 0 && !leases.lease_exists(p.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    fn check_txn_ops(
        &self,
        req: &TxnRequest,
        path: &TxnPath,
        leases: &dyn LeaseCheck,
    ) -> Result<(), EtcdError> {
        let mut nested = path.nested.iter();
        for op in branch(req, path) {
            match &op.request {
                Some(Request::RequestRange(r)) => self.check_txn_range(r)?,
                Some(Request::RequestPut(p)) => self.check_txn_put(p, leases)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
                Some(Request::RequestTxn(t)) => {
                    let path = nested.next().expect("path was built from this request");
                    self.check_txn_ops(t, path, leases)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn execute_txn(
        &mut self,
        req: &TxnRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<(TxnResponse, ColdValues), EtcdError> {
        let path = self.txn_path(req);
        self.check_txn_ops(req, &path, leases)?;
        let mut w = WriteTxn::begin(self);
        // On error `w` is dropped uncommitted, which undoes every change made so far.
        let (mut resp, cold) = execute_ops(&mut w, req, &path)?;
        resp.header = header(w.commit());
        Ok((resp, cold))
    }
}

fn execute_ops(
    w: &mut WriteTxn<'_>,
    req: &TxnRequest,
    path: &TxnPath,
) -> Result<(TxnResponse, ColdValues), EtcdError> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(branch(req, path).len());
    let mut cold = ColdValues::default();
    for (index, op) in branch(req, path).iter().enumerate() {
        let index = index as u32;
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                let (response, mut cold_range) = w.range_request(r)?;
                cold_range.ops = vec![index];
                cold.add(cold_range);
                Some(Response::ResponseRange(response))
            }
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(w.put_request(p)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(w.delete_request(d)))
            }
            Some(Request::RequestTxn(t)) => {
                let path = nested.next().expect("path was built from this request");
                let (response, inner_cold) = execute_ops(w, t, path)?;
                cold.extend(inner_cold.nest_under(index));
                Some(Response::ResponseTxn(response))
            }
            // An empty operation (rejected by the API check) answers an empty response.
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    let response = TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: path.succeeded,
        responses,
    };
    Ok((response, cold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(value: &str, version: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(b"k"),
            value: Bytes::copy_from_slice(value.as_bytes()),
            version,
            create_revision: 2,
            mod_revision: 3,
            lease: 0,
        }
    }

    fn cmp(target: CompareTarget, result: CompareResult, union: Option<TargetUnion>) -> Compare {
        Compare {
            target: target as i32,
            result: result as i32,
            key: Bytes::from_static(b"k"),
            target_union: union,
            ..Compare::default()
        }
    }

    #[test]
    fn compare_kv_orders_values_bytewise() {
        let c = cmp(
            CompareTarget::Value,
            CompareResult::Greater,
            Some(TargetUnion::Value("a".into())),
        );
        assert!(compare_kv(&c, &kv("b", 1)));
        assert!(!compare_kv(&c, &kv("a", 1)));
    }

    #[test]
    fn compare_kv_with_mismatched_union_compares_against_zero() {
        let c = cmp(
            CompareTarget::Version,
            CompareResult::Greater,
            Some(TargetUnion::ModRevision(99)),
        );
        assert!(compare_kv(&c, &kv("x", 1)));
    }

    #[test]
    fn compare_kv_unknown_result_always_holds() {
        let mut c = cmp(
            CompareTarget::Version,
            CompareResult::Equal,
            Some(TargetUnion::Version(5)),
        );
        c.result = 42;
        assert!(compare_kv(&c, &kv("x", 1)));
    }
}
