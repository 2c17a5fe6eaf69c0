//! The load generator's gRPC connections: hyper's HTTP/2 client connection, driven by a task of
//! its own, with the generated clients calling it directly.
//!
//! The generator shares the machine's two cores with the members it measures, so every
//! microsecond it spends per request is taken from them, for etcd and detcd alike. tonic's
//! `Channel` puts a `tower::Buffer` between the caller and the connection (a channel send and a
//! hand-off to a worker task per request) and writes each request's frames as they come (a
//! `writev` per request under 100 clients). Here a request goes from the caller straight to the
//! connection, and the connection's writes are coalesced as the server's are
//! ([`CoalescedWrites`]), as grpc-go's clients batch theirs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use detcd::server::coalesce::CoalescedWrites;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::body::BoxBody;

use crate::REQUEST_TIMEOUT;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct Channel {
    requests: SendRequest<BoxBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

/// Connects to `endpoint` (`host:port` or `http://host:port`) and spawns the connection's task.
pub async fn connect(endpoint: &str) -> Result<Channel, String> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let bad = || format!("bad endpoint {endpoint}");
    let origin: http::Uri = with_scheme.parse().map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
        return Err(bad());
    };
    let (scheme, authority) = (scheme.clone(), authority.clone());
    let address = authority.as_str();
    let socket = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    socket
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY on {address}: {e}"))?;
    let io = TokioIo::new(CoalescedWrites::new(socket));
    let (requests, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        // The connection ends when every clone of its Channel is gone or the peer closes it;
        // the requests in flight then fail with the reason.
        let _ = connection.await;
    });
    Ok(Channel {
        requests,
        scheme,
        authority,
    })
}

impl tower::Service<http::Request<BoxBody>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.requests.poll_ready(cx).map_err(Into::into)
    }

    /// The generated clients give only the path; HTTP/2 needs the scheme and authority too.
    fn call(&mut self, mut request: http::Request<BoxBody>) -> Self::Future {
        let mut uri = std::mem::take(request.uri_mut()).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        match http::Uri::from_parts(uri) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        }
        let response = self.requests.send_request(request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err("request timed out".into()),
            }
        })
    }
}
