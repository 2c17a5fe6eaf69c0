//! KV requests built field by field from arbitrary bytes (a fuzzer's, or random ones), in the
//! shapes where etcd's semantics have edges: keys from a four-letter alphabet (`\0`, `a`, `b`,
//! `\xff`) that sort next to each other, range ends that are empty, `\0`, a prefix's end or
//! another key, numbers from the edges of their type or near the revisions a short session
//! reaches, nested txns, compares over ranges. One request in eight may be malformed (an
//! empty key, an enum value past the last defined, a txn operation without a request, a value
//! beside `ignore_value`), so that each of etcd's refusals is reached while most requests
//! still reach the store; raw protobuf bytes are decoded too, for what no builder writes.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use detcd::node::ClientRequest;
use detcd::proto::etcdserverpb::compare::TargetUnion;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use prost::Message;

/// How deep txns nest (etcd bounds only the operations per level).
const TXN_DEPTH_MAX: u32 = 2;
/// Operations per txn branch, and compares per txn.
const TXN_PART_MAX: u32 = 3;

/// The next request `u` builds; `None` when raw bytes decode to no request.
pub fn request(u: &mut Unstructured) -> Result<Option<ClientRequest>> {
    let mut shapes = Shapes {
        malformed: u.ratio(1, 8)?,
        u,
    };
    let s = &mut shapes;
    Ok(Some(match s.u.int_in_range(0..=19)? {
        0..=5 => s.range()?.into(),
        6..=11 => s.put()?.into(),
        12 | 13 => s.delete()?.into(),
        14..=17 => s.txn(0)?.into(),
        18 => CompactionRequest {
            revision: s.number()?,
            physical: s.u.arbitrary()?,
        }
        .into(),
        _ => return raw(s.u),
    }))
}

/// A request decoded from raw bytes, as a client could send them.
fn raw(u: &mut Unstructured) -> Result<Option<ClientRequest>> {
    let kind: u8 = u.int_in_range(0..=4)?;
    let len = u.int_in_range(0..=64)?;
    let bytes = u.bytes(len)?;
    Ok(match kind {
        0 => RangeRequest::decode(bytes).ok().map(Into::into),
        1 => PutRequest::decode(bytes).ok().map(Into::into),
        2 => DeleteRangeRequest::decode(bytes).ok().map(Into::into),
        3 => TxnRequest::decode(bytes).ok().map(Into::into),
        _ => CompactionRequest::decode(bytes).ok().map(Into::into),
    })
}

/// The end of the range of keys that start with `prefix`, as clientv3's `WithPrefix` makes it.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    Bytes::from_static(b"\0")
}

/// Builds one request's fields.
struct Shapes<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    /// Whether this request may break the API's rules.
    malformed: bool,
}

impl Shapes<'_, '_> {
    /// True with 1 chance in `odds` in a request that may be malformed.
    fn breaks(&mut self, odds: u8) -> Result<bool> {
        Ok(self.malformed && self.u.ratio(1, odds)?)
    }

    fn key(&mut self) -> Result<Bytes> {
        const LETTERS: [u8; 4] = [0, b'a', b'b', 0xff];
        if self.breaks(4)? {
            return Ok(Bytes::new());
        }
        // Mostly one letter, so that requests meet the same keys.
        let len = match self.u.int_in_range(0..=5)? {
            0..=3 => 1,
            4 => 2,
            _ => 3,
        };
        let mut key = Vec::with_capacity(len);
        for _ in 0..len {
            key.push(*self.u.choose(&LETTERS)?);
        }
        Ok(key.into())
    }

    fn range_end(&mut self, key: &[u8]) -> Result<Bytes> {
        Ok(match self.u.int_in_range(0..=3)? {
            0 => Bytes::new(),
            1 => Bytes::from_static(b"\0"),
            2 => prefix_end(key),
            _ => self.key()?,
        })
    }

    fn value(&mut self) -> Result<Bytes> {
        Ok(match self.u.int_in_range(0..=7)? {
            0 => Bytes::new(),
            1 => Bytes::from(vec![b'v'; 3000]),
            _ => self.key()?,
        })
    }

    /// Near the revisions a short session reaches, or at the edges of an `i64`.
    fn number(&mut self) -> Result<i64> {
        Ok(match self.u.int_in_range(0..=9)? {
            0 => i64::MAX,
            1 => i64::MIN,
            2 => -1,
            3 => self.u.arbitrary()?,
            4..=6 => self.u.int_in_range(0..=3)?,
            _ => self.u.int_in_range(0..=12)?,
        })
    }

    /// 0, or with `numerator` in `denominator` chances a `number`.
    fn sometimes(&mut self, numerator: u8, denominator: u8) -> Result<i64> {
        if self.u.ratio(numerator, denominator)? {
            self.number()
        } else {
            Ok(0)
        }
    }

    /// An enum's value up to `last`, or in a malformed request sometimes one past it.
    fn enumerated(&mut self, last: i32) -> Result<i32> {
        if self.breaks(4)? {
            Ok(last + 1)
        } else {
            self.u.int_in_range(0..=last)
        }
    }

    fn flag(&mut self) -> Result<bool> {
        self.u.ratio(1, 4)
    }

    fn range(&mut self) -> Result<RangeRequest> {
        let key = self.key()?;
        let range_end = self.range_end(&key)?;
        Ok(RangeRequest {
            key,
            range_end,
            limit: self.sometimes(1, 2)?,
            revision: self.sometimes(1, 4)?,
            sort_order: self.enumerated(2)?,
            sort_target: self.enumerated(4)?,
            serializable: self.u.arbitrary()?,
            keys_only: self.flag()?,
            count_only: self.flag()?,
            min_mod_revision: self.sometimes(1, 8)?,
            max_mod_revision: self.sometimes(1, 8)?,
            min_create_revision: self.sometimes(1, 8)?,
            max_create_revision: self.sometimes(1, 8)?,
        })
    }

    fn put(&mut self) -> Result<PutRequest> {
        let key = self.key()?;
        let ignore_value = self.flag()?;
        let ignore_lease = self.flag()?;
        let value = if ignore_value && !self.breaks(2)? {
            Bytes::new()
        } else {
            self.value()?
        };
        let lease = if ignore_lease && !self.breaks(2)? {
            0
        } else {
            self.sometimes(1, 8)?
        };
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv: self.u.arbitrary()?,
            ignore_value,
            ignore_lease,
        })
    }

    fn delete(&mut self) -> Result<DeleteRangeRequest> {
        let key = self.key()?;
        Ok(DeleteRangeRequest {
            range_end: self.range_end(&key)?,
            key,
            prev_kv: self.u.arbitrary()?,
        })
    }

    fn compare(&mut self) -> Result<Compare> {
        let key = self.key()?;
        let target = self.enumerated(4)?;
        let target_union = match target {
            0 => TargetUnion::Version(self.number()?),
            1 => TargetUnion::CreateRevision(self.number()?),
            2 => TargetUnion::ModRevision(self.number()?),
            3 => TargetUnion::Value(self.value()?),
            _ => TargetUnion::Lease(self.number()?),
        };
        let range_end = if self.u.ratio(1, 2)? {
            Bytes::new()
        } else {
            self.range_end(&key)?
        };
        Ok(Compare {
            result: self.enumerated(3)?,
            target,
            range_end,
            key,
            // In a malformed request, a union that is not the target's, or none.
            target_union: match self.breaks(2)? {
                true if self.u.arbitrary()? => None,
                true => Some(TargetUnion::Version(self.number()?)),
                false => Some(target_union),
            },
        })
    }

    fn txn(&mut self, depth: u32) -> Result<TxnRequest> {
        let success = self.txn_branch(depth)?;
        let failure = self.txn_branch(depth)?;
        let n = self.u.int_in_range(0..=TXN_PART_MAX)?;
        let compare = (0..n).map(|_| self.compare()).collect::<Result<_>>()?;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }

    fn txn_branch(&mut self, depth: u32) -> Result<Vec<RequestOp>> {
        let n = self.u.int_in_range(0..=TXN_PART_MAX)?;
        (0..n).map(|_| self.request_op(depth)).collect()
    }

    fn request_op(&mut self, depth: u32) -> Result<RequestOp> {
        if self.breaks(4)? {
            return Ok(RequestOp { request: None });
        }
        let request = match self.u.int_in_range(0..=7)? {
            0..=2 => Request::RequestRange(self.range()?),
            3 | 4 => Request::RequestPut(self.put()?),
            5 | 6 => Request::RequestDeleteRange(self.delete()?),
            _ if depth < TXN_DEPTH_MAX => Request::RequestTxn(self.txn(depth + 1)?),
            _ => Request::RequestRange(self.range()?),
        };
        Ok(RequestOp {
            request: Some(request),
        })
    }
}
