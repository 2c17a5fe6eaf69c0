//! The client port's gRPC services: etcd's `etcdserverpb.KV` and the standard health service.
//! Each call becomes one client request to the node; the node's answer or etcd error comes back
//! unchanged, with etcd's status code and message.

use tonic::{Request, Response, Status};

use super::driver::DriverHandle;
use crate::error::EtcdError;
use crate::node::{ClientRequest, ClientResponse};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
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
    Status::internal(format!(
        "the node answered a {what} request with another kind of response"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        match self
            .call(ClientRequest::Range(request.into_inner()))
            .await?
        {
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
        match self
            .call(ClientRequest::DeleteRange(request.into_inner()))
            .await?
        {
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

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        match self
            .call(ClientRequest::Compact(request.into_inner()))
            .await?
        {
            ClientResponse::Compact(r) => Ok(Response::new(r)),
            _ => Err(mismatch("compaction")),
        }
    }
}

/// gRPC's receive limit answered the way etcd's server (grpc-go) answers it: tonic reports a
/// message over the limit as OutOfRange, grpc-go (and so every etcd client's expectation) as
/// ResourceExhausted "grpc: received message larger than max (N vs. M)".
pub fn etcd_receive_limit_status(
    mut response: http::Response<tonic::body::BoxBody>,
) -> http::Response<tonic::body::BoxBody> {
    let headers = response.headers_mut();
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && message.contains("decoded message length too large");
    if too_large {
        let numbers: Vec<&str> = message
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        let text = match numbers[..] {
            [found, limit, ..] => {
                format!("grpc: received message larger than max ({found} vs. {limit})")
            }
            _ => "grpc: received message larger than max".to_string(),
        };
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// grpc-message is percent-encoded on the wire.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
