//! The watch workloads' `Watch.Watch` calls, made on the connection directly rather than through
//! tonic's streaming client, which copies every received message into a buffer of its own
//! before decoding it. Here the server's [`Unframer`] takes the messages out of the data
//! frames: one that lies within a frame is a slice of it, uncopied.
//!
//! The request body carries the stream's creates and then stays open until the call is
//! dropped, as a client's watch stream does while it may still create or cancel watchers.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use detcd::proto::etcdserverpb::WatchRequest;
use detcd::server::Unframer;
use hyper::body::{Body, Frame, Incoming};
use prost::Message;
use tower::{Service, ServiceExt};

use crate::transport::Channel;

/// The largest response accepted: far beyond any watch response a server sends by default.
const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// One open `Watch.Watch` call.
pub struct WatchCall {
    body: Incoming,
    messages: Unframer,
}

impl WatchCall {
    /// Opens the call with `requests` as the first messages of its request stream.
    pub async fn open(
        mut channel: Channel,
        requests: &[WatchRequest],
    ) -> Result<WatchCall, String> {
        let mut framed = BytesMut::new();
        for request in requests {
            framed.put_u8(0);
            framed.put_u32(request.encoded_len() as u32);
            request
                .encode(&mut framed)
                .expect("a BytesMut grows as needed");
        }
        let request = http::Request::post("/etcdserverpb.Watch/Watch")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::boxed(OpenAfter(Some(framed.freeze()))))
            .map_err(|e| format!("building the watch call: {e}"))?;
        let channel = channel
            .ready()
            .await
            .map_err(|e| format!("the connection: {e}"))?;
        let response = channel
            .call(request)
            .await
            .map_err(|e| format!("opening a watch stream: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!(
                "opening a watch stream: HTTP {}",
                response.status()
            ));
        }
        if let Some(status) = grpc_error(response.headers()) {
            return Err(format!("opening a watch stream: {status}"));
        }
        Ok(WatchCall {
            body: response.into_body(),
            messages: Unframer::new(MESSAGE_BYTES_MAX),
        })
    }

    /// The next response message, or an error if the call ends or nothing arrives for `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> Result<Bytes, String> {
        loop {
            let next = self.messages.next_message();
            if let Some(message) = next.map_err(|e| format!("a watch response: {}", e.message()))? {
                return Ok(message);
            }
            let frame = tokio::time::timeout(wait, std::future::poll_fn(|cx| self.poll_frame(cx)))
                .await
                .map_err(|_| {
                    format!(
                        "no watch response for {} s: events are missing",
                        wait.as_secs()
                    )
                })?;
            match frame {
                None => return Err("the server closed a watch stream".into()),
                Some(Err(e)) => return Err(format!("the watch stream failed: {e}")),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.messages.push(data),
                    Err(frame) => {
                        let status = frame.trailers_ref().and_then(grpc_error);
                        let status = status.unwrap_or_else(|| "status 0".into());
                        return Err(format!("the server ended a watch stream: {status}"));
                    }
                },
            }
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
}

/// The status a response's headers or trailers carry, unless it is OK or absent.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().unwrap_or("?");
    if code == "0" {
        return None;
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok());
    Some(format!("status {code}: {}", message.unwrap_or("")))
}

/// A request body that sends its one buffer, then stays open without sending more.
struct OpenAfter(Option<Bytes>);

impl Body for OpenAfter {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}
