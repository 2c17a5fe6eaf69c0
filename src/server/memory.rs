//! Gives memory the process freed back to the operating system.
//!
//! The server's allocator (mimalloc, `crate::allocator`) returns the pages it no longer uses
//! only when a thread calls into it, and a thread that has gone idle (a blocking thread that
//! encoded a large answer, a client-port worker after a burst) may keep its freed pages for as
//! long as it stays idle: 20 MiB after four 20 MiB range answers. So a low-priority thread
//! collects them once the member's resident memory has grown enough since the last collection,
//! looking every second, and every 10 s in any case (memory freed long after it grew, as when
//! 10,000 watchers go, does not show as growth). It asks the kernel (`/proc/self/status`), not
//! the allocator, how much is resident.
//!
//! A collection returns only the calling thread's free pages (and the arenas'): a thread's heap
//! cannot be collected from another. So each collection is also asked of every long-lived
//! thread, which does it at its next idle point ([`collect_if_asked`]): the runtimes' threads
//! when they park, the node's thread before it waits. A member's watch thread kept about
//! 10 MiB of freed pages after 10,000 watchers had come and gone, half of an idle member's
//! anonymous memory.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the collector looks at the resident memory.
const COLLECT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Checks between collections at most.
const CHECKS_PER_COLLECT_MAX: u32 = 10;
/// Growth of the resident memory since the last collection that is worth another: collections
/// are rare while a member's memory holds steady, and at most one per this much growth.
const COLLECT_GROWTH_BYTES_MIN: u64 = 8 << 20;

/// Collections the collector has asked of every thread, counted.
static COLLECTIONS_ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The count of collections asked at this thread's last collection.
    static COLLECTIONS_SEEN: Cell<u64> = const { Cell::new(0) };
}

/// At a thread's idle point: collects the thread's freed pages if the collector asked since the
/// thread last did (and says whether it did). Cheap enough for every park of a busy thread: one
/// load when not asked.
pub fn collect_if_asked() -> bool {
    let asked = COLLECTIONS_ASKED.load(Ordering::Relaxed);
    let due = COLLECTIONS_SEEN.with(|seen| seen.replace(asked)) != asked;
    if due {
        crate::allocator::collect();
    }
    due
}

/// Asks every thread to collect at its next idle point.
fn ask_every_thread() {
    COLLECTIONS_ASKED.fetch_add(1, Ordering::Relaxed);
}

/// Has `runtime`'s threads collect at their idle points: each when it parks, and a task wakes
/// one every [`COLLECT_CHECK_INTERVAL`], so that a runtime gone idle collects too.
pub fn collect_when_parked(runtime: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    runtime.on_thread_park(|| {
        collect_if_asked();
    })
}

/// The waking task of [`collect_when_parked`], spawned on the runtime once it runs.
pub async fn wake_to_collect() {
    let mut interval = tokio::time::interval(COLLECT_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
    }
}

/// Starts the collector thread, which lives as long as the process.
pub fn return_freed_memory() -> Result<(), String> {
    std::thread::Builder::new()
        .name("detcd-trim".into())
        .spawn(|| {
            super::disk::lower_thread_priority();
            collect_periodically()
        })
        .map(drop)
        .map_err(|e| format!("cannot start the memory collector: {e}"))
}

fn collect_periodically() -> ! {
    // The resident memory right after the last collection; when memory shrinks by itself, the
    // baseline follows it down, so that growing back counts too.
    let mut baseline = u64::MAX;
    let mut checks = 0;
    loop {
        std::thread::sleep(COLLECT_CHECK_INTERVAL);
        checks += 1;
        let resident = resident_bytes().unwrap_or(u64::MAX);
        baseline = baseline.min(resident);
        if checks >= CHECKS_PER_COLLECT_MAX
            || resident >= baseline.saturating_add(COLLECT_GROWTH_BYTES_MIN)
        {
            ask_every_thread();
            crate::allocator::collect();
            baseline = resident_bytes().unwrap_or(resident);
            checks = 0;
        }
    }
}

/// The process's resident memory, from the kernel (`VmRSS` in `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_collects_once_per_ask() {
        std::thread::spawn(|| {
            collect_if_asked();
            assert!(
                !collect_if_asked(),
                "nothing asked since the last collection"
            );
            ask_every_thread();
            assert!(collect_if_asked(), "asked");
            assert!(!collect_if_asked(), "already collected for that ask");
        })
        .join()
        .expect("the test thread");
    }
}
