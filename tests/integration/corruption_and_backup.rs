//! The corruption check, on by default: one member's state is corrupted behind its back (its
//! snapshot file rewritten with an extra write, checksum and all), and the next compaction
//! raises CORRUPT, which refuses writes until an operator disarms it. And backups: `etcdctl
//! snapshot save` from a running member, `detcd snapshot restore` into a new cluster that holds
//! the same data, and a damaged backup refused with a clear error.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cluster, error_line, etcdctl, start_all, stdout, with_logs_on_failure, Flavor};
use detcd::proto::detcdpb::internal_request::Op;
use detcd::proto::etcdserverpb::PutRequest;
use detcd::state::State;

fn newest_snapshot(data_dir: &Path) -> Option<PathBuf> {
    let dir = data_dir.join("member").join("snap");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    files.pop()
}

/// Rewrites a snapshot file with one more key in its state: a corruption no checksum sees.
fn corrupt(snapshot_file: &Path) {
    let bytes = std::fs::read(snapshot_file).unwrap();
    let mut snapshot = detcd::wal::decode_snapshot_file(&bytes).unwrap();
    let mut state = State::decode_snapshot(&snapshot.data).unwrap();
    state.apply(Op::Put(PutRequest {
        key: "sneaky".into(),
        value: "bits".into(),
        ..PutRequest::default()
    }));
    snapshot.data = state.encode_snapshot().into();
    std::fs::write(snapshot_file, detcd::wal::encode_snapshot_file(&snapshot)).unwrap();
}

fn until(what: &str, max: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {max:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_member_whose_state_was_corrupted_raises_corrupt_at_the_next_compaction() {
    let mut members = cluster(Flavor::Detcd, 3, "corrupt", &["--snapshot-count=5"]);
    start_all(&mut members);
    let endpoints: Vec<String> = members.iter().map(|m| m.spec.endpoint()).collect();
    let all = endpoints.join(",");
    with_logs_on_failure(&members, || {
        for i in 0..60 {
            let out = etcdctl(&all, &["put", &format!("k{i}"), &"v".repeat(200)], None);
            assert!(out.status.success(), "{}", error_line(&out));
        }
    });
    let victim = 2;
    until("a snapshot on the victim", Duration::from_secs(20), || {
        newest_snapshot(&members[victim].spec.data_dir).is_some()
    });
    members[victim].terminate();
    corrupt(&newest_snapshot(&members[victim].spec.data_dir).unwrap());
    members[victim].start();
    // A write proposed through a member that still follows the stopped victim is lost with
    // it (as in etcd): wait until the cluster takes writes again.
    common::wait_until_writable(&members[0], Duration::from_secs(30));
    let out = etcdctl(&all, &["put", "after", "restart"], None);
    assert!(out.status.success(), "{}", error_line(&out));
    let rev = stdout(&etcdctl(
        &endpoints[0],
        &["get", "after", "-w", "json"],
        None,
    ));
    let revision: serde_json::Value = serde_json::from_str(&rev).unwrap();
    let revision = revision["header"]["revision"].as_i64().unwrap().to_string();
    // The victim must have caught up before the compaction, or it has nothing to hash.
    until("the victim catching up", Duration::from_secs(20), || {
        etcdctl(
            &endpoints[victim],
            &["get", "after", "--consistency=s"],
            None,
        )
        .stdout
        .starts_with(b"after")
    });
    let out = etcdctl(&all, &["compact", &revision], None);
    assert!(out.status.success(), "{}", error_line(&out));
    until("the CORRUPT alarm", Duration::from_secs(20), || {
        stdout(&etcdctl(&all, &["alarm", "list"], None)).contains("alarm:CORRUPT")
    });
    let refused = etcdctl(&all, &["put", "x", "y"], None);
    assert_eq!(error_line(&refused), "Error: etcdserver: corrupt cluster");
    let status = stdout(&etcdctl(&endpoints[0], &["endpoint", "status"], None));
    assert!(status.contains("alarm:CORRUPT"), "{status}");
    assert!(etcdctl(&all, &["alarm", "disarm"], None).status.success());
    let out = etcdctl(&all, &["put", "x", "y"], None);
    assert!(out.status.success(), "{}", error_line(&out));
}

fn detcd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_detcd"))
        .args(args)
        .output()
        .expect("running detcd")
}

#[test]
fn a_backup_restores_into_a_new_cluster_and_a_damaged_one_is_refused() {
    let mut source = cluster(Flavor::Detcd, 1, "backup-src", &[]);
    start_all(&mut source);
    let from = source[0].spec.endpoint();
    for i in 0..100 {
        let out = etcdctl(
            &from,
            &["put", &format!("key{i:03}"), &format!("value{i}")],
            None,
        );
        assert!(out.status.success());
    }
    let lease = stdout(&etcdctl(&from, &["lease", "grant", "600"], None));
    let lease_id = lease.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        etcdctl(&from, &["put", "leased", "v", "--lease", &lease_id], None)
            .status
            .success()
    );
    let dir = common::temp_dir("backup-file");
    let file = dir.join("backup.db");
    let file = file.to_str().unwrap();
    let saved = etcdctl(&from, &["snapshot", "save", file], None);
    assert!(saved.status.success(), "{}", error_line(&saved));
    let expected = stdout(&etcdctl(
        &from,
        &["get", "", "--prefix", "-w", "json"],
        None,
    ));
    source[0].terminate();

    // Restore the same file into each member of a new 3-member cluster, then start it.
    let mut restored = cluster(Flavor::Detcd, 3, "backup-dst", &[]);
    for m in &restored {
        let args = m.args();
        let mut restore = vec!["snapshot", "restore", file];
        let wanted = [
            "--name",
            "--data-dir",
            "--initial-cluster",
            "--initial-cluster-token",
            "--initial-advertise-peer-urls",
        ];
        restore.extend(
            args.iter()
                .map(String::as_str)
                .filter(|a| wanted.iter().any(|w| a.starts_with(w))),
        );
        let out = detcd(&restore);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start_all(&mut restored);
    let to: Vec<String> = restored.iter().map(|m| m.spec.endpoint()).collect();
    with_logs_on_failure(&restored, || {
        let got = stdout(&etcdctl(
            &to.join(","),
            &["get", "", "--prefix", "-w", "json"],
            None,
        ));
        let kvs =
            |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()["kvs"].clone();
        assert_eq!(
            kvs(&got),
            kvs(&expected),
            "the restored cluster holds the same data"
        );
        let leases = stdout(&etcdctl(&to[1], &["lease", "list"], None));
        assert!(leases.contains(&lease_id), "the lease survives: {leases}");
        let members = stdout(&etcdctl(&to[2], &["member", "list"], None));
        assert_eq!(members.lines().count(), 3, "{members}");
        assert!(etcdctl(&to[0], &["put", "new", "write"], None)
            .status
            .success());
    });

    // A damaged file is refused, and nothing is created.
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let damaged = dir.join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let target = dir.join("never");
    let out = detcd(&[
        "snapshot",
        "restore",
        damaged.to_str().unwrap(),
        &format!("--data-dir={}", target.display()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sha256 checksum mismatch"), "{stderr}");
    assert!(!target.join("member").exists());
}
