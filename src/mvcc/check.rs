//! The request checks etcd's gRPC layer makes before a request is proposed to raft
//! (`api/v3rpc/key.go`): they depend only on the request, never on the store, so every member
//! would agree on them and a rejected request never costs a log entry.
//!
//! - Range: empty key is `EmptyKey`; a sort order or target outside the enum is
//!   `InvalidSortOption`.
//! - Put: empty key; `ignore_value` with a value is `ValueProvided`; `ignore_lease` with a lease
//!   is `LeaseProvided`.
//! - DeleteRange: empty key.
//! - Txn: `max(len(compare), len(success), len(failure)) > max_txn_ops` is `TooManyOps`; nested
//!   txns are checked against what is left of the budget (`max_txn_ops` minus the enclosing
//!   level's count), as etcd does; any compare with an empty key is `EmptyKey`; every operation
//!   of both branches is checked as above, and an empty operation is `KeyNotFound`. Then each
//!   branch is checked for overlapping writes (`DuplicateKey`), see [`check_intervals`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

pub fn check_range(req: &RangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(req: &PutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// All of etcd's pre-raft checks of a Txn: sizes and fields first, then overlapping writes in
/// the success branch, then in the failure branch.
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_request(req, max_txn_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_request(req: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_request_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(p)) => check_put(p),
        Some(Request::RequestDeleteRange(d)) => check_delete_range(d),
        Some(Request::RequestTxn(t)) => check_txn_request(t, max_txn_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A union of half-open key intervals `[begin, end)`, kept merged so that membership of a key
/// is one ordered-map lookup. Empty and inverted intervals contribute nothing.
#[derive(Default)]
struct KeyIntervals {
    /// begin -> end of disjoint, non-touching intervals.
    merged: BTreeMap<Bytes, Bytes>,
}

impl KeyIntervals {
    fn contains(&self, key: &[u8]) -> bool {
        self.merged
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, end)| key < &end[..])
    }

    fn insert(&mut self, begin: Bytes, end: Bytes) {
        if end <= begin {
            return;
        }
        let (mut begin, mut end) = (begin, end);
        if let Some((b, e)) = self
            .merged
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(&begin[..])))
            .next_back()
        {
            if e >= &begin {
                begin = b.clone();
                end = end.max(e.clone());
            }
        }
        let absorbed: Vec<Bytes> = self
            .merged
            .range::<[u8], _>((Bound::Included(&begin[..]), Bound::Included(&end[..])))
            .map(|(b, _)| b.clone())
            .collect();
        for b in absorbed {
            let e = self.merged.remove(&b).expect("listed above");
            end = end.max(e);
        }
        self.merged.insert(begin, end);
    }

    fn union(&mut self, other: KeyIntervals) {
        for (begin, end) in other.merged {
            self.insert(begin, end);
        }
    }
}

/// The smallest key after `key`: the exclusive end of the single-key interval.
fn successor(key: &[u8]) -> Bytes {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    Bytes::from(end)
}

/// etcd's `checkIntervals`: within one branch, no key may be put twice or both put and
/// deleted, counting nested txns. Returns the keys put and the intervals deleted at this level
/// and below, for the enclosing level.
///
/// etcd's rules, reproduced with their order-dependence:
/// - this level's deletes are collected first; a delete with `range_end` set is the interval
///   `[key, range_end)` taken *literally*, so the `"\0"` ("to the end") convention yields an
///   empty interval that conflicts with nothing;
/// - nested txns are visited in order: each one's puts (from either branch) must not repeat a
///   put seen so far (a key put in both branches of the same nested txn is fine: only one runs)
///   nor fall in the deletes collected so far; only then are its deletes added, so a put in an
///   earlier nested txn and a delete in a later one do not conflict;
/// - finally this level's puts must not repeat any put seen and must not fall in any delete
///   collected (this level's and all nested ones).
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, KeyIntervals), EtcdError> {
    let mut dels = KeyIntervals::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                successor(&d.key)
            } else {
                d.range_end.clone()
            };
            dels.insert(d.key.clone(), end);
        }
    }

    let mut puts: BTreeSet<Bytes> = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for key in &puts_then {
            if puts.contains(key) || dels.contains(key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if puts.contains(key) && !puts_then.contains(key) {
                return Err(EtcdError::DuplicateKey);
            }
            if dels.contains(key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.union(dels_then);
        dels.union(dels_else);
    }

    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || dels.contains(&p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::Compare;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..PutRequest::default()
            })),
        }
    }

    fn del(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                range_end: Bytes::copy_from_slice(end.as_bytes()),
                ..DeleteRangeRequest::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn txn(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    #[test]
    fn range_with_empty_key_or_unknown_sort_is_rejected() {
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        let bad_order = RangeRequest {
            key: "a".into(),
            sort_order: 3,
            ..RangeRequest::default()
        };
        assert_eq!(check_range(&bad_order), Err(EtcdError::InvalidSortOption));
        let bad_target = RangeRequest {
            key: "a".into(),
            sort_target: 5,
            ..RangeRequest::default()
        };
        assert_eq!(check_range(&bad_target), Err(EtcdError::InvalidSortOption));
    }

    #[test]
    fn put_ignore_flags_reject_provided_values() {
        let p = PutRequest {
            key: "a".into(),
            value: "v".into(),
            ignore_value: true,
            ..PutRequest::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        let p = PutRequest {
            key: "a".into(),
            lease: 7,
            ignore_lease: true,
            ..PutRequest::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
        assert_eq!(check_put(&PutRequest::default()), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn too_many_ops_counts_the_largest_list() {
        let mut t = txn(vec![put("a"), put("b"), put("c")]);
        assert_eq!(check_txn(&t, 2), Err(EtcdError::TooManyOps));
        assert_eq!(check_txn(&t, 3), Ok(()));
        t.compare = vec![
            Compare {
                key: "x".into(),
                ..Compare::default()
            };
            4
        ];
        assert_eq!(check_txn(&t, 3), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn nested_txns_get_only_the_remaining_op_budget() {
        // Outer level uses 2 of 4; the nested txn has 3 ops > 4 - 2.
        let t = txn(vec![
            put("a"),
            nested(vec![put("b"), put("c"), put("d")], vec![]),
        ]);
        assert_eq!(check_txn(&t, 4), Err(EtcdError::TooManyOps));
        assert_eq!(check_txn(&t, 5), Ok(()));
    }

    #[test]
    fn compare_with_empty_key_and_empty_op_are_rejected() {
        let t = TxnRequest {
            compare: vec![Compare::default()],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(check_txn(&t, 128), Err(EtcdError::EmptyKey));
        let t = txn(vec![RequestOp { request: None }]);
        assert_eq!(check_txn(&t, 128), Err(EtcdError::KeyNotFound));
    }

    #[test]
    fn duplicate_puts_and_put_inside_delete_are_duplicate_keys() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![put("b"), del("a", "c")]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", ""), put("a")]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(check_txn(&txn(vec![del("a", "c"), put("c")]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), del("b", "d")]), 128),
            Ok(())
        );
    }

    #[test]
    fn from_key_delete_conflicts_with_nothing_as_in_etcd() {
        assert_eq!(check_txn(&txn(vec![del("a", "\0"), put("b")]), 128), Ok(()));
    }

    #[test]
    fn same_key_in_both_branches_of_a_nested_txn_is_allowed() {
        let t = txn(vec![nested(vec![put("a")], vec![put("a")])]);
        assert_eq!(check_txn(&t, 128), Ok(()));
        let t = txn(vec![put("a"), nested(vec![], vec![put("a")])]);
        assert_eq!(check_txn(&t, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn nested_delete_checks_depend_on_order_like_etcd() {
        // Delete in an earlier nested txn, put in a later one: conflict.
        let t = txn(vec![
            nested(vec![del("a", "")], vec![]),
            nested(vec![put("a")], vec![]),
        ]);
        assert_eq!(check_txn(&t, 128), Err(EtcdError::DuplicateKey));
        // Put in an earlier nested txn, delete in a later one: etcd lets it through.
        let t = txn(vec![
            nested(vec![put("a")], vec![]),
            nested(vec![del("a", "")], vec![]),
        ]);
        assert_eq!(check_txn(&t, 128), Ok(()));
        // A nested delete covering an outer put always conflicts.
        let t = txn(vec![put("a"), nested(vec![del("a", "b")], vec![])]);
        assert_eq!(check_txn(&t, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn failure_branch_is_checked_too() {
        let t = TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![put("a"), put("a")],
        };
        assert_eq!(check_txn(&t, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn key_intervals_merge_and_answer_membership() {
        let mut s = KeyIntervals::default();
        s.insert("b".into(), "d".into());
        s.insert("f".into(), "h".into());
        s.insert("c".into(), "g".into());
        s.insert("z".into(), "a".into());
        assert_eq!(s.merged.len(), 1);
        assert!(s.contains(b"b") && s.contains(b"gz") && !s.contains(b"h") && !s.contains(b"a"));
        assert!(!s.contains(b"z"));
    }
}
