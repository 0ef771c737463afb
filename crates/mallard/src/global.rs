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
use core::sync::atomic::{AtomicU32, Ordering};

/// The process-wide backend behind `Mallard`.
pub(crate) static GLOBAL_BACKEND: Backend = Backend::new(&OsPageSource, Some(crate::heap::reclaim_abandoned));

static PLACEHOLDER: StaticHeap = StaticHeap(Heap::placeholder(&GLOBAL_BACKEND, false, thread_init));
static EXITED: StaticHeap = StaticHeap(Heap::placeholder(&GLOBAL_BACKEND, true, thread_init));

/// The thread's heap pointer, in the initial-exec TLS model.
///
/// Rust's `thread_local!` uses the general-dynamic model in a shared library, where every
/// access calls `__tls_get_addr`, and that may itself call malloc the first time a thread
/// touches a dlopened library's TLS: a recursion back into the allocator. The initial-exec
/// model reads the slot at a fixed offset from the thread pointer (two instructions, no call)
/// and is what C allocators use; a library that has it can still be dlopened, as glibc keeps
/// spare static TLS for exactly this. Stable Rust cannot choose the model, so the slot is
/// declared in assembly. Its initial value, in every new thread, is the placeholder heap.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod heap_slot {
    use super::{Heap, PLACEHOLDER};

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".globl __mallard_thread_heap",
        ".hidden __mallard_thread_heap",
        ".type __mallard_thread_heap,@object",
        ".size __mallard_thread_heap,8",
        "__mallard_thread_heap:",
        ".quad {placeholder}",
        ".popsection",
        placeholder = sym PLACEHOLDER,
    );

    #[inline(always)]
    pub(super) fn get() -> *const Heap {
        let h: *const Heap;
        // SAFETY: reads this thread's 8-byte slot declared above.
        unsafe {
            core::arch::asm!(
                "mov {h}, qword ptr [rip + __mallard_thread_heap@GOTTPOFF]",
                "mov {h}, qword ptr fs:[{h}]",
                h = out(reg) h,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        h
    }

    #[inline(always)]
    pub(super) fn set(heap: *const Heap) {
        // SAFETY: writes this thread's 8-byte slot declared above.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __mallard_thread_heap@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {h}",
                t = out(reg) _,
                h = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// Elsewhere (and under Miri) a `const` thread-local with no destructor.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
mod heap_slot {
    use super::{Heap, PLACEHOLDER};
    use core::cell::Cell;

    std::thread_local! {
        static HEAP: Cell<*const Heap> = const { Cell::new(&PLACEHOLDER.0) };
    }

    #[inline(always)]
    pub fn get() -> *const Heap {
        HEAP.with(|h| h.get())
    }

    #[inline(always)]
    pub fn set(heap: *const Heap) {
        HEAP.with(|h| h.set(heap))
    }
}

/// The calling thread's heap (the placeholder until it first allocates).
#[inline(always)]
pub(crate) fn thread_heap() -> &'static Heap {
    // SAFETY: the slot always holds the placeholder or a live heap of this thread.
    unsafe { &*heap_slot::get() }
}

const KEY_UNSET: u32 = u32::MAX;
static KEY: AtomicU32 = AtomicU32::new(KEY_UNSET);

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
    let key = thread_key();
    if key != KEY_UNSET {
        // SAFETY: key is a valid pthread key.
        unsafe { libc::pthread_setspecific(key, heap as *const Heap as *const libc::c_void) };
    }
    heap
}

fn thread_key() -> libc::pthread_key_t {
    let key = KEY.load(Ordering::Acquire);
    if key != KEY_UNSET {
        return key;
    }
    let mut new: libc::pthread_key_t = 0;
    // SAFETY: `new` is a valid out-pointer; thread_done has the destructor signature.
    if unsafe { libc::pthread_key_create(&mut new, Some(thread_done)) } != 0 {
        return KEY_UNSET;
    }
    match KEY.compare_exchange(KEY_UNSET, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(existing) => {
            // SAFETY: `new` is our own unused key.
            unsafe { libc::pthread_key_delete(new) };
            existing
        }
    }
}

/// pthread key destructor: the thread is exiting. Frees that run after this (other
/// destructors) are handled as remote frees; a malloc creates a fresh heap, whose key value
/// makes this run again (glibc repeats destructor rounds up to 4 times; a heap made after the
/// last round is never abandoned, a bounded leak on a path that should not happen).
extern "C" fn thread_done(heap: *mut libc::c_void) {
    // What the heap leaves is the purger's to give back: start it while this thread still
    // has its heap (starting a thread allocates).
    GLOBAL_BACKEND.poke_purger(true);
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
