//! Snapshot files: written atomically, deleted when released.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::files::{list_numbered, snapshot_name, sync_dir, Context, SNAP_EXT};

/// Writes `<index>.snap` so that it exists whole or not at all: write a temporary file, sync it,
/// rename it into place, sync the directory. Load removes a temporary file left by a crash.
pub(super) fn save(snap_dir: &Path, index: u64, bytes: &[u8]) -> Result<(), String> {
    let path = snap_dir.join(snapshot_name(index));
    let tmp = snap_dir.join(format!("{}.tmp", snapshot_name(index)));
    let mut file = File::create(&tmp).context("cannot create", &tmp)?;
    file.write_all(bytes).context("cannot write", &tmp)?;
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
