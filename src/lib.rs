//! detcd: an etcd-compatible replicated key-value store.
//!
//! Everything outside `server` (behind the default `server` feature) is the pure core: it never
//! reads a clock, draws unseeded randomness, spawns threads, or touches files and sockets. The
//! simulator (`sim/`) and the tokio server drive the very same [`node::Node`].
#![deny(unsafe_code)]

pub mod alarm;
/// The global allocator of the server and the simulator (behind the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod api;
pub mod auth;
pub mod error;
pub mod lease;
pub mod members;
pub mod mvcc;
pub mod node;
pub mod proto;
pub mod raftlog;
pub mod recipes;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod time;
pub mod wal;
pub mod watch;
