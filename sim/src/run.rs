//! One seed from start to verdict: draw the options, run the world through both phases, then
//! check the history. A report carries everything needed to print or reproduce the run.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::options::Options;
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
pub fn run_seed(seed: u64, ops: u64, trace: bool) -> (Report, World) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let options = Options::draw(&mut rng, ops);
    let mut world = World::new(seed, options.clone(), trace);
    world.run();
    if world.failure.is_none() {
        check_history(&mut world);
    }
    let report = Report {
        seed,
        options,
        failure: world.failure.clone(),
        trace_hash: world.trace_hash,
        counters: world.counters.clone(),
    };
    (report, world)
}

/// The checks that need the whole history.
fn check_history(world: &mut World) {
    let log = world.applied_log();
    if let Some(hole) = log
        .iter()
        .enumerate()
        .find(|(i, e)| e.index != *i as u64 + 1)
    {
        world.failure = Some(Failure {
            at: world.now,
            what: format!("applied log has a hole before index {}", hole.1.index),
        });
    }
}
