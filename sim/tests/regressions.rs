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

/// The leader kept handing a lagging follower the snapshot it had built earlier, though the log
/// had been compacted past it since; the follower installed it, was still behind the log, and
/// got the same snapshot again, forever. Found by the catch-up check of the liveness phase.
#[test]
fn seed_4993_stale_snapshot_for_a_follower() {
    assert_passes(4993);
}

/// The leader resends the same snapshot view to a follower while raft waits on it; a compaction
/// in between released the cold segment holding superseded values the view still names, and
/// encoding the resend failed. Releases now wait until that view is dropped or replaced.
#[test]
fn seed_1387_snapshot_resent_after_its_cold_segment_was_released() {
    assert_passes(1387);
}

/// Shrunk cases (`detcd-sim --seed N --bug B --shrink`) saved so that each injected bug keeps a
/// small reproduction: with the bug on they must still fail, and with it off they must pass.
const SHRUNK_BUG_CASES: &[(&str, u64, &str)] = &[
    (
        "apply-twice",
        0,
        "members=1,clients=2,ops=6,keys=1,delay_min_us=1573,delay_max_us=1573,loss=0,dup=0,torn=0,diskerr=0,\
         drift_ppm=0,faults_ms=300,snap=20,timeout_ms=4819,disk_us=2428",
    ),
    (
        "read-without-read-index",
        1,
        "members=3,clients=1,ops=17,keys=1,delay_min_us=989,delay_max_us=21452,loss=0,dup=0,torn=0,diskerr=0,\
         drift_ppm=1000,faults_ms=0,snap=20,timeout_ms=4897,disk_us=15101",
    ),
];

#[test]
fn shrunk_bug_cases_still_reproduce() {
    use detcd_sim::options::Bug;
    use detcd_sim::run::{draw_options, run_options};
    for (bug, seed, overrides) in SHRUNK_BUG_CASES {
        let mut options = draw_options(*seed, STANDARD_OPS);
        options.apply_overrides(overrides).expect("valid overrides");
        let (clean, _) = run_options(*seed, options.clone(), false);
        assert!(
            clean.failure.is_none(),
            "{bug} case without the bug: {:?}",
            clean.failure
        );
        options.bug = Some(Bug::parse(bug).expect("known bug"));
        let (buggy, _) = run_options(*seed, options, false);
        assert!(buggy.failure.is_some(), "{bug} case no longer reproduces");
    }
}
