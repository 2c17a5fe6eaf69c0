//! The tokio adapter: runs the pure `Node` against real sockets, files and gRPC. No node logic
//! lives here; every decision is the step machine's.
//!
//! Threads: the driver thread owns the node (driver.rs); the disk thread owns the data directory
//! (disk.rs); tokio tasks own the client port (grpc.rs) and the peer connections (peer.rs); the
//! watch thread runs the watch hub (watch.rs); the trimmer hands freed memory back (memory.rs).

mod access;
mod auth;
pub mod authority;
mod auto_tls;
mod cipher_suites;
mod client_port;
pub mod coalesce;
pub mod codec;
pub mod config;
pub mod deadline;
mod direct;
pub use direct::Unframer;
pub mod disk;
pub mod driver;
mod gateway;
pub mod grpc;
pub mod http;
mod inbox;
pub mod jwt;
mod jwt_es512;
mod keepalive;
mod large_range;
mod leader_presence;
mod local_keepalives;
pub mod local_reads;
pub mod log;
mod log_rotation;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod peer;
pub mod recipes;
pub mod restore;
mod snapshot_decoder;
pub mod tls;
mod tls_identity;
pub mod watch;
mod watch_answers;
mod watch_stream;

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::node::{Node, StopReason};
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::time::Instant;
use config::ServerConfig;
use driver::{Driver, DriverHandle, Exit, Links, Storage};

/// Client requests and peer messages waiting for the driver at once.
const DRIVER_QUEUE_MAX: usize = 65_536;
/// What etcd adds to `--max-request-bytes` before it splits a watch response into fragments
/// (its allowance for gRPC overhead); matched so that clients see the same fragments.
const WATCH_FRAGMENT_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long a member the cluster removed stays up before it exits, as etcd waits: if it led,
/// its last messages tell the others that its removal committed, and a member left alone
/// needs that to elect itself.
const REMOVED_EXIT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts a member and serves until SIGINT/SIGTERM (Ok) or a fatal error (Err, with the reason).
pub fn run(cfg: ServerConfig) -> Result<(), String> {
    log::init(&cfg.log)?;
    memory::return_freed_memory()?;
    let runtime = memory::collect_when_parked(&mut tokio::runtime::Builder::new_multi_thread())
        .worker_threads(2)
        .enable_all()
        .thread_name("detcd-io")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.spawn(memory::wake_to_collect());
    runtime.block_on(serve(cfg))
}

/// Listens on each of `addrs`, with SO_REUSEADDR as Go's listeners have it, and SO_REUSEPORT
/// with `--socket-reuse-port`.
fn bind(addrs: &[SocketAddr], what: &str, reuse_port: bool) -> Result<Vec<TcpListener>, String> {
    let listen = |addr: &SocketAddr| -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(reuse_port)?;
        socket.bind(*addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    addrs
        .iter()
        .map(|addr| listen(addr).map_err(|e| format!("cannot listen for {what} on {addr}: {e}")))
        .collect()
}

/// Connections a listener queues before it accepts them (Go's listeners take the kernel's
/// `somaxconn`, which a larger number here is capped at too).
const LISTEN_BACKLOG: u32 = 4096;

/// Seeds the node's RNG: the only randomness the member uses, drawn once from the OS clock and
/// process id (the node itself never sees where it came from).
fn os_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

async fn serve(cfg: ServerConfig) -> Result<(), String> {
    let clock_origin = std::time::Instant::now();
    let options = disk::DiskOptions {
        segment_bytes: cfg.wal_segment_bytes,
        wal_dir: cfg.wal_dir.clone(),
        unsafe_no_fsync: cfg.unsafe_no_fsync,
    };
    let loaded = disk::load_with(&cfg.data_dir, options)
        .map_err(|e| format!("cannot use data dir {}: {e}", cfg.data_dir.display()))?;
    if loaded.recovered.torn_tail_bytes > 0 {
        log::warning!(
            "detcd: dropped a torn WAL tail of {} bytes (an interrupted write)",
            loaded.recovered.torn_tail_bytes
        );
    }
    let disk::Loaded { recovered, files } = loaded;
    // Recovery read whole WAL segments (a fresh member's one preallocated segment is 64 MiB of
    // zeros) and has freed them: back to the kernel now, not when the collector next looks.
    crate::allocator::collect();
    let cold = disk::ColdFiles::open(&cfg.data_dir)
        .map_err(|e| format!("cannot use data dir {}: {e}", cfg.data_dir.display()))?;
    let mut node_cfg = cfg.node.clone();
    // Whom to dial until the node reports its member list: the flags' members, or for a
    // joining member the cluster's.
    let mut dial: std::collections::BTreeMap<u64, String> = cfg
        .members
        .iter()
        .map(|(id, (_, addr))| (*id, addr.clone()))
        .collect();
    let peer_tls = match &cfg.peer_tls {
        Some(files) => {
            let files = files.clone().with_auto_tls(
                &cfg.data_dir.join("fixtures").join("peer"),
                &cfg.listen_peer
                    .iter()
                    .map(SocketAddr::ip)
                    .collect::<Vec<_>>(),
                cfg.self_signed_cert_validity,
            )?;
            Some((files.peer_acceptor()?, files.peer_connector()?))
        }
        None => None,
    };
    let peer_connector = peer_tls.as_ref().map(|(_, connector)| connector.clone());
    if cfg.initial_cluster_state == "existing" && recovered.snapshot.is_none() {
        dial = join_cluster(&cfg, &mut node_cfg, peer_connector.as_ref()).await?;
    }
    let me = node_cfg.id;
    let node =
        Node::new(node_cfg, recovered, os_seed(), Instant::ZERO).map_err(|e| e.to_string())?;

    let client_addrs: Vec<SocketAddr> = cfg.listen_client.iter().map(|l| l.addr).collect();
    let client_listeners = bind(&client_addrs, "clients", cfg.socket_reuse_port)?;
    let metrics_addrs: Vec<SocketAddr> = cfg.listen_metrics.iter().map(|l| l.addr).collect();
    let metrics_listeners = bind(&metrics_addrs, "metrics", cfg.socket_reuse_port)?;
    let tls = if cfg
        .listen_client
        .iter()
        .chain(&cfg.listen_metrics)
        .any(|l| l.https)
    {
        let files = cfg.client_tls.clone().with_auto_tls(
            &cfg.data_dir.join("fixtures").join("client"),
            &client_addrs.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
            cfg.self_signed_cert_validity,
        )?;
        Some(files.acceptor()?)
    } else {
        None
    };
    let peer_listeners = bind(&cfg.listen_peer, "peers", cfg.socket_reuse_port)?;

    let (handle, inbox) = DriverHandle::new(DRIVER_QUEUE_MAX)
        .map_err(|e| format!("cannot set up the node's thread: {e}"))?;
    let handle = handle.with_jwt(cfg.jwt.clone());
    let identity = peer::PeerIdentity {
        cluster_id: node.cluster_id(),
        member_id: me,
    };
    let board = std::sync::Arc::new(peer::MemberBoard::default());
    let h = handle.clone();
    let hand_over: peer::HandOver = std::sync::Arc::new(move |peer| h.adopt_peer(peer));
    for listener in peer_listeners {
        let h = handle.clone();
        tokio::spawn(peer::serve(
            listener,
            (
                peer_tls.as_ref().map(|(acceptor, _)| acceptor.clone()),
                Some(hand_over.clone()),
            ),
            identity,
            board.clone(),
            move |from, msg| h.deliver_peer(from, msg),
        ));
    }
    let h = handle.clone();
    let on_removed: peer::OnRemoved =
        std::sync::Arc::new(move |from| h.deliver_peer(from, crate::node::PeerMessage::Removed));
    let peers = peer::PeerSender::new(identity, dial, on_removed, peer_connector);
    let h = handle.clone();
    let disk = disk::DiskExecutor::spawn(files, move |io, result| h.disk_done(io, result));
    let metrics = std::sync::Arc::new(metrics::ServerMetrics::new(me, disk.wal_sync_latencies()));
    let presence = std::sync::Arc::new(leader_presence::LeaderPresence::default());

    let ready = format!(
        "detcd: member {me:x} ({}) of cluster {:x} ready to serve client requests on {}",
        cfg.name,
        identity.cluster_id,
        cfg.listen_client
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let feeds = std::sync::Arc::new(watch::FeedSlot::default());
    let mut watch_config = crate::watch::WatchConfig::new(identity.cluster_id, me);
    watch_config.fragment_bytes = cfg.node.max_request_bytes + WATCH_FRAGMENT_OVERHEAD_BYTES;
    watch_config.progress_interval = cfg.watch_progress_notify_interval;
    watch_config.leaderless_grace = 3 * cfg.node.election_timeout;
    let watches = watch::spawn(watch_config, feeds.clone(), handle.clone(), clock_origin)?;
    let reads = std::sync::Arc::new(local_reads::SharedLocalReads::default());
    let keepalives =
        std::sync::Arc::new(local_keepalives::SharedLocalKeepAlives::new(clock_origin));
    let driver = Driver::new(
        node,
        inbox,
        handle.clone(),
        Storage { disk, cold },
        Links {
            peers,
            watch: feeds,
            reads: reads.clone(),
            keepalives: keepalives.clone(),
            members: board,
            metrics: metrics.clone(),
            presence: presence.clone(),
        },
        clock_origin,
        ready,
    )
    .warn_of_batches_slower_than(cfg.slow_apply_warning);
    let (driver_done, driver_ended) = tokio::sync::oneshot::channel();
    let driver_thread = std::thread::Builder::new()
        .name("detcd-node".into())
        .spawn(move || {
            let exit = driver.run();
            let _ = driver_done.send(());
            exit
        })
        .map_err(|e| format!("starting the node thread: {e}"))?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (listener, url) in client_listeners.into_iter().zip(&cfg.listen_client) {
        servers.push(tokio::spawn(serve_clients(
            listener,
            url.https.then(|| tls.clone()).flatten(),
            Services {
                driver: handle.clone(),
                watch: watches.clone(),
                reads: reads.clone(),
                keepalives: keepalives.clone(),
                metrics: metrics.clone(),
                leader: leader_presence::LeaderRule {
                    presence: presence.clone(),
                    check_every: cfg.node.election_timeout,
                },
            },
            ClientPort {
                max_request_bytes: cfg.node.max_request_bytes,
                bcrypt_cost: cfg.bcrypt_cost,
                http2: cfg.http2,
                access: cfg.access.clone(),
                watch_io: watches.runtime.clone(),
            },
            shutdown_rx.clone(),
        )));
    }

    for (listener, url) in metrics_listeners.into_iter().zip(&cfg.listen_metrics) {
        let endpoints = http::EtcdHttpLayer::metrics_only(handle.clone(), metrics.clone());
        servers.push(tokio::spawn(client_port::serve(
            listener,
            url.https.then(|| tls.clone()).flatten(),
            tower::ServiceBuilder::new()
                .layer(endpoints)
                .service(http::NotFound),
            cfg.http2,
            None,
            shutdown_rx.clone(),
        )));
    }

    // A member that stopped (removed from the cluster, a failed disk) exits as etcd does.
    tokio::select! {
        _ = wait_for_signal() => log::info!("detcd: shutting down"),
        _ = driver_ended => {}
    }
    let _ = shutdown_tx.send(true);
    handle.shutdown();
    let exit = tokio::task::spawn_blocking(move || driver_thread.join())
        .await
        .map_err(|e| format!("joining the node thread: {e}"))?
        .map_err(|_| "the node thread panicked".to_string())?;
    for server in servers {
        server.abort();
    }
    match exit {
        Exit::Shutdown => Ok(()),
        Exit::Removed => {
            tokio::time::sleep(REMOVED_EXIT_DELAY).await;
            Err(format!("member stopped: {}", StopReason::Removed))
        }
        Exit::Failed(reason) => Err(format!("member stopped: {reason}")),
    }
}

/// A member with an empty disk joining a running cluster (`--initial-cluster-state
/// existing`): learns the cluster's id and its own member id (given by `member add`, found by
/// its peer URL) from the members its `--initial-cluster` names, and starts with no
/// configuration, waiting for the leader's snapshot.
async fn join_cluster(
    cfg: &ServerConfig,
    node: &mut crate::node::Config,
    tls: Option<&tls::PeerConnector>,
) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let mine = cfg
        .members
        .get(&cfg.node.id)
        .map(|(_, addr)| addr.clone())
        .unwrap_or_default();
    let others: Vec<String> = cfg
        .members
        .iter()
        .filter(|(id, _)| **id != cfg.node.id)
        .map(|(_, (_, addr))| addr.clone())
        .collect();
    let table = peer::lookup(&others, tls).await?;
    let me = table
        .members
        .iter()
        .find(|m| {
            peer::peer_addresses(std::slice::from_ref(m))
                .values()
                .any(|a| *a == mine)
        })
        .ok_or_else(|| {
            format!(
                "the cluster has no member with peer URL http://{mine}: add it first \
                 (etcdctl member add {} --peer-urls=http://{mine})",
                cfg.name
            )
        })?;
    node.id = me.id;
    node.cluster_id = table.cluster_id;
    node.peers = Vec::new();
    // What the member answers MemberList with until the leader's snapshot gives it the list.
    node.initial_members = table.members.clone();
    node.join = true;
    Ok(peer::peer_addresses(&table.members))
}

/// What the client services talk to.
struct Services {
    driver: DriverHandle,
    watch: watch::WatchHandle,
    reads: std::sync::Arc<local_reads::SharedLocalReads>,
    keepalives: std::sync::Arc<local_keepalives::SharedLocalKeepAlives>,
    metrics: std::sync::Arc<metrics::ServerMetrics>,
    leader: leader_presence::LeaderRule,
}

/// How a client listener serves, from the flags.
struct ClientPort {
    max_request_bytes: usize,
    bcrypt_cost: u32,
    http2: client_port::Http2Settings,
    access: access::AccessControl,
    watch_io: tokio::runtime::Handle,
}

async fn serve_clients(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: Services,
    port: ClientPort,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // etcd lets a message through gRPC up to 512 KiB past the request limit, so that a request
    // slightly too large gets etcd's own error instead of a transport one.
    let receive_max = port.max_request_bytes + 512 * 1024;
    let hot = direct::HotServices::new(
        services.driver.clone(),
        services.reads,
        services.keepalives,
        services.leader.clone(),
        receive_max,
    );
    let cluster = ClusterServer::new(maintenance::ClusterService::new(services.driver.clone()))
        .max_decoding_message_size(receive_max);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(
        services.driver.clone(),
    ))
    .max_decoding_message_size(receive_max)
    .max_encoding_message_size(usize::MAX);
    let recipes = recipes::RecipeServices::new(services.driver.clone(), services.watch.clone());
    let auth = auth::AuthService::new(services.driver.clone(), port.bcrypt_cost);
    let gateway = gateway::Gateway::new(
        services.driver.clone(),
        services.watch.clone(),
        recipes.clone(),
        maintenance::MaintenanceService::new(services.driver.clone()),
        auth.clone(),
        receive_max,
    )
    .expect("the gateway's descriptors are the build's own");
    let http_endpoints = http::EtcdHttpLayer::new(
        services.driver.clone(),
        services.metrics,
        gateway,
        port.access,
        tls.is_some(),
    );
    let lock = LockServer::new(recipes.clone()).max_decoding_message_size(receive_max);
    let election = ElectionServer::new(recipes).max_decoding_message_size(receive_max);
    let watch = watch_stream::WatchService::new(services.watch, services.driver, receive_max);
    let routes = client_port::GrpcRoutes {
        hot,
        watch,
        presence: services.leader.presence,
        others: Default::default(),
    }
    .with(health_service)
    .with(lock)
    .with(election)
    .with(cluster)
    .with(maintenance)
    .with(AuthServer::new(auth).max_decoding_message_size(receive_max));
    let service = tower::ServiceBuilder::new()
        .layer(http_endpoints)
        .layer(tower::util::MapResponseLayer::new(
            grpc::etcd_receive_limit_status,
        ))
        .layer(deadline::EtcdDeadlineLayer)
        .service(routes);
    let watch_io = Some(port.watch_io);
    client_port::serve(listener, tls, service, port.http2, watch_io, shutdown).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
