//! The client port's hot services, etcd's `etcdserverpb.KV` and `etcdserverpb.Lease`, served
//! straight from hyper's request and response bodies.
//!
//! A KV call or a lease call other than a keepalive is one request message and one response
//! message; tonic's generated servers wrap each in a decoding stream with an 8 KiB buffer, an
//! encoding stream with another, and several boxes between them, which cost a serializable
//! range about a sixth of its CPU (docs/bench.md, 2026-11-30 night). Here the request's
//! message is taken from the body's data frame itself when the frame holds it whole, and the
//! answer goes out in one buffer sized for it; keepalive streams are a body of their own
//! (`keepalive.rs`). What the generated servers did at the edges is kept, with the same
//! statuses: a message's size is checked against the receive limit from its 5-byte prefix,
//! before the rest is buffered (and answered as etcd answers it,
//! `grpc::etcd_receive_limit_status`); a compressed or badly flagged message, a missing,
//! truncated or undecodable one, an unsupported `grpc-encoding` and an unknown method are
//! refused as tonic refuses them.

// A refusal is tonic's `Status`, as large as tonic's decoder returns it: refusals are rare, and
// each is answered at once.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use prost::Message;
use tonic::body::BoxBody;
use tonic::Status;

use super::client_port::{requires_leader, Answer};
use super::driver::{read_cold_off_workers, typed, DriverHandle};
use super::grpc::{credentials, status};
use super::keepalive::KeepAlives;
use super::large_range::{self, Encoded};
use super::leader_presence::LeaderRule;
use super::local_keepalives::SharedLocalKeepAlives;
use super::local_reads::SharedLocalReads;
use crate::api::{Credentials, Rpc};
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, TxnRequest,
};

/// A gRPC message's prefix: the compressed flag and the message's length (big-endian).
pub(super) const PREFIX: usize = 5;

/// The client port's KV and Lease services.
#[derive(Clone)]
pub struct HotServices {
    driver: DriverHandle,
    /// Reads of one key, answered here instead of by the node (linearizable ones once a read
    /// barrier passed).
    reads: Arc<SharedLocalReads>,
    /// Keepalives the leader's records cover, acknowledged here instead of by the node.
    keepalives: Arc<SharedLocalKeepAlives>,
    /// What a keepalive stream that requires a leader is held to.
    leader: LeaderRule,
    /// The largest request message taken, as tonic's `max_decoding_message_size`.
    receive_max: usize,
}

impl HotServices {
    pub fn new(
        driver: DriverHandle,
        reads: Arc<SharedLocalReads>,
        keepalives: Arc<SharedLocalKeepAlives>,
        leader: LeaderRule,
        receive_max: usize,
    ) -> HotServices {
        HotServices {
            driver,
            reads,
            keepalives,
            leader,
            receive_max,
        }
    }

    /// Answers a call of one of KV's methods (the last part of the request's path).
    pub fn kv(&self, request: Request<Incoming>) -> Answer {
        let serve: Serve = match method(&request) {
            "Range" => HotServices::range,
            "Put" => HotServices::serve::<PutRequest>,
            "DeleteRange" => HotServices::serve::<DeleteRangeRequest>,
            "Txn" => HotServices::serve::<TxnRequest>,
            "Compact" => HotServices::serve::<CompactionRequest>,
            _ => return unknown_method(),
        };
        serve(self, request)
    }

    /// Answers a call of one of Lease's methods.
    pub fn lease(&self, request: Request<Incoming>) -> Answer {
        let serve: Serve = match method(&request) {
            "LeaseGrant" => HotServices::serve::<LeaseGrantRequest>,
            "LeaseRevoke" => HotServices::serve::<LeaseRevokeRequest>,
            "LeaseKeepAlive" => HotServices::keep_alive,
            "LeaseTimeToLive" => HotServices::serve::<LeaseTimeToLiveRequest>,
            "LeaseLeases" => HotServices::serve::<LeaseLeasesRequest>,
            _ => return unknown_method(),
        };
        serve(self, request)
    }

    fn keep_alive(&self, request: Request<Incoming>) -> Answer {
        let leaderless = requires_leader(request.headers()).then(|| self.leader.checks());
        let answer = match check_encoding(request.headers()) {
            Ok(()) => grpc_response(KeepAlives::new(
                self.driver.clone(),
                self.keepalives.clone(),
                request.into_body(),
                Unframer::new(self.receive_max),
                leaderless,
            )),
            Err(refused) => refused.into_http(),
        };
        Box::pin(std::future::ready(Ok(answer)))
    }

    fn serve<R>(&self, request: Request<Incoming>) -> Answer
    where
        R: Rpc + Message + Default + Send + 'static,
        R::Response: Message + Send,
    {
        let driver = self.driver.clone();
        let receive_max = self.receive_max;
        Box::pin(async move {
            let credentials = credentials(&request);
            let answer = match receive::<R>(request, receive_max).await {
                Ok(request) => driver.call_as(request, credentials).await.map_err(status),
                Err(refused) => Err(refused),
            };
            Ok(match answer {
                Ok(response) => respond(&response),
                Err(status) => status.into_http(),
            })
        })
    }

    /// A Range, whose answer a read of the past gets with its superseded values read
    /// straight into the encoding (`RangeLayout`), off the async workers, as a large answer
    /// is encoded (`large_range`).
    fn range(&self, request: Request<Incoming>) -> Answer {
        let driver = self.driver.clone();
        let reads = self.reads.clone();
        let receive_max = self.receive_max;
        Box::pin(async move {
            let credentials = credentials(&request);
            let answer = match receive::<RangeRequest>(request, receive_max).await {
                Ok(request) => {
                    let local = match reads.range(&request) {
                        Some(local) => Some(local),
                        None => reads.range_after_barrier(&driver, &request).await,
                    };
                    match local {
                        Some(local) => local
                            .map_err(status)
                            .and_then(|r| framed(&r))
                            .map(one_message),
                        None => answer_range(&driver, request, credentials).await,
                    }
                }
                Err(refused) => Err(refused),
            };
            Ok(answer.unwrap_or_else(Status::into_http))
        })
    }
}

async fn answer_range(
    driver: &DriverHandle,
    request: RangeRequest,
    credentials: Option<Credentials>,
) -> Result<Response<BoxBody>, Status> {
    let (response, cold, reader) = driver
        .call_unfilled(request.into(), credentials)
        .await
        .map_err(status)?;
    let response = typed::<RangeRequest>(response);
    if cold.is_empty() && !large_range::is_large(&response) {
        return framed(&response).map(one_message);
    }
    if !cold.encodes_in_place() {
        let filled = read_cold_off_workers(move || {
            let mut response = response;
            cold.fill_range(&mut response, &reader).map(|()| response)
        });
        return framed(&filled.await.map_err(status)?).map(one_message);
    }
    let encoded = read_cold_off_workers(move || large_range::encode(response, cold, reader));
    Ok(match encoded.await.map_err(status)? {
        Encoded::Whole(message) => one_message(message),
        Encoded::Parts(parts) => grpc_response(parts),
        Encoded::Refused(refused) => refused.into_http(),
    })
}

type Serve = fn(&HotServices, Request<Incoming>) -> Answer;

/// The last part of the request's path.
fn method(request: &Request<Incoming>) -> &str {
    request
        .uri()
        .path()
        .rsplit_once('/')
        .map_or("", |(_, method)| method)
}

fn unknown_method() -> Answer {
    Box::pin(async { Ok(Status::unimplemented("").into_http()) })
}

/// The request's one message, decoded once the body has ended (as tonic reads a unary request
/// to its end before calling the service). Bytes after the first message are dropped unread.
async fn receive<R: Message + Default>(
    request: Request<Incoming>,
    receive_max: usize,
) -> Result<R, Status> {
    check_encoding(request.headers())?;
    let mut body = request.into_body();
    let mut messages = Unframer::new(receive_max);
    let mut first = None;
    while let Some(frame) = next_frame(&mut body).await {
        // The request's trailers, if any, carry nothing a KV call reads.
        match frame?.into_data() {
            Ok(data) if first.is_none() => {
                messages.push(data);
                first = messages.next_message()?;
            }
            _ => {}
        }
    }
    match first {
        Some(message) => R::decode(message).map_err(|e| Status::internal(e.to_string())),
        None if messages.is_empty() => Err(Status::internal("Missing request message.")),
        None => Err(Status::internal("Unexpected EOF decoding stream.")),
    }
}

async fn next_frame(body: &mut Incoming) -> Option<Result<Frame<Bytes>, Status>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|frame| frame.map_err(|e| Status::from_error(Box::new(e))))
}

/// Refuses a request compressed with an encoding tonic was not built with here (none).
pub(super) fn check_encoding(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        Some(encoding) if encoding != "identity" => Err(unsupported_encoding(encoding)),
        _ => Ok(()),
    }
}

/// The messages of a request body, taken from its data frames as they come: a message wholly
/// inside a frame is a slice of it (no copy); one split across frames is gathered into a
/// buffer sized from its prefix. Also the load generator's reader of watch responses.
pub struct Unframer {
    receive_max: usize,
    /// The bytes of the last frame not yet taken.
    chunk: Bytes,
    /// The start of a message split across frames.
    split: Vec<u8>,
}

impl Unframer {
    pub fn new(receive_max: usize) -> Unframer {
        Unframer {
            receive_max,
            chunk: Bytes::new(),
            split: Vec::new(),
        }
    }

    /// Takes a data frame; call `next_message` until it answers `None` before pushing another.
    pub fn push(&mut self, data: Bytes) {
        debug_assert!(self.chunk.is_empty(), "the previous frame was taken");
        self.chunk = data;
    }

    /// True when no part of a message is held.
    pub fn is_empty(&self) -> bool {
        self.chunk.is_empty() && self.split.is_empty()
    }

    /// The next whole message, or `None` until more bytes come.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.split.is_empty() {
            if self.chunk.len() < PREFIX {
                self.split
                    .extend_from_slice(&std::mem::take(&mut self.chunk));
                return Ok(None);
            }
            let len = read_prefix(&self.chunk, self.receive_max)?;
            if self.chunk.len() >= PREFIX + len {
                let mut message = self.chunk.split_to(PREFIX + len);
                message.advance(PREFIX);
                return Ok(Some(message));
            }
            self.split.reserve_exact(PREFIX + len);
            self.split
                .extend_from_slice(&std::mem::take(&mut self.chunk));
            return Ok(None);
        }
        if self.split.len() < PREFIX {
            self.take_from_chunk(PREFIX - self.split.len());
            if self.split.len() < PREFIX {
                return Ok(None);
            }
        }
        let len = read_prefix(&self.split, self.receive_max)?;
        self.take_from_chunk(PREFIX + len - self.split.len());
        if self.split.len() < PREFIX + len {
            return Ok(None);
        }
        let mut message = Bytes::from(std::mem::take(&mut self.split));
        message.advance(PREFIX);
        Ok(Some(message))
    }

    fn take_from_chunk(&mut self, wanted: usize) {
        let taken = self.chunk.split_to(wanted.min(self.chunk.len()));
        self.split.extend_from_slice(&taken);
    }
}

/// Checks a message's prefix as tonic's decoder does, and answers the message's length.
fn read_prefix(held: &[u8], receive_max: usize) -> Result<usize, Status> {
    match held[0] {
        0 => {}
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding \
                 was specified",
            ))
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} \
                 (valid flags are 0 and 1), while sending request"
            )))
        }
    }
    let len = u32::from_be_bytes([held[1], held[2], held[3], held[4]]) as usize;
    if len > receive_max {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: \
             {receive_max} bytes"
        )));
    }
    Ok(len)
}

/// tonic's answer to a request compressed with an encoding it was not built with.
fn unsupported_encoding(encoding: &HeaderValue) -> Status {
    let name = match encoding.to_str() {
        Ok(name) => name.to_string(),
        Err(_) => format!("{:?}", encoding.as_bytes()),
    };
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{name}` which isn't supported"
    ));
    status
        .metadata_mut()
        .insert("grpc-accept-encoding", "identity".parse().expect("ASCII"));
    status
}

/// A successful answer: the message in one buffer sized for it, then `grpc-status: 0`.
fn respond<M: Message>(response: &M) -> Response<BoxBody> {
    match framed(response) {
        Ok(message) => one_message(message),
        Err(refused) => refused.into_http(),
    }
}

/// An answer of one framed message, then `grpc-status: 0`.
fn one_message(message: Bytes) -> Response<BoxBody> {
    grpc_response(OneMessage {
        message: Some(message),
        trailers: true,
    })
}

/// A gRPC response whose messages and status come in `body`.
pub(super) fn grpc_response<B>(body: B) -> Response<BoxBody>
where
    B: Body<Data = Bytes, Error = Status> + Send + 'static,
{
    let mut answer = Response::new(tonic::body::boxed(body));
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    answer
}

/// `message` with its gRPC prefix, in one buffer sized for both.
pub(super) fn framed<M: Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    if u32::try_from(len).is_err() {
        return Err(too_large());
    }
    let mut framed = Vec::with_capacity(PREFIX + len);
    framed.extend_from_slice(&[0; PREFIX]);
    message.encode_raw(&mut framed);
    with_prefix(framed)
}

/// A message encoded after [`PREFIX`] bytes left for its gRPC prefix, with the prefix written.
fn with_prefix(mut framed: Vec<u8>) -> Result<Bytes, Status> {
    let prefix = grpc_prefix(framed.len() - PREFIX)?;
    framed[..PREFIX].copy_from_slice(&prefix);
    Ok(Bytes::from(framed))
}

/// The gRPC prefix of an uncompressed message of `len` bytes.
pub(super) fn grpc_prefix(len: usize) -> Result<[u8; PREFIX], Status> {
    let len = u32::try_from(len).map_err(|_| too_large())?;
    let mut prefix = [0; PREFIX];
    prefix[1..].copy_from_slice(&len.to_be_bytes());
    Ok(prefix)
}

fn too_large() -> Status {
    Status::resource_exhausted("the response exceeds gRPC's 4 GiB message limit")
}

/// The trailers of a call that succeeded.
pub(super) fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// The trailers that end a stream with `status`.
pub(super) fn trailers(status: Result<(), Status>) -> HeaderMap {
    let Err(status) = status else {
        return ok_trailers();
    };
    let mut trailers = HeaderMap::with_capacity(2);
    if status.add_header(&mut trailers).is_err() {
        // tonic percent-encodes the message, so this is not expected; the client must not take
        // the failure for a success all the same.
        trailers.insert("grpc-status", HeaderValue::from_static("13"));
    }
    trailers
}

/// A response body of one data frame and the OK status's trailers.
struct OneMessage {
    message: Option<Bytes>,
    trailers: bool,
}

impl Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if std::mem::take(&mut self.trailers) {
            return Poll::Ready(Some(Ok(Frame::trailers(ok_trailers()))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && !self.trailers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// Every message the chunks hold, as a body of them would give them.
    fn unframe(chunks: &[&[u8]], receive_max: usize) -> Result<Vec<Vec<u8>>, Status> {
        let mut messages = Unframer::new(receive_max);
        let mut out = Vec::new();
        for chunk in chunks {
            messages.push(Bytes::copy_from_slice(chunk));
            while let Some(message) = messages.next_message()? {
                out.push(message.to_vec());
            }
        }
        if !messages.is_empty() {
            return Err(Status::internal("Unexpected EOF decoding stream."));
        }
        Ok(out)
    }

    fn gather(chunks: &[&[u8]], receive_max: usize) -> Result<Vec<u8>, Status> {
        match unframe(chunks, receive_max)?.into_iter().next() {
            Some(first) => Ok(first),
            None => Err(Status::internal("Missing request message.")),
        }
    }

    #[test]
    fn a_message_in_one_frame_or_split_anywhere_comes_out_whole() {
        let bytes = prefixed(0, b"hello world");
        assert_eq!(gather(&[&bytes], 100).unwrap(), b"hello world");
        for cut in 1..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                gather(&[a, &[], b], 100).unwrap(),
                b"hello world",
                "cut {cut}"
            );
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(gather(&single, 100).unwrap(), b"hello world");
    }

    #[test]
    fn messages_come_out_in_order_however_the_frames_cut_them() {
        let mut bytes = prefixed(0, b"one");
        bytes.extend(prefixed(0, b""));
        bytes.extend(prefixed(0, b"three"));
        let expected: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![], b"three".to_vec()];
        assert_eq!(unframe(&[&bytes], 100).unwrap(), expected);
        for cut in 0..=bytes.len() {
            for second in cut..=bytes.len() {
                let chunks = [&bytes[..cut], &bytes[cut..second], &bytes[second..]];
                assert_eq!(unframe(&chunks, 100).unwrap(), expected, "{cut} {second}");
            }
        }
    }

    #[test]
    fn an_empty_message_is_a_message() {
        assert_eq!(gather(&[&prefixed(0, b"")], 100).unwrap(), b"");
    }

    #[test]
    fn edge_cases_get_tonics_statuses() {
        let missing = gather(&[], 100).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Internal);
        assert_eq!(missing.message(), "Missing request message.");

        let truncated = gather(&[&prefixed(0, b"hello")[..7]], 100).unwrap_err();
        assert_eq!(truncated.message(), "Unexpected EOF decoding stream.");
        let short_prefix = gather(&[&[0, 0, 0]], 100).unwrap_err();
        assert_eq!(short_prefix.message(), "Unexpected EOF decoding stream.");

        let compressed = gather(&[&prefixed(1, b"x")], 100).unwrap_err();
        assert_eq!(compressed.code(), tonic::Code::Internal);
        assert!(compressed
            .message()
            .contains("compressed-flag but no grpc-encoding"));

        let bad_flag = gather(&[&prefixed(7, b"x")], 100).unwrap_err();
        assert!(bad_flag.message().contains("invalid compression flag: 7"));

        let large = gather(&[&prefixed(0, &[0; 11])[..PREFIX]], 10).unwrap_err();
        assert_eq!(large.code(), tonic::Code::OutOfRange);
        assert_eq!(
            large.message(),
            "Error, decoded message length too large: found 11 bytes, the limit is: 10 bytes"
        );
    }

    #[test]
    fn the_answer_is_one_framed_message_then_the_ok_trailers() {
        let response = crate::proto::etcdserverpb::PutResponse::default();
        let mut body = respond(&response).into_body();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Some(Ok(data))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the message comes first");
        };
        assert_eq!(
            data.into_data().unwrap()[..],
            prefixed(0, &response.encode_to_vec())[..]
        );
        let Poll::Ready(Some(Ok(trailers))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the trailers come next");
        };
        assert_eq!(trailers.into_trailers().unwrap()["grpc-status"], "0");
        assert!(body.is_end_stream());
    }
}
