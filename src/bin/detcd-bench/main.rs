//! `detcd-bench`: a load generator for etcd's KV, Lease and Watch APIs, modelled on etcd's
//! `benchmark` tool, so the same binary can drive detcd and real etcd and their numbers can be compared.
//!
//! Bounds: it issues exactly `--total` requests, with at most `--clients` in flight (each client
//! is one task with one outstanding request). Keys come from a seeded ChaCha stream indexed by the
//! request number, so a run's keys do not depend on which client happened to take which request.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::lease_client::LeaseClient;
use detcd::proto::etcdserverpb::request_op::Request as OpRequest;
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
mod transport;
mod watch;
mod watch_call;
mod watch_reply;
use transport::{connect, Channel};
use watch::{WatchFlags, WatchMode};

/// A request that takes longer than this counts as an error rather than hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
detcd-bench: load generator for etcd's KV, Lease and Watch APIs (modelled on etcd's `benchmark`)

usage: detcd-bench [flags] put
       detcd-bench [flags] range KEY [END] [--consistency l|s] [--rev N]
       detcd-bench [flags] txn-put [--txn-ops N]
       detcd-bench [flags] lease-keepalive
       detcd-bench [flags] lease-churn
       detcd-bench [flags] lease-grant
       detcd-bench [flags] watch-latency [--streams N] [--watchers-per-stream N] [--put-rate N]
       detcd-bench [flags] watch [--streams N] [--watchers-per-stream N] [--put-rate N]

lease-keepalive: as etcd's `benchmark lease-keepalive`, each client grants a lease (TTL 100 s)
before the clock starts, then renews it with one KeepAliveOnce per request (a new keepalive
stream each time, as clientv3's KeepAliveOnce opens one). lease-churn: each request is a cycle
of grant (TTL 60 s), put of a key with the lease, and revoke (which deletes the key).
lease-grant: each request grants a lease of TTL 1 hour, which stays: the load before a
workload that must not slow down with many leases held.

watch-latency and watch: --streams watch streams (spread over the connections), each with
--watchers-per-stream watchers, are created first; then --total puts are issued by --clients
writers (on connections of their own, one per endpoint), at most --put-rate per second (0:
unlimited). In watch-latency every watcher watches one
key and the latency from each put's sending to each event's arrival is reported; in watch every
watcher watches the prefix the puts' keys (from the key space) live under and events per second
and the writers' put latency are reported. Every watcher must receive every put once, in revision
order: a missing, duplicated or reordered event fails the run.

flags (each also accepted as --flag=value):
  --endpoints HOST:PORT,...  gRPC endpoints (default 127.0.0.1:2379)
  --conns N                  gRPC connections, assigned round-robin over the endpoints (default 1)
  --clients N                concurrent requesters, assigned round-robin over the connections (default 1)
  --total N                  requests to issue, exactly (default 10000)
  --key-size N               key size in bytes (default 8)
  --val-size N               value size in bytes (default 8)
  --key-space-size N         put keys are drawn from this many keys (default 1)
  --sequential-keys          put keys go 0, 1, 2, ... (modulo the key space) instead of at random
  --seed N                   seed of the key and value stream (default 1)
  --consistency l|s          range only: linearizable (default) or serializable
  --rev N                    range only: read the key space as of revision N (default 0: now)
  --txn-ops N                txn-put only: puts per transaction, on consecutive keys (default 1)
  --streams N                watch only: watch streams (default 10)
  --watchers-per-stream N    watch only: watchers on each stream (default 10)
  --put-rate N               watch only: puts per second, 0 for unlimited (default 0)
  --memory-pids PID,...      watch only: server processes whose resident memory growth per
                             watcher is reported (read from /proc)
  --json                     print one machine-readable line instead of the summary

Keys are encoded as etcd's benchmark encodes them: the key number as a zigzag varint at the start
of a zeroed key-size buffer. In range's KEY and END, \\xNN stands for the byte NN (and \\\\ for a
backslash): `range '\\x00' '\\x00'` reads every key.
";

#[derive(Debug, Clone)]
enum Workload {
    Put,
    Range {
        key: Bytes,
        range_end: Bytes,
        serializable: bool,
        revision: i64,
    },
    TxnPut {
        ops: u64,
    },
    LeaseKeepAlive,
    LeaseChurn,
    LeaseGrant,
    Watch(WatchMode),
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range {
                serializable: false,
                ..
            } => "range-l",
            Workload::Range {
                serializable: true, ..
            } => "range-s",
            Workload::TxnPut { .. } => "txn-put",
            Workload::LeaseKeepAlive => "lease-keepalive",
            Workload::LeaseChurn => "lease-churn",
            Workload::LeaseGrant => "lease-grant",
            Workload::Watch(WatchMode::Latency) => "watch-latency",
            Workload::Watch(WatchMode::Throughput) => "watch",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    endpoints: Vec<String>,
    conns: usize,
    clients: usize,
    total: u64,
    key_size: usize,
    val_size: usize,
    key_space_size: u64,
    sequential_keys: bool,
    seed: u64,
    json: bool,
    workload: Workload,
    watch: WatchFlags,
}

/// A key as given on the command line, with `\xNN` for any byte (shells cannot pass a NUL).
fn unescape(text: &str) -> Result<Bytes, String> {
    let bad = || format!("bad escape in '{text}': use \\xNN or \\\\");
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(Bytes::from(out))
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("--{flag}: '{value}' is not a valid number"))
}

/// The flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "endpoints",
    "conns",
    "clients",
    "total",
    "key-size",
    "val-size",
    "key-space-size",
    "seed",
    "consistency",
    "rev",
    "txn-ops",
    "streams",
    "watchers-per-stream",
    "put-rate",
    "memory-pids",
];

/// Flags may come before or after the subcommand, as `--flag value` or `--flag=value`.
fn parse(args: &[String]) -> Result<Options, String> {
    let mut endpoints = vec!["127.0.0.1:2379".to_string()];
    let (mut conns, mut clients, mut total) = (1usize, 1usize, 10_000u64);
    let (mut key_size, mut val_size, mut key_space_size) = (8usize, 8usize, 1u64);
    let (mut sequential_keys, mut json, mut seed) = (false, false, 1u64);
    let mut consistency = "l".to_string();
    let mut txn_ops = 1u64;
    let mut revision = 0i64;
    let mut watch = WatchFlags {
        streams: 10,
        watchers_per_stream: 10,
        put_rate: 0,
        memory_pids: Vec::new(),
    };
    let mut positional = Vec::new();

    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flag) = arg.strip_prefix("--") else {
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        match name {
            "help" => return Err(String::new()),
            "sequential-keys" => sequential_keys = true,
            "json" => json = true,
            _ if !VALUE_FLAGS.contains(&name) => return Err(format!("unknown flag --{name}")),
            _ => {
                let value = match inline {
                    Some(value) => value,
                    None => {
                        i += 1;
                        args.get(i - 1)
                            .cloned()
                            .ok_or(format!("--{name} needs a value"))?
                    }
                };
                match name {
                    "endpoints" => {
                        endpoints = value.split(',').map(str::to_string).collect();
                    }
                    "conns" => conns = parse_number(name, &value)?,
                    "clients" => clients = parse_number(name, &value)?,
                    "total" => total = parse_number(name, &value)?,
                    "key-size" => key_size = parse_number(name, &value)?,
                    "val-size" => val_size = parse_number(name, &value)?,
                    "key-space-size" => key_space_size = parse_number(name, &value)?,
                    "seed" => seed = parse_number(name, &value)?,
                    "consistency" => consistency = value,
                    "rev" => revision = parse_number(name, &value)?,
                    "txn-ops" => txn_ops = parse_number(name, &value)?,
                    "streams" => watch.streams = parse_number(name, &value)?,
                    "watchers-per-stream" => {
                        watch.watchers_per_stream = parse_number(name, &value)?;
                    }
                    "put-rate" => watch.put_rate = parse_number(name, &value)?,
                    "memory-pids" => {
                        watch.memory_pids = value
                            .split(',')
                            .map(|pid| parse_number(name, pid))
                            .collect::<Result<_, _>>()?;
                    }
                    _ => unreachable!("VALUE_FLAGS lists only the flags matched here"),
                }
            }
        }
    }

    let workload = match positional.first().map(String::as_str) {
        Some("put") if positional.len() == 1 => Workload::Put,
        Some("range") if (2..=3).contains(&positional.len()) => Workload::Range {
            key: unescape(&positional[1])?,
            range_end: unescape(positional.get(2).map_or("", String::as_str))?,
            serializable: match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return Err(format!("--consistency must be l or s, not '{other}'")),
            },
            revision,
        },
        Some("txn-put") if positional.len() == 1 => Workload::TxnPut { ops: txn_ops },
        Some("lease-keepalive") if positional.len() == 1 => Workload::LeaseKeepAlive,
        Some("lease-churn") if positional.len() == 1 => Workload::LeaseChurn,
        Some("lease-grant") if positional.len() == 1 => Workload::LeaseGrant,
        Some("watch-latency") if positional.len() == 1 => Workload::Watch(WatchMode::Latency),
        Some("watch") if positional.len() == 1 => Workload::Watch(WatchMode::Throughput),
        Some(other) => return Err(format!("unexpected arguments starting at '{other}'")),
        None => {
            return Err(concat!(
                "missing subcommand: put, range, txn-put, lease-keepalive, lease-churn, ",
                "watch-latency or watch"
            )
            .into())
        }
    };
    if conns == 0 || clients == 0 || key_space_size == 0 || txn_ops == 0 {
        return Err("--conns, --clients, --key-space-size and --txn-ops must be at least 1".into());
    }
    if endpoints.iter().any(String::is_empty) {
        return Err("--endpoints has an empty entry".into());
    }
    Ok(Options {
        endpoints,
        conns,
        clients,
        total,
        key_size,
        val_size,
        key_space_size,
        sequential_keys,
        seed,
        json,
        workload,
        watch,
    })
}

/// Everything needed to build request number `n`, shared by all clients.
struct Plan {
    options: Options,
    value: Bytes,
}

impl Plan {
    fn new(options: Options) -> Plan {
        // The value is drawn once, as etcd's benchmark does; it is the stream's first bytes.
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut value = vec![0u8; options.val_size];
        rng.fill_bytes(&mut value);
        Plan {
            options,
            value: Bytes::from(value),
        }
    }

    /// The key number of put `n`: a pure function of (seed, n), so a run is repeatable however
    /// requests are spread over clients. Random keys use stream 1 of the seeded ChaCha.
    fn put_key_number(&self, n: u64) -> u64 {
        let space = self.options.key_space_size;
        if self.options.sequential_keys {
            return n % space;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.options.seed);
        rng.set_stream(1);
        rng.set_word_pos(u128::from(n) * 2);
        rng.next_u64() % space
    }

    fn key(&self, number: u64) -> Bytes {
        let mut key = vec![0u8; self.options.key_size];
        let varint = zigzag_varint(number);
        let len = varint.len().min(key.len());
        key[..len].copy_from_slice(&varint[..len]);
        Bytes::from(key)
    }

    fn put(&self, key_number: u64) -> PutRequest {
        PutRequest {
            key: self.key(key_number),
            value: self.value.clone(),
            ..Default::default()
        }
    }

    fn request(&self, n: u64) -> Request {
        match &self.options.workload {
            Workload::Put => Request::Put(self.put(self.put_key_number(n))),
            Workload::Range {
                key,
                range_end,
                serializable,
                revision,
            } => Request::Range(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                serializable: *serializable,
                revision: *revision,
                ..Default::default()
            }),
            // As in etcd's benchmark: the puts of one transaction go to consecutive keys, so a
            // transaction never names a key twice (which etcd rejects) unless the key space is
            // smaller than --txn-ops.
            Workload::TxnPut { ops } => Request::Txn(TxnRequest {
                success: (0..*ops)
                    .map(|j| RequestOp {
                        request: Some(OpRequest::RequestPut(
                            self.put((n * ops + j) % self.options.key_space_size),
                        )),
                    })
                    .collect(),
                ..Default::default()
            }),
            Workload::LeaseKeepAlive => Request::KeepAlive,
            Workload::LeaseChurn => Request::Churn(self.put(self.put_key_number(n))),
            Workload::LeaseGrant => Request::Grant,
            Workload::Watch(_) => unreachable!("the watch workloads issue their own requests"),
        }
    }
}

/// Go's `binary.PutVarint`, which etcd's benchmark uses to write key numbers.
fn zigzag_varint(number: u64) -> Vec<u8> {
    let signed = number as i64;
    let mut x = ((signed << 1) ^ (signed >> 63)) as u64;
    let mut out = Vec::with_capacity(10);
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
    out
}

enum Request {
    Put(PutRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    /// Renew the client's own lease.
    KeepAlive,
    /// Grant a lease, put this key with it, revoke it.
    Churn(PutRequest),
    /// Grant a lease that stays.
    Grant,
}

/// One client's connections to the services it calls.
struct Services {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    /// The client's lease, for lease-keepalive.
    lease_id: i64,
}

impl Services {
    async fn call(&mut self, request: Request) -> Result<(), tonic::Status> {
        match request {
            Request::Put(r) => self.kv.put(r).await.map(drop),
            Request::Range(r) => self.kv.range(r).await.map(drop),
            Request::Txn(r) => self.kv.txn(r).await.map(drop),
            Request::KeepAlive => self.keep_alive_once().await,
            Request::Churn(put) => self.churn(put).await,
            Request::Grant => self.grant(3_600).await.map(drop),
        }
    }

    /// clientv3's KeepAliveOnce: a stream of its own, one request, one answer, closed.
    async fn keep_alive_once(&mut self) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(1);
        let id = self.lease_id;
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .expect("the stream is open");
        let mut answers = self
            .lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the keepalive stream ended"))?;
        drop(tx);
        if answer.ttl <= 0 {
            return Err(tonic::Status::not_found("the lease expired"));
        }
        Ok(())
    }

    async fn churn(&mut self, mut put: PutRequest) -> Result<(), tonic::Status> {
        let lease = self.grant(60).await?;
        put.lease = lease;
        self.kv.put(put).await?;
        self.lease
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await
            .map(drop)
    }

    async fn grant(&mut self, ttl: i64) -> Result<i64, tonic::Status> {
        let request = LeaseGrantRequest { ttl, id: 0 };
        Ok(self.lease.lease_grant(request).await?.into_inner().id)
    }
}

/// What one client saw: the latency of each successful request, and its errors.
#[derive(Default)]
struct ClientReport {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn run_client(
    mut services: Services,
    plan: Arc<Plan>,
    next_request: Arc<AtomicU64>,
) -> ClientReport {
    let mut report = ClientReport::default();
    loop {
        let n = next_request.fetch_add(1, Ordering::Relaxed);
        if n >= plan.options.total {
            return report;
        }
        let request = plan.request(n);
        let start = Instant::now();
        match services.call(request).await {
            Ok(()) => report.latencies.push(start.elapsed()),
            Err(status) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| status.to_string());
            }
        }
    }
}

struct Summary {
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn run(options: Options) -> Result<Summary, String> {
    let mut channels = Vec::with_capacity(options.conns);
    for i in 0..options.conns {
        channels.push(connect(&options.endpoints[i % options.endpoints.len()]).await?);
    }
    let clients = options.clients;
    let plan = Arc::new(Plan::new(options));
    let next_request = Arc::new(AtomicU64::new(0));

    let mut services = Vec::with_capacity(clients);
    for i in 0..clients {
        let channel = channels[i % channels.len()].clone();
        let mut s = Services {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            lease: LeaseClient::new(channel),
            lease_id: 0,
        };
        if matches!(plan.options.workload, Workload::LeaseKeepAlive) {
            // As etcd's benchmark: TTL 100 s, granted before requests start.
            s.lease_id = s
                .grant(100)
                .await
                .map_err(|e| format!("granting client {i}'s lease: {e}"))?;
        }
        services.push(s);
    }
    let start = Instant::now();
    let tasks: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(run_client(s, plan.clone(), next_request.clone())))
        .collect();
    let mut summary = Summary {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(plan.options.total as usize),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        let report = task
            .await
            .map_err(|e| format!("a client task failed: {e}"))?;
        summary.latencies.extend(report.latencies);
        summary.errors += report.errors;
        if summary.first_error.is_none() {
            summary.first_error = report.first_error;
        }
    }
    summary.elapsed = start.elapsed();
    summary.latencies.sort_unstable();
    Ok(summary)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn average(latencies: &[Duration]) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.iter().sum::<Duration>() / latencies.len() as u32
}

impl Summary {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn average(&self) -> Duration {
        average(&self.latencies)
    }

    /// Successful requests per second, as etcd's benchmark counts them.
    fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print_text(&self, options: &Options) {
        println!(
            "{} against {} ({} conns, {} clients)",
            options.workload.name(),
            options.endpoints.join(","),
            options.conns,
            options.clients
        );
        println!("Summary:");
        println!("  Total:        {:.4} secs.", self.elapsed.as_secs_f64());
        println!(
            "  Requests:     {} ok, {} errors",
            self.latencies.len(),
            self.errors
        );
        println!("  Requests/sec: {:.1}", self.requests_per_second());
        println!("  Average:      {:.3} ms", ms(self.average()));
        println!("Latency:");
        for (label, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)] {
            println!("  {label:<6} {:.3} ms", ms(self.percentile(p)));
        }
        println!("  {:<6} {:.3} ms", "max", ms(self.percentile(100.0)));
        if let Some(e) = &self.first_error {
            println!("First error: {e}");
        }
    }

    fn print_json(&self, options: &Options) {
        println!(
            concat!(
                "{{\"workload\":\"{}\",\"conns\":{},\"clients\":{},\"total\":{},",
                "\"ok\":{},\"errors\":{},\"seconds\":{:.4},\"rps\":{:.1},\"avg_ms\":{:.3},",
                "\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},",
                "\"max_ms\":{:.3}}}"
            ),
            options.workload.name(),
            options.conns,
            options.clients,
            options.total,
            self.latencies.len(),
            self.errors,
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
            ms(self.average()),
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.percentile(99.9)),
            ms(self.percentile(100.0)),
        );
        if let Some(e) = &self.first_error {
            eprintln!("detcd-bench: first error: {e}");
        }
    }
}

/// The watch throughput load's readers decode millions of events a second on the cores the
/// members under test run on; where the members are on other machines, their clients' work
/// costs the members nothing. At the lowest priority the readers take the CPU the members leave
/// (they still read every event: a member's stream waits for them), so the writers' put
/// latency under the watchers measures the members, not the generator's own backlog. The
/// runtime's threads take it as they start; the writers keep the main thread's priority (their
/// thread is started from it, `watch::WriterThread`). Best effort: a failure changes nothing.
#[allow(unsafe_code)] // one libc call that takes no pointers
fn lowest_priority() {
    // SAFETY: setpriority reads no memory of ours; on Linux, PRIO_PROCESS with `who` 0 means
    // the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("detcd-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(options.workload, Workload::Watch(WatchMode::Throughput)) {
        builder.on_thread_start(lowest_priority);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("detcd-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match options.workload {
        Workload::Watch(mode) => runtime
            .block_on(watch::run(&options, &options.watch, mode))
            .map(|summary| summary.print(&options, mode)),
        _ => runtime.block_on(run(options.clone())).map(|summary| {
            if options.json {
                summary.print_json(&options)
            } else {
                summary.print_text(&options)
            }
        }),
    };
    if let Err(e) = outcome {
        eprintln!("detcd-bench: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn varint_matches_go_binary_put_varint() {
        // Go: binary.PutVarint(buf, 0) = [0], 1 = [2], 64 = [128 1], 300 = [216 4].
        assert_eq!(zigzag_varint(0), vec![0]);
        assert_eq!(zigzag_varint(1), vec![2]);
        assert_eq!(zigzag_varint(64), vec![128, 1]);
        assert_eq!(zigzag_varint(300), vec![216, 4]);
    }

    #[test]
    fn put_keys_depend_only_on_seed_and_request_number() {
        let options = parse(&args("put --key-space-size 1000 --seed 7")).expect("valid flags");
        let plan = Plan::new(options);
        let first: Vec<u64> = (0..100).map(|n| plan.put_key_number(n)).collect();
        let reversed: Vec<u64> = (0..100).rev().map(|n| plan.put_key_number(n)).collect();
        assert!(first.iter().eq(reversed.iter().rev()));
        assert!(first.iter().all(|&k| k < 1000));
        assert!(first.iter().any(|&k| k != first[0]), "keys are spread");
    }

    #[test]
    fn flags_parse_before_and_after_the_subcommand() {
        let o = parse(&args(
            "--endpoints=a:1,b:2 --clients 100 range foo --consistency s --total=5",
        ))
        .expect("valid flags");
        assert_eq!(o.endpoints, vec!["a:1", "b:2"]);
        assert_eq!((o.clients, o.total), (100, 5));
        assert_eq!(o.workload.name(), "range-s");
        assert!(parse(&args("range")).is_err());
        assert!(parse(&args("put --consistency x --conns 0")).is_err());
        let unknown = parse(&args("put --bogus")).expect_err("unknown flag");
        assert!(unknown.contains("unknown flag --bogus"), "{unknown}");
    }

    #[test]
    fn range_keys_take_byte_escapes() {
        let o = parse(&args(r"range \x00a\\ \x00 --rev 7")).expect("valid flags");
        let Request::Range(range) = Plan::new(o).request(0) else {
            panic!("range builds ranges");
        };
        assert_eq!(&range.key[..], b"\0a\\");
        assert_eq!(&range.range_end[..], b"\0");
        assert_eq!(range.revision, 7);
        assert!(parse(&args(r"range \x0")).is_err());
        assert!(parse(&args(r"range \q")).is_err());
    }

    #[test]
    fn txn_put_names_each_key_once() {
        let o = parse(&args("txn-put --txn-ops 4 --key-space-size 100")).expect("valid flags");
        let plan = Plan::new(o);
        let Request::Txn(txn) = plan.request(3) else {
            panic!("txn-put builds transactions");
        };
        let keys: std::collections::BTreeSet<_> = txn
            .success
            .iter()
            .map(|op| match &op.request {
                Some(OpRequest::RequestPut(p)) => p.key.clone(),
                _ => panic!("only puts"),
            })
            .collect();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn lease_workloads_parse() {
        let o = parse(&args("lease-keepalive --clients 10")).expect("valid flags");
        assert_eq!(o.workload.name(), "lease-keepalive");
        let o = parse(&args("lease-churn")).expect("valid flags");
        assert_eq!(o.workload.name(), "lease-churn");
        let o = parse(&args("lease-grant --total 50000")).expect("valid flags");
        assert_eq!(o.workload.name(), "lease-grant");
        assert!(parse(&args("lease-churn extra")).is_err());
    }
}
