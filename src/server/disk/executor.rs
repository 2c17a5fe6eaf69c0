//! The disk thread: executes the node's disk operations in order, in group-committed batches,
//! and reports each completion through a callback. Snapshots the node took itself are encoded and
//! written by a second thread, so the WAL never waits behind a whole key space.
//!
//! Appends may instead run on the submitting thread ([`DiskExecutor::submit_all`]) while the
//! disk thread is idle: handing a small append to another thread and its completion back costs
//! two thread wake-ups, more than the write and `fdatasync` themselves on a fast disk, and they
//! sit on the critical path of every write (leader and followers alike).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::cold::ColdReader;
use super::segments::WalWriter;
use super::{files, snapshots, DiskFiles};
use crate::node::{DiskError, DiskOp, IoId, SnapshotFile};
use crate::server::metrics::Histogram;

/// Most operations one batch (one `fdatasync`) covers.
pub const BATCH_OPS_MAX: usize = 1024;
/// Most append bytes one batch covers, so a completion never waits behind an unbounded write.
pub const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Operations queued before `submit` blocks: the backpressure on a node that outruns its disk.
const QUEUE_OPS_MAX: usize = 4096;
/// Local snapshots queued behind the one being written before the disk thread blocks. The node
/// takes one only after writing at least a snapshot's worth of WAL, so more than one waiting
/// means the disk is far behind anyway.
const SNAPSHOT_QUEUE_MAX: usize = 1;
/// Most append bytes the submitting thread writes itself; larger batches go to the disk thread.
const HERE_BYTES_MAX: u64 = 1024 * 1024;
/// An append batch that took longer than this on the submitting thread (a slow disk) sends the
/// next ones to the disk thread for `HERE_SUSPENDED_FOR`: the submitter is the node's thread,
/// whose heartbeats must not wait behind a stalled `fdatasync`.
const HERE_SLOW: Duration = Duration::from_millis(10);
const HERE_SUSPENDED_FOR: Duration = Duration::from_secs(1);

/// An operation, and the cold segments as they were when it was submitted (a local snapshot
/// reads its superseded values from them).
pub type Queued = (IoId, DiskOp, ColdReader);
type Completions = Arc<dyn Fn(IoId, Result<(), DiskError>) + Send + Sync>;

/// Runs disk operations on one dedicated thread. Dropping it (or [`DiskExecutor::shutdown`])
/// finishes every operation already submitted, reports their completions, and joins the thread.
pub struct DiskExecutor {
    queue: Option<SyncSender<Queued>>,
    thread: Option<JoinHandle<()>>,
    wal_syncs: Arc<Histogram>,
    /// The files, locked by whichever thread executes: the disk thread for a queued batch, the
    /// submitter for appends it runs itself.
    executor: Arc<Mutex<Executor>>,
    /// Operations queued for the disk thread and not yet completed by it.
    in_thread: Arc<AtomicUsize>,
    completions: Completions,
    /// Until when appends go to the disk thread after a slow one ran here.
    here_suspended_until: Option<Instant>,
    /// How long a batch run here may take before the next ones go to the disk thread.
    here_slow: Duration,
}

/// The thread that encodes and writes local snapshots, one at a time, in the order queued.
struct SnapshotWriter {
    queue: Option<SyncSender<(IoId, SnapshotFile, ColdReader)>>,
    thread: Option<JoinHandle<()>>,
}

impl DiskExecutor {
    /// Starts the disk thread on the files `load` opened. `completions` is called once per
    /// operation: on the disk thread in submission order, except for a snapshot that
    /// [`SnapshotFile::may_complete_out_of_order`], which completes on the snapshot thread when it
    /// is written. It must not block for long (it holds up the disk).
    pub fn spawn(
        files: DiskFiles,
        completions: impl Fn(IoId, Result<(), DiskError>) + Send + Sync + 'static,
    ) -> DiskExecutor {
        let completions: Completions = Arc::new(completions);
        let wal_syncs = Arc::new(Histogram::default());
        let (queue, ops) = sync_channel(QUEUE_OPS_MAX);
        let executor = Arc::new(Mutex::new(Executor {
            snapshot_writer: SnapshotWriter::spawn(files.snap_dir.clone(), completions.clone()),
            snap_dir: files.snap_dir.clone(),
            wal: WalWriter::new(files, wal_syncs.clone()),
            failed: None,
        }));
        let in_thread = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (executor, in_thread, completions) =
                (executor.clone(), in_thread.clone(), completions.clone());
            thread::Builder::new()
                .name("detcd-disk".to_owned())
                .spawn(move || run_thread(&executor, ops, &in_thread, &completions))
                .expect("the disk thread must start: the node cannot run without it")
        };
        DiskExecutor {
            queue: Some(queue),
            thread: Some(thread),
            wal_syncs,
            executor,
            in_thread,
            completions,
            here_suspended_until: None,
            here_slow: HERE_SLOW,
        }
    }

    /// Makes every batch run here count as slow, so tests can see the suspension.
    #[cfg(test)]
    pub(super) fn count_every_batch_here_as_slow(&mut self) {
        self.here_slow = Duration::ZERO;
    }

    /// Makes no batch run here count as slow: a test's sync can take longer than the bound on a
    /// busy machine (CI runs the simulator's sweeps beside the tests).
    #[cfg(test)]
    pub(super) fn count_no_batch_here_as_slow(&mut self) {
        self.here_slow = Duration::MAX;
    }

    /// Queues `op`; blocks while the queue is full.
    pub fn submit(&self, io: IoId, op: DiskOp) {
        self.submit_with_cold(io, op, ColdReader::default());
    }

    /// Queues `op`, which may read cold values through `cold`; blocks while the queue is full.
    pub fn submit_with_cold(&self, io: IoId, op: DiskOp, cold: ColdReader) {
        self.in_thread.fetch_add(1, Ordering::AcqRel);
        self.queue
            .as_ref()
            .expect("the queue lives until drop")
            .send((io, op, cold))
            .expect("the disk thread is gone: it panicked (see its message)");
    }

    /// Executes `ops`, in order, as one batch: on this thread when they are all appends of at
    /// most `HERE_BYTES_MAX` bytes and the disk thread has nothing queued (so nothing submitted
    /// earlier can complete after them), otherwise on the disk thread. Completions are reported
    /// through the callback either way, in order.
    pub fn submit_all(&mut self, ops: Vec<Queued>) {
        if ops.is_empty() {
            return;
        }
        if !self.may_run_here(&ops) {
            for (io, op, cold) in ops {
                self.submit_with_cold(io, op, cold);
            }
            return;
        }
        let started = Instant::now();
        let result = self
            .executor
            .lock()
            .expect("the disk thread panicked holding the files")
            .execute_batch(&ops);
        if started.elapsed() >= self.here_slow {
            self.here_suspended_until = Some(Instant::now() + HERE_SUSPENDED_FOR);
        }
        for (io, _, _) in ops {
            (self.completions)(io, result.clone());
        }
    }

    fn may_run_here(&mut self, ops: &[Queued]) -> bool {
        if self
            .here_suspended_until
            .is_some_and(|until| Instant::now() < until)
        {
            return false;
        }
        self.here_suspended_until = None;
        let appends_only = ops
            .iter()
            .all(|(_, op, _)| matches!(op, DiskOp::AppendWal { .. }));
        let bytes: u64 = ops.iter().map(|(_, op, _)| append_bytes(op)).sum();
        appends_only && bytes <= HERE_BYTES_MAX && self.in_thread.load(Ordering::Acquire) == 0
    }

    /// `fdatasync`s of WAL data so far; fewer than the synced appends when group commit works.
    pub fn wal_syncs(&self) -> u64 {
        self.wal_syncs.count()
    }

    /// How long the WAL's `fdatasync`s took, for `/metrics`.
    pub fn wal_sync_latencies(&self) -> Arc<Histogram> {
        self.wal_syncs.clone()
    }

    /// Finishes the queued operations and joins the thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for DiskExecutor {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once it has drained what is queued.
        drop(self.queue.take());
        join(self.thread.take());
    }
}

/// Joins a worker thread, passing its panic on unless this thread is already panicking.
fn join(thread: Option<JoinHandle<()>>) {
    if let Some(thread) = thread {
        if let Err(panic) = thread.join() {
            if !thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl SnapshotWriter {
    fn spawn(snap_dir: PathBuf, completions: Completions) -> SnapshotWriter {
        let (queue, files) = sync_channel::<(IoId, SnapshotFile, ColdReader)>(SNAPSHOT_QUEUE_MAX);
        let thread = thread::Builder::new()
            .name("detcd-snapshot".to_owned())
            .spawn(move || {
                files::lower_thread_priority();
                let mut failed: Option<DiskError> = None;
                while let Ok((io, file, cold)) = files.recv() {
                    if failed.is_none() {
                        if let Err(reason) = snapshots::save(&snap_dir, &file, &cold) {
                            failed = Some(DiskError::described(reason));
                        }
                        // A snapshot's encoding freed megabytes this idle thread would keep.
                        crate::allocator::collect();
                    }
                    completions(io, failed.clone().map_or(Ok(()), Err));
                }
            })
            .expect("the snapshot thread must start: the node cannot run without it");
        SnapshotWriter {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Queues a snapshot; blocks while one is queued behind the one being written.
    fn submit(&self, io: IoId, file: SnapshotFile, cold: ColdReader) {
        self.queue
            .as_ref()
            .expect("the queue lives until drop")
            .send((io, file, cold))
            .expect("the snapshot thread is gone: it panicked (see its message)");
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Finishes the snapshots already queued: a clean shutdown loses nothing it was given.
        drop(self.queue.take());
        join(self.thread.take());
    }
}

/// The state the disk thread owns.
struct Executor {
    wal: WalWriter,
    snap_dir: PathBuf,
    snapshot_writer: SnapshotWriter,
    /// The first failure. Once set, every operation fails with it: the disk's state is unknown.
    failed: Option<DiskError>,
}

/// The disk thread's loop. Its operations count as queued until their completions are
/// reported, so the submitter never runs an append of its own ahead of them.
fn run_thread(
    executor: &Mutex<Executor>,
    ops: Receiver<Queued>,
    in_thread: &AtomicUsize,
    completions: &Completions,
) {
    loop {
        crate::server::memory::collect_if_asked();
        let Ok(first) = ops.recv() else { return };
        let mut batch = take_batch(first, &ops);
        let taken = batch.len();
        let mut files = executor
            .lock()
            .expect("the submitter panicked holding the files");
        // Local snapshots leave the batch for the snapshot thread, which completes them.
        let mut in_order = Vec::with_capacity(batch.len());
        for (io, op, cold) in batch.drain(..) {
            match op {
                DiskOp::SaveSnapshot { file, .. }
                    if file.may_complete_out_of_order() && files.failed.is_none() =>
                {
                    files.snapshot_writer.submit(io, file, cold);
                }
                op => in_order.push((io, op, cold)),
            }
        }
        let result = files.execute_batch(&in_order);
        drop(files);
        for (io, _, _) in in_order {
            completions(io, result.clone());
        }
        in_thread.fetch_sub(taken, Ordering::AcqRel);
    }
}

impl Executor {
    /// A batch succeeds or fails as a whole: after a failed write or sync, which of its
    /// operations reached the disk is unknown, and the node stops at the first error anyway.
    fn execute_batch(&mut self, batch: &[Queued]) -> Result<(), DiskError> {
        if self.failed.is_none() {
            if let Err(reason) = self.write_batch(batch) {
                self.failed = Some(DiskError::described(reason));
            }
        }
        self.failed.clone().map_or(Ok(()), Err)
    }

    fn write_batch(&mut self, batch: &[Queued]) -> Result<(), String> {
        let mut sync_owed = false;
        for (_, op, cold) in batch {
            match op {
                DiskOp::AppendWal { data, sync } => {
                    self.wal.append(data)?;
                    sync_owed |= *sync;
                }
                DiskOp::SaveSnapshot { file, .. } => {
                    self.settle(&mut sync_owed)?;
                    snapshots::save(&self.snap_dir, file, cold)?;
                }
                DiskOp::Release {
                    wal_before_offset,
                    snapshots_before_index,
                } => {
                    self.settle(&mut sync_owed)?;
                    self.wal.release_before(*wal_before_offset)?;
                    snapshots::release_before(&self.snap_dir, *snapshots_before_index)?;
                }
            }
        }
        self.settle(&mut sync_owed)
    }

    /// Issues the sync the batch owes so far. Called before snapshot saves and releases, so
    /// those never overtake the durability of appends submitted before them.
    fn settle(&mut self, sync_owed: &mut bool) -> Result<(), String> {
        if std::mem::take(sync_owed) {
            self.wal.sync()?;
        }
        Ok(())
    }
}

/// `first` and every operation already queued behind it, within the batch bounds.
fn take_batch(first: Queued, ops: &Receiver<Queued>) -> Vec<Queued> {
    let mut bytes = append_bytes(&first.1);
    let mut batch = vec![first];
    while batch.len() < BATCH_OPS_MAX && bytes < BATCH_BYTES_MAX {
        let Ok(next) = ops.try_recv() else { break };
        bytes += append_bytes(&next.1);
        batch.push(next);
    }
    batch
}

fn append_bytes(op: &DiskOp) -> u64 {
    match op {
        DiskOp::AppendWal { data, .. } => data.len() as u64,
        _ => 0,
    }
}
