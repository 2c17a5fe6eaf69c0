//! TEMPORARY stub with the agreed API; replaced by the real key space.
#![allow(unused)]
use crate::error::EtcdError;
use crate::proto::etcdserverpb::*;
#[derive(Debug)]
pub struct SnapshotDecodeError;
pub struct KeySpace;
impl KeySpace {
    pub fn new() -> KeySpace {
        KeySpace
    }
    pub fn current_revision(&self) -> i64 {
        1
    }
    pub fn compact_revision(&self) -> i64 {
        0
    }
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        todo!()
    }
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        todo!()
    }
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        todo!()
    }
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        todo!()
    }
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        todo!()
    }
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), EtcdError> {
        todo!()
    }
    pub fn encode_snapshot(&self) -> Vec<u8> {
        todo!()
    }
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KeySpace, SnapshotDecodeError> {
        todo!()
    }
    pub fn approximate_size_bytes(&self) -> u64 {
        0
    }
}
pub fn check_range(req: &RangeRequest) -> Result<(), EtcdError> {
    Ok(())
}
pub fn check_put(req: &PutRequest) -> Result<(), EtcdError> {
    Ok(())
}
pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    Ok(())
}
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    Ok(())
}
