//! detcd-sim: the deterministic cluster simulator. It links the core without the `server`
//! feature, so it physically cannot reach tokio, sockets or files.
//!
//! - `harness`: a small fault-free cluster for focused tests of the core;
//! - `world`: the simulated world of one seed (network, disks, clocks, processes, clients);
//! - `options`: what each seed draws (swarm testing); `run`: one seed to a verdict;
//! - `coverage`: what a run reached, for the sweep's report;
//! - `timeline`: the HTML failure report;
//! - `checker`: the history checkers; `history`: their inputs; `model`: the reference model
//!   they judge answers against;
//! - `kv_sessions`: KV sessions in the shapes of `kv_shapes`, built from arbitrary bytes, judged
//!   against the model one request at a time (the `kv_model` fuzz target's body).

pub mod checker;
pub mod coverage;
pub mod disk;
pub mod harness;
pub mod history;
pub mod kv_sessions;
pub mod kv_shapes;
pub mod model;
pub mod options;
pub mod run;
pub mod timeline;
pub mod watch_sessions;
pub mod world;
