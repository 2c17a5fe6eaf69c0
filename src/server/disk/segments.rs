//! The WAL writer: appends to the current segment, starts a new segment when the next append does
//! not fit, keeps the next segment preallocated ahead of time, and deletes released segments.
//!
//! The spare segment is preallocated on a helper thread, started once the current segment is half
//! full: writing and syncing 64 MiB of zeros takes long enough (tens to hundreds of milliseconds)
//! that doing it on the disk thread would stall every commit queued behind it. At most one helper
//! runs at a time, and its result is only taken when a rotation needs it.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::files::SPARE_NAME;
use super::files::{
    create_zeroed, create_zeroed_in_background, grow_zeroed, install_spare, lower_thread_priority,
    segment_name, sync_dir, Context,
};
use super::DiskFiles;
use crate::server::metrics::Histogram;

pub(super) struct WalWriter {
    wal_dir: PathBuf,
    segment_bytes: u64,
    /// Start offsets of the segments on disk, ascending; the back one is the current segment.
    segment_starts: VecDeque<u64>,
    file: File,
    path: PathBuf,
    /// Bytes of records in the current segment; the file's cursor is here.
    pos: u64,
    /// Preallocated length of the current segment.
    capacity: u64,
    /// Bytes were written since the last `fdatasync`.
    dirty: bool,
    /// `--unsafe-no-fsync`: appends count as durable once written.
    unsafe_no_fsync: bool,
    spare: Option<JoinHandle<Result<File, String>>>,
    /// `fdatasync`s of WAL data issued so far (for tests and metrics).
    syncs: Arc<Histogram>,
}

impl WalWriter {
    pub(super) fn new(files: DiskFiles, syncs: Arc<Histogram>) -> WalWriter {
        assert!(files.current_write_pos <= files.current_capacity);
        WalWriter {
            wal_dir: files.wal_dir,
            segment_bytes: files.options.segment_bytes,
            segment_starts: files.segment_starts.into(),
            file: files.current,
            path: files.current_path,
            pos: files.current_write_pos,
            capacity: files.current_capacity,
            dirty: false,
            unsafe_no_fsync: files.options.unsafe_no_fsync,
            spare: None,
            syncs,
        }
    }

    /// Logical offset of the next append.
    pub(super) fn end_offset(&self) -> u64 {
        self.segment_starts.back().expect("a current segment") + self.pos
    }

    /// Writes `data` at the end of the WAL, in one segment. Not durable until [`Self::sync`].
    pub(super) fn append(&mut self, data: &[u8]) -> Result<(), String> {
        let len = data.len() as u64;
        if len == 0 {
            return Ok(());
        }
        if self.pos + len > self.capacity {
            self.make_room(len)?;
        }
        self.file
            .write_all(data)
            .context("cannot append to", &self.path)?;
        self.pos += len;
        self.dirty = true;
        if self.spare.is_none() && self.pos * 2 > self.capacity {
            self.start_spare();
        }
        Ok(())
    }

    /// Makes every append so far durable. One `fdatasync` suffices even across a rotation,
    /// because a rotation syncs the segment it leaves.
    pub(super) fn sync(&mut self) -> Result<(), String> {
        if self.dirty && !self.unsafe_no_fsync {
            let started = std::time::Instant::now();
            self.file.sync_data().context("cannot sync", &self.path)?;
            self.syncs.observe(started.elapsed());
        }
        self.dirty = false;
        Ok(())
    }

    /// Deletes every segment whose whole content lies before `offset`. A segment's content ends
    /// where the next one starts, so the current segment is never deleted.
    pub(super) fn release_before(&mut self, offset: u64) -> Result<(), String> {
        let mut removed = false;
        while self.segment_starts.len() > 1 && self.segment_starts[1] <= offset {
            let start = self.segment_starts.pop_front().expect("len > 1");
            let path = self.wal_dir.join(segment_name(start));
            fs::remove_file(&path).context("cannot remove released segment", &path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.wal_dir)?;
        }
        Ok(())
    }

    /// Makes the current segment able to hold `len` more bytes.
    fn make_room(&mut self, len: u64) -> Result<(), String> {
        if self.pos == 0 {
            // An empty segment cannot be followed by one starting at the same offset: grow it.
            grow_zeroed(&mut self.file, &self.path, self.capacity, len)?;
            self.capacity = len;
            return self.file.rewind().context("cannot seek in", &self.path);
        }
        // A later segment may exist only once this one is complete on disk: `load` checks that
        // each segment's records end exactly where the next segment starts.
        self.sync()?;
        let mut file = self.take_spare()?;
        let spare_path = self.wal_dir.join(SPARE_NAME);
        let mut capacity = file.metadata().context("cannot stat", &spare_path)?.len();
        if capacity < len {
            grow_zeroed(&mut file, &spare_path, capacity, len)?;
            capacity = len;
        }
        let start = self.end_offset();
        let path = install_spare(&self.wal_dir, start)?;
        file.rewind().context("cannot seek in", &path)?;
        self.segment_starts.push_back(start);
        (self.file, self.path, self.pos, self.capacity) = (file, path, 0, capacity);
        Ok(())
    }

    /// The preallocated spare: the helper's if one was started, else made here and now.
    fn take_spare(&mut self) -> Result<File, String> {
        match self.spare.take() {
            Some(job) => job
                .join()
                .unwrap_or_else(|_| Err("the segment preallocation thread panicked".to_owned())),
            None => create_zeroed(&self.wal_dir.join(SPARE_NAME), self.segment_bytes),
        }
    }

    fn start_spare(&mut self) {
        let path = self.wal_dir.join(SPARE_NAME);
        let len = self.segment_bytes;
        // If no thread can be spawned, `take_spare` preallocates inline instead.
        self.spare = thread::Builder::new()
            .name("detcd-wal-spare".to_owned())
            .spawn(move || {
                lower_thread_priority();
                create_zeroed_in_background(&path, len)
            })
            .ok();
    }
}

impl Drop for WalWriter {
    /// Waits for a preallocation in flight, so no thread outlives the executor and writes into a
    /// directory its owner may be removing. The spare itself is discarded at the next load.
    fn drop(&mut self) {
        if let Some(job) = self.spare.take() {
            let _ = job.join();
        }
    }
}
