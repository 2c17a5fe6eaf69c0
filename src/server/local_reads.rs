//! The server's side of the node's local reads (`crate::node::LocalReads`): the client-port
//! workers answer serializable reads of one key from the latest view, which the node's thread
//! refreshes after each batch, before the batch's answers leave (`driver.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::large_range;
use crate::error::EtcdError;
use crate::node::{answers_locally, LocalReads, Node};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};

#[derive(Default)]
pub struct SharedLocalReads {
    reads: Mutex<LocalReads>,
    /// A read came since the last refresh.
    wanted: AtomicBool,
}

impl SharedLocalReads {
    /// On the node's thread after each batch, before its answers leave.
    pub fn refresh(&self, node: &Node) {
        let wanted = self.wanted.swap(false, Ordering::Relaxed);
        self.lock().refresh(node, wanted);
    }

    /// Once the node is gone.
    pub fn close(&self) {
        self.lock().clear();
    }

    /// The answer to `req` from the latest view, or `None` when the node must answer it.
    pub fn range(&self, req: &RangeRequest) -> Option<Result<RangeResponse, EtcdError>> {
        if !answers_locally(req) {
            return None;
        }
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        let view = self.lock().view()?;
        view.range(req, large_range::is_large)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalReads> {
        self.reads.lock().expect("the view's holders do not panic")
    }
}
