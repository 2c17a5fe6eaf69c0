//! The watchers of one stream, by watch id.
//!
//! A member holds tens of thousands of watchers, so their container is most of what each one
//! costs. A `BTreeMap` filled in id order (the usual order: ids count up from 0) leaves its
//! nodes about half full: about twice a watcher's own size per watcher. A vector sorted by id holds the
//! watchers themselves (the id is in each), finds one by binary search and appends new ids at
//! its end; removing one moves the watchers after it, at most `watchers_per_stream_max`. It
//! grows by a quarter rather than doubling: a full table of 100,000 watchers leaves at most a
//! fifth of its room unused, not half. The watchers' ranges are held beside them, once each
//! ([`StreamRanges`]).

use super::ranges::{RangeId, StreamRanges, WatchedRange};
use super::watcher::Watcher;
use super::WatchId;

#[derive(Default)]
pub(super) struct WatcherTable {
    /// Sorted by id, no id twice.
    watchers: Vec<Watcher>,
    ranges: StreamRanges,
}

impl WatcherTable {
    fn position(&self, id: WatchId) -> Result<usize, usize> {
        self.watchers.binary_search_by_key(&id, |w| w.id)
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn contains(&self, id: WatchId) -> bool {
        self.position(id).is_ok()
    }

    /// Adds the watcher `make` builds for a slot holding `range`; its id must be new here.
    pub fn insert(&mut self, range: WatchedRange, make: impl FnOnce(RangeId) -> Watcher) {
        let watcher = make(self.ranges.acquire(range));
        let at = self
            .position(watcher.id)
            .expect_err("the caller refuses a duplicate id");
        let len = self.watchers.len();
        if len == self.watchers.capacity() {
            // A stream's first watcher is often its only one: room for it alone.
            let more = if len == 0 { 1 } else { (len / 4).max(4) };
            self.watchers.reserve_exact(more);
        }
        self.watchers.insert(at, watcher);
    }

    pub fn remove(&mut self, id: WatchId) -> Option<Watcher> {
        let at = self.position(id).ok()?;
        let removed = self.watchers.remove(at);
        self.ranges.release(removed.range);
        // Room left by many cancels goes back; doubling from here stays amortized.
        if self.watchers.capacity() > 4 * self.watchers.len().max(4) {
            self.watchers.shrink_to(2 * self.watchers.len());
        }
        Some(removed)
    }

    pub fn clear(&mut self) {
        *self = WatcherTable::default();
    }

    /// Watcher `id` and its range.
    pub fn get_mut(&mut self, id: WatchId) -> Option<(&mut Watcher, WatchedRange<'_>)> {
        let at = self.position(id).ok()?;
        let watcher = &mut self.watchers[at];
        let range = self.ranges.get(watcher.range);
        Some((watcher, range))
    }

    pub fn values(&self) -> impl Iterator<Item = &Watcher> {
        self.watchers.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Watcher> {
        self.watchers.iter_mut()
    }

    /// Every watcher with its range, in id order.
    pub fn ranged_mut(&mut self) -> impl Iterator<Item = (&mut Watcher, WatchedRange<'_>)> {
        let ranges = &self.ranges;
        self.watchers.iter_mut().map(|w| {
            let range = ranges.get(w.range);
            (w, range)
        })
    }

    /// The watchers with ids from `first` on, in id order.
    pub fn starting_at(&self, first: WatchId) -> impl Iterator<Item = &Watcher> {
        let at = self.position(first).unwrap_or_else(|at| at);
        self.watchers[at..].iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::WatchCreateRequest;
    use crate::time::Instant;
    use std::collections::BTreeMap;

    /// Watcher `id` of a key that a third of the ids share, so that consecutive inserts
    /// sometimes share a range and sometimes do not.
    fn insert(table: &mut WatcherTable, id: WatchId) -> Vec<u8> {
        let key = format!("k{}", id % 3).into_bytes();
        let req = WatchCreateRequest::default();
        let range = WatchedRange {
            key: &key,
            end: b"",
        };
        table.insert(range, |r| {
            Watcher::new(id, r, &req, 1, Instant::from_nanos(0))
        });
        key
    }

    #[test]
    fn behaves_as_a_map_by_id() {
        let mut table = WatcherTable::default();
        let mut model = BTreeMap::new();
        let mut state = 7u64;
        for step in 0..4000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (state >> 33) as i64 % 300;
            if step % 3 == 0 {
                assert_eq!(
                    table.remove(id).map(|w| w.id),
                    model.remove(&id).map(|_| id)
                );
            } else if !table.contains(id) {
                model.insert(id, insert(&mut table, id));
            }
            assert_eq!(table.len(), model.len());
            let cursor = id / 2;
            let ours: Vec<_> = table.starting_at(cursor).map(|w| w.id).collect();
            let theirs: Vec<_> = model.range(cursor..).map(|(id, _)| *id).collect();
            assert_eq!(ours, theirs);
            if let Some((w, range)) = table.get_mut(id) {
                assert_eq!(w.id, id);
                assert_eq!(range.key, &model[&id][..]);
            }
            for (w, range) in table.ranged_mut() {
                assert_eq!(range.key, &model[&w.id][..]);
            }
        }
        assert!(table.watchers.capacity() <= 4 * table.len().max(4));
        table.clear();
        assert_eq!(table.values().count(), 0);
    }
}
