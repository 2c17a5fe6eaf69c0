//! Snapshot files: written atomically, deleted when released.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use super::files::{list_numbered, snapshot_name, sync_dir, Context, PacedFile, SNAP_EXT};
use crate::mvcc::ColdRead;
use crate::node::SnapshotFile;

/// Writing buffer: big enough that a snapshot costs few syscalls, small next to the snapshot.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Writes `<index>.snap` so that it exists whole or not at all: write a temporary file, sync it,
/// rename it into place, sync the directory. Load removes a temporary file left by a crash. The
/// file is encoded as it is written, so it is never whole in memory.
pub(super) fn save(
    snap_dir: &Path,
    snapshot: &SnapshotFile,
    cold: &dyn ColdRead,
) -> Result<(), String> {
    let index = snapshot.index();
    let path = snap_dir.join(snapshot_name(index));
    let tmp = snap_dir.join(format!("{}.tmp", snapshot_name(index)));
    let mut file = File::create(&tmp).context("cannot create", &tmp)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, PacedFile::new(&mut file));
    snapshot
        .write_to(&mut out, cold)
        .context("cannot write", &tmp)?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write", &tmp)?;
    file.sync_all().context("cannot sync", &tmp)?;
    fs::rename(&tmp, &path).context("cannot rename snapshot to", &path)?;
    sync_dir(snap_dir)
}

/// Deletes the snapshot files with an index below `before_index`.
pub(super) fn release_before(snap_dir: &Path, before_index: u64) -> Result<(), String> {
    let mut removed = false;
    for (index, path) in list_numbered(snap_dir, SNAP_EXT)? {
        if index < before_index {
            fs::remove_file(&path).context("cannot remove released snapshot", &path)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(snap_dir)?;
    }
    Ok(())
}
