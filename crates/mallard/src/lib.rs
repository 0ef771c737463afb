//! TEMPORARY stub while the core is written: delegates to System.
#![no_std]
use core::alloc::{GlobalAlloc, Layout};
extern crate std;
pub struct Mallard;
unsafe impl GlobalAlloc for Mallard {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { unsafe { std::alloc::System.alloc(l) } }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { unsafe { std::alloc::System.dealloc(p, l) } }
}
