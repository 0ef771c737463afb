//! Huge blocks: sizes above the largest page class, and alignments beyond a slice. Each is
//! one mapping of its own with a segment header in front (so `free` finds it like any other
//! block), rounded up to whole segments so that a block can grow in place until the end of
//! its mapping; beyond that `mremap` moves the pages without copying them. A plain 4 MiB
//! mapping is taken from and returned to the backend's segment cache; bigger ones go to a
//! small cache of huge mappings (`HUGE_CACHE_BYTES`) and serve later blocks of up to their
//! size. When the cache of the right kind is empty, the other serves requests up to twice
//! its size: a cached huge mapping holds a plain block, or a cached segment is grown by
//! `mremap` into an 8 MiB mapping.
//!
//! In the secure build a huge block ends at a guard page (`mitigations::HUGE_GUARD`): its
//! usable size stops at the OS page boundary after the size asked for, and the next page
//! faults. Growing in place moves the guard; `mremap` moves only whole mappings, so the guards
//! are lifted around it. (Should the kernel not merge the lifted pages back into one mapping,
//! `mremap` fails and the block moves by a new mapping and a copy: slower, still correct.)

use super::Backend;
use crate::config::*;
use crate::mitigations::HUGE_GUARD;
use crate::segment::{Segment, SegmentKind};
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

impl Backend {
    /// Maps a huge block of `size` bytes aligned to `align`. Returns the block and whether its
    /// memory is known to be zero.
    pub(crate) fn huge_alloc(&self, size: usize, align: usize) -> Option<(NonNull<u8>, bool)> {
        // (An aligned allocation of 0 bytes too has a byte inside its mapping; its live bytes
        // stay what was asked for, which a sized free compares.)
        let asked = size;
        let size = size.max(1);
        let (seg_off, block_off, map_align) = huge_layout(align);
        let map_size =
            (block_off + seg_off).checked_add(size)?.checked_add(self.tail_guard())?.checked_next_multiple_of(SEGMENT_SIZE)?;
        if map_size > isize::MAX as usize {
            return None;
        }
        // A cached huge mapping up to twice the size will do (the rest stays untouched, and
        // is room to grow in place).
        let pop_huge = || {
            self.pop_huge(map_size, 2 * map_size, false).map(|(seg, size)| {
                // SAFETY: cached headers are the (non-null) bases of their mappings.
                (unsafe { NonNull::new_unchecked((*seg).addr()) }, Mapping::Cached, size)
            })
        };
        // Each cache serves the other's requests (up to twice the size) when it has nothing
        // of their size: a growing buffer that leaves the chunk heap at 2 MiB takes an 8 MiB
        // mapping, and leaves a plain segment when it shrinks back, so with separate caches
        // each such round trip mapped a fresh huge block and unmapped a cached segment.
        let mapping = if seg_off != 0 {
            None
        } else if map_size == SEGMENT_SIZE {
            self.pop_cache().map(|b| (b, Mapping::Cached, map_size)).or_else(pop_huge)
        } else {
            self.reuse_huge(map_size).or_else(|| {
                if map_size <= 2 * SEGMENT_SIZE {
                    self.grow_cached_segment(map_size).map(|b| (b, Mapping::Grown, map_size))
                } else {
                    None
                }
            })
        };
        let (base, mapping, map_size) = match mapping {
            Some(m) => m,
            None => {
                let base = self.source().reserve(map_size, map_align)?;
                self.count(|c| &c.huge_fresh, 1);
                (base, Mapping::Fresh, map_size)
            }
        };
        // SAFETY: seg_off < map_size; the header fits in the first slice after it.
        let seg = unsafe { &*(base.as_ptr().add(seg_off) as *const Segment) };
        // Fresh from the OS, or purged while cached: the block reads as zero.
        let zero = mapping == Mapping::Fresh || seg.dirty_mask.get() == 0;
        seg.init(SegmentKind::Huge, self.id(), &self.shared, base.as_ptr(), map_size, zero);
        seg.dirty_mask.set(!0); // the block is in use: dirty once it is freed
        seg.live_bytes.store(0, Ordering::Relaxed);
        seg.set_live_bytes(asked);
        // SAFETY: block_off + size <= map_size - seg_off.
        let block = unsafe { seg.addr().add(block_off) };
        let usable = self.guard_huge(seg, block, size);
        seg.pages[0].init(ptr::null_mut(), 0, usable, block, usable, false);
        seg.pages[0].used.store(1, Ordering::Relaxed);
        if mapping != Mapping::Cached {
            self.register(seg);
        }
        self.count(|c| &c.huge_allocs, 1);
        // An allocation: a purge point of sorts, where the purger may start (see
        // `start_purger`); the free of this block leaves it cached, due after a delay.
        self.purger.last_active.store(crate::os::now_ms(), Ordering::Relaxed);
        self.start_purger();
        // SAFETY: block is inside the mapping, not null.
        Some((unsafe { NonNull::new_unchecked(block) }, zero))
    }

    /// A cached huge mapping for a block that needs `map_size` bytes: the smallest that is big
    /// enough, else the biggest one of at least half the size grown by `mremap` (only the pages
    /// it gains are new, so they alone fault in; at most half the block is then cleared again
    /// by a `calloc` that could have had fresh zero pages). A program that replaces multi-MiB blocks of random sizes
    /// (mimalloc-bench's malloc-large: 5-25 MiB) then reuses pages it already touched instead
    /// of mapping and faulting in every block anew; a mapping's excess over the block stays
    /// committed while the block lives, unless it is more than the block itself and more than
    /// `HUGE_TRIM_MIN`, when it is decommitted.
    fn reuse_huge(&self, map_size: usize) -> Option<(NonNull<u8>, Mapping, usize)> {
        let (seg, size) =
            self.pop_huge(map_size, usize::MAX, false).or_else(|| self.pop_huge(map_size / 2, map_size, true))?;
        // SAFETY: cached headers are valid and at the (non-null) bases of their mappings.
        let seg = unsafe { &*seg };
        let base = seg.addr();
        if size >= map_size {
            let excess = size - map_size;
            if excess > map_size.max(HUGE_TRIM_MIN) && seg.dirty_mask.get() != 0 {
                // SAFETY: the tail of a cached (unused) mapping; it reads as zero after this.
                unsafe { self.source().decommit(NonNull::new_unchecked(base.add(map_size)), excess) };
            }
            // SAFETY: as above.
            return Some((unsafe { NonNull::new_unchecked(base) }, Mapping::Cached, size));
        }
        // SAFETY: a cached huge mapping, header at its base.
        unsafe { self.grow_cached(base, size, map_size) }.map(|b| (b, Mapping::Grown, map_size))
    }

    /// Takes a cached plain segment and grows its mapping to `map_size` (see `grow_cached`).
    fn grow_cached_segment(&self, map_size: usize) -> Option<NonNull<u8>> {
        let base = self.pop_cache()?;
        // SAFETY: a cached segment, header at the base of its mapping.
        unsafe { self.grow_cached(base.as_ptr(), SEGMENT_SIZE, map_size) }
    }

    /// Grows the mapping of `size` bytes at `base`, an empty segment or huge mapping taken off
    /// a cache, to `map_size` (in place or moved by the kernel: the pages it has keep their
    /// contents, nothing is copied). The result is unregistered; `None` if the remap fails
    /// (the mapping is then given back).
    ///
    /// # Safety
    /// `base` is the whole mapping of a segment the caller took off a cache.
    unsafe fn grow_cached(&self, base: *mut u8, size: usize, map_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        let seg = unsafe { &*(base as *const Segment) };
        // The header moves with the mapping: out of the registry meanwhile; and `mremap` moves
        // one whole mapping, which the header's guard page splits.
        self.unregister(seg);
        self.unguard_huge(seg, true);
        // SAFETY: base is the whole mapping of an empty cached segment.
        let grown = unsafe { self.source().remap(NonNull::new_unchecked(base), size, map_size, SEGMENT_SIZE) };
        if grown.is_none() {
            self.register(seg);
            self.segment_free(seg);
        }
        grown
    }

    pub(crate) fn huge_free(&self, seg: &Segment) {
        self.count(|c| &c.huge_frees, 1);
        self.note_in_use(-(seg.live_bytes.load(Ordering::Relaxed) as i64));
        self.unguard_huge(seg, false);
        let plain = seg.base.load(Ordering::Relaxed) == seg.addr();
        if !(plain && seg.map_size.load(Ordering::Relaxed) > SEGMENT_SIZE && self.cache_huge(seg)) {
            self.segment_free(seg);
        }
    }

    /// Resizes huge block `p` (of segment `seg`) to `new_size` in place or by moving its
    /// mapping (mremap, no copy). `None` if neither works; the block is then unchanged.
    ///
    /// # Safety
    /// `p` is the live huge block of `seg`; after a move only the returned pointer is valid.
    pub(crate) unsafe fn huge_resize(&self, seg: &Segment, p: *mut u8, new_size: usize) -> Option<NonNull<u8>> {
        let seg_off = seg.addr() as usize - seg.base.load(Ordering::Relaxed) as usize;
        let block_off = p as usize - seg.addr() as usize;
        let map_size = (seg_off + block_off)
            .checked_add(new_size)?
            .checked_add(self.tail_guard())?
            .checked_next_multiple_of(SEGMENT_SIZE)?;
        let old_size = seg.map_size.load(Ordering::Relaxed);
        if map_size == old_size {
            seg.set_live_bytes(new_size);
            if HUGE_GUARD {
                self.unguard_huge(seg, false);
                seg.pages[0].block_size.set(self.guard_huge(seg, p, new_size));
            }
            // SAFETY: p is non-null.
            return Some(unsafe { NonNull::new_unchecked(p) });
        }
        let map_align = if seg_off == 0 { SEGMENT_SIZE } else { seg_off + SEGMENT_SIZE };
        // The header moves with the mapping: take it out of the registry meanwhile; and lift
        // the guards, which split the mapping.
        self.unregister(seg);
        self.unguard_huge(seg, true);
        // (Read before the remap: once the mapping moved, `seg` is no longer mapped.)
        let old_base = seg.base.load(Ordering::Relaxed);
        // SAFETY: base/old_size are the block's whole mapping.
        let moved = unsafe { self.source().remap(NonNull::new_unchecked(old_base), old_size, map_size, map_align) };
        let base = moved.map_or(old_base, |b| b.as_ptr());
        // SAFETY: the header is at the same offset in the (possibly moved) mapping.
        let seg = unsafe { &*(base.add(seg_off) as *const Segment) };
        if moved.is_some() {
            seg.base.store(base, Ordering::Relaxed);
            seg.map_size.store(map_size, Ordering::Relaxed);
            seg.set_live_bytes(new_size);
            let usable = map_size - seg_off - block_off;
            // SAFETY: the block keeps its offset.
            let block = unsafe { seg.addr().add(block_off) };
            seg.page_map.iter().for_each(|m| m.set(&seg.pages[0] as *const _ as *mut _));
            seg.pages[0].block_size.set(usable);
            seg.pages[0].start.set(block);
            self.count(|c| &c.huge_remaps, 1);
        }
        if HUGE_GUARD {
            // SAFETY: as above.
            let block = unsafe { seg.addr().add(block_off) };
            // Moved: guard the new size; else the guard goes back where it was.
            let size = if moved.is_some() { new_size } else { seg.pages[0].block_size.get() };
            seg.pages[0].block_size.set(self.guard_huge(seg, block, size));
        }
        self.register(seg);
        // SAFETY: block_off is inside the mapping.
        moved.map(|_| unsafe { NonNull::new_unchecked(seg.addr().add(block_off)) })
    }
}


/// A reused huge mapping's excess over its new block is decommitted when it is at least this
/// big (and bigger than the block).
const HUGE_TRIM_MIN: usize = 32 << 20;

impl Backend {
    /// Room for the secure build's guard page after a huge block: one page of the source.
    fn tail_guard(&self) -> usize {
        if HUGE_GUARD {
            self.source().page_size()
        } else {
            0
        }
    }

    /// Guards huge block `block` of `size` bytes of `seg` in the secure build: a guard page
    /// right after it, from the OS page boundary at or after its end (`HUGE_GUARD`, room for
    /// it is part of the mapping), and the one after the header (`HEADER_GUARD`). Returns the
    /// block's usable size: up to the guard, or to the end of the mapping without one.
    fn guard_huge(&self, seg: &Segment, block: *mut u8, size: usize) -> usize {
        let end = seg.base.load(Ordering::Relaxed).addr() + seg.map_size.load(Ordering::Relaxed);
        if !HUGE_GUARD {
            return end - block.addr();
        }
        self.guard_header(seg);
        let page = self.source().page_size();
        // (A block of 0 bytes gets a page, like any other.)
        let guard = (block.addr() + size.max(1)).next_multiple_of(page);
        debug_assert!(guard + page <= end && seg.tail_guard.get() == 0);
        // SAFETY: the page lies inside the mapping, after the block's last byte.
        unsafe { self.source().guard(NonNull::new_unchecked(block.with_addr(guard)), page) };
        seg.tail_guard.set(guard);
        guard - block.addr()
    }

    /// Lifts the tail guard of huge segment `seg`, and with `header` its header's guard too
    /// (before `mremap`, which moves only a whole mapping).
    fn unguard_huge(&self, seg: &Segment, header: bool) {
        let page = self.source().page_size();
        let guard = seg.tail_guard.replace(0);
        if guard != 0 {
            // SAFETY: the tail guard `guard_huge` made.
            unsafe { self.source().unguard(NonNull::new_unchecked(seg.addr().with_addr(guard)), page) };
        }
        if header && seg.guarded.replace(false) {
            if let Some(guard) = crate::segment::header_guard(seg.addr(), page) {
                // SAFETY: the header guard `guard_header` made.
                unsafe { self.source().unguard(NonNull::new_unchecked(guard), page) };
            }
        }
    }
}

/// Where a huge block's mapping came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// A cached segment or huge mapping, registered, its header as it was left.
    Cached,
    /// A cached plain segment grown by remap: its header as it was left, unregistered.
    Grown,
    /// Fresh from the OS: zero, unregistered.
    Fresh,
}

/// Where a huge block of alignment `align` goes: (segment header offset in the mapping,
/// block offset from the header, mapping alignment). Up to half a segment the block follows
/// the header slice inside the first segment; beyond, the mapping is aligned to `align` and
/// the block starts exactly one segment after its header, which `segment_of` (masking
/// `p - 1`) finds.
fn huge_layout(align: usize) -> (usize, usize, usize) {
    if align <= SEGMENT_SIZE / 2 {
        (0, align.max(SLICE_SIZE), SEGMENT_SIZE)
    } else {
        let align = align.max(SEGMENT_SIZE);
        (align - SEGMENT_SIZE, SEGMENT_SIZE, align)
    }
}
