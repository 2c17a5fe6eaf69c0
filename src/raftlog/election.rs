//! Deterministic election jitter.
//!
//! raft-rs draws each randomized election timeout from `thread_rng()`, which would make two runs of
//! one seed diverge. Every reset of that timeout also sets `election_elapsed` to 0, so after each
//! call into raft the node redraws the timeout from its own seeded RNG whenever
//! `election_elapsed == 0`. The redraw depends only on deterministic state, so the thread_rng
//! value is always overwritten before raft can read it (raft only compares it on a tick).

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// A timeout in `[election_ticks, 2 * election_ticks)`, the range raft-rs uses by default.
pub fn draw_election_timeout(rng: &mut ChaCha8Rng, election_ticks: usize) -> usize {
    let span = election_ticks.max(1) as u64;
    election_ticks + (rng.next_u64() % span) as usize
}

/// Applies the rule above to a raft instance after any call that may have reset its timer.
pub fn override_jitter<T: raft::Storage>(
    raft: &mut raft::Raft<T>,
    rng: &mut ChaCha8Rng,
    election_ticks: usize,
) {
    if raft.election_elapsed == 0 {
        raft.set_randomized_election_timeout(draw_election_timeout(rng, election_ticks));
    }
}
