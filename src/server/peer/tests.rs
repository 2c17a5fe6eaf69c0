//! The transport on real loopback sockets: what arrives, what is refused, and that nothing a
//! remote sends can stop a listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::outbound::{Backoff, QUEUE_MESSAGES_MAX};
use super::wire::{self, Handshake, WireError, HANDSHAKE_BYTES};
use super::*;
use crate::node::{Input, PeerMessage};
use crate::server::driver::Event;
use crate::server::inbox;
use crate::server::tls::PeerAcceptor;
use crate::server::tls::{PeerConnector, TlsFiles};

const CLUSTER: u64 = 0xc1;
const WAIT: Duration = Duration::from_secs(10);

fn identity(member_id: MemberId) -> PeerIdentity {
    PeerIdentity {
        cluster_id: CLUSTER,
        member_id,
    }
}

fn raft_message(from: MemberId, to: MemberId, index: u64) -> RaftMessage {
    let mut msg = RaftMessage::default();
    msg.set_msg_type(MessageType::MsgAppend);
    msg.from = from;
    msg.to = to;
    msg.term = 3;
    msg.index = index;
    msg
}

fn peer_message(from: MemberId, to: MemberId, index: u64) -> PeerMessage {
    PeerMessage::Raft(Box::new(raft_message(from, to, index)))
}

type Delivered = mpsc::UnboundedReceiver<(MemberId, PeerMessage)>;

/// A listening member whose deliveries land in a channel the test reads.
struct Listening {
    addr: SocketAddr,
    delivered: Delivered,
    task: JoinHandle<()>,
}

async fn listen_on(addr: SocketAddr, me: PeerIdentity) -> Listening {
    listen_with(addr, me, None).await
}

async fn listen_with(addr: SocketAddr, me: PeerIdentity, tls: Option<PeerAcceptor>) -> Listening {
    let listener = TcpListener::bind(addr).await.expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let (tx, delivered) = mpsc::unbounded_channel();
    let task = tokio::spawn(serve(
        listener,
        (tls, None),
        me,
        Default::default(),
        move |from, msg| {
            let _ = tx.send((from, msg));
        },
    ));
    Listening {
        addr,
        delivered,
        task,
    }
}

async fn listen(me: PeerIdentity) -> Listening {
    listen_on("127.0.0.1:0".parse().expect("literal address"), me).await
}

/// A listening member whose connections its node's thread reads, as the server's plain ones
/// are: a thread waits on the inbox and passes each peer message on to the test's channel.
async fn listen_by_node(me: PeerIdentity) -> Listening {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let (tx, delivered) = mpsc::unbounded_channel();
    let (sender, mut inbox) = inbox::channel().expect("an epoll instance");
    std::thread::spawn(move || {
        while !tx.is_closed() {
            let (mut events, mut inputs) = (Vec::new(), Vec::new());
            inbox.receive(Duration::from_millis(20), 64, &mut events, &mut inputs);
            for input in inputs {
                if let Input::Peer { from, msg } = input {
                    let _ = tx.send((from, msg));
                }
            }
        }
    });
    let hand_over: HandOver = Arc::new(move |peer| {
        sender.send(Event::PeerConnection(Box::new(peer)));
    });
    let task = tokio::spawn(serve(
        listener,
        (None, Some(hand_over)),
        me,
        Default::default(),
        |from, msg| panic!("the listener's task delivered {msg:?} from {from}"),
    ));
    Listening {
        addr,
        delivered,
        task,
    }
}

fn sender_to(me: PeerIdentity, to: MemberId, addr: SocketAddr) -> PeerSender {
    sender_with(me, to, addr, None)
}

fn sender_with(
    me: PeerIdentity,
    to: MemberId,
    addr: SocketAddr,
    tls: Option<PeerConnector>,
) -> PeerSender {
    PeerSender::new(
        me,
        BTreeMap::from([(to, addr.to_string())]),
        Arc::new(|_| {}),
        tls,
    )
}

/// Members 1 and 2 send each other twenty messages, which arrive in order.
async fn exchange_twenty(one: (&PeerSender, &mut Listening), two: (&PeerSender, &mut Listening)) {
    for index in 0..20 {
        one.0.send(2, peer_message(1, 2, index));
        two.0.send(1, peer_message(2, 1, index));
    }
    for index in 0..20 {
        let to_two = next_delivery(&mut two.1.delivered).await;
        assert_eq!(to_two, (1, peer_message(1, 2, index)));
        let to_one = next_delivery(&mut one.1.delivered).await;
        assert_eq!(to_one, (2, peer_message(2, 1, index)));
    }
}

async fn next_delivery(delivered: &mut Delivered) -> (MemberId, PeerMessage) {
    timeout(WAIT, delivered.recv())
        .await
        .expect("a message within the wait")
        .expect("listener alive")
}

/// Encodes a message as the wire carries it, for tests that write raw bytes.
async fn frames_of(msg: &RaftMessage) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = msg.write_to_bytes().expect("encodable");
    wire::write_message(&mut out, &bytes, wire::Kind::Raft)
        .await
        .expect("writing to a Vec");
    out
}

/// Writes `bytes` on a fresh connection and asserts the listener closes it.
async fn assert_connection_closed(addr: SocketAddr, bytes: &[u8], case: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The listener may close before reading all of it; a failed write is part of the outcome.
    let _ = stream.write_all(bytes).await;
    // Half-close, so a listener waiting for the rest of a message sees the stream end.
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 64];
    let read = timeout(WAIT, stream.read(&mut sink)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{case}: listener wrote {n} bytes"),
        Err(_) => panic!("{case}: connection still open"),
    }
}

#[tokio::test]
async fn two_members_exchange_messages_in_both_directions() {
    let mut one = listen(identity(1)).await;
    let mut two = listen(identity(2)).await;
    let one_to_two = sender_to(identity(1), 2, two.addr);
    let two_to_one = sender_to(identity(2), 1, one.addr);
    exchange_twenty((&one_to_two, &mut one), (&two_to_one, &mut two)).await;
    let stats = one_to_two.stats();
    assert_eq!((stats.sent, stats.dropped, stats.connects), (20, 0, 1));
    assert_eq!(one_to_two.peer_stats(2), Some(stats));
}

/// The driver's thread is not a tokio thread: what it sends goes straight to the socket once
/// the connection is up, and every message arrives once, in order, batches or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_from_a_thread_outside_tokio_arrive_in_order() {
    let mut two = listen(identity(2)).await;
    let sender = Arc::new(sender_to(identity(1), 2, two.addr));
    let from_outside = |sender: Arc<PeerSender>, batches: std::ops::Range<u64>| {
        std::thread::spawn(move || {
            for batch in batches {
                let messages = (0..10)
                    .map(|i| (2, peer_message(1, 2, batch * 10 + i)))
                    .collect();
                sender.send_all(messages);
            }
        })
    };
    from_outside(sender.clone(), 0..1)
        .join()
        .expect("sender thread");
    assert_eq!(
        next_delivery(&mut two.delivered).await.1,
        peer_message(1, 2, 0)
    );
    from_outside(sender.clone(), 1..50)
        .join()
        .expect("sender thread");
    for index in 1..500 {
        assert_eq!(
            next_delivery(&mut two.delivered).await,
            (1, peer_message(1, 2, index))
        );
    }
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.dropped, stats.connects), (500, 0, 1));
}

fn snapshot_message(data_bytes: usize) -> RaftMessage {
    let mut msg = raft_message(1, 2, 7);
    msg.set_msg_type(MessageType::MsgSnapshot);
    // A pattern that is not periodic in the chunk size, so a misplaced chunk would show.
    let data: Vec<u8> = (0..data_bytes).map(|i| (i % 251) as u8).collect();
    msg.mut_snapshot().set_data(data.into());
    msg
}

#[tokio::test]
async fn five_mib_snapshot_arrives_intact_through_chunks() {
    five_mib_snapshot_arrives_intact(listen(identity(2)).await).await;
}

#[tokio::test]
async fn five_mib_snapshot_arrives_intact_when_the_node_reads() {
    five_mib_snapshot_arrives_intact(listen_by_node(identity(2)).await).await;
}

async fn five_mib_snapshot_arrives_intact(mut two: Listening) {
    let sender = sender_to(identity(1), 2, two.addr);
    let big = snapshot_message(5 << 20);
    sender.send(2, PeerMessage::Raft(Box::new(big.clone())));
    sender.send(2, peer_message(1, 2, 8)); // and the stream continues after it
    assert_eq!(
        next_delivery(&mut two.delivered).await,
        (1, PeerMessage::Raft(Box::new(big)))
    );
    assert_eq!(
        next_delivery(&mut two.delivered).await,
        (1, peer_message(1, 2, 8))
    );
}

/// A snapshot for a follower leaves the node as a view of its key space; the peer task encodes
/// it (off the node thread) and the follower receives the message with the data filled in.
#[tokio::test]
async fn a_snapshot_is_encoded_by_the_peer_task_as_it_is_sent() {
    use crate::mvcc::KeySpace;
    use crate::node::OutgoingSnapshot;
    use crate::proto::etcdserverpb::PutRequest;

    let mut two = listen(identity(2)).await;
    let sender = sender_to(identity(1), 2, two.addr);
    let mut kv = KeySpace::new();
    for i in 0..1_000 {
        kv.put(&PutRequest {
            key: format!("key-{i}").into(),
            value: vec![7u8; 100].into(),
            ..Default::default()
        })
        .unwrap();
    }
    let mut msg = raft_message(1, 2, 7);
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.mut_snapshot().mut_metadata().index = 7;
    let view = crate::state::State::from_key_space(kv.clone()).view();
    // The store moves on after the view is taken; the snapshot keeps its moment.
    kv.put(&PutRequest {
        key: "later".into(),
        value: "x".into(),
        ..Default::default()
    })
    .unwrap();
    sender.send_snapshot(2, OutgoingSnapshot { msg, view }, Default::default());
    let (from, PeerMessage::Raft(got)) = next_delivery(&mut two.delivered).await else {
        panic!("a raft message");
    };
    assert_eq!(from, 1);
    assert_eq!(got.get_msg_type(), MessageType::MsgSnapshot);
    assert_eq!(got.get_snapshot().get_metadata().index, 7);
    let decoded = crate::state::State::decode_snapshot(&got.get_snapshot().data)
        .expect("decodes")
        .kv()
        .clone();
    assert_eq!(decoded.current_revision(), 1_001);
    assert_eq!(decoded.live_key_count(), 1_000);
}

/// Splits raw wire bytes into (flags, payload length) per frame.
fn frame_layout(mut bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let length = u32::from_be_bytes(bytes[0..4].try_into().expect("header")) as usize;
        frames.push((bytes[4], length));
        bytes = &bytes[9 + length..];
    }
    frames
}

#[tokio::test]
async fn large_messages_are_cut_into_one_mib_chunks_and_small_ones_are_not() {
    let small = frame_layout(&frames_of(&snapshot_message(FRAME_PAYLOAD_BYTES_MAX - 64)).await);
    assert_eq!(small.len(), 1);
    assert_eq!(small[0].0, 0);
    let big = frame_layout(&frames_of(&snapshot_message(5 << 20)).await);
    assert_eq!(big.len(), 6);
    assert!(big[..5]
        .iter()
        .all(|&(flags, length)| flags == 1 && length == CHUNK_BYTES_MAX));
    assert_eq!(big[5].0, 0);
}

#[tokio::test]
async fn reassembly_past_the_bound_is_refused() {
    let bytes = frames_of(&snapshot_message(3 << 20)).await;
    let mut reader = BufReader::new(&bytes[..]);
    let outcome = wire::read_message(&mut reader, 2 << 20).await;
    assert!(
        matches!(outcome, Err(WireError::MessageTooLarge(_))),
        "{outcome:?}"
    );
}

/// A chunked snapshot is reassembled, by either reader, in a buffer sized from its first
/// chunk rather than one that doubled on the way (8 MiB for these 5).
#[tokio::test]
async fn a_chunked_snapshot_is_reassembled_in_a_buffer_of_its_size() {
    let message = snapshot_message(5 << 20);
    let length = message.compute_size() as usize;
    let bytes = frames_of(&message).await;
    let (_, by_task) = wire::read_message(&mut BufReader::new(&bytes[..]), MESSAGE_BYTES_MAX)
        .await
        .unwrap()
        .unwrap();
    let mut reader = wire::MessageReader::new(MESSAGE_BYTES_MAX).with_bytes(&bytes);
    let (_, by_node) = reader.next().unwrap().unwrap();
    for reassembled in [by_task, by_node] {
        assert_eq!(reassembled.len(), length);
        assert!(
            reassembled.capacity() <= length + 256,
            "{} bytes held for {length}",
            reassembled.capacity()
        );
    }
}

/// The raft messages a reader for the node's thread takes from `bytes` arriving in pieces of
/// `piece` bytes, and how the stream's end was judged.
fn read_in_pieces(bytes: &[u8], piece: u64, max: usize) -> Result<Vec<RaftMessage>, WireError> {
    let mut reader = wire::MessageReader::new(max);
    let mut source = bytes;
    let mut taken = Vec::new();
    loop {
        while let Some((kind, message)) = reader.next()? {
            assert_eq!(kind, wire::Kind::Raft);
            taken.push(RaftMessage::parse_from_bytes(&message).expect("a raft message"));
        }
        if reader.read_from(&mut std::io::Read::take(&mut source, piece))? == 0 {
            reader.ended()?;
            return Ok(taken);
        }
    }
}

#[tokio::test]
async fn the_node_s_reader_takes_whole_messages_however_their_bytes_arrive() {
    let big = snapshot_message(5 << 20);
    let sent = [raft_message(1, 2, 1), big, raft_message(1, 2, 3)];
    let mut bytes = Vec::new();
    for msg in &sent {
        bytes.extend(frames_of(msg).await);
    }
    for piece in [3, 4096, 1 << 20] {
        let taken = read_in_pieces(&bytes, piece, MESSAGE_BYTES_MAX).expect("whole messages");
        assert!(taken == sent, "pieces of {piece} bytes");
    }
    let cut = read_in_pieces(&bytes[..bytes.len() - 5], 4096, MESSAGE_BYTES_MAX);
    assert!(matches!(cut, Err(WireError::TruncatedMessage)), "{cut:?}");
    let inside_chunks = read_in_pieces(&bytes[..3 << 20], 4096, MESSAGE_BYTES_MAX);
    assert!(
        matches!(inside_chunks, Err(WireError::TruncatedMessage)),
        "{inside_chunks:?}"
    );
    let bounded = read_in_pieces(&bytes, 4096, 2 << 20);
    assert!(
        matches!(bounded, Err(WireError::MessageTooLarge(_))),
        "{bounded:?}"
    );
}

#[tokio::test]
async fn foreign_cluster_is_rejected_and_nothing_is_delivered() {
    let mut two = listen(identity(2)).await;
    let foreign = PeerIdentity {
        cluster_id: CLUSTER + 1,
        member_id: 1,
    };
    let handshake = Handshake {
        cluster_id: foreign.cluster_id,
        from: 1,
        to: 2,
    };
    let mut bytes = handshake.encode().to_vec();
    bytes.extend(frames_of(&raft_message(1, 2, 1)).await);
    assert_connection_closed(two.addr, &bytes, "foreign cluster").await;
    // A real sender from the foreign cluster keeps redialling and keeps being refused.
    let sender = sender_to(foreign, 2, two.addr);
    for index in 0..10 {
        sender.send(2, peer_message(1, 2, index));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        two.delivered.try_recv().is_err(),
        "a foreign cluster's message was delivered"
    );
}

/// Byte strings that must each close their connection without delivering anything, with the
/// reason the listener must give.
async fn garbage_cases() -> Vec<(&'static str, Vec<u8>)> {
    let good = Handshake {
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
    }
    .encode();
    let with_good_handshake = |rest: &[u8]| [&good[..], rest].concat();
    let frame = frames_of(&raft_message(1, 2, 1)).await;
    let mut bad_crc = frame.clone();
    *bad_crc.last_mut().expect("non-empty frame") ^= 0x40;
    let mut bad_flags = frame.clone();
    bad_flags[4] = 0x80;
    let mut bad_magic = good;
    bad_magic[0] = b'X';
    let mut bad_version = good;
    bad_version[7] = 1;
    let undecodable = [0xff_u8; 16];
    let mut undecodable_frame = Vec::new();
    wire::write_message(&mut undecodable_frame, &undecodable, wire::Kind::Raft)
        .await
        .expect("to a Vec");
    let mut truncated_chunks = frames_of(&snapshot_message(5 << 20)).await;
    truncated_chunks.truncate(2 * (9 + CHUNK_BYTES_MAX));
    vec![
        (
            "bad magic \"GET ",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n                   ".to_vec(),
        ),
        ("bad magic \"XTCP", bad_magic.to_vec()),
        ("unsupported version 1", bad_version.to_vec()),
        (
            "meant for member 3",
            Handshake {
                cluster_id: CLUSTER,
                from: 1,
                to: 3,
            }
            .encode()
            .to_vec(),
        ),
        (
            "sender member id is zero",
            Handshake {
                cluster_id: CLUSTER,
                from: 0,
                to: 2,
            }
            .encode()
            .to_vec(),
        ),
        (
            "foreign cluster",
            Handshake {
                cluster_id: CLUSTER + 1,
                from: 1,
                to: 2,
            }
            .encode()
            .to_vec(),
        ),
        (
            "frame of 4294967295 bytes",
            with_good_handshake(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]),
        ),
        ("unknown frame flags", with_good_handshake(&bad_flags)),
        ("crc mismatch", with_good_handshake(&bad_crc)),
        (
            "undecodable raft message",
            with_good_handshake(&undecodable_frame),
        ),
        (
            "message from 3",
            with_good_handshake(&frames_of(&raft_message(3, 2, 1)).await),
        ),
        (
            "message to 3",
            with_good_handshake(&frames_of(&raft_message(1, 3, 1)).await),
        ),
        (
            "inside a chunked message",
            with_good_handshake(&truncated_chunks),
        ),
        ("i/o", good[..20].to_vec()),
    ]
}

#[tokio::test]
async fn a_read_index_request_relayed_for_another_member_is_delivered() {
    relayed_read_index_is_delivered(listen(identity(2)).await).await;
}

#[tokio::test]
async fn a_read_index_request_relayed_for_another_member_is_delivered_when_the_node_reads() {
    relayed_read_index_is_delivered(listen_by_node(identity(2)).await).await;
}

async fn relayed_read_index_is_delivered(mut member_2: Listening) {
    // Member 3's request reached member 1 after 1 lost the lead; 1 relays it to 2.
    let mut relayed = raft_message(3, 2, 0);
    relayed.set_msg_type(MessageType::MsgReadIndex);
    let mut appended = raft_message(1, 2, 7);
    appended.set_msg_type(MessageType::MsgAppend);
    let sender = sender_to(identity(1), 2, member_2.addr);
    sender.send(2, PeerMessage::Raft(Box::new(relayed.clone())));
    sender.send(2, PeerMessage::Raft(Box::new(appended.clone())));
    assert_eq!(
        next_delivery(&mut member_2.delivered).await,
        (1, PeerMessage::Raft(Box::new(relayed)))
    );
    assert_eq!(
        next_delivery(&mut member_2.delivered).await,
        (1, PeerMessage::Raft(Box::new(appended))),
        "the connection stays open"
    );
}

#[tokio::test]
async fn each_kind_of_garbage_is_refused_for_its_own_reason() {
    for (reason, bytes) in garbage_cases().await {
        let deliver = |from, msg| panic!("{reason}: delivered {msg:?} from {from}");
        let board = MemberBoard::default();
        let refused = inbound::receive(&bytes[..], identity(2), &board, &deliver).await;
        let error = refused.expect_err(reason).to_string();
        assert!(error.contains(reason), "expected {reason:?}, got {error:?}");
    }
}

#[tokio::test]
async fn garbage_is_rejected_and_the_listener_keeps_serving() {
    garbage_is_rejected(listen(identity(2)).await).await;
}

#[tokio::test]
async fn garbage_is_rejected_and_the_listener_keeps_serving_when_the_node_reads() {
    garbage_is_rejected(listen_by_node(identity(2)).await).await;
}

async fn garbage_is_rejected(mut two: Listening) {
    for (case, bytes) in garbage_cases().await {
        assert_connection_closed(two.addr, &bytes, case).await;
        assert!(
            two.delivered.try_recv().is_err(),
            "{case}: something was delivered"
        );
    }
    let sender = sender_to(identity(1), 2, two.addr);
    sender.send(2, peer_message(1, 2, 42));
    assert_eq!(
        next_delivery(&mut two.delivered).await,
        (1, peer_message(1, 2, 42))
    );
}

#[tokio::test]
async fn messages_before_a_bad_frame_stay_delivered() {
    messages_before_a_bad_frame_are_delivered(listen(identity(2)).await).await;
}

#[tokio::test]
async fn messages_before_a_bad_frame_stay_delivered_when_the_node_reads() {
    messages_before_a_bad_frame_are_delivered(listen_by_node(identity(2)).await).await;
}

async fn messages_before_a_bad_frame_are_delivered(mut two: Listening) {
    let mut bytes = Handshake {
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
    }
    .encode()
    .to_vec();
    bytes.extend(frames_of(&raft_message(1, 2, 1)).await);
    bytes.extend(frames_of(&raft_message(1, 3, 2)).await);
    bytes.extend(frames_of(&raft_message(1, 2, 3)).await);
    assert_connection_closed(two.addr, &bytes, "bad second message").await;
    assert_eq!(
        next_delivery(&mut two.delivered).await,
        (1, peer_message(1, 2, 1))
    );
    assert!(
        two.delivered.try_recv().is_err(),
        "nothing after the bad frame is delivered"
    );
}

#[tokio::test]
async fn sender_reconnects_after_the_listener_restarts() {
    let first = listen(identity(2)).await;
    let (addr, mut delivered) = (first.addr, first.delivered);
    let sender = sender_to(identity(1), 2, addr);
    sender.send(2, peer_message(1, 2, 1));
    assert_eq!(
        next_delivery(&mut delivered).await,
        (1, peer_message(1, 2, 1))
    );

    first.task.abort();
    let _ = first.task.await; // dropping `serve` closes its listener and connections
    let mut second = listen_on(addr, identity(2)).await;

    // Messages sent while the sender still holds the dead connection may be lost; keep
    // sending until one gets through the new one.
    let mut index = 100;
    let first_after = loop {
        sender.send(2, peer_message(1, 2, index));
        match timeout(Duration::from_millis(100), second.delivered.recv()).await {
            Ok(got) => break got.expect("listener alive"),
            Err(_) if index < 200 => index += 1,
            Err(_) => panic!("no message arrived after the restart"),
        }
    };
    assert_eq!(first_after.0, 1);
    // Now connected: every later message arrives, in order.
    while second.delivered.try_recv().is_ok() {}
    for index in 1000..1010 {
        sender.send(2, peer_message(1, 2, index));
    }
    for index in 1000..1010 {
        assert_eq!(
            next_delivery(&mut second.delivered).await,
            (1, peer_message(1, 2, index))
        );
    }
    assert_eq!(sender.stats().connects, 2);
}

#[tokio::test]
async fn unknown_peer_and_full_queue_drop_without_blocking() {
    // A port nobody listens on: the peer task keeps failing to dial and never drains its queue.
    let closed_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("bound address")
    };
    let sender = sender_to(identity(1), 2, closed_addr);
    sender.send(9, peer_message(1, 9, 0));
    assert_eq!(sender.stats().dropped, 1);
    assert_eq!(sender.peer_stats(9), None);

    let started = std::time::Instant::now();
    for index in 0..(QUEUE_MESSAGES_MAX as u64 + 100) {
        sender.send(2, peer_message(1, 2, index));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "send waited");
    let stats = sender.peer_stats(2).expect("known peer");
    assert_eq!((stats.sent, stats.dropped, stats.connects), (0, 100, 0));
    assert_eq!(sender.stats().dropped, 101);
}

#[test]
fn a_member_never_dials_itself() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = runtime.enter();
    let peers = BTreeMap::from([
        (1, "127.0.0.1:1".to_string()),
        (2, "127.0.0.1:2".to_string()),
    ]);
    let sender = PeerSender::new(identity(1), peers, Arc::new(|_| {}), None);
    assert_eq!(sender.peer_stats(1), None);
    assert!(sender.peer_stats(2).is_some());
}

#[test]
fn handshake_round_trips_and_checks_its_receiver() {
    let handshake = Handshake {
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
    };
    let bytes: [u8; HANDSHAKE_BYTES] = handshake.encode();
    assert_eq!(&bytes[0..8], b"DTCP\0\0\0\x02");
    let decoded = Handshake::decode(&bytes).expect("valid handshake");
    assert_eq!(decoded, handshake);
    assert!(decoded.check(identity(2)).is_ok());
    assert!(matches!(
        decoded.check(identity(3)),
        Err(WireError::WrongReceiver { .. })
    ));
}

#[test]
fn backoff_doubles_from_50ms_to_100ms_and_resets() {
    let mut backoff = Backoff::new();
    let delays_ms: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
    assert_eq!(delays_ms, [50, 100, 100, 100]);
    backoff.reset();
    assert_eq!(backoff.next_delay(), Duration::from_millis(50));
}

/// A certificate authority of the tests.
struct TestCa(rcgen::Certificate, rcgen::KeyPair);

fn test_ca(name: &str) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    TestCa(params.self_signed(&key).unwrap(), key)
}

/// Peer TLS flags, in a directory of their own, for a member whose certificate (for 127.0.0.1,
/// serving and dialling) `signer` signed and which trusts `trusted`.
fn peer_tls(tag: &str, signer: &TestCa, trusted: &TestCa) -> TlsFiles {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
    let dir = std::env::temp_dir().join(format!("detcd-peer-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &signer.0, &signer.1).unwrap();
    let files = TlsFiles {
        prefix: "peer-",
        cert_file: Some(dir.join("peer.pem")),
        key_file: Some(dir.join("peer-key.pem")),
        trusted_ca_file: Some(dir.join("ca.pem")),
        client_cert_auth: true,
        auto_tls: false,
        ..Default::default()
    };
    std::fs::write(files.cert_file.as_ref().unwrap(), cert.pem()).unwrap();
    std::fs::write(files.key_file.as_ref().unwrap(), key.serialize_pem()).unwrap();
    std::fs::write(files.trusted_ca_file.as_ref().unwrap(), trusted.0.pem()).unwrap();
    files
}

/// Removes the directory of `peer_tls`'s files, once they have been read.
fn remove_files(tls: &TlsFiles) {
    let dir = tls
        .cert_file
        .as_ref()
        .and_then(|f| f.parent())
        .expect("a file in a directory");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn messages_and_a_chunked_snapshot_cross_tls_both_ways() {
    // Both members' certificates from one CA, which each side must trust.
    let ca = test_ca("cluster CA");
    let tls = peer_tls("both-ways", &ca, &ca);
    let any = "127.0.0.1:0".parse().unwrap();
    let mut one = listen_with(any, identity(1), Some(tls.peer_acceptor().unwrap())).await;
    let mut two = listen_with(any, identity(2), Some(tls.peer_acceptor().unwrap())).await;
    let connector = tls.peer_connector().unwrap();
    remove_files(&tls);
    let one_to_two = sender_with(identity(1), 2, two.addr, Some(connector.clone()));
    let two_to_one = sender_with(identity(2), 1, one.addr, Some(connector));
    let big = snapshot_message(3 << 20);
    one_to_two.send(2, PeerMessage::Raft(Box::new(big.clone())));
    assert_eq!(
        next_delivery(&mut two.delivered).await,
        (1, PeerMessage::Raft(Box::new(big)))
    );
    exchange_twenty((&one_to_two, &mut one), (&two_to_one, &mut two)).await;
}

#[tokio::test]
async fn a_tls_listener_refuses_plain_diallers_and_certificates_of_another_ca() {
    let ca = test_ca("cluster CA");
    let tls = peer_tls("refuses", &ca, &ca);
    let any = "127.0.0.1:0".parse().unwrap();
    let mut two = listen_with(any, identity(2), Some(tls.peer_acceptor().unwrap())).await;
    let plain = sender_to(identity(1), 2, two.addr);
    // Signed by another CA, though it trusts the listener's.
    let foreign = peer_tls("foreign", &test_ca("another CA"), &ca);
    let connector = foreign.peer_connector().unwrap();
    remove_files(&foreign);
    remove_files(&tls);
    let foreign = sender_with(identity(3), 2, two.addr, Some(connector));
    for index in 0..5 {
        plain.send(2, peer_message(1, 2, index));
        foreign.send(2, peer_message(3, 2, index));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nothing = timeout(Duration::from_millis(500), two.delivered.recv()).await;
    assert!(nothing.is_err(), "delivered: {nothing:?}");
    assert!(
        plain.stats().connects >= 1,
        "the plain dialler got as far as TCP"
    );
}

/// A frame for `fuzzing::frames_from_recipe`: mostly whole messages, some chunks, forwarded
/// ones, and now and then any control byte (bad flags, CRCs, lengths); payloads mostly
/// arbitrary, sometimes a raft message of this connection.
fn recipe_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let control =
        prop_oneof![6 => Just(0u8), 3 => Just(1), 2 => Just(2), 1 => Just(3), 1 => any::<u8>()];
    let payload = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (0u64..5).prop_map(|i| raft_message(1, 2, i).write_to_bytes().unwrap()),
    ];
    (control, payload).prop_map(|(control, payload)| {
        let mut frame = vec![control, payload.len() as u8];
        frame.extend(payload);
        frame
    })
}

proptest::proptest! {
    /// The connection task's reader and the node thread's take the same messages from any
    /// frames, cut anywhere, however their bytes arrive (`fuzzing.rs`, which the `peer_frames`
    /// fuzz target drives too).
    #[test]
    fn both_readers_take_the_same_messages_from_any_frames(
        frames in proptest::collection::vec(recipe_frame(), 0..8),
        cut in proptest::prop_oneof![3 => proptest::strategy::Just(0usize), 1 => 1usize..16],
        task_piece in 1usize..48,
        node_piece in 1usize..48,
        message_bytes_max in 16usize..400,
    ) {
        let bytes = fuzzing::frames_from_recipe(&frames.concat());
        let bytes = &bytes[..bytes.len().saturating_sub(cut)];
        fuzzing::read_both(bytes, task_piece, node_piece, message_bytes_max);
    }
}

#[test]
fn a_recipe_s_frames_are_read_as_messages_and_its_faults_refused() {
    let whole = [0, 2, b'a', b'b'];
    let chunked = [1, 1, b'c', 2 | 1, 0, 0, 1, b'd'];
    let read = |recipe: &[u8]| {
        fuzzing::read_both(
            &fuzzing::frames_from_recipe(recipe),
            3,
            5,
            MESSAGE_BYTES_MAX,
        )
    };
    let both = read(&[&whole[..], &[2, 1, b'f']].concat());
    assert_eq!(
        both.messages,
        [(false, b"ab".to_vec()), (true, b"f".to_vec())]
    );
    assert!(!both.refused);
    // The chunks' kinds differ (the second is FORWARD): refused after the whole message.
    let mixed = read(&[&whole[..], &chunked[..]].concat());
    assert_eq!((mixed.messages.len(), mixed.refused), (1, true));
    for fault in [4u8, 8, 16] {
        let faulty = read(&[&whole[..], &[fault, 1, b'x']].concat());
        assert_eq!(
            (faulty.messages.len(), faulty.refused),
            (1, true),
            "{fault}"
        );
    }
    let cut = read(&[1, 1, b'c']);
    assert_eq!((cut.messages.len(), cut.refused), (0, true));
}
