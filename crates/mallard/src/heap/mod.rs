//! Per-thread heaps: the owner of pages and segments, and the allocation slow path.
//!
//! A heap keeps, per size class, a queue of pages that may have room (the first one is the
//! *current* page, which the direct table points at for small sizes) and a list of full pages.
//! The slow path (`find_page`) walks the queue, collecting each page's local and remote frees,
//! moves pages without room to the full list, and when nothing is left takes a fresh page:
//! from one of its own segments, else from a segment an exited thread abandoned, else from a
//! new segment.
//!
//! Remote frees into a full page clear the page's `FULL` tag and set the class's bit in
//! `remote_hint`; the owner then moves such pages back to the queue (`process_hints`). A heap
//! never shares its queues: only `remote_hint` is written by other threads.
//!
//! Blocks above the page classes come from the heap's `ChunkHeap` over its chunk segments
//! (`chunk_alloc`); chunks freed by other threads come back through the segment's page-0
//! `thread_free` list and the `CHUNK_HINT` bit.
//!
//! Free memory is purged (decommitted) once it has stayed free for the purge delay: every slow
//! path is a purge point (`maybe_purge`), and `collect(true)` + `purge(now, true)` do it all now.
//!
//! When a thread exits, `abandon` hands its segments to the backend (blocks still live in them
//! stay valid, and remote frees to them keep working); a later thread that needs a segment
//! reclaims them, and the heap struct itself is pooled for the next thread.
//!
//! The parts, by job: this module (the heap, its page queues and the allocation slow path),
//! `remote` (remote frees and hints), `abandon` (thread exit, reclaim, the heap pool),
//! `purge` (giving free memory back) and `chunks` (the owner's side of the chunk heap).

use crate::backend::Backend;
use crate::block::Block;
use crate::chunk::ChunkHeap;
use crate::config::*;
use crate::list::{Linked, List};
use crate::mitigations::QUARANTINE_SLOTS;
use crate::page::{Owner, Page, FULL};
use crate::segment::{segment_of, Segment, SegmentKind};
use crate::size_class::{class_of, kind_of, PageKind, CLASS_COUNT, CLASS_SIZE};
use crate::stats::{Counters, HeapStats};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

mod abandon;
mod chunks;
mod purge;
mod remote;

pub(crate) use abandon::reclaim_abandoned;

/// A queue of pages (through `Page::prev/next`).
pub(crate) type PageQueue = List<Page>;
/// A list of segments (through `Segment::prev/next`).
type SegQueue = List<Segment>;

#[repr(C, align(64))]
struct RemoteHint([AtomicU64; 2]);

/// The `remote_hint` bit that says a chunk of this heap was freed by another thread.
pub(crate) const CHUNK_HINT: usize = 127;
const _: () = assert!(CLASS_COUNT <= CHUNK_HINT && CLASS_COUNT <= 128);

/// Blocks this thread freed into one page of another heap, linked through their `next` word,
/// not yet pushed. They stay counted in their page's `used`, so the page cannot look empty
/// (or be recycled) while they wait.
struct RemoteBatch {
    page: Cell<*const Page>,
    head: Cell<*mut Block>,
    tail: Cell<*mut Block>,
    count: Cell<u32>,
}

impl RemoteBatch {
    const EMPTY: RemoteBatch = RemoteBatch {
        page: Cell::new(ptr::null()),
        head: Cell::new(ptr::null_mut()),
        tail: Cell::new(ptr::null_mut()),
        count: Cell::new(0),
    };
}

#[repr(C)]
pub struct Heap {
    /// First, so that the backend, which knows heaps by their statistics, holds heaps.
    pub(crate) stats: HeapStats,
    /// Current page for every size up to `DIRECT_MAX`, indexed by `(size + 7) / 8`.
    pub(crate) pages_direct: [Cell<*mut Page>; DIRECT_SLOTS],
    pub(crate) queues: [PageQueue; CLASS_COUNT],
    full: [PageQueue; CLASS_COUNT],
    /// Segments with free pages, per page kind; and segments with none.
    avail: [SegQueue; 3],
    busy: SegQueue,
    /// The chunk heap: free chunks of all this heap's chunk segments, and those segments.
    chunks: ChunkHeap,
    chunk_segs: SegQueue,
    backend: Cell<*const Backend>,
    /// The placeholder heap of threads that have not allocated yet.
    is_placeholder: bool,
    /// On a placeholder: creates and installs the calling thread's real heap.
    thread_init: Option<fn() -> *const Heap>,
    /// The placeholder of a thread whose heap was already abandoned (it is exiting): a free
    /// there does not create a new heap.
    exited: bool,
    fresh_pages: Cell<u32>,
    /// Remote frees held back to be pushed to their page as one list, one batch per class
    /// (see `batch_remote`), and which batches hold blocks.
    remote_batches: [RemoteBatch; CLASS_COUNT],
    batched: Cell<u128>,
    /// When `maybe_purge` next looks for due purges (ms).
    next_purge_check: Cell<u64>,
    /// Secure build: small blocks this thread freed, waiting to be released; the oldest at
    /// `quarantine_at` (`mitigations::QUARANTINE`; no slots in the default build).
    quarantine: [Cell<*mut u8>; QUARANTINE_SLOTS],
    quarantine_at: Cell<usize>,
    /// One bit per class: a remote free cleared the `FULL` tag of one of its full pages.
    /// The only field other threads write, on its own cache line.
    remote_hint: RemoteHint,
}

/// The page every empty slot points at: it never has a free block, so the fast path falls
/// through to the slow path without a null check.
pub(crate) struct StaticPage(pub Page);
// SAFETY: EMPTY_PAGE is never written (its free list stays empty, so nothing pops from it).
unsafe impl Sync for StaticPage {}
pub(crate) static EMPTY_PAGE: StaticPage = StaticPage(Page::EMPTY);

fn empty_page() -> *mut Page {
    &EMPTY_PAGE.0 as *const Page as *mut Page
}

/// The placeholder heap (see `Heap::is_placeholder`), usable in a `static`.
#[repr(transparent)]
pub(crate) struct StaticHeap(pub Heap);
// SAFETY: the placeholder heap is never written: every path that would write it first sees
// `is_placeholder` and switches to a real heap.
unsafe impl Sync for StaticHeap {}

/// Direct-table slots of each class with sizes up to DIRECT_MAX: (first, last).
const fn direct_slots() -> [(u8, u8); CLASS_COUNT] {
    let mut r = [(u8::MAX, 0u8); CLASS_COUNT];
    let mut j = 0;
    while j < DIRECT_SLOTS {
        let c = class_of(j * 8);
        if r[c].0 == u8::MAX {
            r[c].0 = j as u8;
        }
        r[c].1 = j as u8;
        j += 1;
    }
    r
}
const DIRECT_OF_CLASS: [(u8, u8); CLASS_COUNT] = direct_slots();

impl Linked for Page {
    fn prev(&self) -> &Cell<*mut Page> {
        &self.prev
    }
    fn next(&self) -> &Cell<*mut Page> {
        &self.next
    }
}

impl Linked for Segment {
    fn prev(&self) -> &Cell<*mut Segment> {
        &self.prev
    }
    fn next(&self) -> &Cell<*mut Segment> {
        &self.next
    }
}

impl Heap {
    /// The placeholder heap of a thread that has not allocated yet (or, with `exited`, of a
    /// thread whose heap was abandoned at exit).
    pub(crate) const fn placeholder(backend: &'static Backend, exited: bool, thread_init: fn() -> *const Heap) -> Heap {
        Heap {
            stats: HeapStats::new(),
            pages_direct: [const { Cell::new(&EMPTY_PAGE.0 as *const Page as *mut Page) }; DIRECT_SLOTS],
            queues: [PageQueue::EMPTY; CLASS_COUNT],
            full: [PageQueue::EMPTY; CLASS_COUNT],
            avail: [SegQueue::EMPTY, SegQueue::EMPTY, SegQueue::EMPTY],
            busy: SegQueue::EMPTY,
            chunks: ChunkHeap::new(),
            chunk_segs: SegQueue::EMPTY,
            backend: Cell::new(backend),
            is_placeholder: true,
            thread_init: Some(thread_init),
            exited,
            fresh_pages: Cell::new(0),
            remote_batches: [RemoteBatch::EMPTY; CLASS_COUNT],
            batched: Cell::new(0),
            next_purge_check: Cell::new(0),
            quarantine: [const { Cell::new(ptr::null_mut()) }; QUARANTINE_SLOTS],
            quarantine_at: Cell::new(0),
            remote_hint: RemoteHint([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    /// Sets up a heap in zeroed memory (all-zero is a valid heap apart from these pointers).
    pub(crate) fn init(&self, backend: &Backend) {
        for slot in &self.pages_direct {
            slot.set(empty_page());
        }
        self.backend.set(backend);
    }

    #[inline(always)]
    pub(crate) fn is_placeholder(&self) -> bool {
        self.is_placeholder
    }

    /// The heap that should account for a remote free by this thread: a thread that frees
    /// before it ever allocated gets its heap now, so that its frees are counted without
    /// atomics. `None` on an exiting thread's placeholder (or when out of memory).
    pub(crate) fn for_remote_free(&self) -> Option<&Heap> {
        if self.exited {
            return None;
        }
        self.real()
    }

    /// This heap, or on the placeholder the calling thread's real heap, created now. `None`
    /// when out of memory (or for a backend whose heaps are made explicitly).
    fn real(&self) -> Option<&Heap> {
        if !self.is_placeholder {
            return Some(self);
        }
        // SAFETY: thread_init returns a valid heap or null.
        unsafe { (self.thread_init?)().as_ref() }
    }

    #[inline(always)]
    pub(crate) fn backend(&self) -> &Backend {
        // SAFETY: backends outlive their heaps (they are statics or leaked).
        unsafe { &*self.backend.get() }
    }

    /// The heap's identity as the owner of pages and segments.
    #[inline(always)]
    pub(crate) fn id(&self) -> *mut Owner {
        (self as *const Heap).cast_mut().cast()
    }

    /// Points the direct slots of `class` at its queue's first page.
    fn update_direct(&self, class: usize) {
        let (lo, hi) = DIRECT_OF_CLASS[class];
        if lo == u8::MAX {
            return;
        }
        let first = self.queues[class].first.get();
        let page = if first.is_null() { empty_page() } else { first };
        if self.pages_direct[hi as usize].get() == page {
            return; // (slots are set together: all point at it already)
        }
        // Size 0 (entry 0) takes the slow path to a zero-size block in the secure build.
        let lo = if crate::mitigations::ZERO_BLOCKS { lo.max(1) } else { lo };
        for j in lo..=hi {
            self.pages_direct[j as usize].set(page);
        }
    }

    /// The current page of `class` if it has a free block ready.
    #[inline(always)]
    pub(crate) fn current_page(&self, class: usize) -> Option<&Page> {
        // SAFETY: queue members are valid pages.
        let p = unsafe { self.queues[class].first.get().as_ref()? };
        if p.free.get().is_null() && !p.take_local() {
            None
        } else {
            Some(p)
        }
    }

    /// Slow path: a page of `class` with a block on its `free` list, or `None` when out of
    /// memory. On the placeholder heap this first creates the thread's heap; the page then
    /// belongs to that heap.
    #[cold]
    pub(crate) fn find_page(&self, class: usize) -> Option<&Page> {
        if self.is_placeholder {
            return self.real()?.find_page(class);
        }
        Counters::bump(&self.stats.counters.malloc_slow, 1);
        self.flush_remote();
        // Every 32nd slow path is a purge point, so that a program that keeps allocating gives
        // back what it stopped using; the clock is read there only (a slow path that just
        // recycles the page's own frees runs every few hundred blocks).
        if self.stats.counters.malloc_slow.load(Ordering::Relaxed) % 32 == 0 {
            self.maybe_purge(true);
        }
        let q = &self.queues[class];
        loop {
            let mut p = q.first.get();
            while !p.is_null() {
                // SAFETY: queue members are valid pages of this heap.
                let page = unsafe { &*p };
                let next = page.next.get();
                self.collected(page, page.collect());
                if page.used() == 0 && p != q.first.get() && page.has_room() {
                    // An empty page behind the current one: give it back to its segment.
                    self.retire_page(page);
                    p = next;
                    continue;
                }
                // A block ready: on `free`, from a purged OS page, or carved.
                let ready = !page.free.get().is_null()
                    || page.unpurge_one()
                    || (page.capacity.get() < page.reserved.get() && {
                        self.carve(page);
                        true
                    });
                if ready {
                    if p != q.first.get() {
                        q.remove(page);
                        q.push_front(page);
                        self.update_direct(class);
                    }
                    return Some(page);
                }
                if !self.page_to_full(page) {
                    continue; // remote frees arrived meanwhile: collect them
                }
                p = next;
            }
            if self.process_hints() && !q.first.get().is_null() {
                continue;
            }
            let kind = kind_of(class);
            if self.avail[kind as usize].first().is_none() {
                if let Some(seg) = self.backend().pop_abandoned() {
                    self.reclaim(seg);
                    continue;
                }
            }
            return self.fresh_page(class, kind);
        }
    }

    /// Accounts for `n` remote frees collected from `page`.
    #[inline]
    fn collected(&self, page: &Page, n: u32) {
        if n != 0 {
            Counters::bump(&self.stats.remote_pending[page.class.load(Ordering::Relaxed) as usize], -(n as i64));
        }
    }

    /// Moves a page without room to the full list, unless remote frees arrived (then false).
    fn page_to_full(&self, page: &Page) -> bool {
        if !page.mark_full() {
            return false;
        }
        let class = page.class.load(Ordering::Relaxed) as usize;
        let was_first = ptr::eq(self.queues[class].first.get(), page);
        self.queues[class].remove(page);
        self.full[class].push_back(page);
        page.set_in_full(self.id(), true);
        if was_first {
            self.update_direct(class);
        }
        true
    }

    /// Moves a page from the full list back to the end of its queue, where the slow path finds
    /// it once the pages in front run dry. (At the front it changed the current page, and so
    /// the direct table, at every such free: in larson, where pages run nearly full and go
    /// back and forth, that was a fifth of the allocator's instructions.)
    fn page_unfull(&self, page: &Page) {
        let class = page.class.load(Ordering::Relaxed) as usize;
        page.unmark_full();
        page.set_in_full(self.id(), false);
        self.full[class].remove(page);
        self.queues[class].push_back(page);
        if ptr::eq(self.queues[class].first.get(), page) {
            self.update_direct(class);
        }
    }

    /// Starts a fresh page of `class` in one of the heap's segments (or a new one).
    fn fresh_page(&self, class: usize, kind: PageKind) -> Option<&Page> {
        self.maybe_purge(true);
        let n = self.fresh_pages.get().wrapping_add(1);
        self.fresh_pages.set(n);
        if n % FULL_SCAN_PERIOD == 0 && !self.full[class].first.get().is_null() {
            // Backstop for a lost hint: look at the full pages before growing.
            self.scan_full(class);
            if !self.queues[class].first.get().is_null() {
                return self.find_page(class);
            }
        }
        let seg = match self.avail[kind as usize].first() {
            Some(s) => s,
            None => {
                let s = self.segment_alloc(SegmentKind::from_page_kind(kind))?;
                s.owner.store(self.id(), Ordering::Release);
                self.avail[kind as usize].push_front(s);
                s
            }
        };
        let (index, page) = seg.take_page().expect("segments on the avail list have a free page");
        if seg.free_mask.get() == 0 {
            self.avail[kind as usize].remove(seg);
            self.busy.push_front(seg);
        }
        let (start, len) = seg.page_area(index);
        let fresh = seg.page_was_fresh(index);
        page.init(self.id(), class, CLASS_SIZE[class], start, len, fresh);
        self.carve(page);
        self.queues[class].push_front(page);
        self.update_direct(class);
        Counters::bump(&self.stats.counters.pages_fresh, 1);
        Counters::bump(&self.stats.class_pages_started[class], 1);
        Some(page)
    }

    /// Carves more blocks of `page` (see `Page::extend`), counting them as in use.
    fn carve(&self, page: &Page) {
        let bytes = page.extend();
        self.backend().note_in_use(bytes as i64);
    }

    /// Gives an empty page (in the class queue) back to its segment, and an empty segment
    /// back to the backend.
    #[cold]
    fn retire_page(&self, page: &Page) {
        let class = page.class.load(Ordering::Relaxed) as usize;
        let was_first = ptr::eq(self.queues[class].first.get(), page);
        self.queues[class].remove(page);
        if was_first {
            self.update_direct(class);
        }
        // SAFETY: a queued page belongs to a live segment of this heap.
        let seg = unsafe { Segment::of_page(page) };
        self.release_page(seg, page);
        Counters::bump(&self.stats.counters.pages_retired, 1);
        self.maybe_purge(false);
    }

    /// Returns page `page` (unlinked) to segment `seg`, and the segment to the backend if it
    /// became empty.
    fn release_page(&self, seg: &Segment, page: &Page) {
        let was_busy = seg.free_mask.get() == 0;
        seg.free_page(page, self.backend().purge_deadline());
        let kind = seg.kind() as usize;
        if seg.used_pages.get() == 0 {
            if was_busy {
                self.busy.remove(seg)
            } else {
                self.avail[kind].remove(seg)
            }
            self.backend().segment_free(seg);
        } else if was_busy {
            self.busy.remove(seg);
            self.avail[kind].push_front(seg);
        }
    }

    /// A local free brought a page's `used` to zero: keep it if it is the only page of its
    /// class (so alloc/free of one block does not churn pages), else retire it.
    #[inline(always)]
    pub(crate) fn page_empty(&self, page: &Page) {
        // Alone in its queue iff it has no neighbours.
        if !page.prev.get().is_null() || !page.next.get().is_null() {
            self.retire_page(page);
        }
    }

    /// Slow part of a free by the owner: the page is in the full list.
    #[cold]
    pub(crate) fn free_local_full(&self, page: &Page, b: *mut u8) {
        self.page_unfull(page);
        // SAFETY: b is a live block of this page (the caller checked ownership).
        unsafe { page.push_local(b.cast()) };
        if page.used() == 0 {
            self.page_empty(page);
        }
    }

    /// Secure build: puts freed block `p` in the quarantine and returns the oldest block there,
    /// which leaves it (null while the quarantine fills).
    pub(crate) fn quarantine_swap(&self, p: *mut u8) -> *mut u8 {
        let i = self.quarantine_at.get();
        self.quarantine_at.set(if i + 1 == QUARANTINE_SLOTS { 0 } else { i + 1 });
        self.quarantine[i].replace(p)
    }

    /// Takes every block out of the quarantine, oldest first (`alloc::flush_quarantine`
    /// releases them).
    pub(crate) fn take_quarantined(&self, mut each: impl FnMut(*mut u8)) {
        let (newer, older) = self.quarantine.split_at(self.quarantine_at.get());
        for slot in older.iter().chain(newer) {
            let b = slot.replace(ptr::null_mut());
            if !b.is_null() {
                each(b);
            }
        }
    }

    /// Collects every pending free: remote frees into pages and chunks, and full pages that
    /// got room; gives empty pages back to their segments and empty segments to the backend.
    /// With `force`, first takes over every abandoned segment, so that frees into them are
    /// collected too. (The quarantine is `alloc::flush_quarantine`'s.)
    pub(crate) fn collect(&self, force: bool) {
        if self.is_placeholder {
            return;
        }
        self.flush_remote();
        if force {
            while let Some(seg) = self.backend().pop_abandoned() {
                self.reclaim(seg);
            }
        }
        self.process_hints();
        self.collect_chunk_remote();
        for class in 0..CLASS_COUNT {
            self.scan_full(class);
            let mut p = self.queues[class].first.get();
            while !p.is_null() {
                // SAFETY: queue members are valid pages of this heap.
                let page = unsafe { &*p };
                p = page.next.get();
                self.collected(page, page.collect());
                if page.used() == 0 {
                    self.retire_page(page);
                }
            }
        }
    }

    /// Checks the heap's invariants (owner thread, no remote free in flight). Panics on a
    /// violation.
    pub fn validate(&self) {
        for class in 0..CLASS_COUNT {
            for (q, in_full) in [(&self.queues[class], false), (&self.full[class], true)] {
                let mut p = q.first.get();
                let mut prev = ptr::null_mut();
                while !p.is_null() {
                    // SAFETY: queue members are valid pages.
                    let page = unsafe { &*p };
                    assert_eq!(page.prev.get(), prev, "queue links are consistent");
                    assert_eq!(page.class.load(Ordering::Relaxed) as usize, class, "page is in its class's queue");
                    assert_eq!(page.in_full(), in_full, "IN_FULL iff in the full list");
                    assert_eq!(page.owner_heap(), self.id(), "page owned by this heap");
                    // SAFETY: a queued page belongs to a live segment.
                    let seg = unsafe { Segment::of_page(page) };
                    assert_eq!(seg.owner.load(Ordering::Relaxed), self.id(), "the heap owns the segments of its pages");
                    assert_eq!(
                        seg.used_mask() & (1 << seg.page_index(page)),
                        1 << seg.page_index(page),
                        "queued page is in use"
                    );
                    page.validate();
                    prev = p;
                    p = page.next.get();
                }
                assert_eq!(q.last.get(), prev);
            }
            let first = self.queues[class].first.get();
            let (lo, hi) = DIRECT_OF_CLASS[class];
            if lo != u8::MAX {
                let expect = if first.is_null() { empty_page() } else { first };
                assert_eq!(self.pages_direct[hi as usize].get(), expect, "direct slot points at the current page");
            }
        }
        let mut free_chunks = 0;
        let mut s = self.chunk_segs.first.get();
        while !s.is_null() {
            // SAFETY: list members are valid chunk segments of this heap.
            let seg = unsafe { &*s };
            assert_eq!(seg.kind(), SegmentKind::Chunk);
            assert_eq!(seg.pages[0].owner_heap(), self.id(), "chunk segment owned by this heap");
            let (start, end) = seg.chunk_region();
            // SAFETY: the region belongs to this heap.
            let (free, _, used) = unsafe { self.chunks.validate_region(start, end) };
            assert_eq!(used as u32, seg.pages[0].used(), "live chunk count of the segment");
            free_chunks += free;
            s = seg.next.get();
        }
        assert_eq!(self.chunks.validate_lists(), free_chunks, "the bins list exactly the free chunks");
        for (k, list) in [&self.avail[0], &self.avail[1], &self.avail[2], &self.busy].into_iter().enumerate() {
            let mut s = list.first.get();
            while !s.is_null() {
                // SAFETY: list members are valid segments.
                let seg = unsafe { &*s };
                seg.validate();
                assert_eq!(seg.owner.load(Ordering::Relaxed), self.id());
                if k < 3 {
                    assert_eq!(seg.kind() as usize, k, "avail list of its kind");
                    assert_ne!(seg.free_mask.get(), 0, "avail segments have a free page");
                } else {
                    assert_eq!(seg.free_mask.get(), 0, "busy segments have no free page");
                }
                s = seg.next.get();
            }
        }
    }
}
