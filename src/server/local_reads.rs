//! The server's side of the node's local reads (`crate::node::LocalReads`): the client-port
//! workers answer reads of one key from the latest view, which the node's thread refreshes
//! after each batch, before the batch's answers leave (`driver.rs`). Serializable reads are
//! answered at once; linearizable ones once a read barrier they share passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use super::driver::DriverHandle;
use super::large_range;
use crate::error::EtcdError;
use crate::node::{answers_after_barrier, answers_locally, LocalReads, Node, ReadRounds};
use crate::proto::detcdpb::{ReadBarrierRequest, ReadBarrierResponse};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};

/// A barrier's outcome as the reads sharing it see it: `None` until it passed or failed. The
/// worker that asked it holds the sender; if that worker's call is dropped (its client went
/// away), the others see the channel closed and ask the node themselves.
type Round = watch::Receiver<Option<Result<ReadBarrierResponse, EtcdError>>>;

#[derive(Default)]
pub struct SharedLocalReads {
    reads: Mutex<LocalReads>,
    /// A read came since the last refresh.
    wanted: AtomicBool,
    rounds: Mutex<Rounds>,
}

/// The node's batches started so far (the epoch of [`ReadRounds`]) and the open barrier. The
/// count moves under the same lock the workers read it under, so a worker that saw it
/// unchanged did so before the node stepped the batch that took the barrier.
struct Rounds {
    batches: u64,
    open: ReadRounds<Round>,
}

impl Default for Rounds {
    fn default() -> Rounds {
        Rounds {
            batches: 0,
            open: ReadRounds::new(false),
        }
    }
}

impl SharedLocalReads {
    /// On the node's thread once a batch's inputs are taken, before the node steps them.
    pub fn batch_starts(&self) {
        self.lock_rounds().batches += 1;
    }

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
        self.want();
        let view = self.lock().view()?;
        view.range(req, large_range::is_large)
    }

    /// The answer to a linearizable `req` from a view frozen after a read barrier that was
    /// asked after `req` arrived, or `None` when the node must answer it.
    pub async fn range_after_barrier(
        &self,
        driver: &DriverHandle,
        req: &RangeRequest,
    ) -> Option<Result<RangeResponse, EtcdError>> {
        if !answers_after_barrier(req) {
            return None;
        }
        self.want();
        let barrier = match self.barrier(driver).await? {
            Ok(barrier) => barrier,
            Err(e) => return Some(Err(e)),
        };
        let view = self.lock().view()?;
        if !view.serves(&barrier) {
            return None;
        }
        view.range(req, large_range::is_large)
    }

    /// Waits for the open barrier, or asks one; `None` if the worker that asked it went away.
    async fn barrier(
        &self,
        driver: &DriverHandle,
    ) -> Option<Result<ReadBarrierResponse, EtcdError>> {
        let (mut round, asked) = {
            let mut rounds = self.lock_rounds();
            match rounds.open.join(rounds.batches) {
                Some(round) => (round, None),
                None => {
                    let (sender, round) = watch::channel(None);
                    let batches = rounds.batches;
                    rounds.open.open(batches, round.clone());
                    (round, Some(sender))
                }
            }
        };
        if let Some(sender) = asked {
            let result = driver.call(ReadBarrierRequest {}).await;
            sender.send_replace(Some(result.clone()));
            return Some(result);
        }
        let passed = round.wait_for(Option::is_some).await.ok()?;
        passed.clone()
    }

    fn want(&self) {
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalReads> {
        self.reads.lock().expect("the view's holders do not panic")
    }

    fn lock_rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds
            .lock()
            .expect("the rounds' holders do not panic")
    }
}
