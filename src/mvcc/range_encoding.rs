//! A plain Range response encoded in parts, with its cold values read straight into their
//! places.
//!
//! The layout (where each pair's field ends) is computed from lengths alone before a byte is
//! written, so the parts of one large answer can be written into disjoint slices of one buffer
//! at the same time: encoding 100,000 pairs is a cache miss or two per key and value, and a
//! member answering one large read has idle cores. The value of a superseded revision is
//! read from its segment into its place in the encoding, never into a buffer of its own.

use std::io;
use std::ops::Range;

use prost::encoding;

use super::cold::{malformed, ColdRead, ColdRef, ColdValues};
use crate::proto::etcdserverpb::RangeResponse;

/// Field numbers of `etcdserverpb.RangeResponse`.
const HEADER: u32 = 1;
const KVS: u32 = 2;
const MORE: u32 = 3;
const COUNT: u32 = 4;

/// A Range response and where each part of its encoding goes.
pub struct RangeLayout {
    response: RangeResponse,
    /// The cold value of each pair that has one: the pair's index and where the value is, in
    /// index order.
    cold: Vec<(u32, ColdRef)>,
    /// The length of the header's field: where the first pair begins.
    head: usize,
    /// Where each pair's field ends in the encoding.
    ends: Vec<usize>,
    len: usize,
}

/// A run of consecutive pairs and the bytes their encoding takes; the first part also holds
/// the header, the last one the fields after the pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePart {
    pairs: Range<usize>,
    bytes: Range<usize>,
    /// The entries of [`RangeLayout::cold`] for these pairs.
    cold: Range<usize>,
}

impl RangePart {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl RangeLayout {
    /// Lays out `response` with the values `cold` names; an error unless those values can go
    /// straight into the encoding ([`ColdValues::encodes_in_place`]) and each names a pair of
    /// the response whose value is missing.
    pub fn new(response: RangeResponse, cold: ColdValues) -> io::Result<RangeLayout> {
        let cold = cold.into_values_in_place()?;
        let head = response
            .header
            .as_ref()
            .map_or(0, |header| encoding::message::encoded_len(HEADER, header));
        let mut at = head;
        let mut ends = Vec::with_capacity(response.kvs.len());
        let mut values = cold.iter().peekable();
        for (index, kv) in response.kvs.iter().enumerate() {
            at += match values.next_if(|&&(i, _)| i as usize == index) {
                Some((_, value)) if kv.value.is_empty() => {
                    field_len(kv.encoded_len_with_value(value.len as usize))
                }
                Some(_) => return Err(malformed()),
                None => encoding::message::encoded_len(KVS, kv),
            };
            ends.push(at);
        }
        if values.next().is_some() {
            return Err(malformed());
        }
        let len = at + tail_len(&response);
        Ok(RangeLayout {
            response,
            cold,
            head,
            ends,
            len,
        })
    }

    /// The length of the whole encoding.
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// The encoding cut into at most `count` parts of about equal size, in order; together
    /// they cover it.
    pub fn parts(&self, count: usize) -> Vec<RangePart> {
        let count = count.max(1);
        let mut parts = Vec::with_capacity(count);
        let (mut pair, mut byte, mut cold) = (0, 0, 0);
        for k in 1..=count {
            let (end_pair, end_byte) = if k == count {
                (self.ends.len(), self.len)
            } else {
                let target = self.len / count * k;
                let end_pair = self.ends.partition_point(|&end| end <= target).max(pair);
                (end_pair, self.pair_end(end_pair))
            };
            let end_cold =
                cold + self.cold[cold..].partition_point(|&(index, _)| (index as usize) < end_pair);
            parts.push(RangePart {
                pairs: pair..end_pair,
                bytes: byte..end_byte,
                cold: cold..end_cold,
            });
            (pair, byte, cold) = (end_pair, end_byte, end_cold);
        }
        parts.retain(|part| !part.is_empty());
        parts
    }

    /// Where the field of the pair before `pair` ends: where `pair`'s begins.
    fn pair_end(&self, pair: usize) -> usize {
        pair.checked_sub(1)
            .map_or(self.head, |before| self.ends[before])
    }

    /// Writes `part` of the encoding into `out`, exactly its length, and reads its cold values
    /// from `cold` into their places.
    pub fn encode_part(
        &self,
        part: &RangePart,
        cold: &dyn ColdRead,
        out: &mut [u8],
    ) -> io::Result<()> {
        if out.len() != part.len() {
            return Err(malformed());
        }
        let holes = self.write_part(part, out)?;
        cold.read_cold_into(&holes, out)
    }

    /// Writes what `part` holds besides its cold values, and returns where each of those
    /// goes. Every write is checked against the room left first, so that a length computed
    /// wrong is an error, not a panic in the middle of a buffer.
    fn write_part(&self, part: &RangePart, out: &mut [u8]) -> io::Result<Vec<(ColdRef, usize)>> {
        let total = out.len();
        let mut buf: &mut [u8] = out;
        let mut holes = Vec::with_capacity(part.cold.len());
        if part.bytes.start == 0 {
            if let Some(header) = &self.response.header {
                room(buf, encoding::message::encoded_len(HEADER, header))?;
                encoding::message::encode(HEADER, header, &mut buf);
            }
        }
        let mut values = self.cold[part.cold.clone()].iter().peekable();
        for index in part.pairs.clone() {
            let kv = &self.response.kvs[index];
            match values.next_if(|&&(i, _)| i as usize == index) {
                Some(&(_, value)) => {
                    let value_len = value.len as usize;
                    room(buf, field_len(kv.encoded_len_with_value(value_len)))?;
                    kv.encode_up_to_value(KVS, value_len, &mut buf);
                    holes.push((value, total - buf.len()));
                    buf = &mut std::mem::take(&mut buf)[value_len..];
                    kv.encode_after_value(&mut buf);
                }
                None => {
                    room(buf, encoding::message::encoded_len(KVS, kv))?;
                    encoding::message::encode(KVS, kv, &mut buf);
                }
            }
        }
        if part.bytes.end == self.len {
            room(buf, tail_len(&self.response))?;
            encode_tail(&self.response, &mut buf);
        }
        if !buf.is_empty() {
            return Err(malformed());
        }
        Ok(holes)
    }

    /// Appends the whole encoding to `out`, in one part.
    pub fn encode_into(&self, cold: &dyn ColdRead, out: &mut Vec<u8>) -> io::Result<()> {
        let start = out.len();
        out.resize(start + self.len, 0);
        let whole = RangePart {
            pairs: 0..self.ends.len(),
            bytes: 0..self.len,
            cold: 0..self.cold.len(),
        };
        self.encode_part(&whole, cold, &mut out[start..])
    }
}

/// The length of a pair's field whose message is `len` bytes.
fn field_len(len: usize) -> usize {
    encoding::key_len(KVS) + encoding::encoded_len_varint(len as u64) + len
}

fn tail_len(response: &RangeResponse) -> usize {
    let more = if response.more {
        encoding::bool::encoded_len(MORE, &response.more)
    } else {
        0
    };
    let count = if response.count != 0 {
        encoding::int64::encoded_len(COUNT, &response.count)
    } else {
        0
    };
    more + count
}

fn encode_tail(response: &RangeResponse, buf: &mut &mut [u8]) {
    if response.more {
        encoding::bool::encode(MORE, &response.more, buf);
    }
    if response.count != 0 {
        encoding::int64::encode(COUNT, &response.count, buf);
    }
}

fn room(buf: &[u8], needed: usize) -> io::Result<()> {
    if buf.len() < needed {
        return Err(malformed());
    }
    Ok(())
}
