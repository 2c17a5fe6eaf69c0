//! The in-memory mirror of the raft log that raft-rs reads through its `Storage` trait.
//!
//! Invariants:
//! - `entries` are contiguous and start right after the compaction point `(compacted_index,
//!   compacted_term)`, whose term raft needs for log matching.
//! - `snapshot` is the metadata of the latest snapshot taken or installed; its index is at or after
//!   the compaction point. The mirror keeps no snapshot data: when raft needs a snapshot for a
//!   follower that is behind the compaction point, the store says "temporarily unavailable" and
//!   notes who wanted it; the node then builds one from its key space (`set_outgoing_snapshot`)
//!   and raft is asked to send it. It is dropped once no follower is waiting for one.
//! - the mirror holds entries as soon as raft hands them out for persisting; raft-rs itself tracks
//!   which of them are durable (`on_persist_ready`), so holding unpersisted entries here is safe.

pub mod election;

use std::cell::{Cell, RefCell};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    compacted_index: u64,
    compacted_term: u64,
    entries: Vec<Entry>,
    snapshot: SnapshotMetadata,
    /// The snapshot raft sends to followers behind the log: metadata only, as the node keeps
    /// the key space to encode for it.
    outgoing: RefCell<Option<Snapshot>>,
    /// The follower raft last wanted a snapshot for while none was built. raft reads the store
    /// through `&self`, hence the cell.
    wanted_by: Cell<Option<u64>>,
}

impl LogStore {
    /// A store that starts from recovered state: an optional snapshot and the entries after it.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> LogStore {
        let snapshot = snapshot.unwrap_or_default();
        let meta = snapshot.get_metadata().clone();
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                meta.index + 1,
                "recovered entries must follow the snapshot"
            );
        }
        LogStore {
            hard_state,
            conf_state,
            compacted_index: meta.index,
            compacted_term: meta.term,
            entries,
            snapshot: meta,
            outgoing: RefCell::new(None),
            wanted_by: Cell::new(None),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.compacted_index, |e| e.index)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.index
    }

    /// The follower raft wanted a snapshot for since the last call, if any.
    pub fn take_snapshot_wanted(&self) -> Option<u64> {
        self.wanted_by.take()
    }

    /// A snapshot for raft to send to followers, built by the node on request.
    pub fn set_outgoing_snapshot(&mut self, snapshot: Snapshot) {
        *self.outgoing.get_mut() = Some(snapshot);
    }

    /// Frees the snapshot built for followers.
    pub fn drop_outgoing_snapshot(&mut self) {
        *self.outgoing.get_mut() = None;
    }

    pub fn outgoing_snapshot_index(&self) -> Option<u64> {
        self.outgoing
            .borrow()
            .as_ref()
            .map(|s| s.get_metadata().index)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// raft's configuration after an applied change, for the snapshots taken from now on.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Term of the entry at `index`, if the mirror still knows it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.compacted_index {
            return Some(self.compacted_term);
        }
        if index < self.compacted_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    /// Appends entries handed out by raft, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index >= self.first_index() && first.index <= self.last_index() + 1,
            "append at {} outside [{}, {}]",
            first.index,
            self.first_index(),
            self.last_index() + 1
        );
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
    }

    /// Replaces the whole log with a snapshot installed from the leader.
    pub fn install_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        self.entries.clear();
        self.snapshot = meta.clone();
    }

    /// Records a snapshot taken locally at an applied index and drops the entries before
    /// `keep_from`; the entries between `keep_from` and the snapshot stay so that a follower
    /// that is only a little behind catches up from the log instead of a whole snapshot.
    pub fn set_local_snapshot(&mut self, meta: SnapshotMetadata, keep_from: u64) {
        let index = meta.index;
        assert!(
            index <= self.last_index(),
            "snapshot {index} beyond the log"
        );
        self.compact_before(keep_from.min(index + 1));
        self.snapshot = meta;
    }

    /// Drops the entries before `keep_from` (at most up to the last entry). The caller keeps
    /// what raft may still read: nothing unapplied, and some catch-up entries for followers; a
    /// follower further behind gets a snapshot built on request, so no snapshot is needed here.
    pub fn compact_before(&mut self, keep_from: u64) {
        let keep_from = keep_from.clamp(self.first_index(), self.last_index() + 1);
        let new_compacted = keep_from - 1;
        if new_compacted > self.compacted_index {
            let term = self
                .term_of(new_compacted)
                .expect("compaction point is in the log");
            self.entries
                .drain(..(new_compacted - self.compacted_index) as usize);
            self.compacted_index = new_compacted;
            self.compacted_term = term;
        }
    }

    /// Entries in `[low, high)`, for the node's own use (tests, invariants).
    pub fn entries_between(&self, low: u64, high: u64) -> &[Entry] {
        let low = low.max(self.first_index());
        let high = high.min(self.last_index() + 1);
        if low >= high {
            return &[];
        }
        let base = self.first_index();
        &self.entries[(low - base) as usize..(high - base) as usize]
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut ents = self.entries_between(low, high).to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(LogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(LogStore::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A built snapshot serves only while the log still continues from it: the log may have
        // been compacted past it since, and a follower given it would then need another one,
        // the same again, forever.
        if let Some(snapshot) = self.outgoing.borrow().as_ref() {
            let index = snapshot.get_metadata().index;
            if index >= request_index && index >= self.compacted_index {
                return Ok(snapshot.clone());
            }
        }
        self.wanted_by.set(Some(to));
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMetadata {
        SnapshotMetadata {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_replaces_conflicting_suffix() {
        let mut log = LogStore::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(2, 2)]);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        assert!(log.term(3).is_err());
    }

    #[test]
    fn local_snapshot_keeps_catchup_entries() {
        let mut log = LogStore::default();
        let ents: Vec<_> = (1..=10).map(|i| entry(i, 1)).collect();
        log.append(&ents);
        log.set_local_snapshot(meta(8, 1), 6);
        assert_eq!(log.first_index(), 6);
        assert_eq!(
            log.term(5).unwrap(),
            1,
            "term of the compaction point is kept"
        );
        assert!(matches!(
            log.term(4),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(
            log.entries(6, 11, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            5
        );
        assert_eq!(log.snapshot_index(), 8);
    }

    #[test]
    fn snapshots_for_followers_are_built_on_request() {
        let mut log = LogStore::default();
        log.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>());
        log.set_local_snapshot(meta(8, 1), 9);
        assert!(matches!(
            log.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert_eq!(log.take_snapshot_wanted(), Some(2));
        assert_eq!(log.take_snapshot_wanted(), None, "asked once, told once");
        let mut built = Snapshot::default();
        built.set_metadata(meta(10, 1));
        log.set_outgoing_snapshot(built);
        assert_eq!(log.snapshot(9, 3).unwrap().get_metadata().index, 10);
        assert!(log.snapshot(11, 3).is_err(), "too old for the request");
        log.drop_outgoing_snapshot();
        assert_eq!(log.outgoing_snapshot_index(), None);
    }

    /// A follower given a snapshot the log no longer continues from would need another, the
    /// same one again, forever (a crash test found this: the follower never caught up).
    #[test]
    fn a_snapshot_the_log_compacted_past_is_built_again() {
        let mut log = LogStore::default();
        log.append(&(1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>());
        let mut built = Snapshot::default();
        built.set_metadata(meta(10, 1));
        log.set_outgoing_snapshot(built);
        log.compact_before(11);
        assert_eq!(log.snapshot(0, 2).unwrap().get_metadata().index, 10);
        log.compact_before(15);
        assert!(matches!(
            log.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert_eq!(log.take_snapshot_wanted(), Some(2));
    }

    #[test]
    fn compaction_keeps_the_term_of_its_point_and_never_passes_the_log() {
        let mut log = LogStore::default();
        log.append(&(1..=10).map(|i| entry(i, i / 4 + 1)).collect::<Vec<_>>());
        log.compact_before(5);
        assert_eq!((log.first_index(), log.term(4).unwrap()), (5, 2));
        log.compact_before(3);
        assert_eq!(log.first_index(), 5, "never grows back");
        log.compact_before(99);
        assert_eq!((log.first_index(), log.last_index()), (11, 10));
        assert_eq!(log.term(10).unwrap(), 3);
    }

    #[test]
    fn installed_snapshot_replaces_log() {
        let mut log = LogStore::default();
        log.append(&[entry(1, 1), entry(2, 1)]);
        log.install_snapshot(&meta(20, 3));
        assert_eq!(log.first_index(), 21);
        assert_eq!(log.last_index(), 20);
        assert_eq!(log.term(20).unwrap(), 3);
        assert_eq!(log.hard_state().commit, 20);
    }
}
