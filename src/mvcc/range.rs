//! Reading: key ranges and etcd's Range semantics (revision checks, count, limit/more, revision
//! filters, sorting, keys_only, count_only).
//!
//! etcd's order of work, which decides what `limit`, `more` and `count` mean, is:
//! 1. check the revision: above the reader's current revision is `FutureRev` (tested before
//!    "<= 0 means latest", so any non-positive revision is fine), below the compact revision is
//!    `Compacted` (reading *at* the compact revision is allowed);
//! 2. walk the keys in key order, counting every key that exists at that revision (`count`) and
//!    keeping the first `limit + 1` of them, but only when the ordering is the natural one and
//!    no revision filter is set; otherwise keeping all of them;
//! 3. drop keys failing the min/max mod/create revision filters (`count` is *not* reduced);
//! 4. sort if asked (sort order NONE with a target other than KEY means ascending, and it sorts
//!    only the keys kept in step 2), with Go's unstable `sort.Sort`;
//! 5. cut to `limit`, setting `more` if anything was cut; blank values for `keys_only`.
//!
//! `count_only` skips 2-5 and answers just the count.

use std::cmp::Ordering;

use super::KeyProbe;
use std::ops::Bound;

use bytes::Bytes;

use super::cold::{ColdRange, ColdRef, ColdValues, DeferredOrder};
use super::go_sort::go_sort;
use super::history::KeyHistory;
use super::{header, KeySpace, KeySpaceView};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::mvccpb::KeyValue;

/// The keys a request addresses, decoded from etcd's `(key, range_end)` convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `range_end` is `"\0"`: every key `>= key`.
    From(&'a [u8]),
    /// Every key in `[key, range_end)`; empty when `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => key == k,
            KeyRange::From(k) => key >= k,
            KeyRange::Between(k, end) => key >= k && key < end,
        }
    }

    pub(crate) fn bounds(self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match self {
            KeyRange::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::From(key) => (Bound::Included(key), Bound::Unbounded),
            // An ordered map may panic on an inverted range; an inverted etcd range is empty.
            KeyRange::Between(key, end) if end <= key => {
                (Bound::Included(key), Bound::Excluded(key))
            }
            KeyRange::Between(key, end) => (Bound::Included(key), Bound::Excluded(end)),
        }
    }
}

/// etcd's "the store already returns this order" test: no re-sort and the limit can be pushed
/// down into the key walk.
fn is_default_ordering(sort_target: i32, sort_order: i32) -> bool {
    sort_order == SortOrder::None as i32
        || (sort_target == SortTarget::Key as i32 && sort_order == SortOrder::Ascend as i32)
}

/// Whether the answer comes in the key walk's order: by key, ascending.
fn in_key_order(r: &RangeRequest) -> bool {
    r.sort_target == SortTarget::Key as i32
        && [SortOrder::None as i32, SortOrder::Ascend as i32].contains(&r.sort_order)
}

fn has_revision_filters(r: &RangeRequest) -> bool {
    r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
}

/// How many keys the key walk keeps: `limit + 1` (one extra to learn `more`) when the limit can
/// be applied before filtering and sorting, otherwise all of them (0).
fn walk_limit(r: &RangeRequest, lookahead: bool) -> i64 {
    let mut limit = r.limit;
    if !is_default_ordering(r.sort_target, r.sort_order) || has_revision_filters(r) {
        limit = 0;
    }
    if lookahead && limit > 0 && limit < i64::MAX {
        limit += 1;
    }
    limit
}

/// Go's `Less` for a sort target; `None` for a target etcd does not know (it would panic).
fn less_for(sort_target: i32) -> Option<fn(&KeyValue, &KeyValue) -> bool> {
    // etcd compares integers as `a - b < 0`; revisions and versions are positive, so the
    // subtraction cannot overflow and this equals `a < b`.
    let less: fn(&KeyValue, &KeyValue) -> bool = match SortTarget::try_from(sort_target).ok()? {
        SortTarget::Key => |a, b| a.key < b.key,
        SortTarget::Version => |a, b| a.version.wrapping_sub(b.version) < 0,
        SortTarget::Create => |a, b| a.create_revision.wrapping_sub(b.create_revision) < 0,
        SortTarget::Mod => |a, b| a.mod_revision.wrapping_sub(b.mod_revision) < 0,
        SortTarget::Value => |a, b| a.value.cmp(&b.value) == Ordering::Less,
    };
    Some(less)
}

impl KeySpaceView {
    /// [`KeySpace::read_range`] as the key space answered it when this view was frozen: the
    /// same walk over the same index, for serializable reads served off the node's thread.
    pub fn read_range(
        &self,
        req: &RangeRequest,
        bytes_max: u64,
    ) -> Result<(RangeResponse, ColdValues), EtcdError> {
        self.frozen_store().read_range(req, bytes_max)
    }
}

impl KeySpace {
    /// The indexed keys in `range`, in key order.
    pub(crate) fn keys_in<'s>(
        &'s self,
        range: KeyRange<'_>,
    ) -> impl Iterator<Item = (&'s Bytes, &'s KeyHistory)> + 's {
        let bounds = range.bounds();
        (self.keys.range(KeyProbe::bounds(bounds))).map(|(key, history)| (key.bytes(), history))
    }

    /// The key-value pairs that exist at main revision `at` in `range`, in key order.
    pub(crate) fn live_kvs(&self, range: KeyRange<'_>, at: i64) -> Vec<KeyValue> {
        self.keys_scouted(range)
            .filter_map(|(key, history)| history.live_at(at).and_then(|r| r.key_value(key)))
            .collect()
    }

    /// One key's value at main revision `at`.
    pub(crate) fn live_kv(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(&KeyProbe::new(key))?;
        history.live_at(at).and_then(|r| r.key_value(key.bytes()))
    }

    /// etcd's range at a reader whose current revision is `current` (the store's revision for a
    /// plain Range; inside a txn, the revision the txn's own writes so far are visible at).
    /// A range whose keys and values add up to more than `bytes_max` (see [`range_bytes`]) is
    /// `RangeTooLarge`.
    pub(crate) fn execute_range(
        &self,
        r: &RangeRequest,
        current: i64,
        bytes_max: u64,
    ) -> Result<(RangeResponse, ColdRange), EtcdError> {
        let mut at = r.revision;
        if at > current {
            return Err(EtcdError::FutureRev);
        }
        if at <= 0 {
            at = current;
        }
        if at < self.compact_main {
            return Err(EtcdError::Compacted);
        }
        let range = KeyRange::new(&r.key, &r.range_end);

        if r.count_only {
            let count = self
                .keys_scouted(range)
                .filter(|(_, h)| h.live_at(at).is_some())
                .count();
            let response = RangeResponse {
                header: header(current),
                kvs: Vec::new(),
                more: false,
                count: count as i64,
            };
            return Ok((response, ColdRange::none()));
        }

        let Walked {
            count,
            mut kvs,
            cold: walked_cold,
        } = self.walk(r, range, at, bytes_max)?;
        // In key order without filters, the answer is a prefix of the walk, and each cold value
        // stays in the slot the walk gave it. Otherwise the pairs move, and their cold values
        // are found again by key.
        let keeps_walk_order = in_key_order(r) && !has_revision_filters(r);
        let cold_by_key: Vec<(Bytes, ColdRef)> = if keeps_walk_order {
            Vec::new()
        } else {
            let key_of = |slot: u32| kvs[slot as usize].key.clone();
            walked_cold
                .iter()
                .map(|&(slot, at)| (key_of(slot), at))
                .collect()
        };

        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }

        let cold_index = |kvs: &[KeyValue]| {
            if keeps_walk_order {
                let answered = |(slot, _): &&(u32, ColdRef)| (*slot as usize) < kvs.len();
                walked_cold.iter().filter(answered).copied().collect()
            } else {
                cold_slots(kvs, &cold_by_key)
            }
        };
        let within = |kvs: &[KeyValue], cold: &[(u32, ColdRef)]| {
            let cold_bytes = if self.bugs.range_bound_skips_cold_values {
                0
            } else {
                cold.iter().map(|(_, at)| u64::from(at.len)).sum()
            };
            let hot_bytes: u64 = kvs.iter().map(|kv| kv_bytes(kv) as u64).sum();
            if hot_bytes + cold_bytes > bytes_max {
                return Err(EtcdError::RangeTooLarge);
            }
            Ok(())
        };
        let mut cold = ColdRange::none();
        let mut more = false;
        if r.sort_target == SortTarget::Value as i32 {
            // Every candidate's value is read to sort them, so they all count.
            within(&kvs, &cold_index(&kvs))?;
        }
        if r.sort_target == SortTarget::Value as i32 && !walked_cold.is_empty() {
            // Sorting by value needs the cold values, which only the driver can read: it
            // finishes the ordering once it has them.
            cold.values = cold_index(&kvs);
            cold.deferred_order = Some(DeferredOrder {
                sort_target: r.sort_target,
                sort_order: r.sort_order,
                limit: r.limit,
                keys_only: r.keys_only,
            });
        } else {
            more = finish_order(&mut kvs, r.sort_target, r.sort_order, r.limit, r.keys_only)?;
            if !r.keys_only && !walked_cold.is_empty() {
                cold.values = cold_index(&kvs);
            }
            within(&kvs, &cold.values)?;
        }
        Ok((
            RangeResponse {
                header: header(current),
                kvs,
                more,
                count,
            },
            cold,
        ))
    }
}

/// What a key-value pair counts against `--max-range-bytes`: its key and its value. A range
/// counts the pairs it answers with (values blanked by `keys_only` count nothing), except that
/// one sorted by value counts every candidate it sorts, before `limit` (and `keys_only`).
pub fn kv_bytes(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len()
}

/// What step 2, the key walk, collected.
struct Walked {
    count: i64,
    kvs: Vec<KeyValue>,
    /// The cold values, by their slot in `kvs`, in key order (the walk's order).
    cold: Vec<(u32, ColdRef)>,
}

/// How many keys ahead of the walk their records and key bytes are fetched.
const PREFETCH_AHEAD: usize = 8;
/// Indexes of at most this many keys are walked without a scout: their records stay in the
/// caches, and the scout's second walk would only cost.
const SCOUTED_KEYS_MIN: usize = 1024;

/// A second walk over the same keys, a few ahead of the first, that starts loading what the
/// first will read: each key's records and bytes sit in heap blocks of their own, so a walk
/// alone waits on one cache miss after another. A single key has nothing to scout.
struct Scout<I> {
    ahead: Option<I>,
}

impl<'s, I: Iterator<Item = (&'s Bytes, &'s KeyHistory)>> Scout<I> {
    /// A scout over `ahead` (the walk's keys), started [`PREFETCH_AHEAD`] keys in.
    fn new(mut ahead: Option<I>) -> Scout<I> {
        for _ in 0..PREFETCH_AHEAD {
            if let Some((_, history)) = ahead.as_mut().and_then(Iterator::next) {
                history.prefetch();
            }
        }
        Scout { ahead }
    }

    /// Moves one key on, as the walk does.
    fn step(&mut self) {
        if let Some((key, history)) = self.ahead.as_mut().and_then(Iterator::next) {
            history.prefetch();
            super::prefetch::prefetch(key.as_ptr());
        }
    }
}

/// Pairs walked before the keys of the rest are copied into one shared buffer.
const OWN_KEYS_MAX: usize = 256;

/// Bytes of keys one shared block holds (a longer key gets a block of its own size).
const KEY_BLOCK_BYTES: usize = 64 << 10;

/// The keys of a large answer's pairs past the first [`OWN_KEYS_MAX`], copied one after
/// another into blocks that the pairs then share. Sharing each indexed key instead would
/// touch a reference count in a cache line of its own twice per pair (once to share, once to
/// let go when the answer is dropped, on another thread); the copy reads bytes the encoder
/// would read anyway, and later reads them from one run of memory. Blocks of a fixed size keep
/// the copies' memory at the keys' own size, without a growing buffer's spare room.
#[derive(Default)]
struct SharedKeys {
    block: Vec<u8>,
    /// The slot of the first pair whose key is in `block`.
    first_slot: usize,
    /// Where each key in `block` ends, in slot order.
    ends: Vec<usize>,
}

impl SharedKeys {
    /// The key to give the next pair (the walk has kept `kvs` so far): a share of the indexed
    /// one for the first pairs; for later ones an empty placeholder, the key copied into the
    /// block until the block is handed out.
    fn take(&mut self, kvs: &mut [KeyValue], key: &Bytes) -> Bytes {
        if kvs.len() < OWN_KEYS_MAX {
            return key.clone();
        }
        if !self.block.is_empty() && self.block.len() + key.len() > KEY_BLOCK_BYTES {
            self.hand_out(kvs);
        }
        if self.ends.is_empty() {
            self.first_slot = kvs.len();
            self.block.reserve_exact(KEY_BLOCK_BYTES.max(key.len()));
        }
        self.block.extend_from_slice(key);
        self.ends.push(self.block.len());
        Bytes::new()
    }

    /// Gives the keys copied into the block to their pairs, and starts an empty block.
    fn hand_out(&mut self, kvs: &mut [KeyValue]) {
        let block = Bytes::from(std::mem::take(&mut self.block));
        let mut start = 0;
        for (kv, end) in kvs[self.first_slot..].iter_mut().zip(self.ends.drain(..)) {
            kv.key = block.slice(start..end);
            start = end;
        }
    }
}

impl KeySpace {
    /// Step 2. When the answer is the first `limit` pairs the walk keeps (key order, no
    /// revision filters), a walk whose answer already holds more than `bytes_max` stops there
    /// with `RangeTooLarge`: a refused range never collects more than the bound.
    fn walk(
        &self,
        r: &RangeRequest,
        range: KeyRange<'_>,
        at: i64,
        bytes_max: u64,
    ) -> Result<Walked, EtcdError> {
        let lookahead = !self.bugs.range_without_lookahead;
        let keep_max = usize::try_from(walk_limit(r, lookahead))
            .ok()
            .filter(|&l| l > 0)
            .unwrap_or(usize::MAX);
        let answer_max = match usize::try_from(r.limit) {
            _ if !in_key_order(r) || has_revision_filters(r) => 0,
            Ok(limit) if limit > 0 => limit,
            _ => usize::MAX,
        };
        let mut answer_bytes = 0u64;
        let single = matches!(range, KeyRange::Single(_));
        let mut walked = Walked {
            count: 0,
            kvs: Vec::with_capacity(self.pairs_to_keep(range, at, keep_max, single)),
            cold: Vec::new(),
        };
        let mut keys = SharedKeys::default();
        for (key, history) in self.keys_scouted(range) {
            let Some(record) = history.live_at(at) else {
                continue;
            };
            walked.count += 1;
            if walked.kvs.len() >= keep_max {
                continue;
            }
            let own_key = keys.take(&mut walked.kvs, key);
            let kv = record.key_value_as(own_key).expect("live records are puts");
            let cold = record.cold_value();
            if walked.kvs.len() < answer_max {
                let value_bytes = match cold {
                    _ if r.keys_only => 0,
                    Some(_) if self.bugs.range_bound_skips_cold_values => 0,
                    Some(at) => u64::from(at.len),
                    None => kv.value.len() as u64,
                };
                answer_bytes += key.len() as u64 + value_bytes;
                if answer_bytes > bytes_max {
                    return Err(EtcdError::RangeTooLarge);
                }
            }
            if let Some(cold) = cold {
                walked.cold.push((walked.kvs.len() as u32, cold));
            }
            walked.kvs.push(kv);
        }
        keys.hand_out(&mut walked.kvs);
        Ok(walked)
    }
}

impl KeySpace {
    /// How many pairs a walk that keeps up to `keep_max` will keep, counted first when that
    /// may be many: a list of pairs grown by doubling takes up to twice its size, and half as
    /// much again while its last doubling copies it (for 100,000 pairs, 9.6 MB becomes 12.6
    /// MB, and 19 MB for a moment), which would be most of a large read's memory.
    fn pairs_to_keep(&self, range: KeyRange<'_>, at: i64, keep_max: usize, single: bool) -> usize {
        if single || keep_max <= PAIRS_GROWN_MAX {
            return 0;
        }
        self.keys_scouted(range)
            .filter(|(_, history)| history.live_at(at).is_some())
            .take(keep_max)
            .count()
    }

    /// [`KeySpace::keys_in`] for a walk that reads each key's records: a [`Scout`] fetches
    /// them a few keys ahead, unless the index is small enough to stay in the CPU's caches.
    pub(crate) fn keys_scouted<'s>(
        &'s self,
        range: KeyRange<'_>,
    ) -> impl Iterator<Item = (&'s Bytes, &'s KeyHistory)> + 's {
        let single = matches!(range, KeyRange::Single(_));
        let scouted = !single && self.keys.len() > SCOUTED_KEYS_MIN;
        let mut scout = Scout::new(scouted.then(|| self.keys_in(range)));
        self.keys_in(range).inspect(move |_| scout.step())
    }
}

/// Walks that keep at most this many pairs grow their list as they go.
const PAIRS_GROWN_MAX: usize = 1024;

/// Where each cold value goes in `kvs`: the slot of every kv whose key `cold_by_key` (in key
/// order) names. Walks both in step while `kvs` is in key order too (no sort, or by key
/// ascending: the common case, and a large range has many cold values), and searches otherwise.
fn cold_slots(kvs: &[KeyValue], cold_by_key: &[(Bytes, ColdRef)]) -> Vec<(u32, ColdRef)> {
    let mut slots = Vec::new();
    let mut next = 0;
    // Whether every kv so far came in key order: once one does not, the walk stops for good.
    let mut in_order = true;
    for (slot, kv) in kvs.iter().enumerate() {
        in_order = in_order && (slot == 0 || kvs[slot - 1].key < kv.key);
        let found = if in_order {
            while next < cold_by_key.len() && cold_by_key[next].0 < kv.key {
                next += 1;
            }
            cold_by_key.get(next).filter(|(key, _)| *key == kv.key)
        } else {
            let at = cold_by_key.binary_search_by(|(key, _)| key.cmp(&kv.key));
            at.ok().map(|at| &cold_by_key[at])
        };
        if let Some((_, cold)) = found {
            slots.push((slot as u32, *cold));
        }
    }
    slots
}

/// Steps 4 and 5 of a range: sorts `kvs` as asked, cuts them to `limit` and blanks values for
/// `keys_only`. Returns whether anything was cut (`more`).
pub(crate) fn finish_order(
    kvs: &mut Vec<KeyValue>,
    sort_target: i32,
    sort_order: i32,
    limit: i64,
    keys_only: bool,
) -> Result<bool, EtcdError> {
    let mut sort_order = sort_order;
    if sort_target != SortTarget::Key as i32 && sort_order == SortOrder::None as i32 {
        sort_order = SortOrder::Ascend as i32;
    }
    if !is_default_ordering(sort_target, sort_order) {
        // etcd panics on an unknown target here; the API check rejects it before raft, so
        // only an unchecked request gets this far and it gets the API check's error.
        let less = less_for(sort_target).ok_or(EtcdError::InvalidSortOption)?;
        if sort_order == SortOrder::Ascend as i32 {
            go_sort(kvs, less);
        } else if sort_order == SortOrder::Descend as i32 {
            go_sort(kvs, |a, b| less(b, a));
        }
        // Any other (unknown) order leaves the key order, as etcd's switch falls through.
    }

    let mut more = false;
    if limit > 0 && kvs.len() as u64 > limit as u64 {
        kvs.truncate(limit as usize);
        more = true;
    }
    if keys_only {
        for kv in kvs.iter_mut() {
            kv.value = Bytes::new();
        }
    }
    Ok(more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_slots_find_every_cold_key_in_any_order() {
        let kv = |k: &str| KeyValue {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..KeyValue::default()
        };
        let cold_at = |offset| ColdRef {
            segment: 1,
            offset,
            len: 1,
        };
        let cold: Vec<(Bytes, ColdRef)> = ["b", "c", "e", "g"]
            .iter()
            .zip(0..)
            .map(|(k, offset)| (Bytes::copy_from_slice(k.as_bytes()), cold_at(offset)))
            .collect();
        for order in [
            "abcdefgh", "hgfedcba", "cgabhefd", "gcbe", "aceg", "egac", "", "h",
        ] {
            let kvs: Vec<KeyValue> = order.chars().map(|c| kv(&c.to_string())).collect();
            let expected: Vec<(u32, ColdRef)> = kvs
                .iter()
                .enumerate()
                .filter_map(|(slot, kv)| {
                    let found = cold.iter().find(|(key, _)| *key == kv.key)?;
                    Some((slot as u32, found.1))
                })
                .collect();
            assert_eq!(cold_slots(&kvs, &cold), expected, "order {order}");
        }
    }

    #[test]
    fn range_end_conventions_decode_like_etcd() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::From(b"a"));
        assert_eq!(KeyRange::new(b"a", b"b"), KeyRange::Between(b"a", b"b"));
        assert_eq!(
            KeyRange::new(b"a", b"\0\0"),
            KeyRange::Between(b"a", b"\0\0")
        );
    }

    #[test]
    fn limit_is_pushed_into_the_walk_only_for_natural_order_without_filters() {
        let mut r = RangeRequest {
            limit: 3,
            ..RangeRequest::default()
        };
        assert_eq!(walk_limit(&r, true), 4);
        r.sort_target = SortTarget::Mod as i32; // order NONE: still pushed down, as etcd does
        assert_eq!(walk_limit(&r, true), 4);
        r.sort_order = SortOrder::Ascend as i32;
        assert_eq!(walk_limit(&r, true), 0);
        r.sort_target = SortTarget::Key as i32;
        assert_eq!(walk_limit(&r, true), 4);
        r.min_mod_revision = 1;
        assert_eq!(walk_limit(&r, true), 0);
        let r = RangeRequest {
            limit: i64::MAX,
            ..RangeRequest::default()
        };
        assert_eq!(walk_limit(&r, true), i64::MAX);
    }
}
