//! The purity check: the step machine and everything under it must not reach the outside world.
//! Only `src/server/` (the tokio adapter) and `src/bin/` may read clocks, draw OS randomness,
//! spawn threads, or touch files and sockets. The simulator library (`sim/src`, outside its
//! binaries) must be just as pure, or a seed would no longer decide a history.
//!
//! Together with `cargo check -p detcd --no-default-features --lib` (make check), which proves
//! the core builds without tokio and tonic, this keeps the simulated core the deployed core.

use std::path::{Path, PathBuf};

/// What an impure line looks like, and why it is refused.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "Instant::now",
        "reads the wall clock; take `now` as an input",
    ),
    ("SystemTime", "reads the wall clock; take `now` as an input"),
    (
        "thread_rng",
        "unseeded randomness; use the node's seeded ChaCha RNG",
    ),
    (
        "rand::random",
        "unseeded randomness; use the node's seeded ChaCha RNG",
    ),
    (
        "OsRng",
        "unseeded randomness; use the node's seeded ChaCha RNG",
    ),
    (
        "from_entropy",
        "unseeded randomness; use the node's seeded ChaCha RNG",
    ),
    ("std::thread", "threads belong to the drivers"),
    ("std::fs", "files belong to the drivers"),
    ("std::net", "sockets belong to the drivers"),
    ("std::process", "processes belong to the drivers"),
    ("std::env", "the environment belongs to the drivers"),
    ("tokio", "the async runtime belongs to the server adapter"),
    ("tonic", "gRPC belongs to the server adapter"),
    (
        "HashMap",
        "iteration order is randomly seeded; use BTreeMap or a fixed-seed hasher",
    ),
    (
        "HashSet",
        "iteration order is randomly seeded; use BTreeSet or a fixed-seed hasher",
    ),
    ("RandomState", "randomly seeded hashing; use a fixed seed"),
];

fn rust_files(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if skip.iter().any(|s| path.ends_with(s)) {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines that reach for the outside world, comments and string literals aside.
fn violations(files: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let code: String = code.split('"').step_by(2).collect();
            for (pattern, why) in FORBIDDEN {
                if code.contains(pattern) {
                    found.push(format!("{}:{}: `{pattern}` {why}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn core_and_simulator_reach_for_no_clock_randomness_thread_file_or_socket() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(
        &root.join("src"),
        &["server", "bin", "src/proto.rs"],
        &mut files,
    );
    rust_files(&root.join("sim/src"), &["bin"], &mut files);
    assert!(
        files.len() > 5,
        "the check must see the core: found {files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("node/mod.rs")),
        "the step machine is checked"
    );
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "the core must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_an_impure_line() {
    let dir = std::env::temp_dir().join(format!("detcd-purity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.rs");
    std::fs::write(&file, "// Instant::now in a comment is fine\nlet t = std::time::Instant::now();\nlet m: std::collections::HashMap<u8, u8>;\n").unwrap();
    let found = violations(&[file]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains(":2:") && found[1].contains(":3:"),
        "{found:?}"
    );
}
