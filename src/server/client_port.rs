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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_rustls::TlsAcceptor;
use tonic::body::BoxBody;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower::util::MapRequest;
use tower::Service;

use super::authority::AuthorityRepair;
use super::coalesce::CoalescedWrites;
use super::direct::HotServices;
use super::grpc::status;
use super::leader_presence::LeaderPresence;
use super::tls_identity::PeerCommonName;
use super::watch_stream::WatchService;
use crate::error::EtcdError;
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
    /// Whether the member has a leader, for the calls that require one.
    pub presence: Arc<LeaderPresence>,
}

/// Whether a call carries the gRPC metadata `hasleader=true` (clientv3's `WithRequireLeader`;
/// clientv3's lease keepalive stream always does).
pub fn requires_leader(headers: &HeaderMap) -> bool {
    headers.get("hasleader").is_some_and(|v| v == "true")
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

    /// A call that requires a leader is refused with `etcdserver: no leader` while the member
    /// has none, whatever its service, as etcd's interceptors refuse it; the rest go straight
    /// to their service.
    fn call(&mut self, request: Request<Incoming>) -> Answer {
        if requires_leader(request.headers()) && !self.presence.has_leader() {
            let refused = status(EtcdError::NoLeader).into_http();
            return Box::pin(std::future::ready(Ok(refused)));
        }
        self.route(request)
    }
}

impl GrpcRoutes {
    fn route(&mut self, request: Request<Incoming>) -> Answer {
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
/// each connection is served once its TLS handshake is done. With `watch_io`, a connection
/// moves there when it opens its first watch stream ([`Relocation`]).
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    http2: Http2Settings,
    watch_io: Option<Handle>,
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
        let relocation = Relocation::new(watch_io.clone());
        let service = relocation.watch_streams_of(service.clone());
        let (builder, closing) = (builder.clone(), connections.clone());
        let Some(tls) = &tls else {
            let io = AuthorityRepair::new(CoalescedWrites::new(socket));
            let service = TowerToHyperService::new(service);
            relocation.spawn(serve_connection(builder, io, service, closing));
            continue;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket));
        relocation.spawn(async move {
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

/// Moves a connection that carries watch streams to the watch thread's runtime, which runs at a
/// lower CPU priority than the client port's (`watch::spawn`).
///
/// A watch stream's events cost its connection's task far more than the requests it carries
/// (ten thousand watchers of one prefix: thousands of responses per put, each written to the
/// socket), and tokio has no priorities among the tasks of one runtime: with those writes on
/// the client port's workers, a put of another connection waits behind them. Moved, the writes
/// take the CPU the requests leave, beside the hub that encodes them. The watch thread rather
/// than a runtime of its own: another thread's allocator heap cost about 80 bytes per watcher
/// more at ten thousand watchers, with no more events per second on two cores. A connection
/// moves once, when its first watch stream opens; its requests go with it (a client that
/// multiplexes puts and watches over one connection, as clientv3 does, is served as one), and
/// tasks it spawned before (that first stream's own) stay where they are.
struct Relocation {
    watch_io: Option<Handle>,
    watch_opened: Arc<WatchOpened>,
}

/// Whether a request of the connection opened a watch stream, and the connection's task to
/// wake when one does. The task registers itself once (a task's waker wakes that task
/// whichever copy is used), so that each later poll costs one atomic load.
#[derive(Default)]
struct WatchOpened {
    opened: AtomicBool,
    task: OnceLock<Waker>,
}

impl WatchOpened {
    fn notify(&self) {
        if !self.opened.swap(true, Ordering::SeqCst) {
            // Pairs with the fence in `Hosted::poll`: either the task sees `opened`, or this
            // sees its waker.
            fence(Ordering::SeqCst);
            if let Some(task) = self.task.get() {
                task.wake_by_ref();
            }
        }
    }
}

/// A connection's serving future, boxed so that it can move to another runtime mid-flight.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Relocation {
    fn new(watch_io: Option<Handle>) -> Relocation {
        Relocation {
            watch_io,
            watch_opened: Arc::default(),
        }
    }

    /// `service`, telling this relocation when a request opens a watch stream.
    fn watch_streams_of<S, B>(
        &self,
        service: S,
    ) -> MapRequest<S, impl FnMut(Request<B>) -> Request<B> + Clone> {
        let watch_opened = self.watch_opened.clone();
        MapRequest::new(service, move |request: Request<B>| {
            if request.uri().path().starts_with(WATCH_PATH_PREFIX) {
                watch_opened.notify();
            }
            request
        })
    }

    /// Serves `connection` on the current runtime until a watch stream opens on it, then on
    /// the watch runtime.
    fn spawn(self, connection: impl Future<Output = ()> + Send + 'static) {
        let Some(watch_io) = self.watch_io else {
            tokio::spawn(connection);
            return;
        };
        tokio::spawn(Hosted {
            serving: Some(Box::pin(connection)),
            watch_opened: self.watch_opened,
            watch_io,
        });
    }
}

/// The task that serves a connection until it moves: the move is the hosted future spawned
/// on the watch runtime, where it goes on from where it was.
struct Hosted {
    serving: Option<Serving>,
    watch_opened: Arc<WatchOpened>,
    watch_io: Handle,
}

impl Future for Hosted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.watch_opened.task.get().is_none() {
            let _ = this.watch_opened.task.set(cx.waker().clone());
            fence(Ordering::SeqCst);
        }
        if this.watch_opened.opened.load(Ordering::SeqCst) {
            let serving = this.serving.take().expect("polled after it moved");
            this.watch_io.spawn(serving);
            return Poll::Ready(());
        }
        let serving = this.serving.as_mut().expect("polled after it moved");
        serving.as_mut().poll(cx)
    }
}

/// The path of every method of etcd's Watch service.
const WATCH_PATH_PREFIX: &str = "/etcdserverpb.Watch/";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn runtime(name: &str) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name(name)
            .build()
            .expect("a runtime")
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    #[test]
    fn a_connection_moves_to_the_watch_runtime_once_a_watch_stream_opens() {
        let (client_port, watch_io) = (runtime("client-port"), runtime("watch-io"));
        let relocation = Relocation::new(Some(watch_io.handle().clone()));
        let watch_opened = relocation.watch_opened.clone();
        let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
        let (polled_on, polls) = mpsc::channel();
        // Stands for a connection: each request it serves reports the thread serving it, and
        // it serves one request per poll.
        let connection = async move {
            while woken.recv().await.is_some() {
                polled_on.send(thread_name()).expect("the test listens");
                tokio::task::yield_now().await;
            }
        };
        client_port.block_on(async { relocation.spawn(connection) });
        let serve_one = || {
            wake.blocking_send(()).expect("the connection runs");
            polls.recv().expect("the connection answers")
        };
        assert_eq!(serve_one(), "client-port");
        assert_eq!(serve_one(), "client-port");
        watch_opened.notify();
        // The move comes at the connection's next poll: one under way when the watch stream
        // opened may serve one request more where it is.
        let served: Vec<String> = (0..5).map(|_| serve_one()).collect();
        let moved = served.iter().position(|name| name == "watch-io");
        let moved = moved.expect("the connection moved to the watch runtime");
        assert!(moved <= 1, "moved only after {moved} requests: {served:?}");
        let after = &served[moved..];
        assert!(after.iter().all(|name| name == "watch-io"), "{served:?}");
    }

    #[test]
    fn only_the_watch_service_moves_a_connection() {
        let client_port = runtime("client-port");
        let relocation = Relocation::new(None);
        let watch_opened = relocation.watch_opened.clone();
        let echo = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(request.uri().path().to_owned())
        });
        let service = relocation.watch_streams_of(echo);
        let notified_after = |path: &str| {
            client_port.block_on(async {
                let request = Request::builder().uri(path).body(()).expect("a request");
                tower::ServiceExt::oneshot(service.clone(), request)
                    .await
                    .expect("answered");
            });
            watch_opened.opened.load(Ordering::SeqCst)
        };
        assert!(!notified_after("/etcdserverpb.KV/Put"));
        assert!(!notified_after("/v3/watch"));
        assert!(notified_after("/etcdserverpb.Watch/Watch"));
    }
}
