//! Generates Rust types for every `.proto` under `proto/` with a pure-Rust proto compiler
//! (protox), so building needs no `protoc`. gRPC service stubs (tonic) are generated only with
//! the `server` feature: the pure core never sees them.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_protos(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    collect_protos(root, &mut files);
    let fds = protox::compile(&files, [root]).expect("compiling the .proto files");
    // The JSON gateway converts between JSON and protobuf through these descriptors.
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let descriptors = Path::new(&out_dir).join("descriptors.bin");
    std::fs::write(&descriptors, prost::Message::encode_to_vec(&fds))
        .unwrap_or_else(|e| panic!("writing {}: {e}", descriptors.display()));

    let mut config = prost_build::Config::new();
    // Keys and values are shared between the key space, replies and snapshots: Bytes makes
    // those copies reference-count bumps instead of allocations.
    config.bytes(["."]);
    // Written by hand so that encoding copies keys and values without touching their shared
    // headers (see src/proto/key_value.rs).
    config.extern_path(".mvccpb.KeyValue", "crate::proto::key_value::KeyValue");

    #[cfg(feature = "server")]
    {
        tonic_build::configure()
            .build_client(true)
            .build_server(true)
            .codec_path("crate::server::codec::SizedProstCodec")
            .compile_fds_with_config(config, fds)
            .expect("generating gRPC services");
    }
    #[cfg(not(feature = "server"))]
    {
        config
            .compile_fds(fds)
            .expect("generating protobuf messages");
    }
}
