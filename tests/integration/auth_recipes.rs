//! The Lock and Election services with auth on, against real etcd: their calls act as the
//! caller (etcd's run through its in-process client with the caller's token), so a user who
//! may write the lock's prefix locks, campaigns, proclaims and resigns, one who may only read
//! it sees the leader and is refused the rest, and nobody locks outside their permissions.
//! One detcd and one etcd member take the same calls through the JSON gateway, each with its
//! users' tokens; the answers must match with lease ids and the keys named after them
//! replaced by placeholders. `AUTH_TEST_DUMP=1` prints both answers of every step.

use crate::common;

use common::{cluster, etcd_available, gateway_call as call, gateway_login as login, start_all};
use common::{Flavor, Member};
use serde_json::Value;

const ROOT: &str = "--user=root:rootpw";

/// Standard base64, as the gateway encodes bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char),
                false => out.push('='),
            }
        }
    }
    out
}

/// Every string of `value` that names one of a member's leases, or a recipe key made from
/// one, as its placeholder.
fn normalize(value: &mut Value, names: &[(String, String)]) {
    match value {
        Value::String(s) => {
            if let Some((_, placeholder)) = names.iter().find(|(name, _)| name == s) {
                *s = placeholder.clone();
            }
        }
        Value::Object(map) => map.values_mut().for_each(|v| normalize(v, names)),
        Value::Array(items) => items.iter_mut().for_each(|v| normalize(v, names)),
        _ => {}
    }
}

fn grant(member: &Member, token: &str) -> u64 {
    let answer = call(member, "/v3/lease/grant", r#"{"TTL":"60"}"#, token);
    answer["ID"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no lease in {answer}"))
}

/// The calls, in order, with each answer as the member gave it, normalized.
fn steps(member: &Member) -> Vec<(String, Value)> {
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", "alice:alicepw"],
        vec!["user", "add", "bob:bobpw"],
        vec!["role", "add", "writer"],
        vec![
            "role",
            "grant-permission",
            "writer",
            "readwrite",
            "--prefix",
            "/a/",
        ],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "--prefix",
            "/a/",
        ],
        vec!["user", "grant-role", "alice", "writer"],
        vec!["user", "grant-role", "bob", "reader"],
        vec!["auth", "enable"],
        vec!["put", "/a/seen", "1", ROOT],
    ] {
        assert!(member.etcdctl(&args).status.success(), "{args:?}");
    }
    let (alice, bob) = (
        login(member, "alice", "alicepw"),
        login(member, "bob", "bobpw"),
    );
    let (la, lb) = (grant(member, &alice), grant(member, &bob));
    let key = |prefix: &str, lease: u64| base64(format!("{prefix}/{lease:x}").as_bytes());
    let names = [
        (la.to_string(), "<ALICE's LEASE>".to_string()),
        (lb.to_string(), "<BOB's LEASE>".to_string()),
        (key("/a/l", la), "<ALICE's LOCK KEY>".to_string()),
        (key("/a/e", la), "<ALICE's ELECTION KEY>".to_string()),
    ];
    let mut seen = Vec::new();
    let mut step = |name: &str, path: &str, body: String, token: &str| {
        let answer = call(member, path, &body, token);
        let mut normalized = answer.clone();
        normalize(&mut normalized, &names);
        seen.push((name.to_string(), normalized));
        answer
    };
    let (lock, elect, outside) = (base64(b"/a/l"), base64(b"/a/e"), base64(b"/z/l"));
    let locked = step(
        "alice locks /a/l",
        "/v3/lock/lock",
        format!(r#"{{"name":"{lock}","lease":"{la}"}}"#),
        &alice,
    );
    step(
        "bob (read only) locks /a/l",
        "/v3/lock/lock",
        format!(r#"{{"name":"{lock}","lease":"{lb}"}}"#),
        &bob,
    );
    step(
        "alice locks /z/l, outside her permissions",
        "/v3/lock/lock",
        format!(r#"{{"name":"{outside}","lease":"{la}"}}"#),
        &alice,
    );
    let lock_key = locked["key"].as_str().unwrap_or_default().to_string();
    step(
        "bob unlocks alice's lock",
        "/v3/lock/unlock",
        format!(r#"{{"key":"{lock_key}"}}"#),
        &bob,
    );
    step(
        "alice unlocks",
        "/v3/lock/unlock",
        format!(r#"{{"key":"{lock_key}"}}"#),
        &alice,
    );
    let campaign = step(
        "alice campaigns on /a/e",
        "/v3/election/campaign",
        format!(r#"{{"name":"{elect}","lease":"{la}","value":"djE="}}"#),
        &alice,
    );
    step(
        "bob asks for the leader",
        "/v3/election/leader",
        format!(r#"{{"name":"{elect}"}}"#),
        &bob,
    );
    step(
        "bob campaigns",
        "/v3/election/campaign",
        format!(r#"{{"name":"{elect}","lease":"{lb}","value":"djI="}}"#),
        &bob,
    );
    let leader = campaign["leader"].to_string();
    step(
        "bob proclaims for alice",
        "/v3/election/proclaim",
        format!(r#"{{"leader":{leader},"value":"djM="}}"#),
        &bob,
    );
    step(
        "alice proclaims",
        "/v3/election/proclaim",
        format!(r#"{{"leader":{leader},"value":"djM="}}"#),
        &alice,
    );
    step(
        "bob resigns for alice",
        "/v3/election/resign",
        format!(r#"{{"leader":{leader}}}"#),
        &bob,
    );
    step(
        "alice resigns",
        "/v3/election/resign",
        format!(r#"{{"leader":{leader}}}"#),
        &alice,
    );
    step(
        "the leader after she resigned",
        "/v3/election/leader",
        format!(r#"{{"name":"{elect}"}}"#),
        &alice,
    );
    seen
}

#[test]
fn lock_and_election_act_as_their_caller_as_etcd_does() {
    assert!(
        etcd_available(),
        "real etcd is needed for the comparison (make test installs etcd-server)"
    );
    let mut ours = cluster(Flavor::Detcd, 1, "recipes-auth-detcd", &[]);
    let mut theirs = cluster(Flavor::Etcd, 1, "recipes-auth-etcd", &[]);
    start_all(&mut ours);
    start_all(&mut theirs);
    let (expected, got) = (steps(&theirs[0]), steps(&ours[0]));
    common::assert_same_steps(&expected, &got);
}
