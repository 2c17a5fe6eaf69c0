//! Command-line flags, with etcd's names, meanings and defaults, so the command line that starts
//! an etcd member starts a detcd member.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::access::AccessControl;
use super::cipher_suites::CipherSuites;
use super::client_port::Http2Settings;
use super::jwt::JwtTokens;
use super::log::LogConfig;
use super::log_rotation;
use super::tls::TlsFiles;
use super::tls_identity::AllowedIdentity;
use crate::node::{AutoCompaction, Config, MemberId};

/// Every flag: name, default, help text. `--help` prints this table.
const FLAGS: &[(&str, &str, &str)] = &[
    ("name", "default", "Human-readable name for this member."),
    ("data-dir", "${name}.detcd", "Path to the data directory."),
    (
        "listen-client-urls",
        "http://localhost:2379",
        "URLs to listen on for client traffic (comma-separated).",
    ),
    (
        "advertise-client-urls",
        "http://localhost:2379",
        "Client URLs advertised to the rest of the cluster.",
    ),
    (
        "listen-peer-urls",
        "http://localhost:2380",
        "URLs to listen on for peer traffic.",
    ),
    (
        "initial-advertise-peer-urls",
        "http://localhost:2380",
        "This member's peer URLs advertised to the cluster.",
    ),
    (
        "initial-cluster",
        "${name}=${initial-advertise-peer-urls}",
        "Initial cluster: name=peer-url,...",
    ),
    (
        "initial-cluster-state",
        "new",
        "'new' for a new cluster, 'existing' to join one.",
    ),
    (
        "initial-cluster-token",
        "etcd-cluster",
        "Token that keeps clusters started with the same URLs apart.",
    ),
    (
        "heartbeat-interval",
        "100",
        "Time (in milliseconds) of a heartbeat interval.",
    ),
    (
        "election-timeout",
        "1000",
        "Time (in milliseconds) for an election to timeout.",
    ),
    (
        "snapshot-count",
        "10000",
        "Number of committed transactions to trigger a snapshot to disk (at least: detcd also \
         waits until the WAL since the last snapshot is as large as the new one would be).",
    ),
    (
        "snapshot-catchup-entries",
        "5000",
        "Log entries kept after a snapshot for slow followers.",
    ),
    (
        "quota-backend-bytes",
        "0",
        "Raise alarms when the key space exceeds this size (0 = 2 GiB).",
    ),
    (
        "max-request-bytes",
        "1572864",
        "Maximum client request size in bytes the server will accept.",
    ),
    (
        "max-txn-ops",
        "128",
        "Maximum number of operations permitted in a transaction.",
    ),
    (
        "max-range-bytes",
        "2147483647",
        "Maximum total size of the keys and values one Range answers with; larger ranges are \
         refused (ResourceExhausted) before the response is built. detcd's own.",
    ),
    (
        "lease-checkpoint-interval",
        "5000",
        "Time (in milliseconds) after which the leader records a lease's remaining TTL through \
         raft again; bounds how much a restart can extend a lease.",
    ),
    (
        "watch-progress-notify-interval",
        "10m",
        "Duration of periodic watch progress notifications (e.g. 10m, 30s, 500ms).",
    ),
    (
        "auto-compaction-mode",
        "periodic",
        "How --auto-compaction-retention is read: 'periodic' (a duration, hours without a unit, e.g. '5m' or '1') or 'revision' (a number of revisions).",
    ),
    (
        "auto-compaction-retention",
        "0",
        "The history the leader keeps when it compacts on its own; 0 turns auto compaction off.",
    ),
    (
        "initial-corrupt-check",
        "false",
        "Accepted for etcd's manifests: a member always checks every WAL record and snapshot it loads, and refuses to start on damage.",
    ),
    (
        "auto-promote-learners",
        "false",
        "Have the leader promote a learner by itself once it is in sync with the leader.",
    ),
    (
        "max-learners",
        "1",
        "Sets the maximum number of learners that can be available in the cluster membership.",
    ),
    (
        "strict-reconfig-check",
        "true",
        "Reject reconfiguration requests that would cause quorum loss.",
    ),
    (
        "listen-metrics-urls",
        "",
        "URLs to serve /metrics and /health on as well (http:// or https://, with the client TLS flags).",
    ),
    ("cert-file", "", "Path to the client server TLS cert file."),
    ("key-file", "", "Path to the client server TLS key file."),
    (
        "trusted-ca-file",
        "",
        "Path to the client server TLS trusted CA cert file.",
    ),
    (
        "client-cert-auth",
        "false",
        "Enable client cert authentication.",
    ),
    (
        "peer-cert-file",
        "",
        "Path to the peer server TLS cert file.",
    ),
    ("peer-key-file", "", "Path to the peer server TLS key file."),
    (
        "peer-trusted-ca-file",
        "",
        "Path to the peer server TLS trusted CA file.",
    ),
    (
        "peer-client-cert-auth",
        "false",
        "Enable peer client cert authentication.",
    ),
    (
        "auto-tls",
        "false",
        "Client TLS using generated certificates.",
    ),
    (
        "peer-auto-tls",
        "false",
        "Peer TLS using generated certificates.",
    ),
    (
        "client-crl-file",
        "",
        "Path to the client certificate revocation list (PEM or DER): certificates it names are refused.",
    ),
    (
        "peer-crl-file",
        "",
        "Path to the peer certificate revocation list (PEM or DER): certificates it names are refused.",
    ),
    (
        "client-cert-allowed-hostname",
        "",
        "Allowed TLS name for client certificate authentication: a client's certificate must be valid for it.",
    ),
    (
        "peer-cert-allowed-cn",
        "",
        "Allowed CN for inter-peer authentication: a peer's certificate must carry it as its common name.",
    ),
    (
        "peer-cert-allowed-hostname",
        "",
        "Allowed TLS name for inter-peer authentication: a peer's certificate must be valid for it.",
    ),
    (
        "experimental-peer-skip-client-san-verification",
        "false",
        "Skip the check that a peer's client certificate is valid for the address it connects from (its IP address, or a DNS name that leads there).",
    ),
    (
        "cipher-suites",
        "",
        "Comma-separated TLS 1.2 cipher suites between clients and the member and between members, by Go's names (empty: all of detcd's; TLS 1.3 always offers its own).",
    ),
    (
        "self-signed-cert-validity",
        "1",
        "Years the certificates that --auto-tls and --peer-auto-tls make are valid for.",
    ),
    (
        "unsafe-no-fsync",
        "false",
        "Disables fsync of the WAL: unsafe, a machine crash loses acknowledged writes (for tests).",
    ),
    (
        "max-concurrent-streams",
        "4294967295",
        "Maximum concurrent streams that each client can open at a time (the default is no limit).",
    ),
    (
        "debug",
        "false",
        "etcd 3.4's switch for debug-level logging (deprecated): the same as --log-level=debug.",
    ),
    (
        "log-package-levels",
        "",
        "etcd 3.4's per-package levels of the capnslog logger (deprecated): checked and unused; --log-level sets the level.",
    ),
    (
        "grpc-keepalive-min-time",
        "5s",
        "Minimum interval a client should wait before pinging the server (taken; detcd refuses no pings).",
    ),
    (
        "grpc-keepalive-interval",
        "2h",
        "Frequency of server-to-client pings of idle connections (0 for none).",
    ),
    (
        "grpc-keepalive-timeout",
        "20s",
        "How long a ping may go unanswered before the connection is closed.",
    ),
    (
        "logger",
        "zap",
        "The logger: zap (capnslog, etcd 3.4's deprecated one, logs as zap).",
    ),
    (
        "log-level",
        "info",
        "The lowest level logged: debug, info, warn, error, dpanic, panic, fatal.",
    ),
    (
        "log-outputs",
        "default",
        "Where the log goes, comma-separated: default (stderr), stderr, stdout, systemd/journal (stderr) or file paths.",
    ),
    (
        "enable-log-rotation",
        "false",
        "Rotate the one file among --log-outputs as --log-rotation-config-json says.",
    ),
    (
        "log-rotation-config-json",
        log_rotation::DEFAULT_CONFIG_JSON,
        "How the log file rotates: maxsize (MB), maxage (days, 0: keep), maxbackups (0: all), localtime, compress (gzip).",
    ),
    (
        "max-snapshots",
        "5",
        "Snapshot files kept at most (0: no limit); detcd keeps only the newest durable one.",
    ),
    (
        "max-wals",
        "5",
        "WAL files kept at most (0: no limit); detcd keeps only those after the newest durable snapshot.",
    ),
    (
        "enable-v2",
        "false",
        "The v2 API: detcd serves v3 only, so only false is taken.",
    ),
    (
        "v2-deprecation",
        "not-yet",
        "etcd's v2 store phase-out (not-yet, write-only, write-only-drop-data, gone): detcd has no v2 store, any phase holds.",
    ),
    (
        "metrics",
        "basic",
        "basic or extensive: detcd serves the same /metrics for both.",
    ),
    (
        "socket-reuse-port",
        "false",
        "Enable SO_REUSEPORT on the client and peer listeners, so that several processes may listen on one port.",
    ),
    (
        "socket-reuse-address",
        "false",
        "Enable SO_REUSEADDR on the listeners: detcd's listeners, as Go's, always set it (a restarted member binds its ports while old connections linger), so any value holds.",
    ),
    (
        "pre-vote",
        "true",
        "Pre-Vote before each election: detcd always runs it (etcd 3.5's default; without it a member back from a partition deposes the leader), so only true is taken.",
    ),
    (
        "initial-election-tick-advance",
        "true",
        "Whether a member alone in its cluster campaigns as soon as it starts rather than after an election timeout.",
    ),
    (
        "warning-apply-duration",
        "100ms",
        "Log a warning when the node takes longer than this to step and apply one batch of requests.",
    ),
    (
        "experimental-enable-lease-checkpoint",
        "false",
        "Taken for etcd's manifests: detcd always records each lease's remaining TTL through raft (--lease-checkpoint-interval), so a new leader never restarts a TTL; any value holds.",
    ),
    (
        "experimental-enable-lease-checkpoint-persist",
        "false",
        "As --experimental-enable-lease-checkpoint: detcd's lease records always persist across restarts.",
    ),
    (
        "enable-pprof",
        "false",
        "Go's runtime profiling endpoints: detcd has no Go runtime (profile it with perf), so only false is taken.",
    ),
    (
        "backend-batch-interval",
        "0",
        "bbolt's commit interval: detcd has no bbolt (a write is durable once its WAL record is synced), so the duration is checked and unused.",
    ),
    (
        "backend-batch-limit",
        "0",
        "bbolt's operations per commit: checked and unused (see --backend-batch-interval).",
    ),
    (
        "backend-bbolt-freelist-type",
        "map",
        "bbolt's freelist, map or array: checked and unused (see --backend-batch-interval).",
    ),
    (
        "compaction-batch-limit",
        "1000",
        "Keys etcd's compaction deletes from bbolt per transaction: checked and unused (detcd compacts its in-memory history and releases whole cold segments).",
    ),
    (
        "bootstrap-defrag-threshold-megabytes",
        "0",
        "bbolt's defragmentation at start: checked and unused (detcd's files need no defragmentation).",
    ),
    (
        "experimental-txn-mode-write-with-shared-buffer",
        "true",
        "A bbolt read-buffer choice of etcd's write transactions: checked and unused.",
    ),
    (
        "auth-token",
        "simple",
        "The auth token issued ('simple', or 'jwt,...' with its options): detcd issues simple tokens either way (clients treat a token as opaque), and warns when asked for JWT.",
    ),
    (
        "auth-token-ttl",
        "300",
        "Seconds a simple auth token lives after its last use.",
    ),
    (
        "bcrypt-cost",
        "10",
        "bcrypt's cost for the auth passwords a member hashes, 4 to 31.",
    ),
    (
        "discovery",
        "",
        "A discovery service URL to bootstrap from: detcd bootstraps from --initial-cluster only, so only the empty value is taken.",
    ),
    (
        "discovery-srv",
        "",
        "A DNS SRV domain to bootstrap from: only the empty value is taken (see --discovery).",
    ),
    (
        "discovery-srv-name",
        "",
        "The suffix of the SRV names queried: unused (see --discovery-srv).",
    ),
    (
        "discovery-proxy",
        "",
        "An HTTP proxy for the discovery service: unused (see --discovery).",
    ),
    (
        "discovery-fallback",
        "proxy",
        "What a failed discovery does ('exit' or 'proxy'): checked and unused (see --discovery).",
    ),
    (
        "proxy",
        "off",
        "etcd's v2 proxy mode: detcd is always a member, so only 'off' is taken.",
    ),
    ("proxy-failure-wait", "5000", "v2 proxy tuning: checked and unused (see --proxy)."),
    ("proxy-refresh-interval", "30000", "v2 proxy tuning: checked and unused (see --proxy)."),
    ("proxy-dial-timeout", "1000", "v2 proxy tuning: checked and unused (see --proxy)."),
    ("proxy-write-timeout", "5000", "v2 proxy tuning: checked and unused (see --proxy)."),
    ("proxy-read-timeout", "0", "v2 proxy tuning: checked and unused (see --proxy)."),
    (
        "experimental-enable-v2v3",
        "",
        "A prefix to serve etcd's v2 API under from the v3 store: detcd serves v3 only, so only the empty value is taken.",
    ),
    (
        "experimental-enable-distributed-tracing",
        "false",
        "OpenTelemetry tracing of requests: detcd has none, so only false is taken.",
    ),
    (
        "experimental-distributed-tracing-address",
        "localhost:4317",
        "The tracing collector's address: unused (see --experimental-enable-distributed-tracing).",
    ),
    (
        "experimental-distributed-tracing-service-name",
        "etcd",
        "The tracing service name: unused (see --experimental-enable-distributed-tracing).",
    ),
    (
        "experimental-distributed-tracing-instance-id",
        "",
        "The tracing instance id: unused (see --experimental-enable-distributed-tracing).",
    ),
    (
        "wal-dir",
        "",
        "Path to a dedicated WAL directory (default: <data-dir>/member/wal).",
    ),
    (
        "cors",
        "",
        "Comma-separated origins (URLs with a port) browsers may call the client port's HTTP endpoints from (empty or * means allow all).",
    ),
    (
        "host-whitelist",
        "",
        "Comma-separated host names plain-HTTP client requests may name (empty or * means allow all).",
    ),
    (
        "wal-segment-bytes",
        "67108864",
        "Size of a preallocated WAL segment file.",
    ),
];

/// A `--listen-client-urls` entry: where to listen, and whether with TLS (`https://`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientListener {
    pub addr: SocketAddr,
    pub https: bool,
}

impl std::fmt::Display for ClientListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: Vec<ClientListener>,
    /// `--listen-metrics-urls`: `/metrics` and the health endpoints only.
    pub listen_metrics: Vec<ClientListener>,
    pub client_tls: TlsFiles,
    /// TLS between members, when the peer URLs are `https://`.
    pub peer_tls: Option<TlsFiles>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: Vec<SocketAddr>,
    /// Every member of the initial cluster: id -> (name, peer address).
    pub members: BTreeMap<MemberId, (String, String)>,
    pub initial_cluster_state: String,
    pub wal_segment_bytes: u64,
    /// `--wal-dir`: where the WAL segments go instead of `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// `--unsafe-no-fsync`: the WAL is never synced.
    pub unsafe_no_fsync: bool,
    /// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`.
    pub http2: Http2Settings,
    pub watch_progress_notify_interval: Duration,
    /// Years a certificate made for `--auto-tls` or `--peer-auto-tls` is valid for.
    pub self_signed_cert_validity: u32,
    /// `--logger`, `--log-level`, `--log-outputs`.
    pub log: LogConfig,
    /// `--cors` and `--host-whitelist`.
    pub access: AccessControl,
    /// `--socket-reuse-port`: SO_REUSEPORT on the client and peer listeners.
    pub socket_reuse_port: bool,
    /// `--warning-apply-duration`: a batch that takes longer is logged.
    pub slow_apply_warning: Duration,
    /// `--bcrypt-cost`: of the password hashes this member makes.
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,...`: the keys of JWT tokens; `None` for simple tokens.
    pub jwt: Option<Arc<JwtTokens>>,
    pub node: Config,
}

pub fn usage() -> String {
    let mut out =
        String::from("Usage: detcd [flags]\n\nStarts a detcd member; the flags are etcd's.\n\n");
    for (name, default, help) in FLAGS {
        let _ = writeln!(out, "  --{name}\n        {help} (default: {default})");
    }
    out
}

/// What the command line asked for.
pub enum Command {
    Run(Box<ServerConfig>),
    /// `detcd snapshot restore FILE [flags]`: a new member's data directory from a backup,
    /// for the member and cluster the flags describe.
    Restore {
        file: PathBuf,
        cfg: Box<ServerConfig>,
    },
    Help,
    Version,
}

/// Flags that take `true` or `false`, and mean `true` given alone.
const BOOLEAN_FLAGS: &[&str] = &[
    "auto-promote-learners",
    "strict-reconfig-check",
    "client-cert-auth",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "initial-corrupt-check",
    "unsafe-no-fsync",
    "enable-v2",
    "socket-reuse-port",
    "socket-reuse-address",
    "pre-vote",
    "initial-election-tick-advance",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "enable-pprof",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-peer-skip-client-san-verification",
    "enable-log-rotation",
    "experimental-enable-distributed-tracing",
    "debug",
];

/// Flags etcd 3.4 and 3.5 take with an `experimental-` prefix; detcd takes both names.
const EXPERIMENTAL_IN_ETCD_3_5: &[&str] = &[
    "watch-progress-notify-interval",
    "initial-corrupt-check",
    "warning-apply-duration",
    "compaction-batch-limit",
    "bootstrap-defrag-threshold-megabytes",
    "backend-bbolt-freelist-type",
];

/// What etcd reads from its environment in place of a flag not given: `ETCD_` and the flag's
/// name in capitals, `_` for `-` (`ETCD_DATA_DIR` for `--data-dir`).
const ENV_PREFIX: &str = "ETCD_";

/// The command line `args`, with `env` (the process's environment) standing in for flags not
/// given.
pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Command, String> {
    if args.first().map(String::as_str) == Some("snapshot") {
        return parse_snapshot(&args[1..]);
    }
    let mut values = match parse_flags(args)? {
        Given::Flags(values) => values,
        Given::Command(command) => return Ok(command),
    };
    take_environment(&mut values, env)?;
    build(values).map(|c| Command::Run(Box::new(c)))
}

/// What a command line asks for before its flags are read.
enum Given {
    /// The flags given, by name.
    Flags(BTreeMap<&'static str, String>),
    /// `--help` or `--version`.
    Command(Command),
}

fn parse_flags(args: &[String]) -> Result<Given, String> {
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let flag = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        let Some(flag) = flag else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        if flag == "help" || flag == "h" {
            return Ok(Given::Command(Command::Help));
        }
        if flag == "version" {
            return Ok(Given::Command(Command::Version));
        }
        let name = flag.split_once('=').map_or(flag, |(n, _)| n);
        let Some(known) = known_flag(name) else {
            return Err(format!("unknown flag --{name} (see --help)"));
        };
        // As with Go's flags, a boolean flag alone means true.
        let boolean = BOOLEAN_FLAGS.contains(&known);
        let value = match flag.split_once('=') {
            Some((_, v)) => v.to_string(),
            None if boolean => "true".to_string(),
            None => iter
                .next()
                .ok_or_else(|| format!("flag --{flag} needs a value"))?
                .clone(),
        };
        values.insert(known, value);
    }
    Ok(Given::Flags(values))
}

/// Environment variables stand for flags not given, as etcd takes them: one for a flag also
/// given is an error, one that names no flag is ignored with a warning.
fn take_environment(
    values: &mut BTreeMap<&'static str, String>,
    env: &[(String, String)],
) -> Result<(), String> {
    for (key, value) in env {
        let Some(name) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some(flag) = known_flag(&name.to_ascii_lowercase().replace('_', "-")) else {
            eprintln!("detcd: unrecognized environment variable {key}={value}");
            continue;
        };
        if values.contains_key(flag) {
            return Err(format!(
                "conflicting environment variable {key:?} is shadowed by corresponding \
                 command-line flag (either unset environment variable or disable flag)"
            ));
        }
        eprintln!("detcd: recognized and used environment variable {key}={value}");
        values.insert(flag, value.clone());
    }
    Ok(())
}

/// The flag `name` stands for, if detcd has it: etcd 3.4 and 3.5 name some flags
/// `--experimental-...` that 3.6 made plain.
fn known_flag(name: &str) -> Option<&'static str> {
    let plain = EXPERIMENTAL_IN_ETCD_3_5
        .iter()
        .find(|f| name.strip_prefix("experimental-") == Some(**f))
        .map_or(name, |f| *f);
    FLAGS
        .iter()
        .find(|(n, _, _)| *n == plain)
        .map(|(n, _, _)| *n)
}

fn parse_snapshot(args: &[String]) -> Result<Command, String> {
    let usage = "usage: detcd snapshot restore FILE [--name ..] [--data-dir ..] \
                 [--initial-cluster ..] [--initial-cluster-token ..] \
                 [--initial-advertise-peer-urls ..]";
    match args {
        [verb, file, flags @ ..] if verb == "restore" && !file.starts_with('-') => {
            match parse(flags, &[])? {
                Command::Run(cfg) => Ok(Command::Restore {
                    file: PathBuf::from(file),
                    cfg,
                }),
                _ => Err(usage.to_string()),
            }
        }
        _ => Err(usage.to_string()),
    }
}

fn build(mut v: BTreeMap<&str, String>) -> Result<ServerConfig, String> {
    let mut get = |name: &'static str| -> String {
        v.remove(name).unwrap_or_else(|| {
            FLAGS
                .iter()
                .find(|f| f.0 == name)
                .expect("known flag")
                .1
                .to_string()
        })
    };
    let name = get("name");
    let data_dir = get("data-dir").replace("${name}", &name);
    let cipher_suites = CipherSuites::parse(&get("cipher-suites"), |w| eprintln!("{w}"))?;
    let client_tls = tls_files(&mut get, "", &cipher_suites)?;
    let peer_tls = tls_files(&mut get, "peer-", &cipher_suites)?;
    let listen_client = client_listeners(
        &get("listen-client-urls"),
        "listen-client-urls",
        &client_tls,
    )?;
    let metrics_urls = get("listen-metrics-urls");
    let listen_metrics = if metrics_urls.trim().is_empty() {
        Vec::new()
    } else {
        client_listeners(&metrics_urls, "listen-metrics-urls", &client_tls)?
    };
    let advertise_client_urls: Vec<String> = get("advertise-client-urls")
        .split(',')
        .map(str::to_string)
        .collect();
    let listen_peer_urls = get("listen-peer-urls");
    let listen_peer = addresses(&listen_peer_urls, "listen-peer-urls")?;
    let advertise_peer = get("initial-advertise-peer-urls");
    let initial_cluster = get("initial-cluster")
        .replace("${name}", &name)
        .replace("${initial-advertise-peer-urls}", &advertise_peer);
    let initial_cluster_state = get("initial-cluster-state");
    if initial_cluster_state != "new" && initial_cluster_state != "existing" {
        return Err(format!(
            "--initial-cluster-state must be 'new' or 'existing', not {initial_cluster_state:?}"
        ));
    }
    let token = get("initial-cluster-token");
    let heartbeat = number(&get("heartbeat-interval"), "heartbeat-interval")?;
    let election = number(&get("election-timeout"), "election-timeout")?;
    if heartbeat == 0 || election < 5 * heartbeat {
        return Err(format!(
            "--election-timeout[{election}ms] should be at least 5 times as --heartbeat-interval[{heartbeat}ms]"
        ));
    }
    if election > 50_000 {
        return Err(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than 50000ms"
        ));
    }

    let members = parse_cluster(&initial_cluster, &token)?;
    let peer_https = peer_scheme(&[
        ("listen-peer-urls", &listen_peer_urls),
        ("initial-advertise-peer-urls", &advertise_peer),
        ("initial-cluster", &initial_cluster),
    ])?;
    let peer_scheme = if peer_https { "https" } else { "http" };
    if peer_https && !peer_tls.has_key_pair() {
        return Err(
            "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for \
                    https:// peer URLs"
                .to_string(),
        );
    }
    let me = members
        .iter()
        .find(|(_, (n, _))| *n == name)
        .map(|(id, _)| *id)
        .ok_or_else(|| {
            format!("couldn't find local name {name:?} in the initial cluster configuration")
        })?;
    let mut node = Config::new(me, members.keys().copied().collect());
    node.cluster_id = cluster_id(members.keys().copied(), &token);
    node.initial_members = members
        .iter()
        .map(|(id, (name, addr))| crate::proto::etcdserverpb::Member {
            id: *id,
            name: name.clone(),
            peer_ur_ls: vec![format!("{peer_scheme}://{addr}")],
            ..Default::default()
        })
        .collect();
    node.name = name.clone();
    node.client_urls = advertise_client_urls.clone();
    node.heartbeat_interval = Duration::from_millis(heartbeat);
    node.election_timeout = Duration::from_millis(election);
    node.request_timeout = Duration::from_secs(5) + 2 * node.election_timeout;
    node.snapshot_count = number(&get("snapshot-count"), "snapshot-count")?.max(1);
    node.snapshot_catchup_entries =
        number(&get("snapshot-catchup-entries"), "snapshot-catchup-entries")?;
    node.max_request_bytes = number(&get("max-request-bytes"), "max-request-bytes")? as usize;
    node.max_txn_ops = number(&get("max-txn-ops"), "max-txn-ops")?.max(1) as usize;
    node.max_range_bytes = number(&get("max-range-bytes"), "max-range-bytes")?;
    let checkpoint_ms = number(
        &get("lease-checkpoint-interval"),
        "lease-checkpoint-interval",
    )?;
    node.lease_checkpoint_interval = Duration::from_millis(checkpoint_ms.max(100));
    let quota = number(&get("quota-backend-bytes"), "quota-backend-bytes")?;
    node.quota_bytes = if quota == 0 { 2 << 30 } else { quota };
    node.auto_promote_learners = boolean(&get("auto-promote-learners"), "auto-promote-learners")?;
    node.max_learners = number(&get("max-learners"), "max-learners")?
        .min(crate::members::LEARNERS_MAX as u64) as usize;
    node.strict_reconfig_check = boolean(&get("strict-reconfig-check"), "strict-reconfig-check")?;
    node.initial_election_tick_advance = boolean(
        &get("initial-election-tick-advance"),
        "initial-election-tick-advance",
    )?;
    // What etcd's initial check guards against is checked at every start (see its help).
    boolean(&get("initial-corrupt-check"), "initial-corrupt-check")?;
    node.auto_compaction = auto_compaction(
        &get("auto-compaction-mode"),
        &get("auto-compaction-retention"),
    )?;
    let wal_segment_bytes = number(&get("wal-segment-bytes"), "wal-segment-bytes")?.max(64 * 1024);
    let progress = &get("watch-progress-notify-interval");
    let watch_progress_notify_interval = go_duration(progress)
        .ok_or_else(|| {
            format!("invalid value {progress:?} for flag --watch-progress-notify-interval")
        })?
        .max(Duration::from_millis(100));
    let unsafe_no_fsync = boolean(&get("unsafe-no-fsync"), "unsafe-no-fsync")?;
    let http2 = http2_settings(&mut get)?;
    let validity = number(
        &get("self-signed-cert-validity"),
        "self-signed-cert-validity",
    )?;
    let self_signed_cert_validity = u32::try_from(validity)
        .ok()
        .filter(|years| *years > 0)
        .ok_or("--self-signed-cert-validity must be a number of years, at least 1")?;
    etcd_only_flags(&mut get)?;
    storage_engine_flags(&mut get)?;
    features_detcd_lacks(&mut get)?;
    let AuthFlags { bcrypt_cost, jwt } = auth_flags(&mut get, &mut node)?;
    let socket_reuse_port = boolean(&get("socket-reuse-port"), "socket-reuse-port")?;
    let slow_apply = get("warning-apply-duration");
    let slow_apply_warning = go_duration(&slow_apply)
        .ok_or_else(|| format!("invalid value {slow_apply:?} for flag --warning-apply-duration"))?;
    // etcd 3.4's --debug stands for the level it names.
    let level = match boolean(&get("debug"), "debug")? {
        true => "debug".to_string(),
        false => get("log-level"),
    };
    get("log-package-levels");
    let log = LogConfig::from_flags(&get("logger"), &level, &get("log-outputs"))?.with_rotation(
        boolean(&get("enable-log-rotation"), "enable-log-rotation")?,
        &get("log-rotation-config-json"),
    )?;
    let access = AccessControl::from_flags(&get("cors"), &get("host-whitelist"))?;
    Ok(ServerConfig {
        name,
        data_dir: PathBuf::from(data_dir),
        listen_client,
        listen_metrics,
        client_tls,
        peer_tls: peer_https.then_some(peer_tls),
        advertise_client_urls,
        listen_peer,
        members,
        initial_cluster_state,
        wal_segment_bytes,
        wal_dir: Some(get("wal-dir"))
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from),
        watch_progress_notify_interval,
        unsafe_no_fsync,
        http2,
        self_signed_cert_validity,
        log,
        access,
        socket_reuse_port,
        slow_apply_warning,
        bcrypt_cost,
        jwt,
        node,
    })
}

/// A Go duration as etcd's flags take them: numbers with units h, m, s, ms, us, ns, one after
/// another (`1h30m`, `10m`, `500ms`).
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    let mut total = Duration::ZERO;
    // Go takes a bare zero, and no other number without a unit.
    if rest.is_empty() || rest == "0" {
        return (rest == "0").then_some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn boolean(value: &str, flag: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "invalid value {value:?} for flag --{flag}: expected true or false"
        )),
    }
}

fn number(value: &str, flag: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("invalid value {value:?} for flag --{flag}: expected a whole number"))
}

/// A peer URL, `http://host:port` or `https://host:port` -> host:port.
fn host_port(url: &str) -> Result<String, String> {
    client_host_port(url).map(|(hp, _)| hp)
}

/// Whether the peer URLs of these flags are `https://`: they must all be, or none.
fn peer_scheme(flags: &[(&str, &str)]) -> Result<bool, String> {
    let mut seen = None;
    for (flag, value) in flags {
        for url in urls(value) {
            let url = url.split_once('=').map_or(url, |(_, u)| u);
            let (_, https) = client_host_port(url).map_err(|e| format!("--{flag}: {e}"))?;
            if seen.is_some_and(|first| first != https) {
                return Err(format!(
                    "--{flag}: {url:?}: peer URLs must all be http:// or all https://"
                ));
            }
            seen = Some(https);
        }
    }
    Ok(seen == Some(true))
}

/// A URL: host:port, and whether its scheme is `https`.
fn client_host_port(url: &str) -> Result<(String, bool), String> {
    let url = url.trim();
    match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => Ok((port_required(url, rest)?, false)),
        (_, Some(rest)) => Ok((port_required(url, rest)?, true)),
        _ => Err(format!("URL {url:?} must start with http:// or https://")),
    }
}

fn port_required(url: &str, rest: &str) -> Result<String, String> {
    let rest = rest.trim_end_matches('/');
    if !rest.contains(':') {
        return Err(format!("URL {url:?} has no port"));
    }
    Ok(rest.to_string())
}

fn resolve(hp: &str, flag: &str) -> Result<SocketAddr, String> {
    hp.to_socket_addrs()
        .map_err(|e| format!("--{flag}: cannot resolve {hp}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("--{flag}: {hp} has no IPv4 address"))
}

fn urls(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|u| !u.trim().is_empty())
}

fn addresses(value: &str, flag: &str) -> Result<Vec<SocketAddr>, String> {
    let out = urls(value)
        .map(|url| resolve(&host_port(url).map_err(|e| format!("--{flag}: {e}"))?, flag))
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(format!("--{flag} is empty"));
    }
    Ok(out)
}

/// Flags of etcd's own storage and API versions, checked as etcd checks them: what they ask
/// for, detcd is already (one snapshot file kept, no v2 store, one set of metrics), except a v2
/// API, which it refuses to pretend to serve.
fn etcd_only_flags(get: &mut impl FnMut(&'static str) -> String) -> Result<(), String> {
    number(&get("max-snapshots"), "max-snapshots")?;
    number(&get("max-wals"), "max-wals")?;
    if boolean(&get("enable-v2"), "enable-v2")? {
        return Err("--enable-v2: detcd serves only the v3 API".into());
    }
    let phase = get("v2-deprecation");
    if !["not-yet", "write-only", "write-only-drop-data", "gone"].contains(&phase.as_str()) {
        return Err(format!(
            "invalid value {phase:?} for flag --v2-deprecation: expected not-yet, write-only, \
             write-only-drop-data or gone"
        ));
    }
    match get("metrics").as_str() {
        "basic" | "extensive" => {}
        other => {
            return Err(format!(
                "invalid value {other:?} for flag --metrics: expected basic or extensive"
            ))
        }
    }
    boolean(&get("socket-reuse-address"), "socket-reuse-address")?;
    for checkpoints in [
        "experimental-enable-lease-checkpoint",
        "experimental-enable-lease-checkpoint-persist",
    ] {
        boolean(&get(checkpoints), checkpoints)?;
    }
    if !boolean(&get("pre-vote"), "pre-vote")? {
        return Err(
            "--pre-vote=false: detcd always runs Pre-Vote; without it a member back \
                    from a partition with a higher term deposes the leader"
                .into(),
        );
    }
    if boolean(&get("enable-pprof"), "enable-pprof")? {
        return Err("--enable-pprof: detcd has no Go runtime to profile (use perf)".into());
    }
    Ok(())
}

/// What the auth flags ask of the client port.
struct AuthFlags {
    bcrypt_cost: u32,
    jwt: Option<Arc<JwtTokens>>,
}

/// `--auth-token` (simple tokens, or JWTs with their keys), `--auth-token-ttl` (into the
/// node's config) and `--bcrypt-cost`.
fn auth_flags(
    get: &mut impl FnMut(&'static str) -> String,
    node: &mut Config,
) -> Result<AuthFlags, String> {
    let token = get("auth-token");
    let jwt = match token.split_once(',').unwrap_or((&token, "")) {
        ("simple", "") => None,
        ("jwt", options) => Some(Arc::new(
            JwtTokens::from_options(options, go_duration)
                .map_err(|why| format!("--auth-token: invalid auth options: {why}"))?,
        )),
        _ => {
            return Err(format!(
                "invalid value {token:?} for flag --auth-token: expected 'simple' or 'jwt,...'"
            ))
        }
    };
    let ttl = number(&get("auth-token-ttl"), "auth-token-ttl")?;
    node.auth_token_ttl = Duration::from_secs(ttl.max(1));
    let cost = number(&get("bcrypt-cost"), "bcrypt-cost")?;
    if !(4..=31).contains(&cost) {
        return Err(format!(
            "invalid bcrypt-cost {cost}: must be between 4 and 31"
        ));
    }
    Ok(AuthFlags {
        bcrypt_cost: cost as u32,
        jwt,
    })
}

/// Flags of etcd features detcd does not have (discovery, the v2 proxy and
/// emulation, tracing): their defaults are taken and checked, and a value that asks for the
/// feature is refused with the reason, rather than ignored.
fn features_detcd_lacks(get: &mut impl FnMut(&'static str) -> String) -> Result<(), String> {
    for discovery in ["discovery", "discovery-srv"] {
        if !get(discovery).trim().is_empty() {
            return Err(format!(
                "--{discovery}: detcd bootstraps from --initial-cluster only (no discovery \
                 service or DNS SRV records)"
            ));
        }
    }
    let (_, _) = (get("discovery-srv-name"), get("discovery-proxy"));
    let fallback = get("discovery-fallback");
    if fallback != "exit" && fallback != "proxy" {
        return Err(format!(
            "invalid value {fallback:?} for flag --discovery-fallback: expected exit or proxy"
        ));
    }
    if get("proxy") != "off" {
        return Err("--proxy: detcd is always a member, not etcd's v2 proxy".into());
    }
    for tuning in [
        "proxy-failure-wait",
        "proxy-refresh-interval",
        "proxy-dial-timeout",
        "proxy-write-timeout",
        "proxy-read-timeout",
    ] {
        number(&get(tuning), tuning)?;
    }
    if !get("experimental-enable-v2v3").is_empty() {
        return Err("--experimental-enable-v2v3: detcd serves only the v3 API".into());
    }
    let tracing = "experimental-enable-distributed-tracing";
    if boolean(&get(tracing), tracing)? {
        return Err(format!("--{tracing}: detcd has no request tracing"));
    }
    for unused in [
        "experimental-distributed-tracing-address",
        "experimental-distributed-tracing-service-name",
        "experimental-distributed-tracing-instance-id",
    ] {
        get(unused);
    }
    Ok(())
}

/// Flags that tune etcd's storage engine (bbolt), which detcd does not have: checked as etcd
/// checks them, so a manifest that sets them starts a member, and otherwise unused.
fn storage_engine_flags(get: &mut impl FnMut(&'static str) -> String) -> Result<(), String> {
    let interval = get("backend-batch-interval");
    go_duration(&interval)
        .ok_or_else(|| format!("invalid value {interval:?} for flag --backend-batch-interval"))?;
    for count in [
        "backend-batch-limit",
        "compaction-batch-limit",
        "bootstrap-defrag-threshold-megabytes",
    ] {
        number(&get(count), count)?;
    }
    let shared = "experimental-txn-mode-write-with-shared-buffer";
    boolean(&get(shared), shared)?;
    match get("backend-bbolt-freelist-type").as_str() {
        "map" | "array" => Ok(()),
        other => Err(format!(
            "invalid value {other:?} for flag --backend-bbolt-freelist-type: expected map or array"
        )),
    }
}

/// The `--grpc-keepalive-*` durations (`--grpc-keepalive-min-time` is checked and taken) and
/// `--max-concurrent-streams` (etcd's default, 2^32-1, is no limit).
fn http2_settings(get: &mut impl FnMut(&'static str) -> String) -> Result<Http2Settings, String> {
    let streams = number(&get("max-concurrent-streams"), "max-concurrent-streams")?;
    let mut duration = |flag: &'static str| {
        let value = get(flag);
        go_duration(&value).ok_or_else(|| format!("invalid value {value:?} for flag --{flag}"))
    };
    duration("grpc-keepalive-min-time")?;
    let interval = duration("grpc-keepalive-interval")?;
    Ok(Http2Settings {
        keepalive_interval: (!interval.is_zero()).then_some(interval),
        keepalive_timeout: duration("grpc-keepalive-timeout")?,
        max_concurrent_streams: u32::try_from(streams).ok().filter(|n| *n < u32::MAX),
    })
}

/// `--auto-compaction-mode` and `--auto-compaction-retention`, as etcd reads them: a periodic
/// retention is a duration or a number of hours, a revision retention a number of revisions;
/// zero turns auto compaction off. etcd's revision mode looks every five minutes.
fn auto_compaction(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
    let invalid = || format!("invalid auto-compaction-retention {retention:?} for mode {mode:?}");
    let compaction = match mode {
        "periodic" => {
            let period = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                Err(_) => go_duration(retention).ok_or_else(invalid)?,
            };
            (!period.is_zero()).then_some(AutoCompaction::Periodic(period))
        }
        "revision" => {
            let keep = retention
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(invalid)?;
            (keep > 0).then_some(AutoCompaction::Revision {
                keep,
                every: Duration::from_secs(300),
            })
        }
        other => return Err(format!("unknown auto-compaction-mode {other:?}")),
    };
    Ok(compaction)
}

/// `--listen-client-urls` or `--listen-metrics-urls`; an `https://` one needs the TLS flags'
/// key pair, as in etcd.
fn client_listeners(
    value: &str,
    flag: &str,
    tls: &TlsFiles,
) -> Result<Vec<ClientListener>, String> {
    let mut out = Vec::new();
    for url in urls(value) {
        let (hp, https) = client_host_port(url).map_err(|e| format!("--{flag}: {e}"))?;
        if https && !tls.has_key_pair() {
            return Err(format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {} \
                 with HTTPS scheme",
                url.trim()
            ));
        }
        out.push(ClientListener {
            addr: resolve(&hp, flag)?,
            https,
        });
    }
    if out.is_empty() {
        return Err(format!("--{flag} is empty"));
    }
    Ok(out)
}

/// The TLS flags whose names start with `prefix` (`""` for the client port, `"peer-"`).
fn tls_files(
    get: &mut impl FnMut(&'static str) -> String,
    prefix: &'static str,
    cipher_suites: &CipherSuites,
) -> Result<TlsFiles, String> {
    let path = |value: String| (!value.is_empty()).then(|| PathBuf::from(value));
    let flag = |name: &str| -> &'static str {
        FLAGS
            .iter()
            .find(|f| f.0.strip_prefix(prefix) == Some(name))
            .expect("both ports have the five TLS flags")
            .0
    };
    let (auth, auto) = (flag("client-cert-auth"), flag("auto-tls"));
    // The flags etcd names `client-...` on the client port and `peer-...` between members.
    let side = |name: &str| -> &'static str {
        let side = if prefix.is_empty() { "client-" } else { prefix };
        FLAGS
            .iter()
            .find(|f| f.0.strip_prefix(side) == Some(name))
            .expect("both ports have the revocation and hostname flags")
            .0
    };
    Ok(TlsFiles {
        prefix,
        cert_file: path(get(flag("cert-file"))),
        key_file: path(get(flag("key-file"))),
        trusted_ca_file: path(get(flag("trusted-ca-file"))),
        client_cert_auth: boolean(&get(auth), auth)?,
        auto_tls: boolean(&get(auto), auto)?,
        cipher_suites: cipher_suites.clone(),
        crl_file: path(get(side("crl-file"))),
        allowed_identity: AllowedIdentity::from_flags(
            &if prefix.is_empty() {
                String::new()
            } else {
                get("peer-cert-allowed-cn")
            },
            &get(side("cert-allowed-hostname")),
        )?,
        skip_client_san_verification: !prefix.is_empty() && {
            let skip = "experimental-peer-skip-client-san-verification";
            boolean(&get(skip), skip)?
        },
    })
}

/// `name=http://host:port,...` -> member id -> (name, host:port). Member ids are derived from the
/// peer URL and the cluster token, so every member computes the same ids from the same flags.
fn parse_cluster(value: &str, token: &str) -> Result<BTreeMap<MemberId, (String, String)>, String> {
    let mut members = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {part:?} is not name=url"))?;
        let addr = host_port(url).map_err(|e| format!("--initial-cluster: {e}"))?;
        let id = member_id(&addr, token);
        if members
            .insert(id, (name.trim().to_string(), addr.clone()))
            .is_some()
        {
            return Err(format!("--initial-cluster has {addr} twice"));
        }
    }
    if members.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(members)
}

/// FNV-1a: stable across versions and machines, unlike std's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn member_id(peer_addr: &str, token: &str) -> MemberId {
    // raft reserves 0 for "no member".
    fnv1a(&[peer_addr.as_bytes(), token.as_bytes()]).max(1)
}

fn cluster_id(ids: impl Iterator<Item = MemberId>, token: &str) -> u64 {
    let mut bytes = Vec::new();
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    fnv1a(&[&bytes, token.as_bytes()]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn run(s: &str) -> Result<ServerConfig, String> {
        match parse(&args(s), &[])? {
            Command::Run(c) => Ok(*c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn no_flags_is_a_single_member_on_the_default_ports() {
        let c = run("").unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.detcd"));
        assert_eq!(c.listen_client[0].to_string(), "http://127.0.0.1:2379");
        assert_eq!(c.listen_peer[0].to_string(), "127.0.0.1:2380");
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.node.peers, vec![c.node.id]);
    }

    #[test]
    fn an_https_client_url_is_served_with_the_tls_flags() {
        let c = run(
            "--listen-client-urls https://127.0.0.1:2379,http://127.0.0.1:22379 \
             --cert-file c.pem --key-file k.pem --client-cert-auth --trusted-ca-file ca.pem",
        )
        .unwrap();
        assert_eq!(c.listen_client[0].to_string(), "https://127.0.0.1:2379");
        assert!(c.listen_client[0].https && !c.listen_client[1].https);
        assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(c.client_tls.key_file, Some(PathBuf::from("k.pem")));
        assert_eq!(c.client_tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(c.client_tls.client_cert_auth);
        assert!(!run("").unwrap().client_tls.has_key_pair());
    }

    #[test]
    fn https_peer_urls_take_the_peer_tls_flags() {
        let urls = "--listen-peer-urls https://127.0.0.1:2380 \
                    --initial-advertise-peer-urls https://127.0.0.1:2380 \
                    --initial-cluster default=https://127.0.0.1:2380";
        let c = run(&format!(
            "{urls} --peer-cert-file p.pem --peer-key-file pk.pem \
             --peer-trusted-ca-file ca.pem --peer-client-cert-auth --cert-file c.pem"
        ))
        .unwrap();
        let peer = c.peer_tls.expect("https peer URLs turn peer TLS on");
        assert_eq!(peer.prefix, "peer-");
        assert_eq!(peer.cert_file, Some(PathBuf::from("p.pem")));
        assert_eq!(peer.key_file, Some(PathBuf::from("pk.pem")));
        assert_eq!(peer.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(peer.client_cert_auth);
        assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(
            c.node.initial_members[0].peer_ur_ls,
            vec!["https://127.0.0.1:2380".to_string()]
        );
        assert!(run(urls)
            .unwrap_err()
            .contains("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided"));
        assert!(run("--peer-cert-file p.pem").unwrap().peer_tls.is_none());
    }

    #[test]
    fn environment_variables_stand_for_flags_not_given() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let with = |line: &str, pairs: &[(&str, &str)]| match parse(&args(line), &env(pairs)) {
            Ok(Command::Run(c)) => Ok(*c),
            Ok(_) => Err("not a run".to_string()),
            Err(e) => Err(e),
        };
        let c = with(
            "--name a --initial-cluster a=http://127.0.0.1:2380",
            &[
                ("ETCD_SNAPSHOT_COUNT", "77"),
                ("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "5s"),
                ("ETCD_UNSUPPORTED_ARCH", "arm"),
                ("ETCDCTL_API", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.node.snapshot_count, 77);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(5));
        assert!(with("--name a", &[("ETCD_NAME", "b")])
            .unwrap_err()
            .contains("conflicting environment variable \"ETCD_NAME\" is shadowed"));
        assert!(with("", &[("ETCD_SNAPSHOT_COUNT", "many")])
            .unwrap_err()
            .contains("snapshot-count"));
    }

    #[test]
    fn etcds_storage_and_v2_flags_are_checked_and_taken() {
        run(
            "--max-snapshots 0 --max-wals=3 --enable-v2=false --v2-deprecation=gone \
             --metrics=extensive --logger=zap --log-level=debug --log-outputs=stderr",
        )
        .unwrap();
        let refused = |flags: &str| run(flags).err().unwrap_or_default();
        assert!(refused("--max-wals=-1").contains("--max-wals"));
        assert_eq!(
            refused("--enable-v2"),
            "--enable-v2: detcd serves only the v3 API"
        );
        assert!(refused("--v2-deprecation=soon").contains("--v2-deprecation"));
        assert!(refused("--metrics=all").contains("--metrics"));
        assert_eq!(refused("--logger=glog"), "unknown logger option \"glog\"");
    }

    #[test]
    fn etcds_storage_engine_and_raft_flags_are_checked_and_taken() {
        let c = run(
            "--backend-batch-interval=10ms --backend-batch-limit 100 \
             --backend-bbolt-freelist-type=array --experimental-compaction-batch-limit=500 \
             --experimental-bootstrap-defrag-threshold-megabytes=10 \
             --experimental-txn-mode-write-with-shared-buffer=false \
             --experimental-enable-lease-checkpoint --experimental-enable-lease-checkpoint-persist \
             --pre-vote=true --initial-election-tick-advance=false --socket-reuse-port \
             --socket-reuse-address --enable-pprof=false --experimental-warning-apply-duration=50ms",
        )
        .unwrap();
        assert!(!c.node.initial_election_tick_advance && c.socket_reuse_port);
        assert_eq!(c.slow_apply_warning, Duration::from_millis(50));
        let defaults = run("").unwrap();
        assert!(defaults.node.initial_election_tick_advance && !defaults.socket_reuse_port);
        assert_eq!(defaults.slow_apply_warning, Duration::from_millis(100));
        let refused = |flags: &str| run(flags).err().unwrap_or_default();
        assert!(refused("--pre-vote=false").contains("always runs Pre-Vote"));
        assert!(refused("--enable-pprof").contains("no Go runtime"));
        assert!(refused("--backend-bbolt-freelist-type=list").contains("map or array"));
        assert!(refused("--backend-batch-interval=10").contains("--backend-batch-interval"));
        assert!(refused("--warning-apply-duration=x").contains("--warning-apply-duration"));
        assert_eq!(
            refused("--cipher-suites=TLS_NULL"),
            "unexpected TLS cipher suite \"TLS_NULL\""
        );
        let ciphers = run("--cipher-suites TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").unwrap();
        assert_ne!(ciphers.client_tls.cipher_suites, CipherSuites::default());
    }

    #[test]
    fn flags_of_features_detcd_lacks_take_their_defaults_and_refuse_the_rest() {
        run(
            "--auth-token=simple --auth-token-ttl=600 --bcrypt-cost=12 --discovery= \
             --discovery-srv= --discovery-fallback=exit --proxy=off --proxy-dial-timeout=2000 \
             --experimental-enable-v2v3= --experimental-enable-distributed-tracing=false \
             --experimental-distributed-tracing-address=localhost:4317",
        )
        .unwrap();
        let refused = |flags: &str| run(flags).err().unwrap_or_default();
        assert!(refused("--discovery=https://discovery.etcd.io/x").contains("--initial-cluster"));
        assert!(refused("--discovery-srv=example.com").contains("--initial-cluster"));
        assert!(refused("--proxy=on").contains("v2 proxy"));
        assert!(refused("--bcrypt-cost=3").contains("between 4 and 31"));
        assert!(refused("--auth-token=paseto").contains("--auth-token"));
        assert!(refused("--auth-token=jwt,sign-method=RS256").contains("invalid auth options"));
        assert!(refused("--experimental-enable-v2v3=/v2").contains("v3 API"));
        assert!(refused("--experimental-enable-distributed-tracing").contains("tracing"));
    }

    #[test]
    fn grpc_keepalive_flags_set_the_servers_pings() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(
            run("").unwrap().http2,
            Http2Settings {
                keepalive_interval: Some(hours(2)),
                keepalive_timeout: Duration::from_secs(20),
                max_concurrent_streams: None,
            }
        );
        let c = run("--grpc-keepalive-interval=0 --grpc-keepalive-timeout 3s \
                     --grpc-keepalive-min-time 1s")
        .unwrap();
        assert_eq!(c.http2.keepalive_interval, None);
        assert_eq!(c.http2.keepalive_timeout, Duration::from_secs(3));
        let streams = run("--max-concurrent-streams=100").unwrap().http2;
        assert_eq!(streams.max_concurrent_streams, Some(100));
        assert!(run("--grpc-keepalive-min-time often")
            .unwrap_err()
            .contains("--grpc-keepalive-min-time"));
    }

    #[test]
    fn kubeadms_metrics_and_corruption_check_flags_are_taken() {
        let c = run("--listen-metrics-urls http://127.0.0.1:2381 \
                     --experimental-initial-corrupt-check=true")
        .unwrap();
        assert_eq!(c.listen_metrics[0].to_string(), "http://127.0.0.1:2381");
        assert!(run("").unwrap().listen_metrics.is_empty());
        assert!(run("--listen-metrics-urls https://127.0.0.1:2381")
            .unwrap_err()
            .contains("must be provided"));
        assert!(run("--initial-corrupt-check maybe").is_err());
    }

    #[test]
    fn auto_compaction_flags_read_as_etcd_reads_them() {
        let mode = |args: &str| run(args).map(|c| c.node.auto_compaction);
        assert_eq!(mode(""), Ok(None));
        assert_eq!(
            mode("--auto-compaction-retention 1"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            mode("--auto-compaction-retention=90s"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(90))))
        );
        assert_eq!(
            mode("--auto-compaction-mode revision --auto-compaction-retention 1000"),
            Ok(Some(AutoCompaction::Revision {
                keep: 1000,
                every: Duration::from_secs(300)
            }))
        );
        assert_eq!(mode("--auto-compaction-mode revision"), Ok(None));
        assert!(mode("--auto-compaction-mode revision --auto-compaction-retention 5m").is_err());
        assert!(mode("--auto-compaction-retention soon").is_err());
        assert!(
            mode("--auto-compaction-mode hourly --auto-compaction-retention 1")
                .unwrap_err()
                .contains("unknown auto-compaction-mode")
        );
    }

    #[test]
    fn the_auto_tls_flags_stand_for_a_key_pair() {
        let c = run("--listen-client-urls https://127.0.0.1:2379 --auto-tls").unwrap();
        assert!(c.client_tls.auto_tls && c.client_tls.has_key_pair());
        assert_eq!(c.self_signed_cert_validity, 1);
        let urls = "--listen-peer-urls https://127.0.0.1:2380 \
                    --initial-advertise-peer-urls https://127.0.0.1:2380 \
                    --initial-cluster default=https://127.0.0.1:2380";
        let c = run(&format!(
            "{urls} --peer-auto-tls --self-signed-cert-validity 3"
        ))
        .unwrap();
        assert!(c.peer_tls.expect("https peer URLs").auto_tls);
        assert!(!c.client_tls.auto_tls, "each port has its own flag");
        assert_eq!(c.self_signed_cert_validity, 3);
        assert!(run("--self-signed-cert-validity 0")
            .unwrap_err()
            .contains("at least 1"));
    }

    #[test]
    fn three_member_command_lines_agree_on_ids() {
        let cluster = "--initial-cluster a=http://127.0.0.1:12380,b=http://127.0.0.1:22380,c=http://127.0.0.1:32380";
        let a = run(&format!(
            "--name a --initial-advertise-peer-urls http://127.0.0.1:12380 {cluster}"
        ))
        .unwrap();
        let b = run(&format!("--name=b {cluster}")).unwrap();
        assert_eq!(a.node.cluster_id, b.node.cluster_id);
        assert_eq!(a.node.peers, b.node.peers);
        assert_ne!(a.node.id, b.node.id);
        assert_eq!(a.node.peers.len(), 3);
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        assert!(run("--bogus 1")
            .unwrap_err()
            .contains("unknown flag --bogus"));
        assert!(run("--snapshot-count ten")
            .unwrap_err()
            .contains("--snapshot-count"));
        assert!(run("--election-timeout 100")
            .unwrap_err()
            .contains("at least 5 times"));
        assert!(run("--name x --initial-cluster y=http://127.0.0.1:1")
            .unwrap_err()
            .contains("couldn't find local name"));
        assert!(run("--listen-client-urls https://127.0.0.1:1")
            .unwrap_err()
            .contains("TLS key/cert (--cert-file, --key-file) must be provided"));
        assert!(run("--listen-peer-urls https://127.0.0.1:1")
            .unwrap_err()
            .contains("peer URLs must all be http:// or all https://"));
        assert!(run("--initial-cluster-state maybe")
            .unwrap_err()
            .contains("'new' or 'existing'"));
        assert!(run("--max-txn-ops").unwrap_err().contains("needs a value"));
        assert!(run("--watch-progress-notify-interval 10q").is_err());
        assert!(run("--experimental-watch-progress-notify-interval=1s").is_ok());
        assert!(run("--experimental-heartbeat-interval=100").is_err());
    }
}
