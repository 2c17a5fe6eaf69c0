//! The client port's `etcdserverpb.Lease` service (KV's calls are served in `unary.rs`), and
//! the statuses etcd's errors travel in. Each call becomes one client request to the node; the
//! node's answer or etcd error comes back unchanged, with etcd's status code and message.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::driver::{Answer, DriverHandle};
use crate::api::Rpc;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub fn status(err: EtcdError) -> Status {
    Status::new(tonic::Code::from_i32(err.code() as i32), err.to_string())
}

/// One unary call: the request to the node, its typed answer or etcd's error back.
pub(super) async fn unary<R: Rpc>(
    driver: &DriverHandle,
    request: Request<R>,
) -> Result<Response<R::Response>, Status> {
    driver
        .call(request.into_inner())
        .await
        .map(Response::new)
        .map_err(status)
}

/// Keepalives one stream may have at the node at once; past it the stream stops reading until
/// an answer goes out, so a flood of keepalives meets backpressure instead of queueing.
const KEEPALIVES_IN_FLIGHT_MAX: usize = 64;

pub struct LeaseService {
    driver: DriverHandle,
}

impl LeaseService {
    pub fn new(driver: DriverHandle) -> LeaseService {
        LeaseService { driver }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        unary(&self.driver, request).await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Ok(Response::new(Box::pin(KeepAlives {
            driver: self.driver.clone(),
            requests: request.into_inner(),
            in_flight: VecDeque::new(),
            reading: true,
            failed: false,
        })))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        unary(&self.driver, request).await
    }
}

/// One keepalive stream, served as tonic pulls answers from it (no task or channel of its
/// own: clientv3's KeepAliveOnce opens a stream per keepalive). Each request is answered with
/// the lease's TTL (0 when the lease is gone), in order; as etcd does, any other error ends the
/// stream with that error. Requests are read only while fewer than `KEEPALIVES_IN_FLIGHT_MAX`
/// are at the node, and answers are made only as fast as the client takes them.
struct KeepAlives {
    driver: DriverHandle,
    requests: Streaming<LeaseKeepAliveRequest>,
    /// The answers owed, in the order of the requests: only the first is polled, since the
    /// others could not be sent before it anyway.
    in_flight: VecDeque<Answer<LeaseKeepAliveRequest>>,
    /// False once the client closed its side or went away: what it asked is still answered.
    reading: bool,
    failed: bool,
}

impl Stream for KeepAlives {
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        while this.reading && this.in_flight.len() < KEEPALIVES_IN_FLIGHT_MAX {
            match this.requests.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    this.in_flight.push_back(this.driver.submit(request));
                }
                Poll::Ready(Some(Err(_)) | None) => this.reading = false,
                Poll::Pending => break,
            }
        }
        let Some(first) = this.in_flight.front_mut() else {
            return if this.reading {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        };
        let answer = ready!(Pin::new(first).poll(cx));
        this.in_flight.pop_front();
        this.failed = answer.is_err();
        Poll::Ready(Some(answer.map_err(status)))
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
