//! The client port's gRPC services: etcd's `etcdserverpb.KV` and the standard health service.
//! Each call becomes one client request to the node; the node's answer or etcd error comes back
//! unchanged, with etcd's status code and message.

use tonic::{Request, Response, Status};

use super::driver::DriverHandle;
use crate::error::EtcdError;
use crate::node::{ClientRequest, ClientResponse};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

pub fn status(err: EtcdError) -> Status {
    Status::new(tonic::Code::from_i32(err.code() as i32), err.to_string())
}

pub struct KvService {
    driver: DriverHandle,
}

impl KvService {
    pub fn new(driver: DriverHandle) -> KvService {
        KvService { driver }
    }

    async fn call(&self, request: ClientRequest) -> Result<ClientResponse, Status> {
        self.driver.call(request).await.map_err(status)
    }
}

fn mismatch(what: &str) -> Status {
    Status::internal(format!("the node answered a {what} request with another kind of response"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        match self.call(ClientRequest::Range(request.into_inner())).await? {
            ClientResponse::Range(r) => Ok(Response::new(r)),
            _ => Err(mismatch("range")),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        match self.call(ClientRequest::Put(request.into_inner())).await? {
            ClientResponse::Put(r) => Ok(Response::new(r)),
            _ => Err(mismatch("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        match self.call(ClientRequest::DeleteRange(request.into_inner())).await? {
            ClientResponse::DeleteRange(r) => Ok(Response::new(r)),
            _ => Err(mismatch("delete range")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        match self.call(ClientRequest::Txn(request.into_inner())).await? {
            ClientResponse::Txn(r) => Ok(Response::new(r)),
            _ => Err(mismatch("txn")),
        }
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        match self.call(ClientRequest::Compact(request.into_inner())).await? {
            ClientResponse::Compact(r) => Ok(Response::new(r)),
            _ => Err(mismatch("compaction")),
        }
    }
}
