//! The public allocation paths over a heap: `malloc`, `free`, aligned and zeroed variants,
//! `realloc`, `usable_size`. The fast paths are `#[inline(always)]` and touch only the heap's
//! direct table and one page; everything else is in `#[cold]` functions.
//!
//! `heap` is always the calling thread's heap (or, in tests, the heap playing that thread).

mod quarantine;

use crate::backend::Backend;
use crate::block::{read_mark, write_mark, Block};
use crate::chunk::{self, ChunkHeap, CHUNK_MAX};
use crate::config::*;
use crate::heap::{Heap, CHUNK_HINT};
use crate::misuse;
use crate::mitigations::{self, CANARY};
use crate::page::Page;
use crate::segment::{segment_of, Segment, SegmentKind};
use crate::segment_map;
use quarantine::{fill_and_keep, fill_zero};
pub(crate) use quarantine::flush_quarantine;
use crate::size_class::{class_for_aligned, class_of, in_class};
use crate::stats::Counters;
use core::ptr;
use core::sync::atomic::Ordering;

/// Allocates `size` bytes aligned to 16 (a unique block even for 0). Null when out of memory.
///
/// # Safety
/// `heap` is the calling thread's heap.
#[inline(always)]
pub unsafe fn malloc(heap: &Heap, size: usize) -> *mut u8 {
    if mitigations::canaries() {
        return full_malloc(heap, size, MIN_ALIGN, false);
    }
    if size <= DIRECT_MAX {
        // SAFETY: (size + 7) / 8 <= DIRECT_SLOTS - 1; slots always point at a valid page.
        let page = unsafe { &*heap.pages_direct.get_unchecked((size + 7) >> 3).get() };
        if !page.free.get().is_null() || page.take_local() {
            // SAFETY: the free list is non-empty and the page is ours.
            return unsafe { page.pop() }.cast();
        }
    } else if size <= CLASS_MAX {
        // Medium sizes (1-64 KiB) without the slow path's calls when the class's current page
        // has a block: programs with many such blocks (alloc-test) spent a fifth of their time
        // getting there.
        if let Some(page) = heap.current_page(class_of(size)) {
            // SAFETY: current_page returns a page of this heap with a free block.
            return unsafe { page.pop() }.cast();
        }
    }
    malloc_slow(heap, size)
}

/// `malloc`'s slow path; also where the secure build's level is first read (a process's first
/// block comes through here: the placeholder heap's direct table has no page) and where
/// `malloc(0)` comes (the direct table's entry for 0 never has a page in the secure build).
#[inline(never)]
fn malloc_slow(heap: &Heap, size: usize) -> *mut u8 {
    if mitigations::ZERO_BLOCKS && size == 0 {
        return zero_block(heap);
    }
    if mitigations::init_level() {
        return full_malloc(heap, size, MIN_ALIGN, false);
    }
    alloc_sized(heap, size).map_or_else(out_of_memory, |(p, _)| p)
}

/// The result of a failed allocation: null, with `errno = ENOMEM` as C callers expect (Rust
/// callers ignore errno). Setting it here keeps the test off the fast paths.
#[cold]
fn out_of_memory() -> *mut u8 {
    crate::os::set_errno(crate::os::ENOMEM);
    ptr::null_mut()
}

/// Allocates `size` bytes with the default alignment from whichever part serves the size:
/// page classes, the chunk heap, or a huge block.
fn alloc_sized(heap: &Heap, size: usize) -> Option<(*mut u8, Contents)> {
    if size <= CLASS_MAX {
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
    Zero,
}

/// Allocates from `class`; also says what is known of the block's contents.
#[inline]
fn malloc_class(heap: &Heap, class: usize) -> Option<(*mut u8, Contents)> {
    let page = match heap.current_page(class) {
        Some(p) => p,
        None => heap.find_page(class)?,
    };
    // (`pop` clears the link and mark words, all the rest of a block on `free` is zero.)
    let zero = if page.free_is_zero.get() { Contents::Zero } else { Contents::Dirty };
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
    if mitigations::init_level() {
        return full_malloc(heap, size, align, false);
    }
    if natural_alignment(size, align) {
        // SAFETY: forwarded.
        return unsafe { malloc(heap, size) };
    }
    malloc_aligned_slow(heap, size, align).map_or_else(out_of_memory, |(p, _)| p)
}

/// Whether every block that fits `size` is already aligned to `align`: all are 16-aligned.
#[inline(always)]
fn natural_alignment(_size: usize, align: usize) -> bool {
    align <= MIN_ALIGN
}

#[cold]
fn malloc_aligned_slow(heap: &Heap, size: usize, align: usize) -> Option<(*mut u8, Contents)> {
    if align <= SLICE_SIZE {
        if let Some(class) = class_for_aligned(size.max(align), align) {
            return malloc_class(heap, class);
        }
    }
    huge_alloc(heap, size, align.max(MIN_PAGE_SIZE))
}

/// Allocates `size` zeroed bytes aligned to `align`. Memory fresh from the OS is not cleared
/// again.
///
/// # Safety
/// `heap` is the calling thread's heap.
pub unsafe fn malloc_zeroed(heap: &Heap, size: usize, align: usize) -> *mut u8 {
    if mitigations::ZERO_BLOCKS && size == 0 && align <= MIN_ALIGN {
        return zero_block(heap);
    }
    if mitigations::init_level() {
        return full_malloc(heap, size, align, true);
    }
    let r =
        if natural_alignment(size, align) { alloc_sized(heap, size) } else { malloc_aligned_slow(heap, size, align) };
    match r {
        None => out_of_memory(),
        Some((p, zero)) => {
            // SAFETY: p is a fresh block of at least `size` bytes (and at least one word).
            unsafe {
                match zero {
                    Contents::Zero => {}
                    Contents::Dirty => ptr::write_bytes(p, 0, size),
                }
            }
            p
        }
    }
}

/// `malloc(0)` in the secure build: an inaccessible zero-size block (`zero`), or when none is
/// left a plain one.
#[cold]
#[inline(never)]
fn zero_block(heap: &Heap) -> *mut u8 {
    match heap.backend().zero_alloc() {
        Some(p) => p.as_ptr(),
        // (At the full level a page-class block has its canary, as every other has.)
        None if mitigations::init_level() => with_canary(heap, 0, MIN_ALIGN, false),
        None => alloc_sized(heap, CANARY).map_or_else(out_of_memory, |(p, _)| p),
    }
}

/// `malloc` (`zero`: zeroed) at the full level: a zero-size block for 0 (as at the default
/// level), else `with_canary`.
#[cold]
#[inline(never)]
fn full_malloc(heap: &Heap, size: usize, align: usize, zero: bool) -> *mut u8 {
    if mitigations::ZERO_BLOCKS && size == 0 && align <= MIN_ALIGN {
        return zero_block(heap);
    }
    with_canary(heap, size, align, zero)
}

/// `malloc` (`zero`: zeroed) at the full level, where a block of a page class is taken
/// `CANARY` bytes larger and ends with its canary (`mitigations::canaries`).
#[cold]
#[inline(never)]
fn with_canary(heap: &Heap, size: usize, align: usize, zero: bool) -> *mut u8 {
    let Some(n) = size.checked_add(CANARY) else { return out_of_memory() };
    // A block of a page class always has its canary, so `free` can check every one: a size
    // whose canary would not fit the classes goes to a chunk (which has a canary of its own)
    // or a huge block (a guard page right after the size asked for).
    let (r, canary) = if natural_alignment(n, align) {
        if n <= CLASS_MAX {
            (malloc_class(heap, class_of(n)), true)
        } else {
            (alloc_sized(heap, size.max(CLASS_MAX + 1)), false)
        }
    } else {
        match class_for_aligned(n.max(align), align).filter(|_| align <= SLICE_SIZE) {
            Some(class) => (malloc_class(heap, class), true),
            None => (huge_alloc(heap, size, align.max(MIN_PAGE_SIZE)), false),
        }
    };
    let Some((p, contents)) = r else { return out_of_memory() };
    // SAFETY: p is a fresh block of at least n bytes (size, without a canary).
    unsafe {
        if zero && contents != Contents::Zero {
            ptr::write_bytes(p, 0, if canary { n } else { size });
        }
        if canary {
            let end = p.add((*segment_of(p)).page_of(p).block_size.get() - CANARY);
            (end as *mut usize).write_unaligned(mitigations::small_canary(p));
        }
    }
    p
}

/// Reports a free of page-class block `p` of `size` bytes whose canary was overwritten (at
/// the full level; nothing otherwise).
///
/// # Safety
/// `p` is a carved block of `size` bytes that was handed out.
#[inline(always)]
unsafe fn check_canary(p: *mut u8, size: usize) {
    if !mitigations::canaries() || cfg!(miri) {
        return;
    }
    // SAFETY: the last word of the block.
    if unsafe { (p.add(size - CANARY) as *const usize).read_unaligned() } != mitigations::small_canary(p) {
        misuse::report_op("free", "a block written past its end", p);
    }
}

/// Frees block `p`; null does nothing. A pointer that is not a live block of this allocator
/// is reported and the process aborts (see `misuse`).
///
/// # Safety
/// `heap` is the calling thread's heap. `p` is null or a live block of this allocator; other
/// pointers are caught as far as `misuse` describes, not all of them.
#[inline(always)]
pub unsafe fn free(heap: &Heap, p: *mut u8) {
    if !segment_map::contains(p) {
        return free_unmapped(p);
    }
    // SAFETY: p's region holds a segment, so its header is mapped.
    let seg = unsafe { &*segment_of(p) };
    // SAFETY: forwarded.
    unsafe { free_in(heap, seg, seg.page_of(p), p) }
}

/// A sized free (`free_sized`, a sized `operator delete`): `check_size`, then `free`, with one
/// lookup of the block's segment and page for both.
///
/// # Safety
/// As for `free`.
#[inline(always)]
pub unsafe fn free_sized(heap: &Heap, p: *mut u8, size: usize, align: usize, exact: bool, op: &str) {
    if !segment_map::contains(p) {
        return free_unmapped(p);
    }
    // SAFETY: p's region holds a segment, so its header is mapped.
    let seg = unsafe { &*segment_of(p) };
    let page = seg.page_of(p);
    // SAFETY: forwarded.
    unsafe {
        if !size_fits_class(seg, page, size, align) {
            check_size_slow(seg, page, p, size, align, exact, op);
        }
        free_in(heap, seg, page, p)
    }
}

/// `free` once `p`'s segment `seg` (mapped) and page `page` are known.
///
/// # Safety
/// As for `free`.
#[inline(always)]
unsafe fn free_in(heap: &Heap, seg: &Segment, page: &Page, p: *mut u8) {
    if page.owner.load(Ordering::Relaxed) == heap.id() {
        let mark = page.mark_of(p);
        let b = p as *mut Block;
        // SAFETY: p starts a carved block of a page this thread owns (checked first), so its
        // two words are ours to read and, once freed, to write.
        unsafe {
            if !page.is_carved_block(p) {
                return free_not_block(page, p);
            }
            if read_mark(b) == mark {
                return free_marked(p);
            }
            if mitigations::quarantine() {
                return free_own_full(heap, page, p, mark);
            }
            write_mark(b, mark);
            release_own(heap, page, b);
        }
        return;
    }
    // SAFETY: forwarded.
    unsafe { free_slow(heap, seg, page, p, mitigations::quarantine()) }
}

/// `free`'s fast path at the full level, out of line so that the default level's stays
/// small: checks the canary of checked block `p` of `heap`'s own page `page`, marks it, and
/// fills and keeps it (or releases it).
///
/// # Safety
/// As for `release_own`; `p` passed `free`'s checks and `mark` is its free mark.
#[inline(never)]
unsafe fn free_own_full(heap: &Heap, page: &Page, p: *mut u8, mark: usize) {
    // SAFETY: forwarded.
    unsafe {
        check_canary(p, page.block_size.get());
        write_mark(p.cast(), mark);
        if !fill_and_keep(heap, p, page.block_size.get(), mark) {
            release_own(heap, page, p.cast());
        }
    }
}

/// Links freed block `b` (marked) of `heap`'s own page `page` onto its local free list and
/// counts it out of `used`; an empty page goes back to the heap.
///
/// # Safety
/// `page` is a page of `heap` with no owner tags; `b` is one of its blocks in use.
#[inline(always)]
unsafe fn release_own(heap: &Heap, page: &Page, b: *mut Block) {
    // SAFETY: forwarded.
    unsafe { page.link_local(b) };
    page.release_one(|| heap.page_empty(page));
}

// The misuse paths of `free` return `()` and are never inlined, so the fast path reaches them
// by a tail jump: a call to a function that does not return (`-> !`) made `free` align its
// stack with a push and a pop on every call (2 of its instructions).

/// `free` of a pointer outside every segment: nothing for null, else misuse.
#[cold]
#[inline(never)]
fn free_unmapped(p: *mut u8) {
    if !p.is_null() {
        misuse::report("free of a pointer mallard did not allocate", p);
    }
}

/// `free` of a block of the caller's own page that carries the free mark: a double free (or
/// a free of a carved block never handed out, which looks the same). A block handed out has
/// its mark cleared, so a live block carries it only if the program wrote that secret word,
/// which it can only have read from freed memory of the same page.
#[cold]
#[inline(never)]
fn free_marked(p: *mut u8) {
    misuse::report("double free", p)
}

/// `free` of a pointer into the caller's own page that is not a carved block.
#[cold]
#[inline(never)]
fn free_not_block(page: &Page, p: *mut u8) {
    // SAFETY: `free` found `page` as the page of p's slice, in a mapped segment.
    let m = unsafe { block_misuse(page, p) };
    report_block("free", m.unwrap_or(BlockMisuse::NeverAllocated), p)
}

/// What is wrong with a pointer into a page-class page that is not a live block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockMisuse {
    /// The page serves no blocks now (it was given back to its segment): every block it
    /// had was freed.
    PageNotInUse,
    /// Not where a block starts.
    Interior,
    /// Where a block starts, but past what was carved: never handed out.
    NeverAllocated,
    /// A block that carries the free mark, or starts in a purged OS page.
    Freed,
}

/// Why `p` (a pointer into `page`'s slices) is not a live block of `page`, or `None` if it
/// can be one.
///
/// # Safety
/// `page` is the page of `p`'s slice, in a mapped segment.
unsafe fn block_misuse(page: &Page, p: *const u8) -> Option<BlockMisuse> {
    if page.block_size.get() == 0 || page.reserved.get() == 0 {
        return Some(BlockMisuse::PageNotInUse);
    }
    if !page.is_block_start(p) {
        return Some(BlockMisuse::Interior);
    }
    if !page.is_carved_block(p) {
        return Some(BlockMisuse::NeverAllocated);
    }
    // SAFETY: p starts a carved block of the page (checked), mapped unless purged.
    if page.in_purged_os_page(p) || unsafe { read_mark(p.cast()) } == page.mark_of(p) {
        return Some(BlockMisuse::Freed);
    }
    None
}

/// Reports misuse `m` of `p` by operation `op` ("free", "realloc", ...) and aborts.
#[cold]
#[inline(never)]
fn report_block(op: &str, m: BlockMisuse, p: *const u8) -> ! {
    match (op, m) {
        ("free", BlockMisuse::Freed) => misuse::report("double free", p),
        ("free", BlockMisuse::PageNotInUse) => {
            misuse::report("double free (or free of a pointer mallard did not allocate)", p)
        }
        (_, BlockMisuse::PageNotInUse | BlockMisuse::Freed) => misuse::report_op(op, "a freed block", p),
        (_, BlockMisuse::Interior) => misuse::report_op(op, "a pointer inside a block", p),
        (_, BlockMisuse::NeverAllocated) => misuse::report_op(op, "a block that was never allocated", p),
    }
}

/// Checks that `p` is a live block of page-class `page`, for the paths other than the free
/// fast path, and its canary (`canary`: a block the program frees, not one leaving the
/// quarantine), and marks it freed.
///
/// # Safety
/// `page` is the page of `p`'s slice, in a mapped segment.
unsafe fn check_and_mark(page: &Page, p: *mut u8, canary: bool) {
    // SAFETY: forwarded.
    if let Some(m) = unsafe { block_misuse(page, p) } {
        report_block("free", m, p);
    }
    // SAFETY: p is a live block of the page (checked), which the program gives up here.
    unsafe {
        if canary {
            check_canary(p, page.block_size.get());
        }
        write_mark(p.cast(), page.mark_of(p));
    }
}

/// `free`'s paths other than the caller's own untagged page. With `keep` (a `free` at the full
/// level, not a block leaving the quarantine), a block of a page class has its canary checked
/// and goes through `fill_and_keep`.
#[cold]
unsafe fn free_slow(heap: &Heap, seg: &Segment, page: &Page, p: *mut u8, keep: bool) {
    let kind = seg.kind();
    match kind {
        SegmentKind::Huge => {
            if p != seg.pages[0].start.get() {
                misuse::report("free of a pointer inside a huge block", p);
            }
            Backend::of(seg).huge_free(seg);
            return;
        }
        SegmentKind::Cached => misuse::report("double free (or free of a pointer mallard did not allocate)", p),
        SegmentKind::Zero => return Backend::of(seg).zero_free(seg, p),
        SegmentKind::Chunk if page.owner_heap() != heap.id() => {
            // Another thread's chunk: checked and marked freed now, freed when its owner
            // collects it. (The owner may be changing other chunks' headers meanwhile, never
            // this live one's.)
            let (start, end) = seg.chunk_region();
            // SAFETY: a mapped chunk region.
            match unsafe { ChunkHeap::mark_remote_free(p, start, end) } {
                None => {}
                Some("a freed block") => misuse::report("double free", p),
                Some(what) => misuse::report_op("free", what, p),
            }
        }
        _ => {}
    }
    let owner = page.owner_heap();
    if owner == heap.id() {
        if kind == SegmentKind::Chunk {
            // SAFETY: a chunk of a segment this heap owns (chunk_free checks its header).
            unsafe { heap.chunk_free(seg, p) };
        } else {
            // Our own page, in the full list or with purged OS pages (the owner tags).
            // SAFETY: our own page.
            unsafe {
                check_and_mark(page, p, keep);
                if keep && fill_and_keep(heap, p, page.block_size.get(), page.mark_of(p)) {
                    return;
                }
            }
            if page.in_full() {
                heap.free_local_full(page, p);
            } else {
                // SAFETY: a live block of our page.
                unsafe { page.push_local(p.cast()) };
                if page.used() == 0 {
                    heap.page_empty(page);
                }
            }
        }
        return;
    }
    if kind == SegmentKind::Chunk {
        // SAFETY: p is a live chunk; the owner frees it when it collects the list.
        unsafe { page.push_remote(p.cast()) };
        if !owner.is_null() {
            // SAFETY: heaps are never unmapped.
            unsafe { (*owner.cast::<Heap>()).remote_hint(CHUNK_HINT) };
        }
        count_remote_free(heap, heap.for_remote_free(), None);
        return;
    }
    // SAFETY: the page of p's slice.
    unsafe { check_and_mark(page, p, keep) };
    if keep {
        match heap.for_remote_free() {
            // SAFETY: checked and marked above.
            Some(h) if unsafe { fill_and_keep(h, p, page.block_size.get(), page.mark_of(p)) } => return,
            Some(_) => {}
            // An exiting thread keeps nothing, but the block is still filled.
            None if mitigations::fill_freed() && !cfg!(miri) => {
                // SAFETY: p is a checked, marked block of its page's size, being freed.
                unsafe {
                    fill_zero(p, page.block_size.get());
                    write_mark(p.cast(), page.mark_of(p));
                }
            }
            None => {}
        }
    }
    let class = page.class.load(Ordering::Relaxed) as usize;
    let freer = heap.for_remote_free();
    count_remote_free(heap, freer, Some(class));
    match freer {
        // SAFETY: p is a live block of `page`, checked and marked.
        Some(h) => unsafe { h.batch_remote(page, class, p.cast()) },
        // A thread without a heap (exiting) pushes at once.
        // SAFETY: p is a live block of `page`, checked and marked.
        None => unsafe { Heap::free_remote(page, class, p.cast(), p.cast(), 1) },
    }
}

/// Counts a remote free (of a block of `class`, or of a chunk) in the freeing thread's heap
/// (`freer`, from `heap.for_remote_free()`), or in the backend if it has none.
fn count_remote_free(heap: &Heap, freer: Option<&Heap>, class: Option<usize>) {
    match freer {
        Some(h) => {
            Counters::bump(&h.stats.counters.remote_frees, 1);
            if let Some(c) = class {
                Counters::bump(&h.stats.remote_pending[c], 1);
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
        SegmentKind::Zero | SegmentKind::Cached => 0,
        _ => page.block_size.get().saturating_sub(if mitigations::canaries() { CANARY } else { 0 }),
    }
}

/// Resizes block `p` (aligned to `align`) to `new_size` bytes: in place when the new size
/// still fits its size class (and is not under half of it), when a chunk can shrink or grow
/// into its free neighbour, or when a huge mapping can; else by moving it. `old_size` is
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
        // A huge block keeps its mapping while it shrinks, down to the page classes: a buffer
        // that grows and shrinks again (vec-grow) then never copies above `CLASS_MAX`.
        if new_size > CLASS_MAX {
            if new_size <= usable && new_size >= usable / 2 {
                seg.set_live_bytes(new_size);
                return p;
            }
            // SAFETY: p is the segment's live huge block.
            if let Some(q) = unsafe { Backend::of(seg).huge_resize(seg, p, new_size) } {
                return q.as_ptr();
            }
        }
    } else if seg.kind() == SegmentKind::Chunk {
        let local = seg.pages[0].owner_heap() == heap.id();
        // SAFETY: p is a live chunk of a segment this heap owns.
        if local && new_size > CLASS_MAX && new_size <= CHUNK_MAX && unsafe { heap.chunk_resize(seg, p, new_size) } {
            return p;
        }
    } else if new_size <= usable && (new_size >= usable / 2 || usable <= 2 * MIN_ALIGN) {
        return p;
    }
    // A block that has to move to grow past GROW_HUGE_MIN is likely a growing buffer: give it
    // a huge mapping, which grows in place to the end of its mapping and then by mremap,
    // instead of a chunk it would soon outgrow and copy again. Out of mappings
    // (`vm.max_map_count`) or address space, a chunk still serves it.
    let grown = (new_size > usable && new_size > GROW_HUGE_MIN)
        .then(|| huge_alloc(heap, new_size, align.max(MIN_ALIGN)))
        .flatten();
    let q = if let Some((q, _)) = grown {
        q
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

/// `realloc` for callers that do not know the block's size (the C API): keeps the whole
/// usable size when the block moves.
///
/// # Safety
/// As for `realloc`.
pub unsafe fn realloc_unsized(heap: &Heap, p: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe {
        check_live(p, "realloc");
        let old = usable_size(p);
        realloc(heap, p, old, new_size, MIN_ALIGN)
    }
}

/// Reports (and aborts) unless block `p` can have been allocated with `size` bytes aligned to
/// `align`: the check of the sized frees (C23's `free_sized` and `free_aligned_sized`, C++'s
/// sized and aligned `operator delete`), which catches an object deleted through a base
/// class without a virtual destructor, or a length or alignment the program got wrong. A
/// block of a page class must be of the class that allocation picks (C's `free_sized` also
/// allows the smaller sizes `realloc` shrinks a block to in place: `exact` is false there;
/// C++ objects never pass through `realloc`); a chunk must be at most `MIN_SPLIT` larger than
/// the size (what an allocation or an in-place resize leaves); a huge block must have been
/// asked for with exactly `size`. `op` names the operation in the report. A pointer that is
/// not a live block is left for `free` to report.
///
/// # Safety
/// None: any pointer may be passed (one inside a live segment is only read from its page,
/// or from a chunk header `check_live` accepted).
#[inline]
pub unsafe fn check_size(p: *const u8, size: usize, align: usize, exact: bool, op: &str) {
    if !segment_map::contains(p) {
        return;
    }
    // SAFETY: p's region holds a segment, so its header is mapped.
    let seg = unsafe { &*segment_of(p) };
    let page = seg.page_of(p);
    if !size_fits_class(seg, page, size, align) {
        // SAFETY: forwarded.
        unsafe { check_size_slow(seg, page, p, size, align, exact, op) }
    }
}

/// `check_size`'s common case, inline (a sized `delete` of a small object: larson-sized spent
/// a sixth of its time in the call): a page-class block of the size's own class, default
/// alignment, no canary. False sends the block to the whole check.
#[inline(always)]
fn size_fits_class(seg: &Segment, page: &Page, size: usize, align: usize) -> bool {
    matches!(seg.kind(), SegmentKind::Small | SegmentKind::Medium | SegmentKind::Large)
        && align <= MIN_ALIGN
        && size <= CLASS_MAX
        && page.block_size.get() != 0
        && in_class(size, page.class.load(Ordering::Relaxed) as usize)
        && !mitigations::canaries()
}

/// `check_size` beyond its common case.
///
/// # Safety
/// `seg` and `page` are `p`'s segment (mapped) and page.
#[cold]
#[inline(never)]
unsafe fn check_size_slow(seg: &Segment, page: &Page, p: *const u8, size: usize, align: usize, exact: bool, op: &str) {
    let align = align.max(MIN_ALIGN);
    let ok = match seg.kind() {
        SegmentKind::Cached => return,
        SegmentKind::Zero => size == 0 && p.addr() % align == 0,
        SegmentKind::Huge => {
            if p != page.start.get() {
                return;
            }
            size == seg.live_bytes.load(Ordering::Relaxed) && p.addr() % align == 0
        }
        SegmentKind::Chunk => {
            // SAFETY: any pointer may be checked.
            unsafe { check_live(p, op) };
            // SAFETY: a live chunk (checked).
            let usable = unsafe { ChunkHeap::usable_size(p.cast_mut()) };
            size <= usable && usable - size < chunk::MIN_SPLIT + 2 * chunk::HEADER && p.addr() % align == 0
        }
        _ => {
            let block = page.block_size.get();
            if block == 0 {
                return;
            }
            let class = page.class.load(Ordering::Relaxed) as usize;
            // At the full level the block holds a canary past what the program may use.
            let extra = if mitigations::canaries() { CANARY } else { 0 };
            let usable = block.saturating_sub(extra);
            let picked = match size.checked_add(extra) {
                Some(n) if align <= MIN_ALIGN => (n <= CLASS_MAX).then(|| class_of(n)),
                Some(n) => class_for_aligned(n.max(align), align),
                None => None,
            };
            // (`realloc` leaves a block in place down to half its usable size.)
            picked == Some(class)
                || (!exact && align <= MIN_ALIGN && size <= usable && (2 * size >= usable || usable <= 2 * MIN_ALIGN))
        }
    };
    if !ok {
        misuse::report_op(op, "a block allocated with another size or alignment", p);
    }
}

/// `usable_size` for pointers from outside (the C API): checks `p` first, as `check_live`.
///
/// # Safety
/// None beyond `check_live`'s: a pointer that is not a live block is reported.
pub unsafe fn usable_size_checked(p: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe {
        check_live(p, "malloc_usable_size");
        usable_size(p)
    }
}

/// Reports (and aborts) unless `p` can be a live block of this allocator; `op` names the
/// operation in the report. Catches what `free` catches.
///
/// # Safety
/// None: any pointer may be passed (one inside a live segment is only read from its page).
pub(crate) unsafe fn check_live(p: *const u8, op: &str) {
    if !segment_map::contains(p) {
        misuse::report_op(op, "a pointer mallard did not allocate", p);
    }
    // SAFETY: p's region holds a segment, so its header is mapped.
    let seg = unsafe { &*segment_of(p) };
    let page = seg.page_of(p);
    match seg.kind() {
        SegmentKind::Huge => {
            if p != seg.pages[0].start.get() {
                misuse::report_op(op, "a pointer inside a huge block", p);
            }
        }
        SegmentKind::Cached => misuse::report_op(op, "a freed block", p),
        SegmentKind::Zero => {
            if !Backend::of(seg).zero_live(seg, p) {
                misuse::report_op(op, "a freed block (or a pointer that is not a block)", p);
            }
        }
        SegmentKind::Chunk => {
            let (start, end) = seg.chunk_region();
            // SAFETY: the header of a live chunk is stable apart from its PREV_FREE bit.
            if let Some(what) = unsafe { ChunkHeap::check_live(p.cast_mut(), start, end) } {
                misuse::report_op(op, what, p);
            }
        }
        _ => {
            // SAFETY: p's page, in a mapped segment.
            if let Some(m) = unsafe { block_misuse(page, p) } {
                report_block(op, m, p);
            }
        }
    }
}
