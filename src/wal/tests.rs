//! Recovery scenarios (snapshot choice and fallback, conflict truncation, gaps, installed
//! snapshots, segments) and property tests over the whole module: round trips, a model of
//! raft's log for replay, and no panics on arbitrary or mutated bytes.

use proptest::prelude::*;
use raft::eraftpb::{Entry, HardState};

use super::record::tests::{entry, hard_state};
use super::snapshot_file::tests::snapshot;
use super::stream::tests::wal_of;
use super::*;

fn entries(first: u64, last: u64, term: u64) -> Record {
    Record::Entries((first..=last).map(|i| entry(i, term, b"v")).collect())
}

fn hs(term: u64, commit: u64) -> Record {
    Record::HardState(hard_state(term, 1, commit))
}

fn marker(index: u64, term: u64) -> Record {
    Record::Snapshot { index, term }
}

fn snap_file(index: u64, term: u64) -> Vec<u8> {
    encode_snapshot_file(&snapshot(index, term, format!("state@{index}").as_bytes()))
}

fn corrupt(mut file: Vec<u8>) -> Vec<u8> {
    let last = file.len() - 1;
    file[last] ^= 1;
    file
}

fn image(records: &[Record], snapshots: Vec<Vec<u8>>) -> DiskImage {
    DiskImage {
        wal_start_offset: 0,
        wal: wal_of(0, records).0,
        snapshots,
    }
}

/// (index, term) of each recovered entry.
fn log_of(r: &Recovered) -> Vec<(u64, u64)> {
    r.entries.iter().map(|e| (e.index, e.term)).collect()
}

fn terms(first: u64, last: u64, term: u64) -> Vec<(u64, u64)> {
    (first..=last).map(|i| (i, term)).collect()
}

fn snapshot_index(r: &Recovered) -> Option<u64> {
    r.snapshot.as_ref().map(|s| s.get_metadata().index)
}

#[test]
fn an_empty_disk_is_a_fresh_member() {
    assert_eq!(
        recover(&DiskImage::default()).unwrap(),
        Recovered::default()
    );
    let zeros = DiskImage {
        wal: vec![0; 1 << 16],
        ..DiskImage::default()
    };
    assert_eq!(recover(&zeros).unwrap(), Recovered::default());
}

#[test]
fn a_plain_log_recovers_with_its_hard_state_and_end() {
    let records = [entries(1, 3, 1), hs(1, 2), entries(4, 4, 2), hs(2, 4)];
    let (wal, offsets) = wal_of(0, &records);
    let r = recover(&image(&records, vec![])).unwrap();
    assert_eq!(log_of(&r), [(1, 1), (2, 1), (3, 1), (4, 2)]);
    assert_eq!(r.hard_state, hard_state(2, 1, 4));
    assert_eq!(r.wal_end_offset, wal.len() as u64);
    assert_eq!(r.torn_tail_bytes, 0);
    assert_eq!(
        r.entry_runs,
        [
            EntryRun {
                wal_offset: offsets[0],
                first_index: 1,
                last_index: 3
            },
            EntryRun {
                wal_offset: offsets[2],
                first_index: 4,
                last_index: 4
            },
        ]
    );
}

#[test]
fn a_torn_tail_is_dropped_and_reported() {
    let records = [entries(1, 3, 1), hs(1, 3), entries(4, 6, 1)];
    let (mut wal, offsets) = wal_of(0, &records);
    // The header and the first byte of the payload (the entry count, 3) reached the disk.
    let torn_at = offsets[2] as usize + FRAME_HEADER_LEN + 1;
    wal.truncate(torn_at);
    wal.resize(4096, 0);
    let r = recover(&DiskImage {
        wal,
        ..DiskImage::default()
    })
    .unwrap();
    assert_eq!(log_of(&r), terms(1, 3, 1));
    assert_eq!(r.wal_end_offset, offsets[2]);
    assert_eq!(r.torn_tail_bytes, FRAME_HEADER_LEN as u64 + 1);
}

#[test]
fn damage_before_intact_records_stops_recovery() {
    let records = [entries(1, 3, 1), hs(1, 3), entries(4, 6, 1)];
    let (mut wal, offsets) = wal_of(0, &records);
    wal[offsets[1] as usize + 26] ^= 0x80;
    let err = recover(&DiskImage {
        wal,
        ..DiskImage::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        RecoveryError::Wal(WalError::Corrupt { offset, .. }) if offset == offsets[1]
    ));
    assert!(err.to_string().contains("not a torn tail"), "{err}");
}

#[test]
fn later_records_supersede_entries_from_their_first_index() {
    let records = [
        entries(1, 5, 1),
        entries(3, 4, 2), // a new leader overwrote 3.. ; 5 is gone too
        entries(5, 6, 2),
        entries(6, 6, 3), // and again from 6
        hs(3, 4),
    ];
    let (_, offsets) = wal_of(0, &records);
    let r = recover(&image(&records, vec![])).unwrap();
    assert_eq!(log_of(&r), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 3)]);
    assert_eq!(
        r.entry_runs,
        [
            EntryRun {
                wal_offset: offsets[0],
                first_index: 1,
                last_index: 2
            },
            EntryRun {
                wal_offset: offsets[1],
                first_index: 3,
                last_index: 4
            },
            EntryRun {
                wal_offset: offsets[2],
                first_index: 5,
                last_index: 5
            },
            EntryRun {
                wal_offset: offsets[3],
                first_index: 6,
                last_index: 6
            },
        ]
    );
}

#[test]
fn a_gap_between_records_is_corruption() {
    let records = [entries(1, 3, 1), entries(5, 6, 1)];
    let (_, offsets) = wal_of(0, &records);
    assert_eq!(
        recover(&image(&records, vec![])),
        Err(RecoveryError::LogGap {
            offset: offsets[1],
            expected: 4,
            found: 5,
            snapshot_index: 0
        })
    );
    // Without a snapshot the log must start at index 1.
    assert!(matches!(
        recover(&image(&[entries(3, 4, 1)], vec![])),
        Err(RecoveryError::LogGap {
            expected: 1,
            found: 3,
            ..
        })
    ));
}

#[test]
fn a_gap_after_the_snapshot_is_corruption() {
    let err = recover(&image(
        &[entries(12, 13, 2), hs(2, 12)],
        vec![snap_file(10, 2)],
    ));
    assert!(matches!(
        err,
        Err(RecoveryError::LogGap {
            expected: 11,
            found: 12,
            snapshot_index: 10,
            ..
        })
    ));
}

#[test]
fn entries_covered_by_the_snapshot_are_skipped() {
    let records = [entries(1, 8, 1), marker(5, 1), hs(1, 7)];
    let (_, offsets) = wal_of(0, &records);
    let r = recover(&image(&records, vec![snap_file(5, 1), snap_file(3, 1)])).unwrap();
    assert_eq!(snapshot_index(&r), Some(5));
    assert_eq!(r.snapshot.as_ref().unwrap().data.as_ref(), b"state@5");
    assert_eq!(log_of(&r), terms(6, 8, 1));
    assert_eq!(
        r.entry_runs,
        [EntryRun {
            wal_offset: offsets[0],
            first_index: 6,
            last_index: 8
        }]
    );
    assert_eq!(r.hard_state.commit, 7);
}

#[test]
fn released_wal_recovers_from_the_retained_segments() {
    // The node released everything before the record holding entry 6 (snapshot at 5).
    let all = [entries(1, 5, 1), entries(6, 9, 1), marker(5, 1), hs(1, 9)];
    let (wal, offsets) = wal_of(0, &all);
    let start = offsets[1];
    let img = DiskImage {
        wal_start_offset: start,
        wal: wal[start as usize..].to_vec(),
        snapshots: vec![snap_file(5, 1)],
    };
    let r = recover(&img).unwrap();
    assert_eq!(log_of(&r), terms(6, 9, 1));
    assert_eq!(r.wal_end_offset, wal.len() as u64);
}

#[test]
fn a_corrupt_newer_snapshot_falls_back_when_the_wal_holds_everything_after_the_older() {
    // No marker for 10: the snapshot was never relied upon (for instance the crash came
    // between writing the file and its marker), so the WAL was not released because of it.
    let records = [entries(1, 12, 1), marker(5, 1), hs(1, 12)];
    let r = recover(&image(
        &records,
        vec![snap_file(5, 1), corrupt(snap_file(10, 1))],
    ))
    .unwrap();
    assert_eq!(snapshot_index(&r), Some(5));
    assert_eq!(log_of(&r), terms(6, 12, 1));
    assert_eq!(r.unusable_snapshots.len(), 1);
    assert_eq!(r.unusable_snapshots[0].position, 1);

    // With its marker: still fine, because the WAL holds entry 10 with the marker's term.
    let records = [entries(1, 12, 1), marker(5, 1), marker(10, 1), hs(1, 12)];
    let r = recover(&image(
        &records,
        vec![corrupt(snap_file(10, 1)), snap_file(5, 1)],
    ))
    .unwrap();
    assert_eq!(snapshot_index(&r), Some(5));
    assert_eq!(log_of(&r), terms(6, 12, 1));
}

#[test]
fn a_corrupt_newer_snapshot_is_fatal_when_the_wal_no_longer_holds_its_entries() {
    // The node released the WAL before entry 11 after snapshot 10's marker was durable.
    let all = [
        entries(1, 10, 1),
        marker(5, 1),
        entries(11, 12, 1),
        marker(10, 1),
        hs(1, 12),
    ];
    let (wal, offsets) = wal_of(0, &all);
    let img = DiskImage {
        wal_start_offset: offsets[2],
        wal: wal[offsets[2] as usize..].to_vec(),
        snapshots: vec![snap_file(5, 1), corrupt(snap_file(10, 1))],
    };
    assert!(matches!(
        recover(&img),
        Err(RecoveryError::LogGap {
            expected: 6,
            found: 11,
            ..
        })
    ));

    // A snapshot installed from a leader beyond our log, whose file then rotted.
    let records = [
        entries(1, 7, 1),
        marker(5, 1),
        hs(1, 7),
        marker(20, 3),
        hs(3, 20),
    ];
    let (_, offsets) = wal_of(0, &records);
    assert_eq!(
        recover(&image(
            &records,
            vec![snap_file(5, 1), corrupt(snap_file(20, 3))]
        )),
        Err(RecoveryError::SnapshotLost {
            offset: offsets[3],
            index: 20,
            term: 3,
            fallback_index: 5
        })
    );

    // Every snapshot file is unusable and the WAL lost its beginning.
    let img = DiskImage {
        wal_start_offset: offsets[2],
        wal: wal_of(0, &records).0[offsets[2] as usize..].to_vec(),
        snapshots: vec![corrupt(snap_file(5, 1))],
    };
    assert!(recover(&img).is_err());
}

#[test]
fn an_installed_snapshot_replaces_the_diverged_log_before_its_marker() {
    // Our log had 1..12 at term 1; the leader's snapshot at (10, 3) disagrees at index 10.
    let records = [
        entries(1, 12, 1),
        hs(1, 4),
        marker(10, 3),
        entries(11, 11, 3),
        hs(3, 10),
    ];
    let r = recover(&image(&records, vec![snap_file(10, 3)])).unwrap();
    assert_eq!(snapshot_index(&r), Some(10));
    assert_eq!(log_of(&r), [(11, 3)]);
    assert_eq!(r.hard_state, hard_state(3, 1, 10));
}

#[test]
fn an_installed_snapshot_without_its_marker_still_replaces_the_diverged_log() {
    // Crash after the snapshot file was durable, before its WAL marker.
    let records = [entries(1, 12, 1), hs(1, 4)];
    let r = recover(&image(&records, vec![snap_file(10, 3)])).unwrap();
    assert_eq!(snapshot_index(&r), Some(10));
    assert!(r.entries.is_empty());
    // The snapshot holds committed state only, so commit is raised to its index.
    assert_eq!(r.hard_state.commit, 10);
}

#[test]
fn a_local_snapshot_without_its_marker_keeps_the_log_after_it() {
    let records = [entries(1, 12, 2), hs(2, 12)];
    let r = recover(&image(&records, vec![snap_file(10, 2)])).unwrap();
    assert_eq!(snapshot_index(&r), Some(10));
    assert_eq!(log_of(&r), terms(11, 12, 2));
}

#[test]
fn a_marker_disagreeing_with_its_snapshot_file_is_corruption() {
    let records = [entries(1, 6, 2), marker(5, 1)];
    assert!(matches!(
        recover(&image(&records, vec![snap_file(5, 2)])),
        Err(RecoveryError::SnapshotMarkerMismatch {
            index: 5,
            marker_term: 1,
            file_term: 2,
            ..
        })
    ));
}

#[test]
fn two_snapshot_files_disagreeing_on_a_term_are_corruption() {
    let err = recover(&image(&[], vec![snap_file(5, 2), snap_file(5, 3)])).unwrap_err();
    assert!(matches!(
        err,
        RecoveryError::SnapshotConflict { index: 5, .. }
    ));
}

#[test]
fn rewriting_entries_under_a_durable_snapshot_is_corruption() {
    let records = [entries(1, 6, 1), marker(5, 1), entries(4, 6, 2)];
    assert!(matches!(
        recover(&image(&records, vec![snap_file(5, 1)])),
        Err(RecoveryError::RewritesSnapshot {
            first_index: 4,
            snapshot_index: 5,
            ..
        })
    ));
}

#[test]
fn terms_below_the_snapshot_term_are_corruption() {
    let records = [entries(6, 7, 2)];
    assert!(matches!(
        recover(&image(&records, vec![snap_file(5, 3)])),
        Err(RecoveryError::TermRegression {
            index: 6,
            term: 2,
            previous_term: 3,
            ..
        })
    ));
}

#[test]
fn commit_beyond_the_log_is_an_error_and_below_the_snapshot_is_raised() {
    assert_eq!(
        recover(&image(&[entries(1, 3, 1), hs(1, 5)], vec![])),
        Err(RecoveryError::CommitBeyondLog {
            commit: 5,
            last_index: 3
        })
    );
    let r = recover(&image(&[hs(1, 2)], vec![snap_file(5, 1)])).unwrap();
    assert_eq!(r.hard_state.commit, 5);
}

#[test]
fn a_released_wal_without_a_hard_state_is_an_error() {
    let (wal, _) = wal_of(64, &[entries(6, 7, 1)]);
    let img = DiskImage {
        wal_start_offset: 64,
        wal,
        snapshots: vec![snap_file(5, 1)],
    };
    assert_eq!(
        recover(&img),
        Err(RecoveryError::MissingHardState {
            wal_start_offset: 64
        })
    );
}

#[test]
fn the_order_of_snapshot_files_does_not_matter() {
    let records = [entries(1, 12, 1), marker(5, 1), marker(10, 1), hs(1, 12)];
    let twin = encode_snapshot_file(&snapshot(10, 1, b"same index, other bytes"));
    let files = vec![
        snap_file(5, 1),
        snap_file(10, 1),
        corrupt(snap_file(12, 1)),
        twin,
        snap_file(3, 1),
    ];
    let expected = recover(&image(&records, files.clone())).unwrap();
    assert_eq!(snapshot_index(&expected), Some(10));
    let mut reversed = files;
    reversed.reverse();
    let r = recover(&image(&records, reversed)).unwrap();
    assert_eq!(r.snapshot, expected.snapshot);
    assert_eq!(r.entries, expected.entries);
}

#[test]
fn segments_are_joined_without_their_preallocated_tails() {
    let (first, _) = wal_of(0, &[entries(1, 3, 1), hs(1, 2)]);
    let second_start = first.len() as u64;
    let (second, _) = wal_of(second_start, &[entries(4, 5, 1), hs(1, 5)]);
    let prealloc = |mut b: Vec<u8>| {
        b.resize(4096, 0);
        b
    };
    let segments = vec![
        WalSegment {
            start_offset: second_start,
            bytes: prealloc(second.clone()),
        },
        WalSegment {
            start_offset: 0,
            bytes: prealloc(first.clone()),
        },
    ];
    let img = DiskImage::from_segments(segments.clone(), vec![]).unwrap();
    assert_eq!(img.wal_start_offset, 0);
    let r = recover(&img).unwrap();
    assert_eq!(log_of(&r), terms(1, 5, 1));
    assert_eq!(r.wal_end_offset, second_start + second.len() as u64);

    // Concatenating whole files instead would put zeros inside the log: caught, not skipped.
    let naive = DiskImage {
        wal: [prealloc(first.clone()), prealloc(second.clone())].concat(),
        ..DiskImage::default()
    };
    assert!(matches!(
        recover(&naive),
        Err(RecoveryError::Wal(WalError::Corrupt { .. }))
    ));

    // A first segment shorter than where the second begins lost bytes.
    let short = vec![
        WalSegment {
            start_offset: 0,
            bytes: first[..first.len() - 8].to_vec(),
        },
        WalSegment {
            start_offset: second_start,
            bytes: second.clone(),
        },
    ];
    assert!(matches!(
        DiskImage::from_segments(short, vec![]),
        Err(RecoveryError::SegmentShort { .. })
    ));
    let twice = vec![segments[1].clone(), segments[1].clone()];
    assert_eq!(
        DiskImage::from_segments(twice, vec![]),
        Err(RecoveryError::SegmentDuplicate(0))
    );
    let odd = vec![WalSegment {
        start_offset: 12,
        bytes: vec![],
    }];
    assert_eq!(
        DiskImage::from_segments(odd, vec![]),
        Err(RecoveryError::SegmentMisaligned(12))
    );

    // A torn end of the first segment with intact records in the second is corruption.
    let mut torn_first = first.clone();
    let end = torn_first.len();
    torn_first[end - 3] ^= 0xFF;
    let torn = vec![
        WalSegment {
            start_offset: 0,
            bytes: torn_first,
        },
        WalSegment {
            start_offset: second_start,
            bytes: second,
        },
    ];
    assert!(matches!(
        recover(&DiskImage::from_segments(torn, vec![]).unwrap()),
        Err(RecoveryError::Wal(WalError::Corrupt { .. }))
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A raft-like history: appends that may overwrite a suffix (with terms that never decrease
/// along the resulting log), hard states and markers, plus the log a correct replay must give.
#[derive(Clone, Debug)]
struct History {
    records: Vec<Record>,
    log: Vec<(u64, u64)>,
}

fn arb_history() -> impl Strategy<Value = History> {
    let step = (
        0u8..10,
        any::<u16>(),
        1usize..5,
        0u64..2,
        prop::collection::vec(any::<u8>(), 0..40),
    );
    prop::collection::vec(step, 0..30).prop_map(|steps| {
        let mut records = Vec::new();
        let mut log: Vec<(u64, u64)> = Vec::new();
        let mut term = 1;
        // Raft never overwrites committed entries, and commit never moves back.
        let mut committed = 0u64;
        for (kind, pick, len, term_step, data) in steps {
            let pick = u64::from(pick);
            match kind {
                0..=6 => {
                    let uncommitted = log.len() as u64 - committed;
                    let first = committed + 1 + pick % (uncommitted + 1);
                    log.truncate(first as usize - 1);
                    term += term_step;
                    let batch: Vec<Entry> = (0..len as u64)
                        .map(|i| entry(first + i, term, &data))
                        .collect();
                    log.extend(batch.iter().map(|e| (e.index, e.term)));
                    records.push(Record::Entries(batch));
                }
                7 | 8 => {
                    committed = committed.max(pick % (log.len() as u64 + 1));
                    records.push(Record::HardState(hard_state(term, pick % 5, committed)));
                }
                _ => {
                    // A marker for a snapshot (of committed state) whose file is missing:
                    // recovery must find its entry in the log.
                    if committed > 0 {
                        let (index, t) = log[(pick % committed) as usize];
                        records.push(Record::Snapshot { index, term: t });
                    }
                }
            }
        }
        History { records, log }
    })
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            1u64..u64::MAX / 2,
            0u64..1000,
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..5)
        )
            .prop_map(|(first, term, datas)| Record::Entries(
                datas
                    .iter()
                    .enumerate()
                    .map(|(i, d)| entry(first + i as u64, term, d))
                    .collect()
            )),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(t, v, c)| Record::HardState(hard_state(t, v, c))),
        (any::<u64>(), any::<u64>()).prop_map(|(index, term)| Record::Snapshot { index, term }),
    ]
}

/// Valid WAL bytes damaged in one of several ways, to reach deep into the decoder.
fn arb_damaged_wal() -> impl Strategy<Value = (u64, Vec<u8>)> {
    (
        prop::collection::vec(arb_record(), 0..6),
        0u64..4,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(records, start, flips, cut, garbage)| {
            let start = start * 8;
            let (mut wal, _) = wal_of(start, &records);
            for (at, mask) in flips {
                if !wal.is_empty() {
                    let at = at % wal.len();
                    wal[at] ^= mask;
                }
            }
            wal.truncate(cut % (wal.len() + 1));
            wal.extend_from_slice(&garbage);
            (start, wal)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_record_sequences_round_trip(
        records in prop::collection::vec(arb_record(), 0..20),
        start in (0u64..1 << 40).prop_map(|s| s * 8),
        zeros in 0usize..100,
    ) {
        let (mut wal, offsets) = wal_of(start, &records);
        let len = wal.len();
        wal.resize(len + zeros, 0);
        let decoded = decode_wal(start, &wal).unwrap();
        prop_assert_eq!(decoded.valid_len, len);
        prop_assert_eq!(decoded.torn_tail_bytes, 0);
        let got: Vec<(u64, Record)> =
            decoded.records.into_iter().map(|r| (r.offset, r.record)).collect();
        let want: Vec<(u64, Record)> = offsets.into_iter().zip(records).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_truncation_keeps_exactly_the_complete_records(
        records in prop::collection::vec(arb_record(), 1..10),
        cut in any::<prop::sample::Index>(),
    ) {
        let (wal, offsets) = wal_of(0, &records);
        let cut = cut.index(wal.len() + 1);
        let decoded = decode_wal(0, &wal[..cut]).unwrap();
        let complete = offsets.iter().skip(1).chain([&(wal.len() as u64)])
            .filter(|&&end| end <= cut as u64).count();
        prop_assert_eq!(decoded.records.len(), complete);
        let valid_len = if complete == 0 { 0 } else {
            offsets.get(complete).map_or(wal.len(), |&o| o as usize)
        };
        prop_assert_eq!(decoded.valid_len, valid_len);
    }

    #[test]
    fn replay_matches_a_model_of_raft_log_truncation(
        history in arb_history(),
        garbage in prop::collection::vec(1u8..=255, 0..50),
    ) {
        let (mut wal, _) = wal_of(0, &history.records);
        wal.extend_from_slice(&garbage); // a torn tail of random bytes
        let r = recover(&DiskImage { wal, ..DiskImage::default() }).unwrap();
        prop_assert_eq!(log_of(&r), history.log.clone());
        let runs_cover: u64 = r.entry_runs.iter().map(|run| run.last_index - run.first_index + 1).sum();
        prop_assert_eq!(runs_cover, history.log.len() as u64);
        prop_assert_eq!(r.torn_tail_bytes, garbage.len() as u64);
    }

}

proptest! {
    // Cheap cases: run many more of them.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        start in (0u64..16).prop_map(|s| s * 4),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Ok(decoded) = decode_wal(start, &bytes) {
            prop_assert!(decoded.valid_len <= bytes.len());
            prop_assert_eq!(decoded.valid_len % RECORD_ALIGN, 0);
        }
        let _ = decode_snapshot_file(&bytes);
        let _ = recover(&DiskImage { wal_start_offset: start, wal: bytes.clone(), snapshots: vec![bytes] });
    }

    #[test]
    fn decoding_damaged_wals_never_panics((start, wal) in arb_damaged_wal()) {
        if let Ok(decoded) = decode_wal(start, &wal) {
            prop_assert!(decoded.valid_len <= wal.len());
        }
        let _ = recover(&DiskImage { wal_start_offset: start, wal, snapshots: vec![] });
    }

    #[test]
    fn decoding_damaged_snapshot_files_never_panics(
        index in any::<u64>(),
        data in prop::collection::vec(any::<u8>(), 0..64),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let mut file = encode_snapshot_file(&snapshot(index, 1, &data));
        let pristine = file.clone();
        for (at, mask) in &flips {
            let at = at % file.len();
            file[at] ^= mask;
        }
        file.truncate(cut % (file.len() + 1));
        match decode_snapshot_file(&file) {
            Ok(s) => prop_assert_eq!(file, pristine, "damaged file accepted: {:?}", s),
            Err(_) => prop_assert_ne!(file, pristine),
        }
    }
}

#[test]
fn hard_state_default_is_what_a_fresh_member_gets() {
    assert_eq!(
        recover(&DiskImage::default()).unwrap().hard_state,
        HardState::default()
    );
}

#[test]
fn a_snapshot_newer_than_the_last_hard_state_raises_commit_and_says_so() {
    // Snapshot 10 is durable, but the crash took its marker and the hard state after it.
    let r = recover(&image(
        &[entries(1, 12, 1), hs(1, 7)],
        vec![snap_file(10, 1)],
    ))
    .unwrap();
    assert_eq!((r.hard_state.commit, r.recorded_hard_state.commit), (10, 7));
    let r = recover(&image(
        &[entries(1, 12, 1), hs(1, 11)],
        vec![snap_file(10, 1)],
    ))
    .unwrap();
    assert_eq!(
        (r.hard_state.commit, r.recorded_hard_state.commit),
        (11, 11)
    );
}

#[test]
fn entries_newer_than_the_last_hard_state_raise_its_term_without_a_vote() {
    // A torn write kept a batch's entries of term 3 and lost the hard state after them.
    let r = recover(&image(
        &[entries(1, 2, 2), hs(2, 2), entries(3, 4, 3)],
        vec![],
    ))
    .unwrap();
    assert_eq!((r.hard_state.term, r.hard_state.vote), (3, 0));
    assert_eq!(r.hard_state.commit, 2);
    assert_eq!(r.recorded_hard_state, hard_state(2, 1, 2));
    // No hard state at all (the member never synced one): term 0 would answer votes with it.
    let r = recover(&image(&[entries(1, 1, 1)], vec![])).unwrap();
    assert_eq!((r.hard_state.term, r.hard_state.vote), (1, 0));
    assert_eq!(r.recorded_hard_state, HardState::default());
    // Entries of the hard state's own term change nothing.
    let r = recover(&image(&[entries(1, 2, 2), hs(2, 2)], vec![])).unwrap();
    assert_eq!(r.hard_state, r.recorded_hard_state);
}
