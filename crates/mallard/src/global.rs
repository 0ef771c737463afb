//! `Mallard`, the global allocator, and the thread-local heap behind it.
//!
//! Each thread finds its heap through a `const`-initialized thread-local pointer with no
//! destructor (so it costs one TLS load and never allocates or registers anything). A thread
//! starts on the placeholder heap, whose slots are all empty, so its first malloc falls into
//! the slow path, which creates the real heap (from metadata memory, not from malloc) and
//! registers a pthread key whose destructor abandons the heap when the thread exits.

use crate::alloc;
use crate::backend::Backend;
use crate::heap::{Heap, StaticHeap};
use crate::os::OsPageSource;
use core::alloc::{GlobalAlloc, Layout};

/// The process-wide backend behind `Mallard`.
pub(crate) static GLOBAL_BACKEND: Backend = Backend::new(&OsPageSource, Some(crate::heap::reclaim_abandoned));

static PLACEHOLDER: StaticHeap = StaticHeap(Heap::placeholder(&GLOBAL_BACKEND, false, thread_init));
static EXITED: StaticHeap = StaticHeap(Heap::placeholder(&GLOBAL_BACKEND, true, thread_init));

// The thread's heap pointer: `os::thread_slot!` (the initial-exec TLS model, so that reading
// it never calls into anything that may allocate). Its initial value, in every new thread, is
// the placeholder heap.
crate::os::thread_slot!(heap_slot: Heap = PLACEHOLDER);

/// The calling thread's heap (the placeholder until it first allocates).
#[inline(always)]
pub(crate) fn thread_heap() -> &'static Heap {
    // SAFETY: the slot always holds the placeholder or a live heap of this thread.
    unsafe { &*heap_slot::get() }
}

/// Its destructor abandons a thread's heap when the thread exits.
static EXIT_KEY: crate::os::ExitKey = crate::os::ExitKey::new(thread_done);

/// The calling thread's real heap: the one it has, or one created now and arranged to be
/// abandoned at thread exit.
///
/// It must return the heap the thread already has: an operation that started on the
/// placeholder still holds it after its first slow path created the heap, and may reach
/// another (a thread whose first call is a `realloc` of another thread's block allocates,
/// then frees remotely). A second heap would replace the first in the slot and the key, and
/// the first, never abandoned, would keep its segments for good.
fn thread_init() -> *const Heap {
    let current = heap_slot::get();
    // SAFETY: the slot holds the placeholder, the exited placeholder or this thread's heap.
    if !unsafe { &*current }.is_placeholder() {
        return current;
    }
    let Some(heap) = GLOBAL_BACKEND.heap_alloc() else { return core::ptr::null() };
    // Install the heap before touching the pthread key: pthread_setspecific may itself
    // allocate (for keys past the first 32), and must then find this heap.
    heap_slot::set(heap);
    // (Without a key, nothing abandons the heap at exit: its segments stay with it.)
    EXIT_KEY.set((heap as *const Heap).cast());
    heap
}

/// pthread key destructor: the thread is exiting. Frees that run after this (other
/// destructors) are handled as remote frees; a malloc creates a fresh heap, whose key value
/// makes this run again (glibc repeats destructor rounds up to 4 times; a heap made after the
/// last round is never abandoned, a bounded leak on a path that should not happen).
extern "C" fn thread_done(heap: *mut core::ffi::c_void) {
    // What the heap leaves is the purger's to give back: start it while this thread still
    // has its heap (starting a thread allocates).
    GLOBAL_BACKEND.start_purger();
    heap_slot::set(&EXITED.0);
    // SAFETY: the key's value is the heap this thread created and still owns.
    let heap = unsafe { &*(heap as *const Heap) };
    crate::alloc::flush_quarantine(heap);
    // SAFETY: the slot no longer points at it, so this thread does not use it again; its
    // quarantine is flushed.
    unsafe { heap.abandon() };
}

/// The mallard allocator. Use it with
/// ```
/// #[global_allocator]
/// static GLOBAL: mallard::Mallard = mallard::Mallard;
/// ```
pub struct Mallard;

// SAFETY: every block satisfies its layout (see `alloc::malloc_aligned`); null on failure.
unsafe impl GlobalAlloc for Mallard {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the thread's own heap.
        unsafe { alloc::malloc_aligned(thread_heap(), layout.size(), layout.align()) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a live block of this allocator.
        unsafe { alloc::free(thread_heap(), ptr) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the thread's own heap.
        unsafe { alloc::malloc_zeroed(thread_heap(), layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block with this layout.
        unsafe { alloc::realloc(thread_heap(), ptr, layout.size(), new_size, layout.align()) }
    }
}
