//! The server's side of the node's local keepalives (`crate::node::LocalKeepAlives`): the
//! client-port workers acknowledge keepalives the leader's floors cover from the latest view,
//! which the node's thread takes after each batch, before the batch's messages and answers
//! leave; it hands the node the renewals before each batch, after reading the batch's time
//! (`driver.rs`).
//!
//! A worker reads the time under the same lock as it records the renewal, so a batch either
//! gets the renewal before it looks at expiries or read its time before the renewal was made.

use std::sync::Mutex;

use crate::node::{LocalKeepAlives, Node};
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::time::Instant;

pub struct SharedLocalKeepAlives {
    keepalives: Mutex<LocalKeepAlives>,
    /// Where the node's clock starts (`Driver::now`).
    clock_origin: std::time::Instant,
}

impl SharedLocalKeepAlives {
    pub fn new(clock_origin: std::time::Instant) -> SharedLocalKeepAlives {
        SharedLocalKeepAlives {
            keepalives: Mutex::default(),
            clock_origin,
        }
    }

    /// On the node's thread before each batch, once the batch's time is read.
    pub fn hand_over(&self, node: &mut Node) {
        self.lock().hand_over(node);
    }

    /// On the node's thread after each batch, before its messages and answers leave.
    pub fn refresh(&self, node: &Node) {
        self.lock().refresh(node);
    }

    /// Once the node is gone.
    pub fn close(&self) {
        self.lock().clear();
    }

    /// The answer to `req`, acknowledged here, or `None` when the node must answer it.
    pub fn keep_alive(&self, req: &LeaseKeepAliveRequest) -> Option<LeaseKeepAliveResponse> {
        let mut keepalives = self.lock();
        let now = Instant::from_nanos(self.clock_origin.elapsed().as_nanos() as u64);
        keepalives.keep_alive(req.id, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalKeepAlives> {
        self.keepalives
            .lock()
            .expect("the keepalives' holders do not panic")
    }
}
