//! The codec of every generated gRPC service and client: tonic's prost codec, except that the
//! encoder sizes the buffer for the whole message before writing it.
//!
//! tonic's own encoder writes into a buffer that starts at 8 KiB and doubles as it fills, so a
//! 25 MB range response was copied about twice more while being encoded, into pages faulted in
//! for each new buffer. The size is known up front (prost computes it anyway, to check the
//! buffer's room), so one allocation of the right size does.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Named in build.rs (`codec_path`); generated code builds it with `default()`.
#[derive(Debug)]
pub struct SizedProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedProstCodec<T, U> {
    fn default() -> Self {
        SizedProstCodec(PhantomData)
    }
}

impl<T, U> Codec for SizedProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = PlainDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        PlainDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}

/// Decodes as tonic's prost decoder does (which is not public to reuse).
#[derive(Debug)]
pub struct PlainDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for PlainDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
