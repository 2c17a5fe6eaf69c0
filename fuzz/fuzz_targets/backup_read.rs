//! Fuzzes reading a backup file (`state::backup::read_backup`, what `detcd snapshot restore`
//! runs on a file a user hands it). Its SHA-256 is a checksum, not a secret: anyone can frame
//! any bytes with the right digest, so the target appends it to the fuzzer's bytes, which then
//! reach the frame's length checks and the state's decoding. Reading may refuse anything but
//! may not panic, and a state it accepts keeps every invariant.
#![no_main]

use detcd::state::backup::read_backup;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|body: &[u8]| {
    let mut file = body.to_vec();
    file.extend_from_slice(&Sha256::digest(body));
    if let Ok(state) = read_backup(&file) {
        state
            .check_invariants()
            .expect("an accepted backup holds a valid state");
    }
});
