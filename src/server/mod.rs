//! The tokio adapter: runs the pure `Node` against real sockets, files and gRPC. No node logic
//! lives here; every decision is the step machine's.

pub mod disk;
pub mod peer;
