//! Bad input gets etcd's error and never a crash: oversized requests, too many txn ops, empty
//! keys, inverted ranges, a torn WAL tail (truncated on restart) and a corrupted WAL record in
//! the middle (the member refuses to start, with a clear message).

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, kv_client, start_all, stdout, wait_until_writable, Flavor, Member};
use detcd::proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::Code;

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value),
        ..Default::default()
    }
}

#[test]
fn bad_requests_get_etcds_errors_and_the_member_keeps_serving() {
    let mut members = cluster(Flavor::Detcd, 1, "bad", &[]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = kv_client(&members[0]).await;

        // Just over --max-request-bytes (1.5 MiB): etcd's own error.
        let err = client
            .put(put("big", vec![b'x'; 1_600_000]))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        // Past the gRPC limit (max-request-bytes + 512 KiB): refused by the transport.
        let err = client
            .put(put("huge", vec![b'x'; 3_000_000]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

        let err = client.put(put("", b"v".to_vec())).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "etcdserver: key is not provided")
        );

        let ops: Vec<RequestOp> = (0..129)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(put(
                    &format!("t{i}"),
                    vec![],
                ))),
            })
            .collect();
        let err = client
            .txn(TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            )
        );

        let dup = vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(put("d", vec![]))),
            },
            RequestOp {
                request: Some(request_op::Request::RequestPut(put("d", vec![]))),
            },
        ];
        let err = client
            .txn(TxnRequest {
                success: dup,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )
        );

        // An inverted range is simply empty, as in etcd.
        let inverted = RangeRequest {
            key: Bytes::from("b"),
            range_end: Bytes::from("a"),
            ..Default::default()
        };
        let resp = client.range(inverted).await.unwrap().into_inner();
        assert!(resp.kvs.is_empty() && resp.count == 0);

        let err = client
            .range(RangeRequest {
                key: Bytes::from("a"),
                revision: 1000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            )
        );

        // Still serving.
        client
            .put(put("fine", b"yes".to_vec()))
            .await
            .expect("the member survived bad input");
    });
}

/// One call of `path` on a raw HTTP/2 connection: its body as given, its grpc-status and
/// grpc-message (from the headers of a trailers-only answer, or from the trailers).
async fn raw_call(
    endpoint: &str,
    path: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (String, String) {
    use http_body_util::BodyExt;
    let socket = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(socket);
    let (mut requests, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{endpoint}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let response = requests.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.unwrap().trailers().cloned();
    let status = trailers.unwrap_or(parts.headers);
    let field = |name: &str| {
        status
            .get(name)
            .map_or(String::new(), |v| percent_decoded(v.to_str().unwrap()))
    };
    (field("grpc-status"), field("grpc-message"))
}

/// grpc-message travels percent-encoded.
fn percent_decoded(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex: Vec<u8> = bytes.by_ref().take(2).collect();
        let hex = std::str::from_utf8(&hex).unwrap();
        out.push(u8::from_str_radix(hex, 16).unwrap());
    }
    String::from_utf8(out).unwrap()
}

fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn malformed_grpc_messages_get_statuses_and_the_member_keeps_serving() {
    use prost::Message;
    let mut members = cluster(Flavor::Detcd, 1, "wire", &[]);
    start_all(&mut members);
    let endpoint = members[0].spec.endpoint();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let put = put("wire", b"v".to_vec()).encode_to_vec();
        let call = |path: &'static str, encoding, body| raw_call(&endpoint, path, encoding, body);
        let kv_put = "/etcdserverpb.KV/Put";
        assert_eq!(call(kv_put, None, framed(0, &put)).await.0, "0");
        let (code, message) = call(kv_put, None, framed(1, &put)).await;
        assert_eq!(code, "13");
        assert!(message.contains("compressed-flag"), "{message}");
        let (code, message) = call(kv_put, None, framed(9, &put)).await;
        assert_eq!(code, "13");
        assert!(message.contains("invalid compression flag"), "{message}");
        let missing = call(kv_put, None, vec![]).await;
        assert_eq!(missing, ("13".into(), "Missing request message.".into()));
        let truncated = call(kv_put, None, framed(0, &put)[..7].to_vec()).await;
        assert_eq!(
            truncated,
            ("13".into(), "Unexpected EOF decoding stream.".into())
        );
        // Not a PutRequest: field 1 with wire type 7, which protobuf does not have.
        let (code, _) = call(kv_put, None, framed(0, &[0x0f, 0x01])).await;
        assert_eq!(code, "13");
        let (code, message) = call(kv_put, Some("gzip"), framed(0, &put)).await;
        assert_eq!(code, "12");
        assert!(message.contains("gzip"), "{message}");
        let unknown = call("/etcdserverpb.KV/Nothing", None, framed(0, &put)).await;
        assert_eq!(unknown.0, "12");
        let unknown = call("/etcdserverpb.Lease/Nothing", None, framed(0, &put)).await;
        assert_eq!(unknown.0, "12");
        // A keepalive stream whose only message cannot be decoded ends with nothing to answer.
        let keepalive = "/etcdserverpb.Lease/LeaseKeepAlive";
        assert_eq!(call(keepalive, None, framed(0, &[0x0f])).await.0, "0");
        // A message past the receive limit is refused from its prefix, as etcd refuses it.
        let mut huge = framed(0, &[]);
        huge[1..5].copy_from_slice(&(3_000_000u32).to_be_bytes());
        let (code, message) = call(kv_put, None, huge).await;
        assert_eq!(code, "8");
        assert!(
            message.contains("received message larger than max"),
            "{message}"
        );

        let mut client = kv_client(&members[0]).await;
        let range = RangeRequest {
            key: Bytes::from("wire"),
            ..Default::default()
        };
        let answer = client.range(range).await.unwrap().into_inner();
        assert_eq!(
            answer.kvs.len(),
            1,
            "the first, well-formed put was applied"
        );
    });
}

/// The WAL segment files of a member, oldest first.
fn wal_segments(member: &Member) -> Vec<PathBuf> {
    let dir = member.spec.data_dir.join("member").join("wal");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn write_some(member: &Member, prefix: &str, n: usize) {
    for i in 0..n {
        let out = member.etcdctl(&["put", &format!("{prefix}{i}"), &format!("value-{i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Where the written part of a preallocated segment ends (it is zero-filled after).
fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
}

/// `--max-range-bytes` bounds what one Range may answer with (keys and values, the values of
/// the past read back from the cold segments included): past it the range is refused before
/// its response is built, and narrower reads of the same keys still work.
#[test]
fn a_range_larger_than_max_range_bytes_is_refused() {
    let mut members = cluster(Flavor::Detcd, 1, "range-max", &["--max-range-bytes=4000"]);
    start_all(&mut members);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = kv_client(&members[0]).await;
        // Ten keys "k0".."k9" of 2 + 300 bytes: 3,020 bytes in all.
        for i in 0..10 {
            client
                .put(put(&format!("k{i}"), vec![b'a'; 300]))
                .await
                .unwrap();
        }
        let revision = client.range(range("k", "l")).await.unwrap().into_inner();
        assert_eq!(revision.kvs.len(), 10);
        let before = revision.header.unwrap().revision;
        // Each value grows to 400 bytes: 4,020 in all, the old values now cold.
        for i in 0..10 {
            client
                .put(put(&format!("k{i}"), vec![b'b'; 400]))
                .await
                .unwrap();
        }
        let too_large = |err: tonic::Status| {
            assert_eq!(
                (err.code(), err.message()),
                (
                    Code::ResourceExhausted,
                    "etcdserver: range response is larger than --max-range-bytes"
                )
            );
        };
        too_large(client.range(range("k", "l")).await.unwrap_err());
        let mut limited = range("k", "l");
        limited.limit = 9;
        assert_eq!(
            client.range(limited).await.unwrap().into_inner().kvs.len(),
            9
        );
        let mut keys_only = range("k", "l");
        keys_only.keys_only = true;
        assert_eq!(
            client
                .range(keys_only)
                .await
                .unwrap()
                .into_inner()
                .kvs
                .len(),
            10
        );
        // The past, read from the cold segments: the old 3,020 bytes fit.
        let mut past = range("k", "l");
        past.revision = before;
        let old = client.range(past).await.unwrap().into_inner();
        assert_eq!(old.kvs.len(), 10);
        assert!(old.kvs.iter().all(|kv| kv.value[..] == [b'a'; 300]));
        // "k" holds 3,700 bytes for one revision, then 1: [k, k1) is 403 bytes now, but
        // 3,701 + 402 at that revision, which the cold value alone pushes past the bound.
        client.put(put("k", vec![b'c'; 3700])).await.unwrap();
        client.put(put("k", vec![b'd'; 1])).await.unwrap();
        assert_eq!(
            client
                .range(range("k", "k1"))
                .await
                .unwrap()
                .into_inner()
                .kvs
                .len(),
            2
        );
        let mut past = range("k", "k1");
        past.revision = before + 11;
        too_large(client.range(past).await.unwrap_err());
    });
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::from(key.to_string()),
        range_end: Bytes::from(end.to_string()),
        ..Default::default()
    }
}

#[test]
fn torn_wal_tail_is_truncated_on_restart() {
    let mut members = cluster(Flavor::Detcd, 1, "torn", &[]);
    start_all(&mut members);
    write_some(&members[0], "k", 20);
    members[0].kill();
    let last = wal_segments(&members[0]).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).unwrap();
    let end = written_len(&bytes);
    // Tear the last record: its final bytes never reached the disk, plus garbage after it.
    bytes[end - 6..end].fill(0);
    bytes[end..end + 3].copy_from_slice(&[0xde, 0xad, 0xbe]);
    std::fs::write(&last, &bytes).unwrap();

    members[0].start();
    wait_until_writable(&members[0], Duration::from_secs(20));
    assert_eq!(
        stdout(&members[0].etcdctl(&["get", "k5", "--print-value-only"])),
        "value-5\n"
    );
    assert!(
        members[0].log_text().contains("torn"),
        "the truncation is logged:\n{}",
        members[0].log_text()
    );
}

#[test]
fn corrupted_wal_record_in_the_middle_refuses_to_start() {
    let mut members = cluster(Flavor::Detcd, 1, "corrupt", &[]);
    start_all(&mut members);
    write_some(&members[0], "k", 20);
    members[0].kill();
    let first = wal_segments(&members[0]).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    let end = written_len(&bytes);
    // Flip one bit early in the log, well before the last record.
    let victim = end / 4;
    bytes[victim] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();

    members[0].start();
    let code = members[0].wait_exit(Duration::from_secs(20));
    let log = members[0].log_text();
    assert!(
        matches!(code, Some(c) if c != 0),
        "must refuse to start, got {code:?}:\n{log}"
    );
    assert!(
        log.to_lowercase().contains("corrupt"),
        "the error says what is wrong:\n{log}"
    );
}
