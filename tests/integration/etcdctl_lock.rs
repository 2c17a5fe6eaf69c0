//! etcdctl 3.4's `lock` and `elect` against a detcd member, checked against what real etcd 3.4
//! prints for the same commands in the same order (skipped, with a note, when etcd is not
//! installed).
//!
//! Both commands are client-side recipes (clientv3's `concurrency` package): a session lease,
//! a key `NAME/<lease id in hex>` put under it, the oldest such key holding the lock (or the
//! leadership), the others waiting on a watch for the keys before theirs to go. So they exercise
//! detcd's KV (txns comparing create revisions, ranges sorted by create revision), leases
//! (grant, keepalive, expiry deleting keys) and watch, not the server-side Lock and Election
//! services (lock_election_grpc.rs covers those).
//!
//! Every scenario runs on a fresh single-member detcd and a fresh single-member etcd; each is
//! written down as a transcript (etcdctl's stdout, stderr and exit status, what other etcdctl
//! commands read, and orderings measured with timestamps) and the two must be equal. Lease ids
//! differ between servers, so every long hex id is replaced by `<LEASEn>`, numbered by first
//! appearance (which keeps "the same lease" visible); a lease's remaining time is replaced by
//! `?`; etcdctl's retry warnings (a timestamp and a random client id) are reduced to their
//! error. Both servers start empty and see the same writes, so revisions must match exactly.
//!
//! What etcdctl 3.4 does, and the transcripts show: `lock` with a command sets ETCD_LOCK_KEY and
//! ETCD_LOCK_REV for it and deletes its key when the command exits, but never revokes its session
//! lease (it expires after `--ttl`, 10 s by default); `lock` without a command prints its key
//! and, on SIGTERM or SIGINT, deletes it and exits 0 (the lease again stays); after SIGKILL the
//! key stays until the lease expires; `elect` resigns (deletes its key) on SIGINT and SIGTERM
//! and exits 0, leaving its lease (60 s) too.
//!
//! `LOCK_TEST_DUMP=1` prints both transcripts of every scenario.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, etcd_available, start_all, Flavor, Member};

// ---------------------------------------------------------------------------------------------
// etcdctl processes
// ---------------------------------------------------------------------------------------------

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Collects a pipe's lines, each with the instant it was read.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Lines {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

/// A long-running etcdctl (`lock`, `elect`), its output collected as it comes.
struct Ctl {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ctl {
    fn spawn(endpoint: &str, args: &[&str]) -> Ctl {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs (make test installs etcd-client)");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Ctl { child, out, err }
    }

    fn stdout(&self) -> Vec<String> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When the first stdout line starting with `prefix` was read, if one was.
    fn printed_at(&self, prefix: &str) -> Option<Instant> {
        let out = self.out.lock().unwrap();
        out.iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(at, _)| *at)
    }

    /// Waits (at most 10 s) until stdout holds `n` lines; whether it does.
    fn wait_lines(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.out.lock().unwrap().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends a signal to this process (by its pid).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits (at most 15 s) for it to exit; how it ended, or "running" (then it is killed).
    fn wait_exit(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exit {code}"),
                    (None, Some(signal)) => format!("signal {signal}"),
                    _ => format!("{status:?}"),
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "running".to_string()
    }

    /// Its output so far as transcript lines, each prefixed with `tag`.
    fn record(&self, tag: &str, t: &mut Vec<String>) {
        for (_, line) in self.out.lock().unwrap().iter() {
            t.push(format!("{tag}> {line}"));
        }
        for (_, line) in self.err.lock().unwrap().iter() {
            t.push(format!("{tag}! {line}"));
        }
    }
}

/// A one-shot etcdctl: its stdout, stderr and exit code as transcript lines (a shell script
/// argument, which names the endpoint, shown as `<script>`).
fn run(endpoint: &str, args: &[&str], t: &mut Vec<String>) {
    let out = common::etcdctl(endpoint, args, None);
    let shown: Vec<&str> = args
        .iter()
        .map(|a| if a.contains(' ') { "<script>" } else { a })
        .collect();
    t.push(format!(
        "$ etcdctl {}: exit {:?}",
        shown.join(" "),
        out.status.code()
    ));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        t.push(format!("  > {line}"));
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        t.push(format!("  ! {line}"));
    }
}

/// The current revision, as a transcript line.
fn revision(endpoint: &str, t: &mut Vec<String>) {
    let out = common::etcdctl(endpoint, &["get", "x", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from get");
    t.push(format!("revision {}", v["header"]["revision"]));
}

/// The lease id (hex) of the first lock or election key `NAME/<hex>` in `lines`.
fn lease_in(lines: &[String], name: &str) -> String {
    let prefix = format!("{name}/");
    lines
        .iter()
        .find_map(|l| {
            let at = l.find(&prefix)?;
            let hex = &l[at + prefix.len()..];
            let end = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len());
            (end > 0).then(|| hex[..end].to_string())
        })
        .unwrap_or_else(|| panic!("no key {prefix}<lease> in {lines:#?}"))
}

/// A shell command line for `lock` to run: `script` with `ETCDCTL` standing for an etcdctl of
/// this endpoint (the command inherits etcdctl's environment, ETCDCTL_API=3 included).
fn sh(endpoint: &str, script: &str) -> String {
    script.replace("ETCDCTL", &format!("etcdctl --endpoints={endpoint}"))
}

// ---------------------------------------------------------------------------------------------
// Normalising a transcript
// ---------------------------------------------------------------------------------------------

/// etcdctl's retry warning (a JSON line with a timestamp and a client id) as its error only.
fn reduce_warning(line: &str) -> String {
    let Some(start) = line.find('{') else {
        return line.to_string();
    };
    match serde_json::from_str::<serde_json::Value>(&line[start..]) {
        Ok(v) if v.get("level").is_some() => format!(
            "{}warn: {}",
            &line[..start],
            v["error"].as_str().unwrap_or("?")
        ),
        _ => line.to_string(),
    }
}

/// Replaces every word (a maximal run of ASCII letters and digits) of 10 or more lowercase hex
/// digits, that is a lease id, by `<LEASEn>`, numbered by first appearance in `seen`; and masks
/// lease remaining times.
fn normalize_line(line: &str, seen: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let mut flush = |word: &mut String, out: &mut String| {
        let is_id = word.len() >= 10
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if is_id {
            // Keys spell an id with `%x`, `lease timetolive` with `%016x`.
            let id = word.trim_start_matches('0');
            let n = seen.iter().position(|s| s == id).unwrap_or_else(|| {
                seen.push(id.to_string());
                seen.len() - 1
            });
            *out += &format!("<LEASE{}>", n + 1);
        } else {
            *out += word;
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    mask_remaining(&out)
}

/// `remaining(4s)` -> `remaining(?s)`: how much of a lease is left depends on timing.
fn mask_remaining(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("remaining(") {
        let after = &rest[at + "remaining(".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out += &rest[..at];
        out += "remaining(?";
        rest = &after[digits..];
    }
    out + rest
}

fn normalize(transcript: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    transcript
        .iter()
        .map(|line| normalize_line(&reduce_warning(line), &mut seen))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running a scenario on both servers
// ---------------------------------------------------------------------------------------------

fn start(flavor: Flavor, tag: &str) -> Vec<Member> {
    let mut members = cluster(flavor, 1, tag, &[]);
    start_all(&mut members);
    members
}

/// Runs `scenario` on a fresh etcd member (when installed) and a fresh detcd member; asserts
/// their normalised transcripts are equal; returns detcd's.
fn compare(tag: &str, scenario: fn(&str) -> Vec<String>) -> Vec<String> {
    let theirs = if etcd_available() {
        Some(start(Flavor::Etcd, &format!("{tag}-etcd")))
    } else {
        eprintln!("NOTE: real etcd is not installed; only detcd's own answers are checked");
        None
    };
    let expected = theirs
        .as_ref()
        .map(|m| normalize(&scenario(&m[0].spec.endpoint())));
    drop(theirs);
    let ours = start(Flavor::Detcd, &format!("{tag}-detcd"));
    let got =
        common::with_logs_on_failure(&ours, || normalize(&scenario(&ours[0].spec.endpoint())));
    if std::env::var_os("LOCK_TEST_DUMP").is_some() {
        eprintln!("--- {tag} etcd:\n{expected:#?}\n--- {tag} detcd:\n{got:#?}");
    }
    if let Some(expected) = expected {
        assert_same(tag, &got, &expected);
    }
    got
}

fn assert_same(tag: &str, got: &[String], expected: &[String]) {
    let mut diff = String::new();
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            diff += &format!("#{i}\n  etcd:  {e:?}\n  detcd: {g:?}\n");
        }
    }
    assert!(
        diff.is_empty(),
        "{tag}: detcd answers differently:\n{diff}\netcd's transcript:\n{expected:#?}\n\
         detcd's:\n{got:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Revisions: the start-up probe's put and delete take 2 and 3.
// ---------------------------------------------------------------------------------------------

/// `lock NAME -- COMMAND`: the command runs holding the lock, with ETCD_LOCK_KEY and
/// ETCD_LOCK_REV set; the key is gone afterwards, its lease (TTL 10 s) is not.
fn lock_with_command(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let script = sh(
        ep,
        "echo held; echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV; \
         ETCDCTL get --prefix mylock --keys-only; \
         ETCDCTL lease timetolive ${ETCD_LOCK_KEY#mylock/} --keys",
    );
    run(ep, &["lock", "mylock", "--", "sh", "-c", &script], &mut t);
    run(ep, &["get", "--prefix", "mylock"], &mut t);
    revision(ep, &mut t);
    let lease = lease_in(&t, "mylock");
    run(ep, &["lease", "timetolive", &lease], &mut t);
    t
}

#[test]
fn lock_runs_a_command_holding_the_lock() {
    let t = compare("lock-cmd", lock_with_command);
    let expected = [
        "$ etcdctl lock mylock -- sh -c <script>: exit Some(0)",
        "  > held",
        "  > key=mylock/<LEASE1> rev=4",
        "  > mylock/<LEASE1>",
        "  > ",
        "  > lease <LEASE1> granted with TTL(10s), remaining(?s), attached keys([mylock/<LEASE1>])",
        "$ etcdctl get --prefix mylock: exit Some(0)",
        "revision 5",
        "$ etcdctl lease timetolive <LEASE1>: exit Some(0)",
        "  > lease <LEASE1> granted with TTL(10s), remaining(?s)",
    ];
    assert_eq!(t, expected, "{t:#?}");
}

/// Polls `lease timetolive ID` (at most `max`) until it says the lease expired; records the
/// last answer.
fn wait_expired(ep: &str, lease: &str, max: Duration, t: &mut Vec<String>) {
    let deadline = Instant::now() + max;
    loop {
        let out = common::etcdctl(ep, &["lease", "timetolive", lease], None);
        let expired = common::stdout(&out).contains("already expired");
        if expired || Instant::now() > deadline {
            t.push(format!("lease expired within {max:?}: {expired}"));
            run(ep, &["lease", "timetolive", lease], t);
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `lock --ttl=3`: the session lease has that TTL and expires 3 s after etcdctl exits
/// (deleting nothing: the key went at unlock, so the revision stays).
fn lock_with_ttl(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let script = sh(
        ep,
        "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV; \
         ETCDCTL lease timetolive ${ETCD_LOCK_KEY#mylock/} --keys",
    );
    let args = ["lock", "mylock", "--ttl=3", "--", "sh", "-c", &script];
    run(ep, &args, &mut t);
    revision(ep, &mut t);
    let lease = lease_in(&t, "mylock");
    run(ep, &["lease", "timetolive", &lease], &mut t);
    wait_expired(ep, &lease, Duration::from_secs(6), &mut t);
    revision(ep, &mut t);
    t
}

#[test]
fn lock_ttl_sets_the_session_lease_ttl() {
    let t = compare("lock-ttl", lock_with_ttl);
    let expected = [
        "$ etcdctl lock mylock --ttl=3 -- sh -c <script>: exit Some(0)",
        "  > key=mylock/<LEASE1> rev=4",
        "  > lease <LEASE1> granted with TTL(3s), remaining(?s), attached keys([mylock/<LEASE1>])",
        "revision 5",
        "$ etcdctl lease timetolive <LEASE1>: exit Some(0)",
        "  > lease <LEASE1> granted with TTL(3s), remaining(?s)",
        "lease expired within 6s: true",
        "$ etcdctl lease timetolive <LEASE1>: exit Some(0)",
        "  > lease <LEASE1> already expired",
        "revision 5",
    ];
    assert_eq!(t, expected, "{t:#?}");
}

/// Whether `later` printed a line starting with `later_line` after `first` printed one
/// starting with `first_line`.
fn after(first: &Ctl, first_line: &str, later: &Ctl, later_line: &str) -> bool {
    match (first.printed_at(first_line), later.printed_at(later_line)) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

/// Two `lock L -- COMMAND`: the second's command runs only once the first's finished.
fn two_contenders(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let first = sh(
        ep,
        "echo first rev=$ETCD_LOCK_REV; sleep 2; echo first done",
    );
    let mut a = Ctl::spawn(ep, &["lock", "L", "--", "sh", "-c", &first]);
    t.push(format!("first holds: {}", a.wait_lines(1)));
    let second = sh(ep, "echo second rev=$ETCD_LOCK_REV");
    let mut b = Ctl::spawn(ep, &["lock", "L", "--", "sh", "-c", &second]);
    std::thread::sleep(Duration::from_millis(500));
    t.push(format!("second waits: {}", b.stdout().is_empty()));
    keys_oldest_first(ep, "L", &mut t);
    t.push(format!("first: {}", a.wait_exit()));
    t.push(format!("second: {}", b.wait_exit()));
    a.record("first", &mut t);
    b.record("second", &mut t);
    let ordered = after(&a, "first done", &b, "second");
    t.push(format!("second ran after first done: {ordered}"));
    revision(ep, &mut t);
    t
}

/// `get --prefix NAME/ --keys-only`, oldest first (lease ids, hence the key order, differ
/// between servers; the creation order does not).
fn keys_oldest_first(ep: &str, name: &str, t: &mut Vec<String>) {
    let prefix = format!("{name}/");
    let args = [
        "get",
        "--prefix",
        &prefix,
        "--keys-only",
        "--sort-by=CREATE",
    ];
    run(ep, &args, t);
}

#[test]
fn a_second_lock_waits_for_the_first() {
    let t = compare("lock-two", two_contenders);
    let expected = [
        "first holds: true",
        "second waits: true",
        "$ etcdctl get --prefix L/ --keys-only --sort-by=CREATE: exit Some(0)",
        "  > L/<LEASE1>",
        "  > ",
        "  > L/<LEASE2>",
        "  > ",
        "first: exit 0",
        "second: exit 0",
        "first> first rev=4",
        "first> first done",
        "second> second rev=6",
        "second ran after first done: true",
        "revision 7",
    ];
    assert_eq!(t, expected, "{t:#?}");
}

/// `lock L` without a command prints its key (and its empty value) and holds; a second
/// `lock L -- COMMAND` waits; the first is stopped with `signal`; returns the transcript and
/// when the signal was sent.
fn held_then_signalled(ep: &str, ttl: &str, signal: &str) -> (Vec<String>, Ctl, Ctl, Instant) {
    let mut t = Vec::new();
    let mut a = Ctl::spawn(ep, &["lock", "L", ttl]);
    t.push(format!("first holds: {}", a.wait_lines(2)));
    let second = sh(ep, "echo second rev=$ETCD_LOCK_REV");
    let mut b = Ctl::spawn(ep, &["lock", "L", "--", "sh", "-c", &second]);
    std::thread::sleep(Duration::from_millis(500));
    t.push(format!("second waits: {}", b.stdout().is_empty()));
    keys_oldest_first(ep, "L", &mut t);
    let signalled = Instant::now();
    a.signal(signal);
    t.push(format!("first after SIG{signal}: {}", a.wait_exit()));
    t.push(format!("second: {}", b.wait_exit()));
    a.record("first", &mut t);
    b.record("second", &mut t);
    (t, a, b, signalled)
}

/// SIGTERM: etcdctl deletes its key and exits 0; the second gets the lock at once; the first's
/// session lease is left to expire.
fn lock_until_sigterm(ep: &str) -> Vec<String> {
    let (mut t, a, b, signalled) = held_then_signalled(ep, "--ttl=10", "TERM");
    let waited = b.printed_at("second").map(|at| at - signalled);
    t.push(format!(
        "second ran within 1s of the signal: {}",
        waited.is_some_and(|w| w < Duration::from_secs(1))
    ));
    let lease = lease_in(&a.stdout(), "L");
    run(ep, &["lease", "timetolive", &lease], &mut t);
    keys_oldest_first(ep, "L", &mut t);
    revision(ep, &mut t);
    t
}

#[test]
fn lock_without_command_holds_until_sigterm() {
    let t = compare("lock-term", lock_until_sigterm);
    let expected = [
        "first holds: true",
        "second waits: true",
        "$ etcdctl get --prefix L/ --keys-only --sort-by=CREATE: exit Some(0)",
        "  > L/<LEASE1>",
        "  > ",
        "  > L/<LEASE2>",
        "  > ",
        "first after SIGTERM: exit 0",
        "second: exit 0",
        "first> L/<LEASE1>",
        "first> ",
        "second> second rev=6",
        "second ran within 1s of the signal: true",
        "$ etcdctl lease timetolive <LEASE1>: exit Some(0)",
        "  > lease <LEASE1> granted with TTL(10s), remaining(?s)",
        "$ etcdctl get --prefix L/ --keys-only --sort-by=CREATE: exit Some(0)",
        "revision 7",
    ];
    assert_eq!(t, expected, "{t:#?}");
}

/// SIGKILL: the key stays until the session lease (TTL 2 s) expires, which deletes it and
/// lets the second in.
fn lock_until_sigkill(ep: &str) -> Vec<String> {
    let (mut t, a, b, signalled) = held_then_signalled(ep, "--ttl=2", "KILL");
    let waited = b.printed_at("second").map(|at| at - signalled);
    t.push(format!(
        "second waited for the lease to expire (1 s to 6 s): {}",
        waited.is_some_and(|w| w >= Duration::from_secs(1) && w < Duration::from_secs(6))
    ));
    let lease = lease_in(&a.stdout(), "L");
    run(ep, &["lease", "timetolive", &lease], &mut t);
    revision(ep, &mut t);
    t
}

#[test]
fn a_killed_lock_holder_loses_the_lock_when_its_lease_expires() {
    let t = compare("lock-kill", lock_until_sigkill);
    let expected = [
        "first holds: true",
        "second waits: true",
        "$ etcdctl get --prefix L/ --keys-only --sort-by=CREATE: exit Some(0)",
        "  > L/<LEASE1>",
        "  > ",
        "  > L/<LEASE2>",
        "  > ",
        "first after SIGKILL: signal 9",
        "second: exit 0",
        "first> L/<LEASE1>",
        "first> ",
        "second> second rev=6",
        "second waited for the lease to expire (1 s to 6 s): true",
        "$ etcdctl lease timetolive <LEASE1>: exit Some(0)",
        "  > lease <LEASE1> already expired",
        "revision 7",
    ];
    assert_eq!(t, expected, "{t:#?}");
}

/// `elect -l e` observes while candidates come and go: `elect e v1` wins, `elect e v2` waits
/// and wins when v1 resigns on SIGINT; v2 resigns too (the observer then waits for the next
/// leader); `elect e v3` wins and resigns on SIGTERM, leaving its session lease (etcdctl's
/// default TTL, 60 s) to expire.
fn election(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut observer = Ctl::spawn(ep, &["elect", "-l", "e"]);
    // The observer prints the current leader anyway; this only makes it wait for one.
    std::thread::sleep(Duration::from_millis(300));
    let mut c1 = Ctl::spawn(ep, &["elect", "e", "v1"]);
    t.push(format!("v1 leads: {}", c1.wait_lines(2)));
    t.push(format!("observer saw v1: {}", observer.wait_lines(2)));
    let mut c2 = Ctl::spawn(ep, &["elect", "e", "v2"]);
    std::thread::sleep(Duration::from_millis(500));
    t.push(format!("v2 waits: {}", c2.stdout().is_empty()));
    run(ep, &["get", "--prefix", "e/", "--sort-by=CREATE"], &mut t);
    c1.signal("INT");
    t.push(format!("v1 after SIGINT: {}", c1.wait_exit()));
    t.push(format!("v2 leads: {}", c2.wait_lines(2)));
    t.push(format!("observer saw v2: {}", observer.wait_lines(4)));
    c2.signal("INT");
    t.push(format!("v2 after SIGINT: {}", c2.wait_exit()));
    run(ep, &["get", "--prefix", "e/"], &mut t);
    let mut c3 = Ctl::spawn(ep, &["elect", "e", "v3"]);
    t.push(format!("v3 leads: {}", c3.wait_lines(2)));
    t.push(format!("observer saw v3: {}", observer.wait_lines(6)));
    c3.signal("TERM");
    t.push(format!("v3 after SIGTERM: {}", c3.wait_exit()));
    run(ep, &["get", "--prefix", "e/"], &mut t);
    let lease = lease_in(&c3.stdout(), "e");
    run(ep, &["lease", "timetolive", &lease], &mut t);
    // Nothing more for the observer: no new leader.
    std::thread::sleep(Duration::from_millis(300));
    observer.signal("INT");
    t.push(format!("observer after SIGINT: {}", observer.wait_exit()));
    for (tag, ctl) in [
        ("v1", &c1),
        ("v2", &c2),
        ("v3", &c3),
        ("observer", &observer),
    ] {
        ctl.record(tag, &mut t);
    }
    revision(ep, &mut t);
    t
}

#[test]
fn elect_campaigns_and_observes() {
    let t = compare("elect", election);
    let expected = [
        "v1 leads: true",
        "observer saw v1: true",
        "v2 waits: true",
        "$ etcdctl get --prefix e/ --sort-by=CREATE: exit Some(0)",
        "  > e/<LEASE1>",
        "  > v1",
        "  > e/<LEASE2>",
        "  > v2",
        "v1 after SIGINT: exit 0",
        "v2 leads: true",
        "observer saw v2: true",
        "v2 after SIGINT: exit 0",
        "$ etcdctl get --prefix e/: exit Some(0)",
        "v3 leads: true",
        "observer saw v3: true",
        "v3 after SIGTERM: exit 0",
        "$ etcdctl get --prefix e/: exit Some(0)",
        "$ etcdctl lease timetolive <LEASE3>: exit Some(0)",
        "  > lease <LEASE3> granted with TTL(60s), remaining(?s)",
        "observer after SIGINT: exit 0",
        "v1> e/<LEASE1>",
        "v1> v1",
        "v2> e/<LEASE2>",
        "v2> v2",
        "v3> e/<LEASE3>",
        "v3> v3",
        "observer> e/<LEASE1>",
        "observer> v1",
        "observer> e/<LEASE2>",
        "observer> v2",
        "observer> e/<LEASE3>",
        "observer> v3",
        "revision 9",
    ];
    assert_eq!(t, expected, "{t:#?}");
}
