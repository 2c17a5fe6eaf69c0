//! etcd's Watch service (`etcdserverpb.Watch/Watch`), served straight from hyper's bodies.
//!
//! A stream's requests are read by a task of their own and handed to the watch task (in
//! `watch.rs`), whose bounded input channel slows a client that floods requests to the hub's
//! pace. Its responses arrive encoded, with their gRPC prefixes, in blocks of many (the watch
//! task encodes each event once, not once per watcher): the response body hands each block to
//! hyper as it is. tonic's generated server kept an 8 KiB decode buffer and an 8 KiB encode
//! buffer for every stream and copied every response into the latter: about 16 KiB per stream,
//! as much as 40 watchers cost.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming};
use prost::Message;
use tokio::sync::mpsc::{self, error::TrySendError};
use tonic::body::BoxBody;
use tonic::Status;

use super::client_port::{requires_leader, Answer};
use super::direct::{check_encoding, grpc_response, trailers, Unframer};
use super::driver::DriverHandle;
use super::grpc::{credentials, status};
use super::watch::{self, CloseOnDrop, Input, WatchCaller, WatchHandle};
use super::watch_answers;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{StatusRequest, WatchRequest};
use crate::watch::StreamId;

/// etcd's `etcdserverpb.Watch`.
#[derive(Clone)]
pub struct WatchService {
    handle: WatchHandle,
    driver: DriverHandle,
    /// The largest request message taken, as tonic's `max_decoding_message_size`.
    receive_max: usize,
}

impl WatchService {
    pub fn new(handle: WatchHandle, driver: DriverHandle, receive_max: usize) -> WatchService {
        WatchService {
            handle,
            driver,
            receive_max,
        }
    }

    /// Answers a call of the service's one method.
    pub fn call(&self, request: Request<Incoming>) -> Answer {
        let service = self.clone();
        Box::pin(async move {
            if !request.uri().path().ends_with("/Watch") {
                return Ok(Status::unimplemented("").into_http());
            }
            Ok(service
                .open(request)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }

    async fn open(self, request: Request<Incoming>) -> Result<Response<BoxBody>, Status> {
        check_encoding(request.headers())?;
        // A learner serves no watch streams, as etcd's learners serve none.
        let me = self.driver.call(StatusRequest {}).await;
        if me.is_ok_and(|s| s.is_learner) {
            return Err(status(EtcdError::NotSupportedForLearner));
        }
        // clientv3's WithRequireLeader: the stream is refused while the member has no leader,
        // and ends with "no leader" once it has had none for three election timeouts.
        let require_leader = requires_leader(request.headers());
        let (stream, answers, closer) = self.handle.open(&self.driver, require_leader).await?;
        let messages = Unframer::new(self.receive_max);
        // A client that half-closes its side keeps its watchers, as etcd's do: the stream ends
        // when the client cancels the call, which drops the responses (and `closer`).
        let sender = WatchCaller::new(self.driver.clone(), credentials(&request));
        tokio::spawn(forward_requests(
            request.into_body(),
            messages,
            self.handle.inputs.clone(),
            stream,
            sender,
        ));
        Ok(grpc_response(WatchResponses {
            answers,
            blocks: VecDeque::new(),
            ended: false,
            _closer: closer,
        }))
    }
}

/// Hands the stream's requests to the watch task until the client closes its side, sends one
/// that cannot be read, or goes away.
async fn forward_requests(
    mut body: Incoming,
    mut messages: Unframer,
    inputs: mpsc::Sender<Input>,
    stream: StreamId,
    sender: WatchCaller,
) {
    loop {
        match messages.next_message() {
            Ok(Some(message)) => {
                // Decoded from a slice, so that the watchers' keys are copies: a slice of the
                // connection's read buffer would keep all of it alive as long as they live.
                let Ok(request) = WatchRequest::decode(&message[..]) else {
                    return;
                };
                // Every stream's task keeps room for the largest future it awaits; the common
                // case awaits none, and the rare ones are boxed.
                let input = match sender.unchecked(stream, request) {
                    Ok(input) => input,
                    Err(request) => Box::pin(sender.authorized(stream, request)).await,
                };
                match inputs.try_send(input) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(input)) => {
                        if Box::pin(inputs.send(input)).await.is_err() {
                            return;
                        }
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
                continue;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    messages.push(data);
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// The stream's responses, block by block as the watch task sent them; then its status.
struct WatchResponses {
    answers: watch_answers::Receiver<watch::Answer>,
    blocks: VecDeque<Bytes>,
    ended: bool,
    /// Closes the stream's watchers in the hub when hyper drops the body.
    _closer: CloseOnDrop,
}

impl Body for WatchResponses {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(block) = self.blocks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(block))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let end = match ready!(self.answers.poll_recv(cx)) {
            Some(Ok(batch)) => {
                self.blocks.extend(batch);
                return match self.blocks.pop_front() {
                    Some(block) => Poll::Ready(Some(Ok(Frame::data(block)))),
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                };
            }
            Some(Err(status)) => Err(*status),
            None => Ok(()),
        };
        self.ended = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.blocks.is_empty()
    }
}
