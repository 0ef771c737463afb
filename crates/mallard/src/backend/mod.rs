//! The backend: what all heaps of one allocator share. It owns the page source, the cache of
//! empty segments, the list of segments abandoned by exited threads, the registry of every
//! mapped segment (for statistics) and the pool of thread heaps. Huge blocks are in `huge`.
//!
//! Everything here is a rare path (a segment or heap changes hands), so one spin lock guards
//! the lists. The process has one backend behind `Mallard`; tests make their own over a
//! simulated page source.

mod huge;
mod purger;
mod zero;

use crate::config::*;
use crate::lock::SpinLock;
use crate::os::PageSource;
use crate::segment::{Segment, SegmentKind, Shared};
use crate::size_class::CLASS_COUNT;
use crate::stats::{Counters, HeapStats, Stats};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

pub struct Backend {
    state: SpinLock<State>,
    /// Number of segments on the abandoned list (read without the lock).
    abandoned_count: AtomicUsize,
    /// Counters for events outside any heap (any thread, `fetch_add`).
    pub(crate) counters: Counters,
    /// Remote frees by threads without a heap, per class (see `Heap::remote_pending`).
    pub(crate) remote_pending: [AtomicI64; CLASS_COUNT],
    /// What its segments share (`segment::Shared`): the page source, bytes in use.
    pub(crate) shared: Shared,
    /// Purge delay in ms (see `config::PURGE_DELAY_MS`).
    purge_delay_ms: AtomicU64,
    /// Earliest time a cached segment or mapping is due to be purged (ms; MAX = none).
    next_purge: AtomicU64,
    /// The purger's round over abandoned segments, which runs a heap (`heap::reclaim_abandoned`,
    /// given by `global`; `None`: the purger leaves abandoned segments to the threads).
    pub(crate) reclaim: Option<fn(&'static Backend, u64) -> i64>,
    /// Zero-size blocks (secure build, `zero`).
    pub(crate) zero: zero::ZeroSlots,
    /// The background purger (`purger`).
    pub(crate) purger: purger::Purger,
}

struct State {
    cache: *mut Segment,
    cache_len: usize,
    abandoned: *mut Segment,
    registry: *mut Segment,
    /// Every heap ever made (they are never freed), and the ones free for reuse, by their
    /// statistics (`HeapStats`).
    heaps: *mut HeapStats,
    free_heaps: *mut HeapStats,
    meta_cur: *mut u8,
    meta_end: *mut u8,
    /// Freed huge mappings: (header, mapping size); size 0 = empty slot.
    huge_cache: [(*mut Segment, usize); HUGE_CACHE_SLOTS],
    huge_cache_bytes: usize,
}

// SAFETY: the raw pointers in State are only used under the lock.
unsafe impl Send for State {}

impl Backend {
    /// A backend over `source` whose heaps are made with `heap_alloc` (for tests and
    /// simulations), leaked so that it lives as long as its memory.
    pub fn leaked(source: &'static dyn PageSource) -> &'static Backend {
        std::boxed::Box::leak(std::boxed::Box::new(Backend::new(source, None)))
    }

    pub(crate) const fn new(
        source: &'static dyn PageSource,
        reclaim: Option<fn(&'static Backend, u64) -> i64>,
    ) -> Self {
        Backend {
            state: SpinLock::new(State {
                cache: ptr::null_mut(),
                cache_len: 0,
                abandoned: ptr::null_mut(),
                registry: ptr::null_mut(),
                heaps: ptr::null_mut(),
                free_heaps: ptr::null_mut(),
                meta_cur: ptr::null_mut(),
                meta_end: ptr::null_mut(),
                huge_cache: [(ptr::null_mut(), 0); HUGE_CACHE_SLOTS],
                huge_cache_bytes: 0,
            }),
            abandoned_count: AtomicUsize::new(0),
            counters: Counters::new(),
            remote_pending: [const { AtomicI64::new(0) }; CLASS_COUNT],
            shared: Shared::new(source),
            purge_delay_ms: AtomicU64::new(PURGE_DELAY_MS),
            next_purge: AtomicU64::new(u64::MAX),
            reclaim,
            purger: purger::Purger::new(),
            zero: zero::ZeroSlots::new(),
        }
    }

    /// The page source the backend's memory comes from.
    pub(crate) fn source(&self) -> &'static dyn PageSource {
        self.shared.source
    }

    pub(crate) fn count(&self, c: fn(&Counters) -> &core::sync::atomic::AtomicI64, n: i64) {
        c(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    // ---- segments ----

    /// A segment of `kind` (not huge), from the cache or the OS, and whether it is a new
    /// mapping (the process's footprint grows).
    pub(crate) fn segment_alloc(&self, kind: SegmentKind) -> Option<(&Segment, bool)> {
        let cached = {
            let mut st = self.state.lock();
            let s = st.cache;
            if !s.is_null() {
                // SAFETY: cache entries are valid segment headers owned by the cache.
                st.cache = unsafe { (*s).next.get() };
                st.cache_len -= 1;
            }
            s
        };
        if !cached.is_null() {
            // SAFETY: we took it off the cache; nobody else refers to it.
            let seg = unsafe { &*cached };
            let zero = seg.dirty_mask.get() == 0; // purged while cached
            seg.init(kind, self.id(), &self.shared, seg.addr(), SEGMENT_SIZE, zero);
            self.guard_header(seg);
            self.count(|c| &c.segments_reused, 1);
            return Some((seg, false));
        }
        let base = self.source().reserve(SEGMENT_SIZE, SEGMENT_SIZE)?;
        // SAFETY: fresh zero-filled memory is a valid (empty) segment header.
        let seg = unsafe { &*(base.as_ptr() as *const Segment) };
        seg.init(kind, self.id(), &self.shared, base.as_ptr(), SEGMENT_SIZE, true);
        self.guard_header(seg);
        self.register(seg);
        self.count(|c| &c.segments_mapped, 1);
        Some((seg, true))
    }

    /// The secure build's guard page after the header (`mitigations::HEADER_GUARD`), once per
    /// mapping: a cached segment may have started as a huge block's, which has none.
    pub(crate) fn guard_header(&self, seg: &Segment) {
        if crate::mitigations::HEADER_GUARD && !seg.guarded.get() {
            let page = self.source().page_size();
            if let Some(guard) = crate::segment::header_guard(seg.addr(), page) {
                // SAFETY: the guard page lies in the header slice, past the header; no block
                // is ever placed in that slice.
                unsafe { self.source().guard(NonNull::new_unchecked(guard), page) };
            }
            seg.guarded.set(true);
        }
    }

    /// Gives back an empty segment (or a huge one): to the cache if it is a plain 4 MiB
    /// mapping and the cache has room, else to the OS. A pinned segment stays as it is until
    /// the last pin goes, whose holder then frees it.
    pub(crate) fn segment_free(&self, seg: &Segment) {
        // (Null before the lock: the purger pins only owned segments, under the lock.)
        seg.owner.store(ptr::null_mut(), Ordering::Relaxed);
        let plain =
            seg.map_size.load(Ordering::Relaxed) == SEGMENT_SIZE && seg.base.load(Ordering::Relaxed) == seg.addr();
        let mut st = self.state.lock();
        if seg.pins.get() != 0 {
            seg.free_deferred.set(true);
            return;
        }
        if plain && st.cache_len < self.segment_cache_limit() {
            seg.set_kind(SegmentKind::Cached);
            self.schedule_purge(seg);
            seg.next.set(st.cache);
            st.cache = seg.addr().cast();
            st.cache_len += 1;
            return;
        }
        drop(st);
        self.release_segment(seg);
    }

    /// How many empty segments the cache holds (committed, until their purge is due): at least
    /// `SEGMENT_CACHE_KEEP`, and up to half the peak of the memory in use, so a program that
    /// drops and rebuilds a big structure reuses its segments, while the cache never adds
    /// more than half the program's own peak to its RSS.
    fn segment_cache_limit(&self) -> usize {
        let half_peak = self.shared.in_use().1.max(0) as usize / 2 / SEGMENT_SIZE;
        half_peak.clamp(SEGMENT_CACHE_KEEP, SEGMENT_CACHE_MAX)
    }

    /// Unmaps an empty segment that no list holds.
    fn release_segment(&self, seg: &Segment) {
        self.unregister(seg);
        let (base, size) = (seg.base.load(Ordering::Relaxed), seg.map_size.load(Ordering::Relaxed));
        // SAFETY: the segment is empty and unlinked; base/size are its whole mapping.
        unsafe { self.source().release(NonNull::new_unchecked(base), size) };
        self.count(|c| &c.segments_released, 1);
    }

    pub(crate) fn register(&self, seg: &Segment) {
        crate::segment_map::insert(seg.addr());
        let mut st = self.state.lock();
        seg.reg_prev.set(ptr::null_mut());
        seg.reg_next.set(st.registry);
        if !st.registry.is_null() {
            // SAFETY: registry entries are valid headers; links change only under the lock.
            unsafe { (*st.registry).reg_prev.set(seg.addr().cast()) };
        }
        st.registry = seg.addr().cast();
    }

    pub(crate) fn unregister(&self, seg: &Segment) {
        crate::segment_map::remove(seg.addr());
        let mut st = self.state.lock();
        let (prev, next) = (seg.reg_prev.get(), seg.reg_next.get());
        // SAFETY: as in `register`.
        unsafe {
            if prev.is_null() {
                st.registry = next;
            } else {
                (*prev).reg_next.set(next);
            }
            if !next.is_null() {
                (*next).reg_prev.set(prev);
            }
        }
    }

    /// Puts a segment whose owner exited on the abandoned list.
    pub(crate) fn abandon(&self, seg: &Segment) {
        seg.owner.store(ptr::null_mut(), Ordering::Release);
        let mut st = self.state.lock();
        seg.next.set(st.abandoned);
        st.abandoned = seg.addr().cast();
        self.abandoned_count.fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.purger.abandoned_activity.fetch_add(1, Ordering::Relaxed);
        self.count(|c| &c.segments_abandoned, 1);
    }

    /// How many segments are abandoned (read without the lock).
    pub(crate) fn abandoned_len(&self) -> usize {
        self.abandoned_count.load(Ordering::Relaxed)
    }

    /// When the next cached segment or mapping is due to be purged (ms; `u64::MAX`: none).
    pub(crate) fn next_purge(&self) -> u64 {
        self.next_purge.load(Ordering::Relaxed)
    }

    /// Takes an abandoned segment, if any.
    pub(crate) fn pop_abandoned(&self) -> Option<&Segment> {
        if self.abandoned_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut st = self.state.lock();
        let s = st.abandoned;
        if s.is_null() {
            return None;
        }
        // SAFETY: abandoned entries are valid segment headers owned by the list.
        let seg = unsafe { &*s };
        st.abandoned = seg.next.get();
        self.abandoned_count.fetch_sub(1, Ordering::Relaxed);
        Some(seg)
    }

    // ---- heaps ----

    // (The heap pool's `heap_alloc` is in `heap`, which knows what a heap is.)

    /// A heap from the pool, by its statistics (which lead it), if the pool has one.
    pub(crate) fn pooled_heap(&self) -> Option<*mut HeapStats> {
        let mut st = self.state.lock();
        let h = st.free_heaps;
        // SAFETY: pooled heaps are valid and unowned.
        st.free_heaps = unsafe { h.as_ref() }?.pool_next.get();
        Some(h)
    }

    /// `size` bytes of zeroed metadata memory for a new heap. (A new metadata chunk is mapped
    /// with the lock dropped: no system call runs under it.)
    pub(crate) fn new_heap_memory(&self, size: usize) -> Option<NonNull<u8>> {
        debug_assert!(size <= META_CHUNK_SIZE);
        let mut fresh: Option<NonNull<u8>> = None;
        loop {
            let mut st = self.state.lock();
            if (st.meta_end as usize) - (st.meta_cur as usize) < size {
                if let Some(chunk) = fresh.take() {
                    st.meta_cur = chunk.as_ptr();
                    // SAFETY: the chunk is META_CHUNK_SIZE bytes.
                    st.meta_end = unsafe { chunk.as_ptr().add(META_CHUNK_SIZE) };
                }
            }
            if (st.meta_end as usize) - (st.meta_cur as usize) >= size {
                let mem = st.meta_cur;
                // SAFETY: `size` bytes at meta_cur are unused, zeroed metadata memory.
                st.meta_cur = unsafe { mem.add(size) };
                drop(st);
                if let Some(unused) = fresh {
                    // SAFETY: a whole chunk of ours that another thread's refill made unneeded.
                    unsafe { self.source().release(unused, META_CHUNK_SIZE) };
                }
                return NonNull::new(mem);
            }
            drop(st);
            fresh = Some(self.source().reserve(META_CHUNK_SIZE, MIN_PAGE_SIZE)?);
        }
    }

    /// Counts a new heap's statistics in `stats` from now on.
    ///
    /// # Safety
    /// `heap` points at a heap's statistics with the whole heap's provenance (the pool hands
    /// the pointer back as the heap), and the heap is never freed.
    pub(crate) unsafe fn register_heap(&self, heap: *mut HeapStats) {
        let mut st = self.state.lock();
        // SAFETY: per the contract.
        unsafe { (*heap).all_next.set(st.heaps) };
        st.heaps = heap;
    }

    /// Returns a heap (already emptied by `Heap::abandon`) to the pool.
    ///
    /// # Safety
    /// As for `register_heap`; the heap is unowned from now on.
    pub(crate) unsafe fn pool_heap(&self, heap: *mut HeapStats) {
        let mut st = self.state.lock();
        // SAFETY: per the contract.
        unsafe { (*heap).pool_next.set(st.free_heaps) };
        st.free_heaps = heap;
    }

    /// Keeps a freed huge mapping (header at its base, bigger than a segment) for reuse.
    /// False if the cache has no room for it; the caller then releases it.
    pub(crate) fn cache_huge(&self, seg: &Segment) -> bool {
        let size = seg.map_size.load(Ordering::Relaxed);
        let mut st = self.state.lock();
        if st.huge_cache_bytes + size > HUGE_CACHE_BYTES {
            return false;
        }
        let Some(slot) = st.huge_cache.iter_mut().find(|s| s.1 == 0) else { return false };
        *slot = (seg.addr().cast(), size);
        st.huge_cache_bytes += size;
        seg.set_kind(SegmentKind::Cached);
        self.schedule_purge(seg);
        true
    }

    /// The purge delay in milliseconds.
    pub fn purge_delay_ms(&self) -> u64 {
        self.purge_delay_ms.load(Ordering::Relaxed)
    }

    /// Sets the purge delay (0 purges free memory at the first chance).
    pub fn set_purge_delay_ms(&self, ms: u64) {
        self.purge_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// When memory freed now is due to be purged.
    pub(crate) fn purge_deadline(&self) -> u64 {
        // (Saturating: a delay of `u64::MAX` means never.)
        crate::os::now_ms().saturating_add(self.purge_delay_ms())
    }

    /// A segment entering a cache: due for purging after the delay (if it is dirty).
    fn schedule_purge(&self, seg: &Segment) {
        if seg.dirty_mask.get() != 0 {
            let at = self.purge_deadline();
            seg.purge_at.set(at);
            self.next_purge.fetch_min(at, Ordering::Relaxed);
        }
    }

    /// Decommits cached segments and huge mappings whose delay has passed (all with `force`).
    /// Cached segments beyond `SEGMENT_CACHE_KEEP` are unmapped instead.
    ///
    /// No system call runs under the lock (threads waiting for it would spin behind it): the
    /// due entries leave the caches under the lock, linked through `next` (no allocation), and
    /// are decommitted or unmapped after it is dropped; the decommitted ones then go back. A
    /// thread that finds a cache empty meanwhile maps afresh.
    pub fn purge(&self, now: u64, force: bool) {
        if !force && now < self.next_purge.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.state.lock();
        let mut next = u64::MAX;
        let mut due = |seg: &Segment| {
            if force || now >= seg.purge_at.get() {
                return true;
            }
            next = next.min(seg.purge_at.get());
            false
        };
        let (mut release, mut decommit): (*mut Segment, *mut Segment) = (ptr::null_mut(), ptr::null_mut());
        let mut prev: *mut Segment = ptr::null_mut();
        let mut s = st.cache;
        while !s.is_null() {
            // SAFETY: cache entries are valid, empty segments owned by the cache.
            let seg = unsafe { &*s };
            let after = seg.next.get();
            let clean = seg.dirty_mask.get() == 0; // purged already
            let beyond_kept = st.cache_len > SEGMENT_CACHE_KEEP;
            if (clean && beyond_kept) || (!clean && due(seg)) {
                if prev.is_null() {
                    st.cache = after;
                } else {
                    // SAFETY: as above.
                    unsafe { (*prev).next.set(after) };
                }
                st.cache_len -= 1;
                let list = if beyond_kept { &mut release } else { &mut decommit };
                seg.next.set(*list);
                *list = s;
            } else {
                prev = s;
            }
            s = after;
        }
        for i in 0..HUGE_CACHE_SLOTS {
            let (seg, size) = st.huge_cache[i];
            // SAFETY: as above, for cached huge mappings.
            if size != 0 && unsafe { (*seg).dirty_mask.get() } != 0 && due(unsafe { &*seg }) {
                st.huge_cache[i] = (ptr::null_mut(), 0);
                st.huge_cache_bytes -= size;
                // SAFETY: as above.
                unsafe { (*seg).next.set(decommit) };
                decommit = seg;
            }
        }
        self.next_purge.store(next, Ordering::Relaxed);
        drop(st);
        let mut bytes = 0;
        while !decommit.is_null() {
            // SAFETY: taken off a cache above; nobody else refers to it.
            let seg = unsafe { &*decommit };
            decommit = seg.next.get();
            bytes += seg.purge_all();
            let huge =
                seg.map_size.load(Ordering::Relaxed) != SEGMENT_SIZE || seg.base.load(Ordering::Relaxed) != seg.addr();
            if huge {
                if !self.cache_huge(seg) {
                    self.release_segment(seg);
                }
            } else {
                self.segment_free(seg);
            }
        }
        self.counters.bytes_purged.fetch_add(bytes as i64, Ordering::Relaxed);
        while !release.is_null() {
            // SAFETY: taken off the cache above; nobody else refers to it.
            let seg = unsafe { &*release };
            release = seg.next.get();
            self.release_segment(seg);
        }
    }

    /// The background purger's pass over the page segments of live heaps: purges the free
    /// pages that are overdue (`Segment::purge_overdue`). Returns (bytes, when the next are
    /// overdue: ms or `u64::MAX`).
    ///
    /// No system call runs under the backend's lock: the registry is walked in batches, each
    /// segment of a batch pinned (its owner's `segment_free` then leaves it alone, so it stays
    /// mapped and is not reused) and decommitted with the lock dropped.
    pub(crate) fn purge_owned(&self, now: u64, delay: u64) -> (usize, u64) {
        const BATCH: usize = 16;
        let (mut bytes, mut next) = (0, u64::MAX);
        // The registry entry to go on from: the last of the previous batch, still pinned.
        let mut resume: *const Segment = ptr::null();
        loop {
            let mut batch = [ptr::null::<Segment>(); BATCH];
            let mut n = 0;
            let st = self.state.lock();
            // SAFETY: `resume` is pinned, so still registered and mapped.
            let (mut s, resumed) = match unsafe { resume.as_ref() } {
                None => (st.registry, None),
                Some(last) => (last.reg_next.get(), Some(last)),
            };
            let free_resumed = resumed.is_some_and(|last| Self::unpin(&st, last));
            while !s.is_null() && n < BATCH {
                // SAFETY: registry entries are mapped segments; under the lock none is unmapped
                // or moves to or from the cache.
                let seg = unsafe { &*s };
                s = seg.reg_next.get();
                let page_kind = matches!(seg.kind(), SegmentKind::Small | SegmentKind::Medium | SegmentKind::Large);
                // An owner is set once the header is set up (abandoned ones are the purger's
                // rounds'); one being freed has none.
                if page_kind && !seg.owner.load(Ordering::Acquire).is_null() {
                    Self::pin(&st, seg);
                    batch[n] = seg;
                    n += 1;
                }
            }
            let done = s.is_null();
            drop(st);
            if let (Some(last), true) = (resumed, free_resumed) {
                self.segment_free(last);
            }
            for (i, &p) in batch[..n].iter().enumerate() {
                // SAFETY: pinned: mapped, and not set up again for another use.
                let seg = unsafe { &*p };
                let (b, t) = seg.purge_overdue(now, delay);
                bytes += b;
                next = next.min(t);
                // The last of a full batch stays pinned: the next batch starts after it.
                if done || i + 1 < n {
                    let free = Self::unpin(&self.state.lock(), seg);
                    if free {
                        self.segment_free(seg);
                    }
                }
            }
            if done {
                break;
            }
            resume = batch[n - 1];
        }
        self.counters.bytes_purged.fetch_add(bytes as i64, Ordering::Relaxed);
        (bytes, next)
    }

    /// Holds a registered page segment (the lock held: `_st`) so that it stays mapped,
    /// registered and unused for anything else while the lock is dropped: `segment_free`, the
    /// only way out for a page segment, leaves a pinned one to whoever unpins it last. (Cached
    /// segments and huge mappings have other ways out: they are never pinned.)
    fn pin(_st: &crate::lock::SpinGuard<'_, State>, seg: &Segment) {
        seg.pins.set(seg.pins.get() + 1);
    }

    /// Lets go of a pinned segment (the lock held). True if it was the last pin and the
    /// segment was given back meanwhile: the caller then frees it, with the lock dropped.
    fn unpin(_st: &crate::lock::SpinGuard<'_, State>, seg: &Segment) -> bool {
        seg.pins.set(seg.pins.get() - 1);
        seg.pins.get() == 0 && seg.free_deferred.replace(false)
    }

    /// Takes a cached huge mapping of `min..=max` bytes, the smallest (or with `biggest`, the
    /// biggest) there is: (its header, its size). Its memory is not zero.
    pub(crate) fn pop_huge(&self, min: usize, max: usize, biggest: bool) -> Option<(*mut Segment, usize)> {
        let mut st = self.state.lock();
        let fits = (0..HUGE_CACHE_SLOTS).filter(|&i| st.huge_cache[i].1 >= min.max(1) && st.huge_cache[i].1 <= max);
        let best =
            if biggest { fits.max_by_key(|&i| st.huge_cache[i].1) } else { fits.min_by_key(|&i| st.huge_cache[i].1) }?;
        let entry = st.huge_cache[best];
        st.huge_cache[best] = (ptr::null_mut(), 0);
        st.huge_cache_bytes -= entry.1;
        Some(entry)
    }

    /// Takes an empty segment from the cache (its memory is not zero).
    pub(crate) fn pop_cache(&self) -> Option<NonNull<u8>> {
        let mut st = self.state.lock();
        let s = st.cache;
        if s.is_null() {
            return None;
        }
        // SAFETY: cache entries are valid headers owned by the cache.
        st.cache = unsafe { (*s).next.get() };
        st.cache_len -= 1;
        drop(st);
        self.count(|c| &c.segments_reused, 1);
        NonNull::new(s.cast())
    }

    // ---- statistics ----

    /// Sums every heap's counters and walks the registry.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        s.add_counters(&self.counters);
        (s.in_use_bytes, s.peak_in_use_bytes) = self.shared.in_use();
        let mut pending = [0i64; CLASS_COUNT];
        let mut add_pending = |a: &[AtomicI64; CLASS_COUNT]| {
            pending.iter_mut().zip(a).for_each(|(p, c)| *p += c.load(Ordering::Relaxed));
        };
        add_pending(&self.remote_pending);
        let st = self.state.lock();
        let mut h = st.heaps;
        while !h.is_null() {
            // SAFETY: heaps (and so their statistics) are never freed; counters are atomics.
            let heap = unsafe { &*h };
            s.add_counters(&heap.counters);
            s.class_pages_started
                .iter_mut()
                .zip(&heap.class_pages_started)
                .for_each(|(s, c)| *s += c.load(Ordering::Relaxed));
            add_pending(&heap.remote_pending);
            h = heap.all_next.get();
        }
        let mut seg = st.registry;
        while !seg.is_null() {
            // SAFETY: registered segments stay mapped while we hold the lock; we read only
            // atomics (`base` and `map_size` keep their values while the segment is
            // registered) and the registry links.
            let sg = unsafe { &*seg };
            s.segments_current += 1;
            s.mapped_bytes += sg.map_size.load(Ordering::Relaxed) as i64;
            match sg.kind() {
                SegmentKind::Cached => s.segments_cached += 1,
                SegmentKind::Chunk => {
                    s.large_blocks += sg.pages[0].used.load(Ordering::Relaxed) as i64;
                    s.large_bytes += sg.live_bytes.load(Ordering::Relaxed) as i64;
                }
                SegmentKind::Huge => {
                    s.huge_blocks += 1;
                    s.huge_bytes += sg.live_bytes.load(Ordering::Relaxed) as i64;
                }
                _ => {
                    for p in &sg.pages {
                        let used = p.used.load(Ordering::Relaxed) as i64;
                        if used > 0 {
                            let c = p.class.load(Ordering::Relaxed) as usize;
                            s.class_blocks[c] += used;
                            s.class_pages[c] += 1;
                        }
                    }
                }
            }
            seg = sg.reg_next.get();
        }
        drop(st);
        s.heap_resident_bytes = self.resident_bytes();
        // Blocks freed remotely but not yet collected still count in their page's `used`.
        s.class_blocks.iter_mut().zip(pending).for_each(|(b, p)| *b -= p);
        s
    }

    /// The resident bytes of every registered mapping, with the lock dropped for the system
    /// calls: (base, size) pairs are copied out in batches, each batch starting as many
    /// entries into the registry as were read before. The figure is approximate when mappings
    /// come and go meanwhile (one given back after it was copied is measured where it was:
    /// mincore only reads the page tables).
    fn resident_bytes(&self) -> i64 {
        const BATCH: usize = 64;
        let (mut bytes, mut read) = (0, 0);
        loop {
            let mut batch = [(ptr::null_mut::<u8>(), 0usize); BATCH];
            let mut n = 0;
            let st = self.state.lock();
            let mut seg = st.registry;
            let mut i = 0;
            while !seg.is_null() && n < BATCH {
                // SAFETY: registered segments stay mapped while we hold the lock; `base` and
                // `map_size` keep their values while the segment is registered.
                let sg = unsafe { &*seg };
                if i >= read {
                    batch[n] = (sg.base.load(Ordering::Relaxed), sg.map_size.load(Ordering::Relaxed));
                    n += 1;
                }
                i += 1;
                seg = sg.reg_next.get();
            }
            drop(st);
            bytes += batch[..n].iter().map(|&(base, len)| crate::os::resident_in(base, len)).sum::<i64>();
            if seg.is_null() {
                return bytes;
            }
            read += n;
        }
    }

    /// Adds `delta` bytes to what is in use (blocks carved from a page or the page given back,
    /// a chunk or huge block allocated or freed) and keeps the peak. A page counts every block
    /// it has carved, live or free, so the peak bounds the peak of live bytes from above; it
    /// is exact for chunks and huge blocks.
    pub(crate) fn note_in_use(&self, delta: i64) {
        self.shared.note_in_use(delta);
    }

    /// The backend's identity as the one that mapped a segment (`Segment::backend`).
    pub(crate) fn id(&self) -> *const () {
        (self as *const Backend).cast()
    }

    /// The backend that mapped `seg`.
    pub(crate) fn of(seg: &Segment) -> &Backend {
        // SAFETY: only backends initialize segments, with their `id`; backends outlive the
        // segments they map.
        unsafe { &*seg.backend.get().cast::<Backend>() }
    }

    /// Takes the backend lock (before `fork`), after waiting for a purger round in progress.
    pub(crate) fn lock_for_fork(&self) {
        self.purger.lock_for_fork();
        self.state.raw_lock();
    }

    /// Releases the locks taken by `lock_for_fork`, in the parent or (`child`) in the child,
    /// which has no purger thread.
    ///
    /// # Safety
    /// `lock_for_fork` was called by this thread (or the forked child's copy of it).
    pub(crate) unsafe fn unlock_after_fork(&self, child: bool) {
        // SAFETY: per the contract.
        unsafe {
            self.state.raw_unlock();
            self.purger.unlock_after_fork(child);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::os::SimPageSource;

    fn backend(segments: usize) -> &'static Backend {
        let source = SimPageSource::with_capacity((segments + 1) * SEGMENT_SIZE);
        Backend::leaked(std::boxed::Box::leak(std::boxed::Box::new(source)))
    }

    /// An owned small segment with a page in use (its index is returned) and a free one,
    /// committed and due at `due`.
    fn segment_with_a_free_page(backend: &Backend, due: u64) -> (&Segment, usize) {
        let (seg, _) = backend.segment_alloc(SegmentKind::Small).expect("a segment");
        seg.owner.store(NonNull::dangling().as_ptr(), Ordering::Release);
        let (i, _) = seg.take_page().expect("a free page");
        let (j, page) = seg.take_page().expect("another free page");
        assert!(seg.page_was_fresh(i) && seg.page_was_fresh(j));
        seg.free_page(page, due);
        (seg, i)
    }

    #[test]
    fn the_purger_reaches_every_owned_segment_past_its_batches() {
        // More than a batch (16), fewer under Miri, where memory is dear.
        let n = if cfg!(miri) { 18 } else { 40 };
        let backend = backend(n);
        let segs: std::vec::Vec<&Segment> = (0..n).map(|_| segment_with_a_free_page(backend, 1000).0).collect();
        // Due at 1000, overdue a delay (500) later.
        assert_eq!(backend.purge_owned(1499, 500), (0, 1500), "nothing is overdue yet");
        let (bytes, next) = backend.purge_owned(1500, 500);
        let page_len = segs[0].page_area(1).1;
        assert_eq!((bytes, next), (n * page_len, u64::MAX));
        assert!(segs.iter().all(|s| s.purge_mask.get() == 0 && s.pins.get() == 0));
    }

    #[test]
    fn a_segment_given_back_while_pinned_is_freed_by_the_last_unpin() {
        let backend = backend(1);
        let (seg, used) = segment_with_a_free_page(backend, 1000);
        Backend::pin(&backend.state.lock(), seg);
        seg.free_page(&seg.pages[used], 1000);
        assert_eq!(seg.used_pages.get(), 0);
        backend.segment_free(seg);
        assert_eq!(seg.kind(), SegmentKind::Small, "a pinned segment stays as it is");
        assert!(backend.pop_cache().is_none());
        assert!(Backend::unpin(&backend.state.lock(), seg), "the last unpin frees it");
        backend.segment_free(seg);
        assert_eq!(seg.kind(), SegmentKind::Cached);
        assert!(!seg.free_deferred.get());
    }

    #[test]
    #[cfg_attr(miri, ignore = "mincore: Miri has no page tables to ask")]
    fn resident_bytes_counts_each_mapping_once_across_batches() {
        let backend = backend(100);
        let mut expected = 0;
        for k in 0..100 {
            let (seg, _) = backend.segment_alloc(SegmentKind::Small).expect("a segment");
            // A different number of touched OS pages in each, so a skipped or repeated one shows.
            for p in 0..k % 7 {
                // SAFETY: inside the segment's first page, past the header slice.
                unsafe { seg.addr().add(SLICE_SIZE + p * MIN_PAGE_SIZE).write_volatile(1) };
            }
            expected += crate::os::resident_in(seg.base.load(Ordering::Relaxed), SEGMENT_SIZE);
        }
        assert_eq!(backend.resident_bytes(), expected);
    }
}
