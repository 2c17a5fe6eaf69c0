//! A hint that memory will be read soon, for walks whose every step is a cache miss (a large
//! range visits each key's records in a heap block of their own; the loop alone leaves the CPU
//! waiting on one miss at a time).

/// Asks the CPU to start loading the cache line at `target`; does nothing where no such hint
/// exists.
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(target: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, not even on an invalid address, and
    // changes nothing a program can observe but timing.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(target.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = target;
}
