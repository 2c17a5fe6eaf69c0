//! Auto compaction (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`): a timer
//! duty of every member, of which only the leader's looks lead to a compaction, proposed into
//! its own log as `AutoCompaction` and applied as a client's compaction is.
//!
//! The two modes keep etcd's schedule:
//! - **periodic**: the member notes its revision ten times per compaction interval (the
//!   retention, at most an hour); once the retention has passed since it started, and then once
//!   per interval, the leader compacts to its oldest note: the revision of about one retention
//!   ago, so the history of at least the last retention is kept;
//! - **revision**: every `every` (etcd: five minutes) the leader compacts to its revision minus
//!   the retention, unless that is where it compacted last.
//!
//! The notes are volatile, as etcd's are: a restarted member or a new leader starts them again,
//! which only delays a compaction. A proposal that a lost leadership drops is not retried
//! before the next interval.

use std::collections::VecDeque;
use std::time::Duration;

use super::timers::Timer;
use super::Node;
use crate::proto::detcdpb::internal_request::Op;
use crate::proto::etcdserverpb::CompactionRequest;
use crate::time::Instant;

/// What the leader compacts on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep at least this long of history.
    Periodic(Duration),
    /// Keep the last `keep` revisions, looking every `every`.
    Revision { keep: i64, every: Duration },
}

/// etcd notes the revision this many times per compaction interval.
const NOTES_PER_INTERVAL: u32 = 10;
const INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// A retention of nanoseconds must not make the member look without end.
const LOOK_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// One member's auto compaction schedule.
#[derive(Debug)]
pub(super) struct Compactor {
    mode: AutoCompaction,
    /// Periodic: the member's revision at each look, oldest first, one retention's worth.
    notes: VecDeque<i64>,
    /// When it started, or last compacted.
    since: Instant,
    /// Periodic: the first compaction waits the whole retention, later ones one interval.
    compacted_once: bool,
    /// Revision: the revision it last compacted to.
    last: i64,
}

impl Compactor {
    pub(super) fn new(mode: AutoCompaction, now: Instant, revision: i64) -> Compactor {
        Compactor {
            mode,
            notes: VecDeque::from([revision]),
            since: now,
            compacted_once: false,
            last: 0,
        }
    }

    /// How often the member looks.
    pub(super) fn interval(&self) -> Duration {
        let every = match self.mode {
            AutoCompaction::Periodic(retention) => retention.min(INTERVAL_MAX) / NOTES_PER_INTERVAL,
            AutoCompaction::Revision { every, .. } => every,
        };
        every.max(LOOK_INTERVAL_MIN)
    }

    /// One look at `now`, the member at `revision` and compacted at `compacted`: the revision
    /// to compact to, if one is due and this member leads.
    pub(super) fn look(
        &mut self,
        now: Instant,
        revision: i64,
        compacted: i64,
        leading: bool,
    ) -> Option<i64> {
        let due = match self.mode {
            AutoCompaction::Periodic(retention) => {
                let due = self.periodic_due(now, retention, leading);
                self.notes.push_back(revision);
                let kept = (retention.as_nanos() / self.interval().as_nanos()) as usize + 1;
                while self.notes.len() > kept {
                    self.notes.pop_front();
                }
                due
            }
            AutoCompaction::Revision { keep, .. } => {
                let to = revision - keep;
                let due = leading && to > 0 && to != self.last;
                if due {
                    self.last = to;
                }
                due.then_some(to)
            }
        };
        // At or below the compacted revision, etcd's compactor gets "compacted": done.
        due.filter(|to| *to > compacted)
    }

    fn periodic_due(&mut self, now: Instant, retention: Duration, leading: bool) -> Option<i64> {
        let wait = if self.compacted_once {
            retention.min(INTERVAL_MAX)
        } else {
            retention
        };
        if !leading || now.saturating_since(self.since) < wait {
            return None;
        }
        self.since = now;
        self.compacted_once = true;
        self.notes.front().copied()
    }
}

impl Node {
    /// The auto compaction timer: one look, and the next one armed.
    pub(super) fn auto_compact(&mut self) {
        let (leading, kv) = (self.is_leader(), self.state.kv());
        let (revision, compacted) = (kv.current_revision(), kv.compact_revision());
        let Some(compactor) = self.compactor.as_mut() else {
            return;
        };
        let due = compactor.look(self.now, revision, compacted, leading);
        self.timers
            .set(Timer::AutoCompaction, self.now + compactor.interval());
        if let Some(mut to) = due {
            if self.bug(|b| b.auto_compaction_keeps_one_less) {
                to += 1;
            }
            let request = CompactionRequest {
                revision: to,
                physical: false,
            };
            self.propose_as_leader(Op::AutoCompaction(request));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_secs(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    /// Looks every interval from 0 to `until` seconds, the revision growing by 10 a second;
    /// returns (second, revision compacted to) for each compaction.
    fn run(mode: AutoCompaction, until: u64, leading: impl Fn(u64) -> bool) -> Vec<(u64, i64)> {
        let mut compactor = Compactor::new(mode, at_secs(0), 1);
        let step = compactor.interval().as_secs();
        let mut out = Vec::new();
        let mut compacted = 0;
        for s in (step..=until).step_by(step as usize) {
            if let Some(to) = compactor.look(at_secs(s), 1 + 10 * s as i64, compacted, leading(s)) {
                compacted = to;
                out.push((s, to));
            }
        }
        out
    }

    #[test]
    fn periodic_waits_one_retention_then_compacts_every_interval_to_its_oldest_note() {
        let ten_minutes = AutoCompaction::Periodic(Duration::from_secs(600));
        // Notes every minute; the first compaction at 10 min, to the revision at 0.
        let done = run(ten_minutes, 1800, |_| true);
        assert_eq!(done, vec![(600, 1), (1200, 5401), (1800, 11401)]);
        for (s, to) in done {
            assert!(to <= 1 + 10 * (s as i64 - 600), "keeps at least 10 minutes");
        }
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly_keeping_the_whole_retention() {
        let day = AutoCompaction::Periodic(Duration::from_secs(24 * 3600));
        let done = run(day, 26 * 3600, |_| true);
        assert_eq!(done.len(), 3);
        assert_eq!(done[0], (24 * 3600, 1));
        for (s, to) in &done {
            assert!(*to <= 1 + 10 * (*s as i64 - 24 * 3600));
        }
        assert_eq!(done[1].0 - done[0].0, 3600);
    }

    #[test]
    fn only_a_leader_compacts_and_a_follower_keeps_noting() {
        let ten_minutes = AutoCompaction::Periodic(Duration::from_secs(600));
        assert!(run(ten_minutes, 1800, |_| false).is_empty());
        // Leading from 15 min on: due at once, to the note of 10 minutes before its look.
        let done = run(ten_minutes, 1000, |s| s >= 900);
        assert_eq!(done, vec![(900, 2401)]);
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_and_does_not_repeat_itself() {
        let keep = AutoCompaction::Revision {
            keep: 1000,
            every: Duration::from_secs(300),
        };
        let done = run(keep, 1200, |_| true);
        assert_eq!(
            done,
            vec![(300, 2001), (600, 5001), (900, 8001), (1200, 11001)]
        );
        let mut compactor = Compactor::new(keep, at_secs(0), 1);
        assert_eq!(compactor.look(at_secs(300), 1500, 0, true), Some(500));
        assert_eq!(
            compactor.look(at_secs(600), 1500, 500, true),
            None,
            "nothing new"
        );
        assert_eq!(
            compactor.look(at_secs(900), 900, 0, true),
            None,
            "too few revisions"
        );
    }
}
