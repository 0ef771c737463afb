//! The secure build's full level on `free` (`MALLARD_HARDEN=full`): freed blocks filled with
//! zeros, and small ones kept in a per-thread quarantine while the thread frees
//! `QUARANTINE_SLOTS` more; a block leaving it is checked for writes since its free, then
//! released through `free`'s own paths. The heap keeps the slots (`Heap::quarantine_swap`,
//! `take_quarantined`); what enters and leaves them is here.

use super::{free_slow, release_own};
use crate::block::write_mark;
use crate::heap::Heap;
use crate::misuse;
use crate::mitigations;
use crate::segment::segment_of;
use core::ptr;
use core::sync::atomic::Ordering;

/// The full level's part of `free` for a block of a page class that passed `free`'s checks
/// and carries the free `mark`: fills it with zeros (`fill_freed`, the mark kept), and keeps
/// a small one in `heap`'s quarantine (`quarantine`) while the thread frees
/// `QUARANTINE_SLOTS` more; the block that leaves the quarantine is checked for writes made
/// to it since (`check_untouched`) and released. Returns whether `p` was kept (else the caller
/// releases it now).
///
/// # Safety
/// `p` is a checked, marked block of `size` bytes being freed by `heap`'s thread (a real heap);
/// `mark` is the block's page's mark (which `check_untouched` expects).
#[inline(always)]
pub(super) unsafe fn fill_and_keep(heap: &Heap, p: *mut u8, size: usize, mark: usize) -> bool {
    if cfg!(miri) {
        return false; // (the program's pointer may not reach the whole block: see `write_mark`)
    }
    // SAFETY: p is a block of `size` bytes, which the program gives up here.
    unsafe {
        if mitigations::fill_freed() {
            fill_zero(p, size);
        }
        write_mark(p.cast(), mark);
    }
    if size > mitigations::QUARANTINE_MAX {
        return false;
    }
    let out = heap.quarantine_swap(p);
    if !out.is_null() {
        // SAFETY: `out` is a block this thread freed and kept, marked and filled.
        unsafe { release_quarantined(heap, out) };
    }
    true
}

/// Overwrites block `p` of `size` bytes (a multiple of 16) with zeros: up to 64 bytes (most
/// blocks) by one to four 16-byte stores, beyond by `memset`.
///
/// # Safety
/// `p` is a block of `size` bytes that is being freed.
#[inline(always)]
pub(super) unsafe fn fill_zero(p: *mut u8, size: usize) {
    let w = p as *mut u128;
    // SAFETY: each store is inside the block (at least 16 bytes; the later ones only when
    // `size` reaches past them).
    unsafe {
        if size > 64 {
            return ptr::write_bytes(p, 0, size);
        }
        w.write_unaligned(0);
        if size >= 32 {
            w.add(1).write_unaligned(0);
            if size >= 48 {
                w.add(2).write_unaligned(0);
                if size == 64 {
                    w.add(3).write_unaligned(0);
                }
            }
        }
    }
}

/// Releases block `b` as it leaves `heap`'s quarantine, after checking it was not written to
/// since its free.
///
/// # Safety
/// `b` was put in the quarantine by `fill_and_keep` on `heap`'s thread, which is the caller.
#[inline(never)]
unsafe fn release_quarantined(heap: &Heap, b: *mut u8) {
    // SAFETY: b is a block of a page-class segment, kept alive (counted in its page's `used`)
    // and marked freed.
    unsafe {
        let seg = &*segment_of(b);
        let page = seg.page_of(b);
        check_untouched(b, page.block_size.get(), page.mark_of(b));
        if page.owner.load(Ordering::Relaxed) == heap.id() {
            release_own(heap, page, b.cast());
        } else {
            write_mark(b.cast(), 0); // (`free_slow` checks it)
            free_slow(heap, seg, page, b, false);
        }
    }
}

/// Secure build: releases every block of the calling thread's quarantine (before its heap
/// collects, and before it is abandoned).
pub(crate) fn flush_quarantine(heap: &Heap) {
    // SAFETY: the heap's quarantine holds blocks its thread freed into it.
    heap.take_quarantined(|b| unsafe { release_quarantined(heap, b) });
}

/// Reports a write to quarantined block `b` of `size` bytes since its free: all of it must
/// still read as `fill_and_keep` left it, zero but for the free `mark` in its second word.
///
/// # Safety
/// `b` is a quarantined block of `size` bytes (a multiple of 16).
#[inline(always)]
unsafe fn check_untouched(b: *mut u8, size: usize, mark: usize) {
    // SAFETY: inside the block, which the allocator holds.
    let bad = unsafe {
        let w = b as *const u128;
        let mut any = (b as *const [usize; 2]).read() != [0, mark];
        for k in 1..size / 16 {
            any |= w.add(k).read() != 0;
        }
        any
    };
    if bad {
        misuse::report("write to a freed block", b);
    }
}
