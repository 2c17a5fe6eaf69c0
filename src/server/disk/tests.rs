//! Tests of the file handling. Most treat WAL bytes as opaque and find a segment's valid prefix
//! with a small framing of their own (`frame` / `test_valid_len`), so they hold whatever the WAL
//! format becomes. The `real_wal_*` tests go through `wal::encode_record` and `wal::recover`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use bytes::Bytes;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use super::load::scan;
use super::*;
use crate::mvcc::{KeySpace, NoColdValues};
use crate::node::{DiskError, DiskOp, IoId, SnapshotFile};
use crate::proto::etcdserverpb::PutRequest;
use crate::state::State;
use crate::wal::DiskImage;

/// A unique directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "detcd-disk-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn small(segment_bytes: u64) -> DiskOptions {
    DiskOptions {
        segment_bytes,
        ..DiskOptions::default()
    }
}

/// Test framing: `[len: u32 LE][crc32c: u32 LE][payload]`, `len > 0`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The valid prefix under the test framing. A bad record followed only by zeros is a torn tail;
/// a bad record with data after it is corruption.
fn test_valid_len(_start_offset: u64, bytes: &[u8]) -> Result<u64, String> {
    let mut pos = 0;
    while let Some(len) = record_len(&bytes[pos..]) {
        pos += len;
    }
    let rest = &bytes[pos..];
    let torn_end = rest.len().min(8 + u32_at(rest, 0).unwrap_or(0) as usize);
    if rest[torn_end..].iter().any(|b| *b != 0) {
        return Err(format!("corrupt record at byte {pos}"));
    }
    Ok(pos as u64)
}

fn record_len(bytes: &[u8]) -> Option<usize> {
    let len = u32_at(bytes, 0)? as usize;
    let payload = bytes.get(8..8 + len)?;
    (len > 0 && crc32c::crc32c(payload) == u32_at(bytes, 4)?).then_some(8 + len)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn scan_dir(dir: &Path, options: DiskOptions) -> Result<(DiskImage, DiskFiles), DiskSetupError> {
    scan(dir, options, test_valid_len).map(|(image, files, _)| (image, files))
}

/// Why scanning `dir` fails (it must).
fn scan_err(dir: &Path) -> DiskSetupError {
    match scan_dir(dir, small(1000)) {
        Ok(_) => panic!("{} loaded, but must not", dir.display()),
        Err(e) => e,
    }
}

type Done = Receiver<(IoId, Result<(), DiskError>)>;

/// An executor on `dir` and the channel its completions arrive on.
fn start(dir: &Path, options: DiskOptions) -> (DiskExecutor, Done) {
    let (_, files) = scan_dir(dir, options).expect("scan");
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let executor = DiskExecutor::spawn(files, move |io, result| {
        tx.lock().unwrap().send((io, result)).unwrap();
    });
    (executor, rx)
}

fn append(data: Vec<u8>, sync: bool) -> DiskOp {
    DiskOp::AppendWal {
        data: Bytes::from(data),
        sync,
    }
}

/// Submits `ops` numbered from 1, shuts the executor down, and returns the completions.
fn run(dir: &Path, options: DiskOptions, ops: Vec<DiskOp>) -> Vec<(IoId, Result<(), DiskError>)> {
    let (executor, done) = start(dir, options);
    for (i, op) in ops.into_iter().enumerate() {
        executor.submit(IoId(i as u64 + 1), op);
    }
    executor.shutdown();
    done.try_iter().collect()
}

fn assert_all_ok(done: &[(IoId, Result<(), DiskError>)], count: usize) {
    assert_eq!(done.len(), count);
    for (i, (io, result)) in done.iter().enumerate() {
        assert_eq!(*io, IoId(i as u64 + 1), "completions in order");
        assert_eq!(*result, Ok(()), "io {}", io.0);
    }
}

fn records(count: usize, payload_bytes: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| frame(&vec![(i % 251) as u8 + 1; payload_bytes]))
        .collect()
}

fn wal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("member/wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_fresh_dir_gets_one_preallocated_segment_at_offset_zero() {
    let dir = TempDir::new("fresh");
    let (image, files) = scan_dir(&dir.0, small(4096)).unwrap();
    assert_eq!((image.wal_start_offset, image.wal.len()), (0, 0));
    assert!(image.snapshots.is_empty());
    assert_eq!(wal_files(&dir.0), ["0000000000000000.wal"]);
    assert_eq!(fs::metadata(&files.current_path).unwrap().len(), 4096);
    assert_eq!(files.wal_end_offset(), 0);
}

#[test]
fn a_wal_dir_of_its_own_is_used_and_a_moved_wal_is_refused() {
    let dir = TempDir::new("wal-dir");
    let elsewhere = dir.0.join("elsewhere");
    let with_wal_dir = || DiskOptions {
        wal_dir: Some(elsewhere.clone()),
        ..small(4096)
    };
    let data = dir.0.join("data");
    scan_dir(&data, with_wal_dir()).unwrap();
    assert!(elsewhere.join("0000000000000000.wal").exists());
    assert!(!data.join("member/wal").exists());
    let refused = |options| match scan_dir(&data, options) {
        Err(DiskSetupError::Corrupt(why)) => why,
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(refused(small(4096)).contains("the WAL is elsewhere (--wal-dir) or lost"));

    // The other way round: a WAL left in the data dir while --wal-dir names another.
    let plain = dir.0.join("plain");
    scan_dir(&plain, small(4096)).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    let why = match scan_dir(&plain, with_wal_dir()) {
        Err(DiskSetupError::Corrupt(why)) => why,
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(
        why.contains("holds WAL segments but --wal-dir names"),
        "{why}"
    );
}

#[test]
fn synced_appends_reload_through_the_zero_filled_preallocated_tail() {
    let dir = TempDir::new("reload");
    let recs = records(10, 100);
    let ops = recs.iter().map(|r| append(r.clone(), true)).collect();
    assert_all_ok(&run(&dir.0, small(1 << 20), ops), 10);
    let seg = dir.0.join("member/wal/0000000000000000.wal");
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        1 << 20,
        "zeros after the records"
    );

    let (image, files) = scan_dir(&dir.0, small(1 << 20)).unwrap();
    assert_eq!(image.wal, recs.concat());
    assert_eq!(files.wal_end_offset(), recs.concat().len() as u64);
}

#[test]
fn appends_rotate_across_segments_and_reload_as_one_stream() {
    let dir = TempDir::new("rotate");
    let recs = records(20, 200); // 208 bytes each, 4 per 1000-byte segment
    let ops = recs.iter().map(|r| append(r.clone(), false)).collect();
    assert_all_ok(&run(&dir.0, small(1000), ops), 20);

    let names = wal_files(&dir.0);
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(names[1], segment_name_of(4 * 208));
    let (image, files) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(image.wal, recs.concat());
    assert_eq!(files.segment_starts, [0, 832, 1664, 2496, 3328]);
    assert_eq!(files.wal_end_offset(), 20 * 208);
    assert!(
        !dir.0.join("member/wal/spare.wal.tmp").exists(),
        "load drops the spare"
    );
}

fn segment_name_of(start: u64) -> String {
    super::files::segment_name(start)
}

#[test]
fn an_append_larger_than_a_segment_gets_a_grown_segment_of_its_own() {
    let dir = TempDir::new("big");
    let (small_rec, big) = (frame(b"small"), frame(&[7; 3000]));
    let ops = vec![
        append(big.clone(), true), // the empty first segment grows in place
        append(small_rec.clone(), true),
        append(big.clone(), true), // a new segment, grown
        append(small_rec.clone(), true),
    ];
    assert_all_ok(&run(&dir.0, small(1000), ops), 4);

    let (image, files) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(
        image.wal,
        [big.clone(), small_rec.clone(), big, small_rec].concat()
    );
    assert_eq!(files.segment_starts, [0, 3008, 3021, 6029]);
}

#[test]
fn reload_continues_appending_where_the_last_run_stopped() {
    let dir = TempDir::new("continue");
    let recs = records(12, 150);
    let (first, second) = recs.split_at(5);
    let ops = |rs: &[Vec<u8>]| rs.iter().map(|r| append(r.clone(), true)).collect();
    assert_all_ok(&run(&dir.0, small(1000), ops(first)), 5);
    assert_all_ok(&run(&dir.0, small(1000), ops(second)), 7);

    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(image.wal, recs.concat());
}

#[test]
fn release_deletes_only_whole_segments_before_the_offset() {
    let dir = TempDir::new("release");
    let recs = records(12, 200); // segments start at 0, 832, 1664
    let mut ops: Vec<DiskOp> = recs.iter().map(|r| append(r.clone(), true)).collect();
    ops.push(DiskOp::Release {
        wal_before_offset: 1663, // inside the second segment: only the first goes
        snapshots_before_index: 0,
    });
    assert_all_ok(&run(&dir.0, small(1000), ops), 13);
    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(image.wal_start_offset, 832);
    assert_eq!(image.wal, recs[4..].concat());

    let release_all = DiskOp::Release {
        wal_before_offset: u64::MAX,
        snapshots_before_index: 0,
    };
    assert_all_ok(&run(&dir.0, small(1000), vec![release_all]), 1);
    assert_eq!(
        wal_files(&dir.0),
        [segment_name_of(1664)],
        "the current one stays"
    );
}

#[test]
fn snapshot_save_is_atomic_and_release_deletes_older_ones() {
    let dir = TempDir::new("snap");
    let save = |index: u64| DiskOp::SaveSnapshot {
        index,
        term: 1,
        file: received_snapshot(index),
    };
    let ops = vec![save(5), save(9), save(12)];
    assert_all_ok(&run(&dir.0, small(1000), ops), 3);
    let mut names: Vec<_> = fs::read_dir(dir.0.join("member/snap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0000000000000005.snap",
            "0000000000000009.snap",
            "000000000000000c.snap"
        ]
    );
    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(
        image.snapshots,
        [5, 9, 12].map(|i| received_snapshot(i).encode(&NoColdValues).unwrap())
    );

    let release = DiskOp::Release {
        wal_before_offset: 0,
        snapshots_before_index: 12,
    };
    assert_all_ok(&run(&dir.0, small(1000), vec![release]), 1);
    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(
        image.snapshots,
        [received_snapshot(12).encode(&NoColdValues).unwrap()]
    );
}

fn received_snapshot(index: u64) -> SnapshotFile {
    let mut snapshot = Snapshot {
        data: Bytes::from(format!("snapshot {index}")),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = 1;
    SnapshotFile::received(&snapshot)
}

fn local_snapshot(index: u64, kv: &KeySpace) -> SnapshotFile {
    let meta = SnapshotMetadata {
        index,
        term: 2,
        ..SnapshotMetadata::default()
    };
    SnapshotFile::local(meta, State::from_key_space(kv.clone()).view())
}

#[test]
fn a_local_snapshot_is_written_beside_the_wal_and_decodes_to_its_view() {
    let dir = TempDir::new("localsnap");
    let (executor, done) = start(&dir.0, small(1000));
    let mut kv = KeySpace::new();
    for i in 0..500u32 {
        kv.put(&PutRequest {
            key: Bytes::from(format!("key{i:04}")),
            value: Bytes::from(vec![i as u8; 100]),
            ..PutRequest::default()
        })
        .unwrap();
    }
    let frozen = kv.clone();
    let file = local_snapshot(40, &kv);
    // The key space moves on after the view was taken; the file holds the view.
    kv.put(&PutRequest {
        key: Bytes::from_static(b"later"),
        value: Bytes::from_static(b"x"),
        ..PutRequest::default()
    })
    .unwrap();
    executor.submit(IoId(1), append(frame(b"a"), true));
    executor.submit(
        IoId(2),
        DiskOp::SaveSnapshot {
            index: 40,
            term: 2,
            file,
        },
    );
    executor.submit(IoId(3), append(frame(b"b"), true));
    executor.shutdown();
    let mut completed: Vec<_> = done.try_iter().collect();
    completed.sort_by_key(|(io, _)| *io);
    assert_eq!(
        completed,
        [(IoId(1), Ok(())), (IoId(2), Ok(())), (IoId(3), Ok(()))]
    );
    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert_eq!(image.snapshots.len(), 1);
    let snapshot = crate::wal::decode_snapshot_file(&image.snapshots[0]).unwrap();
    assert_eq!(snapshot.get_metadata().index, 40);
    assert_eq!(
        State::decode_snapshot(&snapshot.data).unwrap(),
        State::from_key_space(frozen)
    );
}

#[test]
fn a_failed_local_snapshot_reports_the_error() {
    let dir = TempDir::new("localsnapfail");
    let (executor, done) = start(&dir.0, small(1000));
    let snap_dir = dir.0.join("member/snap");
    fs::remove_dir(&snap_dir).unwrap();
    fs::write(&snap_dir, b"not a dir").unwrap();
    let file = local_snapshot(7, &KeySpace::new());
    executor.submit(
        IoId(1),
        DiskOp::SaveSnapshot {
            index: 7,
            term: 2,
            file,
        },
    );
    executor.shutdown();
    let completed: Vec<_> = done.try_iter().collect();
    assert_eq!(completed.len(), 1);
    let DiskError {
        message: reason, ..
    } = completed[0].1.clone().expect_err("the save failed");
    assert!(reason.contains("0000000000000007.snap.tmp"), "{reason}");
}

#[test]
fn a_leftover_snapshot_tmp_file_is_removed_and_never_read() {
    let dir = TempDir::new("snaptmp");
    scan_dir(&dir.0, small(1000)).unwrap();
    let tmp = dir.0.join("member/snap/0000000000000007.snap.tmp");
    fs::write(&tmp, b"half a snapshot").unwrap();
    let (image, _) = scan_dir(&dir.0, small(1000)).unwrap();
    assert!(image.snapshots.is_empty());
    assert!(!tmp.exists());
}

#[test]
fn a_torn_tail_is_truncated_and_zeroed_so_later_appends_reload() {
    let dir = TempDir::new("torn");
    let recs = records(3, 100);
    let ops = recs.iter().map(|r| append(r.clone(), true)).collect();
    assert_all_ok(&run(&dir.0, small(4096), ops), 3);
    // A crash tore the next write: half of a record, then the preallocated zeros.
    let seg = dir.0.join("member/wal/0000000000000000.wal");
    let mut bytes = fs::read(&seg).unwrap();
    let end = recs.concat().len();
    let torn = frame(&[0xab; 300]);
    bytes[end..end + 150].copy_from_slice(&torn[..150]);
    fs::write(&seg, &bytes).unwrap();

    let (image, files) = scan_dir(&dir.0, small(4096)).unwrap();
    assert_eq!(image.wal, recs.concat());
    assert_eq!(files.current_write_pos, end as u64);
    drop(files);
    let on_disk = fs::read(&seg).unwrap();
    assert!(
        on_disk[end..].iter().all(|b| *b == 0),
        "the torn bytes are zeroed"
    );
    assert_eq!(on_disk.len(), 4096, "the preallocation is kept");

    // A shorter record now lands where the torn one began; the stale torn bytes must not follow.
    let next = frame(b"after the crash");
    assert_all_ok(
        &run(&dir.0, small(4096), vec![append(next.clone(), true)]),
        1,
    );
    let (image, _) = scan_dir(&dir.0, small(4096)).unwrap();
    assert_eq!(image.wal, [recs.concat(), next].concat());
}

#[test]
fn a_corrupt_byte_in_an_earlier_segment_fails_load_naming_the_files() {
    let dir = TempDir::new("corrupt");
    let recs = records(10, 200);
    let ops = recs.iter().map(|r| append(r.clone(), true)).collect();
    assert_all_ok(&run(&dir.0, small(1000), ops), 10);
    let first = dir.0.join("member/wal/0000000000000000.wal");
    let mut bytes = fs::read(&first).unwrap();
    bytes[500] ^= 0x40;
    fs::write(&first, &bytes).unwrap();

    let err = scan_err(&dir.0);
    assert!(matches!(err, DiskSetupError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("0000000000000000.wal"), "{err}");
}

#[test]
fn a_truncated_earlier_segment_fails_load_instead_of_skipping_records() {
    let dir = TempDir::new("gap");
    let recs = records(10, 200);
    let ops = recs.iter().map(|r| append(r.clone(), true)).collect();
    assert_all_ok(&run(&dir.0, small(1000), ops), 10);
    // Zero the last record of the first segment: it decodes as a shorter, valid segment.
    let first = dir.0.join("member/wal/0000000000000000.wal");
    let mut bytes = fs::read(&first).unwrap();
    bytes[624..832].fill(0);
    fs::write(&first, &bytes).unwrap();

    let err = scan_err(&dir.0).to_string();
    assert!(err.contains("up to offset 624"), "{err}");
    assert!(
        err.contains("0000000000000340.wal"),
        "names the next segment: {err}"
    );
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let dir = TempDir::new("notadir");
    fs::write(&dir.0, b"a file").unwrap();
    let err = scan_err(&dir.0).to_string();
    assert!(err.contains("is not a directory"), "{err}");
    fs::remove_file(&dir.0).unwrap();
}

#[test]
fn snapshots_without_any_wal_segment_fail_load() {
    let dir = TempDir::new("nowal");
    scan_dir(&dir.0, small(1000)).unwrap();
    fs::remove_file(dir.0.join("member/wal/0000000000000000.wal")).unwrap();
    fs::write(dir.0.join("member/snap/0000000000000001.snap"), b"s").unwrap();
    let err = scan_err(&dir.0).to_string();
    assert!(err.contains("no WAL segment"), "{err}");
}

#[test]
fn after_an_io_error_every_later_operation_fails() {
    let dir = TempDir::new("ioerr");
    let (executor, done) = start(&dir.0, small(1000));
    // A file where the snap dir was: creating the snapshot fails, even for root.
    let snap_dir = dir.0.join("member/snap");
    fs::remove_dir(&snap_dir).unwrap();
    fs::write(&snap_dir, b"not a dir").unwrap();
    let ops = [
        append(frame(b"before"), true),
        DiskOp::SaveSnapshot {
            index: 3,
            term: 1,
            file: received_snapshot(3),
        },
        append(frame(b"after"), true),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        executor.submit(IoId(i as u64 + 1), op);
        if i == 0 {
            assert_eq!(
                done.recv().unwrap(),
                (IoId(1), Ok(())),
                "before the failure"
            );
        }
    }
    executor.shutdown();
    let failed: Vec<_> = done.try_iter().collect();
    assert_eq!(failed.len(), 2);
    for (io, result) in failed {
        let DiskError {
            message: reason, ..
        } = result.expect_err("failed after the error");
        assert!(
            reason.contains("0000000000000003.snap.tmp"),
            "io {}: {reason}",
            io.0
        );
    }
}

#[test]
fn a_failed_rotation_fails_that_append_and_every_later_one() {
    let dir = TempDir::new("rotfail");
    let (executor, done) = start(&dir.0, small(1000));
    executor.submit(IoId(1), append(frame(&[1; 600]), true));
    assert_eq!(done.recv().unwrap(), (IoId(1), Ok(())));
    // A non-empty directory where the next segment's name goes: the rename fails, even for root.
    let in_the_way = dir.0.join("member/wal").join(segment_name_of(608));
    fs::create_dir(&in_the_way).unwrap();
    fs::write(in_the_way.join("x"), b"x").unwrap();
    executor.submit(IoId(2), append(frame(&[2; 600]), true));
    assert!(
        done.recv().unwrap().1.is_err(),
        "the append that needs the new segment"
    );
    executor.submit(IoId(3), append(frame(b"small enough to fit"), true));
    let (io, result) = done.recv().unwrap();
    let DiskError {
        message: reason, ..
    } = result.expect_err("every later operation fails");
    assert_eq!(io, IoId(3));
    assert!(reason.contains(&segment_name_of(608)), "{reason}");
}

/// An executor that holds its first batch's completion until released, so everything submitted
/// meanwhile is queued when the thread next looks and forms ONE batch: deterministic batching.
struct Gated {
    executor: DiskExecutor,
    done: Done,
    entered: Receiver<()>,
    gate: Sender<()>,
}

impl Gated {
    fn start(dir: &Path, options: DiskOptions) -> Gated {
        let (_, files) = scan_dir(dir, options).expect("scan");
        let (entered_tx, entered) = channel();
        let (gate, gate_rx) = channel::<()>();
        let first = Mutex::new(Some((entered_tx, gate_rx)));
        let (tx, done) = channel();
        let tx = Mutex::new(tx);
        let executor = DiskExecutor::spawn(files, move |io, result| {
            if let Some((entered, gate)) = first.lock().unwrap().take() {
                entered.send(()).unwrap();
                gate.recv().unwrap();
            }
            tx.lock().unwrap().send((io, result)).unwrap();
        });
        Gated {
            executor,
            done,
            entered,
            gate,
        }
    }

    /// Runs `first` as a batch of its own, then `rest` as one batch; returns all completions.
    fn two_batches(&self, first: DiskOp, rest: Vec<DiskOp>) -> Vec<(IoId, Result<(), DiskError>)> {
        self.executor.submit(IoId(1), first);
        self.entered.recv().unwrap();
        let count = rest.len() + 1;
        for (i, op) in rest.into_iter().enumerate() {
            self.executor.submit(IoId(i as u64 + 2), op);
        }
        self.gate.send(()).unwrap();
        self.done.iter().take(count).collect()
    }
}

#[test]
fn group_commit_syncs_fewer_times_than_there_are_synced_appends() {
    let dir = TempDir::new("group");
    let gated = Gated::start(&dir.0, small(1 << 20));
    let recs = records(100, 50);
    let rest = recs[1..].iter().map(|r| append(r.clone(), true)).collect();
    let completions = gated.two_batches(append(recs[0].clone(), true), rest);
    assert_all_ok(&completions, 100);
    assert_eq!(
        gated.executor.wal_syncs(),
        2,
        "one per batch, not one per append"
    );
    drop(gated);
    let (image, _) = scan_dir(&dir.0, small(1 << 20)).unwrap();
    assert_eq!(image.wal, recs.concat());
}

#[test]
fn a_release_waits_for_the_sync_owed_by_earlier_appends_in_its_batch() {
    let dir = TempDir::new("barrier");
    let gated = Gated::start(&dir.0, small(1 << 20));
    let release = DiskOp::Release {
        wal_before_offset: 0,
        snapshots_before_index: 0,
    };
    let rest = vec![
        append(frame(b"marker"), true),
        release,
        append(frame(b"next"), true),
    ];
    assert_all_ok(&gated.two_batches(append(frame(b"first"), true), rest), 4);
    // The second batch syncs before the release and again at its end: a sync only at the end
    // would let the release overtake the durability of the marker before it.
    assert_eq!(gated.executor.wal_syncs(), 3);
}

fn numbered(first: u64, ops: Vec<DiskOp>) -> Vec<(IoId, DiskOp, ColdReader)> {
    let ids = (first..).map(IoId);
    ids.zip(ops)
        .map(|(io, op)| (io, op, ColdReader::default()))
        .collect()
}

#[test]
fn appends_submitted_while_the_disk_thread_is_idle_complete_before_submit_all_returns() {
    let dir = TempDir::new("here");
    let (mut executor, done) = start(&dir.0, small(1 << 20));
    let recs = records(5, 50);
    let ops = recs.iter().map(|r| append(r.clone(), true)).collect();
    executor.submit_all(numbered(1, ops));
    let completions: Vec<_> = done.try_iter().collect();
    assert_all_ok(&completions, 5);
    assert_eq!(executor.wal_syncs(), 1, "one batch, one sync");
    executor.shutdown();
    let (image, _) = scan_dir(&dir.0, small(1 << 20)).unwrap();
    assert_eq!(image.wal, recs.concat());
}

#[test]
fn appends_never_complete_ahead_of_what_the_disk_thread_holds() {
    let dir = TempDir::new("behind");
    let mut gated = Gated::start(&dir.0, small(1 << 20));
    gated
        .executor
        .submit(IoId(1), append(frame(b"first"), true));
    gated.entered.recv().unwrap();
    let second = vec![append(frame(b"second"), true)];
    gated.executor.submit_all(numbered(2, second));
    assert!(
        gated.done.try_recv().is_err(),
        "nothing passes the held batch"
    );
    gated.gate.send(()).unwrap();
    let completions: Vec<_> = gated.done.iter().take(2).collect();
    assert_all_ok(&completions, 2);
    drop(gated);
    let (image, _) = scan_dir(&dir.0, small(1 << 20)).unwrap();
    assert_eq!(image.wal, [frame(b"first"), frame(b"second")].concat());
}

/// An executor whose completions report the thread that ran the operation.
fn start_naming_threads(dir: &Path) -> (DiskExecutor, Receiver<(IoId, String)>) {
    let (_, files) = scan_dir(dir, small(1 << 20)).expect("scan");
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let executor = DiskExecutor::spawn(files, move |io, result| {
        result.expect("appends succeed");
        let thread = std::thread::current().name().unwrap_or("").to_string();
        tx.lock().unwrap().send((io, thread)).unwrap();
    });
    (executor, rx)
}

#[test]
fn after_a_slow_batch_here_appends_go_to_the_disk_thread() {
    let here = std::thread::current().name().unwrap_or("").to_string();
    let one_append = |io| numbered(io, vec![append(frame(b"x"), true)]);
    let dir = TempDir::new("fast");
    let (mut executor, done) = start_naming_threads(&dir.0);
    executor.count_no_batch_here_as_slow();
    executor.submit_all(one_append(1));
    executor.submit_all(one_append(2));
    executor.shutdown();
    let threads: Vec<_> = done.try_iter().collect();
    assert_eq!(threads, [(IoId(1), here.clone()), (IoId(2), here.clone())]);

    let dir = TempDir::new("slow");
    let (mut executor, done) = start_naming_threads(&dir.0);
    executor.count_every_batch_here_as_slow();
    executor.submit_all(one_append(1));
    executor.submit_all(one_append(2));
    executor.shutdown();
    let threads: Vec<_> = done.try_iter().collect();
    let disk_thread = "detcd-disk".to_string();
    assert_eq!(threads, [(IoId(1), here), (IoId(2), disk_thread)]);
}

#[test]
fn batches_with_more_than_small_appends_go_to_the_disk_thread() {
    let dir = TempDir::new("mixed");
    let (mut executor, done) = start_naming_threads(&dir.0);
    let release = DiskOp::Release {
        wal_before_offset: 0,
        snapshots_before_index: 0,
    };
    executor.submit_all(numbered(1, vec![append(frame(b"x"), true), release]));
    let large = frame(&vec![7u8; 2 << 20]);
    executor.submit_all(numbered(3, vec![append(large, true)]));
    executor.shutdown();
    let threads: Vec<String> = done.try_iter().map(|(_, thread)| thread).collect();
    assert_eq!(threads, ["detcd-disk"; 3]);
}

/// The real WAL format through the real load path.
#[test]
fn real_wal_records_survive_restart_through_load() {
    use crate::wal::{encode_record, Record};
    use raft::eraftpb::{Entry, HardState};
    let dir = TempDir::new("realwal");
    let entries: Vec<Entry> = (1..=3)
        .map(|index| Entry {
            index,
            term: 1,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        })
        .collect();
    let hard_state = HardState {
        term: 1,
        vote: 1,
        commit: 3,
        ..Default::default()
    };
    let mut data = Vec::new();
    encode_record(0, &Record::Entries(entries.clone()), &mut data);
    let offset = data.len() as u64;
    encode_record(offset, &Record::HardState(hard_state.clone()), &mut data);

    let Loaded { files, .. } = load_with(&dir.0, small(4096)).unwrap();
    let (tx, done) = channel();
    let tx = Mutex::new(tx);
    let executor = DiskExecutor::spawn(files, move |io, r| {
        tx.lock().unwrap().send((io, r)).unwrap()
    });
    executor.submit(IoId(1), append(data.clone(), true));
    executor.shutdown();
    assert_eq!(done.recv().unwrap(), (IoId(1), Ok(())));

    let loaded = load_with(&dir.0, small(4096)).unwrap();
    assert_eq!(loaded.recovered.entries, entries);
    assert_eq!(loaded.recovered.hard_state, hard_state);
    assert_eq!(loaded.recovered.wal_end_offset, data.len() as u64);
    assert_eq!(loaded.files.wal_end_offset(), data.len() as u64);
}
