//! Watch sessions from seeded random bytes, judged against the reference model: the
//! `watch_model` fuzz target's check on every `make test`, without the fuzzer's guidance.

use detcd::watch::WatchBugs;
use detcd_sim::watch_sessions::judge;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sessions per run; each is a fresh hub and state and up to 64 steps.
const SESSIONS: u64 = 3_000;
/// Enough bytes for a full session.
const SESSION_BYTES: usize = 1024;

/// The seeds of `SESSIONS` whose session breaks a watch guarantee on a hub with `bugs`, with
/// the first one's description.
fn broken(bugs: WatchBugs) -> (usize, Option<(u64, String)>) {
    let mut bytes = vec![0; SESSION_BYTES];
    let mut first = None;
    let mut count = 0;
    for seed in 0..SESSIONS {
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        if let Err(why) = judge(&bytes, bugs) {
            count += 1;
            first.get_or_insert((seed, why));
        }
    }
    (count, first)
}

#[test]
fn random_watch_sessions_keep_every_guarantee() {
    if let (_, Some((seed, why))) = broken(WatchBugs::default()) {
        panic!("seed {seed}: {why}");
    }
}

/// Each of the hub's injected bugs, in the classes etcd shipped, breaks a guarantee in some of
/// these sessions.
#[test]
fn injected_watch_bugs_are_caught() {
    type Inject = fn(&mut WatchBugs);
    let bugs: [(&str, Inject); 6] = [
        ("drop-at-compaction-boundary", |b| {
            b.drop_at_compaction_boundary = true
        }),
        ("progress-before-synced", |b| {
            b.progress_before_synced = true
        }),
        ("duplicate-after-catch-up", |b| {
            b.duplicate_after_catch_up = true
        }),
        ("start-at-local-revision", |b| {
            b.start_at_local_revision = true
        }),
        ("recent-changes-across-gaps", |b| {
            b.recent_changes_across_gaps = true
        }),
        ("cancel-at-compaction-boundary", |b| {
            b.cancel_at_compaction_boundary = true
        }),
    ];
    for (name, inject) in bugs {
        let mut injected = WatchBugs::default();
        inject(&mut injected);
        let (count, first) = broken(injected);
        eprintln!("{name}: {count} of {SESSIONS} sessions; first {first:?}");
        assert!(count > 0, "{name} passed every session");
    }
}
