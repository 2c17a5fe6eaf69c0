//! The store's revision and compact revision after each log position, from the first replay:
//! enough to know where a read answered at revision R may sit in the log, and where a read's
//! revision error (Compacted, FutureRev) could have been answered, without the model.
//!
//! Invariant: both sequences are non-decreasing (revisions and compactions only grow), which is
//! what makes every lookup here a binary search.

use detcd::error::EtcdError;

use super::requests::RevisionCheck;
use crate::model::Moment;

/// Position q is "after the entry at log index q"; position 0 is the empty store.
pub struct Timeline {
    revision: Vec<i64>,
    /// etcd's raw compact revision: -1 before the first compaction.
    compact_main: Vec<i64>,
}

impl Timeline {
    /// The empty store: revision 1, never compacted.
    pub fn new() -> Timeline {
        Timeline {
            revision: vec![1],
            compact_main: vec![-1],
        }
    }

    /// Records the store after the next log entry.
    pub fn push(&mut self, revision: i64, compact_main: i64) {
        let (last_rev, last_compact) = (self.last_revision(), self.compact_main[self.len() - 1]);
        assert!(
            revision >= last_rev && compact_main >= last_compact,
            "revisions and compactions never go back"
        );
        self.revision.push(revision);
        self.compact_main.push(compact_main);
    }

    fn len(&self) -> usize {
        self.revision.len()
    }

    /// The store's revisions at position `q`, where the model serves a read placed there.
    pub fn moment(&self, q: u64) -> Moment {
        Moment {
            current: self.revision[q as usize],
            compact: self.compact_main[q as usize],
        }
    }

    /// How many positions there are: one more than log entries.
    pub fn positions(&self) -> u64 {
        self.len() as u64
    }

    pub fn last_revision(&self) -> i64 {
        self.revision[self.len() - 1]
    }

    /// The positions at which the store was at `revision`: from the entry that produced it to
    /// just before the entry that produced the next one. None if the log never reached it.
    pub fn positions_at(&self, revision: i64) -> Option<(u64, u64)> {
        let first = self.revision.partition_point(|r| *r < revision);
        let end = self.revision.partition_point(|r| *r <= revision);
        (first < end).then(|| (first as u64, end as u64 - 1))
    }

    /// The earliest position from `from` on where one of `checks` fails with `error`. For a
    /// plain Range this is exact; for a txn it is where some range could fail, which the model
    /// then confirms or refutes.
    pub fn earliest_error(
        &self,
        checks: &[RevisionCheck],
        error: &EtcdError,
        from: u64,
    ) -> Option<u64> {
        let from = from as usize;
        if from >= self.len() {
            return None;
        }
        checks
            .iter()
            .filter_map(|c| match error {
                // FutureRev holds on a prefix of the log: at `from` or nowhere later.
                EtcdError::FutureRev => c.is_future(self.revision[from]).then_some(from),
                // Compacted holds on a suffix: find where it starts.
                EtcdError::Compacted => first_true(from, self.len(), |q| {
                    c.is_compacted(self.revision[q], self.compact_main[q])
                }),
                _ => None,
            })
            .min()
            .map(|q| q as u64)
    }
}

/// The first `q` in `from..end` where `holds`, for a `holds` that stays true once true.
fn first_true(from: usize, end: usize, holds: impl Fn(usize) -> bool) -> Option<usize> {
    let (mut lo, mut hi) = (from, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    (lo < end).then_some(lo)
}
