//! Fuzzes the watch hub against the reference model (`detcd_sim::watch_sessions`): writes,
//! compactions, streams, creates of every shape, cancels, progress requests, slow readers and
//! time passing, built from the fuzzer's bytes on a hub with small bounds; every stream's
//! responses must keep etcd's watch guarantees (ordered, unique, atomic, reliable,
//! bookmarkable, prev_kv, filters), judged by the simulator's watch checker.
#![no_main]

use detcd::watch::WatchBugs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = detcd_sim::watch_sessions::judge(data, WatchBugs::default()) {
        panic!("{why}");
    }
});
