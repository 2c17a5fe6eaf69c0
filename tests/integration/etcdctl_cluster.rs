//! Running a cluster with etcdctl 3.4: growing a one-member cluster to three (a learner that
//! joins, catches up and is promoted, then a voter) and shrinking it back, the leader included,
//! while a writer keeps writing and nothing it was told is written gets lost; and the
//! Maintenance commands (`endpoint status|hashkv`, `alarm`, `defrag`, `move-leader`) and the
//! Cluster errors, compared with what real etcd 3.4 answers where its answer is deterministic.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, error_line, etcd_available, etcdctl, stdout, Flavor};

/// Retries an etcdctl command until it succeeds (a learner catching up, a member starting).
fn until_ok(endpoint: &str, args: &[&str], max: Duration) -> String {
    let deadline = Instant::now() + max;
    loop {
        let out = etcdctl(endpoint, args, None);
        if out.status.success() {
            return stdout(&out);
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} kept failing: {}",
            error_line(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn member_id(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split(", ").nth(2) == Some(name))
        .and_then(|l| l.split(", ").next())
        .unwrap_or_else(|| panic!("no member {name} in {list}"))
        .to_string()
}

/// Puts keys one after the other until told to stop; returns those acknowledged.
fn writer(endpoints: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{i:05}");
            let out = etcdctl(
                &endpoints,
                &["put", &key, "v", "--command-timeout=3s"],
                None,
            );
            if out.status.success() {
                acknowledged.push(key);
            }
            i += 1;
        }
        acknowledged
    })
}

#[test]
fn a_cluster_grows_from_one_member_to_three_and_shrinks_back_under_writes() {
    let mut members = cluster(Flavor::Detcd, 3, "grow", &[]);
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.spec.name, m.spec.peer_port))
        .collect();
    members[0].initial_cluster = urls[0].clone();
    members[1].initial_cluster = urls[..2].join(",");
    members[2].initial_cluster = urls.join(",");
    for m in &mut members[1..] {
        m.extra_args.push("--initial-cluster-state=existing".into());
    }
    members[0].start();
    common::wait_until_writable(&members[0], Duration::from_secs(30));
    let all: Vec<String> = members.iter().map(|m| m.spec.endpoint()).collect();
    let first = all[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(all.join(","), stop.clone());
    let peer_ports: Vec<u16> = members.iter().map(|m| m.spec.peer_port).collect();
    let peer = |i: usize| format!("--peer-urls=http://127.0.0.1:{}", peer_ports[i]);

    // A learner joins, catches up, and is promoted once in sync.
    let added = until_ok(
        &first,
        &["member", "add", "m1", "--learner", &peer(1)],
        Duration::from_secs(10),
    );
    assert!(
        added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{added}"
    );
    members[1].start();
    let list = until_started(&first, "m1");
    let m1 = member_id(&list, "m1");
    assert!(list.contains("true"), "the new member is a learner: {list}");
    let learner_get = etcdctl(&all[1], &["get", "w00000"], None);
    assert_eq!(
        error_line(&learner_get),
        "Error: etcdserver: rpc not supported for learner"
    );
    let learner_watch = etcdctl(&all[1], &["watch", "w", "--prefix"], None);
    assert!(
        String::from_utf8_lossy(&learner_watch.stderr).contains("rpc not supported for learner"),
        "{}",
        String::from_utf8_lossy(&learner_watch.stderr)
    );
    until_ok(&first, &["member", "promote", &m1], Duration::from_secs(20));

    // A voter joins directly.
    until_ok(
        &first,
        &["member", "add", "m2", &peer(2)],
        Duration::from_secs(10),
    );
    members[2].start();
    until_started(&first, "m2");
    // One endpoint is enough: `--cluster` finds the others in the member list.
    let status = until_ok(
        &first,
        &["endpoint", "status", "--cluster"],
        Duration::from_secs(10),
    );
    assert_eq!(status.lines().count(), 3, "{status}");

    // Leadership moves to m2, asked of whichever member leads.
    let list = until_ok(&first, &["member", "list"], Duration::from_secs(5));
    let m2 = member_id(&list, "m2");
    let moved = until_ok(
        &all.join(","),
        &["move-leader", &m2],
        Duration::from_secs(20),
    );
    assert!(moved.contains(&format!("to {m2}")), "{moved}");
    let updated = until_ok(
        &first,
        &["member", "update", &m2, &peer(2)],
        Duration::from_secs(10),
    );
    // etcdctl prints the id as `%16x`: padded with spaces when it has fewer than 16 digits.
    assert!(
        updated.starts_with(&format!("Member {m2:>16} updated in cluster")),
        "{updated}"
    );

    // Shrink back to one member: the original one goes first, then the leader.
    let m0 = member_id(&list, "m0");
    until_ok(&all[1], &["member", "remove", &m0], Duration::from_secs(20));
    assert!(
        members[0].wait_exit(Duration::from_secs(10)).is_some(),
        "a removed member exits"
    );
    until_ok(&all[1], &["member", "remove", &m2], Duration::from_secs(20));
    assert!(
        members[2].wait_exit(Duration::from_secs(10)).is_some(),
        "a removed member exits"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writes.join().expect("writer");
    assert!(
        acknowledged.len() > 10,
        "the writer kept writing: {}",
        acknowledged.len()
    );

    let list = until_ok(&all[1], &["member", "list"], Duration::from_secs(5));
    assert_eq!(list.lines().count(), 1, "{list}");
    let keys = until_ok(
        &all[1],
        &["get", "w", "--prefix", "--keys-only"],
        Duration::from_secs(5),
    );
    let present: std::collections::BTreeSet<&str> =
        keys.lines().filter(|l| !l.is_empty()).collect();
    for key in &acknowledged {
        assert!(
            present.contains(key.as_str()),
            "acknowledged {key} was lost"
        );
    }
}

/// Waits until the member list shows `name` started; returns the list.
fn until_started(endpoint: &str, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = until_ok(endpoint, &["member", "list"], Duration::from_secs(5));
        if list
            .lines()
            .any(|l| l.contains(", started, ") && l.split(", ").nth(2) == Some(name))
        {
            return list;
        }
        assert!(Instant::now() < deadline, "{name} never started: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What one member answers to the Maintenance commands and Cluster errors, with what differs
/// between any two members (ids, sizes, terms) left out.
fn maintenance_transcript(endpoint: &str) -> Vec<String> {
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        assert!(etcdctl(endpoint, &["put", k, v], None).status.success());
    }
    let mut out = Vec::new();
    let mut record = |args: &[&str]| {
        let o = etcdctl(endpoint, args, None);
        let text = if o.status.success() {
            stdout(&o)
        } else {
            error_line(&o)
        };
        out.push(format!("{args:?} -> {}", text.trim()));
    };
    record(&["alarm", "list"]);
    record(&["alarm", "disarm"]);
    record(&["member", "remove", "1234"]);
    record(&["member", "promote", "1234"]);
    record(&["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"]);
    record(&["member", "add", "x", "--peer-urls=not-a-url"]);
    record(&["move-leader", "1234"]);
    let hash = etcdctl(endpoint, &["endpoint", "hashkv", "-w", "json"], None);
    let json: serde_json::Value = serde_json::from_slice(&hash.stdout).expect("hashkv json");
    out.push(format!("hashkv {}", json[0]["HashKV"]["hash"]));
    let status = etcdctl(endpoint, &["endpoint", "status", "-w", "json"], None);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let s = &json[0]["Status"];
    out.push(format!(
        "status leader is self {}, learner {}, errors {}",
        s["leader"] == s["header"]["member_id"],
        s["isLearner"],
        s["errors"]
    ));
    // `--cluster` dials the client URLs of the member list; grpc-go then sends the whole URL
    // as the HTTP/2 authority (server/authority.rs).
    let status = etcdctl(
        endpoint,
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|_| panic!("status --cluster: {}", error_line(&status)));
    out.push(format!(
        "status --cluster: {} endpoint, a URL {}, leader is self {}",
        json.as_array().map_or(0, Vec::len),
        json[0]["Endpoint"]
            .as_str()
            .unwrap_or("")
            .starts_with("http://"),
        json[0]["Status"]["leader"] == json[0]["Status"]["header"]["member_id"]
    ));
    let hash = etcdctl(
        endpoint,
        &["endpoint", "hashkv", "--cluster", "-w", "json"],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&hash.stdout)
        .unwrap_or_else(|_| panic!("hashkv --cluster: {}", error_line(&hash)));
    out.push(format!("hashkv --cluster {}", json[0]["HashKV"]["hash"]));
    let health = etcdctl(endpoint, &["endpoint", "health", "--cluster"], None);
    // etcdctl 3.4 prints health to stderr.
    let text = String::from_utf8_lossy(&health.stderr) + String::from_utf8_lossy(&health.stdout);
    let line = text.lines().find(|l| l.contains(" is ")).unwrap_or("");
    out.push(format!(
        "health --cluster: {}",
        line.split(": took")
            .next()
            .unwrap_or("")
            .split(" is ")
            .nth(1)
            .unwrap_or("")
    ));
    out
}

#[test]
fn maintenance_commands_answer_as_etcd_does() {
    if !etcd_available() {
        eprintln!("etcd is not installed: skipping the comparison");
        return;
    }
    let mut detcd = cluster(Flavor::Detcd, 1, "maint-detcd", &[]);
    let mut etcd = cluster(Flavor::Etcd, 1, "maint-etcd", &[]);
    common::start_all(&mut detcd);
    common::start_all(&mut etcd);
    let ours = maintenance_transcript(&detcd[0].spec.endpoint());
    let theirs = maintenance_transcript(&etcd[0].spec.endpoint());
    assert_eq!(ours, theirs);
    let defrag = etcdctl(&detcd[0].spec.endpoint(), &["defrag"], None);
    assert!(stdout(&defrag).starts_with("Finished defragmenting etcd member"));
}

#[test]
fn a_dead_member_is_replaced_by_a_fresh_one() {
    let mut members = cluster(Flavor::Detcd, 4, "replace", &[]);
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.spec.name, m.spec.peer_port))
        .collect();
    for m in &mut members[..3] {
        m.initial_cluster = urls[..3].join(",");
    }
    members[3].initial_cluster = [&urls[..2], &urls[3..]].concat().join(",");
    members[3]
        .extra_args
        .push("--initial-cluster-state=existing".into());
    common::start_all(&mut members[..3]);
    let live = format!(
        "{},{}",
        members[0].spec.endpoint(),
        members[1].spec.endpoint()
    );
    for i in 0..20 {
        assert!(etcdctl(&live, &["put", &format!("k{i}"), "v"], None)
            .status
            .success());
    }
    members[2].kill();
    let list = until_ok(&live, &["member", "list"], Duration::from_secs(5));
    let dead = member_id(&list, "m2");
    until_ok(&live, &["member", "remove", &dead], Duration::from_secs(20));
    let peer = format!("--peer-urls=http://127.0.0.1:{}", members[3].spec.peer_port);
    until_ok(
        &live,
        &["member", "add", "m3", &peer],
        Duration::from_secs(10),
    );
    members[3].start();
    until_started(&live, "m3");
    let fresh = members[3].spec.endpoint();
    let got = until_ok(
        &fresh,
        &["get", "k19", "--print-value-only"],
        Duration::from_secs(20),
    );
    assert_eq!(got.trim(), "v");
    let list = until_ok(&fresh, &["member", "list"], Duration::from_secs(5));
    let names: Vec<&str> = list.lines().filter_map(|l| l.split(", ").nth(2)).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["m0", "m1", "m3"], "{list}");
    // The removed member cannot come back under its old id.
    members[2].start();
    assert!(
        members[2].wait_exit(Duration::from_secs(15)).is_some(),
        "a removed member that restarts must stop"
    );
}
