//! Fuzzes WAL decoding and recovery on arbitrary bytes: neither may panic, and what they accept
//! must be consistent (an accepted prefix is 8-aligned and within the input; recovery's end
//! offset is where decoding stopped).
//!
//! Input layout: byte 0 picks the WAL start offset (times 8), byte 1 how many of the remaining
//! bytes go to the WAL; the rest is split into up to three snapshot files at the bytes that
//! follow. Anything shorter is all WAL.
#![no_main]

use detcd::wal::{decode_wal, recover, DiskImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (start, wal_share, rest) = match data {
        [start, share, rest @ ..] => (u64::from(*start) * 8, usize::from(*share), rest),
        _ => (0, 255, data),
    };
    let wal_len = rest.len() * wal_share / 255;
    let (wal, mut files) = rest.split_at(wal_len);

    if let Ok(decoded) = decode_wal(start, wal) {
        assert!(decoded.valid_len <= wal.len());
        assert_eq!(decoded.valid_len % 8, 0);
        assert!(decoded.valid_len + decoded.torn_tail_bytes <= wal.len());
    }

    let mut snapshots = Vec::new();
    while let [len, tail @ ..] = files {
        if snapshots.len() == 3 {
            break;
        }
        let len = usize::from(*len).min(tail.len());
        snapshots.push(tail[..len].to_vec());
        files = &tail[len..];
    }
    let image = DiskImage {
        wal_start_offset: start,
        wal: wal.to_vec(),
        snapshots,
    };
    if let Ok(recovered) = recover(&image) {
        let decoded = decode_wal(start, wal).expect("recover accepted a WAL decode_wal rejects");
        assert_eq!(recovered.wal_end_offset, start + decoded.valid_len as u64);
        let snapshot_index = recovered
            .snapshot
            .as_ref()
            .map_or(0, |s| s.get_metadata().index);
        for (i, entry) in recovered.entries.iter().enumerate() {
            assert_eq!(entry.index, snapshot_index + 1 + i as u64);
        }
        let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
        assert!(snapshot_index <= recovered.hard_state.commit);
        assert!(recovered.hard_state.commit <= last_index);
    }
});
