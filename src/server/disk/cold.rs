//! Cold segment files (`mvcc::cold`): the values of superseded revisions, out of memory.
//!
//! ```text
//! <data-dir>/member/cold/<segment>.cold   one segment; <segment> = 16 lowercase hex digits
//! ```
//! Segments are a cache of what the snapshot and WAL already hold, so they are never synced and
//! every start deletes them: the node rebuilds them as it loads. The driver's thread applies the
//! node's `Output::Cold` operations as they come out (writes land in the page cache; no sync);
//! anyone who needs cold values later takes a [`ColdReader`] first, which pins the segments open
//! as they are at that moment, so a release that follows does not pull a file from under it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::files::Context;
use crate::mvcc::{ColdOp, ColdRead, ColdRef};

const COLD_EXT: &str = "cold";

/// The segment files of a running member, owned by the driver.
#[derive(Debug)]
pub struct ColdFiles {
    dir: PathBuf,
    segments: BTreeMap<u64, Arc<File>>,
}

/// Segments pinned as they were when it was taken; reads cold values from any thread.
#[derive(Clone, Debug, Default)]
pub struct ColdReader {
    segments: BTreeMap<u64, Arc<File>>,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.{COLD_EXT}"))
}

impl ColdFiles {
    /// Creates `member/cold` under `data_dir` if missing and deletes what an earlier run left
    /// in it.
    pub fn open(data_dir: &Path) -> Result<ColdFiles, String> {
        let dir = data_dir.join("member").join("cold");
        fs::create_dir_all(&dir).context("cannot create", &dir)?;
        for entry in fs::read_dir(&dir).context("cannot list", &dir)? {
            let path = entry.context("cannot list", &dir)?.path();
            fs::remove_file(&path).context("cannot remove stale cold segment", &path)?;
        }
        Ok(ColdFiles {
            dir,
            segments: BTreeMap::new(),
        })
    }

    /// Carries out one operation. An error means the member must stop: values it moved out
    /// of memory could not be kept.
    pub fn apply(&mut self, op: &ColdOp) -> Result<(), String> {
        match op {
            ColdOp::Write {
                segment,
                offset,
                data,
            } => {
                let path = segment_path(&self.dir, *segment);
                let file = match self.segments.get(segment) {
                    Some(file) => file,
                    None => {
                        let file = OpenOptions::new()
                            .read(true)
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .open(&path)
                            .context("cannot create cold segment", &path)?;
                        self.segments.entry(*segment).or_insert(Arc::new(file))
                    }
                };
                file.write_all_at(data, *offset)
                    .context("cannot write cold segment", &path)
            }
            ColdOp::Release { segment } => {
                let path = segment_path(&self.dir, *segment);
                if self.segments.remove(segment).is_some() {
                    fs::remove_file(&path).context("cannot remove cold segment", &path)?;
                }
                Ok(())
            }
        }
    }

    /// A reader of the segments as they are now.
    pub fn reader(&self) -> ColdReader {
        ColdReader {
            segments: self.segments.clone(),
        }
    }
}

impl ColdRead for ColdReader {
    fn read_cold(&self, at: ColdRef) -> io::Result<Bytes> {
        let file = self
            .segments
            .get(&at.segment)
            .ok_or_else(|| at.segment_missing())?;
        let mut value = vec![0; at.len as usize];
        file.read_exact_at(&mut value, at.offset)?;
        Ok(Bytes::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_and_a_pinned_reader_outlives_the_release() {
        let dir = std::env::temp_dir().join(format!("detcd-cold-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("member/cold")).unwrap();
        fs::write(dir.join("member/cold/stale.cold"), b"old run").unwrap();

        let mut cold = ColdFiles::open(&dir).unwrap();
        assert_eq!(fs::read_dir(dir.join("member/cold")).unwrap().count(), 0);
        cold.apply(&ColdOp::Write {
            segment: 3,
            offset: 0,
            data: Bytes::from_static(b"hello"),
        })
        .unwrap();
        cold.apply(&ColdOp::Write {
            segment: 3,
            offset: 5,
            data: Bytes::from_static(b"world"),
        })
        .unwrap();
        let at = ColdRef {
            segment: 3,
            offset: 5,
            len: 5,
        };
        let pinned = cold.reader();
        cold.apply(&ColdOp::Release { segment: 3 }).unwrap();
        assert!(!segment_path(&dir.join("member/cold"), 3).exists());
        assert_eq!(pinned.read_cold(at).unwrap(), Bytes::from_static(b"world"));
        assert!(cold.reader().read_cold(at).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
