//! KV sessions from seeded random bytes, judged against the reference model: the `kv_model`
//! fuzz target's check on every `make test`, without the fuzzer's guidance.

use detcd::node::Config;
use detcd_sim::kv_sessions::{judge_on, session};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sessions per run; each is a fresh one-member cluster and up to 32 requests.
const SESSIONS: u64 = 3_000;
/// Enough bytes for a full session of requests of every shape.
const SESSION_BYTES: usize = 4096;

/// The first of `SESSIONS` seeds whose session the member, built by `configure`, answers
/// otherwise than the model, and how.
fn first_difference(configure: impl Fn(Config) -> Config + Copy) -> Option<(u64, String)> {
    let mut bytes = vec![0; SESSION_BYTES];
    (0..SESSIONS).find_map(|seed| {
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        let requests = session(&bytes);
        assert!(!requests.is_empty(), "seed {seed}: no request built");
        judge_on(&requests, configure).err().map(|d| (seed, d))
    })
}

#[test]
fn random_kv_sessions_answer_as_the_model() {
    if let Some((seed, difference)) = first_difference(|config| config) {
        panic!("seed {seed}: {difference}");
    }
}

/// The sessions reach a range's `more` under a limit and a compare over a range: a key space
/// wrong in either way, on its only member, is caught (by 30 and 25 of these 3,000 sessions).
#[test]
fn injected_key_space_bugs_are_caught() {
    type Inject = fn(&mut Config);
    let bugs: [(&str, Inject); 2] = [
        ("range-without-lookahead", |c| {
            c.bugs.key_space.range_without_lookahead = true
        }),
        ("range-compare-first-key-only", |c| {
            c.bugs.key_space.range_compare_first_key_only = true
        }),
    ];
    for (name, inject) in bugs {
        let caught = first_difference(|mut config| {
            inject(&mut config);
            config
        });
        assert!(caught.is_some(), "{name} passed");
    }
}
