//! The integration tests, one module per subject, built as one test binary. As 23 binaries,
//! each compiled the shared support and the client code it uses again and was linked on its
//! own: about 230 s of CPU in a clean build, against 70 s for this one (docs/bench.md). Run one
//! subject with `cargo test --test integration <module>::`.

mod common;

mod auth_jwt;
mod auth_recipes;
mod availability;
mod bad_input;
mod cluster_process;
mod corruption_and_backup;
mod crash;
mod deadline;
mod etcdctl;
mod etcdctl_auth;
mod etcdctl_cluster;
mod etcdctl_lease;
mod etcdctl_lock;
mod etcdctl_watch;
mod flags;
mod gateway;
mod http_access;
mod http_health;
mod large_range;
mod lease_cluster;
mod lease_grpc;
mod lease_read_your_writes;
mod lock_election_grpc;
mod memory;
mod proto_wire;
mod purity;
mod serializable_reads;
mod tls;
mod watch_cluster;
mod watch_grpc;
mod watch_leader_loss;
mod watch_slow_reader;
