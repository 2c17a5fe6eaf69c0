//! One seed from start to verdict: draw the options, run the world through both phases, then
//! check the history. A report carries everything needed to print or reproduce the run.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::checker::{compaction, leases, linearizability, locks, sessions, watch};
use crate::options::{Bug, Options};
use crate::world::{Counters, Failure, World};

/// Client operations per history in the standard profile.
pub const STANDARD_OPS: u64 = 100;

pub struct Report {
    pub seed: u64,
    pub options: Options,
    pub failure: Option<Failure>,
    pub trace_hash: u64,
    pub counters: Counters,
}

/// Runs one seed. With `trace`, the world keeps a readable trace of every event.
pub fn run_seed(seed: u64, ops: u64, trace: bool, bug: Option<Bug>) -> (Report, World) {
    run_seed_with(seed, ops, None, trace, bug)
}

/// `run_seed`, optionally pinning the cluster size (the benchmark's fixed profiles).
pub fn run_seed_with(
    seed: u64,
    ops: u64,
    members: Option<u64>,
    trace: bool,
    bug: Option<Bug>,
) -> (Report, World) {
    let mut options = draw_options(seed, ops);
    options.bug = bug;
    if let Some(members) = members {
        options.members = members;
    }
    run_options(seed, options, trace)
}

/// What a seed draws, before any override.
pub fn draw_options(seed: u64, ops: u64) -> Options {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Options::draw(&mut rng, ops)
}

/// Runs one seed with the given options (drawn, then possibly overridden or shrunk).
pub fn run_options(seed: u64, options: Options, trace: bool) -> (Report, World) {
    let mut world = World::new(seed, options.clone(), trace);
    // A panic inside a member (an assertion of ours or of raft-rs) is a failure of this seed,
    // not of the whole sweep.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    if let Err(payload) = outcome {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        world.failure = Some(Failure {
            at: world.now,
            what: format!("panic: {message}"),
        });
    }
    if world.failure.is_none() {
        check_history(&mut world);
    }
    probe_run(&mut world);
    let report = Report {
        seed,
        options,
        failure: world.failure.clone(),
        trace_hash: world.trace_hash,
        counters: world.counters.clone(),
    };
    (report, world)
}

/// The checks that need the whole history: linearizability of every client operation against
/// the applied log (which also proves that no acknowledged write was lost), the lease
/// guarantees on true time, the watch guarantees, and what locks and elections promise; and
/// that no member's answers go back in time.
fn check_history(world: &mut World) {
    if let Err(what) = judge_history(world) {
        world.failure = Some(Failure {
            at: world.now,
            what,
        });
    }
}

fn judge_history(world: &mut World) -> Result<(), String> {
    let log = world.applied_log();
    let range_bytes_max = world.options.range_bytes_max;
    let stats = linearizability::check(&world.ops, &log, &world.initial_state(), range_bytes_max)
        .map_err(|violation| format!("linearizability: {violation}"))?;
    let coverage = &mut world.counters.coverage;
    coverage.hit_n("alarm.nospace-raised", stats.nospace_raised);
    coverage.hit_n("alarm.nospace-cleared", stats.nospace_cleared);
    let auto = world.options.auto_compaction;
    let judged = compaction::check(&log, &stats.revisions, &world.timing, auto)
        .map_err(|why| format!("auto compaction: {why}"))?;
    world.counters.coverage.hit_n("auto-compaction", judged);
    if let Some((index, hash)) = stats.final_hash {
        world.hashes_match_the_model(index, hash)?;
    }
    sessions::check(&world.ops).map_err(|why| format!("sessions: {why}"))?;
    leases::check(&world.ops, &log, &stats.failed_entries, &world.timing)
        .map_err(|why| format!("leases: {why}"))?;
    watch::check(&world.watch_logs, &log).map_err(|why| format!("watch: {why}"))?;
    let judged = locks::check(&world.recipe_logs, &log).map_err(|why| format!("locks: {why}"))?;
    world.counters.locks_held = judged.locks;
    world.counters.campaigns_won = judged.wins;
    world.counters.leaders_reported = judged.leaders;
    Ok(())
}

/// Records in the run's coverage what its clients asked and got and which faults it injected.
fn probe_run(world: &mut World) {
    world.count_live_catch_up_reads();
    let c = &mut world.counters;
    let faults = [
        (c.crashes, "fault.crash"),
        (c.torn_writes, "fault.torn-write"),
        (c.disk_errors, "fault.disk-error"),
        (c.partitions, "fault.partition"),
        (c.clogs, "fault.clogged-link"),
        (c.pauses, "fault.pause"),
        (c.clock_jumps, "fault.clock-jump"),
        (c.dropped, "fault.message-dropped"),
        (c.duplicated, "fault.message-duplicated"),
        (c.snapshots_installed, "recovery.snapshot-installed"),
        (
            c.snapshots_installed_decoded,
            "recovery.snapshot-installed-decoded",
        ),
    ];
    for (n, probe) in faults {
        c.coverage.hit_n(probe, n);
    }
    c.coverage.probe_ops(&world.ops);
}

/// Shrinks a failing run: greedily tries smaller workloads and fewer kinds of faults, keeping
/// every change after which the seed still fails (with any failure). Returns the smallest
/// options found and the number of runs it took.
pub fn shrink(seed: u64, options: Options) -> (Options, u64) {
    let fails = |o: &Options| run_options(seed, o.clone(), false).0.failure.is_some();
    let mut best = options;
    let mut runs = 0;
    loop {
        let mut improved = false;
        for candidate in best.smaller() {
            runs += 1;
            if fails(&candidate) {
                best = candidate;
                improved = true;
                break;
            }
        }
        if !improved {
            return (best, runs);
        }
    }
}
