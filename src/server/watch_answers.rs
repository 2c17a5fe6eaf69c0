//! A watch stream's answer channel: the watch task puts batches of encoded responses in, the
//! stream's response body takes them out, at most `bound` waiting at a time.
//!
//! tokio's bounded channel allocates room for 32 items and several cache-line-padded counters
//! whatever its bound: about 2 KiB per stream, a fifth of what an open stream costs the member.
//! A stream's channel has one reader and one writer (the watch task, which may hold a second
//! handle while it waits for room), so a short queue behind a mutex does the same in about
//! 200 bytes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    bound: usize,
    /// The receiver, waiting for an item or the end.
    receiver_waiting: Option<Waker>,
    /// A sender waiting for room.
    sender_waiting: Option<Waker>,
    senders: usize,
    receiver_gone: bool,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while holding it; a poisoned queue is still a consistent queue.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers `cx`'s waker in `slot`, unless the same task is already there.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// A channel that holds at most `bound` items (at least one).
pub(super) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        items: VecDeque::new(),
        bound: bound.max(1),
        receiver_waiting: None,
        sender_waiting: None,
        senders: 1,
        receiver_gone: false,
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The receiver is gone: nothing sent will be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Closed;

pub(super) struct Sender<T> {
    shared: Shared<T>,
}

impl<T> Sender<T> {
    /// Whether an item may go in now.
    pub fn has_room(&self) -> Result<bool, Closed> {
        let state = lock(&self.shared);
        if state.receiver_gone {
            return Err(Closed);
        }
        Ok(state.items.len() < state.bound)
    }

    /// Puts `item` in if there is room and a receiver; returns whether it went in.
    pub fn try_send(&self, item: T) -> bool {
        let mut state = lock(&self.shared);
        if state.receiver_gone || state.items.len() >= state.bound {
            return false;
        }
        state.items.push_back(item);
        let receiver = state.receiver_waiting.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        true
    }

    /// Waits until an item may go in: true then, false once the receiver is gone.
    pub async fn room(&self) -> bool {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if state.receiver_gone {
                Poll::Ready(false)
            } else if state.items.len() < state.bound {
                Poll::Ready(true)
            } else {
                register(&mut state.sender_waiting, cx);
                Poll::Pending
            }
        })
        .await
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        lock(&self.shared).senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.senders -= 1;
        let receiver = (state.senders == 0)
            .then(|| state.receiver_waiting.take())
            .flatten();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
    }
}

pub(super) struct Receiver<T> {
    shared: Shared<T>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and every item was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.shared);
        if let Some(item) = state.items.pop_front() {
            let sender = state.sender_waiting.take();
            drop(state);
            if let Some(waker) = sender {
                waker.wake();
            }
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        register(&mut state.receiver_waiting, cx);
        Poll::Pending
    }

    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.receiver_gone = true;
        let items = std::mem::take(&mut state.items);
        let sender = state.sender_waiting.take();
        drop(state);
        drop(items);
        if let Some(waker) = sender {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_room(sender: &Sender<u32>, waker: &Waker) -> Poll<bool> {
        let mut room = std::pin::pin!(sender.room());
        room.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn holds_at_most_its_bound_and_wakes_the_side_that_waits() {
        let (sender, mut receiver) = channel::<u32>(2);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Pending);
        assert!(sender.try_send(1));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waiting receiver woke"
        );
        assert!(sender.try_send(2));
        assert_eq!(sender.has_room(), Ok(false));
        assert!(!sender.try_send(3), "full");
        assert_eq!(poll_room(&sender, &waker), Poll::Pending);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the waiting sender woke");
        assert_eq!(poll_room(&sender, &waker), Poll::Ready(true));
        assert!(sender.try_send(3));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(3)));
    }

    #[test]
    fn ends_for_the_receiver_once_every_sender_is_gone_and_read() {
        let (sender, mut receiver) = channel::<u32>(2);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let waiting = sender.clone();
        assert!(sender.try_send(7));
        drop(sender);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(
            receiver.poll_recv(&mut cx),
            Poll::Pending,
            "a sender is left"
        );
        drop(waiting);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the last sender's drop woke it"
        );
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn closes_for_the_sender_once_the_receiver_is_gone() {
        let (sender, receiver) = channel::<u32>(1);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(sender.try_send(1));
        assert_eq!(poll_room(&sender, &waker), Poll::Pending);
        drop(receiver);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the waiting sender woke");
        assert_eq!(poll_room(&sender, &waker), Poll::Ready(false));
        assert_eq!(sender.has_room(), Err(Closed));
        assert!(!sender.try_send(2));
    }
}
