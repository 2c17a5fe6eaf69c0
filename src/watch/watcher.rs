//! One watcher: what it watches, how far it has been served, and how its events are built and
//! cut into responses.

use std::ops::Range;
use std::sync::Arc;

use prost::Message as _;

use super::events::{ChangeBatch, HubResponse};
use super::ranges::{RangeId, WatchedRange};
use super::WatchId;
use crate::mvcc::{KeyChange, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use crate::time::Instant;

/// A member keeps one per watcher of every stream (10,000s of them), and its stream's table
/// holds them by value, so it is kept small: its range is a slot of the stream's ranges, and
/// the options and the sync state are bits of one byte.
#[derive(Debug)]
pub(super) struct Watcher {
    pub id: WatchId,
    pub range: RangeId,
    flags: Flags,
    /// The first revision not yet delivered: everything before it that matches was queued.
    pub next_revision: i64,
    /// When it last got a response (for progress notifications).
    pub last_sent: Instant,
}

const _: () = assert!(
    std::mem::size_of::<Watcher>() <= 32,
    "a watcher stays small"
);

/// A watcher's options and whether it is synced, one bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flags(u8);

impl Flags {
    const NO_PUT: u8 = 1;
    const NO_DELETE: u8 = 1 << 1;
    const PREV_KV: u8 = 1 << 2;
    const PROGRESS_NOTIFY: u8 = 1 << 3;
    const FRAGMENT: u8 = 1 << 4;
    /// Served as revisions are applied; otherwise it catches up from the key space.
    const SYNCED: u8 = 1 << 5;
    /// The bits that decide which events a watcher picks from a batch, and how.
    const SELECTION: u8 = Self::NO_PUT | Self::NO_DELETE | Self::PREV_KV;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

impl Watcher {
    /// A watcher for `req` of `range` (its [`watched_range`]), starting at `next_revision`.
    pub fn new(
        id: WatchId,
        range: RangeId,
        req: &WatchCreateRequest,
        next_revision: i64,
        now: Instant,
    ) -> Watcher {
        let filtered = |f: FilterType| req.filters.contains(&(f as i32));
        let mut flags = Flags(0);
        flags.set(Flags::NO_PUT, filtered(FilterType::Noput));
        flags.set(Flags::NO_DELETE, filtered(FilterType::Nodelete));
        flags.set(Flags::PREV_KV, req.prev_kv);
        flags.set(Flags::PROGRESS_NOTIFY, req.progress_notify);
        flags.set(Flags::FRAGMENT, req.fragment);
        Watcher {
            id,
            range,
            flags,
            next_revision,
            last_sent: now,
        }
    }

    fn prev_kv(&self) -> bool {
        self.flags.has(Flags::PREV_KV)
    }

    pub fn progress_notify(&self) -> bool {
        self.flags.has(Flags::PROGRESS_NOTIFY)
    }

    /// Served as revisions are applied; otherwise it catches up from the key space.
    pub fn synced(&self) -> bool {
        self.flags.has(Flags::SYNCED)
    }

    pub fn set_synced(&mut self, synced: bool) {
        self.flags.set(Flags::SYNCED, synced);
    }

    fn wants(&self, range: KeyRange, change: &KeyChange) -> bool {
        range.contains(change.key())
            && !(change.deleted && self.flags.has(Flags::NO_DELETE))
            && (change.deleted || !self.flags.has(Flags::NO_PUT))
    }

    /// The changes of `batch` in `changes` this watcher of `range` wants (indexes into the
    /// batch, in revision order), whole revisions only, stopping after the revision at which
    /// their events pass `bytes_max`; and the index of the first change not considered. A
    /// single revision larger than `bytes_max` still comes whole.
    pub fn take_events(
        &self,
        range: WatchedRange,
        batch: &ChangeBatch,
        changes: Range<usize>,
        bytes_max: usize,
    ) -> (Vec<u32>, usize) {
        let all = batch.changes();
        let range = range.key_range();
        let mut picks = Vec::new();
        let mut bytes = 0;
        for i in changes.clone() {
            let boundary = i > changes.start && all[i - 1].revision.main != all[i].revision.main;
            if boundary && bytes > bytes_max {
                return (picks, i);
            }
            if self.wants(range, &all[i]) {
                bytes += batch.event_len(i, self.prev_kv());
                picks.push(u32::try_from(i).expect("a batch holds far fewer than 4G changes"));
            }
        }
        (picks, changes.end)
    }

    /// The bits of its options that decide which events it picks from changes.
    fn selection(&self) -> u8 {
        self.flags.0 & Flags::SELECTION
    }

    /// Emits the responses carrying the events of `picks`: one, or, for a watcher that asked
    /// for fragments and more than one event, as many as it takes to keep each under
    /// `fragment_bytes` (all but the last marked `fragment`). Split where etcd splits: a
    /// fragment takes events while it stays below the limit, and always at least one.
    pub fn responses(
        &self,
        template: &WatchResponse,
        batch: &Arc<ChangeBatch>,
        picks: Vec<u32>,
        fragment_bytes: usize,
        mut emit: impl FnMut(HubResponse),
    ) {
        let head = WatchResponse {
            watch_id: self.id,
            ..template.clone()
        };
        let whole = HubResponse::with_events(head, batch, picks, self.prev_kv());
        if !self.flags.has(Flags::FRAGMENT)
            || whole.event_count() < 2
            || whole.encoded_len() < fragment_bytes
        {
            return emit(whole);
        }
        let (head, picks) = whole.into_parts();
        let fragment = WatchResponse {
            fragment: true,
            ..head
        };
        let head_len = fragment.encoded_len();
        let (mut current, mut size) = (Vec::new(), head_len);
        for i in picks {
            let len = batch.field(i as usize, self.prev_kv()).len();
            if !current.is_empty() && size + len >= fragment_bytes {
                let full = std::mem::take(&mut current);
                emit(HubResponse::with_events(
                    fragment.clone(),
                    batch,
                    full,
                    self.prev_kv(),
                ));
                size = head_len;
            }
            size += len;
            current.push(i);
        }
        let last = WatchResponse {
            fragment: false,
            ..fragment
        };
        emit(HubResponse::with_events(
            last,
            batch,
            current,
            self.prev_kv(),
        ));
    }
}

/// The range a watch request asks for, normalized as etcd does: an empty key means `"\0"`.
pub(super) fn watched_range(req: &WatchCreateRequest) -> WatchedRange<'_> {
    WatchedRange {
        key: if req.key.is_empty() { b"\0" } else { &req.key },
        end: &req.range_end,
    }
}

/// The last [`Watcher::take_events`] answer, for the next watcher that would get the same one:
/// the watchers of a stream usually watch the same keys, and are served one after the other
/// from the same changes. Checking a watcher's range once replaces checking each change's key
/// against it.
#[derive(Default)]
pub(super) struct PicksMemo {
    last: Option<Memo>,
}

struct Memo {
    /// Held, so that no other batch can take its address while the memo names it.
    batch: Arc<ChangeBatch>,
    changes: Range<usize>,
    bytes_max: usize,
    /// What made the answer: the watcher's selection bits and range (key, then end).
    selection: u8,
    range: Box<[u8]>,
    key_len: usize,
    picks: Vec<u32>,
    next: usize,
}

impl Memo {
    fn made_by(&self, watcher: &Watcher, range: WatchedRange) -> bool {
        let (key, end) = self.range.split_at(self.key_len);
        self.selection == watcher.selection() && key == range.key && end == range.end
    }
}

impl PicksMemo {
    /// `watcher.take_events(range, batch, changes, bytes_max)`, remembered.
    pub fn take(
        &mut self,
        watcher: &Watcher,
        range: WatchedRange,
        batch: &Arc<ChangeBatch>,
        changes: Range<usize>,
        bytes_max: usize,
    ) -> (Vec<u32>, usize) {
        if let Some(memo) = &self.last {
            let same = Arc::ptr_eq(&memo.batch, batch)
                && memo.changes == changes
                && memo.bytes_max == bytes_max
                && memo.made_by(watcher, range);
            if same {
                return (memo.picks.clone(), memo.next);
            }
        }
        let (picks, next) = watcher.take_events(range, batch, changes.clone(), bytes_max);
        self.last = Some(Memo {
            batch: batch.clone(),
            changes,
            bytes_max,
            selection: watcher.selection(),
            range: [range.key, range.end].concat().into_boxed_slice(),
            key_len: range.key.len(),
            picks: picks.clone(),
            next,
        });
        (picks, next)
    }
}
