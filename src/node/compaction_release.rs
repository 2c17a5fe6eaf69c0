//! A compaction's dropped records leave memory a slice of keys at a time, never in one walk of
//! every key on the node's thread: a slice each time the member applies entries (one per ready,
//! however many entries it carries, so that a batch of a hundred writes right after a
//! compaction does not also walk a hundred slices), and, so that an idle member lets go of
//! them too, a few slices every `Config::compaction_release_interval` on a timer. No answer,
//! hash or snapshot depends on how much a member released.

use super::timers::Timer;
use super::Node;

/// Slices released per interval: 1,024 keys at the default slice of 256, about a millisecond of
/// the node's thread (an idle member released 100,000 keys of four revisions each in 10 s, with
/// 90 ms of CPU).
const SLICES_PER_INTERVAL: usize = 4;

impl Node {
    /// Entries were applied: one more slice goes.
    pub(super) fn release_compaction_with_entries(&mut self) {
        self.state.release_compacted_slices(1);
    }

    /// The release timer: a few more slices go.
    pub(super) fn release_compaction_on_time(&mut self) {
        let released = self.state.release_compacted_slices(SLICES_PER_INTERVAL);
        self.compaction_slices_released_on_time += released as u64;
    }

    /// Keeps the release timer armed while a compaction's records are partly in memory.
    pub(super) fn arm_compaction_release(&mut self) {
        let interval = self
            .cfg
            .compaction_release_interval
            .filter(|_| self.state.kv().is_releasing_compaction());
        match interval {
            Some(interval) => self
                .timers
                .set_earlier(Timer::CompactionRelease, self.now + interval),
            None => self.timers.stop(Timer::CompactionRelease),
        }
    }

    /// Slices of compactions this member released on its timer rather than with an entry.
    pub fn compaction_slices_released_on_time(&self) -> u64 {
        self.compaction_slices_released_on_time
    }
}
