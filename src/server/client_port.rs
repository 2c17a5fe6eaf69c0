//! The client port's connections: accepted here and served by hyper directly, each request
//! routed to its gRPC service by the service name in its path.
//!
//! tonic's own server wraps every request in several layers that detcd does not use (an axum
//! router that decodes the path into URL parameters, a boxed clone of the service stack, the
//! connection's address as a request extension, a boxed request body, a timer for
//! `grpc-timeout` that [`super::deadline`] makes redundant): about ten allocations of the
//! fifty a put cost on the leader. [`GrpcRoutes`] takes their place; the HTTP/2 settings are
//! tonic's defaults, so clients see the same server.

use crate::server::log;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::body::BoxBody;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower::Service;

use super::authority::AuthorityRepair;
use super::coalesce::CoalescedWrites;
use super::direct::HotServices;
use super::tls_identity::PeerCommonName;
use super::watch_stream::WatchService;
use crate::proto::etcdserverpb::kv_server::SERVICE_NAME as KV_SERVICE;
use crate::proto::etcdserverpb::lease_server::SERVICE_NAME as LEASE_SERVICE;
use crate::proto::etcdserverpb::watch_server::SERVICE_NAME as WATCH_SERVICE;

/// A rarely called service of the client port: a call clones it (as tower requires a service
/// of its own per call) and calls the clone.
type Routed = Arc<dyn Fn(Request<Incoming>) -> Answer + Send + Sync>;

/// Pause after a failed accept (out of file descriptors, say), so that the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A client that opens a connection but does not finish its TLS handshake is dropped after
/// this long, so that it cannot hold the connection's memory forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client connection's HTTP/2 settings from etcd's flags: the server's pings of idle
/// connections (`--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: sent after
/// `keepalive_interval` without activity, the connection closed when one goes unanswered for
/// `keepalive_timeout`; a client that pings often is never refused, where etcd refuses one more
/// often than `--grpc-keepalive-min-time`: hyper has no such policy), and the streams a client
/// may open at once (`--max-concurrent-streams`, no limit by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Settings {
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub max_concurrent_streams: Option<u32>,
}

/// The gRPC services by name. The hot ones are held by type, so that a call goes straight to
/// its server (KV and Lease in `direct.rs`, Watch in `watch_stream.rs`); the rest are boxed and
/// shared, since hyper clones the routes for every request (a boxed service's clone is an
/// allocation).
#[derive(Clone)]
pub struct GrpcRoutes {
    pub hot: HotServices,
    pub watch: WatchService,
    pub others: Arc<Vec<(&'static str, Routed)>>,
}

impl GrpcRoutes {
    /// Adds a service that is called rarely enough for a call through a pointer.
    pub fn with<S: Generated + Clone + Send + Sync + 'static>(mut self, service: S) -> Self {
        let routed: Routed = Arc::new(move |request| service.clone().call(request));
        Arc::make_mut(&mut self.others).push((S::NAME, routed));
        self
    }
}

pub type Answer = BoxFuture<Response<BoxBody>, Infallible>;

/// A generated gRPC server, whose calls all answer the same boxed future.
pub trait Generated:
    Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible, Future = Answer>
    + NamedService
{
}

impl<S> Generated for S where
    S: Service<
            Request<Incoming>,
            Response = Response<BoxBody>,
            Error = Infallible,
            Future = Answer,
        > + NamedService
{
}

impl Service<Request<Incoming>> for GrpcRoutes {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every generated server is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _method)| service);
        if service == KV_SERVICE {
            return self.hot.kv(request);
        }
        if service == LEASE_SERVICE {
            return self.hot.lease(request);
        }
        if service == WATCH_SERVICE {
            return self.watch.call(request);
        }
        match self.others.iter().find(|(name, _)| *name == service) {
            Some((_, routed)) => routed(request),
            None => Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) }),
        }
    }
}

/// Accepts client connections until `shutdown` turns true, then lets each finish what it
/// serves (as tonic's graceful shutdown does) and returns once all have closed. With `tls`,
/// each connection is served once its TLS handshake is done.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    http2: Http2Settings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http2.max_concurrent_streams)
        .keep_alive_interval(http2.keepalive_interval)
        .keep_alive_timeout(http2.keepalive_timeout)
        .adaptive_window(false);
    let (closing, connections) = tokio::sync::watch::channel(());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warning!("detcd: accepting a client connection failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Nagle's algorithm held every small response ~40 ms.
        if let Err(e) = socket.set_nodelay(true) {
            log::warning!("detcd: cannot set TCP_NODELAY on a client connection: {e}");
        }
        let service = service.clone();
        let (builder, closing) = (builder.clone(), connections.clone());
        let Some(tls) = &tls else {
            let io = AuthorityRepair::new(CoalescedWrites::new(socket));
            let service = TowerToHyperService::new(service);
            tokio::spawn(serve_connection(builder, io, service, closing));
            continue;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket));
        tokio::spawn(async move {
            // The client learns why from its TLS alert; the log says it as etcd's does.
            match handshake.await {
                Ok(Ok(stream)) => {
                    let name = PeerCommonName::of(stream.get_ref().1.peer_certificates());
                    let io = AuthorityRepair::new(CoalescedWrites::new(stream));
                    let named = tower::ServiceExt::map_request(
                        service,
                        move |mut request: Request<Incoming>| {
                            if let Some(name) = &name {
                                request.extensions_mut().insert(name.clone());
                            }
                            request
                        },
                    );
                    let service = TowerToHyperService::new(named);
                    serve_connection(builder, io, service, closing).await;
                }
                Ok(Err(e)) => log::warning!("detcd: rejected connection from {from}: {e}"),
                Err(_) => {
                    log::warning!("detcd: rejected connection from {from}: TLS handshake timed out")
                }
            }
        });
    }
    drop(connections);
    let _ = closing.send(());
    closing.closed().await;
}

async fn serve_connection<IO, S>(
    builder: auto::Builder<TokioExecutor>,
    io: IO,
    service: TowerToHyperService<S>,
    mut closing: tokio::sync::watch::Receiver<()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing_seen = false;
    loop {
        tokio::select! {
            // A client that goes away mid-request is routine: nothing to report.
            _ = connection.as_mut() => return,
            _ = closing.changed(), if !closing_seen => {
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
