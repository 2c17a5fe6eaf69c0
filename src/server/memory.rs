//! Gives memory the process freed back to the operating system.
//!
//! glibc's allocator keeps freed blocks for reuse and returns memory to the kernel on its own
//! only from the top of a heap, past a threshold that it raises every time a large block is
//! freed (a 27 MB range response lifts it to 54 MB for the rest of the process's life). After a
//! load (10,000 watchers gone, a large range answered, a burst of writes whose requests and raft
//! entries are freed) a member kept about twice its live heap resident: 140 MiB where
//! `malloc_trim` brought it to 74 MiB. So the server fixes both thresholds at startup, and a
//! low-priority thread looks at the free heap now and then and trims it once enough has piled
//! up. Trimming only past a threshold keeps a busy member from handing back pages it would
//! fault in again at once.

use std::time::Duration;

/// Blocks at least this large get pages of their own, unmapped as soon as they are freed: the
/// large range responses and snapshot buffers, rare enough that mapping each costs little.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;
/// Free memory at the top of a heap beyond this goes back to the kernel when a block is freed.
const TOP_TRIM_THRESHOLD_BYTES: i32 = 4 << 20;
/// How often the trimmer looks at the free heap.
const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Newly freed heap bytes worth a trim: below this, the pages are more likely reused than
/// wasted.
const TRIM_FREE_BYTES_MIN: usize = 8 << 20;

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
    // Freed bytes stay counted as free after a trim, although their pages went back; so only
    // growth beyond the count at the last trim is worth another. When the free heap shrinks,
    // allocations took some of it (faulting pages back in), and the baseline follows it down.
    let mut baseline = 0;
    loop {
        std::thread::sleep(TRIM_CHECK_INTERVAL);
        let free = free_heap_bytes();
        baseline = baseline.min(free);
        if free >= baseline + TRIM_FREE_BYTES_MIN {
            trim();
            baseline = free;
        }
    }
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

/// Bytes the allocator holds free, in all its arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one libc call that takes no pointers
fn free_heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's own bookkeeping, under its locks.
    let info = unsafe { libc::mallinfo2() };
    info.fordblks
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

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_thresholds() -> bool {
    false
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_heap_bytes() -> usize {
    0
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
