//! etcd's flags that tune what detcd does differently or not at all: a member started with
//! them serves, and the ones with an effect have it (`--socket-reuse-port`,
//! `--experimental-warning-apply-duration`).

use crate::common;

use std::time::{Duration, Instant};

use common::{cluster, start_all, stdout, Flavor};

/// Storage-engine tunables, lease checkpoints, Pre-Vote, the initial tick advance and the
/// socket options, as etcd 3.5 manifests set them.
const FLAGS: &[&str] = &[
    "--backend-batch-interval=10ms",
    "--backend-batch-limit=1000",
    "--backend-bbolt-freelist-type=map",
    "--experimental-compaction-batch-limit=500",
    "--experimental-bootstrap-defrag-threshold-megabytes=100",
    "--experimental-txn-mode-write-with-shared-buffer=true",
    "--experimental-enable-lease-checkpoint=true",
    "--experimental-enable-lease-checkpoint-persist=true",
    "--pre-vote=true",
    "--initial-election-tick-advance=false",
    "--socket-reuse-address=true",
    "--socket-reuse-port=true",
    "--enable-pprof=false",
    "--experimental-warning-apply-duration=1ns",
];

/// Binds a socket with SO_REUSEPORT to `port` on the loopback: succeeds only if every socket
/// already bound there allows it.
fn shares_port(port: u16) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseport(true).unwrap();
        let bound = socket.bind(([127, 0, 0, 1], port).into()).is_ok();
        bound && socket.listen(1).is_ok()
    })
}

#[test]
fn a_member_started_with_etcds_tuning_flags_serves_and_applies_them() {
    let mut members = cluster(Flavor::Detcd, 1, "flags", FLAGS);
    start_all(&mut members);
    let member = &members[0];
    common::with_logs_on_failure(&members, || {
        assert_eq!(stdout(&member.etcdctl(&["put", "k", "v"])), "OK\n");
        assert_eq!(
            stdout(&member.etcdctl(&["get", "k", "--print-value-only"])),
            "v\n"
        );
        assert!(shares_port(member.spec.client_port));
        assert!(shares_port(member.spec.peer_port));
        // Every batch takes longer than a nanosecond: warned of, at most once a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !member.log_text().contains("apply request took too long") {
            assert!(Instant::now() < deadline, "no slow-apply warning");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn without_socket_reuse_port_the_ports_are_the_members_alone() {
    let mut members = cluster(Flavor::Detcd, 1, "no-reuse-port", &[]);
    start_all(&mut members);
    assert!(!shares_port(members[0].spec.client_port));
    assert!(!shares_port(members[0].spec.peer_port));
}

#[test]
fn a_full_log_file_is_rotated_and_compressed_as_etcds_is() {
    let dir = common::temp_dir("log-rotation");
    let log = dir.join("member.log");
    // A megabyte of earlier lines: the member's first line rotates the file.
    std::fs::write(&log, "an earlier line\n".repeat(65_536)).unwrap();
    let flags = [
        format!("--log-outputs={}", log.display()),
        "--enable-log-rotation".to_string(),
        r#"--log-rotation-config-json={"maxsize":1,"maxbackups":1,"compress":true}"#.to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut members = cluster(Flavor::Detcd, 1, "log-rotation", &flags);
    start_all(&mut members);
    let backups = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("member-") && name.ends_with(".log.gz"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while backups().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "no compressed backup: {:?}",
            backups()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let current = std::fs::read_to_string(&log).unwrap();
    assert!(!current.contains("an earlier line"), "{current}");
    assert!(
        current.contains("ready to serve client requests"),
        "{current}"
    );
}
