//! `/metrics` on the client port: Prometheus' text format, under the names etcd gives the
//! figures operators' dashboards and alerts read (leader, proposals, database size, WAL fsync
//! latency, the process). The member's own state comes from a Status call through the node, as
//! `etcdctl endpoint status` sees it; leader changes and fsync latencies from counters the
//! node's and the disk's threads keep; the process figures from `/proc/self`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::driver::DriverHandle;
use crate::node::{MemberId, ETCD_VERSION};
use crate::proto::etcdserverpb::StatusRequest;

/// etcd's buckets for disk latencies: 1 ms, doubling, up to 8.192 s.
const LATENCY_BUCKETS: usize = 14;

/// A latency histogram that threads record into without a lock.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot holds those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let millis = took.as_secs_f64() * 1_000.0;
        let slot = (0..LATENCY_BUCKETS)
            .find(|&i| millis <= (1u64 << i) as f64)
            .unwrap_or(LATENCY_BUCKETS);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        family(out, name, help, "histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = if i < LATENCY_BUCKETS {
                format!("{}", (1u64 << i) as f64 / 1_000.0)
            } else {
                "+Inf".to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// What the server's threads count for `/metrics`.
pub struct ServerMetrics {
    pub member: MemberId,
    pub wal_fsync: std::sync::Arc<Histogram>,
    leader_changes: AtomicU64,
}

impl ServerMetrics {
    pub fn new(member: MemberId, wal_fsync: std::sync::Arc<Histogram>) -> ServerMetrics {
        ServerMetrics {
            member,
            wal_fsync,
            leader_changes: AtomicU64::new(0),
        }
    }

    /// The member learned of a new leader (not of losing one).
    pub fn leader_changed(&self) {
        self.leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole page, in Prometheus' text format 0.0.4.
    pub async fn render(&self, driver: &DriverHandle) -> String {
        let mut out = String::new();
        if let Ok(status) = driver.call(StatusRequest {}).await {
            let leader = status.leader;
            gauge(
                &mut out,
                "etcd_server_has_leader",
                "1 while the member knows a leader, else 0.",
                u64::from(leader != 0),
            );
            gauge(
                &mut out,
                "etcd_server_is_leader",
                "1 while the member is the leader, else 0.",
                u64::from(leader == self.member),
            );
            gauge(
                &mut out,
                "etcd_server_is_learner",
                "1 while the member is a learner, else 0.",
                u64::from(status.is_learner),
            );
            gauge(
                &mut out,
                "etcd_server_proposals_committed_total",
                "The raft index committed.",
                status.raft_index,
            );
            gauge(
                &mut out,
                "etcd_server_proposals_applied_total",
                "The raft index applied.",
                status.raft_applied_index,
            );
            gauge(
                &mut out,
                "etcd_mvcc_db_total_size_in_bytes",
                "The store's size as Status reports it (dbSize).",
                status.db_size,
            );
            gauge(
                &mut out,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "The bytes the store holds, which the quota counts (dbSizeInUse).",
                status.db_size_in_use,
            );
            gauge(
                &mut out,
                "etcd_server_quota_backend_bytes",
                "The quota of the store's size.",
                status.db_size_quota,
            );
            let revision = status.header.map_or(0, |h| h.revision);
            gauge(
                &mut out,
                "etcd_debugging_mvcc_current_revision",
                "The store's current revision.",
                revision,
            );
        }
        let changes = self.leader_changes.load(Ordering::Relaxed);
        family(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "Leaders this member has seen elected since it started.",
            "counter",
        );
        let _ = writeln!(out, "etcd_server_leader_changes_seen_total {changes}");
        info(
            &mut out,
            "etcd_server_id",
            "The member's id.",
            "server_id",
            &format!("{:x}", self.member),
        );
        info(
            &mut out,
            "etcd_server_version",
            "The etcd version the member serves.",
            "server_version",
            ETCD_VERSION,
        );
        let cluster_version = ETCD_VERSION
            .rsplit_once('.')
            .map_or(ETCD_VERSION, |(minor, _)| minor);
        info(
            &mut out,
            "etcd_cluster_version",
            "The cluster's etcd version.",
            "cluster_version",
            cluster_version,
        );
        self.wal_fsync.render(
            "etcd_disk_wal_fsync_duration_seconds",
            "Latencies of the WAL's fdatasync calls.",
            &mut out,
        );
        process(&mut out);
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// A constant 1 whose label carries the information, as etcd's version and id metrics are.
fn info(out: &mut String, name: &str, help: &str, label: &str, value: &str) {
    family(out, name, help, "gauge");
    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} 1");
}

/// The process figures Prometheus' client libraries export, from `/proc/self`.
fn process(out: &mut String) {
    let Some(stat) = ProcessStat::read() else {
        return;
    };
    family(
        out,
        "process_cpu_seconds_total",
        "User and system CPU time spent, in seconds.",
        "counter",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", stat.cpu_seconds);
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory in bytes.",
        stat.resident_bytes,
    );
    gauge(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory in bytes.",
        stat.virtual_bytes,
    );
    gauge(
        out,
        "process_start_time_seconds",
        "When the process started, in seconds since the Unix epoch.",
        stat.start_time_seconds,
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Open file descriptors.",
            fds.count(),
        );
    }
    if let Some(max) = max_open_files() {
        gauge(
            out,
            "process_max_fds",
            "The most file descriptors the process may open.",
            max,
        );
    }
}

/// /proc reports CPU times in USER_HZ ticks, 100 a second on Linux whatever the kernel's own
/// tick rate.
const USER_HZ: f64 = 100.0;

struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
}

impl ProcessStat {
    fn read() -> Option<ProcessStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name, in parentheses, may hold spaces: the fields start after its end.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Numbered as proc(5) numbers them, from the state (field 3) on.
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |name: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(name))?;
            line.trim().trim_end_matches("kB").trim().parse().ok()
        };
        let boot: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        Some(ProcessStat {
            cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
            resident_bytes: kib("VmRSS:")? * 1024,
            virtual_bytes: kib("VmSize:")? * 1024,
            start_time_seconds: boot as f64 + field(22)? as f64 / USER_HZ,
        })
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_and_cumulates_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.002\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"8.192\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 20.0033\n"), "{out}");
        assert!(
            out.starts_with("# HELP x help\n# TYPE x histogram\n"),
            "{out}"
        );
    }

    #[test]
    fn the_process_figures_are_read_from_proc() {
        let stat = ProcessStat::read().expect("/proc/self/stat");
        assert!(stat.resident_bytes > 0 && stat.virtual_bytes >= stat.resident_bytes);
        assert!(stat.start_time_seconds > 1.5e9);
    }
}
