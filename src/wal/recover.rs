//! Recovery: from what a driver found on disk (WAL bytes, snapshot files) to the state a node
//! starts from. The simulator's in-memory disk and the server's files go through this same code.
//!
//! Algorithm (docs/wal.md gives the reasons at length):
//! 1. Decode the WAL; a torn tail is dropped, damage inside the log is an error.
//! 2. Decode every snapshot file; the base is the valid one with the highest index. Unusable
//!    files are set aside and reported.
//! 3. Replay the records in order on top of the base: entries at or below the base index are
//!    covered by the snapshot; later ones must continue the log without a gap, each record
//!    superseding earlier entries from its first index on. Snapshot markers are checked against
//!    the log: a marker newer than the base means a snapshot the node relied on has no usable
//!    file, which is recoverable only if the WAL still holds that entry.
//! 4. The hard state is the last one written; its commit may not exceed the recovered log.
//!
//! Invariants of the result: `entries` are consecutive from `snapshot index + 1` (or 1), their
//! terms never decrease and start at or above the snapshot's term, and
//! `snapshot index <= hard_state.commit <= last index`: exactly what raft-rs accepts at start.

use raft::eraftpb::{Entry, HardState, Snapshot};

use super::error::{RecoveryError, SnapshotFileError};
use super::frame::RECORD_ALIGN;
use super::record::Record;
use super::snapshot_file::check_snapshot_file;
use super::stream::{decode_wal_judging, DecodedRecord};

/// What a driver hands recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskImage {
    /// The logical offset of `wal[0]` (0 unless older segments were released).
    pub wal_start_offset: u64,
    /// The WAL bytes from `wal_start_offset` on, including any zero-filled or torn tail.
    pub wal: Vec<u8>,
    /// The contents of every snapshot file found, in any order.
    pub snapshots: Vec<Vec<u8>>,
}

/// One WAL segment file: the bytes stored from logical offset `start_offset` on (drivers name
/// segment files by it). It may be longer than its data (preallocated zeros).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalSegment {
    pub start_offset: u64,
    pub bytes: Vec<u8>,
}

impl DiskImage {
    /// Builds the image from segment files in any order. Each segment but the last holds data
    /// exactly up to where the next one starts (a segment begins where its predecessor's data
    /// ended), so its preallocated tail beyond that is cut off here; the last segment is kept
    /// whole and its tail is judged by `recover`.
    pub fn from_segments(
        mut segments: Vec<WalSegment>,
        snapshots: Vec<Vec<u8>>,
    ) -> Result<DiskImage, RecoveryError> {
        segments.sort_by_key(|s| s.start_offset);
        let wal_start_offset = segments.first().map_or(0, |s| s.start_offset);
        let mut wal = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            if segment.start_offset % RECORD_ALIGN as u64 != 0 {
                return Err(RecoveryError::SegmentMisaligned(segment.start_offset));
            }
            match segments.get(i + 1) {
                Some(next) if next.start_offset == segment.start_offset => {
                    return Err(RecoveryError::SegmentDuplicate(segment.start_offset));
                }
                Some(next) => {
                    let used = next.start_offset - segment.start_offset;
                    if used > segment.bytes.len() as u64 {
                        return Err(RecoveryError::SegmentShort {
                            start: segment.start_offset,
                            len: segment.bytes.len() as u64,
                            next_start: next.start_offset,
                        });
                    }
                    wal.extend_from_slice(&segment.bytes[..used as usize]);
                }
                None => wal.extend_from_slice(&segment.bytes),
            }
        }
        Ok(DiskImage {
            wal_start_offset,
            wal,
            snapshots,
        })
    }
}

/// Recovered entries `first_index..=last_index` were written by the WAL record at `wal_offset`.
/// The node needs this to know which WAL it may release once a later snapshot covers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRun {
    pub wal_offset: u64,
    pub first_index: u64,
    pub last_index: u64,
}

/// A snapshot file that could not be used: its position in `DiskImage::snapshots` and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusableSnapshot {
    pub position: usize,
    pub error: SnapshotFileError,
}

/// The state a node starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// The last hard state written, raised to what the rest of the disk proves: `commit` to
    /// the snapshot index, `term` (with no vote) to the newest term of the snapshot and the
    /// entries.
    pub hard_state: HardState,
    /// The hard state as the last one written has it: below `hard_state` when the snapshot or
    /// the entries are newer than any hard state that followed them (the crash came before
    /// the snapshot's marker, or tore a write after its entries). The node writes the raised
    /// hard state before it counts on it.
    pub recorded_hard_state: HardState,
    /// The newest usable snapshot, with its data.
    pub snapshot: Option<Snapshot>,
    /// Consecutive entries after the snapshot index (or from index 1).
    pub entries: Vec<Entry>,
    /// Which WAL record each stretch of `entries` came from, in index order.
    pub entry_runs: Vec<EntryRun>,
    /// Where the intact WAL ends. The driver truncates (or zero-fills) from here before
    /// appending, so new records never follow leftover bytes of a torn write.
    pub wal_end_offset: u64,
    /// Non-zero bytes of a torn tail that were dropped; 0 normally. For logging.
    pub torn_tail_bytes: u64,
    /// Snapshot files that were ignored, for logging and cleanup.
    pub unusable_snapshots: Vec<UnusableSnapshot>,
}

impl Recovered {
    /// Whether the disk held nothing yet: no snapshot, no entries, no hard state.
    pub fn is_fresh(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state == HardState::default()
    }
}

/// Bugs the simulator's tests inject into recovery (all off otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryBugs {
    /// Damage inside the log is taken for a torn tail: everything from it on is dropped.
    pub damage_taken_for_torn_tail: bool,
}

/// Turns a disk image into the node's starting state, or explains why it cannot.
/// Never panics; an image without snapshots and WAL records is a fresh member.
pub fn recover(image: &DiskImage) -> Result<Recovered, RecoveryError> {
    recover_with(image, RecoveryBugs::default())
}

/// `recover`, with injected bugs (simulator tests only).
pub fn recover_with(image: &DiskImage, bugs: RecoveryBugs) -> Result<Recovered, RecoveryError> {
    let detect_corruption = !bugs.damage_taken_for_torn_tail;
    let wal = decode_wal_judging(image.wal_start_offset, &image.wal, detect_corruption)?;
    let (snapshot, unusable_snapshots) = choose_snapshot(&image.snapshots)?;
    let (base_index, base_term) = snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.get_metadata().index, s.get_metadata().term));

    let mut replay = Replay::new(base_index, base_term);
    for DecodedRecord { offset, record } in wal.records {
        match record {
            Record::Entries(entries) => replay.apply_entries(offset, entries)?,
            Record::HardState(hs) => replay.hard_state = Some(hs),
            Record::Snapshot { index, term } => replay.apply_marker(offset, index, term)?,
        }
    }
    let ReplayedLog {
        entries,
        entry_runs,
        hard_state,
    } = replay.finish()?;

    let mut hard_state = match hard_state {
        Some(hs) => hs,
        // A member that never released WAL and never wrote a hard state has not voted.
        None if image.wal_start_offset == 0 => HardState::default(),
        // Released WAL always keeps a hard state after the newest snapshot marker; without one
        // the vote is lost, and forgetting a vote can elect two leaders in one term.
        None => {
            return Err(RecoveryError::MissingHardState {
                wal_start_offset: image.wal_start_offset,
            })
        }
    };
    let last_index = entries.last().map_or(base_index, |e| e.index);
    // Commit is written after the entries it covers and raft never truncates committed entries,
    // so a commit beyond the log means committed entries were lost (for example a damaged
    // snapshot file whose entries the WAL no longer holds). Clamping would hide that; stop.
    if hard_state.commit > last_index {
        return Err(RecoveryError::CommitBeyondLog {
            commit: hard_state.commit,
            last_index,
        });
    }
    let recorded_hard_state = hard_state.clone();
    // A snapshot only ever holds committed state, so its index is committed even if the hard
    // state saying so was not written before a crash. raft-rs requires commit >= snapshot index.
    hard_state.commit = hard_state.commit.max(base_index);
    // A member never holds an entry from a term later than its own, but a torn write can keep
    // the entries of a batch and lose the hard state after them. raft-rs would then answer
    // votes with term 0, or in a term older than its log. No vote was cast in the newer term
    // (a vote is sent only once the hard state recording it is synced), so none is kept.
    let last_term = entries.last().map_or(base_term, |e| e.term).max(base_term);
    if last_term > hard_state.term {
        hard_state.term = last_term;
        hard_state.vote = 0;
    }

    Ok(Recovered {
        hard_state,
        recorded_hard_state,
        snapshot,
        entries,
        entry_runs,
        wal_end_offset: image.wal_start_offset + wal.valid_len as u64,
        torn_tail_bytes: wal.torn_tail_bytes as u64,
        unusable_snapshots,
    })
}

/// Checks every snapshot file and picks the one with the highest index. Ties between files at
/// one index are broken by their bytes, so the choice does not depend on the order the driver
/// listed them in. Only the chosen file's data is copied.
fn choose_snapshot(
    files: &[Vec<u8>],
) -> Result<(Option<Snapshot>, Vec<UnusableSnapshot>), RecoveryError> {
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for (position, file) in files.iter().enumerate() {
        match check_snapshot_file(file) {
            Ok(checked) => usable.push((checked, file)),
            Err(error) => unusable.push(UnusableSnapshot { position, error }),
        }
    }
    usable.sort_by(|(a, a_file), (b, b_file)| {
        (b.index, b.term)
            .cmp(&(a.index, a.term))
            .then(a_file.cmp(b_file))
    });
    // A committed index has exactly one term; two usable files disagreeing on it means at least
    // one holds state that was never committed here.
    for pair in usable.windows(2) {
        let ((a, _), (b, _)) = (&pair[0], &pair[1]);
        if a.index == b.index && a.term != b.term {
            return Err(RecoveryError::SnapshotConflict {
                index: a.index,
                term_a: b.term,
                term_b: a.term,
            });
        }
    }
    let chosen = usable
        .into_iter()
        .next()
        .map(|(checked, _)| checked.into_snapshot());
    Ok((chosen, unusable))
}

/// What a replay leaves: the log after the base snapshot, where it came from, and the last hard
/// state written.
struct ReplayedLog {
    entries: Vec<Entry>,
    entry_runs: Vec<EntryRun>,
    hard_state: Option<HardState>,
}

/// The log being rebuilt on top of the base snapshot `(base_index, base_term)`.
struct Replay {
    base_index: u64,
    base_term: u64,
    /// The term of the entry at `base_index` as the WAL last wrote it; `None` when no retained
    /// record covers that index. Tells a log that continues the snapshot from one that diverged
    /// from it (the node then installed the snapshot from a leader, replacing the log).
    term_at_base: Option<u64>,
    /// Whether the marker for the base snapshot has been replayed.
    base_marker_seen: bool,
    /// Consecutive entries from `base_index + 1`.
    entries: Vec<Entry>,
    runs: Vec<EntryRun>,
    hard_state: Option<HardState>,
}

impl Replay {
    fn new(base_index: u64, base_term: u64) -> Replay {
        Replay {
            base_index,
            base_term,
            term_at_base: None,
            base_marker_seen: false,
            entries: Vec::new(),
            runs: Vec::new(),
            hard_state: None,
        }
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.base_index, |e| e.index)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index <= self.base_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.base_index - 1) as usize].term)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.runs.clear();
    }

    /// Drops entries at `index` and above (`index > base_index`).
    fn truncate_from(&mut self, index: u64) {
        debug_assert!(index > self.base_index);
        let keep = (index - self.base_index - 1) as usize;
        self.entries.truncate(keep);
        self.runs.retain(|run| run.first_index < index);
        if let Some(run) = self.runs.last_mut() {
            run.last_index = run.last_index.min(index - 1);
        }
    }

    fn apply_entries(&mut self, offset: u64, mut entries: Vec<Entry>) -> Result<(), RecoveryError> {
        // Decoding guarantees a non-empty, consecutive record.
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (first.index, last.index);
        if first <= self.base_index {
            // The record rewrites the log from `first`, which is covered by the snapshot.
            let term_here =
                (last >= self.base_index).then(|| entries[(self.base_index - first) as usize].term);
            if self.base_marker_seen && term_here != Some(self.base_term) {
                // Raft never rewrites committed entries, and a durable snapshot is committed.
                return Err(RecoveryError::RewritesSnapshot {
                    offset,
                    first_index: first,
                    snapshot_index: self.base_index,
                    snapshot_term: self.base_term,
                });
            }
            self.term_at_base = term_here;
            self.clear();
            if last <= self.base_index {
                return Ok(());
            }
            entries.drain(..=(self.base_index - first) as usize);
        } else {
            let expected = self.last_index().saturating_add(1);
            if first > expected {
                return Err(RecoveryError::LogGap {
                    offset,
                    expected,
                    found: first,
                    snapshot_index: self.base_index,
                });
            }
            self.truncate_from(first);
        }
        self.runs.push(EntryRun {
            wal_offset: offset,
            first_index: entries[0].index,
            last_index: last,
        });
        self.entries.extend(entries);
        Ok(())
    }

    fn apply_marker(&mut self, offset: u64, index: u64, term: u64) -> Result<(), RecoveryError> {
        if index < self.base_index {
            // An older snapshot; the base supersedes it.
            return Ok(());
        }
        if index == self.base_index {
            if term != self.base_term {
                return Err(RecoveryError::SnapshotMarkerMismatch {
                    offset,
                    index,
                    marker_term: term,
                    file_term: self.base_term,
                });
            }
            if self.term_at_base.is_some_and(|t| t != self.base_term) {
                // The log diverged from the snapshot at its index: this snapshot came from a
                // leader and replaced the whole log (raft-rs's restore), so the entries written
                // before the marker are not part of it.
                self.clear();
            }
            self.term_at_base = Some(self.base_term);
            self.base_marker_seen = true;
            return Ok(());
        }
        // A snapshot newer than every usable file was durable, and the node may have released
        // WAL because of it. Starting from the older base is correct only if the log still
        // holds that snapshot's last entry (and so, being gap-free, everything before it).
        if self.term_of(index) != Some(term) {
            return Err(RecoveryError::SnapshotLost {
                offset,
                index,
                term,
                fallback_index: self.base_index,
            });
        }
        Ok(())
    }

    /// Ends the replay and checks the final log's terms.
    fn finish(mut self) -> Result<ReplayedLog, RecoveryError> {
        if !self.base_marker_seen && self.term_at_base.is_some_and(|t| t != self.base_term) {
            // The snapshot file was installed from a leader but the crash came before its marker:
            // as at the marker, the diverged log it replaced is not part of the state.
            self.clear();
        }
        let mut previous_term = self.base_term;
        let mut runs = self.runs.iter().peekable();
        for entry in &self.entries {
            while runs.next_if(|run| run.last_index < entry.index).is_some() {}
            if entry.term < previous_term {
                return Err(RecoveryError::TermRegression {
                    offset: runs.peek().map_or(0, |run| run.wal_offset),
                    index: entry.index,
                    term: entry.term,
                    previous_term,
                });
            }
            previous_term = entry.term;
        }
        Ok(ReplayedLog {
            entries: self.entries,
            entry_runs: self.runs,
            hard_state: self.hard_state,
        })
    }
}
