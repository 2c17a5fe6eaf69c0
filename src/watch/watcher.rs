//! One watcher: what it watches, how far it has been served, and how its events are built and
//! cut into responses.

use std::ops::Range;
use std::sync::Arc;

use prost::Message as _;

use super::events::{ChangeBatch, HubResponse};
use super::WatchId;
use crate::mvcc::{KeyChange, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use crate::time::Instant;

/// A member keeps one per watcher of every stream (10,000s of them), so it is kept small: key
/// and range end share one allocation (64 bytes in all, against 112 with a `Bytes` each).
#[derive(Clone, Debug)]
pub(super) struct Watcher {
    pub id: WatchId,
    /// The key, then the range end.
    range: Box<[u8]>,
    key_len: u32,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// The first revision not yet delivered: everything before it that matches was queued.
    pub next_revision: i64,
    /// Served as revisions are applied; otherwise it catches up from the key space.
    pub synced: bool,
    /// When it last got a response (for progress notifications).
    pub last_sent: Instant,
    /// The revision the injected bug `duplicate_after_catch_up` delivered twice already.
    pub repeated_revision: i64,
}

const _: () = assert!(
    std::mem::size_of::<Watcher>() <= 64,
    "a watcher stays small"
);

impl Watcher {
    /// A watcher for `req` (normalized as etcd does: an empty key means `"\0"`), starting at
    /// `next_revision`.
    pub fn new(id: WatchId, req: &WatchCreateRequest, next_revision: i64, now: Instant) -> Watcher {
        let key: &[u8] = if req.key.is_empty() { b"\0" } else { &req.key };
        let filtered = |f: FilterType| req.filters.contains(&(f as i32));
        Watcher {
            id,
            range: [key, &req.range_end[..]].concat().into_boxed_slice(),
            key_len: u32::try_from(key.len()).expect("a key is far below 4 GiB"),
            no_put: filtered(FilterType::Noput),
            no_delete: filtered(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            next_revision,
            synced: false,
            last_sent: now,
            repeated_revision: 0,
        }
    }

    /// etcd refuses a range whose end is not after its key (`from-key` aside).
    pub fn range_is_empty(&self) -> bool {
        matches!(KeyRange::new(self.key(), self.range_end()), KeyRange::Between(k, e) if e <= k)
    }

    pub fn key(&self) -> &[u8] {
        &self.range[..self.key_len as usize]
    }

    pub fn range_end(&self) -> &[u8] {
        &self.range[self.key_len as usize..]
    }

    fn wants(&self, change: &KeyChange) -> bool {
        KeyRange::new(self.key(), self.range_end()).contains(change.key())
            && !(change.deleted && self.no_delete)
            && (change.deleted || !self.no_put)
    }

    /// The changes of `batch` in `changes` this watcher wants (indexes into the batch, in
    /// revision order), whole revisions only, stopping after the revision at which their
    /// events pass `bytes_max`; and the index of the first change not considered. A single
    /// revision larger than `bytes_max` still comes whole.
    pub fn take_events(
        &self,
        batch: &ChangeBatch,
        changes: Range<usize>,
        bytes_max: usize,
    ) -> (Vec<u32>, usize) {
        let all = batch.changes();
        let mut picks = Vec::new();
        let mut bytes = 0;
        for i in changes.clone() {
            let boundary = i > changes.start && all[i - 1].revision.main != all[i].revision.main;
            if boundary && bytes > bytes_max {
                return (picks, i);
            }
            if self.wants(&all[i]) {
                bytes += batch.event_len(i, self.prev_kv);
                picks.push(u32::try_from(i).expect("a batch holds far fewer than 4G changes"));
            }
        }
        (picks, changes.end)
    }

    /// Whether `other` picks the same events from any changes as this watcher.
    fn selects_as(&self, other: &Watcher) -> bool {
        self.key_len == other.key_len
            && (self.no_put, self.no_delete, self.prev_kv)
                == (other.no_put, other.no_delete, other.prev_kv)
            && self.range == other.range
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
        let whole = HubResponse::with_events(head, batch, picks, self.prev_kv);
        if !self.fragment || whole.event_count() < 2 || whole.encoded_len() < fragment_bytes {
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
            let len = batch.field(i as usize, self.prev_kv).len();
            if !current.is_empty() && size + len >= fragment_bytes {
                let full = std::mem::take(&mut current);
                emit(HubResponse::with_events(
                    fragment.clone(),
                    batch,
                    full,
                    self.prev_kv,
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
        emit(HubResponse::with_events(last, batch, current, self.prev_kv));
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
    /// A watcher that made the answer (its id and progress do not matter).
    selector: Watcher,
    picks: Vec<u32>,
    next: usize,
}

impl PicksMemo {
    /// `watcher.take_events(batch, changes, bytes_max)`, remembered.
    pub fn take(
        &mut self,
        watcher: &Watcher,
        batch: &Arc<ChangeBatch>,
        changes: Range<usize>,
        bytes_max: usize,
    ) -> (Vec<u32>, usize) {
        if let Some(memo) = &self.last {
            let same = Arc::ptr_eq(&memo.batch, batch)
                && memo.changes == changes
                && memo.bytes_max == bytes_max
                && memo.selector.selects_as(watcher);
            if same {
                return (memo.picks.clone(), memo.next);
            }
        }
        let (picks, next) = watcher.take_events(batch, changes.clone(), bytes_max);
        self.last = Some(Memo {
            batch: batch.clone(),
            changes,
            bytes_max,
            selector: watcher.clone(),
            picks: picks.clone(),
            next,
        });
        (picks, next)
    }
}
