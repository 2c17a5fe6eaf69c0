//! What the KV clients ask: every request of etcd's KV API with every option, over key shapes
//! that sit on the boundaries (a key and its neighbours in sort order, prefixes, from-key,
//! everything, empty and backwards ranges), and now and then a request etcd must refuse with
//! each of its KV errors. Code the workload never reaches cannot fail.

use super::*;
use crate::options::DEFAULT_RANGE_BYTES_MAX;

/// The value of a large put: big enough to cross the chunking of snapshots and the cold
/// values' segments, small enough to keep a history fast.
const LARGE_VALUE_BYTES: usize = 4096;

impl World {
    pub(super) fn request(&mut self, client: u64) -> ClientRequest {
        let m = self.options.mix.clone();
        let weights = [
            m.get,
            m.get_serializable,
            m.range,
            m.put,
            m.delete,
            m.txn,
            m.compact,
        ];
        let value = Bytes::from(format!("c{client}.{}", self.issued));
        match self.weighted(&weights) {
            kind @ (0 | 1) => ClientRequest::Range(RangeRequest {
                key: self.kv_key(),
                serializable: kind == 1,
                ..Default::default()
            }),
            2 => ClientRequest::Range(self.range_request()),
            3 => ClientRequest::Put(self.put_request(value)),
            4 => ClientRequest::DeleteRange(self.delete_request()),
            5 => ClientRequest::Txn(self.txn_request(value, 2)),
            _ => ClientRequest::Compact(CompactionRequest {
                revision: self.some_revision(),
                physical: false,
            }),
        }
    }

    /// An index drawn with the given relative weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut pick = self.rng.below(total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                return i;
            }
            pick -= w;
        }
        0
    }

    /// A workload key, or now and then a neighbour of one in sort order (`k1\0` sorts right
    /// after `k1`, `k10` between `k1\0` and `k2`), or the bare prefix `k`.
    fn kv_key(&mut self) -> Bytes {
        // Built by hand: `format!` took 0.4% of the simulator's instructions here.
        let mut key = Vec::with_capacity(8);
        key.push(b'k');
        push_decimal(&mut key, self.rng.below(self.options.keys));
        match self.rng.below(20) {
            0 => key.push(0),
            1 => key.push(b'0'),
            2 => return Bytes::from_static(b"k"),
            _ => {}
        }
        Bytes::from(key)
    }

    /// A key and range end of one of etcd's shapes.
    fn key_range(&mut self) -> (Bytes, Bytes) {
        let key = self.kv_key();
        match self.rng.below(8) {
            0 | 1 => (key, Bytes::new()),
            2 => {
                // Every key with `key` as a prefix, as clientv3's WithPrefix asks.
                let mut end = key.to_vec();
                *end.last_mut().expect("keys are not empty") += 1;
                (key, Bytes::from(end))
            }
            3 => (key, Bytes::from_static(b"\0")),
            4 => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
            5 => (Bytes::from_static(b"k"), Bytes::from_static(b"l")),
            6 => {
                // Exactly the key, as a range.
                let mut end = key.to_vec();
                end.push(0);
                (key, Bytes::from(end))
            }
            // Between two keys, possibly backwards (an empty range).
            _ => (key, self.kv_key()),
        }
    }

    /// A revision a client has seen, or now and then one in the future.
    fn some_revision(&mut self) -> i64 {
        if self.rng.chance(0.03) {
            return self.revision_seen + 1 + self.rng.below(3) as i64;
        }
        self.rng.between(1, self.revision_seen as u64) as i64
    }

    fn range_request(&mut self) -> RangeRequest {
        let (key, range_end) = self.key_range();
        let mut r = RangeRequest {
            key,
            range_end,
            limit: [0, 0, 1, 2, 3][self.rng.below(5) as usize],
            revision: if self.rng.chance(0.2) {
                self.some_revision()
            } else {
                0
            },
            serializable: self.rng.chance(0.2),
            keys_only: self.rng.chance(0.1),
            count_only: self.rng.chance(0.1),
            ..Default::default()
        };
        if self.rng.chance(0.3) {
            r.sort_order = self.rng.below(3) as i32;
            r.sort_target = self.rng.below(5) as i32;
        }
        if self.rng.chance(0.15) {
            let seen = self.revision_seen as u64;
            let mut filter = || self.rng.below(seen + 1) as i64;
            r.min_mod_revision = filter();
            r.max_mod_revision = filter();
            r.min_create_revision = filter();
            r.max_create_revision = filter();
        }
        self.spoil_range(&mut r);
        r
    }

    /// Rarely, a range etcd refuses: an empty key, or an unknown sort.
    fn spoil_range(&mut self, r: &mut RangeRequest) {
        match self.rng.below(100) {
            0 => r.key = Bytes::new(),
            1 => r.sort_target = 7,
            _ => {}
        }
    }

    fn put_request(&mut self, value: Bytes) -> PutRequest {
        // Where `--max-range-bytes` is small, more values are large: a read of the past then
        // often answers superseded (cold) values whose size decides whether it is refused.
        let large_max = if self.options.range_bytes_max < DEFAULT_RANGE_BYTES_MAX {
            8
        } else {
            3
        };
        let value = match self.rng.below(50) {
            0..=2 => Bytes::new(),
            n if n <= large_max => {
                let mut large = value.to_vec();
                large.resize(LARGE_VALUE_BYTES, b'v');
                Bytes::from(large)
            }
            _ => value,
        };
        let mut p = PutRequest {
            key: self.kv_key(),
            value,
            prev_kv: self.rng.chance(0.5),
            lease: self.some_lease(),
            ..Default::default()
        };
        match self.rng.below(40) {
            // Keep the value or the lease the key has (KeyNotFound if it has none).
            0 | 1 => {
                p.ignore_value = true;
                p.value = Bytes::new();
            }
            2 | 3 => {
                p.ignore_lease = true;
                p.lease = 0;
            }
            // What etcd refuses: a value or lease given with its ignore flag, an empty key.
            4 => p.ignore_value = true,
            5 => {
                p.ignore_lease = true;
                p.lease = self.some_lease().max(1);
            }
            6 => p.key = Bytes::new(),
            _ => {}
        }
        p
    }

    /// A deletion within the KV clients' own keys: the lock, election and lease clients keep
    /// theirs outside `k`..`l`, and a from-key or everything deletion must not take them.
    fn delete_request(&mut self) -> DeleteRangeRequest {
        let (mut key, mut range_end) = self.key_range();
        if key[..] == b"\0"[..] {
            key = Bytes::from_static(b"k");
        }
        if range_end[..] == b"\0"[..] {
            range_end = Bytes::from_static(b"l");
        }
        DeleteRangeRequest {
            key: if self.rng.chance(0.01) {
                Bytes::new()
            } else {
                key
            },
            range_end,
            prev_kv: self.rng.chance(0.5),
        }
    }

    /// A txn of up to three compares (every target and result, over keys and ranges) and up to
    /// three operations per branch, nesting txns `depth` deep.
    fn txn_request(&mut self, value: Bytes, depth: u32) -> TxnRequest {
        let compares = self.rng.below(4) as usize;
        let compare = (0..compares).map(|_| self.compare()).collect();
        let success = self.txn_branch(&value, depth, 0);
        let failure = self.txn_branch(&value, depth, 1);
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// Up to three operations. At most one put per branch: more would mostly be refused as
    /// duplicate keys (which a few still are, against deletions and nested txns).
    fn txn_branch(&mut self, value: &Bytes, depth: u32, branch: u8) -> Vec<RequestOp> {
        let n = self.rng.below(4);
        let mut put = false;
        (0..n)
            .map(|i| {
                let value = Bytes::from(format!("{}.{branch}{i}", String::from_utf8_lossy(value)));
                let mut pick = self.rng.below(if depth > 0 { 10 } else { 9 });
                if pick <= 3 && std::mem::replace(&mut put, true) {
                    pick = 4;
                }
                let request = match pick {
                    0..=3 => request_op::Request::RequestPut(PutRequest {
                        key: self.kv_key(),
                        value,
                        prev_kv: self.rng.chance(0.3),
                        lease: self.some_lease(),
                        ..Default::default()
                    }),
                    4..=6 => request_op::Request::RequestRange(self.range_request()),
                    7 | 8 => request_op::Request::RequestDeleteRange(self.delete_request()),
                    _ => request_op::Request::RequestTxn(self.txn_request(value, depth - 1)),
                };
                RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }

    fn compare(&mut self) -> Compare {
        let (key, range_end) = if self.rng.chance(0.25) {
            self.key_range()
        } else {
            (self.kv_key(), Bytes::new())
        };
        let seen = self.revision_seen as u64;
        let (target, union) = match self.rng.below(5) {
            0 => (
                compare::CompareTarget::Version,
                compare::TargetUnion::Version(self.rng.below(4) as i64),
            ),
            1 => (
                compare::CompareTarget::Create,
                compare::TargetUnion::CreateRevision(self.rng.below(seen + 1) as i64),
            ),
            2 => (
                compare::CompareTarget::Mod,
                compare::TargetUnion::ModRevision(self.rng.below(seen + 1) as i64),
            ),
            3 => (
                compare::CompareTarget::Value,
                compare::TargetUnion::Value(self.some_value()),
            ),
            _ => (
                compare::CompareTarget::Lease,
                compare::TargetUnion::Lease(self.some_lease()),
            ),
        };
        Compare {
            result: self.rng.below(4) as i32,
            target: target as i32,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    /// A value some client may have written: values are `c<client>.<op>` and sort by both.
    fn some_value(&mut self) -> Bytes {
        let client = self.rng.below(self.options.clients.max(1));
        let op = self.rng.below(self.issued.max(1));
        Bytes::from(format!("c{client}.{op}"))
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    out.push(b'0' + (n % 10) as u8);
}
