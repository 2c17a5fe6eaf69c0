//! A lease keepalive stream (`Lease/LeaseKeepAlive`), served as the response body hyper pulls
//! frames from: no task or channel of its own, since clientv3's KeepAliveOnce opens a stream
//! per keepalive.
//!
//! Each request is answered with the lease's TTL (0 when the lease is gone), in order; as etcd
//! does, any other error ends the stream with that error. A stream that requires a leader (as
//! clientv3's lessor opens them) ends with `etcdserver: no leader` once the member has been
//! without one for three election timeouts (`leader_presence`). A keepalive the leader's committed
//! records cover is acknowledged here, from the node's latest view (`local_keepalives`); the
//! others go to the node. Requests are read only while fewer
//! than `KEEPALIVES_IN_FLIGHT_MAX` are at the node, and answers are made only as fast as the
//! client takes them. A request that cannot be read (past the receive limit, undecodable, a
//! reset body) ends the reading, as it ended tonic's: what was asked before it is answered.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use prost::Message;
use tonic::Status;

use super::direct::{framed, trailers, Unframer};
use super::driver::{Answer, DriverHandle};
use super::grpc::status;
use super::leader_presence::LeaderlessChecks;
use super::local_keepalives::SharedLocalKeepAlives;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};

/// Keepalives one stream may have at the node at once; past it the stream stops reading until
/// an answer goes out, so a flood of keepalives meets backpressure instead of queueing.
const KEEPALIVES_IN_FLIGHT_MAX: usize = 64;

pub struct KeepAlives {
    driver: DriverHandle,
    local: Arc<SharedLocalKeepAlives>,
    requests: Incoming,
    messages: Unframer,
    /// The answers owed, in the order of the requests: only the first is polled, since the
    /// others could not be sent before it anyway.
    in_flight: VecDeque<Owed>,
    /// False once the client closed its side or went away: what it asked is still answered.
    reading: bool,
    /// True once the status went out.
    ended: bool,
    /// For a stream that requires a leader (clientv3's always does): ends it with
    /// `etcdserver: no leader` once the member has gone without one for three checks.
    leaderless: Option<LeaderlessChecks>,
}

/// One answer the stream owes.
enum Owed {
    Here(LeaseKeepAliveResponse),
    FromNode(Answer<LeaseKeepAliveRequest>),
}

impl KeepAlives {
    pub fn new(
        driver: DriverHandle,
        local: Arc<SharedLocalKeepAlives>,
        requests: Incoming,
        messages: Unframer,
        leaderless: Option<LeaderlessChecks>,
    ) -> KeepAlives {
        KeepAlives {
            driver,
            local,
            requests,
            messages,
            in_flight: VecDeque::new(),
            reading: true,
            ended: false,
            leaderless,
        }
    }

    /// Sends the requests received so far to the node, up to the bound.
    fn read(&mut self, cx: &mut Context<'_>) {
        while self.reading && self.in_flight.len() < KEEPALIVES_IN_FLIGHT_MAX {
            match self.messages.next_message() {
                Ok(Some(message)) => {
                    match LeaseKeepAliveRequest::decode(message) {
                        Ok(request) => {
                            let owed = match self.local.keep_alive(&request) {
                                Some(response) => Owed::Here(response),
                                None => Owed::FromNode(self.driver.submit(request)),
                            };
                            self.in_flight.push_back(owed);
                        }
                        Err(_) => self.reading = false,
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => {
                    self.reading = false;
                    break;
                }
            }
            match Pin::new(&mut self.requests).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.messages.push(data);
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => self.reading = false,
                Poll::Pending => break,
            }
        }
    }

    fn end(&mut self, status: Result<(), Status>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(status)))))
    }
}

impl Body for KeepAlives {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(checks) = &mut this.leaderless {
            if checks.poll_end(cx).is_ready() {
                return this.end(Err(status(EtcdError::NoLeader)));
            }
        }
        this.read(cx);
        let Some(first) = this.in_flight.front_mut() else {
            return if this.reading {
                Poll::Pending
            } else {
                this.end(Ok(()))
            };
        };
        let answer = match first {
            Owed::Here(response) => Ok(std::mem::take(response)),
            Owed::FromNode(answer) => ready!(Pin::new(answer).poll(cx)),
        };
        this.in_flight.pop_front();
        let framed = match answer {
            Ok(response) => framed(&response),
            Err(error) => return this.end(Err(status(error))),
        };
        match framed {
            Ok(message) => Poll::Ready(Some(Ok(Frame::data(message)))),
            Err(refused) => this.end(Err(refused)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
