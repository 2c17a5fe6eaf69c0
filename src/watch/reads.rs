//! Catch-up reads shared between watchers: when many watchers of one range fall behind together
//! (a stream that stopped reading, a burst of writes), one read of the key space serves them
//! all instead of one read each, and each event it read is encoded once for all of them.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::events::ChangeBatch;
use crate::mvcc::{ColdRead, KeySpaceView};

/// Reads kept at once; each holds at most one catch-up step's revisions of its range.
const READS_MAX: usize = 16;

struct Read {
    key: Bytes,
    range_end: Bytes,
    from: i64,
    to: i64,
    changes: Arc<ChangeBatch>,
}

/// The latest reads of one key-space view. Cleared whenever the view changes.
#[derive(Default)]
pub(super) struct CatchUpReads {
    reads: VecDeque<Read>,
}

impl CatchUpReads {
    pub fn clear(&mut self) {
        self.reads.clear();
    }

    /// The changes of `key..range_end` at revisions `from..=to`: a slice of a read already made
    /// that covers them, or a new read.
    pub fn changes(
        &mut self,
        view: &KeySpaceView,
        cold: &dyn ColdRead,
        (key, range_end): (&[u8], &[u8]),
        from: i64,
        to: i64,
    ) -> io::Result<(Arc<ChangeBatch>, Range<usize>)> {
        let covering = self
            .reads
            .iter()
            .find(|r| r.from <= from && to <= r.to && r.key == key && r.range_end == range_end);
        let changes = match covering {
            Some(read) => read.changes.clone(),
            None => {
                let changes = view.changes(key, range_end, from, to, cold)?;
                let changes = Arc::new(ChangeBatch::new(changes));
                if self.reads.len() == READS_MAX {
                    self.reads.pop_front();
                }
                self.reads.push_back(Read {
                    key: Bytes::copy_from_slice(key),
                    range_end: Bytes::copy_from_slice(range_end),
                    from,
                    to,
                    changes: changes.clone(),
                });
                changes
            }
        };
        let all = changes.changes();
        let start = all.partition_point(|c| c.revision.main < from);
        let end = all.partition_point(|c| c.revision.main <= to);
        Ok((changes, start..end))
    }
}
