//! Giving free memory back: purge points on slow paths, due and forced purges of free pages,
//! of free runs inside chunk segments, and of the free OS pages inside small pages in use.

use super::*;

/// Which small pages `Heap::purge_inside_pages` gives back the free OS pages of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum InPage {
    /// The sparse ones that have stayed sparse for the purge delay.
    Due,
    /// The sparse ones, at once, until a segment's worth was given back (the heap is about
    /// to map another).
    Pressure,
    /// All (`collect(true)`).
    All,
}

impl Heap {
    /// Purges what is due, at most a few times per purge delay (called from slow paths).
    /// `alloc`: the caller is an allocation's slow path, which may start the background
    /// purger (a free must not: see `Backend::start_purger`).
    pub(super) fn maybe_purge(&self, alloc: bool) {
        let now = crate::os::now_ms();
        if now < self.next_purge_check.get() {
            return;
        }
        // A quarter of the delay, but at least every 100 ms: a later, shorter delay (or a new
        // owner of this heap) must not wait for a check scheduled under a long one.
        self.next_purge_check.set(now + (self.backend().purge_delay_ms() / 4).clamp(1, 100));
        self.purge(now, false);
        // The process is busy: the purger leaves abandoned segments to the threads that
        // reclaim them, and lingers for the frees that follow; an allocation starts it.
        self.backend().purger.last_active.store(now, Ordering::Relaxed);
        if alloc {
            self.backend().start_purger();
        }
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
            let source = self.backend().source();
            // SAFETY: the region is this heap's; free chunks hold nothing live.
            bytes += unsafe {
                self.chunks.purge_free(start, end, source.page_size(), |p, len| {
                    source.decommit(core::ptr::NonNull::new_unchecked(p), len)
                })
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
    pub(super) fn segment_alloc(&self, kind: SegmentKind) -> Option<&Segment> {
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
    pub(super) fn purge_inside_pages(&self, now: u64, when: InPage) -> usize {
        let force = when == InPage::All;
        let delay = self.backend().purge_delay_ms();
        let source = self.backend().source();
        let os_page = source.page_size();
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
                bytes += page.purge_free_os_pages(os_page, &mut decommit);
                page.purge_used.set(page.used());
                page.sparse_since.set(0);
                if when == InPage::Pressure && bytes >= SEGMENT_SIZE {
                    return bytes;
                }
            }
        }
        bytes
    }
}
