//! A 3-member detcd cluster of real processes on loopback, started with the command line that
//! starts a 3-member etcd cluster: replication through any member, leader failure, restart and
//! catch-up (through a snapshot when far behind).

use crate::common;

use std::time::{Duration, Instant};

use common::{cluster, leader_of, start_all, stdout, wait_until_writable, Flavor, Member};

fn get(member: &Member, key: &str) -> String {
    stdout(&member.etcdctl(&["get", key, "--print-value-only", "--consistency=s"]))
}

fn wait_for_value(member: &Member, key: &str, value: &str, max: Duration) {
    let deadline = Instant::now() + max;
    while get(member, key) != format!("{value}\n") {
        assert!(
            Instant::now() < deadline,
            "{} never saw {key}={value}\n{}",
            member.spec.name,
            member.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_leader(members: &[Member], not: Option<usize>, max: Duration) -> usize {
    let deadline = Instant::now() + max;
    loop {
        if let Some(i) = leader_of(members).filter(|i| Some(*i) != not) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_members_replicate_survive_leader_loss_and_catch_up() {
    let mut members = cluster(
        Flavor::Detcd,
        3,
        "c3",
        &["--snapshot-count=50", "--snapshot-catchup-entries=10"],
    );
    start_all(&mut members);

    // Writes through any member are readable through every member.
    for (i, m) in members.iter().enumerate() {
        let out = m.etcdctl(&["put", &format!("k{i}"), &format!("from-{i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for m in &members {
        for i in 0..3 {
            wait_for_value(
                m,
                &format!("k{i}"),
                &format!("from-{i}"),
                Duration::from_secs(5),
            );
        }
    }

    // Killing the leader elects a new one, and writes continue.
    let old = wait_for_leader(&members, None, Duration::from_secs(10));
    members[old].kill();
    let new = wait_for_leader(&members, Some(old), Duration::from_secs(15));
    assert_ne!(new, old);
    let survivor = (0..3).find(|i| *i != old).unwrap();
    wait_until_writable(&members[survivor], Duration::from_secs(15));
    // Far more writes than the snapshot count and the entries kept behind a snapshot, so the
    // restarted member can only catch up from a snapshot.
    for i in 0..200 {
        let out =
            members[survivor].etcdctl(&["put", &format!("after{}", i % 23), &format!("v{i}")]);
        assert!(
            out.status.success(),
            "write {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The killed member restarts on its data dir and catches up.
    members[old].start();
    wait_for_value(&members[old], "after22", "v183", Duration::from_secs(20));
    wait_for_value(&members[old], "k0", "from-0", Duration::from_secs(5));
    let log = members[old].log_text();
    assert!(
        log.contains("installed a snapshot"),
        "caught up through a snapshot:\n{log}"
    );
    assert!(
        log.contains("(decoded off the node's thread)"),
        "the snapshot's data was decoded before the node stepped it:\n{log}"
    );
}
