//! The key ranges one stream's watchers watch, each held once however many of them watch it.
//!
//! A stream's watchers often watch the same range: clientv3 sends every `Watch` call of a client
//! (with the same metadata) over one stream, so a process that watches a key or a prefix from
//! several places creates that many watchers of it on one stream. A watcher names its range by
//! a slot here, which keeps the watcher at 32 bytes in its table, and a range costs one
//! allocation whatever the number of its watchers. A new watcher shares the slot of the
//! stream's previous new watcher when their ranges are equal; finding any equal range would
//! take an index of the ranges, which costs more per range than sharing saves.

use crate::mvcc::KeyRange;

/// A slot of a stream's [`StreamRanges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RangeId(u32);

/// A watched range: its key (never empty: etcd reads an empty key as `"\0"`) and range end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WatchedRange<'a> {
    pub key: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> WatchedRange<'a> {
    pub fn key_range(self) -> KeyRange<'a> {
        KeyRange::new(self.key, self.end)
    }

    /// etcd refuses a range whose end is not after its key (`from-key` aside).
    pub fn is_empty(self) -> bool {
        matches!(self.key_range(), KeyRange::Between(k, e) if e <= k)
    }
}

#[derive(Debug)]
struct Slot {
    /// The key, then the range end; empty while the slot is free.
    bytes: Box<[u8]>,
    key_len: u32,
    /// Watchers naming this slot; 0: free.
    users: u32,
}

#[derive(Debug, Default)]
pub(super) struct StreamRanges {
    slots: Vec<Slot>,
    /// Free slots, reused before the vector grows.
    free: Vec<u32>,
    /// The slot the last acquisition returned, if it is still in use.
    last: Option<RangeId>,
}

impl StreamRanges {
    /// A slot holding `range`, for one more watcher.
    pub fn acquire(&mut self, range: WatchedRange) -> RangeId {
        if let Some(last) = self.last.filter(|&id| self.get(id) == range) {
            self.slots[last.0 as usize].users += 1;
            return last;
        }
        let slot = Slot {
            bytes: [range.key, range.end].concat().into_boxed_slice(),
            key_len: u32::try_from(range.key.len()).expect("a key is far below 4 GiB"),
            users: 1,
        };
        let id = match self.free.pop() {
            Some(free) => {
                self.slots[free as usize] = slot;
                RangeId(free)
            }
            None => {
                let at = u32::try_from(self.slots.len()).expect("a stream's watchers are bounded");
                self.slots.push(slot);
                RangeId(at)
            }
        };
        self.last = Some(id);
        id
    }

    /// One watcher of slot `id` fewer; the last one frees it.
    pub fn release(&mut self, id: RangeId) {
        let slot = &mut self.slots[id.0 as usize];
        slot.users -= 1;
        if slot.users > 0 {
            return;
        }
        slot.bytes = Box::default();
        if self.last == Some(id) {
            self.last = None;
        }
        if self.free.len() + 1 == self.slots.len() {
            // No slot left in use: give back the vectors' memory too.
            *self = StreamRanges::default();
        } else {
            self.free.push(id.0);
        }
    }

    pub fn get(&self, id: RangeId) -> WatchedRange<'_> {
        let slot = &self.slots[id.0 as usize];
        let (key, end) = slot.bytes.split_at(slot.key_len as usize);
        WatchedRange { key, end }
    }

    /// Slots in use.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range<'a>(key: &'a [u8], end: &'a [u8]) -> WatchedRange<'a> {
        WatchedRange { key, end }
    }

    #[test]
    fn consecutive_equal_ranges_share_a_slot_until_their_last_watcher_goes() {
        let mut ranges = StreamRanges::default();
        let a = ranges.acquire(range(b"/a/", b"/a0"));
        let again = ranges.acquire(range(b"/a/", b"/a0"));
        assert_eq!(a, again);
        // Equal bytes, another split between key and end: another range.
        let split = ranges.acquire(range(b"/a", b"//a0"));
        assert_ne!(split, a);
        assert_eq!(ranges.get(split), range(b"/a", b"//a0"));
        assert_eq!(ranges.len(), 2);
        ranges.release(a);
        assert_eq!(ranges.get(a), range(b"/a/", b"/a0"));
        ranges.release(a);
        assert_eq!(ranges.len(), 1);
        // The freed slot is reused.
        let b = ranges.acquire(range(b"b", b""));
        assert_eq!(b, a);
        assert_eq!(ranges.get(b), range(b"b", b""));
        ranges.release(b);
        ranges.release(split);
        assert_eq!(ranges.len(), 0);
        assert_eq!(
            ranges.slots.capacity(),
            0,
            "an unused table holds no memory"
        );
    }

    #[test]
    fn a_range_is_empty_when_its_end_is_not_after_its_key() {
        assert!(range(b"b", b"a").is_empty());
        assert!(range(b"b", b"b").is_empty());
        assert!(!range(b"b", b"").is_empty());
        assert!(!range(b"b", b"\0").is_empty());
        assert!(!range(b"a", b"b").is_empty());
    }
}
