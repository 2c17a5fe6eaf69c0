//! One watcher: what it watches, how far it has been served, and how its events are built and
//! cut into responses.

use bytes::Bytes;
use prost::Message as _;

use super::WatchId;
use crate::mvcc::{KeyChange, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::{event::EventType, Event};
use crate::time::Instant;

#[derive(Clone, Debug)]
pub(super) struct Watcher {
    pub id: WatchId,
    key: Bytes,
    range_end: Bytes,
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

impl Watcher {
    /// A watcher for `req` (normalized as etcd does: an empty key means `"\0"`), starting at
    /// `next_revision`.
    pub fn new(id: WatchId, req: &WatchCreateRequest, next_revision: i64, now: Instant) -> Watcher {
        let key = if req.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            req.key.clone()
        };
        let filtered = |f: FilterType| req.filters.contains(&(f as i32));
        Watcher {
            id,
            key,
            range_end: req.range_end.clone(),
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
        matches!(KeyRange::new(&self.key, &self.range_end), KeyRange::Between(k, e) if e <= k)
    }

    pub fn key(&self) -> &Bytes {
        &self.key
    }

    pub fn range_end(&self) -> &Bytes {
        &self.range_end
    }

    fn wants(&self, change: &KeyChange) -> bool {
        KeyRange::new(&self.key, &self.range_end).contains(change.key())
            && !(change.deleted && self.no_delete)
            && (change.deleted || !self.no_put)
    }

    /// The events of `changes` this watcher wants, as etcd sends them.
    pub fn events<'c>(&self, changes: impl IntoIterator<Item = &'c KeyChange>) -> Vec<Event> {
        changes
            .into_iter()
            .filter(|c| self.wants(c))
            .map(|c| Event {
                r#type: if c.deleted {
                    EventType::Delete as i32
                } else {
                    EventType::Put as i32
                },
                kv: Some(c.kv.clone()),
                prev_kv: if self.prev_kv { c.prev.clone() } else { None },
            })
            .collect()
    }

    /// The responses carrying `events`: one, or, for a watcher that asked for fragments, as many
    /// as it takes to keep each under `fragment_bytes` (all but the last marked `fragment`).
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
        if !self.fragment || whole.encoded_len() <= fragment_bytes {
            return vec![whole];
        }
        let mut out: Vec<WatchResponse> = Vec::new();
        let mut current = WatchResponse {
            events: Vec::new(),
            ..whole.clone()
        };
        let mut size = current.encoded_len();
        for event in whole.events {
            let len = event.encoded_len() + 4;
            if !current.events.is_empty() && size + len > fragment_bytes {
                current.fragment = true;
                let next = WatchResponse {
                    events: Vec::new(),
                    ..current.clone()
                };
                out.push(std::mem::replace(&mut current, next));
                current.fragment = false;
                size = current.encoded_len();
            }
            size += len;
            current.events.push(event);
        }
        out.push(current);
        out
    }
}
