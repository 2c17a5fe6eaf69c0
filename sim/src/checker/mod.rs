//! Checkers of a simulated run: each takes what the clients saw and what the members applied
//! (`crate::history`) and either accepts the run or names the ops that break a guarantee.

pub mod compaction;
pub mod leases;
pub mod linearizability;
pub mod locks;
pub mod sessions;
pub mod watch;
