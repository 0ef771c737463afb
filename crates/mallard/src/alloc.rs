//! The public allocation paths over a heap: `malloc`, `free`, aligned and zeroed variants,
//! `realloc`, `usable_size`. The fast paths are `#[inline(always)]` and touch only the heap's
//! direct table and one page; everything else is in `#[cold]` functions.
//!
//! `heap` is always the calling thread's heap (or, in tests, the heap playing that thread).

use crate::config::*;
use crate::heap::{Heap, CHUNK_HINT};
use crate::large::ChunkHeap;
use crate::page::{Block, Page, FULL};
use crate::segment::{segment_of, Segment, SegmentKind};
use crate::size_class::{class_for_aligned, class_of};
use crate::stats::Counters;
use core::ptr;
use core::sync::atomic::Ordering;

/// Allocates `size` bytes (aligned to 16 if `size >= 16`, else to 8). Null when out of memory.
///
/// # Safety
/// `heap` is the calling thread's heap.
#[inline(always)]
pub unsafe fn malloc(heap: &Heap, size: usize) -> *mut u8 {
    if size <= DIRECT_MAX {
        // SAFETY: (size + 7) / 8 <= DIRECT_SLOTS - 1; slots always point at a valid page.
        let page = unsafe { &*heap.pages_direct.get_unchecked((size + 7) >> 3).get() };
        if !page.free.get().is_null() {
            // SAFETY: the free list is non-empty and the page is ours.
            return unsafe { page.pop() }.cast();
        }
    }
    malloc_slow(heap, size)
}

#[inline(never)]
fn malloc_slow(heap: &Heap, size: usize) -> *mut u8 {
    alloc_sized(heap, size).map_or(ptr::null_mut(), |(p, _)| p)
}

/// Allocates `size` bytes with the default alignment from whichever part serves the size:
/// page classes, the chunk heap, or a huge block.
fn alloc_sized(heap: &Heap, size: usize) -> Option<(*mut u8, Contents)> {
    if size <= LARGE_MAX {
        malloc_class(heap, class_of(size))
    } else if size <= CHUNK_MAX {
        heap.chunk_alloc(size).map(|p| (p, Contents::Dirty))
    } else {
        huge_alloc(heap, size, MIN_ALIGN)
    }
}

/// What is known of a new block's contents.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contents {
    Dirty,
    /// Zero apart from the first word (the free-list link).
    ZeroButLink,
    Zero,
}

/// Allocates from `class`; also says what is known of the block's contents.
#[inline]
fn malloc_class(heap: &Heap, class: usize) -> Option<(*mut u8, Contents)> {
    let page = match heap.current_page(class) {
        Some(p) => p,
        None => heap.find_page(class)?,
    };
    let zero = if page.free_is_zero.get() { Contents::ZeroButLink } else { Contents::Dirty };
    // SAFETY: find_page/current_page return a page of the thread's heap with a free block.
    let b = unsafe { page.pop() };
    Some((b.cast(), zero))
}

#[cold]
fn huge_alloc(heap: &Heap, size: usize, align: usize) -> Option<(*mut u8, Contents)> {
    let (p, zero) = heap.backend().huge_alloc(size, align)?;
    Some((p.as_ptr(), if zero { Contents::Zero } else { Contents::Dirty }))
}

/// Allocates `size` bytes aligned to `align` (a power of two). Null when out of memory.
///
/// # Safety
/// `heap` is the calling thread's heap.
#[inline]
pub unsafe fn malloc_aligned(heap: &Heap, size: usize, align: usize) -> *mut u8 {
    if natural_alignment(size, align) {
        // SAFETY: forwarded.
        return unsafe { malloc(heap, size) };
    }
    malloc_aligned_slow(heap, size, align).map_or(ptr::null_mut(), |(p, _)| p)
}

/// Whether every block that fits `size` is already aligned to `align`: blocks of 16 bytes
/// and more are 16-aligned, smaller ones 8-aligned.
#[inline(always)]
fn natural_alignment(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && (size >= align || align <= 8)
}

#[cold]
fn malloc_aligned_slow(heap: &Heap, size: usize, align: usize) -> Option<(*mut u8, Contents)> {
    if align <= SLICE_SIZE {
        if let Some(class) = class_for_aligned(size.max(align), align) {
            return malloc_class(heap, class);
        }
    }
    huge_alloc(heap, size, align.max(OS_PAGE_SIZE))
}

/// Allocates `size` zeroed bytes aligned to `align`. Memory fresh from the OS is not cleared
/// again.
///
/// # Safety
/// `heap` is the calling thread's heap.
pub unsafe fn malloc_zeroed(heap: &Heap, size: usize, align: usize) -> *mut u8 {
    let r =
        if natural_alignment(size, align) { alloc_sized(heap, size) } else { malloc_aligned_slow(heap, size, align) };
    match r {
        None => ptr::null_mut(),
        Some((p, zero)) => {
            // SAFETY: p is a fresh block of at least `size` bytes (and at least one word).
            unsafe {
                match zero {
                    Contents::Zero => {}
                    // Only the free-list link was ever written.
                    Contents::ZeroButLink => (*(p as *mut Block)).next = ptr::null_mut(),
                    Contents::Dirty => ptr::write_bytes(p, 0, size),
                }
            }
            p
        }
    }
}

/// Frees block `p`.
///
/// # Safety
/// `p` was returned by an allocation function of this allocator, is not freed yet, and
/// `heap` is the calling thread's heap.
#[inline(always)]
pub unsafe fn free(heap: &Heap, p: *mut u8) {
    // SAFETY: p is a live block, so its segment header is mapped.
    let seg = unsafe { &*segment_of(p) };
    let page = seg.page_of(p);
    if page.owner.load(Ordering::Relaxed) == heap.id() {
        // SAFETY: a live block of a page this thread owns.
        unsafe { page.link_local(p.cast()) };
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // `dec` sets ZF itself, where a relaxed load and store would need a reload and a
        // compare. Only the owner writes `used`, so this unlocked read-modify-write is what
        // `store(load() - 1)` means; `stats()` readers see the old or the new value.
        // SAFETY: `used` is a live u32 that this thread owns for writing; the asm touches only
        // it and the flags.
        unsafe {
            core::arch::asm!(
                "dec dword ptr [{page} + {used}]",
                "jz {empty}",
                page = in(reg) page as *const Page,
                used = const core::mem::offset_of!(Page, used),
                empty = label { heap.page_empty(page) },
                options(nostack),
            );
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        if page.used() == 1 {
            page.used.store(0, Ordering::Relaxed);
            heap.page_empty(page);
        } else {
            page.add_used(-1);
        }
        return;
    }
    // SAFETY: forwarded.
    unsafe { free_slow(heap, seg, page, p) }
}

#[cold]
unsafe fn free_slow(heap: &Heap, seg: &Segment, page: &Page, p: *mut u8) {
    let kind = seg.kind();
    if kind == SegmentKind::Huge {
        seg.backend().huge_free(seg);
        return;
    }
    let owner = page.owner_heap();
    if owner == heap.id() {
        if kind == SegmentKind::Chunk {
            // SAFETY: a live chunk of a segment this heap owns.
            unsafe { heap.chunk_free(seg, p) };
        } else {
            heap.free_local_full(page, p);
        }
        return;
    }
    if kind == SegmentKind::Chunk {
        // SAFETY: p is a live chunk; the owner frees it when it collects the list.
        unsafe { page.push_remote(p.cast()) };
        if !owner.is_null() {
            // SAFETY: heaps are never unmapped.
            unsafe { (*owner).remote_hint(CHUNK_HINT) };
        }
        count_remote_free(heap, None);
        return;
    }
    // A remote free. The owner and class were read before the push: once the block is on the
    // list the owner may reuse the page and even release the segment.
    let class = page.class.load(Ordering::Relaxed) as usize;
    // SAFETY: p is a live block of `page`.
    let tag = unsafe { page.push_remote(p.cast()) };
    if tag == FULL && !owner.is_null() {
        // SAFETY: heaps are never unmapped; a stale owner only gets a harmless hint.
        unsafe { (*owner).remote_hint(class) };
    }
    count_remote_free(heap, Some(class));
}

/// Counts a remote free (of a block of `class`, or of a chunk) in the freeing thread's heap.
fn count_remote_free(heap: &Heap, class: Option<usize>) {
    match heap.for_remote_free() {
        Some(h) => {
            Counters::bump(&h.counters.remote_frees, 1);
            if let Some(c) = class {
                Counters::bump(&h.remote_pending[c], 1);
            }
        }
        None => {
            let b = heap.backend();
            b.counters.remote_frees.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = class {
                b.remote_pending[c].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The number of usable bytes in block `p` (at least what was asked for).
///
/// # Safety
/// `p` is a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: p is a live block, so its segment header is mapped.
    let seg = unsafe { &*segment_of(p) };
    let page = seg.page_of(p);
    match seg.kind() {
        SegmentKind::Huge => page.start.get() as usize + page.block_size.get() - p as usize,
        // SAFETY: p is a live chunk.
        SegmentKind::Chunk => unsafe { ChunkHeap::usable_size(p.cast_mut()) },
        _ => page.block_size.get(),
    }
}

/// Resizes block `p` (aligned to `align`) to `new_size` bytes, in place when the new size
/// still fits its size class (and is not under half of it), else by moving it. `old_size` is
/// how many bytes to keep when moving. Null when out of memory; `p` is then untouched.
///
/// # Safety
/// As for `free`; `p` is aligned to `align` and holds at least `old_size` bytes.
pub unsafe fn realloc(heap: &Heap, p: *mut u8, old_size: usize, new_size: usize, align: usize) -> *mut u8 {
    // SAFETY: p is a live block.
    let seg = unsafe { &*segment_of(p) };
    // SAFETY: as above.
    let usable = unsafe { usable_size(p) };
    if seg.kind() == SegmentKind::Huge {
        if new_size > LARGE_MAX {
            if new_size <= usable && new_size >= usable / 2 {
                seg.live_bytes.store(new_size, Ordering::Relaxed);
                return p;
            }
            // SAFETY: p is the segment's live huge block.
            if let Some(q) = unsafe { seg.backend().huge_resize(seg, p, new_size) } {
                return q.as_ptr();
            }
        }
    } else if seg.kind() == SegmentKind::Chunk {
        let local = seg.pages[0].owner_heap() == heap.id();
        // SAFETY: p is a live chunk of a segment this heap owns.
        if local && new_size > LARGE_MAX && new_size <= CHUNK_MAX && unsafe { heap.chunk_resize(seg, p, new_size) } {
            return p;
        }
    } else if new_size <= usable && (new_size >= usable / 2 || usable <= 2 * MIN_ALIGN) {
        return p;
    }
    // A block above the page classes that has to move to grow is likely a growing buffer:
    // give it a huge mapping, which grows in place to the end of its mapping and then by
    // mremap, instead of a chunk it would soon outgrow and copy again.
    let q = if new_size > usable && new_size > LARGE_MAX {
        huge_alloc(heap, new_size, align.max(MIN_ALIGN)).map_or(ptr::null_mut(), |(q, _)| q)
    } else {
        // SAFETY: forwarded.
        unsafe { malloc_aligned(heap, new_size, align) }
    };
    if !q.is_null() {
        // SAFETY: both blocks hold at least min(old_size, new_size) bytes and are distinct.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
            free(heap, p);
        }
    }
    q
}
