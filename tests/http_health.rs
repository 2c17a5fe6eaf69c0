//! etcd's HTTP endpoints on the client port (`/health`, `/livez`, `/readyz`, `/version`), and
//! alarms as etcd's clients raise and clear them: NOSPACE refuses puts but not deletes, until
//! `etcdctl alarm disarm`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{cluster, error_line, etcdctl, start_all, Flavor};
use detcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use detcd::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};

/// A plain HTTP/1.1 GET: the status code and the body.
fn get(endpoint: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("a status code");
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

async fn alarm(endpoint: &str, action: AlarmAction) {
    let mut client = MaintenanceClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect");
    client
        .alarm(AlarmRequest {
            action: action as i32,
            member_id: 0,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .expect("alarm");
}

#[test]
fn health_version_and_probes_answer_as_etcd_3_6() {
    let mut members = cluster(Flavor::Detcd, 3, "http", &[]);
    start_all(&mut members);
    let at = members[0].spec.endpoint();
    assert_eq!(
        get(&at, "/health"),
        (200, r#"{"health":"true","reason":""}"#.into())
    );
    assert_eq!(
        get(&at, "/version"),
        (
            200,
            r#"{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}"#.into()
        )
    );
    assert_eq!(get(&at, "/livez"), (200, "ok\n".into()));
    assert_eq!(
        get(&at, "/readyz?verbose"),
        (
            200,
            "[+]data_corruption ok\n[+]linearizable_read ok\n[+]non_learner ok\n\
             [+]serializable_read ok\nok\n"
                .into()
        )
    );
    assert_eq!(get(&at, "/readyz/non_learner"), (200, "ok\n".into()));
    assert_eq!(get(&at, "/nothing").0, 404);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(alarm(&at, AlarmAction::Activate));
    let (status, body) = get(&at, "/health");
    assert_eq!(
        (status, body.trim()),
        (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
    );
    assert_eq!(get(&at, "/health?exclude=NOSPACE").0, 200);
    let refused = etcdctl(&at, &["put", "k", "v"], None);
    assert_eq!(
        error_line(&refused),
        "Error: etcdserver: mvcc: database space exceeded"
    );
    assert!(
        etcdctl(&at, &["del", "k"], None).status.success(),
        "deletes go on"
    );
    assert!(etcdctl(&at, &["alarm", "disarm"], None).status.success());
    assert!(etcdctl(&at, &["put", "k", "v"], None).status.success());

    // Alone, the member loses its leader: unhealthy, though still live and serving reads
    // of its own state.
    members[1].kill();
    members[2].kill();
    // Until it notices (an election timeout), its quorum read times out instead.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&at, "/health");
        if body.trim() == r#"{"health":"false","reason":"RAFT NO LEADER"}"# {
            assert_eq!(status, 503);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'no leader' alone: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(&at, "/health?serializable=true").0, 200);
    assert_eq!(get(&at, "/livez").0, 200);
    let (status, body) = get(&at, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("[-]linearizable_read failed: "), "{body}");
    assert!(body.contains("[+]serializable_read ok"), "{body}");
}
