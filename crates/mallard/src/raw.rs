//! The unsafe interface of mallard's own crates: the C library (`mallard-capi`), the lab's
//! replay of mallard on a simulated address space, the collector, and the model tests. It is
//! not a stable API and is hidden from the documentation.
//!
//! Everything here is either a constant, a function that cannot corrupt the heap, or an
//! `unsafe fn` whose contract is written on it. A `Heap` is one thread's: it is not `Sync`,
//! so a `&Heap` cannot leave the thread that obtained it; its safe methods only collect,
//! purge and check what that thread owns.
//!
//! Safe code cannot reach past this. The heap's internals are private to the crate:
//! ```compile_fail,E0603
//! let h = mallard::global::thread_heap();
//! let p = h.find_page(2).unwrap();
//! h.free_local_full(p, 0x1000 as *mut u8);
//! ```
//! a thread's heap is only had through an `unsafe fn`:
//! ```compile_fail,E0133
//! let h = mallard::raw::thread_heap();
//! ```
//! and what a `Heap` offers outside the crate does not include its owner-only steps:
//! ```compile_fail,E0624
//! // SAFETY: used on this thread only.
//! let h = unsafe { mallard::raw::thread_heap() };
//! let p = h.find_page(2).unwrap();
//! ```
//! while what it does offer is usable:
//! ```
//! // SAFETY: used on this thread only.
//! let h = unsafe { mallard::raw::thread_heap() };
//! mallard::raw::collect(h, true);
//! h.purge(u64::MAX, true);
//! h.validate();
//! ```

pub use crate::alloc::{
    check_size, free, free_sized, malloc, malloc_aligned, malloc_zeroed, realloc, realloc_unsized, usable_size,
    usable_size_checked,
};
pub use crate::backend::Backend;
pub use crate::chunk::CHUNK_MAX;
pub use crate::config::{
    CLASS_MAX, DIRECT_MAX, LARGE_MAX, MAX_PAGE_SIZE, MIN_ALIGN, MIN_PAGE_SIZE, PURGE_DELAY_MS, SEGMENT_CACHE_KEEP, SEGMENT_SIZE, SMALL_MAX,
};
pub use crate::heap::Heap;
pub use crate::misuse::report_op;
pub use crate::mitigations::{fill_freed, quarantine, HEADER_GUARD, HUGE_GUARD, RANDOM_ORDER, SECURE};
#[cfg(not(miri))]
pub use crate::os::keep_errno;
pub use crate::os::{page_size, resident_bytes, FdWriter};
pub use crate::os::{OsPageSource, PageSource, SimPageSource};
pub use crate::segment::{header_guard, header_keep};
pub use crate::size_class::{class_of, CLASS_SIZE};

/// Collects `heap`'s pending frees (its quarantine in the secure build, remote frees into its
/// pages) and, with `force`, takes over every abandoned segment of its backend first (see
/// `mallard::collect`). Safe: the heap is the calling thread's (a `&Heap` cannot leave it).
pub fn collect(heap: &Heap, force: bool) {
    crate::alloc::flush_quarantine(heap);
    heap.collect(force);
}

/// Plays the exit of `heap`'s thread: its segments are abandoned for other heaps to take
/// over, and the heap goes back to its backend's pool.
///
/// # Safety
/// The heap is not used afterwards: the pool may hand it to another thread at once.
pub unsafe fn abandon(heap: &Heap) {
    crate::alloc::flush_quarantine(heap);
    // SAFETY: forwarded; the quarantine is flushed.
    unsafe { heap.abandon() }
}

/// Takes every lock of the global allocator, so that a `fork` finds none held by a thread
/// that will not exist in the child (`pthread_atfork`'s prepare handler).
///
/// # Safety
/// `unlock_after_fork` follows on this thread (or in the child): until then every allocation
/// that needs a lock waits forever.
pub unsafe fn lock_for_fork() {
    crate::global::GLOBAL_BACKEND.lock_for_fork();
}

/// Releases the locks `lock_for_fork` took (`child`: in the child of the fork, where the
/// lock's other waiters do not exist).
///
/// # Safety
/// Called once after each `lock_for_fork`, by the thread that called it (or its child).
pub unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: forwarded.
    unsafe { crate::global::GLOBAL_BACKEND.unlock_after_fork(child) }
}

/// The calling thread's heap (its placeholder until it first allocates).
///
/// # Safety
/// The heap is used by the calling thread only, and not after the thread's heap was abandoned
/// (in thread-local destructors that run after mallard's, call this again instead of keeping
/// the result).
#[inline(always)]
pub unsafe fn thread_heap() -> &'static Heap {
    crate::global::thread_heap()
}
