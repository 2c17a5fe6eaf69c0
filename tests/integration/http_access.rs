//! `--cors` and `--host-whitelist` on the client port's HTTP endpoints: a detcd member and, when
//! installed, an etcd member started with the same flags answer the same requests with the
//! same statuses, CORS headers and refusals; gRPC calls are not checked.

use crate::common;

use std::io::Read;

use common::{cluster, etcd_available, start_all, Flavor};

const FLAGS: &[&str] = &[
    "--cors",
    "http://a.com:1",
    "--host-whitelist",
    "localhost,example.com",
];

/// (method, path, Host, Origin) of each request sent.
const REQUESTS: &[(&str, &str, &str, &str)] = &[
    ("GET", "/health", "localhost:2379", "http://a.com:1"),
    ("GET", "/health", "localhost", "http://b.com:1"),
    ("GET", "/health", "example.com", ""),
    ("GET", "/health", "127.0.0.1:2379", "http://a.com:1"),
    ("GET", "/health", "LOCALHOST", ""),
    ("OPTIONS", "/v3/kv/range", "localhost", "http://a.com:1"),
    ("OPTIONS", "/v3/kv/range", "evil.com", "http://a.com:1"),
    ("POST", "/v3/kv/range", "example.com:80", "http://a.com:1"),
    ("POST", "/v3/kv/range", "attacker.example:2379", ""),
];

/// What an answer shows of the access rules: its status, the CORS headers, and a refusal's
/// body.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    cors: Vec<String>,
    refusal: Option<String>,
}

fn send(endpoint: &str, (method, path, host, origin): (&str, &str, &str, &str)) -> Seen {
    let mut stream = std::net::TcpStream::connect(endpoint).expect("connect");
    let origin = if origin.is_empty() {
        String::new()
    } else {
        format!("Origin: {origin}\r\n")
    };
    let body = if method == "POST" {
        r#"{"key":"YQ=="}"#
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::send_whole(&mut stream, &request);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status: u16 = head[9..12].parse().expect("a status code");
    let mut cors: Vec<String> = head
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|line| line.starts_with("access-control-"))
        .collect();
    cors.sort();
    let refusal = (status == 421).then(|| body.to_string());
    Seen {
        status,
        cors,
        refusal,
    }
}

fn answers(endpoint: &str) -> Vec<Seen> {
    REQUESTS.iter().map(|r| send(endpoint, *r)).collect()
}

#[test]
fn cors_and_host_whitelist_answer_as_etcd() {
    let mut detcd = cluster(Flavor::Detcd, 1, "access", FLAGS);
    start_all(&mut detcd);
    let seen = answers(&detcd[0].spec.endpoint());
    let allowed = |origin: &str| {
        let mut headers = vec![
            "access-control-allow-headers: accept, content-type, authorization".to_string(),
            "access-control-allow-methods: post, get, options, put, delete".to_string(),
            format!("access-control-allow-origin: {origin}"),
        ];
        headers.sort();
        headers
    };
    let expected: Vec<(u16, Vec<String>)> = vec![
        (200, allowed("http://a.com:1")),
        (200, vec![]),
        (200, vec![]),
        (421, vec![]),
        (421, vec![]),
        (200, allowed("http://a.com:1")),
        (421, vec![]),
        (200, allowed("http://a.com:1")),
        (421, vec![]),
    ];
    let got: Vec<(u16, Vec<String>)> = seen.iter().map(|s| (s.status, s.cors.clone())).collect();
    assert_eq!(got, expected);
    let refusal = seen[3].refusal.as_deref().unwrap();
    assert!(
        refusal.contains("  - e.g. etcd --host-whitelist \"127.0.0.1\"\n"),
        "{refusal}"
    );
    if etcd_available() {
        let mut etcd = cluster(Flavor::Etcd, 1, "access-etcd", FLAGS);
        start_all(&mut etcd);
        assert_eq!(answers(&etcd[0].spec.endpoint()), seen);
    }
}

#[test]
fn a_cors_origin_without_a_port_is_refused_at_start_as_etcd_refuses_it() {
    let mut member = cluster(Flavor::Detcd, 1, "access-bad", &["--cors", "http://a.com"]);
    member[0].start();
    let exit = member[0].wait_exit(std::time::Duration::from_secs(10));
    assert!(exit.is_some_and(|code| code != 0), "{exit:?}");
    let wanted = "URL address does not have the form \"host:port\": http://a.com";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !member[0].log_text().contains(wanted) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = member[0].log_text();
    assert!(log.contains(wanted), "{log}");
}
