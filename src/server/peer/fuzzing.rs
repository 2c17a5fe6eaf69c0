//! The peer wire's two readers held to each other, on bytes an untrusted dialler chose: the
//! connection task's (`wire::read_message`) and the node thread's (`wire::MessageReader`)
//! implement the same format, so on any bytes, however they arrive, they must take the same
//! messages and agree on whether the stream was refused; neither may panic or hold more than
//! a bounded buffer; and decoding what they take (as a listener would) may not panic either.
//! Driven by the `peer_frames` fuzz target and by a property test in `tests.rs`.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::wire::{
    self, Handshake, Kind, MessageReader, FLAG_FORWARD, FLAG_MORE, FRAME_HEADER_BYTES,
    FRAME_PAYLOAD_BYTES_MAX,
};

/// What a reader took from a stream: each message (whether it was a forwarded one, and its
/// bytes), and whether the stream was refused rather than ending cleanly.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading {
    pub messages: Vec<(bool, Vec<u8>)>,
    pub refused: bool,
}

/// Builds a stream of frames from a recipe, so that a fuzzer need not find CRCs: each frame
/// is a control byte, a length byte and that many payload bytes. Control bits: 0 MORE, 1
/// FORWARD, 2 an unknown flag, 3 a wrong CRC, 4 a length field one larger than the payload.
/// The stream ends where the recipe does (possibly inside a frame).
pub fn frames_from_recipe(recipe: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = recipe;
    while let [control, length, tail @ ..] = rest {
        let payload = &tail[..usize::from(*length).min(tail.len())];
        rest = &tail[payload.len()..];
        let mut flags = 0;
        if control & 1 != 0 {
            flags |= FLAG_MORE;
        }
        if control & 2 != 0 {
            flags |= FLAG_FORWARD;
        }
        if control & 4 != 0 {
            flags |= 0x80;
        }
        let mut header = wire::frame_header(flags, payload);
        if control & 8 != 0 {
            header[8] ^= 1;
        }
        if control & 16 != 0 {
            let length = u32::try_from(payload.len() + 1).expect("a byte's worth");
            header[0..4].copy_from_slice(&length.to_be_bytes());
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
    }
    out
}

/// Reads `bytes` with both readers, the task's through a buffer of `task_piece` bytes and the
/// node thread's in reads of `node_piece` bytes, decodes every message as the listener of a
/// connection from member 1 to member 2 would, and panics if the readers disagree or a buffer
/// outgrows its bound. Returns what they took.
pub fn read_both(
    bytes: &[u8],
    task_piece: usize,
    node_piece: usize,
    message_bytes_max: usize,
) -> Reading {
    let by_task = read_as_task(bytes, task_piece.max(1), message_bytes_max);
    let by_node = read_as_node(bytes, node_piece.max(1), message_bytes_max);
    assert_eq!(by_task, by_node, "the two readers disagree");
    let conn = Handshake {
        cluster_id: 1,
        from: 1,
        to: 2,
    };
    for (forward, message) in &by_task.messages {
        let kind = if *forward { Kind::Forward } else { Kind::Raft };
        // Refusing a message is the listener's right; panicking is not.
        let _ = wire::decode_message(kind, message.clone(), &conn);
    }
    by_task
}

fn read_as_task(bytes: &[u8], piece: usize, message_bytes_max: usize) -> Reading {
    let mut reader = tokio::io::BufReader::with_capacity(piece, bytes);
    let mut messages = Vec::new();
    loop {
        match at_once(wire::read_message(&mut reader, message_bytes_max)) {
            Ok(Some((kind, message))) => messages.push((kind == Kind::Forward, message)),
            Ok(None) => {
                return Reading {
                    messages,
                    refused: false,
                }
            }
            Err(_) => {
                return Reading {
                    messages,
                    refused: true,
                }
            }
        }
    }
}

fn read_as_node(bytes: &[u8], piece: usize, message_bytes_max: usize) -> Reading {
    let mut reader = MessageReader::new(message_bytes_max);
    let mut source = bytes;
    let mut messages = Vec::new();
    let buffer_max = 2 * (FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX);
    let refused = loop {
        match reader.next() {
            Ok(Some((kind, message))) => {
                messages.push((kind == Kind::Forward, message));
                continue;
            }
            Ok(None) => {}
            Err(_) => break true,
        }
        let read = reader.read_from(&mut std::io::Read::take(&mut source, piece as u64));
        assert!(
            reader.buffer_len() <= buffer_max,
            "the reader's buffer grew past its bound"
        );
        if read.expect("reading a byte slice") == 0 {
            break reader.ended().is_err();
        }
    };
    Reading { messages, refused }
}

/// Runs a future that never waits: a byte slice always has its bytes ready.
fn at_once<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("reading from memory never waits"),
    }
}
