//! Fuzzes the peer port's framing (`server::peer::fuzzing`): whatever bytes a dialler sends,
//! and however they arrive, the connection task's reader and the node thread's take the same
//! messages and agree on refusing the stream; neither panics or outgrows its buffer bound, and
//! decoding what they take does not panic.
//!
//! Input layout: byte 0 picks the task reader's buffer size, byte 1 the node reader's read
//! size, byte 2 the message bound (small, to reach it, or the real one); with byte 3's lowest
//! bit set the rest is raw stream bytes, otherwise a recipe of frames
//! (`fuzzing::frames_from_recipe`) whose CRCs are right unless the recipe says otherwise.
#![no_main]

use detcd::server::peer::fuzzing::{frames_from_recipe, read_both};
use detcd::server::peer::MESSAGE_BYTES_MAX;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [task_piece, node_piece, bound, mode, rest @ ..] = data else {
        return;
    };
    let message_bytes_max = match bound {
        0 => MESSAGE_BYTES_MAX,
        n => usize::from(*n) * 4,
    };
    let bytes = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        frames_from_recipe(rest)
    };
    read_both(
        &bytes,
        usize::from(*task_piece),
        usize::from(*node_piece),
        message_bytes_max,
    );
});
