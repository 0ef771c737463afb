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

use crate::backend::Backend;
use crate::block::Block;
use crate::chunk::ChunkHeap;
use crate::config::*;
use crate::list::{Linked, List};
use crate::mitigations::QUARANTINE_SLOTS;
use crate::page::{Owner, Page, EMPTY_FULL, FULL};
use crate::segment::{segment_of, Segment, SegmentKind};
use crate::size_class::{class_of, kind_of, PageKind, CLASS_COUNT, CLASS_SIZE};
use crate::stats::{Counters, HeapStats};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

/// A queue of pages (through `Page::prev/next`).
pub(crate) type PageQueue = List<Page>;
/// A list of segments (through `Segment::prev/next`).
type SegQueue = List<Segment>;

/// Which small pages `Heap::purge_inside_pages` gives back the free OS pages of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InPage {
    /// The sparse ones that have stayed sparse for the purge delay.
    Due,
    /// The sparse ones, at once, until a segment's worth was given back (the heap is about
    /// to map another).
    Pressure,
    /// All (`collect(true)`).
    All,
}

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
            self.maybe_purge();
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
        if page.thread_free.compare_exchange(ptr::null_mut(), EMPTY_FULL, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
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
        page.thread_free.fetch_and(!FULL, Ordering::Relaxed);
        page.set_in_full(self.id(), false);
        self.full[class].remove(page);
        self.queues[class].push_back(page);
        if ptr::eq(self.queues[class].first.get(), page) {
            self.update_direct(class);
        }
    }

    /// Moves full pages that received remote frees back to their queues. True if any hint
    /// was pending.
    fn process_hints(&self) -> bool {
        let mut any = false;
        for (w, hint) in self.remote_hint.0.iter().enumerate() {
            if hint.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = hint.swap(0, Ordering::Acquire);
            any = true;
            while bits != 0 {
                let class = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if class == CHUNK_HINT {
                    self.collect_chunk_remote();
                } else {
                    self.scan_full(class);
                }
            }
        }
        any
    }

    /// Moves the full pages of `class` whose `FULL` tag a remote free cleared back to the queue.
    fn scan_full(&self, class: usize) {
        let mut p = self.full[class].first.get();
        while !p.is_null() {
            // SAFETY: full-list members are valid pages of this heap.
            let page = unsafe { &*p };
            p = page.next.get();
            if page.thread_free.load(Ordering::Acquire).addr() & FULL == 0 {
                self.page_unfull(page);
            }
        }
    }

    /// A remote free of block `b` (checked and marked) of `page`, another heap's page of
    /// `class`: joins the class's batch if that batch is for the same page, else the batch is
    /// pushed and a new one starts. A batch is pushed when it holds `REMOTE_BATCH_MAX` blocks,
    /// and all are in this heap's slow paths, `collect` and `abandon`. One push and one count
    /// per batch instead of per block (snmalloc batches remote frees too). One batch per class,
    /// because a program frees blocks of mixed sizes in turn: one batch for all of them was
    /// pushed at almost every free.
    ///
    /// # Safety
    /// `b` is a live block of `page`, freed by the program; the caller checked it.
    pub(crate) unsafe fn batch_remote(&self, page: &Page, class: usize, b: *mut Block) {
        let rb = &self.remote_batches[class];
        if ptr::eq(rb.page.get(), page) {
            // SAFETY: the block is ours until the batch is pushed.
            unsafe { page.set_next(b, rb.head.get()) };
            rb.head.set(b);
            rb.count.set(rb.count.get() + 1);
            if rb.count.get() >= REMOTE_BATCH_MAX {
                self.push_batch(class);
            }
        } else {
            self.push_batch(class);
            // SAFETY: as above.
            unsafe { page.set_next(b, ptr::null_mut()) };
            rb.page.set(page);
            rb.head.set(b);
            rb.tail.set(b);
            rb.count.set(1);
            self.batched.set(self.batched.get() | 1 << class);
        }
    }

    /// Pushes every batch of remote frees.
    #[inline]
    pub(crate) fn flush_remote(&self) {
        let mut m = self.batched.get();
        while m != 0 {
            let class = m.trailing_zeros() as usize;
            m &= m - 1;
            self.push_batch(class);
        }
    }

    /// Pushes the batch of `class`, if it holds blocks.
    fn push_batch(&self, class: usize) {
        let rb = &self.remote_batches[class];
        let n = rb.count.get();
        if n == 0 {
            return;
        }
        // SAFETY: the batch's page stays a page of its class while the batch waits (its blocks
        // are counted in `used`); head..tail are `n` blocks of it, linked, freed and owned by
        // this batch.
        unsafe { Self::free_remote(&*rb.page.get(), class, rb.head.get(), rb.tail.get(), n) };
        rb.page.set(ptr::null());
        rb.count.set(0);
        self.batched.set(self.batched.get() & !(1 << class));
    }

    /// Remote frees of the `n` blocks `head..=tail` of `page` (of `class`): pushes and counts
    /// them, and if that cleared the page's `FULL` tag, tells its owner.
    ///
    /// # Safety
    /// As for `Page::free_remote_list`.
    pub(crate) unsafe fn free_remote(page: &Page, class: usize, head: *mut Block, tail: *mut Block, n: u32) {
        // Read before the push: afterwards the owner may recycle the page (and the segment).
        let owner = page.owner_heap();
        // (Only an abandoned page's segment is read: news for the purger, see `purger`.)
        // SAFETY: the page's segment is mapped while the batch's blocks are in use.
        let abandoned = owner.is_null().then(|| Backend::of(unsafe { Segment::of_page(page) }));
        // SAFETY: forwarded.
        let tag = unsafe { page.free_remote_list(head, tail, n) };
        if let Some(backend) = abandoned {
            backend.purger.abandoned_activity.fetch_add(1, Ordering::Relaxed);
        } else if tag == FULL {
            // SAFETY: heaps are never unmapped; a stale owner only gets a harmless hint.
            unsafe { (*owner.cast::<Heap>()).remote_hint(class) };
        }
    }

    /// Called by a remote free that cleared the `FULL` tag of one of this heap's pages.
    pub(crate) fn remote_hint(&self, class: usize) {
        self.remote_hint.0[class / 64].fetch_or(1 << (class % 64), Ordering::Release);
    }

    /// Starts a fresh page of `class` in one of the heap's segments (or a new one).
    fn fresh_page(&self, class: usize, kind: PageKind) -> Option<&Page> {
        self.maybe_purge();
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
        self.maybe_purge();
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

    /// Takes over a segment an exited thread abandoned: its pages join this heap's queues.
    fn reclaim(&self, seg: &Segment) {
        seg.owner.store(self.id(), Ordering::Release);
        if seg.kind() == SegmentKind::Chunk {
            self.reclaim_chunk_segment(seg);
            return;
        }
        let mut used = seg.used_mask();
        let mut reclaimed = 0;
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            let page = &seg.pages[i];
            self.collected(page, page.collect_remote());
            page.set_in_full(self.id(), false);
            if page.used() == 0 {
                seg.free_page(page, self.backend().purge_deadline());
            } else {
                let class = page.class.load(Ordering::Relaxed) as usize;
                self.queues[class].push_back(page);
                self.update_direct(class);
                reclaimed += 1;
            }
        }
        Counters::bump(&self.stats.counters.segments_reclaimed, 1);
        Counters::bump(&self.stats.counters.pages_reclaimed, reclaimed);
        if seg.used_pages.get() == 0 {
            self.backend().segment_free(seg);
        } else if seg.free_mask.get() != 0 {
            self.avail[seg.kind() as usize].push_front(seg);
        } else {
            self.busy.push_front(seg);
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

    /// The owner is exiting: give every segment to the backend (empty ones are freed, the rest
    /// abandoned for other threads to reclaim) and return the heap to the pool.
    ///
    /// # Safety
    /// The heap is not used afterwards: it may be handed to another thread at once. Its
    /// quarantine was flushed (`alloc::flush_quarantine`).
    pub(crate) unsafe fn abandon(&self) {
        if self.is_placeholder {
            return;
        }
        debug_assert!(self.quarantine.iter().all(|b| b.get().is_null()), "the quarantine was flushed");
        self.flush_remote();
        let mut pages = 0;
        for class in 0..CLASS_COUNT {
            for q in [&self.queues[class], &self.full[class]] {
                let mut p = q.first.get();
                while !p.is_null() {
                    // SAFETY: queue members are valid pages of this heap.
                    let page = unsafe { &*p };
                    p = page.next.get();
                    q.remove(page);
                    page.thread_free.fetch_and(!FULL, Ordering::Relaxed);
                    page.owner.store(ptr::null_mut(), Ordering::Relaxed);
                    self.collected(page, page.collect_remote());
                    if page.used() == 0 {
                        // SAFETY: a queued page belongs to a live segment of this heap.
                        let seg = unsafe { Segment::of_page(page) };
                        self.release_page(seg, page);
                    } else {
                        pages += 1;
                    }
                }
            }
            self.update_direct(class);
        }
        self.collect_chunk_remote();
        while let Some(seg) = self.chunk_segs.first() {
            self.chunk_segs.remove(seg);
            seg.pages[0].owner.store(ptr::null_mut(), Ordering::Relaxed);
            if seg.pages[0].used() == 0 {
                self.backend().segment_free(seg);
            } else {
                self.backend().abandon(seg);
            }
        }
        self.chunks.clear();
        let lists = [&self.avail[0], &self.avail[1], &self.avail[2], &self.busy];
        for list in lists {
            while let Some(seg) = list.first() {
                list.remove(seg);
                self.backend().abandon(seg);
            }
        }
        Counters::bump(&self.stats.counters.pages_abandoned, pages);
        self.remote_hint.0.iter().for_each(|h| h.store(0, Ordering::Relaxed));
        self.backend().pool_heap(&self.stats);
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

    /// Purges what is due, at most a few times per purge delay (called from slow paths).
    fn maybe_purge(&self) {
        let now = crate::os::now_ms();
        if now < self.next_purge_check.get() {
            return;
        }
        // A quarter of the delay, but at least every 100 ms: a later, shorter delay (or a new
        // owner of this heap) must not wait for a check scheduled under a long one.
        self.next_purge_check.set(now + (self.backend().purge_delay_ms() / 4).clamp(1, 100));
        self.purge(now, false);
        // The process is busy: the purger leaves abandoned segments to the threads that
        // reclaim them; and it starts now if there is something for it to purge later.
        self.backend().purger.last_active.store(now, Ordering::Relaxed);
        self.backend().poke_purger(false);
    }

    /// Decommits free memory whose purge delay has passed (all of it with `force`): free
    /// pages of this heap's segments, the free runs inside its chunk segments, and the
    /// backend's cached segments.
    pub fn purge(&self, now: u64, force: bool) {
        let mut bytes = 0;
        for list in [&self.avail[0], &self.avail[1], &self.avail[2], &self.busy] {
            let mut s = list.first.get();
            while !s.is_null() {
                // SAFETY: list members are valid segments of this heap.
                let seg = unsafe { &*s };
                bytes += seg.purge_pages(now, force);
                s = seg.next.get();
            }
        }
        bytes += self.purge_inside_pages(now, if force { InPage::All } else { InPage::Due });
        let mut s = self.chunk_segs.first.get();
        while !s.is_null() {
            // SAFETY: list members are valid chunk segments of this heap.
            let seg = unsafe { &*s };
            s = seg.next.get();
            let due = seg.purge_mask.get() != 0 && now >= seg.purge_at.get();
            if !(force || due) {
                continue;
            }
            let (start, end) = seg.chunk_region();
            seg.purge_mask.set(0);
            seg.purge_at.set(0);
            if seg.pages[0].used() == 0 && !(seg.prev.get().is_null() && seg.next.get().is_null()) {
                // An empty segment that is not the heap's last: back to the backend whole.
                // SAFETY: an empty region is one free chunk at its start.
                unsafe { self.chunks.remove_region(start) };
                self.chunk_segs.remove(seg);
                self.backend().segment_free(seg);
                continue;
            }
            let source = self.backend().source;
            // SAFETY: the region is this heap's; free chunks hold nothing live.
            bytes += unsafe {
                self.chunks.purge_free(start, end, |p, len| source.decommit(core::ptr::NonNull::new_unchecked(p), len))
            };
        }
        Counters::bump(&self.stats.counters.bytes_purged, bytes as i64);
        self.backend().purge(now, force);
    }

    /// A segment of `kind` from the backend. When it is a new mapping (the footprint grows),
    /// the heap first gives back the free OS pages of its sparse small pages, without waiting
    /// for the purge delay, until as much as the new segment was given back (so no one call
    /// stalls long). A program that frees most of its small blocks in a scattered pattern and
    /// then allocates other sizes (bench/frag.sh) otherwise reaches its peak before any delay
    /// passes, holding both.
    fn segment_alloc(&self, kind: SegmentKind) -> Option<&Segment> {
        let (seg, mapped) = self.backend().segment_alloc(kind)?;
        if mapped {
            let bytes = self.purge_inside_pages(crate::os::now_ms(), InPage::Pressure);
            Counters::bump(&self.stats.counters.bytes_purged, bytes as i64);
        }
        Some(seg)
    }

    /// Gives back the free OS pages inside small pages that stay in use (see "giving back the
    /// free OS pages of a page in use" in `page`). A page is *sparse* when it is not the
    /// current page of its class (that one is being allocated from), at most half of its
    /// carved blocks are in use, and at least an eighth of them were freed since its last such
    /// purge. `when` says which pages are purged. Returns the bytes given back.
    fn purge_inside_pages(&self, now: u64, when: InPage) -> usize {
        let force = when == InPage::All;
        let delay = self.backend().purge_delay_ms();
        let source = self.backend().source;
        let mut decommit = |p: *mut u8, len: usize| {
            // SAFETY: the page's own free OS pages (see `Page::purge_free_os_pages`).
            unsafe { source.decommit(core::ptr::NonNull::new_unchecked(p), len) }
        };
        let mut bytes = 0;
        for (class, q) in self.queues.iter().enumerate() {
            if kind_of(class) != PageKind::Small {
                break; // classes ascend: the rest are medium and large
            }
            let mut p = q.first.get();
            if !force && !p.is_null() {
                // SAFETY: queue members are valid pages of this heap.
                p = unsafe { (*p).next.get() };
            }
            while !p.is_null() {
                // SAFETY: queue members are valid pages of this heap.
                let page = unsafe { &*p };
                p = page.next.get();
                let (used, cap) = (page.used(), page.capacity.get());
                let sparse = used * 2 <= cap && used + cap / 8 <= page.purge_used.get().min(cap);
                if !force && !sparse {
                    page.sparse_since.set(0);
                    continue;
                }
                if when == InPage::Due {
                    if page.sparse_since.get() == 0 {
                        page.sparse_since.set(now.max(1));
                        continue;
                    }
                    if now < page.sparse_since.get().saturating_add(delay) {
                        continue;
                    }
                }
                self.collected(page, page.collect_remote());
                bytes += page.purge_free_os_pages(&mut decommit);
                page.purge_used.set(page.used());
                page.sparse_since.set(0);
                if when == InPage::Pressure && bytes >= SEGMENT_SIZE {
                    return bytes;
                }
            }
        }
        bytes
    }

    /// (free chunks, their bytes, the largest) of this heap's chunk heap.
    pub(crate) fn chunk_figures(&self) -> (usize, usize, usize) {
        self.chunks.free_figures()
    }

    // ---- the chunk heap ----

    /// Allocates `size` bytes (CLASS_MAX < size <= CHUNK_MAX) from the chunk heap.
    #[inline(never)]
    pub(crate) fn chunk_alloc(&self, size: usize) -> Option<*mut u8> {
        if self.is_placeholder {
            return self.real()?.chunk_alloc(size);
        }
        // Chunks other threads freed go back into the bins first, so they are reused before
        // the heap grows.
        let (w, bit) = (CHUNK_HINT / 64, 1u64 << (CHUNK_HINT % 64));
        if self.remote_hint.0[w].load(Ordering::Relaxed) & bit != 0 {
            self.remote_hint.0[w].fetch_and(!bit, Ordering::Acquire);
            self.collect_chunk_remote();
        }
        loop {
            if let Some(p) = self.chunks.alloc(size) {
                // SAFETY: p is a live chunk of one of this heap's chunk segments.
                let seg = unsafe { &*segment_of(p) };
                seg.pages[0].add_used(1);
                // SAFETY: p is live.
                Self::add_live(seg, unsafe { ChunkHeap::usable_size(p) } as isize);
                return Some(p);
            }
            if self.collect_chunk_remote() > 0 {
                continue;
            }
            if let Some(seg) = self.backend().pop_abandoned() {
                self.reclaim(seg);
                continue;
            }
            self.new_chunk_segment()?;
        }
    }

    fn add_live(seg: &Segment, delta: isize) {
        let v = seg.live_bytes.load(Ordering::Relaxed);
        seg.live_bytes.store(v.wrapping_add_signed(delta), Ordering::Relaxed);
        Backend::of(seg).note_in_use(delta as i64);
    }

    /// Takes a fresh chunk segment: its region becomes one free chunk.
    fn new_chunk_segment(&self) -> Option<()> {
        let seg = self.segment_alloc(SegmentKind::Chunk)?;
        seg.owner.store(self.id(), Ordering::Release);
        seg.take_page();
        seg.page_was_fresh(0); // the region is in use from now on: dirty when it is freed
        let page = &seg.pages[0];
        page.thread_free.store(ptr::null_mut(), Ordering::Relaxed);
        page.key.set(crate::mitigations::page_key(crate::mitigations::page_salt(page as *const Page as usize)));
        // Tagged: every free of a chunk takes the slow path, which knows chunks.
        page.set_in_full(self.id(), true);
        let (start, end) = seg.chunk_region();
        // SAFETY: the region is fresh memory of a segment this heap now owns.
        unsafe { self.chunks.add_region(start, end) };
        self.chunk_segs.push_front(seg);
        Some(())
    }

    /// Frees chunk `p` of segment `seg`, owned by this heap. An empty segment goes back to
    /// the backend when its purge delay has passed (see `purge`), unless it is the heap's
    /// only one.
    ///
    /// # Safety
    /// `p` is a live chunk of `seg`, which this heap owns.
    pub(crate) unsafe fn chunk_free(&self, seg: &Segment, p: *mut u8) {
        // SAFETY: forwarded.
        if unsafe { self.chunk_release(seg, p) } {
            self.maybe_purge();
        }
    }

    /// `chunk_free` without the purge it may call for: returns whether a purge is worth
    /// trying. A walk over `chunk_segs` must use this, as a purge may give back (unmap, or
    /// relink into the cache) the very segment the walk goes to next.
    ///
    /// # Safety
    /// As for `chunk_free`.
    unsafe fn chunk_release(&self, seg: &Segment, p: *mut u8) -> bool {
        let (start, end) = seg.chunk_region();
        // SAFETY: the region is mapped; only this heap changes its headers.
        if let Some(what) = unsafe { ChunkHeap::check_live(p, start, end) } {
            if what == "a freed block" {
                crate::misuse::report("double free", p);
            }
            crate::misuse::report_op("free", what, p);
        }
        // SAFETY: per the contract.
        let usable = unsafe { ChunkHeap::usable_size(p) };
        // SAFETY: per the contract.
        let (_, size) = unsafe { self.chunks.free(p) };
        Self::add_live(seg, -(usable as isize));
        let page = &seg.pages[0];
        page.add_used(-1);
        if size >= CHUNK_PURGE_MIN {
            // The free run (or the whole region, once the segment is empty) is worth giving
            // back if it stays free for the purge delay. An empty segment stays with the heap
            // until then: a program that frees and allocates large blocks in turn reuses it
            // without a trip through the backend.
            seg.purge_mask.set(1);
            if seg.purge_at.get() == 0 {
                seg.purge_at.set(self.backend().purge_deadline());
            }
            return true;
        }
        false
    }

    /// Resizes live chunk `p` of `seg` in place. False if it cannot.
    ///
    /// # Safety
    /// As for `chunk_free`.
    pub(crate) unsafe fn chunk_resize(&self, seg: &Segment, p: *mut u8, new_size: usize) -> bool {
        // SAFETY: per the contract.
        unsafe {
            let before = ChunkHeap::usable_size(p);
            if !self.chunks.resize_in_place(p, new_size) {
                return false;
            }
            Self::add_live(seg, ChunkHeap::usable_size(p) as isize - before as isize);
        }
        true
    }

    /// Frees the chunks other threads freed into this heap's chunk segments. Returns how many.
    fn collect_chunk_remote(&self) -> usize {
        let (mut n, mut purge) = (0, false);
        let mut s = self.chunk_segs.first.get();
        while !s.is_null() {
            // SAFETY: list members are valid chunk segments of this heap; nothing in the walk
            // unlinks one (the purge waits until it is over).
            let seg = unsafe { &*s };
            let (k, p) = self.collect_chunks_of(seg);
            (n, purge) = (n + k, purge | p);
            s = seg.next.get();
        }
        if purge {
            self.maybe_purge();
        }
        n
    }

    /// Frees the chunks other threads freed into `seg`. Returns how many, and whether a purge
    /// is worth trying (the caller runs it once it no longer walks `chunk_segs`).
    fn collect_chunks_of(&self, seg: &Segment) -> (usize, bool) {
        let page = &seg.pages[0];
        if page.thread_free.load(Ordering::Relaxed).is_null() {
            return (0, false);
        }
        let mut b = page.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        let (mut n, mut purge) = (0, false);
        let (start, end) = seg.chunk_region();
        while !b.is_null() {
            // SAFETY: remotely freed chunks of seg, each checked (and its canary put back, as
            // `ChunkHeap::mark_remote_free` left it) before its link is read; the link is read
            // before the chunk is freed.
            unsafe {
                if !ChunkHeap::unmark_remote_free(b.cast(), start, end) {
                    crate::misuse::report("chunk free list corrupted", b as *const u8);
                }
                let next = crate::mitigations::decode_link(page.key.get(), b, (*b).next);
                purge |= self.chunk_release(seg, b.cast());
                b = next;
            }
            n += 1;
        }
        (n, purge)
    }

    /// Takes over an abandoned chunk segment: its free chunks join this heap's bins.
    fn reclaim_chunk_segment(&self, seg: &Segment) {
        seg.pages[0].set_in_full(self.id(), true);
        let (start, end) = seg.chunk_region();
        // SAFETY: an abandoned region no heap lists any more.
        unsafe { self.chunks.adopt_region(start, end) };
        self.chunk_segs.push_front(seg);
        Counters::bump(&self.stats.counters.segments_reclaimed, 1);
        // Frees that arrived while it was abandoned (an emptied segment goes back at the next
        // due purge).
        self.collect_chunks_of(seg);
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

/// The heap pool: heaps are carved from the backend's metadata memory and never freed; a
/// heap whose thread exited waits in the pool for the next thread. (The backend keeps the
/// lists; it knows a heap by its statistics, which lead it.)
impl Backend {
    /// A heap for a new owner: a pooled one or a fresh one.
    pub fn heap_alloc(&'static self) -> Option<&'static Heap> {
        if let Some(stats) = self.pooled_heap() {
            // SAFETY: the pool holds heaps by their first field; a pooled heap is unowned.
            let heap = unsafe { &*stats.cast::<Heap>() };
            Counters::bump(&heap.stats.counters.heaps_reused, 1);
            return Some(heap);
        }
        let mem = self.new_heap_memory(core::mem::size_of::<Heap>().next_multiple_of(64))?;
        // SAFETY: zeroed memory of the heap's size is a valid heap once `init` sets its
        // pointers.
        let heap: &'static Heap = unsafe { &*mem.as_ptr().cast::<Heap>() };
        heap.init(self);
        self.register_heap(&heap.stats);
        Counters::bump(&heap.stats.counters.heaps_created, 1);
        Some(heap)
    }
}

/// The background purger's round over abandoned segments (`Backend::new`'s `reclaim`): a
/// pooled heap takes them over, which collects their remote frees and gives back what is
/// empty, then purges and abandons them again. Returns the bytes it purged.
pub(crate) fn reclaim_abandoned(backend: &'static Backend, now: u64) -> i64 {
    let Some(heap) = backend.heap_alloc() else { return 0 };
    let before = heap.stats.counters.bytes_purged.load(Ordering::Relaxed);
    heap.collect(true);
    heap.purge(now, false);
    let bytes = heap.stats.counters.bytes_purged.load(Ordering::Relaxed) - before;
    // SAFETY: the borrowed heap is not used again; it freed nothing, so its quarantine is
    // empty.
    unsafe { heap.abandon() };
    bytes
}
