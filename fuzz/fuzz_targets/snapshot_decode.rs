//! Fuzzes snapshot file decoding on arbitrary bytes: it may not panic, and whatever it accepts
//! must encode back to exactly the same bytes (the format has one encoding per snapshot).
#![no_main]

use detcd::wal::{decode_snapshot_file, encode_snapshot_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decode_snapshot_file(data) {
        assert_eq!(encode_snapshot_file(&snapshot), data);
    }
});
