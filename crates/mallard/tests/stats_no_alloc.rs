//! `stats()` and `print_stats()` must not allocate: they run inside allocator paths (at exit,
//! from a signal handler of a C program) where a recursive malloc could deadlock or crash. A
//! counting wrapper around `Mallard` is this binary's allocator and counts every call.

use mallard::Mallard;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to Mallard.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded.
        unsafe { Mallard.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded.
        unsafe { Mallard.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn stats_and_print_stats_do_not_allocate() {
    let keep: Vec<Box<[u8; 100]>> = (0..100).map(|_| Box::new([0; 100])).collect();
    let before = CALLS.load(Ordering::SeqCst);
    let s = mallard::stats();
    mallard::print_stats();
    let after = CALLS.load(Ordering::SeqCst);
    assert_eq!(before, after, "stats() and print_stats() allocated");
    assert!(s.class_blocks[mallard::raw::class_of(100)] >= 100);
    drop(keep);
}
