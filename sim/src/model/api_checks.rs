//! The checks etcd's API layer makes before a request reaches the store, restated naively:
//! which requests a member refuses outright, and with which error.

use detcd::error::EtcdError;
use detcd::proto::etcdserverpb::request_op::Request;
use detcd::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if !(0..=2).contains(&r.sort_order) || !(0..=4).contains(&r.sort_target) {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(p: &PutRequest) -> Result<(), EtcdError> {
    if p.key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else if p.ignore_value && !p.value.is_empty() {
        Err(EtcdError::ValueProvided)
    } else if p.ignore_lease && p.lease != 0 {
        Err(EtcdError::LeaseProvided)
    } else {
        Ok(())
    }
}

fn check_txn_request(t: &TxnRequest, max: usize) -> Result<(), EtcdError> {
    let n = t.compare.len().max(t.success.len()).max(t.failure.len());
    if n > max {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(EtcdError::EmptyKey)
            }
            Some(Request::RequestDeleteRange(_)) => {}
            Some(Request::RequestTxn(inner)) => check_txn_request(inner, max - n)?,
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

type Interval = (Vec<u8>, Vec<u8>);

fn hits(dels: &[Interval], k: &[u8]) -> bool {
    dels.iter().any(|(b, e)| &b[..] <= k && k < &e[..])
}

fn write_intervals(ops: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = vec![];
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                [&d.key[..], &[0u8]].concat()
            } else {
                d.range_end.to_vec()
            };
            dels.push((d.key.to_vec(), end));
        }
    }
    let mut puts: Vec<Vec<u8>> = vec![];
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            let (then_puts, then_dels) = write_intervals(&t.success)?;
            let (else_puts, else_dels) = write_intervals(&t.failure)?;
            for k in &then_puts {
                if puts.contains(k) || hits(&dels, k) {
                    return Err(EtcdError::DuplicateKey);
                }
                puts.push(k.clone());
            }
            for k in &else_puts {
                if (puts.contains(k) && !then_puts.contains(k)) || hits(&dels, k) {
                    return Err(EtcdError::DuplicateKey);
                }
                // A set in etcd: a key put in both branches is one entry.
                if !puts.contains(k) {
                    puts.push(k.clone());
                }
            }
            dels.extend(then_dels);
            dels.extend(else_dels);
        }
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key.to_vec()) || hits(&dels, &p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.push(p.key.to_vec());
        }
    }
    Ok((puts, dels))
}

/// etcd's txn checks with at most `max_ops` compares or operations per branch.
pub fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_request(t, max_ops)?;
    write_intervals(&t.success)?;
    write_intervals(&t.failure)?;
    Ok(())
}

pub fn check_delete_range(d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if d.key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else {
        Ok(())
    }
}
