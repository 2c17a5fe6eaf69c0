//! Catch-up reads shared between watchers: when many watchers of one range fall behind together
//! (a stream that stopped reading, a burst of writes), one read serves them all instead of one
//! read each, and each event it read is encoded once for all of them. A read gathers its
//! changes from the latest feeds when they still hold its revisions, from the key space
//! otherwise.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::events::ChangeBatch;
use super::recent::RecentChanges;
use crate::mvcc::{ColdRead, KeyRange, KeySpaceView};

/// Reads kept at once; each holds at most one catch-up step's revisions of its range.
const READS_MAX: usize = 16;

struct Read {
    key: Bytes,
    range_end: Bytes,
    from: i64,
    to: i64,
    changes: Arc<ChangeBatch>,
}

/// The latest reads. A read stays valid while the key space moves on: the revisions it covers
/// do not change, and it is only used above the compact revision (see `changes`).
#[derive(Default)]
pub(super) struct CatchUpReads {
    reads: VecDeque<Read>,
    /// What the reads hold ([`ChangeBatch::bytes`]).
    bytes: usize,
    /// Reads made, by where their changes came from (for the simulator's coverage).
    pub from_recent: u64,
    pub from_key_space: u64,
}

/// Where a catch-up read finds the changes it needs.
pub(super) struct Sources<'a> {
    pub view: &'a KeySpaceView,
    pub cold: &'a dyn ColdRead,
    pub recent: &'a RecentChanges,
}

/// What a catch-up step serves: changes `slice` of `batch`, which are every change of the
/// range at revisions `from..=through`.
pub(super) struct Step {
    pub batch: Arc<ChangeBatch>,
    pub slice: Range<usize>,
    pub through: i64,
}

impl CatchUpReads {
    /// Forgets every read (the counts stay).
    pub fn clear(&mut self) {
        self.reads.clear();
        self.bytes = 0;
    }

    /// The changes of `key..range_end` from revision `from` on, through `to` at most: a slice of
    /// a read already made that covers `from`, or a new read of `from..=to`.
    pub fn changes(
        &mut self,
        sources: &Sources,
        (key, range_end): (&[u8], &[u8]),
        from: i64,
        to: i64,
        bytes_max: usize,
    ) -> io::Result<Step> {
        // At the compact revision itself a change's previous value may be compacted since a
        // read was made: only a fresh read of the key space answers as etcd does.
        let reusable = from > sources.view.compact_revision();
        let covering = self
            .reads
            .iter()
            .filter(|r| reusable && r.from <= from && from <= r.to)
            .filter(|r| r.key == key && r.range_end == range_end)
            .max_by_key(|r| r.to);
        let (changes, through) = match covering {
            Some(read) => (read.changes.clone(), read.to.min(to)),
            None => {
                let range = KeyRange::new(key, range_end);
                let recent = reusable
                    .then(|| sources.recent.changes(range, from, to))
                    .flatten();
                let changes = match recent {
                    Some(changes) => {
                        self.from_recent += 1;
                        changes
                    }
                    None => {
                        self.from_key_space += 1;
                        let (view, cold) = (sources.view, sources.cold);
                        view.changes(key, range_end, from, to, cold)?
                    }
                };
                let changes = Arc::new(ChangeBatch::new(changes));
                self.keep(
                    Read {
                        key: Bytes::copy_from_slice(key),
                        range_end: Bytes::copy_from_slice(range_end),
                        from,
                        to,
                        changes: changes.clone(),
                    },
                    bytes_max,
                );
                (changes, to)
            }
        };
        let all = changes.changes();
        let start = all.partition_point(|c| c.revision.main < from);
        let end = all.partition_point(|c| c.revision.main <= through);
        Ok(Step {
            batch: changes,
            slice: start..end,
            through,
        })
    }

    /// Keeps `read`, forgetting the oldest past `READS_MAX` reads or `bytes_max` bytes.
    fn keep(&mut self, read: Read, bytes_max: usize) {
        self.bytes += read.changes.bytes();
        self.reads.push_back(read);
        while self.reads.len() > READS_MAX || self.bytes > bytes_max && self.reads.len() > 1 {
            let oldest = self.reads.pop_front().expect("more than one");
            self.bytes -= oldest.changes.bytes();
        }
    }
}
