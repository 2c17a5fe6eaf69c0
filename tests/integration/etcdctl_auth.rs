//! etcdctl's `auth`, `user` and `role` commands, and the KV, lease and maintenance commands of
//! users with and without permissions, against a real detcd member, checked line by line
//! against what real etcd answers to the same commands in the same order (headers' cluster_id,
//! member_id and raft_term aside; revisions must match exactly). `AUTH_TEST_DUMP=1` prints both
//! answers of every step.

use crate::common;

use common::{cluster, error_line, etcd_available, start_all, stdout, Flavor, Member};
use serde_json::Value;

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";
const BOB: &str = "--user=bob:bobpw";
/// Alice after `user passwd`.
const ALICE2: &str = "--user=alice:alicepw2";

fn script() -> Vec<Vec<&'static str>> {
    vec![
        // Management while auth is off: anyone may.
        vec!["auth", "enable"],
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", "root:again"],
        vec!["user", "add", ":nameless"],
        vec!["role", "add", "reader"],
        vec!["role", "add", "reader"],
        vec!["user", "add", "carol", "--no-password"],
        vec!["user", "get", "nobody"],
        vec!["role", "get", "nobody"],
        vec!["user", "list"],
        vec!["role", "list", "-w", "json"],
        vec!["put", "/a/before", "1"],
        // `auth enable` adds the root role and grants it to root when it is missing.
        vec!["auth", "enable"],
        vec!["user", "list"],
        vec!["user", "list", "--user=root:wrong"],
        // A user without a password authenticates by certificate only.
        vec!["get", "/a/x", "--user=carol:any"],
        vec!["user", "list", ROOT],
        vec!["role", "get", "root", ROOT],
        vec!["user", "get", "root", ROOT, "-w", "json"],
        vec!["user", "add", "alice:alicepw", ROOT],
        vec!["user", "add", "bob:bobpw", ROOT],
        vec!["role", "add", "rw", ROOT],
        vec![
            "role",
            "grant-permission",
            "rw",
            "readwrite",
            "/a/",
            "/b/",
            ROOT,
        ],
        vec![
            "role",
            "grant-permission",
            "rw",
            "read",
            "--prefix",
            "/p/",
            ROOT,
        ],
        vec!["role", "grant-permission", "rw", "write", "/w", ROOT],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "--from-key",
            "/r",
            ROOT,
        ],
        vec!["role", "grant-permission", "nobody", "read", "/x", ROOT],
        vec!["role", "get", "rw", ROOT],
        vec!["role", "get", "rw", ROOT, "-w", "json"],
        vec!["user", "grant-role", "alice", "rw", ROOT],
        vec!["user", "grant-role", "alice", "nobody", ROOT],
        vec!["user", "grant-role", "bob", "reader", ROOT],
        vec!["user", "get", "alice", ROOT],
        vec!["user", "get", "alice", "--detail", ROOT],
        vec!["user", "list", ALICE],
        // A user's own entry and the roles it holds are its to read.
        vec!["user", "get", "alice", ALICE],
        vec!["user", "get", "bob", ALICE],
        vec!["role", "get", "rw", ALICE],
        vec!["role", "get", "reader", ALICE],
        vec!["role", "get", "nobody", ALICE],
        // Keys inside and outside a user's permissions.
        vec!["put", "/a/x", "1", ALICE],
        vec!["put", "/a/x", "2", "--prev-kv", ALICE],
        vec!["get", "/a/x", ALICE, "-w", "json"],
        vec!["get", "/a/", "/b/", ALICE],
        vec!["get", "/a/", "/c/", ALICE],
        vec!["get", "--prefix", "/a/", ALICE],
        vec!["put", "/z", "1", ALICE],
        vec!["watch", "/z", ALICE],
        vec!["get", "/z", ALICE],
        vec!["put", "/p/q", "1", ALICE],
        vec!["get", "--prefix", "/p/", ALICE],
        vec!["put", "/w", "1", ALICE],
        vec!["put", "/w", "1", "--prev-kv", ALICE],
        vec!["get", "/w", ALICE],
        vec!["del", "/a/x", ALICE],
        vec!["del", "--prefix", "/a/", ALICE],
        vec!["del", "/a/", "/c/", ALICE],
        vec!["get", "--from-key", "/r", BOB],
        vec!["get", "/rz", BOB],
        vec!["get", "--from-key", "/q", BOB],
        vec!["put", "/r", "1", BOB],
        vec!["get", "/a/x"],
        vec!["put", "/a/x", "3"],
        vec!["get", "--prefix", "/", ROOT],
        // Leases: a lease may be revoked only by who may write every key it holds.
        vec!["lease", "grant", "100", ALICE],
        vec!["endpoint", "status", ALICE, "-w", "json"],
        vec!["alarm", "list", ALICE],
        vec!["defrag", ALICE],
        vec!["endpoint", "hashkv", ALICE, "-w", "json"],
        vec!["compaction", "2", ALICE],
        vec!["member", "list", ALICE, "-w", "json"],
        vec!["member", "remove", "1234", ALICE],
        vec![
            "member",
            "update",
            "1234",
            "--peer-urls=http://127.0.0.1:1",
            ALICE,
        ],
        vec!["member", "promote", "1234", ALICE],
        // Changes to users and roles.
        vec!["user", "passwd", "alice", "--interactive=false", ROOT],
        vec!["user", "revoke-role", "alice", "reader", ROOT],
        vec!["user", "revoke-role", "alice", "nobody", ROOT],
        vec!["user", "revoke-role", "root", "root", ROOT],
        vec!["role", "revoke-permission", "rw", "/w", ROOT],
        vec!["role", "revoke-permission", "rw", "/w", ROOT],
        vec!["role", "revoke-permission", "rw", "/a/", "/b/", ROOT],
        vec!["put", "/a/y", "1", ALICE],
        vec!["put", "/a/y", "1", ALICE2],
        vec!["get", "/p/q", ALICE2],
        vec!["role", "delete", "root", ROOT],
        vec!["user", "delete", "root", ROOT],
        vec!["role", "delete", "reader", ROOT],
        vec!["user", "get", "bob", ROOT],
        vec!["get", "--from-key", "/r", BOB],
        vec!["user", "delete", "bob", ROOT],
        vec!["user", "delete", "bob", ROOT],
        vec!["get", "/a/x", BOB],
        vec!["auth", "disable", ALICE2],
        vec![
            "snapshot",
            "save",
            "/tmp/detcd-auth-test-refused.db",
            ALICE2,
        ],
        vec!["auth", "disable", ROOT],
        vec!["auth", "disable", ROOT],
        vec!["get", "/a/x"],
        vec!["user", "delete", "root"],
        vec!["role", "delete", "root"],
        vec!["role", "list"],
    ]
}

/// Removes what names a particular member from a JSON answer.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in [
                "cluster_id",
                "member_id",
                "raft_term",
                "ID",
                "leader",
                "clientURLs",
                "peerURLs",
                "name",
                "version",
                "dbSize",
                "raftIndex",
                "raftAppliedIndex",
                "dbSizeInUse",
                "hash",
                "Endpoint",
                "raftTerm",
            ] {
                map.remove(key);
            }
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// What a step printed, in a comparable form. A lease's id differs between servers.
fn answer(member: &Member, args: &[&str]) -> String {
    let out = if args.contains(&"passwd") {
        member.etcdctl_stdin(args, "alicepw2\n")
    } else {
        member.etcdctl(args)
    };
    let text = stdout(&out);
    let body = if args.contains(&"json") && out.status.success() {
        let mut v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{args:?}: bad json {text:?}: {e}"));
        normalize(&mut v);
        v.to_string()
    } else if args.contains(&"lease") {
        text.split_whitespace()
            .filter(|w| !w.chars().all(|c| c.is_ascii_hexdigit()) || w.len() < 8)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text
    };
    format!("exit {:?}\n{body}{}", out.status.code(), error_line(&out))
}

#[test]
fn etcdctl_auth_commands_answer_as_etcd_does() {
    assert!(
        etcd_available(),
        "real etcd is needed for the comparison (make test installs etcd-server)"
    );
    let mut ours = cluster(Flavor::Detcd, 1, "auth-detcd", &[]);
    let mut theirs = cluster(Flavor::Etcd, 1, "auth-etcd", &[]);
    start_all(&mut ours);
    start_all(&mut theirs);
    let dump = std::env::var_os("AUTH_TEST_DUMP").is_some();
    let mut mismatches = Vec::new();
    for args in script() {
        let expected = answer(&theirs[0], &args);
        let got = answer(&ours[0], &args);
        if dump {
            println!("etcdctl {args:?}\n  etcd:  {expected:?}\n  detcd: {got:?}");
        }
        if expected != got {
            mismatches.push(format!(
                "etcdctl {args:?}\n  etcd:  {expected:?}\n  detcd: {got:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ:\n{}",
        mismatches.len(),
        script().len(),
        mismatches.join("\n")
    );
}
