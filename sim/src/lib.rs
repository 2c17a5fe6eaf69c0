//! detcd-sim: the deterministic cluster simulator. It links the core without the `server`
//! feature, so it physically cannot reach tokio, sockets or files.
//!
//! The full simulator (network, disk, clock and process faults, checkers) is built on top of
//! the in-process harness in `detcd::testing`; see ARCHITECTURE.md.

pub mod checker;
pub mod harness;
pub mod history;
