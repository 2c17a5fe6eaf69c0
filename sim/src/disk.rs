//! A member's simulated disk: the WAL bytes written and how many of them are durable, the
//! snapshot files, and the queue of operations the disk thread works through in batches, one sync
//! each.
//! A crash keeps the synced bytes and, when the write was torn, a random prefix of the rest.
//! A bad disk may also damage what it holds while its member is down (see [`SimDisk::damage`]).

use std::collections::{BTreeMap, VecDeque};

use detcd::mvcc::ColdRead;
use detcd::node::DiskOp;
use detcd::wal::{self, DiskImage};
use rand_chacha::ChaCha8Rng;

use crate::history::SimNanos;
use crate::options::Draw;

/// A simulated disk: what was written, what of it is durable, and snapshot files.
#[derive(Clone, Default, Debug)]
pub struct SimDisk {
    pub wal_start_offset: u64,
    pub wal: Vec<u8>,
    pub synced_len: usize,
    pub snapshots: BTreeMap<u64, Vec<u8>>,
    /// Operations issued and not yet complete, each with when its batch completes: the front
    /// batch is being written, and everything issued meanwhile joins the one batch behind it.
    queue: VecDeque<(SimNanos, DiskOp)>,
}

/// Most operations one batch covers, as the server's disk thread (`BATCH_OPS_MAX`).
const BATCH_OPS_MAX: usize = 1024;

impl SimDisk {
    /// Carries out `op`; a local snapshot reads its superseded values through `cold`.
    pub fn execute(&mut self, op: &DiskOp, cold: &dyn ColdRead) -> std::io::Result<()> {
        match op {
            DiskOp::AppendWal { data, sync } => {
                self.wal.extend_from_slice(data);
                if *sync {
                    self.synced_len = self.wal.len();
                }
            }
            DiskOp::SaveSnapshot { index, file, .. } => {
                self.snapshots.insert(*index, file.encode(cold)?);
            }
            DiskOp::Release {
                wal_before_offset,
                snapshots_before_index,
            } => {
                let drop = (wal_before_offset.saturating_sub(self.wal_start_offset) as usize)
                    .min(self.synced_len);
                self.wal.drain(..drop);
                self.synced_len -= drop;
                self.wal_start_offset += drop as u64;
                self.snapshots
                    .retain(|index, _| index >= snapshots_before_index);
            }
        }
        Ok(())
    }

    /// Queues `op` and returns when it completes. The disk thread group-commits as the
    /// server's does: it writes everything queued behind its current batch as the next batch,
    /// under one sync taking `latency`, so a member issuing many small writes is not held to one
    /// sync each. Any other operation closes its batch: the server writes the appends queued
    /// after it only once it is done, and here they enter the page cache when their batch starts.
    pub(crate) fn issue(&mut self, now: SimNanos, latency: SimNanos, op: DiskOp) -> SimNanos {
        let at = match (self.queue.front(), self.queue.back()) {
            (Some(&(writing, _)), Some(&(last, ref last_op))) => {
                let last_batch = self.queue.iter().rev().take_while(|(at, _)| *at == last);
                let open = matches!(last_op, DiskOp::AppendWal { .. });
                if last > writing && open && last_batch.count() < BATCH_OPS_MAX {
                    last
                } else {
                    last + latency
                }
            }
            _ => now + latency,
        };
        self.queue.push_back((at, op));
        if self.queue.len() == 1 {
            self.start_front_batch();
        }
        at
    }

    /// Retires the operation at the front, which just completed; when it was the last of its
    /// batch, the batch behind it starts.
    pub(crate) fn retire_front(&mut self) {
        let Some((done, _)) = self.queue.pop_front() else {
            return;
        };
        if self.queue.front().is_some_and(|(at, _)| *at != done) {
            self.start_front_batch();
        }
    }

    /// Starts the batch at the front of the queue: its appends' bytes enter the page cache.
    fn start_front_batch(&mut self) {
        let Some(&(batch, _)) = self.queue.front() else {
            return;
        };
        for (_, op) in self.queue.iter().take_while(|(at, _)| *at == batch) {
            if let DiskOp::AppendWal { data, .. } = op {
                self.wal.extend_from_slice(data);
            }
        }
    }

    /// A crash that tears nothing: exactly the unsynced bytes are lost.
    pub fn crash_losing_unsynced(&mut self) {
        self.queue.clear();
        self.wal.truncate(self.synced_len);
    }

    /// A crash: unsynced bytes are lost, except that a torn write may leave a prefix of them.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng, torn: bool) -> bool {
        self.queue.clear();
        let unsynced = self.wal.len() - self.synced_len;
        let keep = if torn && unsynced > 0 {
            rng.below(unsynced as u64) as usize
        } else {
            0
        };
        self.wal.truncate(self.synced_len + keep);
        self.synced_len = self.wal.len();
        keep > 0
    }

    /// Damages what the disk holds at rest, in one of the ways real disks do: a flipped bit or
    /// a misdirected write in the synced WAL, or a flipped bit in a snapshot file. WAL damage
    /// lands before the last record that holds entries, so that recovery can tell it from a
    /// torn write (a damaged last record is indistinguishable from one, and dropping it is what
    /// every WAL does). Returns the kind of damage done, if any.
    pub fn damage(&mut self, rng: &mut ChaCha8Rng) -> Option<&'static str> {
        let before_last_entries = wal::recover(&self.image())
            .ok()?
            .entry_runs
            .last()
            .map_or(0, |run| {
                run.wal_offset.saturating_sub(self.wal_start_offset)
            }) as usize;
        let limit = before_last_entries.min(self.synced_len);
        match rng.below(3) {
            0 if limit > 0 => {
                let at = rng.below(limit as u64) as usize;
                self.wal[at] ^= 1 << rng.below(8);
                Some("fault.bit-flip")
            }
            1 if limit > 16 => {
                let len = rng.between(8, (limit / 2).min(256) as u64) as usize;
                let from = rng.below((limit - len) as u64) as usize;
                let to = rng.below((limit - len) as u64) as usize;
                self.wal.copy_within(from..from + len, to);
                Some("fault.misdirected-write")
            }
            _ => {
                let count = self.snapshots.len() as u64;
                let file = self.snapshots.values_mut().nth(rng.below(count) as usize)?;
                if file.is_empty() {
                    return None;
                }
                let at = rng.below(file.len() as u64) as usize;
                file[at] ^= 1 << rng.below(8);
                Some("fault.damaged-snapshot")
            }
        }
    }

    pub fn image(&self) -> DiskImage {
        DiskImage {
            wal_start_offset: self.wal_start_offset,
            wal: self.wal.clone(),
            snapshots: self.snapshots.values().cloned().collect(),
        }
    }
}
