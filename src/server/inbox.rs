//! What the node's thread waits on: the driver's channel (client requests, disk completions,
//! messages of peers on TLS connections, ...) and the plain-TCP peer connections it reads
//! itself (`peer::NodeInbound`), together in one epoll. A sender rings the thread's doorbell
//! (an eventfd) only while the thread is parked, so a busy node costs its senders no syscall.

use std::io;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::driver::Event;
use super::log;
use super::peer::NodeInbound;
use crate::node::Input;

const DOORBELL: Token = Token(0);
/// Readiness events taken per wait; more simply wait for the next.
const EVENTS_MAX: usize = 64;

struct Doorbell {
    waker: Waker,
    /// The node's thread is in (or about to enter) its wait.
    parked: AtomicBool,
}

impl Doorbell {
    /// After a send: wakes the thread if it waits. The fence pairs with the one in
    /// [`Inbox::park`]: either the thread sees the event, or this sees it parked.
    fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.waker.wake() {
                log::error!("detcd: cannot wake the node's thread: {e}");
            }
        }
    }
}

/// The senders' end of the node's channel. Cheap to clone.
#[derive(Clone)]
pub struct NodeSender {
    tx: mpsc::Sender<Event>,
    bell: Arc<Doorbell>,
}

impl NodeSender {
    /// Whether the event was queued (it is not once the node's thread is gone).
    pub fn send(&self, event: Event) -> bool {
        let sent = self.tx.send(event).is_ok();
        self.bell.ring();
        sent
    }
}

/// The node's thread's end.
pub struct Inbox {
    rx: mpsc::Receiver<Event>,
    bell: Arc<Doorbell>,
    poll: Poll,
    events: Events,
    peers: NodeInbound,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Events or inputs arrived.
    Some,
    /// Nothing did before the timeout.
    TimedOut,
    /// Every sender is gone.
    Disconnected,
}

pub fn channel() -> io::Result<(NodeSender, Inbox)> {
    let (tx, rx) = mpsc::channel();
    let poll = Poll::new()?;
    let bell = Arc::new(Doorbell {
        waker: Waker::new(poll.registry(), DOORBELL)?,
        parked: AtomicBool::new(false),
    });
    let inbox = Inbox {
        rx,
        bell: bell.clone(),
        poll,
        events: Events::with_capacity(EVENTS_MAX),
        peers: NodeInbound::new(DOORBELL.0 + 1),
    };
    Ok((NodeSender { tx, bell }, inbox))
}

impl Inbox {
    /// Waits up to `timeout` for the first arrival, then takes what has arrived, at most
    /// `max` in all: the channel's events into `events`, peers' messages into `inputs`.
    pub fn receive(
        &mut self,
        timeout: Duration,
        max: usize,
        events: &mut Vec<Event>,
        inputs: &mut Vec<Input>,
    ) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.take(max, events, inputs) {
                return Received::Disconnected;
            }
            if !events.is_empty() || !inputs.is_empty() {
                // A busy channel must not keep the sockets from being read.
                self.wait(Duration::ZERO);
                self.read_ready(max - events.len(), inputs);
                return Received::Some;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::TimedOut;
            }
            self.park(left, max, events, inputs);
        }
    }

    /// Takes what waits without waiting; `false` once every sender is gone.
    fn take(&mut self, max: usize, events: &mut Vec<Event>, inputs: &mut Vec<Input>) -> bool {
        while events.len() + inputs.len() < max {
            match self.rx.try_recv() {
                Ok(event) => self.accept(event, events),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
        let room = max.saturating_sub(events.len() + inputs.len());
        if room > 0 && self.peers.has_backlog() {
            self.peers.serve_backlog(self.poll.registry(), inputs, room);
        }
        true
    }

    /// A connection handed over is the inbox's own; every other event the driver's.
    fn accept(&mut self, event: Event, events: &mut Vec<Event>) {
        match event {
            Event::PeerConnection(peer) => self.peers.adopt(self.poll.registry(), *peer),
            event => events.push(event),
        }
    }

    /// Waits for the doorbell or a peer's socket, at most `left`; reads the sockets that
    /// became readable.
    fn park(
        &mut self,
        left: Duration,
        max: usize,
        events: &mut Vec<Event>,
        inputs: &mut Vec<Input>,
    ) {
        super::memory::collect_if_asked();
        self.bell.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // A sender that queued before the fence did not see the thread parked: look first.
        match self.rx.try_recv() {
            Ok(event) => {
                self.bell.parked.store(false, Ordering::Relaxed);
                return self.accept(event, events);
            }
            // The next `take` tells.
            Err(mpsc::TryRecvError::Disconnected) => {
                self.bell.parked.store(false, Ordering::Relaxed);
                return;
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        self.wait(left);
        self.bell.parked.store(false, Ordering::Relaxed);
        self.read_ready(max, inputs);
    }

    /// Waits at most `timeout` for the doorbell or a socket.
    fn wait(&mut self, timeout: Duration) {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("detcd: the node's thread cannot wait: {e}");
            }
        }
    }

    /// Reads the sockets the last wait found ready, while `inputs` holds fewer than `max`.
    fn read_ready(&mut self, max: usize, inputs: &mut Vec<Input>) {
        for event in self.events.iter() {
            let token = event.token();
            if self.peers.owns(token) {
                let room = max.saturating_sub(inputs.len());
                self.peers
                    .readable(self.poll.registry(), token, inputs, room);
            }
        }
    }
}
