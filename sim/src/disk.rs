//! A member's simulated disk: the WAL bytes written and how many of them are durable, the
//! snapshot files, and the queue of operations the disk thread works through one at a time.
//! A crash keeps the synced bytes and, when the write was torn, a random prefix of the rest.

use std::collections::{BTreeMap, VecDeque};

use detcd::mvcc::ColdRead;
use detcd::node::DiskOp;
use detcd::wal::DiskImage;
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
    /// When the previous operation completes: completions are in order.
    pub(crate) busy_until: SimNanos,
    /// Operations issued and not yet complete; the front one is in progress.
    pub(crate) queue: VecDeque<DiskOp>,
}

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

    /// Starts the operation at the front of the queue: an append's bytes enter the page cache.
    pub(crate) fn start_front(&mut self) {
        if let Some(DiskOp::AppendWal { data, .. }) = self.queue.front() {
            self.wal.extend_from_slice(data);
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

    pub fn image(&self) -> DiskImage {
        DiskImage {
            wal_start_offset: self.wal_start_offset,
            wal: self.wal.clone(),
            snapshots: self.snapshots.values().cloned().collect(),
        }
    }
}
