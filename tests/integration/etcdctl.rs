//! etcdctl against a real detcd member, checked line by line against what real etcd answers to the
//! same commands in the same order (headers' cluster_id, member_id and raft_term aside, since they
//! name the members; revisions must match exactly).

use crate::common;

use std::time::Duration;

use common::{cluster, error_line, etcd_available, start_all, stdout, Flavor, Member};
use serde_json::Value;

/// One etcdctl invocation: arguments, and stdin for `txn -i`.
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step { args, stdin: None }
}

const TXN: &str = "value(\"foo\") = \"baz\"\nmod(\"foo1\") > \"0\"\n\nput foo qux\nget foo\ndel zoo\n\nput foo nope\n\n";
const TXN_FAILING: &str = "version(\"foo\") = \"100\"\n\nput foo never\n\nget foo1\nget zoo\n\n";

fn script() -> Vec<Step> {
    vec![
        run(&["put", "foo", "bar"]),
        run(&["put", "foo", "baz", "--prev-kv"]),
        run(&["put", "foo1", "one"]),
        run(&["put", "foo2", "two"]),
        run(&["put", "foo3", "three"]),
        run(&["put", "zoo", "animal"]),
        run(&["put", "foo2", "TWO", "-w", "json"]),
        run(&["get", "foo"]),
        run(&["get", "foo", "-w", "json"]),
        run(&["get", "--prefix", "foo"]),
        run(&["get", "--prefix", "foo", "-w", "json"]),
        run(&["get", "--from-key", "foo2"]),
        run(&["get", "foo", "--rev=2", "-w", "json"]),
        run(&["get", "--prefix", "foo", "--limit=2", "-w", "json"]),
        run(&[
            "get",
            "--prefix",
            "foo",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ]),
        run(&[
            "get",
            "--prefix",
            "foo",
            "--sort-by=VALUE",
            "--order=ASCEND",
            "-w",
            "json",
        ]),
        run(&[
            "get",
            "--prefix",
            "foo",
            "--sort-by=CREATE",
            "--order=DESCEND",
            "--limit=2",
        ]),
        run(&["get", "--prefix", "foo", "--keys-only"]),
        run(&["get", "--prefix", "foo", "--count-only", "-w", "json"]),
        run(&["get", "foo", "--print-value-only"]),
        run(&["get", "", "--prefix", "--keys-only"]),
        run(&["get", "nosuchkey", "-w", "json"]),
        run(&["put", "foo1", "--ignore-value", "-w", "json"]),
        run(&["put", "nosuchkey", "--ignore-value"]),
        run(&["put", "foo1", "x", "--lease=1234"]),
        run(&["put", "", "empty"]),
        Step {
            args: &["txn", "-w", "json"],
            stdin: Some(TXN),
        },
        Step {
            args: &["txn"],
            stdin: Some(TXN_FAILING),
        },
        run(&["del", "nosuchkey"]),
        run(&["del", "--prefix", "foo", "--prev-kv", "-w", "json"]),
        run(&["put", "foo", "reborn", "-w", "json"]),
        run(&["get", "foo", "-w", "json"]),
        run(&["compaction", "5"]),
        run(&["get", "foo", "--rev=3"]),
        run(&["get", "foo", "--rev=100"]),
        run(&["compaction", "4"]),
        run(&["get", "zoo", "--rev=5", "-w", "json"]),
        run(&["del", "--from-key", "a", "-w", "json"]),
        run(&["get", "", "--from-key", "--count-only", "-w", "json"]),
    ]
}

/// Removes what names a particular member or election from a JSON answer.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["cluster_id", "member_id", "raft_term"] {
                map.remove(key);
            }
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// What a step printed, in a comparable form.
fn answer(member: &Member, step: &Step) -> String {
    let out = match step.stdin {
        Some(input) => member.etcdctl_stdin(step.args, input),
        None => member.etcdctl(step.args),
    };
    let text = stdout(&out);
    let body = if step.args.contains(&"json") && out.status.success() {
        let mut v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{:?}: bad json {text:?}: {e}", step.args));
        normalize(&mut v);
        v.to_string()
    } else {
        text
    };
    format!("exit {:?}\n{body}{}", out.status.code(), error_line(&out))
}

#[test]
fn etcdctl_kv_commands_answer_as_etcd_does() {
    assert!(
        etcd_available(),
        "real etcd is needed for the comparison (make test installs etcd-server)"
    );
    let mut ours = cluster(Flavor::Detcd, 1, "ctl-detcd", &[]);
    let mut theirs = cluster(Flavor::Etcd, 1, "ctl-etcd", &[]);
    start_all(&mut ours);
    start_all(&mut theirs);
    let mut mismatches = Vec::new();
    for step in script() {
        let expected = answer(&theirs[0], &step);
        let got = answer(&ours[0], &step);
        if expected != got {
            mismatches.push(format!(
                "etcdctl {:?}\n  etcd:  {expected:?}\n  detcd: {got:?}",
                step.args
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

#[test]
fn endpoint_health_reports_healthy() {
    let mut ours = cluster(Flavor::Detcd, 1, "ctl-health", &[]);
    start_all(&mut ours);
    let out = ours[0].etcdctl(&["endpoint", "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("is healthy: successfully committed proposal"),
        "{text}"
    );
}

#[test]
fn member_restarts_on_its_data_dir_after_sigterm() {
    let mut ours = cluster(Flavor::Detcd, 1, "ctl-restart", &[]);
    start_all(&mut ours);
    assert!(ours[0]
        .etcdctl(&["put", "persisted", "yes"])
        .status
        .success());
    assert_eq!(
        ours[0].terminate(),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        ours[0].log_text()
    );
    ours[0].start();
    common::wait_until_writable(&ours[0], Duration::from_secs(20));
    assert_eq!(
        stdout(&ours[0].etcdctl(&["get", "persisted", "--print-value-only"])),
        "yes\n"
    );
}

/// With `--auto-compaction-retention=2s` (periodic), the history of the last two seconds is
/// kept and older history goes without any client compacting: how long after three puts their
/// first revision reads as compacted.
fn periodic_auto_compaction(flavor: Flavor) -> Duration {
    let mut members = cluster(
        flavor,
        1,
        "auto-compact",
        &["--auto-compaction-retention=2s"],
    );
    start_all(&mut members);
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        let revision = |out: &std::process::Output| -> i64 {
            let json: Value = serde_json::from_str(&stdout(out)).expect("json");
            json["header"]["revision"].as_i64().expect("a revision")
        };
        let first = revision(&m.etcdctl(&["put", "k", "v1", "-w", "json"]));
        m.etcdctl(&["put", "k", "v2"]);
        m.etcdctl(&["put", "k", "v3"]);
        let written = std::time::Instant::now();
        let old = first.to_string();
        let read_old = || error_line(&m.etcdctl(&["get", "k", "--rev", &old]));
        while read_old() != "Error: etcdserver: mvcc: required revision has been compacted" {
            assert!(
                written.elapsed() < Duration::from_secs(20),
                "never compacted: {}",
                read_old()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        written.elapsed()
    })
}

#[test]
fn periodic_auto_compaction_keeps_the_retention_and_drops_what_is_older_as_etcd() {
    let ours = periodic_auto_compaction(Flavor::Detcd);
    assert!(ours >= Duration::from_secs(2), "compacted after {ours:?}");
    if etcd_available() {
        let theirs = periodic_auto_compaction(Flavor::Etcd);
        assert!(
            theirs >= Duration::from_secs(2),
            "etcd compacted after {theirs:?}"
        );
        eprintln!("compacted after {ours:?}; etcd after {theirs:?}");
    }
}

/// A member configured by etcd's environment variables alone: what it answers. One given a
/// variable for a flag it was also given must refuse to start, with etcd's words.
fn environment_session(flavor: Flavor) -> String {
    let mut members = cluster(flavor, 1, "ctl-env", &["--snapshot-count=5"]);
    members[0].start_from_environment();
    common::wait_until_writable(&members[0], Duration::from_secs(20));
    let m = &members[0];
    m.etcdctl(&["put", "k", "from-env"]);
    let read = stdout(&m.etcdctl(&["get", "k", "--print-value-only"]));
    let conflicting = std::process::Command::new(if flavor == Flavor::Detcd {
        env!("CARGO_BIN_EXE_detcd")
    } else {
        "etcd"
    })
    .args(["--name=x"])
    .env("ETCD_NAME", "y")
    .output()
    .expect("runs");
    let complaint = String::from_utf8_lossy(&conflicting.stderr);
    let shadowed = "conflicting environment variable \"ETCD_NAME\" is shadowed by \
                    corresponding command-line flag (either unset environment variable or \
                    disable flag)";
    assert!(
        !conflicting.status.success() && complaint.contains(shadowed),
        "{complaint}"
    );
    read
}

#[test]
fn etcds_environment_variables_configure_a_member_as_etcd() {
    let ours = environment_session(Flavor::Detcd);
    assert_eq!(ours, "from-env\n");
    if etcd_available() {
        assert_eq!(ours, environment_session(Flavor::Etcd));
    }
}

#[test]
fn a_dedicated_wal_dir_holds_the_wal_across_a_crash_and_must_not_be_left_behind() {
    let wal_dir = common::temp_dir("ctl-wal-dir").join("wal");
    let flag = format!("--wal-dir={}", wal_dir.display());
    let mut ours = cluster(Flavor::Detcd, 1, "ctl-wal-dir", &[&flag]);
    start_all(&mut ours);
    assert!(ours[0].etcdctl(&["put", "k", "kept"]).status.success());
    ours[0].kill();
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension() == Some("wal".as_ref()))
                })
                .count()
        })
    };
    let data_dir = common::data_dir_of(&ours[0]).to_path_buf();
    assert!(segments(&wal_dir) > 0);
    assert_eq!(segments(&data_dir.join("member/wal")), 0);

    ours[0].start();
    common::wait_until_writable(&ours[0], Duration::from_secs(20));
    let read = stdout(&ours[0].etcdctl(&["get", "k", "--print-value-only"]));
    assert_eq!(read, "kept\n", "{}", ours[0].log_text());
    ours[0].kill();

    // Started without the flag, the member must not begin again from an empty log.
    ours[0].extra_args.clear();
    ours[0].start();
    assert_ne!(ours[0].wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        ours[0]
            .log_text()
            .contains("the WAL is elsewhere (--wal-dir) or lost"),
        "{}",
        ours[0].log_text()
    );
}

/// `--logger`, `--log-level` and `--log-outputs` as etcd's command lines write them: the level
/// drops the lines below it, the outputs name where the rest go, and a logger neither knows
/// stops the member with etcd's words.
#[test]
fn log_flags_choose_the_lines_and_where_they_go_as_etcd() {
    let mut flavors = vec![Flavor::Detcd];
    if etcd_available() {
        flavors.push(Flavor::Etcd);
    }
    for flavor in flavors {
        let mut members = cluster(flavor, 1, "log-flags", &["--logger=foo"]);
        members[0].start();
        assert_ne!(members[0].wait_exit(Duration::from_secs(10)), Some(0));
        let log = members[0].log_text();
        assert!(
            log.contains("unknown logger option \"foo\""),
            "{flavor:?}: {log}"
        );
    }

    let mut members = cluster(Flavor::Detcd, 1, "log-outputs", &[]);
    let file = common::data_dir_of(&members[0])
        .parent()
        .expect("the member's temp dir")
        .join("member.log");
    let file_arg = format!("--log-outputs={}", file.display());
    members[0].extra_args = vec![
        "--logger=zap".into(),
        "--log-level=warn".into(),
        file_arg.clone(),
    ];
    start_all(&mut members);
    assert_eq!(stdout(&members[0].etcdctl(&["put", "k", "v"])), "OK\n");
    members[0].terminate();
    let written = std::fs::read_to_string(&file).expect("the log file is made");
    assert!(
        !written.contains("ready to serve"),
        "an info line at warn: {written}"
    );

    members[0].extra_args = vec!["--log-level=info".into(), file_arg];
    start_all(&mut members);
    members[0].terminate();
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("ready to serve client requests"),
        "{written}"
    );
    assert!(written.contains("shutting down"), "{written}");
    assert!(
        !members[0].log_text().contains("ready to serve"),
        "the file only, not stderr: {}",
        members[0].log_text()
    );
}
