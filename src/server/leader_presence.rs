//! Whether the member has a leader, for the calls that require one (gRPC metadata
//! `hasleader=true`: clientv3's `WithRequireLeader`, and its lease keepalive stream always).
//!
//! As etcd's interceptors do, such a call is refused while the member has no leader, and a
//! stream of them ends with `etcdserver: no leader` at the third check in a row, one election
//! timeout apart, that finds none: re-opening every client's streams costs far more than a short
//! election. Watch streams follow the same rule inside the watch hub (`WatchConfig::
//! leaderless_grace`); lease keepalive streams check here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
/// The node's view of its leader after its last batch.
#[derive(Default)]
pub struct LeaderPresence {
    has_leader: AtomicBool,
}

impl LeaderPresence {
    /// On the node's thread after each batch: whether its node knows a leader.
    pub fn set(&self, has_leader: bool) {
        self.has_leader.store(has_leader, Ordering::Relaxed);
    }

    pub fn has_leader(&self) -> bool {
        self.has_leader.load(Ordering::Relaxed)
    }
}

/// What a stream that requires a leader is held to: the member's presence, checked every
/// election timeout.
#[derive(Clone)]
pub struct LeaderRule {
    pub presence: Arc<LeaderPresence>,
    pub check_every: Duration,
}

impl LeaderRule {
    pub fn checks(&self) -> LeaderlessChecks {
        LeaderlessChecks::new(self.presence.clone(), self.check_every)
    }
}

/// The checks that end a stream requiring a leader: ready once three in a row found none.
pub struct LeaderlessChecks {
    presence: Arc<LeaderPresence>,
    interval: Duration,
    next: Pin<Box<Sleep>>,
    misses: u32,
}

/// Checks in a row without a leader that end a stream (etcd's `maxNoLeaderCnt`).
const MISSES_TO_END: u32 = 3;

impl LeaderlessChecks {
    /// Checks every `interval` (the election timeout).
    pub fn new(presence: Arc<LeaderPresence>, interval: Duration) -> LeaderlessChecks {
        LeaderlessChecks {
            presence,
            interval,
            next: Box::pin(tokio::time::sleep(interval)),
            misses: 0,
        }
    }

    /// Ready once the stream must end; wakes the task at each check until then.
    pub fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.next.as_mut().poll(cx));
            self.misses = if self.presence.has_leader() {
                0
            } else {
                self.misses + 1
            };
            if self.misses >= MISSES_TO_END {
                return Poll::Ready(());
            }
            let at = tokio::time::Instant::now() + self.interval;
            self.next.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_at_the_third_check_in_a_row_without_a_leader() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let presence = Arc::new(LeaderPresence::default());
            presence.set(true);
            let interval = Duration::from_millis(20);
            let mut checks = LeaderlessChecks::new(presence.clone(), interval);
            let end = std::future::poll_fn(|cx| checks.poll_end(cx));
            let with_leader = tokio::time::timeout(interval * 6, end).await;
            assert!(
                with_leader.is_err(),
                "a member with a leader keeps its streams"
            );
            presence.set(false);
            let lost = std::time::Instant::now();
            std::future::poll_fn(|cx| checks.poll_end(cx)).await;
            // The first check after the loss may come at once, the third two intervals later.
            assert!(
                lost.elapsed() >= interval * 2,
                "ended {:?} after",
                lost.elapsed()
            );
        });
    }
}
