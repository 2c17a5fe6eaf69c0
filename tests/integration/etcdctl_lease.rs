//! etcdctl's `lease` commands (and `put --lease`/`--ignore-lease`) against a real detcd member,
//! checked line by line against what real etcd answers to the same commands in the same order.
//!
//! Lease ids are generated differently by each server, so every id a `lease grant` prints is
//! captured (per server) under a name (`$A`, `$B`, ...), substituted into later commands, and
//! replaced by `<A>`, `<B>`, ... in both outputs (in its `%016x` form in simple output and its
//! decimal form in the `ID`/`id`/`lease` fields of JSON and fields output). Headers' cluster_id,
//! member_id and raft_term name the members and are dropped; revisions must match exactly,
//! since both servers start empty and see the same writes.
//!
//! etcdctl 3.4 prints a warning line with a timestamp and a random client id on stderr before
//! the `Error:` line of a failed unary call; it is reduced to the gRPC error it names (code and
//! message), which is compared. Remaining TTLs are checked for plausibility and then
//! normalized (see [`ttl`]). `LEASE_TEST_DUMP=1` prints both answers of every step.
//!
//! Also: a streaming `lease keep-alive` keeps a lease alive past its TTL and the lease expires
//! once etcdctl is killed; a revoke ends a running `lease keep-alive`.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, etcd_available, start_all, stdout, Flavor, Member};
use serde_json::Value;

/// What to remember from a step's output.
#[derive(Clone, Copy)]
enum Capture {
    Nothing,
    /// The id a `lease grant` printed (in whatever output format), under this name.
    Lease(&'static str),
}

struct Step {
    /// `$X` (alone or at the end of an argument) stands for lease X's id in hex.
    args: &'static [&'static str],
    capture: Capture,
    /// The answer carries a remaining TTL, which depends on when the command ran.
    remaining_ttl: bool,
    /// Not a command: wait this long (once, for both servers).
    pause_ms: u64,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step {
        args,
        capture: Capture::Nothing,
        remaining_ttl: false,
        pause_ms: 0,
    }
}

const fn pause(ms: u64) -> Step {
    Step {
        args: &[],
        capture: Capture::Nothing,
        remaining_ttl: false,
        pause_ms: ms,
    }
}

const fn grant(args: &'static [&'static str], name: &'static str) -> Step {
    Step {
        args,
        capture: Capture::Lease(name),
        remaining_ttl: false,
        pause_ms: 0,
    }
}

/// A `lease timetolive` of a live lease: the remaining TTL is checked to be plausible (below the
/// granted TTL, since etcd truncates, and at most 6 s below it) and then normalized, because the
/// two servers are asked a few hundred milliseconds apart and may straddle a second boundary.
const fn ttl(args: &'static [&'static str]) -> Step {
    Step {
        args,
        capture: Capture::Nothing,
        remaining_ttl: true,
        pause_ms: 0,
    }
}

fn script() -> Vec<Step> {
    vec![
        run(&["lease", "list"]),
        run(&["lease", "list", "-w", "json"]),
        grant(&["lease", "grant", "10"], "A"),
        // Raised to the minimum TTL, 2 s for a single member with the default election timeout.
        grant(&["lease", "grant", "1"], "B"),
        ttl(&["lease", "timetolive", "$B"]),
        run(&["lease", "revoke", "$B"]),
        grant(&["lease", "grant", "0"], "Z"),
        run(&["lease", "revoke", "$Z", "-w", "json"]),
        run(&["lease", "grant", "9000000001"]),
        run(&["lease", "grant", "9000000001", "-w", "json"]),
        grant(&["lease", "grant", "9000000000", "-w", "json"], "M"),
        grant(&["lease", "grant", "300", "-w", "json"], "C"),
        grant(&["lease", "grant", "100", "-w", "fields"], "D"),
        // Ordered by expiry: A (10 s), D (100 s), C (300 s), M (9e9 s), not by grant order.
        run(&["lease", "list"]),
        run(&["lease", "list", "-w", "json"]),
        run(&["put", "k", "v", "--lease=$A"]),
        run(&["get", "k", "-w", "json"]),
        ttl(&["lease", "timetolive", "$A"]),
        ttl(&["lease", "timetolive", "$A", "--keys"]),
        ttl(&["lease", "timetolive", "$A", "-w", "json"]),
        ttl(&["lease", "timetolive", "$A", "--keys", "-w", "json"]),
        run(&["lease", "keep-alive", "--once", "$A"]),
        run(&["lease", "keep-alive", "--once", "$A", "-w", "json"]),
        run(&["lease", "keep-alive", "--once", "$C", "-w", "fields"]),
        ttl(&["lease", "timetolive", "$A"]),
        // Unknown leases.
        run(&["lease", "revoke", "1234"]),
        run(&["lease", "revoke", "1234", "-w", "json"]),
        run(&["lease", "revoke", "0"]),
        run(&["lease", "keep-alive", "--once", "1234"]),
        run(&["lease", "keep-alive", "--once", "1234", "-w", "json"]),
        run(&["lease", "keep-alive", "1234"]),
        run(&["lease", "keep-alive", "1234", "-w", "json"]),
        run(&["lease", "timetolive", "1234"]),
        run(&["lease", "timetolive", "1234", "-w", "json"]),
        run(&["lease", "timetolive", "1234", "--keys", "-w", "json"]),
        run(&["lease", "timetolive", "0"]),
        run(&["put", "k2", "v", "--lease=1234"]),
        run(&["put", "k2", "v", "--lease=0"]),
        run(&["get", "k2", "-w", "json"]),
        // --ignore-lease keeps the key's lease; a plain put detaches it.
        run(&["put", "k", "v2", "--ignore-lease"]),
        run(&["get", "k", "-w", "json"]),
        ttl(&["lease", "timetolive", "$A", "--keys"]),
        run(&["put", "k", "v3", "--ignore-lease", "--lease=$A"]),
        run(&["put", "nokey", "v", "--ignore-lease"]),
        run(&["put", "k", "v4", "--prev-kv", "-w", "json"]),
        run(&["get", "k", "-w", "json"]),
        ttl(&["lease", "timetolive", "$A", "--keys"]),
        ttl(&["lease", "timetolive", "$A", "--keys", "-w", "json"]),
        // Deleting a leased key detaches it.
        run(&["put", "dk", "v", "--lease=$C"]),
        run(&["del", "dk"]),
        ttl(&["lease", "timetolive", "$C", "--keys"]),
        // Revoking a lease deletes all its keys at one revision, and nothing else.
        run(&["put", "k", "v5", "--lease=$A"]),
        run(&["put", "k2", "v6", "--lease=$A", "-w", "json"]),
        run(&["put", "other", "x", "--lease=$D"]),
        run(&["get", "", "--prefix", "-w", "json"]),
        run(&["lease", "revoke", "$A"]),
        run(&["get", "", "--prefix", "-w", "json"]),
        run(&["get", "k", "-w", "json"]),
        run(&["lease", "revoke", "$A"]),
        run(&["lease", "timetolive", "$A"]),
        run(&["lease", "timetolive", "$A", "--keys", "-w", "json"]),
        run(&["lease", "keep-alive", "--once", "$A"]),
        run(&["put", "k", "v", "--lease=$A"]),
        run(&["lease", "list"]),
        run(&["lease", "revoke", "$D", "-w", "json"]),
        run(&["get", "other", "-w", "json"]),
        // A lease without keys: the revision does not move.
        run(&["lease", "revoke", "$C", "-w", "json"]),
        // The largest TTL renews and counts down like any other.
        run(&["lease", "keep-alive", "--once", "$M"]),
        ttl(&["lease", "timetolive", "$M", "-w", "json"]),
        run(&["lease", "revoke", "$M"]),
        run(&["lease", "list", "-w", "json"]),
        run(&["get", "", "--prefix", "-w", "json"]),
        // Expiry: both keys go at one revision, as with a revoke; other keys stay.
        grant(&["lease", "grant", "2"], "E"),
        run(&["put", "e1", "v", "--lease=$E"]),
        run(&["put", "e2", "v", "--lease=$E"]),
        run(&["put", "e3", "v"]),
        pause(4000),
        run(&["get", "", "--prefix", "-w", "json"]),
        run(&["lease", "timetolive", "$E", "--keys"]),
        run(&["lease", "keep-alive", "--once", "$E"]),
        run(&["lease", "revoke", "$E"]),
        run(&["lease", "list"]),
    ]
}

/// Runs etcdctl with a deadline; `None` if it had to be killed.
fn etcdctl_timed(endpoint: &str, args: &[String], max: Duration) -> Option<Output> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (make test installs etcd-client)");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + max;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

/// The lease ids one server handed out, by name.
type Leases = Vec<(&'static str, i64)>;

fn substitute(arg: &str, leases: &Leases) -> String {
    match arg.find('$') {
        Some(at) => {
            let name = &arg[at + 1..];
            let id = leases
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("lease {name} was never granted"))
                .1;
            format!("{}{id:016x}", &arg[..at])
        }
        None => arg.to_string(),
    }
}

/// The id a `lease grant` printed, in simple, JSON or fields output.
fn granted_id(text: &str) -> Option<i64> {
    if let Some(rest) = text.strip_prefix("lease ") {
        let hex = rest.split(' ').next()?;
        return i64::from_str_radix(hex, 16).ok();
    }
    if text.starts_with('{') {
        return serde_json::from_str::<Value>(text).ok()?["ID"].as_i64();
    }
    text.lines()
        .find_map(|l| l.strip_prefix("\"ID\" : "))
        .and_then(|n| n.trim().parse().ok())
}

fn name_of(id: i64, leases: &Leases) -> Option<String> {
    leases
        .iter()
        .find(|(_, l)| *l == id)
        .map(|(n, _)| format!("<{n}>"))
}

/// Drops what names a member or an election and names the lease ids, in a JSON answer.
fn normalize_json(value: &mut Value, leases: &Leases) {
    match value {
        Value::Object(map) => {
            for key in ["cluster_id", "member_id", "raft_term"] {
                map.remove(key);
            }
            for key in ["ID", "id", "lease"] {
                if let Some(name) = map
                    .get(key)
                    .and_then(Value::as_i64)
                    .and_then(|id| name_of(id, leases))
                {
                    map.insert(key.to_string(), Value::String(name));
                }
            }
            map.values_mut().for_each(|v| normalize_json(v, leases));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize_json(v, leases)),
        _ => {}
    }
}

/// Checks a remaining TTL against the granted one and replaces it by `~` (see [`ttl`]).
fn normalize_remaining(text: &str, args: &[String]) -> String {
    let check = |remaining: i64, granted: i64| {
        assert!(
            remaining < granted && remaining >= (granted - 6).max(0),
            "etcdctl {args:?}: remaining TTL {remaining} of a lease granted {granted} s is implausible: {text}"
        );
    };
    if text.starts_with('{') {
        let mut v: Value = serde_json::from_str(text).unwrap();
        let granted = v["granted-ttl"].as_i64().unwrap();
        if granted > 0 {
            check(v["ttl"].as_i64().unwrap(), granted);
            v["ttl"] = Value::String("~".into());
        }
        return v.to_string();
    }
    // lease X granted with TTL(10s), remaining(9s)[, attached keys([...])]
    let (Some(g), Some(r)) = (text.find("TTL("), text.find("remaining(")) else {
        return text.to_string();
    };
    let number = |from: usize| -> (i64, usize) {
        let end = from + text[from..].find('s').unwrap();
        (text[from..end].parse().unwrap(), end)
    };
    let (granted, _) = number(g + 4);
    let (remaining, end) = number(r + 10);
    check(remaining, granted);
    format!("{}~{}", &text[..r + 10], &text[end..])
}

/// What a step printed, in a comparable form; captures granted ids into `leases`.
fn answer(member: &Member, step: &Step, leases: &mut Leases) -> String {
    let args: Vec<String> = step.args.iter().map(|a| substitute(a, leases)).collect();
    let Some(out) = etcdctl_timed(&member.spec.endpoint(), &args, Duration::from_secs(15)) else {
        return format!("etcdctl {args:?} did not finish within 15 s");
    };
    let mut text = stdout(&out);
    if let Capture::Lease(name) = step.capture {
        if out.status.success() {
            let id = granted_id(&text).unwrap_or_else(|| panic!("no lease id in {text:?}"));
            leases.push((name, id));
        }
    }
    if step.remaining_ttl && out.status.success() {
        text = normalize_remaining(text.trim_end(), &args) + "\n";
    }
    let is_json = args.iter().any(|a| a == "json");
    let body = if is_json && out.status.success() && !text.is_empty() {
        // keep-alive -w json may print several documents, one a line.
        text.lines()
            .map(|line| {
                let mut v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{args:?}: bad json {line:?}: {e}"));
                normalize_json(&mut v, leases);
                v.to_string() + "\n"
            })
            .collect()
    } else {
        let mut lines: Vec<String> = Vec::new();
        for line in text.lines() {
            if ["\"ClusterID\"", "\"MemberID\"", "\"RaftTerm\""]
                .iter()
                .any(|p| line.starts_with(p))
            {
                continue;
            }
            let mut line = line.to_string();
            if let Some(n) = line.strip_prefix("\"ID\" : ") {
                if let Some(name) = n.trim().parse().ok().and_then(|id| name_of(id, leases)) {
                    line = format!("\"ID\" : {name}");
                }
            }
            for (name, id) in leases.iter() {
                line = line.replace(&format!("{id:016x}"), &format!("<{name}>"));
            }
            lines.push(line + "\n");
        }
        lines.concat()
    };
    format!("exit {:?}\n{body}{}", out.status.code(), stderr_lines(&out))
}

/// stderr with the client's retry warning (a timestamp and a random client id) reduced to the
/// gRPC error it reports, which names the status code.
fn stderr_lines(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|line| {
            if line.starts_with('{') && line.contains("retrying of unary invoker failed") {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                format!("warn: {}\n", v["error"].as_str().unwrap_or(line))
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// The header revision of a JSON answer (nested or flattened).
fn revision(text: &str) -> i64 {
    let v: Value = serde_json::from_str(text.lines().nth(1).unwrap())
        .unwrap_or_else(|e| panic!("bad json {text:?}: {e}"));
    v["header"]["revision"]
        .as_i64()
        .or_else(|| v["revision"].as_i64())
        .unwrap_or_else(|| panic!("no revision in {text}"))
}

/// Runs the script against `ours` and, when given, `theirs`, step by step alternately; returns
/// every answer of ours and the mismatches.
fn compare(ours: &Member, theirs: Option<&Member>) -> (Vec<String>, Vec<String>) {
    let mut our_leases = Leases::new();
    let mut their_leases = Leases::new();
    let mut answers = Vec::new();
    let mut mismatches = Vec::new();
    for step in script() {
        if step.pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(step.pause_ms));
            answers.push(String::new());
            continue;
        }
        let expected = theirs.map(|m| answer(m, &step, &mut their_leases));
        let got = answer(ours, &step, &mut our_leases);
        if std::env::var_os("LEASE_TEST_DUMP").is_some() {
            eprintln!(
                "etcdctl {:?}\n  etcd:  {expected:?}\n  detcd: {got:?}",
                step.args
            );
        }
        if let Some(expected) = expected {
            if expected != got {
                mismatches.push(format!(
                    "etcdctl {:?}\n  etcd:  {expected:?}\n  detcd: {got:?}",
                    step.args
                ));
            }
        }
        answers.push(got);
    }
    (answers, mismatches)
}

#[test]
fn etcdctl_lease_commands_answer_as_etcd_does() {
    let mut ours = cluster(Flavor::Detcd, 1, "lease-ctl-detcd", &[]);
    start_all(&mut ours);
    let mut theirs = if etcd_available() {
        let mut m = cluster(Flavor::Etcd, 1, "lease-ctl-etcd", &[]);
        start_all(&mut m);
        Some(m)
    } else {
        eprintln!("NOTE: real etcd is not installed; only detcd's own answers are checked");
        None
    };
    let (answers, mismatches) = compare(&ours[0], theirs.as_ref().map(|m| &m[0]));
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ:\n{}",
        mismatches.len(),
        script().len(),
        mismatches.join("\n")
    );

    // What the comparison implies, stated for detcd alone (so it holds without etcd too).
    let steps = script();
    let at = |args: &[&str], nth: usize| -> &String {
        let i = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.args == args)
            .nth(nth)
            .unwrap_or_else(|| panic!("no step {args:?}"))
            .0;
        &answers[i]
    };
    assert_eq!(
        at(&["lease", "grant", "1"], 0),
        "exit Some(0)\nlease <B> granted with TTL(2s)\n"
    );
    assert_eq!(
        at(&["lease", "list"], 1),
        "exit Some(0)\nfound 4 leases\n<A>\n<D>\n<C>\n<M>\n"
    );
    assert!(at(&["lease", "grant", "9000000001"], 0)
        .ends_with("Error: failed to grant lease (etcdserver: too large lease TTL)\n"));
    // The revoke of A deletes k and k2 at exactly one revision.
    let before = revision(at(&["put", "k2", "v6", "--lease=$A", "-w", "json"], 0));
    let all = &["get", "", "--prefix", "-w", "json"];
    assert_eq!(revision(at(all, 0)), before + 1, "the put of other");
    let after = at(all, 1);
    assert_eq!(revision(after), before + 2, "{after}");
    assert!(
        !after.contains("\"aw==\"") && !after.contains("\"azI=\""),
        "{after}"
    );
    assert!(after.contains("\"b3RoZXI=\""), "other is not on A: {after}");
    // The expiry of E deletes e1 and e2 at exactly one revision.
    let expired = at(all, 3);
    assert_eq!(revision(expired), revision(at(all, 2)) + 3 + 1, "{expired}");
    assert!(
        !expired.contains("\"ZTE=\"")
            && !expired.contains("\"ZTI=\"")
            && expired.contains("\"ZTM=\""),
        "{expired}"
    );
    if let Some(theirs) = theirs.as_mut() {
        theirs[0].kill();
    }
    ours[0].kill();
}

/// Reads a child's stdout lines, with when each arrived.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let pipe = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

fn spawn_keep_alive(member: &Member, id: i64) -> Child {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", member.spec.endpoint()))
        .args(["lease", "keep-alive", &format!("{id:016x}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl runs")
}

fn grant_lease(member: &Member, ttl: &str) -> i64 {
    let out = member.etcdctl(&["lease", "grant", ttl]);
    assert!(out.status.success(), "{out:?}");
    granted_id(&stdout(&out)).expect("a lease id")
}

fn key_exists(member: &Member, key: &str) -> bool {
    let out = member.etcdctl(&["get", key, "--keys-only", "-w", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["count"].as_i64().unwrap_or(0) == 1
}

/// grant 2, attach a key, run `lease keep-alive` for 5 s: the key outlives the TTL, etcdctl
/// prints renewals; kill etcdctl: the key is gone within TTL + 3 s.
fn streaming_keep_alive_keeps_the_lease(flavor: Flavor) {
    let mut members = cluster(flavor, 1, "lease-ka", &[]);
    start_all(&mut members);
    let m = &members[0];
    let id = grant_lease(m, "2");
    assert!(m
        .etcdctl(&["put", "ka", "v", &format!("--lease={id:x}")])
        .status
        .success());
    let started = Instant::now();
    let mut child = spawn_keep_alive(m, id);
    let lines = collect_lines(&mut child);
    while started.elapsed() < Duration::from_secs(5) {
        assert!(
            key_exists(m, "ka"),
            "{flavor:?}: the key is gone {:?} into keep-alive",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "{flavor:?}: keep-alive exited early"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let expected = format!("lease {id:016x} keepalived with TTL(2)");
    {
        let lines = lines.lock().unwrap();
        let text: Vec<&String> = lines.iter().map(|(_, l)| l).collect();
        // The client renews every TTL/3, on its 500 ms tick: about once a second.
        assert!(
            lines.len() >= 3,
            "{flavor:?}: too few renewals in 5 s: {text:?}"
        );
        assert!(
            lines.iter().all(|(_, l)| *l == expected),
            "{flavor:?}: {text:?}"
        );
        assert!(
            lines[0].0 - started < Duration::from_secs(2),
            "{flavor:?}: first renewal after {:?}",
            lines[0].0 - started
        );
    }
    loop {
        if !key_exists(m, "ka") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "{flavor:?}: the lease did not expire within TTL + 3 s of the last keep-alive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let last_renewal = lines.lock().unwrap().last().unwrap().0;
    // Never early: the lease lives TTL after the server acknowledged its last renewal, which is
    // shortly before etcdctl printed it (0.5 s of slack for a slow etcdctl).
    assert!(
        last_renewal.elapsed() >= Duration::from_millis(1500),
        "{flavor:?}: the key was gone {:?} after the last renewal was printed, TTL is 2 s",
        last_renewal.elapsed()
    );
    eprintln!(
        "{flavor:?}: key gone {:?} after etcdctl was killed, {:?} after its last renewal was printed",
        killed.elapsed(),
        last_renewal.elapsed()
    );
    let out = m.etcdctl(&["lease", "timetolive", &format!("{id:x}")]);
    assert_eq!(stdout(&out), format!("lease {id:016x} already expired\n"));
}

#[test]
fn detcd_streaming_keep_alive_keeps_the_lease_until_killed() {
    streaming_keep_alive_keeps_the_lease(Flavor::Detcd);
}

#[test]
fn etcd_streaming_keep_alive_keeps_the_lease_until_killed() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    streaming_keep_alive_keeps_the_lease(Flavor::Etcd);
}

/// A revoke by another client ends a running `lease keep-alive`: at its next renewal it prints
/// "expired or revoked." and exits 0.
fn revoke_ends_keep_alive(flavor: Flavor) -> Vec<String> {
    let mut members = cluster(flavor, 1, "lease-ka-revoke", &[]);
    start_all(&mut members);
    let m = &members[0];
    let id = grant_lease(m, "3");
    let mut child = spawn_keep_alive(m, id);
    let lines = collect_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{flavor:?}: no renewal printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = m.etcdctl(&["lease", "revoke", &format!("{id:x}")]);
    assert_eq!(stdout(&out), format!("lease {id:016x} revoked\n"));
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{flavor:?}: keep-alive still running 8 s after the revoke: {:?}",
                lines.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{flavor:?}");
    std::thread::sleep(Duration::from_millis(100));
    let hex = format!("{id:016x}");
    let lines: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.replace(&hex, "<id>"))
        .collect();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("lease <id> expired or revoked."),
        "{flavor:?}: {lines:?}"
    );
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l == "lease <id> keepalived with TTL(3)"),
        "{flavor:?}: {lines:?}"
    );
    lines
}

#[test]
fn detcd_revoke_ends_a_running_keep_alive() {
    revoke_ends_keep_alive(Flavor::Detcd);
}

#[test]
fn etcd_revoke_ends_a_running_keep_alive() {
    if !etcd_available() {
        eprintln!("NOTE: real etcd is not installed; reference run skipped");
        return;
    }
    revoke_ends_keep_alive(Flavor::Etcd);
}
