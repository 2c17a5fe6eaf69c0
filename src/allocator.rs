//! mimalloc as the global allocator, called the way std's system allocator calls malloc: plain
//! `mi_malloc` for the alignments every allocation of its size gets anyway (at most 16 bytes,
//! C's `max_align_t`, and at most the size), the aligned entry points only beyond them. The
//! `mimalloc` crate takes the aligned path for every allocation, which costs the simulator
//! about 2% of its instructions in alignment checks (callgrind).
//!
//! The simulator uses it for speed. The server uses it because a block freed by another thread
//! than the one that allocated it goes back without a lock: under glibc's malloc such a free
//! takes the allocating thread's arena lock, and a member's client-port workers, freeing the
//! response blocks of the watch thread (which runs at nice 10), waited on that lock whenever the
//! watch thread was preempted holding it; the writes behind them waited too.
#![allow(unsafe_code)] // the allocator's interface is unsafe by nature

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc, like C's malloc, aligns every block to `max_align_t`: 16 bytes on the 64-bit
/// targets detcd builds for.
const NATURAL_ALIGN: usize = 16;

pub struct MiMalloc;

fn natural(layout: &Layout) -> bool {
    layout.align() <= NATURAL_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's alignment
// (naturally or through the aligned entry points), and is freed or resized only by mimalloc.
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if natural(&layout) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if natural(&layout) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = Layout::from_size_align_unchecked(new_size, layout.align());
        if natural(&grown) {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

// Declared here rather than through libmimalloc-sys's `extended` feature, which needs a crate
// of C types for this one function.
extern "C" {
    fn mi_collect(force: bool);
}

/// Returns to the kernel, now rather than after mimalloc's purge delay, the freed memory it
/// can: the calling thread's, and the free pages of every arena (where the blocks of other
/// threads go once they are free).
pub fn collect() {
    // SAFETY: a collection touches only the allocator's own free memory.
    unsafe { mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few pages, with every alignment the plain path takes and a few it
    /// does not, allocated, grown and freed: each block has its layout's alignment.
    #[test]
    fn every_block_has_its_alignment() {
        for size in 1..=5000usize {
            for align in [1, 2, 4, 8, 16, 32, 64] {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: nonzero sizes; each block is freed with the allocator that made it.
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    let q = MiMalloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "grown {size} align {align}");
                    MiMalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    MiMalloc.dealloc(z, layout);
                }
            }
        }
    }
}
