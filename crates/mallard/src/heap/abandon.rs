//! A heap changing hands: abandon at thread exit, the reclaim of an abandoned segment, the
//! heap pool, and the purger's round over abandoned segments.

use super::*;

impl Heap {
    /// Takes over a segment an exited thread abandoned: its pages join this heap's queues.
    pub(super) fn reclaim(&self, seg: &Segment) {
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
                    page.unmark_full();
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
        // SAFETY: a pointer made from the whole heap; its thread is done with it.
        unsafe { self.backend().pool_heap((self as *const Heap).cast_mut().cast()) };
        self.backend().purger.live_heaps.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The heap pool: heaps are carved from the backend's metadata memory and never freed; a
/// heap whose thread exited waits in the pool for the next thread. (The backend keeps the
/// lists; it knows a heap by its statistics, which lead it.)
impl Backend {
    /// A heap for a new owner: a pooled one or a fresh one.
    pub fn heap_alloc(&'static self) -> Option<&'static Heap> {
        let heap = self.pooled_or_new_heap()?;
        self.purger.live_heaps.fetch_add(1, Ordering::Relaxed);
        Some(heap)
    }

    fn pooled_or_new_heap(&'static self) -> Option<&'static Heap> {
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
        // SAFETY: the heap's own memory, which is never freed.
        unsafe { self.register_heap(mem.as_ptr().cast()) };
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
