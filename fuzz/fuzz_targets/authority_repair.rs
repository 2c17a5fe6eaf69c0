//! Fuzzes the client port's authority repair (`server::authority::Repairer`), which reads every
//! client connection's bytes before HTTP/2 does. On any bytes it may not panic, and how they
//! arrive may not matter: fed in the pieces the input names, it refuses the connection exactly
//! when it refuses the same bytes fed at once, and otherwise writes the same bytes for the
//! server.
//!
//! Input layout: byte 0 is the size of the pieces (at least 1); with its lowest bit set, the
//! client's HTTP/2 preface comes before the other bytes, which saves the fuzzer finding it.
#![no_main]

use detcd::server::authority::Repairer;
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the server reads when `bytes` arrive in `pieces` of that size, or `None` when the
/// repairer refuses them.
fn repaired(bytes: &[u8], piece: usize) -> Option<Vec<u8>> {
    let mut repairer = Repairer::default();
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece) {
        repairer.feed(chunk, &mut out).ok()?;
    }
    repairer.finish(&mut out);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let bytes = if first & 1 == 1 {
        [PREFACE, rest].concat()
    } else {
        rest.to_vec()
    };
    let at_once = repaired(&bytes, bytes.len().max(1));
    let in_pieces = repaired(&bytes, usize::from(first >> 1).max(1));
    assert_eq!(
        at_once, in_pieces,
        "the pieces changed what the server reads"
    );
});
