//! Memory no reader needs leaves a slice of keys at a time, never in one walk of every key on
//! the node's thread: a compaction's dropped records, and the superseded values of a key space
//! installed from a snapshot (which move to cold segments). A slice goes each time the member
//! applies entries (one per ready, however many entries it carries, so that a batch of a
//! hundred writes right after a compaction does not also walk a hundred slices), and, so that
//! an idle member lets go of them too, a few slices every `Config::memory_release_interval` on
//! a timer. No answer, hash or snapshot depends on how much a member released.

use super::timers::Timer;
use super::Node;

/// Slices released per interval: 1,024 keys at the default slice of 256, about a millisecond of
/// the node's thread (an idle member released 100,000 keys of four revisions each in 10 s, with
/// 90 ms of CPU).
const SLICES_PER_INTERVAL: usize = 4;

impl Node {
    /// Entries were applied: one more slice goes.
    pub(super) fn release_memory_with_entries(&mut self) {
        self.state.release_memory_slices(1);
    }

    /// The release timer: a few more slices go.
    pub(super) fn release_memory_on_time(&mut self) {
        let released = self.state.release_memory_slices(SLICES_PER_INTERVAL);
        self.memory_slices_released_on_time += released as u64;
    }

    /// Keeps the release timer armed while memory waits to be released.
    pub(super) fn arm_memory_release(&mut self) {
        let interval = self
            .cfg
            .memory_release_interval
            .filter(|_| self.state.kv().is_releasing_memory());
        match interval {
            Some(interval) => self
                .timers
                .set_earlier(Timer::MemoryRelease, self.now + interval),
            None => self.timers.stop(Timer::MemoryRelease),
        }
    }

    /// Slices this member released on its timer rather than with an entry.
    pub fn memory_slices_released_on_time(&self) -> u64 {
        self.memory_slices_released_on_time
    }
}
