//! Client deadlines answered as etcd answers them. A client's deadline reaches the server as
//! the `grpc-timeout` header; tonic's server enforces it by answering CANCELLED "Timeout
//! expired", which no etcd client expects, and detcd serves its client port without that layer
//! (`client_port.rs`). etcd's server stops waiting when the request's context ends: a proposal
//! then fails with `etcdserver: request timed out` (Unavailable), a read with the context's own
//! error, Unknown `context deadline exceeded` (both observed on etcd 3.4.23, tests/integration/deadline.rs).
//! This layer answers the same, just before the deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderMap, Request, Response};
use tonic::body::BoxBody;
use tonic::Status;
use tower::{Layer, Service};

use super::grpc::status;
use crate::error::EtcdError;

/// How much earlier than the client's deadline the answer goes out, to reach the client before
/// its own timer fires. 10 ms was too little on a loaded 2-core machine: CI once saw the server's
/// timer fire 12 ms late and the client give up first.
const AHEAD_OF_DEADLINE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdDeadlineLayer;

impl<S> Layer<S> for EtcdDeadlineLayer {
    type Service = EtcdDeadline<S>;

    fn layer(&self, inner: S) -> EtcdDeadline<S> {
        EtcdDeadline { inner }
    }
}

#[derive(Clone, Debug)]
pub struct EtcdDeadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<Request<B>> for EtcdDeadline<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    /// A request without a deadline is answered by the inner future itself, unboxed.
    type Future = Either<S::Future, BoxFuture<Result<Response<BoxBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let deadline = grpc_timeout(request.headers());
        let read = request.uri().path() == "/etcdserverpb.KV/Range";
        let answer = self.inner.call(request);
        let Some(deadline) = deadline else {
            return Either::Left(answer);
        };
        Either::Right(Box::pin(async move {
            let wait = deadline.saturating_sub(AHEAD_OF_DEADLINE).max(deadline / 2);
            match tokio::time::timeout(wait, answer).await {
                Ok(answered) => answered,
                Err(_) if read => Ok(Status::unknown("context deadline exceeded").into_http()),
                Err(_) => Ok(status(EtcdError::Timeout).into_http()),
            }
        }))
    }
}

/// The `grpc-timeout` header: up to 8 digits and a unit (gRPC over HTTP/2); None if absent or
/// malformed (the request then waits without one).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        headers
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout(&header("5S")), Some(Duration::from_secs(5)));
        assert_eq!(
            grpc_timeout(&header("4999m")),
            Some(Duration::from_millis(4999))
        );
        assert_eq!(grpc_timeout(&header("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(&header("250u")),
            Some(Duration::from_micros(250))
        );
        for bad in ["", "S", "123456789S", "5x", "-5S"] {
            let headers = if bad.is_empty() {
                HeaderMap::new()
            } else {
                header(bad)
            };
            assert_eq!(grpc_timeout(&headers), None, "{bad:?}");
        }
    }
}
