//! Segments: aligned 4 MiB regions from the page source, cut into pages.
//!
//! The segment header sits in the first slice (64 KiB) and holds the page map, one entry per
//! slice, so the page of any block is found in O(1): mask the address down to the segment,
//! then index the map with the slice number. Blocks never start at offset 0 of a segment,
//! which lets `segment_of` mask `p - 1` and so also serve huge blocks whose alignment puts
//! them exactly one segment past their header.
//!
//! Kinds (`SegmentKind`): a small segment has 63 pages of one slice; a medium segment 8 pages
//! of eight slices (page 0 one slice shorter, for the header); a large segment one page of 63
//! slices; a chunk segment one region of the chunk heap (its page 0 carries the owner and the
//! remote-free list); a huge segment one block, in a mapping of its own.
//!
//! Invariants (owner's view): `used_pages == popcount(valid & !free_mask)`; a page is on a
//! heap queue iff its bit is clear in `free_mask`; `owner` is the owning heap, or null when the
//! segment is abandoned, cached or huge.

use crate::config::*;
use crate::lock::SpinLock;
use crate::os::PageSource;
use crate::page::{Owner, Page};
use crate::size_class::PageKind;
use core::cell::Cell;
use core::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum SegmentKind {
    Small = 0,
    Medium = 1,
    Large = 2,
    Huge = 3,
    /// A region of the chunk heap (`chunk`), for blocks above the page classes.
    Chunk = 4,
    /// Empty, in the backend's segment cache.
    Cached = 5,
    /// The addresses of zero-size blocks in the secure build (`zero`): nothing but a header.
    Zero = 6,
}

impl SegmentKind {
    pub(crate) fn from_page_kind(k: PageKind) -> Self {
        match k {
            PageKind::Small => SegmentKind::Small,
            PageKind::Medium => SegmentKind::Medium,
            PageKind::Large => SegmentKind::Large,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => SegmentKind::Small,
            1 => SegmentKind::Medium,
            2 => SegmentKind::Large,
            3 => SegmentKind::Huge,
            4 => SegmentKind::Chunk,
            6 => SegmentKind::Zero,
            _ => SegmentKind::Cached,
        }
    }

    /// Bit mask of the page indices a segment of this kind has.
    pub(crate) fn valid_pages(self) -> u64 {
        match self {
            SegmentKind::Small => !1u64,
            SegmentKind::Medium => 0xff,
            SegmentKind::Large | SegmentKind::Huge | SegmentKind::Chunk => 1,
            SegmentKind::Cached | SegmentKind::Zero => 0,
        }
    }
}

#[repr(C)]
pub(crate) struct Segment {
    /// The owning heap; null if none. Read by every `free`.
    pub(crate) owner: AtomicPtr<Owner>,
    kind: AtomicU8,
    /// Page of each slice.
    pub(crate) page_map: [Cell<*mut Page>; SLICES_PER_SEGMENT],
    pub(crate) pages: [Page; SLICES_PER_SEGMENT],
    pub(crate) free_mask: Cell<u64>,
    pub(crate) used_pages: Cell<u32>,
    /// Guards `dirty_mask`, `purge_mask`, `purge_at` and the free pages' memory of a page
    /// segment between its owner and the background purger (`purge_overdue`); the owner takes
    /// it only on slow paths (a page taken or given back, a purge).
    lock: SpinLock<()>,
    /// Pages whose memory may be non-zero (used since the segment was mapped or purged).
    pub(crate) dirty_mask: Cell<u64>,
    /// Free pages still committed, and when they are due to be purged (ms; 0 = none). For a
    /// cached segment, `purge_at` is when the whole segment is due.
    pub(crate) purge_mask: Cell<u64>,
    pub(crate) purge_at: Cell<u64>,
    /// Links in a heap's segment list, the cache or the abandoned list.
    pub(crate) next: Cell<*mut Segment>,
    pub(crate) prev: Cell<*mut Segment>,
    /// Links in the backend's registry of every mapped segment (changed under its lock).
    pub(crate) reg_next: Cell<*mut Segment>,
    pub(crate) reg_prev: Cell<*mut Segment>,
    /// Holds on a page segment by the purger, which drops the backend's lock to decommit its
    /// free pages (`Backend::pin`), and whether it was given back meanwhile (the last to let
    /// go then frees it). Both change only under the backend's lock.
    pub(crate) pins: Cell<u32>,
    pub(crate) free_deferred: Cell<bool>,
    pub(crate) shared: Cell<*const Shared>,
    /// The backend that mapped the segment: to this module an address only (`Backend::of`
    /// turns it into the backend).
    pub(crate) backend: Cell<*const ()>,
    /// The mapping that holds the segment (a huge one may start before the header). Atomics
    /// (relaxed) because `stats()` reads them under the backend's lock while a cached
    /// segment leaving the cache is set up again outside it (the same values: ThreadSanitizer
    /// found the formal race).
    pub(crate) base: AtomicPtr<u8>,
    pub(crate) map_size: AtomicUsize,
    /// Bytes the program asked for in this segment's live blocks, for huge and chunk
    /// segments (statistics).
    pub(crate) live_bytes: AtomicUsize,
    /// The header slice ends with a guard page (secure build, `mitigations::HEADER_GUARD`).
    /// A property of the mapping: `init` keeps it.
    pub(crate) guarded: Cell<bool>,
    /// A huge block's guard page right after the block (secure build,
    /// `mitigations::HUGE_GUARD`), or 0. Set while the block is live; `init` keeps it.
    pub(crate) tail_guard: Cell<usize>,
}

const _: () = assert!(core::mem::size_of::<Segment>() <= SLICE_SIZE);

/// What the segments of one backend share, and all a segment's own steps need of it: the page
/// source it decommits with, the bytes in use, and when the first free page of a live heap's
/// segment falls due for purging (the purger's wake-up). The backend holds it and each
/// segment points at it, so that segments need not know the backend.
pub(crate) struct Shared {
    pub(crate) source: &'static dyn PageSource,
    /// Bytes in use now and at most: blocks carved from pages, live chunks and huge blocks
    /// (changed only on slow paths; see `note_in_use`).
    in_use: AtomicI64,
    peak_in_use: AtomicI64,
    /// The earliest time free pages of a live heap's segments are due (ms; `u64::MAX`: none).
    owned_due: AtomicU64,
}

impl Shared {
    pub(crate) const fn new(source: &'static dyn PageSource) -> Self {
        Shared {
            source,
            in_use: AtomicI64::new(0),
            peak_in_use: AtomicI64::new(0),
            owned_due: AtomicU64::new(u64::MAX),
        }
    }

    /// Adds `delta` bytes to what is in use (blocks carved from a page or the page given back,
    /// a chunk or huge block allocated or freed) and keeps the peak. A page counts every block
    /// it has carved, live or free, so the peak bounds the peak of live bytes from above; it
    /// is exact for chunks and huge blocks.
    pub(crate) fn note_in_use(&self, delta: i64) {
        let now = self.in_use.fetch_add(delta, Ordering::Relaxed) + delta;
        if delta > 0 {
            self.peak_in_use.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Bytes in use now, and the most there were.
    pub(crate) fn in_use(&self) -> (i64, i64) {
        (self.in_use.load(Ordering::Relaxed), self.peak_in_use.load(Ordering::Relaxed))
    }

    /// A heap's segment has free pages due for purging at `at` (ms).
    pub(crate) fn owned_due(&self, at: u64) {
        self.owned_due.fetch_min(at, Ordering::Relaxed);
    }

    /// When the first free pages of a live heap's segments are due (ms; `u64::MAX`: none).
    pub(crate) fn next_owned_due(&self) -> u64 {
        self.owned_due.load(Ordering::Relaxed)
    }

    /// Forgets the due time (the purger has purged what was due then).
    pub(crate) fn clear_owned_due(&self) {
        self.owned_due.store(u64::MAX, Ordering::Relaxed);
    }
}

/// The first bytes of a segment are its header, which stays committed when the segment is
/// purged (the registry links in it stay in use): the header's own bytes rounded up to pages
/// of `page` bytes.
pub const fn header_keep(page: usize) -> usize {
    core::mem::size_of::<Segment>().next_multiple_of(page)
}

/// The secure build's guard page of the segment at `segment` (`mitigations::HEADER_GUARD`) on
/// a kernel with `page`-byte pages: the last page of the header slice. None when that page
/// would cover the header itself (64 KiB pages: the header slice is one page); such segments
/// have no header guard.
pub fn header_guard(segment: *mut u8, page: usize) -> Option<*mut u8> {
    (header_keep(page) + page <= SLICE_SIZE).then(|| segment.wrapping_add(SLICE_SIZE - page))
}

/// The segment holding block `p`.
///
/// Natively the header pointer is derived from `p`. Under Miri it is rebuilt from the address
/// and the mapping's exposed provenance (see `Segment::init`): a caller's pointer may carry a
/// tag that Stacked Borrows narrowed to the block (a `Box` does), which must not reach the
/// header, while the allocator itself may.
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *const Segment {
    let addr = p.addr().wrapping_sub(1) & !SEGMENT_MASK;
    #[cfg(miri)]
    return core::ptr::with_exposed_provenance(addr);
    #[cfg(not(miri))]
    p.with_addr(addr).cast()
}

/// Slice index of `p` inside its segment.
#[inline(always)]
pub(crate) fn slice_of(p: *const u8) -> usize {
    (p as usize >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1)
}

impl Segment {
    #[inline(always)]
    pub(crate) fn kind(&self) -> SegmentKind {
        SegmentKind::from_u8(self.kind.load(Ordering::Relaxed))
    }

    /// What the segment shares with the other segments of its backend.
    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: set at init; backends (which hold it) outlive their segments.
        unsafe { &*self.shared.get() }
    }

    /// The page holding block `p` of this segment.
    #[inline(always)]
    pub(crate) fn page_of(&self, p: *const u8) -> &Page {
        // SAFETY: page_map entries always point into `self.pages`.
        unsafe { &*self.page_map[slice_of(p)].get() }
    }

    /// Sets the requested bytes of a huge segment's block, keeping the in-use figure.
    pub(crate) fn set_live_bytes(&self, n: usize) {
        let old = self.live_bytes.swap(n, Ordering::Relaxed);
        self.shared().note_in_use(n as i64 - old as i64);
    }

    /// The segment's start, as a pointer that may reach the whole mapping (a pointer made
    /// from `&self` could only reach the header).
    pub(crate) fn addr(&self) -> *mut u8 {
        self.base.load(Ordering::Relaxed).with_addr(self as *const Segment as usize)
    }

    /// The segment of a page of this kind of header, from any block pointer of the page.
    ///
    /// # Safety
    /// `page` is a page of a live segment whose `start` has been set.
    pub(crate) unsafe fn of_page(page: &Page) -> &Segment {
        // SAFETY: `start` points into the segment's mapping, so masking it finds the header.
        unsafe { &*segment_of(page.start.get()) }
    }

    /// Sets up the header for `kind`. The memory is either fresh (all zero, which is a valid
    /// empty header) or a former segment's header; the registry links are kept.
    /// `zero` says whether the memory after the header is known to be zero.
    pub(crate) fn init(
        &self,
        kind: SegmentKind,
        backend: *const (),
        shared: &Shared,
        base: *mut u8,
        map_size: usize,
        zero: bool,
    ) {
        // Lets `segment_of` rebuild a pointer to the header from a bare address under Miri.
        let _ = base.expose_provenance();
        self.owner.store(core::ptr::null_mut(), Ordering::Relaxed);
        self.kind.store(kind as u8, Ordering::Relaxed);
        for s in 0..SLICES_PER_SEGMENT {
            let page_index = match kind {
                SegmentKind::Small => s,
                SegmentKind::Medium => s / 8,
                _ => 0,
            };
            self.page_map[s].set(&self.pages[page_index] as *const Page as *mut Page);
        }
        for p in &self.pages {
            p.used.store(0, Ordering::Relaxed);
            p.reserved.set(0);
        }
        self.free_mask.set(kind.valid_pages());
        self.used_pages.set(0);
        self.dirty_mask.set(if zero { 0 } else { !0 });
        self.purge_mask.set(0);
        self.purge_at.set(0);
        self.next.set(core::ptr::null_mut());
        self.prev.set(core::ptr::null_mut());
        self.backend.set(backend);
        self.shared.set(shared);
        self.base.store(base, Ordering::Relaxed);
        self.map_size.store(map_size, Ordering::Relaxed);
        self.live_bytes.store(0, Ordering::Relaxed);
    }

    /// Marks the segment cached (empty, dirty) or re-kinds it.
    pub(crate) fn set_kind(&self, kind: SegmentKind) {
        self.kind.store(kind as u8, Ordering::Relaxed);
    }

    /// The chunk heap's region in a chunk segment: everything after the header slice.
    pub(crate) fn chunk_region(&self) -> (*mut u8, *mut u8) {
        // SAFETY: both ends lie inside (or one past) the segment.
        unsafe { (self.addr().add(SLICE_SIZE), self.addr().add(SEGMENT_SIZE)) }
    }

    /// The memory range page `index` serves.
    pub(crate) fn page_area(&self, index: usize) -> (*mut u8, usize) {
        let (start, end) = match self.kind() {
            SegmentKind::Small => (index * SLICE_SIZE, (index + 1) * SLICE_SIZE),
            SegmentKind::Medium => ((index * MEDIUM_PAGE_SIZE).max(SLICE_SIZE), (index + 1) * MEDIUM_PAGE_SIZE),
            _ => (SLICE_SIZE, SEGMENT_SIZE),
        };
        // SAFETY: the offsets stay inside the segment.
        (unsafe { self.addr().add(start) }, end - start)
    }

    /// Owner only: takes a free page, or `None` if every page is in use.
    pub(crate) fn take_page(&self) -> Option<(usize, &Page)> {
        let mask = self.free_mask.get();
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        let _g = self.lock.lock();
        self.free_mask.set(mask & !(1 << i));
        self.purge_mask.set(self.purge_mask.get() & !(1 << i));
        self.used_pages.set(self.used_pages.get() + 1);
        Some((i, &self.pages[i]))
    }

    /// Owner only: whether page `i` has been used since the segment was mapped, and marks it
    /// used from now on.
    pub(crate) fn page_was_fresh(&self, i: usize) -> bool {
        let _g = self.lock.lock();
        let dirty = self.dirty_mask.get();
        self.dirty_mask.set(dirty | 1 << i);
        dirty & (1 << i) == 0
    }

    /// Owner only: gives page `page` back to the segment; its memory is purged at `purge_at`
    /// (ms) unless the page is taken again before.
    pub(crate) fn free_page(&self, page: &Page, purge_at: u64) {
        let i = self.page_index(page);
        self.shared().note_in_use(-((page.capacity.get() as usize * page.block_size.get()) as i64));
        debug_assert!(self.free_mask.get() & (1 << i) == 0, "page freed twice");
        // No block of it is live now: a free of one (a double free) must find none carved.
        page.reserved.set(0);
        page.carved_end.store(0, Ordering::Relaxed);
        page.used.store(0, Ordering::Relaxed);
        let _g = self.lock.lock();
        if self.dirty_mask.get() & (1 << i) != 0 {
            self.purge_mask.set(self.purge_mask.get() | 1 << i);
            if self.purge_at.get() == 0 {
                self.purge_at.set(purge_at);
                self.shared().owned_due(purge_at);
            }
        }
        self.free_mask.set(self.free_mask.get() | 1 << i);
        self.used_pages.set(self.used_pages.get() - 1);
    }

    pub(crate) fn page_index(&self, page: &Page) -> usize {
        (page as *const Page as usize - self.pages.as_ptr() as usize) / core::mem::size_of::<Page>()
    }

    /// Owner only: decommits the free pages that are due (all of them with `force`).
    /// Returns the number of bytes decommitted.
    pub(crate) fn purge_pages(&self, now: u64, force: bool) -> usize {
        let _g = self.lock.lock();
        if !(force || now >= self.purge_at.get()) {
            return 0;
        }
        self.purge_free_pages()
    }

    /// The background purger, for a page segment whose owner is a live heap (the caller holds
    /// the backend lock, so the segment stays mapped and of its kind): decommits its free
    /// pages if they were due a whole purge delay ago, so the owner, which checks at least
    /// every quarter delay while it allocates, is idle. Returns (bytes decommitted, when the
    /// free pages left are overdue: ms, or `u64::MAX`).
    pub(crate) fn purge_overdue(&self, now: u64, delay: u64) -> (usize, u64) {
        let _g = self.lock.lock();
        if self.purge_mask.get() == 0 {
            return (0, u64::MAX);
        }
        let overdue = self.purge_at.get().saturating_add(delay);
        if now < overdue {
            return (0, overdue);
        }
        (self.purge_free_pages(), u64::MAX)
    }

    /// Decommits every free page still committed (the lock held).
    fn purge_free_pages(&self) -> usize {
        let mut mask = self.purge_mask.get();
        let mut bytes = 0;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let (start, len) = self.page_area(i);
            // SAFETY: a free page's memory holds nothing live.
            unsafe { self.shared().source.decommit(core::ptr::NonNull::new_unchecked(start), len) };
            self.dirty_mask.set(self.dirty_mask.get() & !(1 << i));
            bytes += len;
        }
        self.purge_mask.set(0);
        self.purge_at.set(0);
        bytes
    }

    /// Decommits everything after the header of an empty segment (or huge mapping) and marks
    /// it zero. Returns the bytes decommitted.
    pub(crate) fn purge_all(&self) -> usize {
        let source = self.shared().source;
        let keep = header_keep(source.page_size());
        let len = self.map_size.load(Ordering::Relaxed)
            - (self.addr() as usize - self.base.load(Ordering::Relaxed) as usize)
            - keep;
        // SAFETY: the segment is empty; the range lies inside its mapping, after the header, and
        // is whole pages (the mapping's base and size are).
        unsafe { source.decommit(core::ptr::NonNull::new_unchecked(self.addr().add(keep)), len) };
        self.dirty_mask.set(0);
        self.purge_at.set(0);
        len
    }

    /// Page indices in use.
    pub(crate) fn used_mask(&self) -> u64 {
        self.kind().valid_pages() & !self.free_mask.get()
    }

    pub(crate) fn validate(&self) {
        assert_eq!(self.used_mask().count_ones(), self.used_pages.get(), "used_pages == popcount(used)");
        assert_eq!(self.free_mask.get() & !self.kind().valid_pages(), 0);
    }
}
