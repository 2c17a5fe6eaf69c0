//! etcd's HTTP endpoints on the client port (`/health`, `/livez`, `/readyz`, `/version`, `/metrics`), and
//! the NOSPACE alarm as etcd's clients see it: raised when a write finds the quota full, it
//! refuses puts but not deletes, and clears by itself once compaction makes room (or by
//! `etcdctl alarm disarm`).

use crate::common;

use std::time::{Duration, Instant};

use common::{cluster, error_line, etcd_available, etcdctl, start_all, stdout, Flavor};

/// A plain GET: the status code and the body.
fn get(endpoint: &str, path: &str) -> (u16, String) {
    common::http(endpoint, "GET", path, "")
}

#[test]
fn health_version_and_probes_answer_as_etcd_3_6() {
    let mut members = cluster(Flavor::Detcd, 3, "http", &[]);
    start_all(&mut members);
    let at = members[0].spec.endpoint();
    assert_eq!(
        get(&at, "/health"),
        (200, r#"{"health":"true","reason":""}"#.into())
    );
    assert_eq!(
        get(&at, "/version"),
        (
            200,
            r#"{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}"#.into()
        )
    );
    assert_eq!(get(&at, "/livez"), (200, "ok\n".into()));
    assert_eq!(
        get(&at, "/readyz?verbose"),
        (
            200,
            "[+]data_corruption ok\n[+]linearizable_read ok\n[+]non_learner ok\n\
             [+]serializable_read ok\nok\n"
                .into()
        )
    );
    assert_eq!(get(&at, "/readyz/non_learner"), (200, "ok\n".into()));
    assert_eq!(get(&at, "/nothing").0, 404);

    // Alone, the member loses its leader: unhealthy, though still live and serving reads
    // of its own state.
    members[1].kill();
    members[2].kill();
    // Until it notices (an election timeout), its quorum read times out instead.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&at, "/health");
        if body.trim() == r#"{"health":"false","reason":"RAFT NO LEADER"}"# {
            assert_eq!(status, 503);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'no leader' alone: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(&at, "/health?serializable=true").0, 200);
    assert_eq!(get(&at, "/livez").0, 200);
    let (status, body) = get(&at, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("[-]linearizable_read failed: "), "{body}");
    assert!(body.contains("[+]serializable_read ok"), "{body}");
}

/// Polls until `done` holds, or fails naming `what`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nospace_is_raised_when_the_quota_is_full_and_cleared_once_there_is_room() {
    let mut members = cluster(
        Flavor::Detcd,
        3,
        "nospace",
        &["--quota-backend-bytes=65536"],
    );
    start_all(&mut members);
    let at = members[0].spec.endpoint();
    let value = "v".repeat(2000);
    let refused = (0..200)
        .map(|i| etcdctl(&at, &["put", &format!("k{i:03}"), &value], None))
        .find(|out| !out.status.success())
        .expect("the quota fills up");
    assert_eq!(
        error_line(&refused),
        "Error: etcdserver: mvcc: database space exceeded"
    );
    let alarms = || stdout(&etcdctl(&at, &["alarm", "list"], None));
    until("NOSPACE raised", || alarms().contains("alarm:NOSPACE"));
    let (status, body) = get(&at, "/health");
    assert_eq!(
        (status, body.trim()),
        (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
    );
    assert_eq!(get(&at, "/health?exclude=NOSPACE").0, 200);
    let status = stdout(&etcdctl(&at, &["endpoint", "status"], None));
    assert!(status.contains("alarm:NOSPACE"), "{status}");
    // Even a small put is refused while the alarm stands, on every member.
    let small = etcdctl(&members[2].spec.endpoint(), &["put", "s", "1"], None);
    assert_eq!(
        error_line(&small),
        "Error: etcdserver: mvcc: database space exceeded"
    );

    // Deletes go on; once compaction releases the history, the alarm clears by itself.
    let deleted = etcdctl(&at, &["del", "k", "--prefix", "-w", "json"], None);
    assert!(deleted.status.success(), "{}", error_line(&deleted));
    let json: serde_json::Value = serde_json::from_slice(&deleted.stdout).expect("json");
    let revision = json["header"]["revision"].to_string();
    assert!(etcdctl(&at, &["compact", &revision], None).status.success());
    until("NOSPACE cleared", || alarms().trim().is_empty());
    assert!(etcdctl(&at, &["put", "s", "1"], None).status.success());
    assert_eq!(get(&at, "/health").0, 200);

    // An operator's disarm clears it too; the next refusal raises it again.
    let refused = (200..400)
        .map(|i| etcdctl(&at, &["put", &format!("k{i:03}"), &value], None))
        .find(|out| !out.status.success());
    assert!(refused.is_some(), "the quota fills up again");
    until("NOSPACE raised again", || {
        alarms().contains("alarm:NOSPACE")
    });
    assert!(etcdctl(&at, &["alarm", "disarm"], None).status.success());
    assert!(alarms().trim().is_empty());
}

/// One scraped page: each sample's name (labels included) and value, and the families that
/// have both a HELP and a TYPE line.
struct Scrape {
    samples: Vec<(String, f64)>,
    families: Vec<String>,
}

impl Scrape {
    fn of(page: &str) -> Scrape {
        let mut samples = Vec::new();
        let (mut helped, mut typed) = (Vec::new(), Vec::new());
        for line in page.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["#", "HELP", name, ..] => helped.push(name.to_string()),
                ["#", "TYPE", name, _kind] => typed.push(name.to_string()),
                [name, value] => samples.push((
                    name.to_string(),
                    value
                        .parse()
                        .unwrap_or_else(|_| panic!("not a number: {line}")),
                )),
                _ => panic!("not Prometheus' text format: {line:?}"),
            }
        }
        assert_eq!(helped, typed, "every family has HELP and TYPE, in order");
        for (name, _) in &samples {
            let family = Scrape::family_of(name);
            assert!(typed.contains(&family), "{name} has no TYPE line");
        }
        Scrape {
            samples,
            families: typed,
        }
    }

    fn family_of(sample: &str) -> String {
        let bare = sample.split('{').next().unwrap();
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| bare.strip_suffix(s))
            .unwrap_or(bare)
            .to_string()
    }

    fn value(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no sample {name}"))
            .1
    }
}

#[test]
fn metrics_answer_in_prometheus_format_under_etcds_names() {
    let mut members = cluster(Flavor::Detcd, 3, "metrics", &[]);
    start_all(&mut members);
    for i in 0..3 {
        let put = etcdctl(
            &members[0].spec.endpoint(),
            &["put", &format!("m{i}"), "v"],
            None,
        );
        assert!(put.status.success());
    }
    let scrapes: Vec<Scrape> = members
        .iter()
        .map(|m| {
            let (status, page) = get(&m.spec.endpoint(), "/metrics");
            assert_eq!(status, 200, "{page}");
            Scrape::of(&page)
        })
        .collect();
    let leaders = scrapes
        .iter()
        .filter(|s| s.value("etcd_server_is_leader") == 1.0)
        .count();
    assert_eq!(leaders, 1);
    for s in &scrapes {
        assert_eq!(s.value("etcd_server_has_leader"), 1.0);
        assert!(s.value("etcd_server_leader_changes_seen_total") >= 1.0);
        let committed = s.value("etcd_server_proposals_committed_total");
        assert!(committed >= s.value("etcd_server_proposals_applied_total"));
        assert!(s.value("etcd_server_proposals_applied_total") >= 1.0);
        assert!(s.value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
        assert!(s.value("process_resident_memory_bytes") > 1e6);
        // Buckets are cumulative and end at the count.
        let fsyncs = "etcd_disk_wal_fsync_duration_seconds";
        let buckets: Vec<f64> = s
            .samples
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("{fsyncs}_bucket")))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(buckets.len(), 15);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets[14], s.value(&format!("{fsyncs}_count")));
        assert!(buckets[14] >= 1.0, "the WAL synced");
    }
    if etcd_available() {
        let mut etcd = cluster(Flavor::Etcd, 1, "metrics-etcd", &[]);
        start_all(&mut etcd);
        let (_, page) = get(&etcd[0].spec.endpoint(), "/metrics");
        let theirs: Vec<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for family in &scrapes[0].families {
            assert!(theirs.contains(&family.as_str()), "etcd has no {family}");
        }
    }
}

#[test]
fn unsafe_no_fsync_writes_the_wal_without_syncing_it() {
    let mut members = cluster(Flavor::Detcd, 1, "no-fsync", &["--unsafe-no-fsync"]);
    start_all(&mut members);
    let endpoint = members[0].spec.endpoint();
    for i in 0..20 {
        let put = etcdctl(&endpoint, &["put", &format!("k{i}"), "v"], None);
        assert!(put.status.success());
    }
    let read = etcdctl(&endpoint, &["get", "k19", "--print-value-only"], None);
    assert_eq!(stdout(&read), "v\n");
    let (_, page) = get(&endpoint, "/metrics");
    let syncs = Scrape::of(&page).value("etcd_disk_wal_fsync_duration_seconds_count");
    assert_eq!(syncs, 0.0, "no fdatasync of the WAL");
}
