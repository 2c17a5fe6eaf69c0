//! Opening the data directory at start: read every WAL segment and snapshot, check that the
//! segments chain, zero a torn tail, and hand the bytes to `wal::recover`.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::files::{
    create_zeroed, install_spare, list_numbered, remove_tmp_files, sync_dir, write_zeros, Context,
    SNAP_EXT, SPARE_NAME, WAL_EXT,
};
use super::{DiskFiles, DiskOptions, DiskSetupError, Loaded};
use crate::wal::{self, DiskImage};

/// Finds the length of the valid prefix of one segment's bytes. Production uses the WAL decoder;
/// tests of the file handling use their own framing so they do not depend on the WAL format.
pub(super) type ValidLen = fn(u64, &[u8]) -> Result<u64, String>;

/// Opens (creating if needed) the data directory with default options. See [`load_with`].
pub fn load(data_dir: &Path) -> Result<Loaded, DiskSetupError> {
    load_with(data_dir, DiskOptions::default())
}

/// Opens (creating if needed) the data directory, recovers the node's state from it and returns
/// the files positioned for the next append. A torn tail of the last segment is zeroed on disk;
/// anything else that does not decode is an error.
pub fn load_with(data_dir: &Path, options: DiskOptions) -> Result<Loaded, DiskSetupError> {
    let (image, files, torn_tail_bytes) = scan(data_dir, options, wal_valid_len)?;
    let mut recovered = wal::recover(&image).map_err(|e| {
        DiskSetupError::Corrupt(format!(
            "recovery from {} failed: {e:?}",
            data_dir.display()
        ))
    })?;
    // The node computes every later offset from this; if it disagreed with where the next
    // append lands, releases would delete the wrong segments.
    if recovered.wal_end_offset != files.wal_end_offset() {
        return Err(DiskSetupError::Corrupt(format!(
            "recovery ends the WAL at offset {} but its segments end at offset {} (in {})",
            recovered.wal_end_offset,
            files.wal_end_offset(),
            files.current_path.display()
        )));
    }
    // Recovery saw only the valid prefix; the torn bytes were found (and zeroed) here.
    recovered.torn_tail_bytes = recovered.torn_tail_bytes.max(torn_tail_bytes);
    Ok(Loaded { recovered, files })
}

fn wal_valid_len(start_offset: u64, bytes: &[u8]) -> Result<u64, String> {
    wal::decode_wal(start_offset, bytes)
        .map(|decoded| decoded.valid_len as u64)
        .map_err(|e| format!("{e:?}"))
}

/// Everything `load_with` does except recovery: the bytes recovery needs, the open files, and
/// how many non-zero bytes of a torn tail were zeroed.
pub(super) fn scan(
    data_dir: &Path,
    options: DiskOptions,
    valid_len: ValidLen,
) -> Result<(DiskImage, DiskFiles, u64), DiskSetupError> {
    let (wal_dir, snap_dir) = prepare_dirs(data_dir, options.wal_dir.as_deref())?;
    let snapshots = read_snapshots(&snap_dir)?;
    let mut segments = list_numbered(&wal_dir, WAL_EXT).map_err(DiskSetupError::Io)?;
    if segments.is_empty() {
        if !snapshots.is_empty() {
            return Err(DiskSetupError::Corrupt(format!(
                "{} holds snapshots but {} holds no WAL segment: the WAL (term, vote, entries) is lost",
                snap_dir.display(),
                wal_dir.display()
            )));
        }
        segments.push((0, create_first_segment(&wal_dir, options.segment_bytes)?));
    }
    let (wal, last) = read_chain(&segments, valid_len)?;
    let torn_tail_bytes = last.bytes[last.valid..].iter().filter(|b| **b != 0).count() as u64;
    let files = open_last_segment(wal_dir, snap_dir, options, &segments, last)?;
    let image = DiskImage {
        wal_start_offset: segments[0].0,
        wal,
        snapshots,
    };
    Ok((image, files, torn_tail_bytes))
}

/// Creates `member/wal` (or `wal_dir`) and `member/snap` if missing and removes half-written
/// temporary files.
fn prepare_dirs(
    data_dir: &Path,
    wal_dir: Option<&Path>,
) -> Result<(PathBuf, PathBuf), DiskSetupError> {
    let io = DiskSetupError::Io;
    let data_dir_existed = match fs::metadata(data_dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(io(format!("{} is not a directory", data_dir.display())))
        }
        Ok(_) => true,
        Err(_) => false,
    };
    let member = data_dir.join("member");
    let default_wal_dir = member.join("wal");
    let wal_dir = wal_dir.map_or_else(|| default_wal_dir.clone(), Path::to_path_buf);
    let snap_dir = member.join("snap");
    check_wal_dir_moved(&member, &wal_dir, &default_wal_dir)?;
    for dir in [&wal_dir, &snap_dir] {
        fs::create_dir_all(dir)
            .context("cannot create", dir)
            .map_err(io)?;
    }
    // A directory entry is durable only once its parent is synced; a WAL in a directory that
    // vanishes in a crash would forget votes already cast.
    sync_dir(&member).map_err(io)?;
    if let Some(parent) = wal_dir.parent().filter(|p| *p != member) {
        sync_dir(parent).map_err(io)?;
    }
    sync_dir(data_dir).map_err(io)?;
    if !data_dir_existed {
        let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or(Path::new("."))).map_err(io)?;
    }
    remove_tmp_files(&wal_dir).map_err(io)?;
    remove_tmp_files(&snap_dir).map_err(io)?;
    Ok((wal_dir, snap_dir))
}

/// A member's WAL must be where it was: a member started with `--wal-dir` and then without it
/// (or the other way round) would otherwise start over from an empty log beside its snapshots,
/// as a new member under the old one's name.
fn check_wal_dir_moved(
    member: &Path,
    wal_dir: &Path,
    default_wal_dir: &Path,
) -> Result<(), DiskSetupError> {
    let moved = |why: String| Err(DiskSetupError::Corrupt(why));
    if member.exists() && !wal_dir.exists() {
        return moved(format!(
            "{} exists but its WAL directory {} does not: the WAL is elsewhere (--wal-dir) or lost",
            member.display(),
            wal_dir.display()
        ));
    }
    let left_behind = wal_dir != default_wal_dir
        && !list_numbered(default_wal_dir, WAL_EXT)
            .unwrap_or_default()
            .is_empty();
    if left_behind {
        return moved(format!(
            "{} holds WAL segments but --wal-dir names {}",
            default_wal_dir.display(),
            wal_dir.display()
        ));
    }
    Ok(())
}

/// Every snapshot file's bytes, by ascending index. Recovery picks the one the WAL vouches for.
fn read_snapshots(snap_dir: &Path) -> Result<Vec<Vec<u8>>, DiskSetupError> {
    let files = list_numbered(snap_dir, SNAP_EXT).map_err(DiskSetupError::Io)?;
    files
        .iter()
        .map(|(_, path)| fs::read(path).context("cannot read", path))
        .collect::<Result<_, _>>()
        .map_err(DiskSetupError::Io)
}

fn create_first_segment(wal_dir: &Path, segment_bytes: u64) -> Result<PathBuf, DiskSetupError> {
    create_zeroed(&wal_dir.join(SPARE_NAME), segment_bytes).map_err(DiskSetupError::Io)?;
    install_spare(wal_dir, 0).map_err(DiskSetupError::Io)
}

/// The last segment as read at load: its whole bytes and the length of their valid prefix.
struct LastSegment {
    bytes: Vec<u8>,
    valid: usize,
}

/// Concatenates the valid prefixes of all segments, checking that each one ends exactly where
/// the next begins: a gap or an overlap means records were lost or corrupted.
fn read_chain(
    segments: &[(u64, PathBuf)],
    valid_len: ValidLen,
) -> Result<(Vec<u8>, LastSegment), DiskSetupError> {
    let mut wal = Vec::new();
    for (i, (start, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path)
            .context("cannot read", path)
            .map_err(DiskSetupError::Io)?;
        let valid = valid_len(*start, &bytes)
            .map_err(|e| DiskSetupError::Corrupt(format!("{}: {e}", path.display())))?;
        assert!(
            valid <= bytes.len() as u64,
            "decoder claims more than it read"
        );
        let valid = valid as usize;
        match segments.get(i + 1) {
            Some((next_start, next_path)) if start + valid as u64 != *next_start => {
                return Err(DiskSetupError::Corrupt(format!(
                    "{} holds valid WAL records up to offset {}, but the next segment {} starts at \
                     offset {next_start}: the records between are corrupt or lost",
                    path.display(),
                    start + valid as u64,
                    next_path.display()
                )));
            }
            Some(_) => wal.extend_from_slice(&bytes[..valid]),
            None => {
                wal.extend_from_slice(&bytes[..valid]);
                return Ok((wal, LastSegment { bytes, valid }));
            }
        }
    }
    unreachable!("scan always has at least one segment")
}

/// Opens the last segment for appending at its valid end, first zeroing whatever a torn write
/// left after it.
fn open_last_segment(
    wal_dir: PathBuf,
    snap_dir: PathBuf,
    options: DiskOptions,
    segments: &[(u64, PathBuf)],
    last: LastSegment,
) -> Result<DiskFiles, DiskSetupError> {
    let io = DiskSetupError::Io;
    let path = segments.last().expect("at least one segment").1.clone();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .context("cannot open", &path)
        .map_err(io)?;
    let valid = last.valid as u64;
    if let Some(stale) = last.bytes[last.valid..].iter().rposition(|b| *b != 0) {
        write_zeros(&mut file, valid, valid + stale as u64 + 1)
            .and_then(|()| file.sync_data())
            .context("cannot zero the torn tail of", &path)
            .map_err(io)?;
    }
    file.seek(SeekFrom::Start(valid))
        .context("cannot seek in", &path)
        .map_err(io)?;
    Ok(DiskFiles {
        wal_dir,
        snap_dir,
        options,
        segment_starts: segments.iter().map(|(start, _)| *start).collect(),
        current: file,
        current_path: path,
        current_write_pos: valid,
        current_capacity: last.bytes.len() as u64,
    })
}
