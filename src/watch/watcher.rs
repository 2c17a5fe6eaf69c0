//! One watcher: what it watches, how far it has been served, and how its events are built and
//! cut into responses.

use prost::Message as _;

use super::WatchId;
use crate::mvcc::{KeyChange, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::{event::EventType, Event};
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

    fn event(&self, change: &KeyChange) -> Event {
        Event {
            r#type: if change.deleted {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(change.kv.clone()),
            prev_kv: if self.prev_kv {
                change.prev.clone()
            } else {
                None
            },
        }
    }

    /// The events this watcher wants from `changes` (in revision order), whole revisions only,
    /// stopping after the revision at which they pass `bytes_max`; and how many changes that
    /// consumed. A single revision larger than `bytes_max` still comes whole.
    pub fn take_events(&self, changes: &[KeyChange], bytes_max: usize) -> (Vec<Event>, usize) {
        let mut events = Vec::new();
        let mut bytes = 0;
        for (i, change) in changes.iter().enumerate() {
            let boundary = i > 0 && changes[i - 1].revision.main != change.revision.main;
            if boundary && bytes > bytes_max {
                return (events, i);
            }
            if self.wants(change) {
                let event = self.event(change);
                bytes += event.encoded_len();
                events.push(event);
            }
        }
        (events, changes.len())
    }

    /// The responses carrying `events`: one, or, for a watcher that asked for fragments and
    /// more than one event, as many as it takes to keep each under `fragment_bytes` (all but
    /// the last marked `fragment`). Split where etcd splits: a fragment takes events while it
    /// stays below the limit, and always at least one.
    pub fn responses(
        &self,
        template: &WatchResponse,
        events: Vec<Event>,
        fragment_bytes: usize,
    ) -> Vec<WatchResponse> {
        let whole = WatchResponse {
            watch_id: self.id,
            events,
            ..template.clone()
        };
        if !self.fragment || whole.events.len() < 2 || whole.encoded_len() < fragment_bytes {
            return vec![whole];
        }
        let mut out: Vec<WatchResponse> = Vec::new();
        let empty = WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..whole.clone()
        };
        let mut current = empty.clone();
        let mut size = current.encoded_len();
        for event in whole.events {
            // The event's field: a one-byte tag, its length, then the event.
            let len = event.encoded_len();
            let len = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
            if !current.events.is_empty() && size + len >= fragment_bytes {
                out.push(std::mem::replace(&mut current, empty.clone()));
                size = current.encoded_len();
            }
            size += len;
            current.events.push(event);
        }
        current.fragment = false;
        out.push(current);
        out
    }
}
