//! Accepting a URL where HTTP/2 wants an authority.
//!
//! grpc-go as etcdctl 3.4 uses it dials an endpoint taken from the member list (`endpoint
//! status --cluster`) as the whole URL, so every request on that connection carries
//! `:authority: http://host:port`. Go's HTTP/2 server takes it; the Rust one (h2) resets
//! the stream as malformed. [`AuthorityRepair`] sits between the client socket and the
//! HTTP/2 server: it reads each connection's first header block, and if its authority
//! carries a scheme, it rewrites every header block of that connection without it. Any other
//! connection (HTTP/1, or a well-formed authority) is handed through untouched from its
//! first header block on, so the common path pays one HPACK decode per connection.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16_384;
/// The largest header block collected; larger ones are a protocol matter for the server.
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Mode {
    /// Before the client's connection preface is complete.
    Preface,
    /// Waiting for the first header block to decide.
    Sniffing,
    /// Every header block is decoded and encoded again with the authority repaired.
    Rewriting,
    /// Nothing more to do: bytes go through as they come.
    Passthrough,
}

/// A header block being collected: a HEADERS frame and its CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The byte-level state machine, without I/O: client bytes in, bytes for the server out.
pub struct Repairer {
    mode: Mode,
    pending: Vec<u8>,
    /// Payload bytes of a frame other than a header block still to go through as they come.
    payload_left: usize,
    block: Option<Block>,
    /// The frames of the block being collected as received, for when they go through
    /// unchanged.
    held: Vec<u8>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl Default for Repairer {
    fn default() -> Repairer {
        Repairer {
            mode: Mode::Preface,
            pending: Vec::new(),
            payload_left: 0,
            block: None,
            held: Vec::new(),
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }
}

impl Repairer {
    pub fn passing_through(&self) -> bool {
        self.mode == Mode::Passthrough && self.pending.is_empty()
    }

    /// Takes bytes the client sent and appends what the server should read to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        loop {
            let progressed = match self.mode {
                Mode::Passthrough => {
                    out.append(&mut self.pending);
                    false
                }
                Mode::Preface => self.preface(out),
                Mode::Sniffing | Mode::Rewriting => self.frame(out)?,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The client closed its side: whatever is left goes through as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.block = None;
        out.append(&mut self.held);
        out.append(&mut self.pending);
        self.mode = Mode::Passthrough;
    }

    fn preface(&mut self, out: &mut Vec<u8>) -> bool {
        let seen = self.pending.len().min(PREFACE.len());
        if self.pending[..seen] != PREFACE[..seen] {
            // HTTP/1 (the health endpoints): not ours to touch.
            self.mode = Mode::Passthrough;
            return true;
        }
        if seen < PREFACE.len() {
            return false;
        }
        out.extend(self.pending.drain(..PREFACE.len()));
        self.mode = Mode::Sniffing;
        true
    }

    /// Moves one frame, or as much of a streamed payload as has arrived. False when more
    /// bytes are needed.
    fn frame(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.payload_left > 0 {
            let n = self.payload_left.min(self.pending.len());
            out.extend(self.pending.drain(..n));
            self.payload_left -= n;
            return Ok(n > 0);
        }
        if self.pending.len() < FRAME_HEADER {
            return Ok(false);
        }
        let header = &self.pending[..FRAME_HEADER];
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let kind = header[3];
        if kind != HEADERS && kind != CONTINUATION {
            if self.block.is_some() {
                return self.give_up("a header block interrupted by another frame");
            }
            out.extend(self.pending.drain(..FRAME_HEADER));
            self.payload_left = len;
            return Ok(true);
        }
        if self.held.len() + len > MAX_BLOCK {
            return self.give_up("a header block too large to inspect");
        }
        if self.pending.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let frame: Vec<u8> = self.pending.drain(..FRAME_HEADER + len).collect();
        self.held.extend_from_slice(&frame);
        match self.collect(&frame) {
            Ok(Some(bytes)) => {
                out.extend_from_slice(&bytes);
                self.held.clear();
                Ok(true)
            }
            Ok(None) => Ok(true),
            Err(what) => self.give_up(what),
        }
    }

    /// Adds a HEADERS or CONTINUATION frame to the block. A complete block is handled at
    /// once: the bytes the server should read for it come back.
    fn collect(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let flags = frame[4];
        let payload = &frame[FRAME_HEADER..];
        if frame[3] == HEADERS {
            if self.block.is_some() {
                return Err("a HEADERS frame inside a header block");
            }
            let (priority, fragment) = headers_payload(flags, payload)?;
            self.block = Some(Block {
                stream: [frame[5], frame[6], frame[7], frame[8]],
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
            });
        } else {
            let block = self
                .block
                .as_mut()
                .ok_or("a CONTINUATION outside a header block")?;
            block.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS == 0 {
            return Ok(None);
        }
        let block = self.block.take().expect("a complete block");
        self.complete(block).map(Some)
    }

    fn complete(&mut self, block: Block) -> Result<Vec<u8>, &'static str> {
        let mut fields = self
            .decoder
            .decode(&block.fragment)
            .map_err(|_| "a header block that does not decode")?;
        let repairs = |(name, value): &(Vec<u8>, Vec<u8>)| {
            name == b":authority" && schemeless(value).is_some()
        };
        if self.mode == Mode::Sniffing && !fields.iter().any(repairs) {
            // The server decodes the same bytes, so its table keeps in step with the
            // client's encoder from here on.
            self.mode = Mode::Passthrough;
            return Ok(std::mem::take(&mut self.held));
        }
        self.mode = Mode::Rewriting;
        for (name, value) in fields.iter_mut() {
            if name == b":authority" {
                if let Some(host) = schemeless(value) {
                    *value = host.to_vec();
                }
            }
        }
        let encoded = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        Ok(header_frames(&block, &encoded))
    }

    /// Hands everything on unchanged and lets the server judge it. Once a header block was
    /// rewritten the server's HPACK table follows ours, so there is no way back.
    fn give_up(&mut self, what: &str) -> io::Result<bool> {
        if self.mode == Mode::Rewriting {
            return Err(io::Error::new(io::ErrorKind::InvalidData, what.to_string()));
        }
        self.block = None;
        let held = std::mem::take(&mut self.held);
        self.pending.splice(0..0, held).for_each(drop);
        self.mode = Mode::Passthrough;
        Ok(true)
    }
}

/// The host:port of an authority written as a URL, or None if it has no scheme.
fn schemeless(authority: &[u8]) -> Option<&[u8]> {
    let at = authority.windows(3).position(|w| w == b"://")?;
    let host = &authority[at + 3..];
    let end = host.iter().position(|&b| b == b'/').unwrap_or(host.len());
    Some(&host[..end])
}

/// A HEADERS frame's priority fields and header block fragment, without padding.
fn headers_payload(flags: u8, payload: &[u8]) -> Result<(Option<[u8; 5]>, &[u8]), &'static str> {
    let mut payload = payload;
    if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or("an empty padded frame")?;
        let keep = rest
            .len()
            .checked_sub(pad as usize)
            .ok_or("padding longer than its frame")?;
        payload = &rest[..keep];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = payload
            .get(..5)
            .and_then(|p| p.try_into().ok())
            .ok_or("a frame too short for its priority")?;
        priority = Some(fields);
        payload = &payload[5..];
    }
    Ok((priority, payload))
}

/// The block as one HEADERS frame and as many CONTINUATION frames as its size needs.
fn header_frames(block: &Block, encoded: &[u8]) -> Vec<u8> {
    let mut frames = Vec::with_capacity(encoded.len() + 2 * FRAME_HEADER + 5);
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = encoded.len().min(MAX_FRAME - priority.len());
    let mut chunks = std::iter::once(&encoded[..first])
        .chain(encoded[first..].chunks(MAX_FRAME))
        .peekable();
    let mut kind = HEADERS;
    while let Some(chunk) = chunks.next() {
        let mut flags = 0;
        let mut extra: &[u8] = &[];
        if kind == HEADERS {
            flags |= if block.end_stream { END_STREAM } else { 0 };
            if block.priority.is_some() {
                flags |= PRIORITY;
                extra = priority;
            }
        }
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        let len = (extra.len() + chunk.len()) as u32;
        frames.extend_from_slice(&len.to_be_bytes()[1..]);
        frames.extend_from_slice(&[kind, flags]);
        frames.extend_from_slice(&block.stream);
        frames.extend_from_slice(extra);
        frames.extend_from_slice(chunk);
        kind = CONTINUATION;
    }
    frames
}

/// A client connection with the authority of its requests repaired (see the module).
pub struct AuthorityRepair<S> {
    inner: S,
    /// Dropped once it passes everything through (most connections, from their first
    /// request): its HPACK tables and buffers are a few KiB per connection.
    repairer: Option<Box<Repairer>>,
    ready: Vec<u8>,
    handed: usize,
}

impl<S> AuthorityRepair<S> {
    pub fn new(inner: S) -> AuthorityRepair<S> {
        AuthorityRepair {
            inner,
            repairer: Some(Box::default()),
            ready: Vec::new(),
            handed: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.handed < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.handed);
                buf.put_slice(&this.ready[this.handed..this.handed + n]);
                this.handed += n;
                if this.handed == this.ready.len() {
                    this.ready = Vec::new();
                    this.handed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let repairer = match &mut this.repairer {
                Some(repairer) if !repairer.passing_through() => repairer,
                _ => {
                    this.repairer = None;
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
            };
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                repairer.finish(&mut this.ready);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            } else {
                repairer.feed(read.filled(), &mut this.ready)?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
