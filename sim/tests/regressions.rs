//! Seeds that once failed, replayed on every run. Each names the bug it found.

use detcd_sim::run::{run_seed, STANDARD_OPS};

fn assert_passes(seed: u64) {
    let (report, world) = run_seed(seed, STANDARD_OPS, false, None);
    if let Some(f) = report.failure {
        let (_, traced) = run_seed(seed, STANDARD_OPS, true, None);
        let text = traced.trace_text();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        panic!(
            "seed {seed} fails again: {}\n(last events, newest first)\n{}",
            f.what,
            tail.join("\n")
        );
    }
    assert!(
        world.ops.len() as u64 >= STANDARD_OPS,
        "seed {seed} ran its workload"
    );
}

/// A follower paused while the leader sent it a snapshot resumed, installed it, and hit an
/// election timeout before the snapshot was durable: raft-rs then read the log from its old
/// applied index, which the snapshot had replaced, and panicked. Ticks now wait for the install.
#[test]
fn seed_15252_election_timeout_during_snapshot_install() {
    assert_passes(15252);
}
