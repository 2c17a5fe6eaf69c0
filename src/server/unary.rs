//! etcd's KV calls (`etcdserverpb.KV`), served straight from hyper's request body.
//!
//! Every KV call is one request message and one response message. tonic's generated server
//! wraps each in a decoding stream with an 8 KiB buffer, an encoding stream with another, and
//! several boxes between them, which cost a serializable range about a sixth of its CPU
//! (docs/bench.md, 2026-11-30 night). What the generated server did at
//! the edges is kept, with the same statuses: the request's message size is checked against
//! the receive limit from its 5-byte prefix, before the rest is buffered (and answered as etcd
//! answers it, `grpc::etcd_receive_limit_status`); a compressed or badly flagged message, a
//! missing, truncated or undecodable one are refused as tonic refuses them.

// A refusal is tonic's `Status`, as large as tonic's decoder returns it: refusals are rare, and
// each is answered at once.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use prost::Message;
use tonic::body::BoxBody;
use tonic::Status;

use super::client_port::Answer;
use super::driver::DriverHandle;
use super::grpc::status;
use crate::api::Rpc;
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};

/// A gRPC message's prefix: the compressed flag and the message's length (big-endian).
const PREFIX: usize = 5;

/// The KV service of the client port.
#[derive(Clone)]
pub struct KvUnary {
    driver: DriverHandle,
    /// The largest request message taken, as tonic's `max_decoding_message_size`.
    receive_max: usize,
}

impl KvUnary {
    pub fn new(driver: DriverHandle, receive_max: usize) -> KvUnary {
        KvUnary {
            driver,
            receive_max,
        }
    }

    /// Answers a call of one of KV's methods (the last part of the request's path).
    pub fn call(&self, request: Request<Incoming>) -> Answer {
        type Serve = fn(&KvUnary, Request<Incoming>) -> Answer;
        let serve: Serve = match request.uri().path().rsplit_once('/') {
            Some((_, "Range")) => KvUnary::serve::<RangeRequest>,
            Some((_, "Put")) => KvUnary::serve::<PutRequest>,
            Some((_, "DeleteRange")) => KvUnary::serve::<DeleteRangeRequest>,
            Some((_, "Txn")) => KvUnary::serve::<TxnRequest>,
            Some((_, "Compact")) => KvUnary::serve::<CompactionRequest>,
            _ => return Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        };
        serve(self, request)
    }

    fn serve<R>(&self, request: Request<Incoming>) -> Answer
    where
        R: Rpc + Message + Default + Send + 'static,
        R::Response: Message + Send,
    {
        let driver = self.driver.clone();
        let receive_max = self.receive_max;
        Box::pin(async move {
            let answer = match receive::<R>(request, receive_max).await {
                Ok(request) => driver.call(request).await.map_err(status),
                Err(refused) => Err(refused),
            };
            Ok(match answer {
                Ok(response) => respond(&response),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The request's one message, decoded once the body has ended (as tonic reads a unary request
/// to its end before calling the service).
async fn receive<R: Message + Default>(
    request: Request<Incoming>,
    receive_max: usize,
) -> Result<R, Status> {
    if let Some(encoding) = request.headers().get("grpc-encoding") {
        if encoding != "identity" {
            return Err(unsupported_encoding(encoding));
        }
    }
    let mut body = request.into_body();
    let mut message = Gathered::new(receive_max);
    while let Some(frame) = next_frame(&mut body).await {
        // The request's trailers, if any, carry nothing a KV call reads.
        if let Ok(data) = frame?.into_data() {
            message.push(data)?;
        }
    }
    R::decode(message.finish()?).map_err(|e| Status::internal(e.to_string()))
}

async fn next_frame(body: &mut Incoming) -> Option<Result<Frame<Bytes>, Status>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|frame| frame.map_err(|e| Status::from_error(Box::new(e))))
}

/// The first message of a request body, gathered from its data frames: the frame itself when
/// one holds the whole message (no copy), else copied into one buffer sized from the prefix.
/// Bytes after the first message are dropped unread.
struct Gathered {
    receive_max: usize,
    first: Bytes,
    copied: Vec<u8>,
    /// The message's length, once its prefix is in.
    len: Option<usize>,
}

impl Gathered {
    fn new(receive_max: usize) -> Gathered {
        Gathered {
            receive_max,
            first: Bytes::new(),
            copied: Vec::new(),
            len: None,
        }
    }

    fn held(&self) -> usize {
        self.first.len() + self.copied.len()
    }

    fn complete(&self) -> bool {
        self.len.is_some_and(|len| self.held() >= PREFIX + len)
    }

    fn push(&mut self, data: Bytes) -> Result<(), Status> {
        if self.complete() || data.is_empty() {
            return Ok(());
        }
        if self.held() == 0 {
            self.first = data;
        } else {
            if self.copied.is_empty() {
                let first = std::mem::take(&mut self.first);
                self.copied.extend_from_slice(&first);
            }
            let wanted = self
                .len
                .map_or(usize::MAX, |len| PREFIX + len - self.held());
            self.copied
                .extend_from_slice(&data[..data.len().min(wanted)]);
        }
        if self.len.is_none() && self.held() >= PREFIX {
            let len = self.read_prefix()?;
            self.len = Some(len);
            if !self.complete() {
                self.copied.reserve_exact(PREFIX + len - self.copied.len());
            }
        }
        Ok(())
    }

    /// Checks the prefix as tonic's decoder does, and answers the message's length.
    fn read_prefix(&self) -> Result<usize, Status> {
        let mut prefix = [0u8; PREFIX];
        let held = if self.copied.is_empty() {
            &self.first[..]
        } else {
            &self.copied[..]
        };
        prefix.copy_from_slice(&held[..PREFIX]);
        match prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no \
                     grpc-encoding was specified",
                ))
            }
            flag => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {flag} \
                     (valid flags are 0 and 1), while sending request"
                )))
            }
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.receive_max {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} \
                 bytes",
                self.receive_max
            )));
        }
        Ok(len)
    }

    /// The message's bytes, once the body has ended.
    fn finish(self) -> Result<impl Buf, Status> {
        match self.len {
            _ if self.held() == 0 => Err(Status::internal("Missing request message.")),
            Some(len) if self.held() >= PREFIX + len => Ok(if self.copied.is_empty() {
                self.first.slice(PREFIX..PREFIX + len)
            } else {
                Bytes::from(self.copied).slice(PREFIX..PREFIX + len)
            }),
            _ => Err(Status::internal("Unexpected EOF decoding stream.")),
        }
    }
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
    let len = response.encoded_len();
    let Ok(prefix_len) = u32::try_from(len) else {
        return Status::resource_exhausted("the response exceeds gRPC's 4 GiB message limit")
            .into_http();
    };
    let mut framed = Vec::with_capacity(PREFIX + len);
    framed.push(0);
    framed.extend_from_slice(&prefix_len.to_be_bytes());
    response.encode_raw(&mut framed);
    let mut answer = Response::new(tonic::body::boxed(OneMessage {
        message: Some(Bytes::from(framed)),
        trailers: true,
    }));
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    answer
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
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
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

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn gather(chunks: &[&[u8]], receive_max: usize) -> Result<Vec<u8>, Status> {
        let mut gathered = Gathered::new(receive_max);
        for chunk in chunks {
            gathered.push(Bytes::copy_from_slice(chunk))?;
        }
        let mut message = gathered.finish()?;
        Ok(message.copy_to_bytes(message.remaining()).to_vec())
    }

    #[test]
    fn a_message_in_one_frame_or_split_anywhere_comes_out_whole() {
        let bytes = framed(0, b"hello world");
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
    fn bytes_after_the_first_message_are_dropped() {
        let mut bytes = framed(0, b"one");
        bytes.extend(framed(0, b"two"));
        assert_eq!(gather(&[&bytes], 100).unwrap(), b"one");
        let (a, b) = bytes.split_at(6);
        assert_eq!(gather(&[a, b], 100).unwrap(), b"one");
    }

    #[test]
    fn an_empty_message_is_a_message() {
        assert_eq!(gather(&[&framed(0, b"")], 100).unwrap(), b"");
    }

    #[test]
    fn edge_cases_get_tonics_statuses() {
        let missing = gather(&[], 100).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Internal);
        assert_eq!(missing.message(), "Missing request message.");

        let truncated = gather(&[&framed(0, b"hello")[..7]], 100).unwrap_err();
        assert_eq!(truncated.message(), "Unexpected EOF decoding stream.");
        let short_prefix = gather(&[&[0, 0, 0]], 100).unwrap_err();
        assert_eq!(short_prefix.message(), "Unexpected EOF decoding stream.");

        let compressed = gather(&[&framed(1, b"x")], 100).unwrap_err();
        assert_eq!(compressed.code(), tonic::Code::Internal);
        assert!(compressed
            .message()
            .contains("compressed-flag but no grpc-encoding"));

        let bad_flag = gather(&[&framed(7, b"x")], 100).unwrap_err();
        assert!(bad_flag.message().contains("invalid compression flag: 7"));

        let large = gather(&[&framed(0, &[0; 11])[..PREFIX]], 10).unwrap_err();
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
            framed(0, &response.encode_to_vec())[..]
        );
        let Poll::Ready(Some(Ok(trailers))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the trailers come next");
        };
        assert_eq!(trailers.into_trailers().unwrap()["grpc-status"], "0");
        assert!(body.is_end_stream());
    }
}
