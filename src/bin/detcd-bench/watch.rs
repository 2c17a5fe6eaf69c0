//! The watch workloads, as etcd's `benchmark watch-latency` and `benchmark watch`: streams of
//! watchers are opened and created first, then puts are issued on what they watch, and every
//! watcher must receive every put's event exactly once, in revision order. A missing, duplicated
//! or reordered event fails the run: a fast watch that loses events is not a result.
//!
//! The put number travels in the first eight bytes of the value, so a watcher knows which put an
//! event belongs to and, in the latency workload, when that put was sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use detcd::proto::etcdserverpb::kv_client::KvClient;
use detcd::proto::etcdserverpb::watch_request::RequestUnion;
use detcd::proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};

use crate::transport::{connect, Channel};
use crate::watch_call::WatchCall;
use crate::watch_reply::{scan_reply, EventSummary, ReplyHead};
use crate::Options;

/// The prefix every watched key lives under.
const PREFIX: &[u8] = b"watch-bench/";
/// The key of the latency workload, which every watcher watches.
const LATENCY_KEY: &[u8] = b"watch-bench/latency";
/// A watcher that receives nothing for this long while events are owed to it has lost them.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The watch workloads' own flags.
#[derive(Debug, Clone)]
pub struct WatchFlags {
    pub streams: usize,
    pub watchers_per_stream: usize,
    /// Puts per second; 0 means as fast as the writers go.
    pub put_rate: u64,
    /// Server processes whose resident memory is sampled before and after the watchers exist.
    pub memory_pids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Every watcher watches one key; the event latency of each put is measured.
    Latency,
    /// Every watcher watches the prefix of the key space; events per second are measured.
    Throughput,
}

/// What a watch run measured.
pub struct WatchSummary {
    pub watchers: usize,
    pub puts: u64,
    pub events: u64,
    /// From the first put sent to the last event received.
    pub elapsed: Duration,
    /// Put to delivery, per event (latency mode only).
    pub event_latencies: Vec<Duration>,
    pub put_latencies: Vec<Duration>,
    /// Resident bytes added per watcher across the sampled processes, if any were named.
    pub memory_per_watcher: Option<f64>,
}

impl WatchSummary {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn print(&self, options: &Options, mode: WatchMode) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (events, puts) = (&self.event_latencies, &self.put_latencies);
        if options.json {
            println!(
                concat!(
                    "{{\"workload\":\"{}\",\"watchers\":{},\"puts\":{},\"events\":{},",
                    "\"seconds\":{:.4},\"events_per_sec\":{:.1},\"event_p50_ms\":{:.3},",
                    "\"event_p99_ms\":{:.3},\"event_max_ms\":{:.3},\"put_avg_ms\":{:.3},",
                    "\"put_p99_ms\":{:.3},\"bytes_per_watcher\":{:.0},\"errors\":0}}"
                ),
                options.workload.name(),
                self.watchers,
                self.puts,
                self.events,
                self.elapsed.as_secs_f64(),
                self.events_per_second(),
                ms(crate::percentile(events, 50.0)),
                ms(crate::percentile(events, 99.0)),
                ms(crate::percentile(events, 100.0)),
                ms(crate::average(puts)),
                ms(crate::percentile(puts, 99.0)),
                self.memory_per_watcher.unwrap_or(0.0),
            );
            return;
        }
        println!(
            "{} against {}: {} watchers, {} puts, every event delivered once and in order",
            options.workload.name(),
            options.endpoints.join(","),
            self.watchers,
            self.puts
        );
        println!(
            "  Events:       {} in {:.4} secs.",
            self.events,
            self.elapsed.as_secs_f64()
        );
        println!("  Events/sec:   {:.1}", self.events_per_second());
        if mode == WatchMode::Latency {
            for (label, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
                println!(
                    "  event {label:<6} {:.3} ms",
                    ms(crate::percentile(events, p))
                );
            }
        }
        println!("  put avg      {:.3} ms", ms(crate::average(puts)));
        println!("  put p99      {:.3} ms", ms(crate::percentile(puts, 99.0)));
        if let Some(bytes) = self.memory_per_watcher {
            println!("  memory:      {bytes:.0} resident bytes per watcher");
        }
    }
}

/// Shared by the writers and the watchers: when each put was sent, in nanoseconds since `origin`.
struct Clock {
    origin: Instant,
    sent: Vec<AtomicU64>,
}

impl Clock {
    fn since_sent(&self, put: u64, now: Instant) -> Duration {
        let sent = Duration::from_nanos(self.sent[put as usize].load(Ordering::Acquire));
        (now - self.origin).saturating_sub(sent)
    }
}

pub async fn run(
    options: &Options,
    flags: &WatchFlags,
    mode: WatchMode,
) -> Result<WatchSummary, String> {
    let mut channels = Vec::with_capacity(options.conns);
    for i in 0..options.conns {
        channels.push(connect(&options.endpoints[i % options.endpoints.len()]).await?);
    }
    let clock = Arc::new(Clock {
        origin: Instant::now(),
        sent: (0..options.total).map(|_| AtomicU64::new(0)).collect(),
    });
    let writers = WriterThread::start(options, flags, mode, &clock).await?;
    let memory_before = resident_bytes(&flags.memory_pids)?;
    let mut streams = Vec::with_capacity(flags.streams);
    for s in 0..flags.streams {
        let channel = channels[s % channels.len()].clone();
        streams.push(open_stream(channel, flags.watchers_per_stream, mode).await?);
    }
    let watchers = flags.streams * flags.watchers_per_stream;
    let memory_per_watcher = match memory_before {
        Some(before) if watchers > 0 => {
            // Give the servers a moment to settle what the creates allocated.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = resident_bytes(&flags.memory_pids)?.unwrap_or(before);
            Some((after as f64 - before as f64) / watchers as f64)
        }
        _ => None,
    };

    let start = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(stream.read_all(options.total, clock.clone())))
        .collect();
    let put_latencies = writers.run(start).await?;
    let mut summary = WatchSummary {
        watchers,
        puts: options.total,
        events: 0,
        elapsed: Duration::ZERO,
        event_latencies: Vec::new(),
        put_latencies,
        memory_per_watcher,
    };
    let mut last_event = start;
    for reader in readers {
        let report = reader
            .await
            .map_err(|e| format!("a watch stream failed: {e}"))??;
        summary.events += report.events;
        summary.event_latencies.extend(report.latencies);
        last_event = last_event.max(report.last_event);
    }
    summary.elapsed = last_event - start;
    summary.event_latencies.sort_unstable();
    summary.put_latencies.sort_unstable();
    Ok(summary)
}

/// The writers, on a thread and runtime of their own, with connections of their own (one per
/// endpoint, as in etcd's tool, so that a put does not queue behind watch events on a shared
/// connection). On the readers' runtime a put's answer would wait in the run queue behind the
/// decoding of watch responses, and the load generator's own backlog would count as the
/// server's write latency. Started from the thread that runs `run` (the main thread, not a
/// runtime worker), so that it keeps that thread's priority when the readers' is lowered.
struct WriterThread {
    go: tokio::sync::oneshot::Sender<Instant>,
    done: tokio::sync::oneshot::Receiver<Result<Vec<Duration>, String>>,
}

impl WriterThread {
    /// Connects the writers and has them wait for `run`.
    async fn start(
        options: &Options,
        flags: &WatchFlags,
        mode: WatchMode,
        clock: &Arc<Clock>,
    ) -> Result<WriterThread, String> {
        let (go, wait_for_go) = tokio::sync::oneshot::channel::<Instant>();
        let (connected, wait_for_connected) = tokio::sync::oneshot::channel();
        let (finished, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the writers' runtime: {e}"))?;
        let (options, flags, clock) = (options.clone(), flags.clone(), clock.clone());
        std::thread::Builder::new()
            .name("writers".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut channels = Vec::with_capacity(options.endpoints.len());
                    for endpoint in &options.endpoints {
                        match connect(endpoint).await {
                            Ok(channel) => channels.push(channel),
                            Err(e) => return drop(connected.send(Err(e))),
                        }
                    }
                    let _ = connected.send(Ok(()));
                    let Ok(start) = wait_for_go.await else {
                        return;
                    };
                    let writers = spawn_writers(&options, &flags, mode, &channels, &clock, start);
                    let mut latencies = Vec::with_capacity(options.total as usize);
                    for writer in writers {
                        match writer.await {
                            Ok(Ok(more)) => latencies.extend(more),
                            Ok(Err(e)) => return drop(finished.send(Err(e))),
                            Err(e) => return drop(finished.send(Err(format!("a writer: {e}")))),
                        }
                    }
                    let _ = finished.send(Ok(latencies));
                })
            })
            .map_err(|e| format!("starting the writers' thread: {e}"))?;
        wait_for_connected
            .await
            .map_err(|_| "the writers' thread ended".to_string())??;
        Ok(WriterThread { go, done })
    }

    /// Starts the puts, counting time from `start`; returns every put's latency.
    async fn run(self, start: Instant) -> Result<Vec<Duration>, String> {
        self.go
            .send(start)
            .map_err(|_| "the writers' thread ended".to_string())?;
        self.done
            .await
            .map_err(|_| "the writers' thread ended".to_string())?
    }
}

/// The writers: `--clients` tasks share the put numbers; with a put rate, put `n` is not sent
/// before `n / rate` seconds into the run.
fn spawn_writers(
    options: &Options,
    flags: &WatchFlags,
    mode: WatchMode,
    channels: &[Channel],
    clock: &Arc<Clock>,
    start: Instant,
) -> Vec<tokio::task::JoinHandle<Result<Vec<Duration>, String>>> {
    let next = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(crate::Plan::new(options.clone()));
    (0..options.clients)
        .map(|i| {
            let mut kv = KvClient::new(channels[i % channels.len()].clone());
            let (next, plan, clock) = (next.clone(), plan.clone(), clock.clone());
            let rate = flags.put_rate;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= plan.options.total {
                        return Ok(latencies);
                    }
                    if rate > 0 {
                        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let put = watched_put(&plan, mode, n);
                    let sent = Instant::now();
                    let since_origin = (sent - clock.origin).as_nanos() as u64;
                    clock.sent[n as usize].store(since_origin, Ordering::Release);
                    kv.put(put).await.map_err(|e| format!("put {n}: {e}"))?;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect()
}

/// Put `n`: its number in the value's first eight bytes, the rest of the value the plan's.
fn watched_put(plan: &crate::Plan, mode: WatchMode, n: u64) -> PutRequest {
    let key = match mode {
        WatchMode::Latency => Bytes::from_static(LATENCY_KEY),
        WatchMode::Throughput => {
            let number = plan.put_key_number(n);
            [PREFIX, &plan.key(number)[..]].concat().into()
        }
    };
    let mut value = plan.value.to_vec();
    value.resize(value.len().max(8), 0);
    value[..8].copy_from_slice(&n.to_be_bytes());
    PutRequest {
        key,
        value: value.into(),
        ..Default::default()
    }
}

/// One watch stream whose watchers have all been created.
struct OpenStream {
    call: WatchCall,
    /// Per watcher, indexed by the id the server gave it (ids start at 0 on each stream).
    watchers: Vec<WatcherState>,
    mode: WatchMode,
}

#[derive(Default, Clone)]
struct WatcherState {
    last_revision: i64,
    events: u64,
}

async fn open_stream(
    channel: Channel,
    watchers: usize,
    mode: WatchMode,
) -> Result<OpenStream, String> {
    let (key, range_end) = match mode {
        WatchMode::Latency => (LATENCY_KEY.to_vec(), Vec::new()),
        WatchMode::Throughput => (PREFIX.to_vec(), prefix_end(PREFIX)),
    };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        })),
    };
    let mut call = WatchCall::open(channel, &vec![create; watchers]).await?;
    for _ in 0..watchers {
        let message = call.next_message(STALL_LIMIT).await?;
        let head = scan_reply(&message, |_, _| {
            Err("events before every watcher was created".into())
        })?;
        if head.canceled || !head.created {
            return Err(format!("a watcher was not created: {}", head.cancel_reason));
        }
        if usize::try_from(head.watch_id).map_or(true, |id| id >= watchers) {
            return Err(format!("unexpected watch id {}", head.watch_id));
        }
    }
    Ok(OpenStream {
        call,
        watchers: vec![WatcherState::default(); watchers],
        mode,
    })
}

/// What one stream received.
struct StreamReport {
    events: u64,
    latencies: Vec<Duration>,
    last_event: Instant,
}

impl OpenStream {
    /// Reads until every watcher has received all `puts` events, checking each as it comes.
    async fn read_all(mut self, puts: u64, clock: Arc<Clock>) -> Result<StreamReport, String> {
        let mut report = StreamReport {
            events: 0,
            latencies: Vec::new(),
            last_event: Instant::now(),
        };
        let mut complete = 0;
        while complete < self.watchers.len() {
            let message = self.call.next_message(STALL_LIMIT).await?;
            let now = Instant::now();
            let mut events = 0;
            let head = scan_reply(&message, |head, event| {
                events += 1;
                let watcher = self.watcher(head)?;
                let put = check_event(watcher, event, puts)?;
                if self.mode == WatchMode::Latency {
                    report.latencies.push(clock.since_sent(put, now));
                }
                Ok(())
            })?;
            let watcher = self.watcher(&head)?;
            if watcher.events > puts {
                return Err(format!(
                    "watcher {} got more events than puts",
                    head.watch_id
                ));
            }
            if watcher.events == puts && events > 0 {
                complete += 1;
            }
            report.events += events;
            report.last_event = now;
        }
        Ok(report)
    }

    /// The watcher a response is for, unless it was canceled or is not one of the stream's.
    fn watcher(&mut self, head: &ReplyHead) -> Result<&mut WatcherState, String> {
        if head.canceled {
            return Err(format!(
                "watcher {} canceled: {}",
                head.watch_id, head.cancel_reason
            ));
        }
        usize::try_from(head.watch_id)
            .ok()
            .and_then(|id| self.watchers.get_mut(id))
            .ok_or_else(|| format!("events for unknown watch id {}", head.watch_id))
    }
}

/// Counts an event for its watcher, if it is a put's event that comes after the watcher's
/// last one, and answers the put's number.
fn check_event(watcher: &mut WatcherState, event: EventSummary, puts: u64) -> Result<u64, String> {
    if !event.has_kv {
        return Err("an event without kv".into());
    }
    let put = put_number(event.value_head, puts)?;
    if event.mod_revision <= watcher.last_revision {
        return Err(format!(
            "a watcher got revision {} after {}: duplicated or reordered",
            event.mod_revision, watcher.last_revision
        ));
    }
    watcher.last_revision = event.mod_revision;
    watcher.events += 1;
    Ok(put)
}

fn put_number(value_head: Option<[u8; 8]>, puts: u64) -> Result<u64, String> {
    let bytes = value_head.ok_or("an event whose value carries no put number")?;
    let n = u64::from_be_bytes(bytes);
    if n >= puts {
        return Err(format!(
            "an event for put {n}, beyond the run's {puts} puts"
        ));
    }
    Ok(n)
}

/// etcd's prefix range end: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("the prefix is not empty") += 1;
    end
}

/// The summed resident memory of the named processes, from /proc (Linux).
fn resident_bytes(pids: &[u32]) -> Result<Option<u64>, String> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no VmRSS line"))?;
        total += kib * 1024;
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_numbers_round_trip_through_values() {
        let options = crate::parse(&["watch".to_string()]).expect("valid flags");
        let plan = crate::Plan::new(options);
        let put = watched_put(&plan, WatchMode::Throughput, 41);
        assert!(put.key.starts_with(PREFIX));
        let head = put.value.get(..8).and_then(|head| head.try_into().ok());
        assert_eq!(put_number(head, 42), Ok(41));
        assert!(put_number(head, 41).is_err(), "beyond the run");
        assert!(put_number(None, 42).is_err());
        assert_eq!(prefix_end(PREFIX), b"watch-bench0".to_vec());
    }
}
