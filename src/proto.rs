//! Generated protobuf types (see build.rs). The core uses them as plain data; the gRPC service
//! traits inside `etcdserverpb`, `v3lockpb` and `v3electionpb` exist only with the `server`
//! feature.
#![allow(clippy::all, missing_docs)]

pub(crate) mod key_value;

pub mod mvccpb {
    pub use super::key_value::KeyValue;
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}
pub mod detcdpb {
    include!(concat!(env!("OUT_DIR"), "/detcdpb.rs"));
}
