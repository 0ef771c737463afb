//! A thread's first call into the allocator creates its heap. Some first calls reach the
//! allocator's slow paths more than once (a `realloc` of another thread's block allocates,
//! then frees remotely); each thread must still get exactly one heap, or the extra one is
//! never abandoned and keeps its memory for good.
//!
//! One test in its own binary: it counts heaps process-wide, so no other test thread may
//! start meanwhile. The threads are raw pthreads, so that nothing allocates in them before
//! the call under test (std's thread start-up might).

use mallard::Mallard;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: Mallard = Mallard;

/// Heaps handed to threads so far (fresh or reused from exited threads).
fn heaps_given() -> i64 {
    let s = mallard::stats();
    s.heaps_created + s.heaps_reused
}

/// Runs `f(arg)` as the first code of a new pthread and waits for it.
fn on_fresh_thread(f: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void, arg: *mut u8) {
    // SAFETY: a pthread_t is plain data (an integer on glibc, a pointer on musl).
    let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: `f` has the start routine's signature; `arg` outlives the thread (joined below).
    let e = unsafe { libc::pthread_create(&mut t, std::ptr::null(), f, arg.cast()) };
    assert_eq!(e, 0, "pthread_create");
    // SAFETY: `t` is the thread just created, joined once.
    assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0, "pthread_join");
}

const SMALL: usize = 100;
const CHUNK: usize = 100 << 10;

/// The size of the block `grow_foreign` gets (a global: reading it allocates nothing).
static ARG_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Grows another thread's block of `ARG_SIZE` bytes as this thread's first call, checks
/// and frees it.
extern "C" fn grow_foreign(arg: *mut libc::c_void) -> *mut libc::c_void {
    let old = ARG_SIZE.load(Ordering::Relaxed);
    // SAFETY: `arg` is a live block of GLOBAL of `old` bytes filled with 7.
    unsafe {
        let q = GLOBAL.realloc(arg.cast(), Layout::from_size_align(old, 16).unwrap(), 3 * old);
        assert!(!q.is_null());
        assert!(std::slice::from_raw_parts(q, old).iter().all(|&b| b == 7), "realloc kept the contents");
        GLOBAL.dealloc(q, Layout::from_size_align(3 * old, 16).unwrap());
    }
    std::ptr::null_mut()
}

/// Frees another thread's block as this thread's first call, then allocates.
extern "C" fn free_foreign_then_alloc(arg: *mut libc::c_void) -> *mut libc::c_void {
    let layout = Layout::from_size_align(SMALL, 16).unwrap();
    // SAFETY: `arg` is a live block of GLOBAL with `layout`.
    unsafe {
        GLOBAL.dealloc(arg.cast(), layout);
        let p = GLOBAL.alloc(layout);
        assert!(!p.is_null());
        GLOBAL.dealloc(p, layout);
    }
    std::ptr::null_mut()
}

#[test]
fn each_thread_gets_one_heap_whatever_its_first_call() {
    // The first call of each thread below is made with a block of this (main) thread.
    let block = |size: usize| {
        // SAFETY: a non-zero size.
        let p = unsafe { GLOBAL.alloc(Layout::from_size_align(size, 16).unwrap()) };
        assert!(!p.is_null());
        // SAFETY: p holds `size` bytes.
        unsafe { p.write_bytes(7, size) };
        p
    };
    for (what, size) in [("a small block", SMALL), ("a chunk", CHUNK)] {
        for _ in 0..3 {
            ARG_SIZE.store(size, Ordering::Relaxed);
            let p = block(size);
            let before = heaps_given();
            on_fresh_thread(grow_foreign, p);
            assert_eq!(heaps_given() - before, 1, "a thread whose first call reallocs {what} got one heap");
        }
    }
    for _ in 0..3 {
        let p = block(SMALL);
        let before = heaps_given();
        on_fresh_thread(free_foreign_then_alloc, p);
        assert_eq!(heaps_given() - before, 1, "a thread whose first call frees a foreign block got one heap");
    }
}
