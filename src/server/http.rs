//! etcd's HTTP endpoints on the client port, beside gRPC (HTTP/1.1 or HTTP/2): `/health`,
//! `/livez`, `/readyz` (and `/livez/<check>`, `/readyz/<check>`), `/version`. Their checks and
//! answers are etcd 3.6's:
//! - `/health`: 503 with `{"health":"false","reason":...}` on an alarm (`?exclude=NOSPACE`
//!   ignores one), no leader, or a failing read (linearizable unless `?serializable=true`);
//! - `/livez`: a serializable read; `/readyz`: no CORRUPT alarm, a serializable and a
//!   linearizable read, not a learner. `ok` when they pass (each check listed with
//!   `?verbose`), 503 with every check's result when one fails; `?exclude=NAME` skips one.
//!
//! `/metrics` answers in Prometheus' text format (`metrics.rs`), `/v3/...` and `/v3beta/...`
//! are the JSON gateway's (`gateway.rs`). Every other gRPC request goes on to the gRPC
//! services; any other HTTP request gets 404. On a `--listen-metrics-urls` listener the same
//! endpoints answer, without the gateway, in front of [`NotFound`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Body;
use tonic::body::BoxBody;
use tower::{Layer, Service};

use super::access::{self, AccessControl};
use super::driver::DriverHandle;
use super::gateway::Gateway;
use super::metrics::ServerMetrics;
use crate::node::{ETCD_VERSION, STORAGE_VERSION};
use crate::proto::etcdserverpb::{RangeRequest, StatusRequest};

#[derive(Clone)]
pub struct EtcdHttpLayer {
    driver: DriverHandle,
    metrics: Arc<ServerMetrics>,
    /// None on a metrics listener.
    gateway: Option<Arc<Gateway>>,
    /// `--cors` and `--host-whitelist`; None on a metrics listener, which etcd does not guard.
    access: Option<Arc<AccessControl>>,
    /// Whether the listener is `https://` (no host check then).
    secure: bool,
}

impl EtcdHttpLayer {
    pub fn new(
        driver: DriverHandle,
        metrics: Arc<ServerMetrics>,
        gateway: Gateway,
        access: AccessControl,
        secure: bool,
    ) -> EtcdHttpLayer {
        EtcdHttpLayer {
            driver,
            metrics,
            gateway: Some(Arc::new(gateway)),
            access: Some(Arc::new(access)),
            secure,
        }
    }

    /// The endpoints alone, for a `--listen-metrics-urls` listener.
    pub fn metrics_only(driver: DriverHandle, metrics: Arc<ServerMetrics>) -> EtcdHttpLayer {
        EtcdHttpLayer {
            driver,
            metrics,
            gateway: None,
            access: None,
            secure: false,
        }
    }
}

/// What a metrics listener answers past its endpoints: 404, gRPC calls included.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<BoxBody>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<BoxBody>, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        std::future::ready(Ok(not_found()))
    }
}

impl<S> Layer<S> for EtcdHttpLayer {
    type Service = EtcdHttp<S>;

    fn layer(&self, inner: S) -> EtcdHttp<S> {
        EtcdHttp {
            inner,
            driver: self.driver.clone(),
            metrics: self.metrics.clone(),
            gateway: self.gateway.clone(),
            access: self.access.clone(),
            secure: self.secure,
        }
    }
}

#[derive(Clone)]
pub struct EtcdHttp<S> {
    inner: S,
    driver: DriverHandle,
    metrics: Arc<ServerMetrics>,
    gateway: Option<Arc<Gateway>>,
    access: Option<Arc<AccessControl>>,
    secure: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<Request<B>> for EtcdHttp<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    /// gRPC requests are answered by the inner future itself, unboxed.
    type Future = Either<S::Future, BoxFuture<Result<Response<BoxBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_grpc(&request) && Endpoint::of(request.uri().path()).is_none() {
            return Either::Left(self.inner.call(request));
        }
        let Some(access) = self.access.clone() else {
            return Either::Right(self.answer(request));
        };
        if let Some(refused) = access.refusal(&request, self.secure) {
            return Either::Right(Box::pin(std::future::ready(Ok(refused))));
        }
        let origin = access.allowed_origin(request.headers());
        let answer = if request.method() == Method::OPTIONS {
            Box::pin(std::future::ready(Ok(access::preflight_answer())))
        } else {
            self.answer(request)
        };
        let Some(origin) = origin else {
            return Either::Right(answer);
        };
        Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            access::add_cors_headers(&mut response, origin);
            Ok(response)
        }))
    }
}

impl<S> EtcdHttp<S> {
    /// A request that is not a gRPC call: an endpoint's, the gateway's, or 404.
    fn answer<B, E>(&self, request: Request<B>) -> BoxFuture<Result<Response<BoxBody>, E>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        E: Send + 'static,
    {
        let Some(endpoint) = Endpoint::of(request.uri().path()) else {
            if let Some(gateway) = self
                .gateway
                .as_ref()
                .filter(|_| Gateway::owns(request.uri().path()))
            {
                let gateway = gateway.clone();
                return Box::pin(async move { Ok(gateway.answer(request).await) });
            }
            return Box::pin(std::future::ready(Ok(not_found())));
        };
        let driver = self.driver.clone();
        let metrics = self.metrics.clone();
        let query = Query::parse(request.uri().query().unwrap_or(""));
        let get = request.method() == Method::GET;
        Box::pin(async move {
            if !get {
                return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"));
            }
            Ok(endpoint.answer(&driver, &metrics, &query).await)
        })
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The checks `/livez` and `/readyz` run, in the order they are listed.
const LIVEZ: &[&str] = &["serializable_read"];
const READYZ: &[&str] = &[
    "data_corruption",
    "linearizable_read",
    "non_learner",
    "serializable_read",
];

enum Endpoint {
    Health,
    Version,
    Metrics,
    /// A probe and the checks it runs (all of the probe's, or the one its sub-path names).
    Probe(&'static [&'static str]),
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        let probe = |checks: &'static [&'static str], rest: &str| match rest {
            "" => Some(Endpoint::Probe(checks)),
            name => checks
                .iter()
                .position(|c| Some(*c) == name.strip_prefix('/'))
                .map(|i| Endpoint::Probe(&checks[i..=i])),
        };
        match path {
            "/health" => Some(Endpoint::Health),
            "/version" => Some(Endpoint::Version),
            "/metrics" => Some(Endpoint::Metrics),
            _ if path.starts_with("/livez") => probe(LIVEZ, &path["/livez".len()..]),
            _ if path.starts_with("/readyz") => probe(READYZ, &path["/readyz".len()..]),
            _ => None,
        }
    }

    async fn answer(
        &self,
        driver: &DriverHandle,
        metrics: &ServerMetrics,
        query: &Query,
    ) -> Response<BoxBody> {
        match self {
            Endpoint::Metrics => respond(
                StatusCode::OK,
                PROMETHEUS_TEXT,
                metrics.render(driver).await,
            ),
            Endpoint::Version => json(
                StatusCode::OK,
                format!(
                    r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_VERSION}","storage":"{STORAGE_VERSION}"}}"#
                ),
            ),
            Endpoint::Health => health(driver, query).await,
            Endpoint::Probe(checks) => probe(driver, checks, query).await,
        }
    }
}

/// What the member says of itself: its leader, its alarms' names, whether it is a learner.
struct Local {
    has_leader: bool,
    alarms: Vec<String>,
    learner: bool,
}

async fn local(driver: &DriverHandle) -> Result<Local, String> {
    let status = driver
        .call(StatusRequest {})
        .await
        .map_err(|e| e.to_string())?;
    let alarms = status
        .errors
        .iter()
        .filter_map(|e| e.split("alarm:").nth(1))
        .map(|name| name.trim().to_string())
        .collect();
    Ok(Local {
        has_leader: status.leader != 0,
        alarms,
        learner: status.is_learner,
    })
}

async fn read(driver: &DriverHandle, serializable: bool) -> Result<(), String> {
    let request = RangeRequest {
        key: Bytes::from_static(b"health"),
        keys_only: true,
        limit: 1,
        serializable,
        ..RangeRequest::default()
    };
    driver
        .call(request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn health(driver: &DriverHandle, query: &Query) -> Response<BoxBody> {
    let serializable = query.serializable;
    let reason = match local(driver).await {
        Err(e) => Some(format!("RANGE ERROR:{e}")),
        Ok(me) => match me.alarms.iter().find(|a| !query.exclude.contains(a)) {
            Some(alarm) => Some(format!("ALARM {alarm}")),
            None if !serializable && !me.has_leader => Some("RAFT NO LEADER".to_string()),
            None => read(driver, serializable)
                .await
                .err()
                .map(|e| format!("RANGE ERROR:{e}")),
        },
    };
    match reason {
        None => text(StatusCode::OK, r#"{"health":"true","reason":""}"#),
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "{{\"health\":\"false\",\"reason\":{}}}\n",
                json_string(&reason)
            ),
        ),
    }
}

async fn probe(driver: &DriverHandle, checks: &[&str], query: &Query) -> Response<BoxBody> {
    let me = local(driver).await;
    let mut report = String::new();
    let mut failed = false;
    for check in checks
        .iter()
        .filter(|c| !query.exclude.iter().any(|e| e == *c))
    {
        let result = match (*check, &me) {
            (_, Err(e)) => Err(e.clone()),
            ("data_corruption", Ok(me)) if me.alarms.iter().any(|a| a == "CORRUPT") => {
                Err("alarm activated: CORRUPT".to_string())
            }
            ("non_learner", Ok(me)) if me.learner => Err("not supported for learner".to_string()),
            ("serializable_read", _) => read(driver, true).await,
            ("linearizable_read", _) => read(driver, false).await,
            _ => Ok(()),
        };
        match result {
            Ok(()) => report.push_str(&format!("[+]{check} ok\n")),
            Err(e) => {
                failed = true;
                report.push_str(&format!("[-]{check} failed: {e}\n"));
            }
        }
    }
    if failed {
        return text(StatusCode::SERVICE_UNAVAILABLE, &format!("{report}\n"));
    }
    let body = if query.verbose {
        format!("{report}ok\n")
    } else {
        "ok\n".to_string()
    };
    text(StatusCode::OK, &body)
}

/// The query parameters the endpoints read.
#[derive(Default)]
struct Query {
    serializable: bool,
    verbose: bool,
    exclude: Vec<String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "serializable" => parsed.serializable = value == "true",
                "verbose" => parsed.verbose = true,
                "exclude" if !value.is_empty() => parsed.exclude.push(value.to_string()),
                _ => {}
            }
        }
        parsed
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json(status: StatusCode, body: String) -> Response<BoxBody> {
    respond(status, "application/json", body)
}

/// Prometheus' text exposition format, as its client libraries label it.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn not_found() -> Response<BoxBody> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<BoxBody> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<BoxBody> {
    let mut response = Response::new(tonic::body::boxed(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_checks() {
        assert!(matches!(Endpoint::of("/health"), Some(Endpoint::Health)));
        assert!(matches!(Endpoint::of("/version"), Some(Endpoint::Version)));
        assert!(matches!(Endpoint::of("/readyz"), Some(Endpoint::Probe(c)) if c.len() == 4));
        assert!(
            matches!(Endpoint::of("/readyz/non_learner"), Some(Endpoint::Probe(c)) if c == ["non_learner"])
        );
        assert!(Endpoint::of("/readyz/nothing").is_none());
        assert!(Endpoint::of("/etcdserverpb.KV/Range").is_none());
        let q = Query::parse("exclude=NOSPACE&serializable=true&verbose");
        assert!(q.serializable && q.verbose && q.exclude == ["NOSPACE"]);
        assert_eq!(json_string("a\"b"), "\"a\\\"b\"");
    }
}
