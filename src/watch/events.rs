//! Events shared between watchers, and the hub's responses that pick from them.
//!
//! When many watchers watch the same keys, every one of them gets its own response carrying the
//! same events. Building each watcher's copy as protobuf messages (a `KeyValue` cloned per
//! event, its length computed for the size budget, then again when encoded, then dropped) was
//! most of a member's CPU under 10,000 watchers. Here the changes of one feed (or one catch-up
//! read) form a [`ChangeBatch`] that each event is encoded from once, on first use, with and
//! without `prev_kv`; a watcher's response names the changes it carries ([`HubResponse`]) and is
//! encoded by copying their encodings after its own fields, byte for byte what prost would
//! write for the whole message (the events are `WatchResponse`'s highest-numbered field, which
//! prost writes last).

use std::sync::{Arc, OnceLock};

use bytes::BufMut;
use prost::Message as _;

use crate::mvcc::KeyChange;
use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::mvccpb::{event::EventType, Event};

/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// Changes in revision order, each with its event's encodings made once.
#[derive(Debug)]
pub struct ChangeBatch {
    changes: Vec<KeyChange>,
    /// Per change: its `events` field (tag, length, event) without and with `prev_kv`.
    fields: Vec<[OnceLock<EncodedEvent>; 2]>,
    /// What the batch may hold in memory, its encodings included (see [`ChangeBatch::bytes`]).
    bytes: usize,
}

#[derive(Debug)]
struct EncodedEvent {
    field: Box<[u8]>,
    /// The event's own length, without the field's tag and length.
    event_len: usize,
}

impl ChangeBatch {
    pub fn new(changes: Vec<KeyChange>) -> ChangeBatch {
        let fields = changes.iter().map(|_| Default::default()).collect();
        let bytes = changes.iter().map(memory_bound).sum();
        ChangeBatch {
            changes,
            fields,
            bytes,
        }
    }

    /// An upper bound of the memory the batch holds while a response names it: its changes
    /// (their keys and values counted as if no one else held them) and both encodings of each.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn changes(&self) -> &[KeyChange] {
        &self.changes
    }

    /// The event of change `index`, as a watcher with or without `prev_kv` gets it.
    pub fn event(&self, index: usize, prev_kv: bool) -> Event {
        let change = &self.changes[index];
        let kind = if change.deleted {
            EventType::Delete
        } else {
            EventType::Put
        };
        Event {
            r#type: kind as i32,
            kv: Some(change.kv.clone()),
            prev_kv: if prev_kv { change.prev.clone() } else { None },
        }
    }

    fn encoded(&self, index: usize, prev_kv: bool) -> &EncodedEvent {
        self.fields[index][prev_kv as usize].get_or_init(|| {
            let event = self.event(index, prev_kv);
            let mut field = Vec::new();
            prost::encoding::message::encode(EVENTS_FIELD, &event, &mut field);
            EncodedEvent {
                field: field.into_boxed_slice(),
                event_len: event.encoded_len(),
            }
        })
    }

    /// The `events` field carrying change `index`'s event.
    pub fn field(&self, index: usize, prev_kv: bool) -> &[u8] {
        &self.encoded(index, prev_kv).field
    }

    /// The encoded length of change `index`'s event itself.
    pub fn event_len(&self, index: usize, prev_kv: bool) -> usize {
        self.encoded(index, prev_kv).event_len
    }
}

/// A change's share of [`ChangeBatch::bytes`]: the record, its encodings' slots, and its key,
/// value and previous value three times over (held, and encoded without and with prev_kv).
fn memory_bound(change: &KeyChange) -> usize {
    let prev = change
        .prev
        .as_ref()
        .map_or(0, |p| p.key.len() + p.value.len());
    let data = change.kv.key.len() + change.kv.value.len() + prev;
    std::mem::size_of::<KeyChange>() + std::mem::size_of::<[OnceLock<EncodedEvent>; 2]>() + 3 * data
}

/// A response of the hub: a `WatchResponse` whose events (after any the message itself holds)
/// are changes of a shared batch.
#[derive(Clone, Debug, Default)]
pub struct HubResponse {
    head: WatchResponse,
    picked: Option<Picked>,
}

#[derive(Clone, Debug)]
struct Picked {
    batch: Arc<ChangeBatch>,
    /// Indexes into the batch, in order.
    changes: Vec<u32>,
    prev_kv: bool,
}

impl From<WatchResponse> for HubResponse {
    fn from(head: WatchResponse) -> HubResponse {
        HubResponse { head, picked: None }
    }
}

impl HubResponse {
    /// `head` followed by the events of `changes` (indexes into `batch`).
    pub fn with_events(
        head: WatchResponse,
        batch: &Arc<ChangeBatch>,
        changes: Vec<u32>,
        prev_kv: bool,
    ) -> HubResponse {
        HubResponse {
            head,
            picked: Some(Picked {
                batch: batch.clone(),
                changes,
                prev_kv,
            }),
        }
    }

    fn picked_fields(&self) -> impl Iterator<Item = &[u8]> {
        self.picked.iter().flat_map(|p| {
            p.changes
                .iter()
                .map(|&i| p.batch.field(i as usize, p.prev_kv))
        })
    }

    /// The batch whose changes it carries, if any.
    pub fn batch(&self) -> Option<&Arc<ChangeBatch>> {
        self.picked.as_ref().map(|p| &p.batch)
    }

    pub fn event_count(&self) -> usize {
        self.head.events.len() + self.picked.as_ref().map_or(0, |p| p.changes.len())
    }

    /// Its memory beside what it shares: the message and the list of picked changes.
    pub fn own_bytes(&self) -> usize {
        let picks = self.picked.as_ref().map_or(0, |p| p.changes.capacity());
        std::mem::size_of::<HubResponse>() + picks * std::mem::size_of::<u32>()
    }

    pub fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.picked_fields().map(<[u8]>::len).sum::<usize>()
    }

    /// Appends the response, encoded exactly as prost encodes `into_proto()`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for field in self.picked_fields() {
            buf.put_slice(field);
        }
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf
    }

    /// The message without the picked events, and the picked changes.
    pub fn into_parts(self) -> (WatchResponse, Vec<u32>) {
        (self.head, self.picked.map_or(Vec::new(), |p| p.changes))
    }

    /// The response as the generated message.
    pub fn into_proto(self) -> WatchResponse {
        let mut response = self.head;
        if let Some(p) = self.picked {
            let events = p.changes.iter();
            response
                .events
                .extend(events.map(|&i| p.batch.event(i as usize, p.prev_kv)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::Revision;
    use crate::proto::etcdserverpb::ResponseHeader;
    use crate::proto::mvccpb::KeyValue;
    use bytes::Bytes;

    fn kv(key: &'static [u8], mod_revision: i64, value: &'static [u8]) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key),
            create_revision: 2,
            mod_revision,
            version: mod_revision - 1,
            value: Bytes::from_static(value),
            lease: 7,
        }
    }

    fn batch() -> Arc<ChangeBatch> {
        let change = |main, key, deleted, prev: Option<KeyValue>| KeyChange {
            revision: Revision { main, sub: 0 },
            kv: if deleted {
                KeyValue {
                    key: Bytes::from_static(key),
                    mod_revision: main,
                    ..KeyValue::default()
                }
            } else {
                kv(key, main, b"value")
            },
            deleted,
            prev,
            lease_before: 0,
        };
        Arc::new(ChangeBatch::new(vec![
            change(4, b"some/key", false, None),
            change(5, b"some/key", false, Some(kv(b"some/key", 4, b"old"))),
            change(6, b"some/key", true, Some(kv(b"some/key", 5, b"value"))),
            change(7, b"other", false, None),
        ]))
    }

    fn head(watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
                raft_term: 3,
            }),
            watch_id,
            fragment: watch_id % 2 == 1,
            ..WatchResponse::default()
        }
    }

    #[test]
    fn encodes_as_prost_encodes_the_whole_message() {
        let batch = batch();
        let canceled = WatchResponse {
            canceled: true,
            compact_revision: 3,
            cancel_reason: "gone".into(),
            ..head(5)
        };
        let responses = [
            HubResponse::with_events(head(0), &batch, vec![0, 1, 2, 3], false),
            HubResponse::with_events(head(1), &batch, vec![1, 2], true),
            HubResponse::with_events(head(2), &batch, vec![3], true),
            HubResponse::with_events(head(3), &batch, Vec::new(), true),
            HubResponse::from(head(-1)),
            HubResponse::from(canceled),
        ];
        for round in 0..2 {
            for response in &responses {
                let proto = response.clone().into_proto();
                assert_eq!(response.encode_to_vec(), proto.encode_to_vec(), "{round}");
                assert_eq!(response.encoded_len(), proto.encoded_len());
                assert_eq!(response.event_count(), proto.events.len());
            }
        }
    }

    #[test]
    fn events_carry_the_previous_value_only_when_asked() {
        let batch = batch();
        let with = HubResponse::with_events(head(0), &batch, vec![1], true).into_proto();
        let without = HubResponse::with_events(head(0), &batch, vec![1], false).into_proto();
        assert_eq!(with.events[0].prev_kv, Some(kv(b"some/key", 4, b"old")));
        assert_eq!(without.events[0].prev_kv, None);
        assert_eq!(with.events[0].kv, without.events[0].kv);
        let delete = batch.event(2, false);
        assert_eq!(delete.r#type, EventType::Delete as i32);
        assert_eq!(batch.event_len(2, false), delete.encoded_len());
    }
}
