//! The changes of the latest revisions a member applied, kept in memory for watchers a little
//! behind.
//!
//! Under a flood of events, streams fill and their watchers fall behind by a few feeds at a
//! time, then catch up. Reading their missed revisions from the key space walks every key of
//! their range and reads superseded values back from the cold segment files: with 10,000
//! watchers of one prefix this was a third of the watch thread's time. The feeds of those
//! revisions were in memory a moment before; keeping the latest of them (up to a byte bound)
//! lets a catch-up step gather its changes from them instead.

use std::collections::VecDeque;
use std::sync::Arc;

use super::events::ChangeBatch;
use super::WatchBugs;
use crate::mvcc::{KeyChange, KeyRange};

/// The latest feeds' changes: every change of the revisions `first..=last`, with no revision
/// missing between them.
#[derive(Default)]
pub(super) struct RecentChanges {
    feeds: VecDeque<Arc<ChangeBatch>>,
    /// What the feeds kept hold ([`ChangeBatch::bytes`]), at most `bytes_max` beyond the latest.
    bytes: usize,
    bytes_max: usize,
    /// The injected bug `WatchBugs::recent_changes_across_gaps`.
    ignore_gaps: bool,
}

impl RecentChanges {
    pub fn new(bytes_max: usize, bugs: WatchBugs) -> RecentChanges {
        RecentChanges {
            bytes_max,
            ignore_gaps: bugs.recent_changes_across_gaps,
            ..RecentChanges::default()
        }
    }

    /// Keeps a feed's changes, which must follow the last feed's revisions without a gap
    /// (otherwise, and when `gap` says revisions were left out, the older ones are forgotten),
    /// then forgets the oldest past the byte bound.
    pub fn push(&mut self, feed: &Arc<ChangeBatch>, gap: bool) {
        let gap = gap && !self.ignore_gaps;
        let Some(first) = feed.changes().first().map(|c| c.revision.main) else {
            if gap {
                self.clear();
            }
            return;
        };
        let skipped = |last: i64| last + 1 != first && !self.ignore_gaps;
        if gap || self.last().is_some_and(skipped) {
            self.clear();
        }
        self.bytes += feed.bytes();
        self.feeds.push_back(feed.clone());
        while self.bytes > self.bytes_max && self.feeds.len() > 1 {
            let oldest = self.feeds.pop_front().expect("more than one");
            self.bytes -= oldest.bytes();
        }
    }

    /// Forgets every feed.
    pub fn clear(&mut self) {
        self.feeds.clear();
        self.bytes = 0;
    }

    fn first(&self) -> Option<i64> {
        let oldest = self.feeds.front()?;
        oldest.changes().first().map(|c| c.revision.main)
    }

    fn last(&self) -> Option<i64> {
        let latest = self.feeds.back()?;
        latest.changes().last().map(|c| c.revision.main)
    }

    /// The changes of `range` at revisions `from..=to`, in revision order, if every revision
    /// between is kept here.
    pub fn changes(&self, range: KeyRange, from: i64, to: i64) -> Option<Vec<KeyChange>> {
        if self.first()? > from || self.last()? < to {
            return None;
        }
        let start = self
            .feeds
            .partition_point(|f| f.changes().last().is_some_and(|c| c.revision.main < from));
        let mut out = Vec::new();
        for feed in self.feeds.range(start..) {
            for change in feed.changes() {
                let revision = change.revision.main;
                if revision > to {
                    return Some(out);
                }
                if revision >= from && range.contains(&change.kv.key) {
                    out.push(change.clone());
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::Revision;
    use crate::proto::mvccpb::KeyValue;

    fn feed(revisions: &[(i64, &str)]) -> Arc<ChangeBatch> {
        let changes = revisions
            .iter()
            .map(|&(main, key)| KeyChange {
                revision: Revision { main, sub: 0 },
                kv: KeyValue {
                    key: key.as_bytes().to_vec().into(),
                    mod_revision: main,
                    ..KeyValue::default()
                },
                deleted: false,
                prev: None,
                lease_before: 0,
            })
            .collect();
        Arc::new(ChangeBatch::new(changes))
    }

    fn revisions(changes: Option<Vec<KeyChange>>) -> Option<Vec<i64>> {
        changes.map(|c| c.iter().map(|c| c.revision.main).collect())
    }

    #[test]
    fn gathers_a_range_from_consecutive_feeds_and_nothing_it_does_not_hold() {
        let mut recent = RecentChanges::new(1 << 20, WatchBugs::default());
        recent.push(&feed(&[(2, "a"), (3, "b")]), false);
        recent.push(&feed(&[(4, "a"), (5, "c")]), false);
        let a = KeyRange::new(b"a", b"");
        assert_eq!(revisions(recent.changes(a, 2, 5)), Some(vec![2, 4]));
        assert_eq!(revisions(recent.changes(a, 3, 4)), Some(vec![4]));
        assert_eq!(recent.changes(a, 1, 5), None, "revision 1 is not held");
        assert_eq!(recent.changes(a, 2, 6), None, "revision 6 is not held");
    }

    #[test]
    fn forgets_what_a_gap_or_a_skipped_revision_separates() {
        let a = KeyRange::new(b"a", b"\0");
        let mut recent = RecentChanges::new(1 << 20, WatchBugs::default());
        recent.push(&feed(&[(2, "a")]), false);
        recent.push(&feed(&[(3, "a")]), true);
        assert_eq!(revisions(recent.changes(a, 2, 3)), None, "gap");
        assert_eq!(revisions(recent.changes(a, 3, 3)), Some(vec![3]));
        recent.push(&feed(&[(5, "a")]), false);
        assert_eq!(
            revisions(recent.changes(a, 3, 5)),
            None,
            "revision 4 skipped"
        );
        recent.push(&feed(&[]), true);
        assert_eq!(
            revisions(recent.changes(a, 5, 5)),
            None,
            "an empty feed's gap"
        );
    }

    #[test]
    fn keeps_the_latest_feeds_within_its_bytes() {
        let one = feed(&[(2, "a")]).bytes();
        let mut recent = RecentChanges::new(2 * one, WatchBugs::default());
        for revision in 2..=5 {
            recent.push(&feed(&[(revision, "a")]), false);
        }
        let a = KeyRange::new(b"a", b"");
        assert_eq!(revisions(recent.changes(a, 4, 5)), Some(vec![4, 5]));
        assert_eq!(recent.changes(a, 3, 5), None);
    }
}
