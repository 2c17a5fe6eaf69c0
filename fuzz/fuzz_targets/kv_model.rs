//! Fuzzes the KV API against the simulator's reference model (`detcd_sim::kv_sessions`): the
//! fuzzer's bytes build a session of Range, Put, DeleteRange, Txn and Compact requests in the
//! shapes where etcd's semantics have edges, which a one-member cluster must answer exactly as
//! the model does.
#![no_main]

use detcd_sim::kv_sessions::{judge, session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(difference) = judge(&session(data)) {
        panic!("{difference}");
    }
});
