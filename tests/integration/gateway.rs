//! etcd's JSON gateway (`POST /v3/...`), as curl and etcd's HTTP clients use it: the same calls
//! against a fresh detcd member and a fresh etcd 3.4 member give the same status and the same
//! JSON, but for what names the member (its IDs, term, URLs, version and sizes).

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{cluster, etcd_available, start_all, Flavor};

/// One POST: the status and the body, read to its end.
fn post(endpoint: &str, path: &str, body: &str) -> (u16, String) {
    common::http(endpoint, "POST", path, body)
}

/// The first `count` lines a streaming call answers, then the connection is dropped (which
/// ends the stream on the server).
fn stream_lines(endpoint: &str, path: &str, body: &str, count: usize) -> Vec<Value> {
    let mut reader = BufReader::new(common::http_send(endpoint, "POST", path, body));
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    (0..count)
        .map(|_| {
            line.clear();
            reader.read_line(&mut line).expect("a line within 15 s");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
        })
        .collect()
}

/// `value` without what names the member that answered.
fn anonymous(mut value: Value) -> Value {
    strip(&mut value);
    value
}

fn strip(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::Object(header)) = fields.get_mut("header") {
                for naming in ["cluster_id", "member_id", "raft_term"] {
                    header.remove(naming);
                }
            }
            fields.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"))
}

/// The unary calls compared, in order, each from the state the ones before left. (Not the
/// alarm list: etcd 3.4 answers it without a header, 3.5 and detcd with one.)
const CALLS: &[(&str, &str)] = &[
    ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    ("/v3beta/kv/range", r#"{"key":"Zm9v","count_only":true}"#),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","bogus":1,"sort_order":"DESCEND"}"#,
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
    ("/v3/kv/range", ""),
    ("/v3/kv/put", r#"{"value":"YmFy"}"#),
    (
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"MQ==","lease":"99"}"#,
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"0"}],
            "success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}],
            "failure":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"Yg==","prev_kv":true}}]}"#,
    ),
    (
        "/v3/kv/deleterange",
        r#"{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}"#,
    ),
    ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#),
    ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#),
    ("/v3/kv/put", r#"{"key":"bA==","value":"MQ==","lease":"7"}"#),
    ("/v3/lease/leases", "{}"),
    ("/v3/lease/revoke", r#"{"ID":7}"#),
    ("/v3/kv/lease/revoke", r#"{"ID":7}"#),
    (
        "/v3/kv/range",
        r#"{"key":"AA==","range_end":"AA==","keys_only":true}"#,
    ),
    ("/v3/kv/compaction", r#"{"revision":"3"}"#),
    ("/v3/kv/range", r#"{"key":"Zm9v","revision":2}"#),
];

/// Every call of [`CALLS`], anonymous: its status and JSON.
fn answers(endpoint: &str) -> Vec<(u16, Value)> {
    CALLS
        .iter()
        .map(|(path, body)| {
            let (status, answer) = post(endpoint, path, body);
            (status, anonymous(json(&answer)))
        })
        .collect()
}

/// The streams' answers: watches from the past (created, then the events) and from now (created,
/// then the progress it was asked for), a keepalive of a new lease.
fn stream_answers(endpoint: &str) -> Vec<Value> {
    let mut lines = stream_lines(
        endpoint,
        "/v3/watch",
        r#"{"create_request":{"key":"Yg==","start_revision":"4","prev_kv":true}}"#,
        2,
    );
    lines.extend(stream_lines(
        endpoint,
        "/v3/watch",
        r#"{"create_request":{"key":"AA==","range_end":"AA==","watch_id":3}} {"progress_request":{}}"#,
        2,
    ));
    lines.extend(stream_lines(
        endpoint,
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v","start_revision":"2"}}"#,
        2,
    ));
    post(endpoint, "/v3/lease/grant", r#"{"TTL":30,"ID":"12"}"#);
    lines.extend(stream_lines(
        endpoint,
        "/v3/lease/keepalive",
        r#"{"ID":"12"}"#,
        1,
    ));
    lines.into_iter().map(anonymous).collect()
}

#[test]
fn unary_calls_and_streams_answer_as_etcd_3_4() {
    let mut members = cluster(Flavor::Detcd, 1, "gateway", &[]);
    start_all(&mut members);
    let at = members[0].spec.endpoint();
    let ours = answers(&at);
    let our_streams = stream_answers(&at);

    assert_eq!(ours[0].0, 200);
    assert_eq!(ours[2].1["kvs"][0]["value"], "YmF6");
    assert_eq!(ours[2].1["count"], "1", "64-bit integers are strings");
    let future = &ours[5];
    assert_eq!(future.0, 400);
    assert_eq!(
        future.1["error"],
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(future.1["code"], 11);
    assert_eq!(our_streams[0]["result"]["created"], true);
    assert_eq!(our_streams[3]["result"]["watch_id"], "-1");

    if !etcd_available() {
        eprintln!("etcd is not installed: detcd's answers checked alone");
        return;
    }
    let mut etcd = cluster(Flavor::Etcd, 1, "gateway-etcd", &[]);
    start_all(&mut etcd);
    let theirs = answers(&etcd[0].spec.endpoint());
    let their_streams = stream_answers(&etcd[0].spec.endpoint());
    for ((call, ours), theirs) in CALLS.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours, theirs, "{call:?}");
    }
    assert_eq!(our_streams, their_streams);
}

#[test]
fn bad_requests_get_grpc_gateways_statuses() {
    let mut members = cluster(Flavor::Detcd, 1, "gateway-bad", &[]);
    start_all(&mut members);
    let at = members[0].spec.endpoint();

    // JSON that does not parse: InvalidArgument for a call, Unknown for a stream (etcd's words
    // are Go's JSON decoder's; only the code and status are compared).
    let (status, body) = post(&at, "/v3/kv/range", "garbage");
    assert_eq!((status, &json(&body)["code"]), (400, &Value::from(3)));
    let (status, body) = post(&at, "/v3/watch", "junk");
    assert_eq!((status, &json(&body)["code"]), (500, &Value::from(2)));
    let (status, body) = post(&at, "/v3/kv/range", r#"{"key":"!!"}"#);
    assert_eq!((status, &json(&body)["code"]), (400, &Value::from(3)));
    let (status, body) = post(&at, "/v3/kv/range", r#"{"key":"Zm9v","sort_order":"UP"}"#);
    assert_eq!((status, &json(&body)["code"]), (400, &Value::from(3)));

    assert_eq!(post(&at, "/v3/nonexistent", "{}").0, 404);
    assert_eq!(post(&at, "/v3alpha/kv/range", "{}").0, 404);
    assert_eq!(common::http(&at, "GET", "/v3/kv/range", "").0, 405);
    // A browser's preflight for a call from another origin is let through, as etcd does.
    let mut preflight = common::http_send(&at, "OPTIONS", "/v3/kv/put", "");
    let mut answer = String::new();
    preflight.read_to_string(&mut answer).unwrap();
    assert_eq!(&answer[9..12], "200", "{answer}");
    let headers = answer.to_ascii_lowercase();
    assert!(
        headers.contains("access-control-allow-origin: *"),
        "{answer}"
    );
    // Auth is served over JSON too; while it is off, its status says so (false is omitted, as
    // the gateway omits every default).
    let (status, body) = post(&at, "/v3/auth/status", "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["enabled"], Value::Null, "{body}");
    assert!(json(&body)["header"]["revision"].is_string(), "{body}");

    // A body past gRPC's receive limit is refused as that limit refuses a message, not read
    // into memory.
    let huge = format!(r#"{{"key":"Zm9v","value":"{}"}}"#, "A".repeat(3 << 20));
    let (status, body) = post(&at, "/v3/kv/put", &huge);
    assert_eq!(
        (status, &json(&body)["code"]),
        (429, &Value::from(8)),
        "{body}"
    );
    // And the member still answers.
    assert_eq!(post(&at, "/v3/kv/range", r#"{"key":"Zm9v"}"#).0, 200);
}

#[test]
fn watch_lock_and_election_serve_over_json() {
    let mut members = cluster(Flavor::Detcd, 1, "gateway-recipes", &[]);
    start_all(&mut members);
    let at = members[0].spec.endpoint();

    // A watch stays open after the request body ends, and gets the events that follow.
    let mut reader = BufReader::new(common::http_send(
        &at,
        "POST",
        "/v3/watch",
        r#"{"create_request":{"key":"dw=="}}"#,
    ));
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(json(&line)["result"]["created"], true, "{line}");
    let started = Instant::now();
    assert_eq!(
        post(&at, "/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#).0,
        200
    );
    line.clear();
    reader.read_line(&mut line).unwrap();
    let event = &json(&line)["result"]["events"][0];
    assert_eq!(event["kv"]["value"], "MQ==", "{line}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let (status, body) = post(&at, "/v3/lock/lock", r#"{"name":"bXk="}"#);
    assert_eq!(status, 200, "{body}");
    let key = json(&body)["key"].as_str().unwrap().to_string();
    let (status, body) = post(&at, "/v3/lock/unlock", &format!(r#"{{"key":"{key}"}}"#));
    assert_eq!(status, 200, "{body}");

    let (status, body) = post(
        &at,
        "/v3/election/campaign",
        r#"{"name":"ZWw=","value":"djE="}"#,
    );
    assert_eq!(status, 200, "{body}");
    let leader = json(&body)["leader"].clone();
    let observed = stream_lines(&at, "/v3/election/observe", r#"{"name":"ZWw="}"#, 1);
    assert_eq!(observed[0]["result"]["kv"]["value"], "djE=");
    let (status, body) = post(&at, "/v3/election/leader", r#"{"name":"ZWw="}"#);
    assert_eq!(
        (status, &json(&body)["kv"]["value"]),
        (200, &Value::from("djE="))
    );
    let resign = format!(r#"{{"leader":{leader}}}"#);
    assert_eq!(post(&at, "/v3/election/resign", &resign).0, 200);

    let (status, body) = post(&at, "/v3/cluster/member/list", "{}");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["members"][0]["name"], members[0].spec.name);
    let (status, body) = post(&at, "/v3/maintenance/status", "{}");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["leader"], json(&body)["header"]["member_id"]);
}
