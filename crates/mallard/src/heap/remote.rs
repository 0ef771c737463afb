//! Remote frees, the freeing side and the owner's: batches pushed to a page as one list,
//! the `FULL` tag and the per-class hint a remote free into a full page leaves, and the
//! owner's scan of its full pages.

use super::*;

impl Heap {
    /// Moves full pages that received remote frees back to their queues. True if any hint
    /// was pending.
    pub(super) fn process_hints(&self) -> bool {
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
    pub(super) fn scan_full(&self, class: usize) {
        let mut p = self.full[class].first.get();
        while !p.is_null() {
            // SAFETY: full-list members are valid pages of this heap.
            let page = unsafe { &*p };
            p = page.next.get();
            if page.full_cleared() {
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
    pub(super) fn push_batch(&self, class: usize) {
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
    /// them, and if that cleared the page's `FULL` tag, tells the page's owner as of the push
    /// (see `Page::free_remote_list`).
    ///
    /// # Safety
    /// As for `Page::free_remote_list`.
    pub(crate) unsafe fn free_remote(page: &Page, class: usize, head: *mut Block, tail: *mut Block, n: u32) {
        // SAFETY: forwarded.
        unsafe {
            page.free_remote_list(head, tail, n, |tag, owner| {
                if owner.is_null() {
                    // (Only an abandoned page's segment is read: news for the purger.)
                    // SAFETY: the page's segment stays mapped until the blocks are counted.
                    let backend = Backend::of(Segment::of_page(page));
                    backend.purger.abandoned_activity.fetch_add(1, Ordering::Relaxed);
                } else if tag == FULL {
                    // SAFETY: heaps are never unmapped.
                    (*owner.cast::<Heap>()).remote_hint(class);
                }
            })
        };
    }

    /// Called by a remote free that cleared the `FULL` tag of one of this heap's pages.
    pub(crate) fn remote_hint(&self, class: usize) {
        self.remote_hint.0[class / 64].fetch_or(1 << (class % 64), Ordering::Release);
    }
}
