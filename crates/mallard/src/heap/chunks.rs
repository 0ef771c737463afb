//! The owner's side of the chunk heap: chunk segments, allocation, local and remote frees,
//! resizing in place (the chunks themselves are `crate::chunk`'s).

use super::*;

impl Heap {
    /// (free chunks, their bytes, the largest) of this heap's chunk heap.
    pub(crate) fn chunk_figures(&self) -> (usize, usize, usize) {
        self.chunks.free_figures()
    }

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
            // Growing: a purge point, where the background purger may start.
            self.maybe_purge(true);
            self.new_chunk_segment()?;
        }
    }

    pub(super) fn add_live(seg: &Segment, delta: isize) {
        let v = seg.live_bytes.load(Ordering::Relaxed);
        seg.live_bytes.store(v.wrapping_add_signed(delta), Ordering::Relaxed);
        Backend::of(seg).note_in_use(delta as i64);
    }

    /// Takes a fresh chunk segment: its region becomes one free chunk.
    pub(super) fn new_chunk_segment(&self) -> Option<()> {
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
            self.maybe_purge(false);
        }
    }

    /// `chunk_free` without the purge it may call for: returns whether a purge is worth
    /// trying. A walk over `chunk_segs` must use this, as a purge may give back (unmap, or
    /// relink into the cache) the very segment the walk goes to next.
    ///
    /// # Safety
    /// As for `chunk_free`.
    pub(super) unsafe fn chunk_release(&self, seg: &Segment, p: *mut u8) -> bool {
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
    pub(super) fn collect_chunk_remote(&self) -> usize {
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
            self.maybe_purge(false);
        }
        n
    }

    /// Frees the chunks other threads freed into `seg`. Returns how many, and whether a purge
    /// is worth trying (the caller runs it once it no longer walks `chunk_segs`).
    pub(super) fn collect_chunks_of(&self, seg: &Segment) -> (usize, bool) {
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
    pub(super) fn reclaim_chunk_segment(&self, seg: &Segment) {
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
}
