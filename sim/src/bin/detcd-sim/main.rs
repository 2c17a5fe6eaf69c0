//! `detcd-sim`: runs randomized cluster histories and checks them.
//!
//!   detcd-sim [--seeds N] [--start S] [--ops N]     many seeds; exit 1 on any failure
//!             [--coverage] [--require-coverage]     print the probes reached; fail if one
//!                                                   expected was never reached
//!             [--time-budget SECONDS]               start no seed after this long
//!   detcd-sim --seed S [--trace] [--json FILE]      replay one seed, optionally with its trace
//!             [--shrink] [--html FILE]              shrink a failure; write an HTML timeline
//!                                                   of the (shrunk) history

mod watchdog;

/// The simulator allocates and frees millions of small blocks per second; glibc's malloc took
/// a fifth of its time.
#[global_allocator]
static ALLOCATOR: detcd::allocator::MiMalloc = detcd::allocator::MiMalloc;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use detcd_sim::options::Bug;
use detcd_sim::options::Options;
use detcd_sim::run::{draw_options, run_options, shrink, Report, STANDARD_OPS};

struct Args {
    seeds: u64,
    start: u64,
    single: Option<u64>,
    ops: u64,
    trace: bool,
    json: Option<String>,
    /// Every n-th seed (and every failing one) runs twice to prove determinism.
    determinism_every: u64,
    bug: Option<Bug>,
    /// Pins the cluster size instead of drawing it (benchmark profiles).
    members: Option<u64>,
    /// `key=value,...` overrides of the drawn options (what `--shrink` prints).
    overrides: String,
    /// Shrink a failing seed to smaller options that still fail.
    shrink: bool,
    /// Fail the sweep if an expected coverage probe was never reached.
    require_coverage: bool,
    /// Print every probe reached.
    coverage_report: bool,
    /// Write the run (the shrunk one with --shrink) as an HTML timeline to this file.
    html: Option<String>,
    /// A sweep starts no seed after this long, so that it ends on time on a slow machine.
    time_budget: Option<Duration>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1000,
        start: 0,
        single: None,
        ops: STANDARD_OPS,
        trace: false,
        json: None,
        determinism_every: 16,
        bug: None,
        members: None,
        overrides: String::new(),
        shrink: false,
        require_coverage: false,
        coverage_report: false,
        html: None,
        time_budget: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => args.seeds = value()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--start" => args.start = value()?.parse().map_err(|e| format!("--start: {e}"))?,
            "--seed" => args.single = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--ops" => args.ops = value()?.parse().map_err(|e| format!("--ops: {e}"))?,
            "--json" => args.json = Some(value()?),
            "--html" => args.html = Some(value()?),
            "--trace" => args.trace = true,
            "--shrink" => args.shrink = true,
            "--require-coverage" => args.require_coverage = true,
            "--coverage" => args.coverage_report = true,
            "--options" => args.overrides = value()?,
            "--time-budget" => {
                let secs = value()?
                    .parse()
                    .map_err(|e| format!("--time-budget: {e}"))?;
                args.time_budget = Some(Duration::from_secs(secs));
            }
            "--members" => {
                args.members = Some(value()?.parse().map_err(|e| format!("--members: {e}"))?)
            }
            "--bug" => {
                let name = value()?;
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                args.bug =
                    Some(Bug::parse(&name).ok_or_else(|| format!("--bug: one of {names:?}"))?);
            }
            "--determinism-every" => {
                args.determinism_every = value()?
                    .parse()
                    .map_err(|e| format!("--determinism-every: {e}"))?
            }
            "--help" | "-h" => {
                println!("usage: detcd-sim [--seeds N] [--start S] [--ops N] [--time-budget SECONDS] [--bug NAME] [--members N] [--options K=V,..] | --seed S [--trace] [--json FILE] [--shrink] [--html FILE]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// The options a seed runs with: drawn, then pinned and overridden as the flags say.
fn options_for(args: &Args, seed: u64) -> Options {
    let mut options = draw_options(seed, args.ops);
    options.bug = args.bug;
    if let Some(members) = args.members {
        options.members = members;
    }
    if let Err(e) = options.apply_overrides(&args.overrides) {
        eprintln!("detcd-sim: --options: {e}");
        std::process::exit(2);
    }
    options
}

fn print_failure(report: &Report) {
    let f = report.failure.as_ref().expect("a failure");
    println!("FAILED seed {}: {}", report.seed, f.what);
    println!("  at {:.3} ms of simulated time", f.at as f64 / 1e6);
    println!("  options: {}", report.options);
    println!("  reproduce: make sim SEED={}", report.seed);
    println!(
        "  timeline of the shrunk case: detcd-sim --seed {}{} --shrink --html seed-{}.html",
        report.seed,
        report
            .options
            .bug
            .map(|b| format!(" --bug {}", b.name()))
            .unwrap_or_default(),
        report.seed
    );
}

fn replay(args: &Args, seed: u64) -> i32 {
    let want_trace = args.trace || args.json.is_some();
    let (report, world) = run_options(seed, options_for(args, seed), want_trace);
    let (again, _) = run_options(seed, options_for(args, seed), false);
    if args.trace {
        print!("{}", world.trace_text());
    }
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, world.trace_json()) {
            eprintln!("cannot write {path}: {e}");
            return 2;
        }
    }
    println!("seed {seed}: {}", report.options);
    println!(
        "trace hash {:016x} (second run {:016x})",
        report.trace_hash, again.trace_hash
    );
    if report.trace_hash != again.trace_hash {
        println!("NONDETERMINISTIC: two runs of seed {seed} differ");
        return 1;
    }
    let mut shown = world;
    let code = match report.failure {
        Some(_) => {
            print_failure(&report);
            if args.shrink {
                std::panic::set_hook(Box::new(|_| {}));
                let (small, runs) = shrink(seed, report.options.clone());
                let (again, small_world) = run_options(seed, small.clone(), false);
                shown = small_world;
                println!("shrunk in {runs} runs to: {small}");
                if let Some(f) = again.failure {
                    println!("  still fails: {}", f.what);
                }
                let bug = args
                    .bug
                    .map(|b| format!(" --bug {}", b.name()))
                    .unwrap_or_default();
                println!(
                    "  replay: detcd-sim --seed {seed}{bug} --options {}",
                    small.overrides()
                );
                println!(
                    "  regression test: (seed {seed}, \"{}\") in sim/tests/regressions.rs",
                    small.overrides()
                );
            }
            1
        }
        None => {
            println!(
                "ok: {} events, {:?}",
                report.counters.events, report.counters
            );
            0
        }
    };
    if let Some(path) = &args.html {
        let page = detcd_sim::timeline::render(&shown, &format!("detcd-sim seed {seed}"));
        if let Err(e) = std::fs::write(path, page) {
            eprintln!("cannot write {path}: {e}");
            return 2;
        }
        println!("timeline written to {path}");
    }
    code
}

fn sweep(args: &Args) -> i32 {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut failures = 0u64;
    let mut total = detcd_sim::world::Counters::default();
    let watchdog = watchdog::Watchdog::spawn();
    let mut run = 0;
    for n in 0..args.seeds {
        if args
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget)
        {
            break;
        }
        run += 1;
        let seed = args.start + n;
        watchdog.running(seed);
        let (report, _) = run_options(seed, options_for(args, seed), false);
        let recheck = report.failure.is_some()
            || (args.determinism_every > 0 && n % args.determinism_every == 0);
        if recheck {
            let (again, _) = run_options(seed, options_for(args, seed), false);
            if again.trace_hash != report.trace_hash {
                println!(
                    "NONDETERMINISTIC: seed {seed} gave trace hashes {:016x} and {:016x}",
                    report.trace_hash, again.trace_hash
                );
                failures += 1;
            }
        }
        if report.failure.is_some() {
            failures += 1;
            print_failure(&report);
        }
        add(&mut total, &report.counters);
        if terminal && (n % 50 == 0 || n + 1 == args.seeds) {
            let rate = (n + 1) as f64 / started.elapsed().as_secs_f64();
            eprint!(
                "\r{} / {} seeds, {rate:.0} histories/s, {failures} failures   ",
                n + 1,
                args.seeds
            );
            let _ = std::io::stderr().flush();
        }
    }
    if terminal {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeds {}..{}: {run} run, {failures} failed, {:.0} histories/s ({:.1} s)",
        args.start,
        args.start + run,
        run as f64 / secs,
        secs
    );
    if run < args.seeds {
        println!(
            "stopped by the time budget ({} s) after {run} of {} seeds",
            args.time_budget.map_or(0, |b| b.as_secs()),
            args.seeds
        );
    }
    let per = |n: u64| n as f64 / run.max(1) as f64;
    println!(
        "per history: {:.0} events, {:.0} messages",
        per(total.events),
        per(total.messages)
    );
    println!(
        "fault mix: {} crashes ({} torn writes), {} disk errors, {} partitions, {} clogged links, {} pauses, \
         {} clock jumps, {} messages dropped, {} duplicated, {} snapshots installed",
        total.crashes,
        total.torn_writes,
        total.disk_errors,
        total.partitions,
        total.clogs,
        total.pauses,
        total.clock_jumps,
        total.dropped,
        total.duplicated,
        total.snapshots_installed
    );
    println!(
        "client ops: {} ok, {} failed, {} unknown outcome",
        total.ops_ok, total.ops_failed, total.ops_unknown
    );
    println!(
        "locks and elections judged: {} locks held, {} campaigns won, {} leaders reported",
        total.locks_held, total.campaigns_won, total.leaders_reported
    );
    let missing = total.coverage.missing();
    if args.coverage_report {
        print!("coverage:\n{}", total.coverage.report());
    }
    println!(
        "coverage: {} of {} expected probes reached; never reached: {missing:?}",
        detcd_sim::coverage::EXPECTED.len() - missing.len(),
        detcd_sim::coverage::EXPECTED.len()
    );
    let uncovered = args.require_coverage && !missing.is_empty();
    // The plain closing line CI tools read.
    println!(
        "seeds: {} passed, {failures} failed{}",
        run.saturating_sub(failures),
        if uncovered {
            ", coverage incomplete"
        } else {
            ""
        }
    );
    i32::from(failures > 0 || uncovered)
}

fn add(total: &mut detcd_sim::world::Counters, c: &detcd_sim::world::Counters) {
    total.events += c.events;
    total.messages += c.messages;
    total.dropped += c.dropped;
    total.duplicated += c.duplicated;
    total.crashes += c.crashes;
    total.torn_writes += c.torn_writes;
    total.disk_errors += c.disk_errors;
    total.partitions += c.partitions;
    total.pauses += c.pauses;
    total.clock_jumps += c.clock_jumps;
    total.clogs += c.clogs;
    total.snapshots_installed += c.snapshots_installed;
    total.ops_ok += c.ops_ok;
    total.ops_failed += c.ops_failed;
    total.ops_unknown += c.ops_unknown;
    total.locks_held += c.locks_held;
    total.campaigns_won += c.campaigns_won;
    total.leaders_reported += c.leaders_reported;
    total.coverage.merge(&c.coverage);
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            std::process::exit(2);
        }
    };
    // Panics inside a run are reported as that seed's failure; keep their default report (and
    // backtrace) for single-seed replays only.
    if args.single.is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let code = match args.single {
        Some(seed) => replay(&args, seed),
        None => sweep(&args),
    };
    std::process::exit(code);
}
