//! Cold values: the values of superseded revisions, kept in segment files rather than in memory.
//!
//! Every revision stays readable until compaction, but ordinary traffic (reads at the current
//! revision, compares, `prev_kv`, `ignore_value`) only ever reads a key's newest record. The value
//! of a put that a later write superseded is read only by reads of the past, HashKV and
//! snapshots. Keeping those values in memory made a member's memory grow with its whole
//! uncompacted history, where etcd keeps history in its backend file. So once a write commits,
//! the value it superseded waits for its batch (about `Config::cold_batch_bytes` of them), which
//! moves to a cold segment in key order; each record then keeps only where (`ColdRef`).
//!
//! The core never touches the segments. The key space emits [`ColdOp`]s that the driver carries
//! out in order (no sync: segments are a cache, dropped at every start and rebuilt from the
//! snapshot and WAL, which hold every value). A reply, a snapshot or a HashKV that needs cold
//! values carries their locations, and the driver reads them through [`ColdRead`], pinning the
//! segments as they were when the output left the node.
//!
//! Release is first-in, first-out: a value moves with the batch of values superseded about
//! when it was, and compaction at `c` drops exactly the records whose successor is at or before
//! `c` (the newest record at or before `c` is kept, everything older goes). A segment is
//! therefore released as soon as compaction passes the newest successor revision among its
//! values, at most a batch later than if values moved one by one. A waiting value whose record
//! compaction dropped is not moved at all.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::range::finish_order;
use super::revision::Revision;
use super::snapshot::KeySpaceView;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{RangeResponse, TxnResponse};
use crate::proto::mvccpb::KeyValue;

/// A segment is closed once it holds this many bytes (a larger value gets a segment of its own).
pub const COLD_SEGMENT_BYTES: u64 = 64 << 20;

/// Where a cold value is: `len` bytes at `offset` of segment `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColdRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

impl ColdRef {
    /// The error of a reader that does not hold this value's segment (released before the
    /// reader was taken, or never written).
    pub fn segment_missing(self) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cold segment {} is not held by this reader", self.segment),
        )
    }
}

/// What the driver does with the segments, in emission order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColdOp {
    /// Write `data` at `offset` of `segment`, creating the segment when it is new.
    Write {
        segment: u64,
        offset: u64,
        data: Bytes,
    },
    /// No record refers to `segment` any more: delete it. Readers that pinned it before may
    /// still read it.
    Release { segment: u64 },
}

/// Reads cold values for the driver.
pub trait ColdRead {
    fn read_cold(&self, at: ColdRef) -> io::Result<Bytes>;

    /// Several values, in the order asked. A reader of files reads neighbours together.
    fn read_cold_many(&self, at: &[ColdRef]) -> io::Result<Vec<Bytes>> {
        at.iter().map(|&at| self.read_cold(at)).collect()
    }

    /// Reads each value named into `out`, at the position given with it.
    fn read_cold_into(&self, at: &[(ColdRef, usize)], out: &mut [u8]) -> io::Result<()> {
        for &(value_at, position) in at {
            let value = self.read_cold(value_at)?;
            out.get_mut(position..position + value.len())
                .ok_or_else(malformed)?
                .copy_from_slice(&value);
        }
        Ok(())
    }
}

/// For stores that keep every value in memory: any cold read is an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoColdValues;

impl ColdRead for NoColdValues {
    fn read_cold(&self, at: ColdRef) -> io::Result<Bytes> {
        Err(io::Error::other(format!(
            "cold value {at:?} read from a store without cold values"
        )))
    }
}

/// Cold segments in memory, for the simulator and tests. Cloning pins the current contents:
/// later writes and releases do not change what a clone reads.
#[derive(Clone, Debug, Default)]
pub struct MemoryColdStore {
    segments: BTreeMap<u64, Arc<Vec<u8>>>,
}

impl MemoryColdStore {
    pub fn apply(&mut self, op: &ColdOp) {
        match op {
            ColdOp::Write {
                segment,
                offset,
                data,
            } => {
                let bytes = Arc::make_mut(self.segments.entry(*segment).or_default());
                let end = *offset as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*offset as usize..end].copy_from_slice(data);
            }
            ColdOp::Release { segment } => {
                self.segments.remove(segment);
            }
        }
    }

    /// Segments currently held.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl ColdRead for MemoryColdStore {
    fn read_cold(&self, at: ColdRef) -> io::Result<Bytes> {
        let segment = self
            .segments
            .get(&at.segment)
            .ok_or_else(|| at.segment_missing())?;
        let start = at.offset as usize;
        let end = start + at.len as usize;
        segment
            .get(start..end)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("cold value {at:?} past the end of its segment"),
                )
            })
    }
}

/// A superseded value still in memory, waiting to move with its batch: the key and the
/// revision of the record that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub key: Bytes,
    pub rev: Revision,
}

/// The key space's side of the segments: where the next value goes, which segments hold
/// values, the values waiting to move, and the operations the driver has not been handed yet.
///
/// Superseded values move in batches of about `batch_bytes`, written in key order: a read of
/// the past walks keys in order, so the values it needs from one batch lie side by side and
/// are read together, where values written as they were superseded (in the order of random
/// writes) would each cost the reader a read of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ColdLog {
    /// Segments that may hold live values, oldest first, each with the newest successor
    /// revision of the values moved into it. The last one is being filled.
    segments: VecDeque<(u64, i64)>,
    next_segment: u64,
    /// Where the next value goes in the last segment.
    offset: u64,
    /// Values moved since the last flush, to be written at `pending_offset` of the last segment.
    pending: Vec<u8>,
    pending_offset: u64,
    ops: Vec<ColdOp>,
    /// Values superseded since the last batch started moving, still in memory.
    waiting: Vec<Waiting>,
    waiting_bytes: u64,
    /// A batch starts moving once this many bytes wait (0: each write's values move at its
    /// commit).
    batch_bytes: u64,
    /// The batch being moved, in key order: a few values at each write, so that no write pays
    /// for a whole batch (a 1 MiB batch moved at once held a write for 6 ms).
    moving: VecDeque<Waiting>,
}

impl ColdLog {
    /// A log whose values move in batches of about `batch_bytes`.
    pub fn with_batch_bytes(batch_bytes: u64) -> ColdLog {
        ColdLog {
            batch_bytes,
            ..ColdLog::default()
        }
    }

    /// Notes that the value of `key`'s record at `rev` (`len` bytes, in memory) was superseded.
    pub fn wait(&mut self, key: Bytes, rev: Revision, len: usize) {
        self.waiting.push(Waiting { key, rev });
        self.waiting_bytes += len as u64;
    }

    /// The next value to move: from the batch being moved, which starts (sorted) from the
    /// waiting values once a batch's worth waits. `None` while no batch is ready.
    pub fn next_to_move(&mut self) -> Option<Waiting> {
        if self.moving.is_empty() {
            if self.waiting.is_empty() || self.waiting_bytes < self.batch_bytes {
                return None;
            }
            self.waiting_bytes = 0;
            let mut batch = std::mem::take(&mut self.waiting);
            batch.sort_unstable_by(|a, b| (&a.key, a.rev).cmp(&(&b.key, b.rev)));
            self.moving = batch.into();
        }
        self.moving.pop_front()
    }

    /// Superseded values noted and not moved yet (some may have moved another way since, or
    /// gone with compaction).
    pub fn values_to_move(&self) -> usize {
        self.waiting.len() + self.moving.len()
    }

    /// Moves `value`, superseded at main revision `successor`, out of memory; returns where.
    pub fn push(&mut self, value: &[u8], successor: i64) -> ColdRef {
        let len = value.len() as u64;
        let full = self.offset > 0 && self.offset + len > COLD_SEGMENT_BYTES;
        if self.segments.is_empty() || full {
            self.flush();
            self.segments.push_back((self.next_segment, successor));
            self.next_segment += 1;
            self.offset = 0;
            self.pending_offset = 0;
        }
        let (segment, newest) = self.segments.back_mut().expect("opened above");
        *newest = (*newest).max(successor);
        let at = ColdRef {
            segment: *segment,
            offset: self.offset,
            len: u32::try_from(len).expect("values are far below 4 GiB (max-request-bytes)"),
        };
        self.pending.extend_from_slice(value);
        self.offset += len;
        at
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let (segment, _) = *self.segments.back().expect("pending bytes have a segment");
        self.ops.push(ColdOp::Write {
            segment,
            offset: self.pending_offset,
            data: Bytes::from(std::mem::take(&mut self.pending)),
        });
        self.pending_offset = self.offset;
    }

    /// After compaction at `compact_main`: releases every segment whose values are all gone.
    pub fn release_compacted(&mut self, compact_main: i64) {
        self.flush();
        while let Some(&(segment, newest)) = self.segments.front() {
            if newest > compact_main {
                break;
            }
            self.segments.pop_front();
            self.ops.push(ColdOp::Release { segment });
        }
    }

    /// Releases every segment (the key space they served was replaced; its waiting values went
    /// with it). Returns the log for the replacement, continuing the segment numbering.
    pub fn release_all(&mut self) -> ColdLog {
        self.flush();
        for (segment, _) in self.segments.drain(..) {
            self.ops.push(ColdOp::Release { segment });
        }
        ColdLog {
            next_segment: self.next_segment,
            ops: std::mem::take(&mut self.ops),
            batch_bytes: self.batch_bytes,
            ..ColdLog::default()
        }
    }

    /// The operations since the last call, in order.
    /// Whether `take_ops` has anything to hand over.
    pub fn has_ops(&self) -> bool {
        !self.ops.is_empty() || !self.pending.is_empty()
    }

    pub fn take_ops(&mut self) -> Vec<ColdOp> {
        self.flush();
        std::mem::take(&mut self.ops)
    }

    /// Segments that may hold live values.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// How one range response is finished once its cold values are read: the values go into
/// `values` (positions in `kvs`), then, when the range sorts by value, the sort, limit and
/// `keys_only` blanking that the core could not do without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColdRange {
    /// The txn operation indices leading to this range response; empty for a plain Range.
    pub ops: Vec<u32>,
    pub values: Vec<(u32, ColdRef)>,
    pub deferred_order: Option<DeferredOrder>,
}

impl ColdRange {
    /// A range response with nothing cold.
    pub fn none() -> ColdRange {
        ColdRange {
            ops: Vec::new(),
            values: Vec::new(),
            deferred_order: None,
        }
    }
}

/// The ordering steps of a range that sorts by value, left for after the values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeferredOrder {
    pub sort_target: i32,
    pub sort_order: i32,
    pub limit: i64,
    pub keys_only: bool,
}

/// The cold values a response still needs, and where they go. Empty for nearly every response:
/// only reads of the past reach superseded values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColdValues {
    ranges: Vec<ColdRange>,
    hash: Option<HashJob>,
}

/// A HashKV to compute as the reply is sent: hashing reads every superseded value, which only
/// the driver can (and which takes time in proportion to the history, off the node's thread).
#[derive(Clone)]
struct HashJob {
    view: KeySpaceView,
    revision: i64,
}

impl PartialEq for HashJob {
    fn eq(&self, other: &HashJob) -> bool {
        self.revision == other.revision && self.view.revision() == other.view.revision()
    }
}

impl Eq for HashJob {}

impl std::fmt::Debug for HashJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashJob(at {} of {:?})", self.revision, self.view)
    }
}

impl ColdValues {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.hash.is_none()
    }

    /// The HashKV of `view` as of `revision` (checked by the caller to be neither compacted
    /// nor in the future), computed by [`ColdValues::fill_hash`].
    pub fn hash_kv(view: KeySpaceView, revision: i64) -> ColdValues {
        ColdValues {
            ranges: Vec::new(),
            hash: Some(HashJob { view, revision }),
        }
    }

    /// Computes the hash this set asks for: `(hash, compact revision)`.
    pub fn fill_hash(self, cold: &dyn ColdRead) -> io::Result<(u32, i64)> {
        let job = self.hash.ok_or_else(malformed)?;
        job.view
            .hash_kv(job.revision, cold)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub(crate) fn add(&mut self, range: ColdRange) {
        if !range.values.is_empty() || range.deferred_order.is_some() {
            self.ranges.push(range);
        }
    }

    /// The ranges of this set, moved under txn operation `op`.
    pub(crate) fn nest_under(mut self, op: u32) -> ColdValues {
        for range in &mut self.ranges {
            range.ops.insert(0, op);
        }
        self
    }

    pub(crate) fn extend(&mut self, other: ColdValues) {
        self.ranges.extend(other.ranges);
    }

    /// Whether a [`super::RangeLayout`] can answer with these: values for a plain Range
    /// that needs none of them before it is encoded (not sorted by value).
    pub fn encodes_in_place(&self) -> bool {
        self.hash.is_none()
            && self
                .ranges
                .iter()
                .all(|r| r.ops.is_empty() && r.deferred_order.is_none())
    }

    /// The values of a plain Range that [`ColdValues::encodes_in_place`], by the index of
    /// their pair, in index order.
    pub(crate) fn into_values_in_place(self) -> io::Result<Vec<(u32, ColdRef)>> {
        if !self.encodes_in_place() {
            return Err(malformed());
        }
        let mut values: Vec<(u32, ColdRef)> =
            self.ranges.into_iter().flat_map(|r| r.values).collect();
        values.sort_unstable_by_key(|&(index, _)| index);
        Ok(values)
    }

    /// Fills a Range response.
    pub fn fill_range(self, response: &mut RangeResponse, cold: &dyn ColdRead) -> io::Result<()> {
        for range in self.ranges {
            if !range.ops.is_empty() {
                return Err(malformed());
            }
            fill_one(response, range, cold)?;
        }
        Ok(())
    }

    /// Fills the range responses inside a Txn response.
    pub fn fill_txn(self, response: &mut TxnResponse, cold: &dyn ColdRead) -> io::Result<()> {
        for range in self.ranges {
            let mut txn = &mut *response;
            let (last, outer) = range.ops.split_last().ok_or_else(malformed)?;
            for &op in outer {
                match txn
                    .responses
                    .get_mut(op as usize)
                    .and_then(|r| r.response.as_mut())
                {
                    Some(Response::ResponseTxn(inner)) => txn = inner,
                    _ => return Err(malformed()),
                }
            }
            let target = match txn
                .responses
                .get_mut(*last as usize)
                .and_then(|r| r.response.as_mut())
            {
                Some(Response::ResponseRange(r)) => r,
                _ => return Err(malformed()),
            };
            fill_one(target, range, cold)?;
        }
        Ok(())
    }
}

pub(crate) fn malformed() -> io::Error {
    io::Error::other("cold value slots do not match the response")
}

fn fill_one(response: &mut RangeResponse, range: ColdRange, cold: &dyn ColdRead) -> io::Result<()> {
    let at: Vec<ColdRef> = range.values.iter().map(|&(_, at)| at).collect();
    let values = cold.read_cold_many(&at)?;
    for ((index, _), value) in range.values.into_iter().zip(values) {
        let kv: &mut KeyValue = response.kvs.get_mut(index as usize).ok_or_else(malformed)?;
        kv.value = value;
    }
    if let Some(order) = range.deferred_order {
        response.more = finish_order(
            &mut response.kvs,
            order.sort_target,
            order.sort_order,
            order.limit,
            order.keys_only,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_fill_in_order_and_roll_when_full() {
        let mut log = ColdLog {
            next_segment: 7,
            ..ColdLog::default()
        };
        let a = log.push(b"abc", 10);
        let b = log.push(b"de", 11);
        assert_eq!(
            a,
            ColdRef {
                segment: 7,
                offset: 0,
                len: 3
            }
        );
        assert_eq!(
            b,
            ColdRef {
                segment: 7,
                offset: 3,
                len: 2
            }
        );
        let ops = log.take_ops();
        assert_eq!(
            ops,
            vec![ColdOp::Write {
                segment: 7,
                offset: 0,
                data: Bytes::from_static(b"abcde")
            }]
        );
        let big = vec![1u8; COLD_SEGMENT_BYTES as usize];
        let c = log.push(&big, 12);
        assert_eq!(
            c.segment, 8,
            "a value that does not fit opens the next segment"
        );
        let d = log.push(b"f", 13);
        assert_eq!(
            d,
            ColdRef {
                segment: 9,
                offset: 0,
                len: 1
            }
        );
        let mut store = MemoryColdStore::default();
        for op in log.take_ops() {
            store.apply(&op);
        }
        assert_eq!(store.segment_count(), 2);
        assert_eq!(store.read_cold(d).unwrap(), Bytes::from_static(b"f"));
    }

    #[test]
    fn a_segment_is_released_once_compaction_passes_its_newest_successor() {
        let mut log = ColdLog::default();
        log.push(&vec![0u8; COLD_SEGMENT_BYTES as usize], 5);
        log.push(b"x", 9);
        log.push(b"y", 6);
        log.take_ops();
        log.release_compacted(8);
        assert_eq!(log.take_ops(), vec![ColdOp::Release { segment: 0 }]);
        log.release_compacted(8);
        assert!(
            log.take_ops().is_empty(),
            "segment 1 still holds a value superseded at 9"
        );
        log.release_compacted(9);
        assert_eq!(log.take_ops(), vec![ColdOp::Release { segment: 1 }]);
        let next = log.push(b"z", 10);
        assert_eq!(next.segment, 2, "segment ids are never reused");
    }

    #[test]
    fn a_pinned_store_keeps_what_it_saw() {
        let mut store = MemoryColdStore::default();
        store.apply(&ColdOp::Write {
            segment: 0,
            offset: 0,
            data: Bytes::from_static(b"old"),
        });
        let pinned = store.clone();
        store.apply(&ColdOp::Release { segment: 0 });
        let at = ColdRef {
            segment: 0,
            offset: 0,
            len: 3,
        };
        assert!(store.read_cold(at).is_err());
        assert_eq!(pinned.read_cold(at).unwrap(), Bytes::from_static(b"old"));
    }
}
