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

use std::time::Duration;

/// How often the collector looks at the resident memory.
const COLLECT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Checks between collections at most.
const CHECKS_PER_COLLECT_MAX: u32 = 10;
/// Growth of the resident memory since the last collection that is worth another: collections
/// are rare while a member's memory holds steady, and at most one per this much growth.
const COLLECT_GROWTH_BYTES_MIN: u64 = 8 << 20;

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
