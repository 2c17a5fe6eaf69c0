//! `etcdserverpb.WatchResponse` as the watch workloads read it, decoded without an allocation
//! per event.
//!
//! The workloads check every event of every watcher, millions a second, on the same two cores
//! as the servers they measure. Decoding them into the generated messages (a `KeyValue` with
//! its key and value split off the receive buffer for each event) took about 0.35 us per event,
//! so the load generator's decoding bounded events per second. This message keeps only what
//! the checks read: per event its kind, its `mod_revision` and the put number at the head of its
//! value. Fields it does not keep are skipped, as any protobuf reader skips unknown fields.

use bytes::{Buf, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

/// One event, as far as the watch workloads check it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSummary {
    pub has_kv: bool,
    pub mod_revision: i64,
    /// The value's first eight bytes, where the workloads put the put number.
    pub value_head: Option<[u8; 8]>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchReply {
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub cancel_reason: String,
    pub events: Vec<EventSummary>,
}

const WATCH_ID: u32 = 2;
const CREATED: u32 = 3;
const CANCELED: u32 = 4;
const CANCEL_REASON: u32 = 6;
const EVENTS: u32 = 11;
/// `mvccpb.Event.kv`.
const EVENT_KV: u32 = 2;
/// `mvccpb.KeyValue.mod_revision` and `value`.
const KV_MOD_REVISION: u32 = 3;
const KV_VALUE: u32 = 5;

impl prost::Message for WatchReply {
    fn encode_raw(&self, _buf: &mut impl bytes::BufMut) {
        unreachable!("the load generator only receives watch responses")
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            WATCH_ID => encoding::int64::merge(wire_type, &mut self.watch_id, buf, ctx),
            CREATED => encoding::bool::merge(wire_type, &mut self.created, buf, ctx),
            CANCELED => encoding::bool::merge(wire_type, &mut self.canceled, buf, ctx),
            CANCEL_REASON => encoding::string::merge(wire_type, &mut self.cancel_reason, buf, ctx),
            EVENTS => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                let len = encoding::decode_varint(buf)? as usize;
                if buf.remaining() < len {
                    return Err(DecodeError::new("buffer underflow"));
                }
                let event = if buf.chunk().len() >= len {
                    let event = summarize_event(&buf.chunk()[..len]);
                    buf.advance(len);
                    event
                } else {
                    let bytes: Bytes = buf.copy_to_bytes(len);
                    summarize_event(&bytes)
                };
                self.events.push(event?);
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        unreachable!("the load generator only receives watch responses")
    }

    fn clear(&mut self) {
        *self = WatchReply::default();
    }
}

fn summarize_event(mut event: &[u8]) -> Result<EventSummary, DecodeError> {
    let mut summary = EventSummary::default();
    while !event.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut event)?;
        if tag == EVENT_KV && wire_type == WireType::LengthDelimited {
            let kv = length_delimited(&mut event)?;
            summary.has_kv = true;
            summarize_kv(kv, &mut summary)?;
        } else {
            skip(wire_type, &mut event)?;
        }
    }
    Ok(summary)
}

fn summarize_kv(mut kv: &[u8], summary: &mut EventSummary) -> Result<(), DecodeError> {
    while !kv.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut kv)?;
        match (tag, wire_type) {
            (KV_MOD_REVISION, WireType::Varint) => {
                summary.mod_revision = encoding::decode_varint(&mut kv)? as i64;
            }
            (KV_VALUE, WireType::LengthDelimited) => {
                let value = length_delimited(&mut kv)?;
                summary.value_head = value.get(..8).and_then(|head| head.try_into().ok());
            }
            _ => skip(wire_type, &mut kv)?,
        }
    }
    Ok(())
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = encoding::decode_varint(buf)? as usize;
    if buf.len() < len {
        return Err(DecodeError::new("buffer underflow"));
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn skip(wire_type: WireType, buf: &mut &[u8]) -> Result<(), DecodeError> {
    let len = match wire_type {
        WireType::Varint => return encoding::decode_varint(buf).map(drop),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => encoding::decode_varint(buf)? as usize,
        WireType::StartGroup | WireType::EndGroup => {
            return Err(DecodeError::new("groups are not used by etcd's protocol"))
        }
    };
    if buf.len() < len {
        return Err(DecodeError::new("buffer underflow"));
    }
    *buf = &buf[len..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use detcd::proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use detcd::proto::mvccpb::{Event, KeyValue};
    use prost::Message as _;

    #[test]
    fn reads_what_the_generated_message_carries() {
        let value = |n: u64| {
            let mut v = n.to_be_bytes().to_vec();
            v.extend_from_slice(b"padding");
            Bytes::from(v)
        };
        let kv = |rev: i64, n: u64| KeyValue {
            key: Bytes::from_static(b"watch-bench/k"),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            value: value(n),
            lease: 9,
        };
        let response = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 300,
                raft_term: 4,
            }),
            watch_id: 17,
            created: true,
            canceled: true,
            cancel_reason: "why".into(),
            compact_revision: 5,
            fragment: true,
            events: vec![
                Event {
                    r#type: 0,
                    kv: Some(kv(300, 42)),
                    prev_kv: Some(kv(200, 41)),
                },
                Event {
                    r#type: 1,
                    kv: Some(KeyValue {
                        key: Bytes::from_static(b"k"),
                        mod_revision: 301,
                        value: Bytes::from_static(b"short"),
                        ..KeyValue::default()
                    }),
                    prev_kv: None,
                },
                Event::default(),
            ],
        };
        let reply = WatchReply::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            reply,
            WatchReply {
                watch_id: 17,
                created: true,
                canceled: true,
                cancel_reason: "why".into(),
                events: vec![
                    EventSummary {
                        has_kv: true,
                        mod_revision: 300,
                        value_head: Some(42u64.to_be_bytes()),
                    },
                    EventSummary {
                        has_kv: true,
                        mod_revision: 301,
                        value_head: None,
                    },
                    EventSummary::default(),
                ],
            }
        );
    }

    #[test]
    fn a_truncated_event_is_an_error() {
        let response = WatchResponse {
            events: vec![Event {
                kv: Some(KeyValue {
                    key: Bytes::from_static(b"key"),
                    ..KeyValue::default()
                }),
                ..Event::default()
            }],
            ..WatchResponse::default()
        };
        let mut bytes = response.encode_to_vec();
        // The event's length now claims one byte more than it carries.
        bytes[1] += 1;
        bytes.push(0x0a);
        assert!(WatchReply::decode(bytes.as_slice()).is_err());
    }
}
