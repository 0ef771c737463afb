//! `stats()` and `print_stats()` must not allocate: they run inside allocator paths (at exit,
//! from a signal handler of a C program) where a recursive malloc could deadlock or crash. A
//! counting wrapper around `Mallard` is this binary's allocator and counts every call made on
//! each thread (only the test's own thread matters: the harness's other threads allocate when
//! they please, say to print that a test runs long).

use mallard::Mallard;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

struct Counting;

std::thread_local! {
    // A const initializer and no destructor: touching it never allocates.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

fn calls() -> usize {
    CALLS.with(Cell::get)
}

// SAFETY: forwards to Mallard.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded.
        unsafe { Mallard.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count();
        // SAFETY: forwarded.
        unsafe { Mallard.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn stats_and_print_stats_do_not_allocate() {
    let keep: Vec<Box<[u8; 100]>> = (0..100).map(|_| Box::new([0; 100])).collect();
    let before = calls();
    let s = mallard::stats();
    mallard::print_stats();
    let after = calls();
    assert_eq!(before, after, "stats() and print_stats() allocated");
    assert!(s.class_blocks[mallard::raw::class_of(100)] >= 100);
    drop(keep);
}
