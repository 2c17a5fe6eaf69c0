use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &str, path: &str) -> Fields {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a grpc-go client sends: the preface, SETTINGS, then per request a header block
/// (from one encoder, so later blocks index earlier fields) and a DATA frame.
fn client_bytes(authority: &str, requests: u32) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    for i in 0..requests {
        let stream = 2 * i + 1;
        let fields = request(authority, &format!("/etcdserverpb.KV/Range{i}"));
        let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
        bytes.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\x03abc"));
    }
    bytes
}

/// Feeds the bytes in pieces of the given sizes (cycled), as reads would deliver them.
fn repair(bytes: &[u8], pieces: &[usize]) -> Vec<u8> {
    let mut repairer = Repairer::default();
    let mut out = Vec::new();
    let mut at = 0;
    for &size in pieces.iter().cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size.max(1)).min(bytes.len());
        repairer.feed(&bytes[at..end], &mut out).expect("repairs");
        at = end;
    }
    repairer.finish(&mut out);
    out
}

/// The server's view: each header block decoded (one decoder for the connection) and the
/// DATA payloads, in order.
fn server_view(bytes: &[u8]) -> (Vec<Fields>, Vec<Vec<u8>>) {
    assert!(bytes.starts_with(PREFACE));
    let mut decoder = loona_hpack::Decoder::new();
    let (mut blocks, mut data, mut fragment) = (Vec::new(), Vec::new(), Vec::new());
    let mut rest = &bytes[PREFACE.len()..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        match kind {
            HEADERS => fragment.extend_from_slice(headers_payload(flags, payload).unwrap().1),
            CONTINUATION => fragment.extend_from_slice(payload),
            0x0 => data.push(payload.to_vec()),
            _ => {}
        }
        if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
            blocks.push(decoder.decode(&std::mem::take(&mut fragment)).unwrap());
        }
        rest = &rest[FRAME_HEADER + len..];
    }
    (blocks, data)
}

#[test]
fn a_url_authority_loses_its_scheme_on_every_request_of_the_connection() {
    let sent = client_bytes("http://localhost:2379", 5);
    for pieces in [&[usize::MAX][..], &[1], &[7, 3, 100], &[9, 24]] {
        let (blocks, data) = server_view(&repair(&sent, pieces));
        assert_eq!(blocks.len(), 5);
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(
                *block,
                request("localhost:2379", &format!("/etcdserverpb.KV/Range{i}"))
            );
        }
        assert_eq!(data, vec![b"\0\0\0\0\x03abc".to_vec(); 5]);
    }
}

#[test]
fn a_well_formed_authority_goes_through_byte_for_byte() {
    let sent = client_bytes("localhost:2379", 3);
    for pieces in [&[usize::MAX][..], &[1], &[5, 11]] {
        assert_eq!(repair(&sent, pieces), sent);
    }
    let mut repairer = Repairer::default();
    repairer.feed(&sent, &mut Vec::new()).unwrap();
    assert!(repairer.passing_through());
}

#[test]
fn http1_goes_through_untouched() {
    let sent = b"GET /health HTTP/1.1\r\nHost: http://localhost:2379\r\n\r\n".to_vec();
    assert_eq!(repair(&sent, &[1]), sent);
    assert_eq!(repair(&sent, &[usize::MAX]), sent);
}

#[test]
fn padding_priority_and_continuations_are_understood_and_large_blocks_split() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut fields = request("http://127.0.0.1:2379/", "/etcdserverpb.KV/Put");
    fields.push((b"big".to_vec(), vec![b'x'; 40_000]));
    let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
    let mut first = vec![2u8]; // pad length
    first.extend_from_slice(&[0, 0, 0, 0, 16]); // priority: dependency 0, weight 16
    first.extend_from_slice(&block[..100]);
    first.extend_from_slice(&[0, 0]);
    let mut sent = PREFACE.to_vec();
    sent.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &first));
    sent.extend(frame(CONTINUATION, 0, 1, &block[100..30_000]));
    sent.extend(frame(CONTINUATION, END_HEADERS, 1, &block[30_000..]));
    let out = repair(&sent, &[4096]);
    let (blocks, _) = server_view(&out);
    fields[3].1 = b"127.0.0.1:2379".to_vec();
    assert_eq!(blocks, vec![fields]);
    // The rewritten block keeps END_STREAM and the priority, and fits the frame size limit.
    let first_len = u32::from_be_bytes([0, out[24], out[25], out[26]]) as usize;
    assert!(first_len <= MAX_FRAME);
    assert_eq!(out[24 + 3], HEADERS);
    assert_eq!(out[24 + 4], END_STREAM | PRIORITY);
}

#[test]
fn frames_it_cannot_read_are_left_to_the_server() {
    let mut sent = PREFACE.to_vec();
    sent.extend(frame(CONTINUATION, END_HEADERS, 1, b"\x82"));
    sent.extend(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"));
    assert_eq!(repair(&sent, &[3]), sent);
}

#[test]
fn only_a_url_is_cut_down_to_its_host_and_port() {
    assert_eq!(schemeless(b"http://a:1"), Some(&b"a:1"[..]));
    assert_eq!(schemeless(b"https://a:1/x"), Some(&b"a:1"[..]));
    assert_eq!(schemeless(b"a:1"), None);
}
