//! The node's timers: one named deadline per duty (quinn-proto's `TimerTable`). The driver only
//! sees their minimum through `Node::poll_timeout`; when time reaches a deadline, the node stops
//! that timer and dispatches it to its handler, which re-arms it if the duty recurs.

use crate::time::Instant;

/// Every duty the node does on time rather than on input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// One raft tick (the heartbeat interval): elections and heartbeats.
    RaftTick,
    /// Ask again for read indexes that went unanswered.
    ReadIndexRetry,
    /// A snapshot sent to a follower may have been lost.
    SnapshotTransfer,
    /// Proposals made while no leader was known wait for one.
    ProposalRetry,
    /// Ask the leader again for lease requests it has not answered.
    ForwardRetry,
    /// The leader looks for expired leases.
    LeaseExpiry,
    /// The leader records the remaining TTL of leases not recorded for a while.
    LeaseCheckpoint,
    /// The earliest deadline of a pending client request.
    RequestExpiry,
    /// Auto compaction looks at the revision (`--auto-compaction-*`).
    AutoCompaction,
    /// More of the memory no reader needs goes (`Config::memory_release_interval`).
    MemoryRelease,
}

impl Timer {
    const ALL: [Timer; 10] = [
        Timer::RaftTick,
        Timer::ReadIndexRetry,
        Timer::SnapshotTransfer,
        Timer::ProposalRetry,
        Timer::ForwardRetry,
        Timer::LeaseExpiry,
        Timer::LeaseCheckpoint,
        Timer::RequestExpiry,
        Timer::AutoCompaction,
        Timer::MemoryRelease,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.slot()] = Some(at);
    }

    /// Sets `timer` to `at`, or stops it when `at` is `None`.
    pub fn set_or_stop(&mut self, timer: Timer, at: Option<Instant>) {
        self.deadlines[timer.slot()] = at;
    }

    /// Moves `timer` earlier to `at` if it is stopped or due later.
    pub fn set_earlier(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.deadlines[timer.slot()];
        *slot = Some(slot.map_or(at, |current| current.min(at)));
    }

    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.slot()] = None;
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.slot()]
    }

    /// The earliest deadline of all.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// A timer whose deadline has passed and that deadline, stopped on the way out (its handler
    /// re-arms it).
    pub fn take_expired(&mut self, now: Instant) -> Option<(Timer, Instant)> {
        let (timer, due) = Timer::ALL
            .into_iter()
            .find_map(|t| self.get(t).filter(|at| *at <= now).map(|at| (t, at)))?;
        self.stop(timer);
        Some((timer, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_deadline_is_the_minimum_and_expired_timers_come_out_once() {
        let mut timers = TimerTable::default();
        assert_eq!(timers.next_deadline(), None);
        timers.set(Timer::RaftTick, Instant::from_nanos(100));
        timers.set(Timer::LeaseExpiry, Instant::from_nanos(50));
        timers.set_earlier(Timer::LeaseExpiry, Instant::from_nanos(70));
        assert_eq!(timers.next_deadline(), Some(Instant::from_nanos(50)));
        assert_eq!(
            timers.take_expired(Instant::from_nanos(60)),
            Some((Timer::LeaseExpiry, Instant::from_nanos(50)))
        );
        assert_eq!(timers.take_expired(Instant::from_nanos(60)), None);
        assert_eq!(timers.next_deadline(), Some(Instant::from_nanos(100)));
    }
}
