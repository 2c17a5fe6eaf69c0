//! File names and the small file-system steps everything else is built from: naming and listing
//! segments and snapshots, syncing directories, writing zeros. Errors become strings that name
//! the file, because that is what an operator needs to read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) const WAL_EXT: &str = "wal";
pub(super) const SNAP_EXT: &str = "snap";
/// The next segment, preallocated ahead of time; renamed to its `<start>.wal` name when needed.
pub(super) const SPARE_NAME: &str = "spare.wal.tmp";

/// Writing zeros in chunks bounds the memory a preallocation needs.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// Adds the operation and the file to an I/O error.
pub(super) trait Context<T> {
    fn context(self, what: &str, path: &Path) -> Result<T, String>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: &str, path: &Path) -> Result<T, String> {
        self.map_err(|e| format!("{what} {}: {e}", path.display()))
    }
}

pub(super) fn segment_name(start: u64) -> String {
    format!("{start:016x}.{WAL_EXT}")
}

pub(super) fn snapshot_name(index: u64) -> String {
    format!("{index:016x}.{SNAP_EXT}")
}

/// The number in a `<16 hex digits>.<ext>` name. Only the exact spelling we write counts, so a
/// file like `0x1.wal` or `ABC.wal` is never mistaken for ours.
fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 16 {
        return None;
    }
    let n = u64::from_str_radix(stem, 16).ok()?;
    (format!("{n:016x}") == stem).then_some(n)
}

/// The `(number, path)` of every `<16 hex>.<ext>` file in `dir`, ascending.
pub(super) fn list_numbered(dir: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>, String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).context("cannot list", dir)? {
        let entry = entry.context("cannot list", dir)?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| parse_name(s, ext)) {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes files a crash left half written (`*.tmp`); they were never part of the durable state.
pub(super) fn remove_tmp_files(dir: &Path) -> Result<(), String> {
    let mut removed = false;
    for entry in fs::read_dir(dir).context("cannot list", dir)? {
        let path = entry.context("cannot list", dir)?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path).context("cannot remove", &path)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the directory's entries (creations, renames, deletions) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("cannot sync directory", dir)
}

/// Writes zeros over `[from, to)` of `file`, leaving the cursor at `to`.
pub(super) fn write_zeros(file: &mut File, from: u64, to: u64) -> io::Result<()> {
    write_zeros_to(PacedFile::new(file), from, to)
}

fn write_zeros_to(mut out: PacedFile<'_>, from: u64, to: u64) -> io::Result<()> {
    let chunk = usize::try_from(to - from).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
    let zeros = vec![0u8; chunk];
    out.seek(SeekFrom::Start(from))?;
    let mut left = to - from;
    while left > 0 {
        let n = left.min(zeros.len() as u64);
        out.write_all(&zeros[..n as usize])?;
        left -= n;
    }
    Ok(())
}

/// Large writes (snapshots, preallocated segments) reach the disk every this many bytes.
const PACED_SYNC_BYTES: u64 = 1024 * 1024;

/// A file written in large volume beside the WAL: it syncs its data every [`PACED_SYNC_BYTES`]
/// so that the dirty pages never pile up. Otherwise the final sync writes back tens of megabytes
/// at once, and the WAL's `fdatasync`s on the same disk wait behind it (commit latency spikes).
pub(super) struct PacedFile<'f> {
    file: &'f mut File,
    unsynced: u64,
    /// Rest after each sync, for background work: the disk then serves the WAL's syncs between
    /// our bursts instead of queueing them behind a stream of writes.
    rest: Duration,
}

/// The rest a background writer takes after each synced MiB: caps it near 50 MiB/s, so a 64 MiB
/// spare segment takes over a second. Snapshots do not rest: while one is written its view of
/// the key space is alive, and every index node the node changes meanwhile is copied.
const BACKGROUND_REST: Duration = Duration::from_millis(20);

impl<'f> PacedFile<'f> {
    pub(super) fn new(file: &'f mut File) -> PacedFile<'f> {
        PacedFile {
            file,
            unsynced: 0,
            rest: Duration::ZERO,
        }
    }

    /// A writer that also rests after each sync.
    pub(super) fn background(file: &'f mut File) -> PacedFile<'f> {
        PacedFile {
            rest: BACKGROUND_REST,
            ..PacedFile::new(file)
        }
    }
}

impl Write for PacedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= PACED_SYNC_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
            if !self.rest.is_zero() {
                std::thread::sleep(self.rest);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PacedFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Lowers the calling thread's CPU priority (nice 10): for threads doing bulk background work
/// (encoding a snapshot, zeroing a segment, fanning out watch events), which must not delay the
/// node, disk or network threads on a machine with few cores. Best effort: a failure leaves the priority as it was.
#[allow(unsafe_code)] // one libc call that takes no pointers
pub(crate) fn lower_thread_priority() {
    // SAFETY: setpriority reads no memory of ours; on Linux, PRIO_PROCESS with `who` 0 means
    // the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Creates (or replaces) `path` as `len` bytes of zeros, synced data and size.
pub(super) fn create_zeroed(path: &Path, len: u64) -> Result<File, String> {
    let mut file = open_truncated(path)?;
    write_zeros(&mut file, 0, len).context("cannot preallocate", path)?;
    file.sync_all().context("cannot sync", path)?;
    Ok(file)
}

fn open_truncated(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .context("cannot create", path)
}

/// [`create_zeroed`] for a background thread: slower, gentler on the disk.
pub(super) fn create_zeroed_in_background(path: &Path, len: u64) -> Result<File, String> {
    let mut file = open_truncated(path)?;
    write_zeros_to(PacedFile::background(&mut file), 0, len).context("cannot preallocate", path)?;
    file.sync_all().context("cannot sync", path)?;
    Ok(file)
}

/// Extends `file` with zeros from `len` to `new_len` and syncs the new size.
pub(super) fn grow_zeroed(
    file: &mut File,
    path: &Path,
    len: u64,
    new_len: u64,
) -> Result<(), String> {
    write_zeros(file, len, new_len).context("cannot grow", path)?;
    file.sync_all().context("cannot sync", path)
}

/// Gives the preallocated spare segment its final name, `<start>.wal`, durably: from here on it
/// is part of the WAL chain.
pub(super) fn install_spare(wal_dir: &Path, start: u64) -> Result<PathBuf, String> {
    let spare = wal_dir.join(SPARE_NAME);
    let path = wal_dir.join(segment_name(start));
    fs::rename(&spare, &path).context("cannot rename spare segment to", &path)?;
    sync_dir(wal_dir)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(segment_name(0x1f), "000000000000001f.wal");
        assert_eq!(parse_name("000000000000001f.wal", WAL_EXT), Some(0x1f));
        assert_eq!(parse_name(&snapshot_name(7), SNAP_EXT), Some(7));
        for foreign in [
            "000000000000001F.wal",
            "+00000000000001f.wal",
            "00000000000001f.wal",
            "000000000000001f.wal.tmp",
            "000000000000001f.snap",
            "spare.wal.tmp",
        ] {
            assert_eq!(parse_name(foreign, WAL_EXT), None, "{foreign}");
        }
    }
}
