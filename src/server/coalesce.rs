//! Few write system calls for the responses that finish together on a client connection.
//!
//! Two things made every small response leave in a `writev` of its own, and each costs the
//! sender and, on loopback, the receiver a pass through the TCP stack.
//!
//! - **Scheduling.** The HTTP/2 server writes out whatever responses it holds each time its
//!   connection task runs, and a finished response wakes that task at once: tokio runs a
//!   task woken by the running one next (its LIFO slot), before the other requests whose
//!   answers are already there. So the first write of each flush waits for one turn of the
//!   scheduler: it wakes its own task and answers `Pending`, the task goes to the back of
//!   the run queue, and the requests ready before it add their responses to the
//!   connection's buffer. A connection alone on an idle runtime is polled again at once, so
//!   a single client's request waits only for that extra poll.
//! - **Framing.** On a socket that writes vectored, h2 (0.4) keeps every DATA payload of
//!   256 bytes or more out of its buffer and accepts no further frame until that payload is
//!   written, so a 256-byte value's answer was flushed alone. Without vectored writes its
//!   threshold is 1 KiB, but it then writes a held payload's frame header and the payload
//!   in two calls. [`CoalescedWrites`] therefore tells h2 it does not write vectored, keeps
//!   each write that fits in [`GATHER_CAPACITY`], and sends what it keeps together with the
//!   next larger write in one `writev`, or on flush.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes kept back: h2's own buffer is 16 KiB, so its whole buffer fits, and a
/// held frame header is gathered with a full 16 KiB payload rather than copied with it.
pub const GATHER_CAPACITY: usize = 16 * 1024;

pub struct CoalescedWrites<S> {
    inner: S,
    /// Whether the next write starts a flush and should first give way once.
    first_of_flush: bool,
    /// Bytes accepted but not yet written, at most [`GATHER_CAPACITY`].
    kept: Vec<u8>,
}

impl<S> CoalescedWrites<S> {
    pub fn new(inner: S) -> CoalescedWrites<S> {
        CoalescedWrites {
            inner,
            first_of_flush: true,
            kept: Vec::new(),
        }
    }

    /// The first write after a flush yields once; every later one goes straight through, so
    /// a partial write continues without another turn.
    fn give_way(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.first_of_flush {
            return false;
        }
        self.first_of_flush = false;
        cx.waker().wake_by_ref();
        true
    }
}

impl<S: AsyncWrite + Unpin> CoalescedWrites<S> {
    /// Writes the kept bytes and then `buf` in one call until some of `buf` is written.
    fn poll_gathered(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let slices = [io::IoSlice::new(&self.kept), io::IoSlice::new(buf)];
            let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Ok(0));
            }
            let from_kept = written.min(self.kept.len());
            self.kept.drain(..from_kept);
            if written > from_kept {
                return Poll::Ready(Ok(written - from_kept));
            }
        }
    }

    fn poll_write_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.kept.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.kept))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.kept.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.give_way(cx) {
            return Poll::Pending;
        }
        if this.kept.len() + buf.len() <= GATHER_CAPACITY {
            this.kept.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        this.poll_gathered(cx, buf)
    }

    /// Not vectored, so that h2 copies payloads under 1 KiB into its buffer; the gathering
    /// is done here instead.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_kept(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.first_of_flush = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_kept(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(
        writer: &mut CoalescedWrites<Vec<u8>>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<usize> {
        Pin::new(writer).poll_write(cx, bytes).map(Result::unwrap)
    }

    #[test]
    fn each_flush_gives_way_once_before_its_first_write() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut writer = CoalescedWrites::new(Vec::new());

        assert_eq!(write(&mut writer, &mut cx, b"ab"), Poll::Pending);
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            1,
            "it must wake itself to be polled again"
        );
        assert_eq!(write(&mut writer, &mut cx, b"ab"), Poll::Ready(2));
        assert_eq!(
            write(&mut writer, &mut cx, b"cd"),
            Poll::Ready(2),
            "a flush gives way once"
        );
        assert!(Pin::new(&mut writer).poll_flush(&mut cx).is_ready());

        assert_eq!(
            write(&mut writer, &mut cx, b"ef"),
            Poll::Pending,
            "the next flush gives way again"
        );
        assert_eq!(write(&mut writer, &mut cx, b"ef"), Poll::Ready(2));
        assert!(Pin::new(&mut writer).poll_flush(&mut cx).is_ready());
        assert_eq!(writer.inner, b"abcdef");
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
    }

    /// A socket that records each write call and takes at most `limit` bytes per call.
    struct Socket {
        calls: Vec<Vec<u8>>,
        limit: usize,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut call: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            call.truncate(this.limit);
            let written = call.len();
            this.calls.push(call);
            Poll::Ready(Ok(written))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes all of `bytes` as a caller of `AsyncWrite` must, retrying after a partial write.
    fn write_all(writer: &mut CoalescedWrites<Socket>, cx: &mut Context<'_>, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if let Poll::Ready(written) = Pin::new(&mut *writer).poll_write(cx, rest) {
                let written = written.unwrap();
                assert!(written > 0);
                rest = &rest[written..];
            }
        }
    }

    #[test]
    fn small_writes_wait_for_the_flush_or_a_large_write_and_leave_in_one_call() {
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let socket = Socket {
            calls: Vec::new(),
            limit: usize::MAX,
        };
        let mut writer = CoalescedWrites::new(socket);
        assert!(!writer.is_write_vectored(), "h2 must copy small payloads");

        let header = vec![1u8; 9];
        let payload = vec![2u8; GATHER_CAPACITY];
        write_all(&mut writer, &mut cx, &header);
        write_all(&mut writer, &mut cx, &payload);
        write_all(&mut writer, &mut cx, b"trailers");
        assert_eq!(
            writer.inner.calls,
            vec![[header.clone(), payload.clone()].concat()]
        );

        assert!(Pin::new(&mut writer).poll_flush(&mut cx).is_ready());
        assert_eq!(writer.inner.calls.len(), 2);
        assert_eq!(writer.inner.calls[1], b"trailers");
    }

    #[test]
    fn partial_writes_lose_and_repeat_nothing() {
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut writer = CoalescedWrites::new(Socket {
            calls: Vec::new(),
            limit: 1000,
        });
        let mut sent = Vec::new();
        for (round, size) in [10, 5000, 20_000, 3, GATHER_CAPACITY, 1]
            .into_iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..size).map(|i| (i + round) as u8).collect();
            write_all(&mut writer, &mut cx, &bytes);
            sent.extend_from_slice(&bytes);
        }
        while Pin::new(&mut writer).poll_flush(&mut cx).is_pending() {}
        assert!(writer.kept.is_empty());
        assert_eq!(writer.inner.calls.concat(), sent);
    }
}
