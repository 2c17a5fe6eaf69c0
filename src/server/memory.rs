//! Gives memory the process freed back to the operating system.
//!
//! glibc's allocator keeps freed blocks for reuse and returns memory to the kernel on its own
//! only from the top of a heap, past a threshold that it raises every time a large block is
//! freed (a 27 MB range response lifts it to 54 MB for the rest of the process's life). After a
//! load (10,000 watchers gone, a large range answered, a burst of writes whose requests and raft
//! entries are freed) a member kept about twice its live heap resident: 140 MiB where
//! `malloc_trim` brought it to 74 MiB. So the server fixes both thresholds at startup, and a
//! low-priority thread trims the heap once the member's resident memory has grown enough since
//! the last trim, looking every second, and every 10 s in any case (memory freed long after it
//! grew, as when 10,000 watchers go, does not show as growth). It asks the kernel
//! (`/proc/self/status`), not the allocator: glibc's own statistics walk every free block under
//! the heap locks, which took milliseconds after a large read and stalled allocating threads.

use std::time::Duration;

/// Blocks at least this large get pages of their own, unmapped as soon as they are freed: the
/// large range responses and snapshot buffers, rare enough that mapping each costs little.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;
/// Free memory at the top of a heap beyond this goes back to the kernel when a block is freed.
const TOP_TRIM_THRESHOLD_BYTES: i32 = 4 << 20;
/// How often the trimmer looks at the resident memory.
const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Checks between trims at most.
const CHECKS_PER_TRIM_MAX: u32 = 10;
/// Growth of the resident memory since the last trim that is worth another: trims are rare
/// while a member's memory holds steady, and at most one per this much growth while it grows.
const TRIM_GROWTH_BYTES_MIN: u64 = 8 << 20;

/// Fixes the allocator's thresholds and starts the trimmer thread, which lives as long as the
/// process. Call before the other threads start.
pub fn return_freed_memory() -> Result<(), String> {
    if !fix_thresholds() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("detcd-trim".into())
        .spawn(|| {
            super::disk::lower_thread_priority();
            trim_periodically()
        })
        .map(drop)
        .map_err(|e| format!("cannot start the memory trimmer: {e}"))
}

fn trim_periodically() -> ! {
    // The resident memory right after the last trim; when memory shrinks by itself, the
    // baseline follows it down, so that growing back counts too.
    let mut baseline = u64::MAX;
    let mut checks = 0;
    loop {
        std::thread::sleep(TRIM_CHECK_INTERVAL);
        checks += 1;
        let resident = resident_bytes().unwrap_or(u64::MAX);
        baseline = baseline.min(resident);
        if checks >= CHECKS_PER_TRIM_MAX
            || resident >= baseline.saturating_add(TRIM_GROWTH_BYTES_MIN)
        {
            trim();
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

/// Sets fixed thresholds (which also stops glibc from moving them); false where the allocator
/// is not glibc's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // libc calls that take no pointers
fn fix_thresholds() -> bool {
    // SAFETY: mallopt only changes the allocator's parameters; it is called before the
    // process has other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TOP_TRIM_THRESHOLD_BYTES) == 1
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one libc call that takes no pointers
fn trim() {
    // SAFETY: malloc_trim releases free pages of the allocator's arenas; it touches no memory
    // the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `buffer` with huge pages (where
/// transparent huge pages are enabled for those who ask): a large buffer written once, as a
/// large answer is, then faults once per 2 MiB instead of once per 4 KiB.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // one libc call on memory this function borrows
pub fn advise_huge_pages(buffer: &mut [u8]) {
    const HUGE_PAGE: usize = 2 << 20;
    let start = buffer.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + buffer.len()) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: [first, end) lies inside `buffer`, which this function borrows mutably;
        // MADV_HUGEPAGE changes how its pages are backed, never their contents. A refusal
        // (no transparent huge pages) leaves the pages as they were.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn advise_huge_pages(_buffer: &mut [u8]) {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_thresholds() -> bool {
    false
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
