//! etcdctl 3.4's `watch` against a detcd member, checked against what real etcd 3.4 prints for
//! the same commands in the same order (skipped, with a note, when etcd is not installed).
//!
//! A `watch` runs as a child process; writes go through other etcdctl processes while it runs;
//! once it printed what it should (or 5 s passed) and nothing more came for 300 ms, it is killed
//! and its stdout, stderr and exit status are compared. Watchers started with `--rev` cannot miss
//! a write however late they connect; the one started without it gets 500 ms to connect first.
//!
//! Both servers start empty and see the same writes, so revisions must match exactly. In JSON
//! output the header's cluster_id, member_id and raft_term name the member or the election and
//! are dropped. etcdctl's retry warning line (a timestamp and a random client id) is reduced to
//! the gRPC error it reports.
//!
//! Covered: `watch KEY` with puts and deletes from another client, `--prefix`, a range end,
//! `--rev` replaying history (overwritten and deleted values included), `--prev-kv`, `-w json`
//! and `-w fields`, a start revision at, and below, the compacted revision (etcdctl's exact
//! stderr and exit code), and `watch -i` driven through stdin (`watch`, `progress`, and the
//! commands etcdctl 3.4 refuses). etcdctl 3.4 has no `--progress-notify` (3.5 added it): its
//! refusal is checked, and the server's periodic notifications are tested through gRPC in
//! watch_grpc.rs.
//!
//! `WATCH_TEST_DUMP=1` prints both outputs of every step.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, etcd_available, start_all, stdout, Flavor, Member};
use serde_json::Value;

/// Server flags: progress notifications every second (etcd 3.4 names the flag
/// `--experimental-...`, detcd only takes etcd 3.6's name: see
/// `detcd_takes_etcds_progress_notify_flag`).
fn server_args(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Detcd => &["--watch-progress-notify-interval=1s"],
        Flavor::Etcd => &["--experimental-watch-progress-notify-interval=1s"],
    }
}

/// A running `etcdctl watch`, its output collected as it comes.
struct WatchProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl WatchProcess {
    fn spawn(endpoint: &str, args: &[String], interactive: bool) -> WatchProcess {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs (make test installs etcd-client)");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        WatchProcess {
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }

    fn lines(&self) -> usize {
        self.out.lock().unwrap().len() + self.err.lock().unwrap().len()
    }

    /// Waits until stdout and stderr hold at least `n` lines together (at most 5 s) and then
    /// until nothing more comes for 300 ms (or the process exits).
    fn settle(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.lines() < n && Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut seen = self.lines();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.lines();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("an interactive watch");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Kills it if it still runs; (stdout, stderr, exit code: None if it had to be killed).
    fn finish(&mut self) -> (Vec<String>, Vec<String>, Option<i32>) {
        let status = match self.child.try_wait().unwrap() {
            Some(status) => status.code(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        // Let the readers drain the pipes.
        std::thread::sleep(Duration::from_millis(50));
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (out, err, status)
    }
}

enum Step {
    /// A one-shot etcdctl command (with stdin, for `txn`).
    Run(&'static [&'static str], Option<&'static str>),
    /// `etcdctl watch ARGS`; the writes run once it started; then it should print at least
    /// `lines` lines (stdout and stderr together).
    Watch {
        args: &'static [&'static str],
        writes: Vec<(&'static [&'static str], Option<&'static str>)>,
        lines: usize,
    },
    /// `etcdctl watch -i`, fed these stdin lines one at a time, each followed by the writes
    /// listed with it, then waiting for the output to reach the given total line count.
    Interactive(Vec<(&'static str, Vec<&'static [&'static str]>, usize)>),
}

use Step::{Interactive, Run};

fn watch(args: &'static [&'static str], lines: usize) -> Step {
    Step::Watch {
        args,
        writes: Vec::new(),
        lines,
    }
}

fn watch_writing(
    args: &'static [&'static str],
    writes: Vec<(&'static [&'static str], Option<&'static str>)>,
    lines: usize,
) -> Step {
    Step::Watch {
        args,
        writes,
        lines,
    }
}

fn w(args: &'static [&'static str]) -> (&'static [&'static str], Option<&'static str>) {
    (args, None)
}

/// The steps, named. Revisions (in the comments) start at 4: the start-up probe's put and
/// delete take 2 and 3.
fn script() -> Vec<(&'static str, Step)> {
    vec![
        // History: foo is written, overwritten, deleted and written again; keys under foo/ and
        // beside it; one txn writes two keys at one revision; one delete removes two.
        ("history", Run(&["put", "foo", "v1"], None)), // 4
        ("history", Run(&["put", "foo", "v2"], None)), // 5
        ("history", Run(&["put", "foo/a", "a1"], None)), // 6
        ("history", Run(&["del", "foo"], None)),       // 7
        ("history", Run(&["put", "foo", "v3"], None)), // 8
        ("history", Run(&["put", "fop", "beside"], None)), // 9
        (
            "history",
            Run(&["txn"], Some("\nput foo/b b1\nput foo/a a2\n\n\n")),
        ), // 10
        ("history", Run(&["del", "foo/", "--prefix"], None)), // 11
        ("history", Run(&["put", "foo", "v4"], None)), // 12
        // Replays. Each event is three lines in simple output (type, key, value), five with
        // a previous value.
        ("replay a key", watch(&["watch", "foo", "--rev=1"], 15)),
        ("replay from 5", watch(&["watch", "foo", "--rev=5"], 12)),
        (
            "replay a prefix",
            watch(&["watch", "foo", "--prefix", "--rev=1"], 30),
        ),
        (
            "replay a range",
            watch(&["watch", "foo/", "foo/b", "--rev=1"], 9),
        ),
        (
            "replay with prev-kv",
            watch(&["watch", "foo", "--prefix", "--rev=4", "--prev-kv"], 40),
        ),
        (
            "replay json",
            watch(&["watch", "foo", "--rev=1", "-w", "json"], 1),
        ),
        (
            "replay prefix json prev-kv",
            watch(
                &[
                    "watch",
                    "foo",
                    "--prefix",
                    "--rev=6",
                    "--prev-kv",
                    "-w",
                    "json",
                ],
                1,
            ),
        ),
        (
            "replay fields",
            watch(&["watch", "fop", "--rev=1", "-w", "fields"], 8),
        ),
        (
            "replay hex",
            watch(&["watch", "foo", "--rev=11", "--hex"], 3),
        ),
        ("nothing yet", watch(&["watch", "foo", "--rev=13"], 0)),
        // Live: writes while the watcher runs (started at the next revision, so it cannot miss
        // them however late it connects).
        (
            "live prefix",
            watch_writing(
                &["watch", "live", "--prefix", "--rev=13"],
                vec![
                    w(&["put", "live/1", "x"]),
                    w(&["put", "other", "x"]),
                    w(&["put", "live/1", "y"]),
                    w(&["del", "live/1"]),
                    (&["txn"], Some("\nput live/2 p\nput live/3 q\n\n\n")),
                    w(&["del", "live", "--prefix"]),
                    w(&["del", "live/none"]),
                ],
                21,
            ),
        ), // 13..=18 (the last delete deletes nothing: no revision)
        (
            "live prev-kv json",
            watch_writing(
                &["watch", "live/1", "--prev-kv", "--rev=19", "-w", "json"],
                vec![
                    w(&["put", "live/1", "one"]),
                    w(&["put", "live/1", "two"]),
                    w(&["del", "live/1"]),
                ],
                3,
            ),
        ), // 19..=21
        // etcdctl 3.4 has no --progress-notify: refused before it connects, on both.
        (
            "no progress-notify",
            watch(&["watch", "foo", "--progress-notify"], 1),
        ),
        ("bad args", watch(&["watch"], 1)),
        ("bad args", watch(&["watch", "a", "b", "--prefix"], 1)),
        // Interactive.
        (
            "interactive",
            Interactive(vec![
                ("watch foo --rev=11", vec![], 3),
                ("progress", vec![], 4),
                ("watch live --prefix --prev-kv", vec![], 4),
                // Two watchers: the progress answer goes to both (watch id -1).
                ("progress", vec![], 6),
                ("", vec![&["put", "live/i", "1"], &["put", "foo", "v5"]], 12), // 22, 23
                // etcdctl 3.4 knows `watch` and `progress` only.
                ("bogus", vec![], 13),
                ("cancel 0", vec![], 14),
                ("", vec![], 15),
                ("watch", vec![], 16),
                ("watch a b --prefix", vec![], 17),
                ("watch foo --rev=1 --prev-kv", vec![], 41),
                ("progress", vec![], 44),
                // Ends etcdctl (bad arguments).
                ("watch --rev=2", vec![], 45),
            ]),
        ),
        // Compaction: a watch from the compacted revision gets its events; from before it,
        // the watch is canceled and etcdctl exits.
        ("compact", Run(&["compact", "8"], None)),
        (
            "at the compacted revision",
            watch(&["watch", "foo", "--rev=8"], 9),
        ),
        (
            "below the compacted revision",
            watch(&["watch", "foo", "--rev=7"], 2),
        ),
        (
            "below, json",
            watch(&["watch", "foo", "--rev=2", "-w", "json"], 3),
        ),
        (
            "below, fields",
            watch(&["watch", "foo", "--rev=1", "-w", "fields"], 6),
        ),
        (
            "below, interactive",
            Interactive(vec![
                ("watch foo --rev=3", vec![], 1),
                ("watch foo --rev=22", vec![], 4),
            ]),
        ),
        // Live without --rev: the watcher gets 500 ms to connect before the writes.
        (
            "live key",
            watch_writing(
                &["watch", "foo"],
                vec![
                    w(&["put", "foo", "live1"]),
                    w(&["put", "foo/x", "no"]),
                    w(&["del", "foo"]),
                    w(&["put", "foo", "live2"]),
                ],
                9,
            ),
        ),
    ]
}

/// Drops what names a member or an election from JSON output.
fn normalize_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["cluster_id", "member_id", "raft_term"] {
                map.remove(key);
            }
            map.values_mut().for_each(normalize_json);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

fn normalize_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| {
            if line.starts_with('{') {
                if let Ok(mut v) = serde_json::from_str::<Value>(line) {
                    if line.contains("retrying of unary invoker failed") {
                        return format!("warn: {}\n", v["error"].as_str().unwrap_or(line));
                    }
                    normalize_json(&mut v);
                    return v.to_string() + "\n";
                }
            }
            if ["\"ClusterID\"", "\"MemberID\"", "\"RaftTerm\""]
                .iter()
                .any(|p| line.starts_with(p))
            {
                return String::new();
            }
            format!("{line}\n")
        })
        .collect()
}

fn show(out: &[String], err: &[String], code: Option<i32>) -> String {
    format!(
        "exit {code:?}\nstdout:\n{}stderr:\n{}",
        normalize_lines(out),
        normalize_lines(err)
    )
}

fn one_shot(member: &Member, args: &[&str], stdin: Option<&str>) -> String {
    let out = common::etcdctl(&member.spec.endpoint(), args, stdin);
    let out_lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    let err_lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(String::from)
        .collect();
    show(&out_lines, &err_lines, out.status.code())
}

fn write_all(member: &Member, writes: &[(&[&str], Option<&str>)]) {
    for (args, stdin) in writes {
        let out = common::etcdctl(&member.spec.endpoint(), args, *stdin);
        let alive = member
            .pid()
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(
            out.status.success(),
            "{:?}: etcdctl {args:?}: {} (member process alive: {alive})",
            member.flavor,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn answer(member: &Member, step: &Step) -> String {
    let endpoint = member.spec.endpoint();
    match step {
        Run(args, stdin) => one_shot(member, args, *stdin),
        Step::Watch {
            args,
            writes,
            lines,
        } => {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let mut process = WatchProcess::spawn(&endpoint, &args, false);
            if !writes.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
                write_all(member, writes);
            }
            process.settle(*lines);
            let (out, err, code) = process.finish();
            show(&out, &err, code)
        }
        Interactive(inputs) => {
            let args = vec!["watch".to_string(), "-i".to_string()];
            let mut process = WatchProcess::spawn(&endpoint, &args, true);
            for (line, writes, lines) in inputs {
                process.send(line);
                if !writes.is_empty() {
                    std::thread::sleep(Duration::from_millis(500));
                    let writes: Vec<(&[&str], Option<&str>)> =
                        writes.iter().map(|a| (*a, None)).collect();
                    write_all(member, &writes);
                }
                process.settle(*lines);
            }
            let (out, err, code) = process.finish();
            show(&out, &err, code)
        }
    }
}

fn args_of(step: &Step) -> String {
    match step {
        Run(args, _) => format!("{args:?}"),
        Step::Watch { args, .. } => format!("{args:?}"),
        Interactive(inputs) => format!(
            "watch -i <<< {:?}",
            inputs.iter().map(|(l, ..)| *l).collect::<Vec<_>>()
        ),
    }
}

/// Runs the script against ours and, when given, theirs, step by step alternately; returns
/// ours' answers and the mismatches.
fn compare(ours: &Member, theirs: Option<&Member>) -> (Vec<String>, Vec<String>) {
    let mut answers = Vec::new();
    let mut mismatches = Vec::new();
    for (name, step) in script() {
        let expected = theirs.map(|m| answer(m, &step));
        let got = answer(ours, &step);
        let dump = std::env::var_os("WATCH_TEST_DUMP").is_some();
        if dump {
            eprintln!(
                "--- {name}: etcdctl {}\n  etcd:\n{}\n  detcd:\n{got}",
                args_of(&step),
                expected.as_deref().unwrap_or("-")
            );
        }
        if let Some(expected) = expected {
            if expected != got {
                mismatches.push(format!(
                    "--- {name}: etcdctl {}\n  etcd:\n{expected}\n  detcd:\n{got}",
                    args_of(&step)
                ));
            }
        }
        answers.push(got);
    }
    (answers, mismatches)
}

fn start(flavor: Flavor, tag: &str) -> Vec<Member> {
    let mut members = cluster(flavor, 1, tag, server_args(flavor));
    start_all(&mut members);
    members
}

#[test]
fn etcdctl_watch_prints_what_etcd_prints() {
    let ours = start(Flavor::Detcd, "watch-ctl-detcd");
    let theirs = if etcd_available() {
        Some(start(Flavor::Etcd, "watch-ctl-etcd"))
    } else {
        eprintln!("NOTE: real etcd is not installed; only detcd's own answers are checked");
        None
    };
    let (answers, mismatches) =
        common::with_logs_on_failure(&ours, || compare(&ours[0], theirs.as_ref().map(|m| &m[0])));
    assert!(
        mismatches.is_empty(),
        "{} of {} steps differ:\n{}",
        mismatches.len(),
        script().len(),
        mismatches.join("\n")
    );

    // What the comparison implies, stated for detcd alone (so it holds without etcd too).
    let steps = script();
    let at = |name: &str| -> &String {
        let i = steps
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no step {name}"));
        &answers[i]
    };
    assert_eq!(
        at("replay a key"),
        "exit None\nstdout:\nPUT\nfoo\nv1\nPUT\nfoo\nv2\nDELETE\nfoo\n\nPUT\nfoo\nv3\nPUT\nfoo\nv4\n\
         stderr:\n"
    );
    assert_eq!(
        at("below the compacted revision"),
        "exit Some(5)\nstdout:\nstderr:\nwatch was canceled (etcdserver: mvcc: required revision \
         has been compacted)\nError: watch is canceled by the server\n"
    );
    assert!(
        at("live key").contains("stdout:\nPUT\nfoo\nlive1\nDELETE\nfoo\n\nPUT\nfoo\nlive2\n"),
        "{}",
        at("live key")
    );
}

/// etcd 3.4 and 3.5 name the progress notification interval
/// `--experimental-watch-progress-notify-interval` (only 3.6 drops the prefix): detcd takes
/// both names.
#[test]
fn detcd_takes_etcds_progress_notify_flag() {
    let mut members = cluster(
        Flavor::Detcd,
        1,
        "watch-flag",
        &["--experimental-watch-progress-notify-interval=1s"],
    );
    members[0].start();
    let exited = members[0].wait_exit(Duration::from_secs(2));
    assert_eq!(
        exited,
        None,
        "detcd refused etcd 3.4's flag: {}",
        members[0].log_text()
    );
}
