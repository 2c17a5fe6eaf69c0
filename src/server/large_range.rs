//! A large Range answer, and every read of the past with cold values, encoded off the async
//! workers; a large one in parts, each handed to the connection as it is done.
//!
//! One buffer for the whole answer was most of a member's peak memory while it answered a
//! large read: 27 MB for 100,000 pairs of 256 bytes, on top of the pairs themselves, and
//! more when several such reads overlap. In parts, an answer holds the part the connection is
//! sending and the few encoded ahead of it (on the blocking pool, so that two parts are
//! encoded on two cores at once while a third is sent), and nothing waits on a client that
//! reads slowly: the next parts are encoded only as the connection takes the ones before.

use crate::server::log;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::task::JoinHandle;
use tonic::Status;

use super::direct::{grpc_prefix, ok_trailers, trailers, PREFIX};
use super::disk::ColdReader;
use super::grpc::status;
use crate::error::EtcdError;
use crate::mvcc::{ColdRead, ColdValues, RangeLayout, RangePart};
use crate::proto::etcdserverpb::RangeResponse;

/// Answers at least this large go out in parts.
const PARTS_ABOVE_BYTES: usize = 1 << 20;
/// About the size of one part.
const PART_BYTES: usize = 512 << 10;
/// Parts encoded ahead of the one the connection is sending.
const PARTS_AHEAD: usize = 2;

/// Responses of at most this many pairs are not measured: they are encoded where they are
/// answered, as few pairs take little work whatever their values' size (a copy each).
const PAIRS_SMALL_MAX: usize = 256;

/// Whether `response` is worth encoding off the async workers (as reads of the past always
/// are, for their cold values).
pub fn is_large(response: &RangeResponse) -> bool {
    response.kvs.len() > PAIRS_SMALL_MAX
        && prost::Message::encoded_len(response) >= PARTS_ABOVE_BYTES
}

/// An answer encoded with its gRPC prefix: in one buffer, or as parts to come; or refused,
/// past gRPC's message limit.
pub enum Encoded {
    Whole(Bytes),
    Parts(PartsBody),
    Refused(Status),
}

/// Lays `response` out with the cold values `cold` names and encodes it whole if it is
/// small, or sets up its parts. Reads the cold segments: call it off the async workers.
pub fn encode(
    response: RangeResponse,
    cold: ColdValues,
    reader: ColdReader,
) -> io::Result<Encoded> {
    let layout = RangeLayout::new(response, cold)?;
    let prefix = match grpc_prefix(layout.encoded_len()) {
        Ok(prefix) => prefix,
        Err(refused) => return Ok(Encoded::Refused(refused)),
    };
    if layout.encoded_len() < PARTS_ABOVE_BYTES {
        let whole = match layout.parts(1).first() {
            Some(part) => encode_part(&layout, part, &reader, Some(prefix))?,
            None => Bytes::copy_from_slice(&prefix),
        };
        return Ok(Encoded::Whole(whole));
    }
    let parts = layout.parts(layout.encoded_len().div_ceil(PART_BYTES));
    Ok(Encoded::Parts(PartsBody {
        shared: Arc::new(Shared {
            layout,
            parts,
            reader,
            prefix,
        }),
        next_to_encode: 0,
        encoding: VecDeque::with_capacity(PARTS_AHEAD + 1),
        trailers: true,
    }))
}

/// One part's bytes, after `prefix` if given (the first part's).
fn encode_part(
    layout: &RangeLayout,
    part: &RangePart,
    cold: &dyn ColdRead,
    prefix: Option<[u8; PREFIX]>,
) -> io::Result<Bytes> {
    let skip = prefix.map_or(0, |p| p.len());
    // Zeroed memory of this size comes fresh from the allocator's free pages or the kernel.
    let mut out = vec![0; skip + part.len()];
    if let Some(prefix) = prefix {
        out[..skip].copy_from_slice(&prefix);
    }
    layout.encode_part(part, cold, &mut out[skip..])?;
    Ok(Bytes::from(out))
}

/// What every part's encoding reads.
struct Shared {
    layout: RangeLayout,
    parts: Vec<RangePart>,
    reader: ColdReader,
    prefix: [u8; PREFIX],
}

/// The answer's parts as the data of a response body, then the call's status.
pub struct PartsBody {
    shared: Arc<Shared>,
    next_to_encode: usize,
    /// The parts being encoded, in order.
    encoding: VecDeque<JoinHandle<io::Result<Bytes>>>,
    trailers: bool,
}

impl PartsBody {
    /// Starts encoding the parts up to [`PARTS_AHEAD`] past the one to send next.
    fn encode_ahead(&mut self) {
        while self.encoding.len() <= PARTS_AHEAD && self.next_to_encode < self.shared.parts.len() {
            let shared = self.shared.clone();
            let index = self.next_to_encode;
            self.encoding
                .push_back(tokio::task::spawn_blocking(move || {
                    let prefix = (index == 0).then_some(shared.prefix);
                    let part = &shared.parts[index];
                    encode_part(&shared.layout, part, &shared.reader, prefix)
                }));
            self.next_to_encode += 1;
        }
    }

    /// Ends the call with `err` after the parts sent so far: the client sees the status, not a
    /// message cut short.
    fn fail(&mut self, err: String) -> Frame<Bytes> {
        log::error!("detcd: cannot encode a large range answer: {err}");
        self.encoding.clear();
        self.next_to_encode = self.shared.parts.len();
        self.trailers = false;
        Frame::trailers(trailers(Err(status(EtcdError::Corrupt))))
    }
}

impl Body for PartsBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.encode_ahead();
        if let Some(next) = self.encoding.front_mut() {
            let done = ready!(Pin::new(next).poll(cx));
            self.encoding.pop_front();
            let frame = match done {
                Ok(Ok(part)) => Frame::data(part),
                Ok(Err(e)) => self.fail(e.to_string()),
                Err(e) => self.fail(e.to_string()),
            };
            self.encode_ahead();
            return Poll::Ready(Some(Ok(frame)));
        }
        if std::mem::take(&mut self.trailers) {
            return Poll::Ready(Some(Ok(Frame::trailers(ok_trailers()))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.encoding.is_empty() && self.next_to_encode == self.shared.parts.len() && !self.trailers
    }
}
