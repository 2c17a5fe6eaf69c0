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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::files::Context;
use crate::mvcc::{ColdOp, ColdRead, ColdRef};

const COLD_EXT: &str = "cold";

/// A read of the past over many keys reads each of their cold values apart: without this, each
/// such `pread` also checks whether the file's access time is due an update (a few percent of
/// the read's time). Nobody needs a cache's access time.
#[cfg(target_os = "linux")]
const NO_ATIME: i32 = libc::O_NOATIME;
#[cfg(not(target_os = "linux"))]
const NO_ATIME: i32 = 0;

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
                            .custom_flags(NO_ATIME)
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

/// Values read together: at most this far apart in their segment (what lies between is read
/// and dropped). A page: each `pread` costs a page-cache lookup and a system call, more than
/// copying a page's worth of bytes nobody asked for (a history read of 100,000 keys whose
/// values lie among as many unwanted ones: 4% faster than with 512 bytes, slower again with
/// 16 KiB).
const SPAN_GAP_MAX: u64 = 4096;
/// ... and at most this many bytes in one read.
const SPAN_BYTES_MAX: u64 = 1 << 20;

impl ColdReader {
    fn segment(&self, at: ColdRef) -> io::Result<&File> {
        self.segments
            .get(&at.segment)
            .map(|file| &**file)
            .ok_or_else(|| at.segment_missing())
    }
}

impl ColdRead for ColdReader {
    fn read_cold(&self, at: ColdRef) -> io::Result<Bytes> {
        let mut value = vec![0; at.len as usize];
        self.segment(at)?.read_exact_at(&mut value, at.offset)?;
        Ok(Bytes::from(value))
    }

    /// Values packed into one buffer of exactly their total size, each a slice of it.
    fn read_cold_many(&self, at: &[ColdRef]) -> io::Result<Vec<Bytes>> {
        let mut starts = Vec::with_capacity(at.len());
        let mut total = 0;
        for value in at {
            starts.push((*value, total));
            total += value.len as usize;
        }
        let mut buffer = vec![0; total];
        self.read_cold_into(&starts, &mut buffer)?;
        let buffer = Bytes::from(buffer);
        Ok(starts
            .into_iter()
            .map(|(value, from)| buffer.slice(from..from + value.len as usize))
            .collect())
    }

    /// A read of the past over many keys wants many values that were superseded close
    /// together: sorted by place, neighbours come in one read (one system call per span
    /// instead of per value) into a scratch buffer reused from span to span, and each value is
    /// copied to its place from there, so what lay between them is never kept. A value with
    /// no neighbour close enough (values superseded in random order) is read straight into its
    /// place: a copy less per value.
    fn read_cold_into(&self, at: &[(ColdRef, usize)], out: &mut [u8]) -> io::Result<()> {
        let mut by_place: Vec<(u64, u64, usize)> = at
            .iter()
            .enumerate()
            .map(|(i, (value, _))| (value.segment, value.offset, i))
            .collect();
        by_place.sort_unstable();
        let mut scratch = Vec::new();
        let mut start = 0;
        while start < by_place.len() {
            let (stop, end) = span_of(&by_place, at, start);
            let (first, position) = at[by_place[start].2];
            if stop == start + 1 {
                self.segment(first)?
                    .read_exact_at(place_of(out, first, position)?, first.offset)?;
                start = stop;
                continue;
            }
            let len = (end - first.offset) as usize;
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            self.segment(first)?
                .read_exact_at(&mut scratch[..len], first.offset)?;
            for &(_, offset, i) in &by_place[start..stop] {
                let (value, position) = at[i];
                let within = (offset - first.offset) as usize;
                place_of(out, value, position)?
                    .copy_from_slice(&scratch[within..within + value.len as usize]);
            }
            start = stop;
        }
        Ok(())
    }
}

/// Where the value `at` goes in `out`.
fn place_of(out: &mut [u8], at: ColdRef, position: usize) -> io::Result<&mut [u8]> {
    out.get_mut(position..position + at.len as usize)
        .ok_or_else(|| io::Error::other("a cold value's place is past the buffer"))
}

/// The span that starts at `by_place[start]`: the index after its last value, and where it
/// ends in its segment.
fn span_of(by_place: &[(u64, u64, usize)], at: &[(ColdRef, usize)], start: usize) -> (usize, u64) {
    let first = at[by_place[start].2].0;
    let mut end = first.offset + u64::from(first.len);
    let mut stop = start + 1;
    while let Some(&(_, _, i)) = by_place.get(stop) {
        let next = at[i].0;
        let next_end = next.offset + u64::from(next.len);
        if next.segment != first.segment
            || next.offset > end + SPAN_GAP_MAX
            || next_end - first.offset > SPAN_BYTES_MAX
        {
            break;
        }
        end = end.max(next_end);
        stop += 1;
    }
    (stop, end)
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

    #[test]
    fn many_values_read_together_are_the_values_read_one_by_one() {
        let dir = std::env::temp_dir().join(format!("detcd-cold-many-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("member/cold")).unwrap();
        let mut cold = ColdFiles::open(&dir).unwrap();
        // Two segments of values of 0..40 bytes, some far apart, one span-sized.
        let mut all = Vec::new();
        for segment in [1u64, 2] {
            let mut offset = 0u64;
            for n in 0..200u32 {
                let len = if n == 77 { 1 << 20 } else { n % 40 };
                let data = Bytes::from(vec![(n % 251) as u8; len as usize]);
                cold.apply(&ColdOp::Write {
                    segment,
                    offset,
                    data,
                })
                .unwrap();
                all.push(ColdRef {
                    segment,
                    offset,
                    len,
                });
                offset += u64::from(len) + if n % 9 == 0 { 2000 } else { 3 };
            }
        }
        let reader = cold.reader();
        // Every third value, asked out of place order, one of them twice.
        let mut asked: Vec<ColdRef> = all.iter().copied().step_by(3).rev().collect();
        asked.push(all[30]);
        asked.push(all[77]);
        let together = reader.read_cold_many(&asked).unwrap();
        let alone: Vec<Bytes> = asked
            .iter()
            .map(|&at| reader.read_cold(at).unwrap())
            .collect();
        assert_eq!(together, alone);
        // Into places of a buffer that are in no order of theirs, with room between them.
        let mut places = Vec::new();
        let mut end = 3;
        for &at in asked.iter().rev() {
            places.push((at, end));
            end += at.len as usize + 2;
        }
        let mut out = vec![0xEE; end];
        reader.read_cold_into(&places, &mut out).unwrap();
        for (&(at, place), value) in places.iter().zip(alone.iter().rev()) {
            assert_eq!(&out[place..place + at.len as usize], &value[..]);
            assert_eq!(out[place + at.len as usize..][..2], [0xEE, 0xEE]);
        }
        assert!(reader.read_cold_into(&places, &mut out[..end - 3]).is_err());
        let missing = ColdRef {
            segment: 9,
            offset: 0,
            len: 1,
        };
        assert!(reader.read_cold_many(&[asked[0], missing]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
