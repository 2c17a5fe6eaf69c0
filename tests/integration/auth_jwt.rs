//! JWT auth tokens (`--auth-token jwt,...`) against real etcd: one detcd and one etcd member
//! with the same keys (RSA; P-256 and P-521 in the SEC1 form openssl writes, for ES256 and
//! ES512), driven through etcdctl and the JSON gateway (a token is used as a long-lived client
//! uses it, which etcdctl, logging in for every command, never does). Their answers must match
//! step by step; then what only detcd is asked here: a token outlives a
//! restart, and a member given only the public key verifies tokens but issues none.
//! `AUTH_TEST_DUMP=1` prints both answers of every step.

use std::process::Command;
use std::time::Duration;

use crate::common;

use common::{
    cluster, etcd_available, gateway_call as call, gateway_login as login, start_all, temp_dir,
    Flavor, Member,
};
use serde_json::Value;

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

/// A fresh key pair for `method` (openssl, which `make tools` installs): (private, public) PEM
/// files. An RSA key for RS256; for ES256 and ES512 a P-256 or P-521 key in SEC1, as `openssl
/// ecparam` writes it.
fn key_pair(tag: &str, method: &str) -> (String, String) {
    let dir = temp_dir(tag);
    let private = dir.join("jwt.key").display().to_string();
    let public = dir.join("jwt.pub").display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let curve = match method {
        "ES256" => Some("prime256v1"),
        "ES512" => Some("secp521r1"),
        _ => None,
    };
    if let Some(curve) = curve {
        run(&[
            "ecparam", "-name", curve, "-genkey", "-noout", "-out", &private,
        ]);
        run(&["ec", "-in", &private, "-pubout", "-out", &public]);
    } else {
        run(&["genrsa", "-out", &private, "2048"]);
        run(&["rsa", "-in", &private, "-pubout", "-out", &public]);
    }
    (private, public)
}

fn jwt_flag(private: Option<&str>, public: &str, method: &str, ttl: &str) -> String {
    let private = private.map_or(String::new(), |p| format!("priv-key={p},"));
    format!("--auth-token=jwt,pub-key={public},{private}sign-method={method},ttl={ttl}")
}

/// A token's claims, not verified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64url(payload)).expect("JSON claims")
}

fn base64url(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base64url") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

const READ_A: &str = r#"{"key":"L2EveA=="}"#; // "/a/x"
const READ_Z: &str = r#"{"key":"L3o="}"#; // "/z"

/// Both members through the same steps; each step's answers, side by side.
fn steps(member: &Member) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let mut step = |name: &str, value: Value| seen.push((name.to_string(), value));
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", "alice:alicepw"],
        vec!["role", "add", "rw"],
        vec!["role", "grant-permission", "rw", "readwrite", "/a/", "/b/"],
        vec!["user", "grant-role", "alice", "rw"],
        vec!["auth", "enable"],
        vec!["put", "/a/x", "1", ALICE],
        vec!["put", "/z", "1", ROOT],
        vec!["get", "/z", ALICE],
    ] {
        let out = member.etcdctl(&args);
        let text = format!("{}{}", common::stdout(&out), common::error_line(&out));
        step(&format!("etcdctl {args:?}"), Value::String(text));
    }
    let token = login(member, "alice", "alicepw");
    let mut claimed = claims(&token);
    let exp = claimed.as_object_mut().unwrap().remove("exp");
    assert!(exp.is_some_and(|e| e.is_u64()), "{token}: no exp");
    step("alice's claims without exp", claimed);
    step(
        "alice reads /a/x",
        call(member, "/v3/kv/range", READ_A, &token),
    );
    step(
        "alice reads /z",
        call(member, "/v3/kv/range", READ_Z, &token),
    );
    let forged = format!("{token}x");
    step(
        "a forged token",
        call(member, "/v3/kv/range", READ_A, &forged),
    );
    step("garbage", call(member, "/v3/kv/range", READ_A, "garbage"));
    // The store changes: alice's token is older than it now.
    member.etcdctl(&["role", "grant-permission", "rw", "read", "/c", ROOT]);
    step("an old token", call(member, "/v3/kv/range", READ_A, &token));
    let fresh = login(member, "alice", "alicepw");
    step(
        "a fresh token",
        call(member, "/v3/kv/range", READ_A, &fresh),
    );
    std::thread::sleep(Duration::from_secs(3));
    step(
        "an expired token",
        call(member, "/v3/kv/range", READ_A, &fresh),
    );
    seen
}

/// One detcd and one etcd member signing with the same `method` and keys, through the same
/// steps.
fn tokens_answer_as_etcd_does(method: &str) {
    assert!(
        etcd_available(),
        "real etcd is needed for the comparison (make test installs etcd-server)"
    );
    let tag = method.to_lowercase();
    let (private, public) = key_pair(&format!("jwt-keys-{tag}"), method);
    let flag = jwt_flag(Some(&private), &public, method, "2s");
    let mut ours = cluster(Flavor::Detcd, 1, &format!("jwt-detcd-{tag}"), &[&flag]);
    let mut theirs = cluster(Flavor::Etcd, 1, &format!("jwt-etcd-{tag}"), &[&flag]);
    start_all(&mut ours);
    start_all(&mut theirs);
    let (expected, got) = (steps(&theirs[0]), steps(&ours[0]));
    common::assert_same_steps(&expected, &got);
}

#[test]
fn rs256_tokens_answer_as_etcd_does() {
    tokens_answer_as_etcd_does("RS256");
}

#[test]
fn es256_tokens_answer_as_etcd_does() {
    tokens_answer_as_etcd_does("ES256");
}

#[test]
fn es512_tokens_answer_as_etcd_does() {
    tokens_answer_as_etcd_does("ES512");
}

#[test]
fn a_token_outlives_a_restart_and_a_public_key_only_verifies() {
    let (private, public) = key_pair("jwt-restart-keys", "RS256");
    let signing = jwt_flag(Some(&private), &public, "RS256", "10m");
    let mut ours = cluster(Flavor::Detcd, 1, "jwt-restart", &[&signing]);
    start_all(&mut ours);
    let member = &mut ours[0];
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["auth", "enable"],
        vec!["put", "/a/x", "1", ROOT],
    ] {
        assert!(member.etcdctl(&args).status.success(), "{args:?}");
    }
    let token = login(member, "root", "rootpw");
    member.terminate();
    member.extra_args = vec![jwt_flag(None, &public, "RS256", "10m")];
    member.start();
    // Restarted with the public key only: the token from before the restart still reads.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let read = loop {
        let up = std::net::TcpStream::connect(member.spec.endpoint()).is_ok();
        let read = up.then(|| call(member, "/v3/kv/range", READ_A, &token));
        match read {
            Some(read) if read.get("kvs").is_some() => break read,
            read if std::time::Instant::now() > deadline => panic!("{read:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(read["kvs"][0]["value"], "MQ==", "{read}");
    // ... and issues no new one, with etcd's error.
    let out = member.etcdctl(&["get", "/a/x", ROOT]);
    assert!(
        common::error_line(&out).contains("auth: token signing attempted with verify-only key"),
        "{out:?}"
    );
}
