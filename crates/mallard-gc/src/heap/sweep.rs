//! Sweeping: running the `Drop` of dead objects, freeing their slots, giving pages back.
//!
//! **Sweeping** is lazy. When marking ends, every page is marked unswept; the allocator sweeps
//! a page of a class when that class runs out of free slots, running the `Drop` of its dead
//! objects and putting their slots on the class's free list. A page left empty goes to a small
//! spare pool, and back to mallard beyond it. Large objects are swept at once when marking
//! ends. The next cycle finishes the sweep before it starts, and `collect()` finishes it too,
//! so after `collect()` every unreachable object has been dropped.

use super::alloc::{raw_free, PAGE_LAYOUT};
use super::object::{link, slot_at, slots, Header, PAGE_SIZE};
use super::{Busy, Heap, CLASSES};
use std::alloc::Layout;
use std::any::Any;
use std::ptr::{self, NonNull};

/// Empty pages kept for reuse beyond which they go back to mallard.
const SPARE_PAGES: usize = 4;

/// Drop a panic payload the collector will not pass on. Its own `Drop` may panic too, and that
/// must not unwind out of the middle of a sweep: the new payload is dropped the same way, and
/// after a few rounds of that, leaked.
fn drop_payload(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..4 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

impl Heap {
    /// Put every page up for the sweep.
    ///
    /// # Safety
    /// Marking is not under way: every object whose mark differs from `epoch` is garbage.
    pub(super) unsafe fn begin_sweep(&self) {
        for c in 0..CLASSES {
            // SAFETY: the borrow ends in this iteration, and runs no user code.
            let cl = unsafe { self.class(c) };
            // The free slots on the list are found again by the sweep.
            cl.free = ptr::null_mut();
            cl.unswept = cl.pages.len();
        }
    }

    /// Sweep the next unswept page of class `c`, adding its free slots to the class's list.
    pub(super) fn sweep_next(&self, c: usize) {
        let (page, slot) = {
            // SAFETY: the borrow ends before any `Drop` runs.
            let cl = unsafe { self.class(c) };
            cl.unswept -= 1;
            (cl.pages[cl.unswept], cl.slot)
        };
        let epoch = self.epoch.get();
        let busy = Busy::enter(self);
        let mut head: *mut Header = ptr::null_mut();
        let mut tail: *mut Header = ptr::null_mut();
        let mut live = 0;
        for i in (0..slots(slot)).rev() {
            // SAFETY: slot `i` lies inside the page, and holds a header (free or live).
            unsafe {
                let h = slot_at(page, slot, i);
                let vt = (*h).vtable.get();
                if !vt.is_null() {
                    if (*h).mark.get() == epoch {
                        live += 1;
                        continue;
                    }
                    self.objects.set(self.objects.get() - 1);
                    self.bytes.set(self.bytes.get() - slot);
                    if let Some(drop) = (*vt).drop {
                        self.run_drop(drop, NonNull::new_unchecked(h));
                    }
                    (*h).vtable.set(ptr::null());
                }
                link(h).write(head);
                if tail.is_null() {
                    tail = h;
                }
                head = h;
            }
        }
        drop(busy);
        // SAFETY: the `Drop`s are over; the borrow ends in this function, and runs no user code.
        let cl = unsafe { self.class(c) };
        if live == 0 {
            // Empty: give the page up (it is at `unswept`, the swept side, so the swap keeps
            // the unswept pages where they are).
            let at = cl.unswept;
            cl.pages.swap_remove(at);
            // SAFETY: the page is out of its class, and the sweep found nothing live in it.
            unsafe { self.release_page(page) };
        } else if !head.is_null() {
            // SAFETY: `tail` is the last slot of the new list.
            unsafe { link(tail).write(cl.free) };
            cl.free = head;
        }
        self.resume_panic();
    }

    /// Run one dead object's `Drop`, catching a panic so the sweep can finish first.
    ///
    /// # Safety
    /// `h` heads a dead object of the type `drop` belongs to.
    unsafe fn run_drop(&self, drop: unsafe fn(NonNull<Header>), h: NonNull<Header>) {
        // SAFETY: per the contract.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { drop(h) }));
        if let Err(payload) = result {
            match self.panic.take() {
                None => self.panic.set(Some(payload)),
                Some(first) => {
                    self.panic.set(Some(first));
                    drop_payload(payload);
                }
            }
        }
    }

    fn resume_panic(&self) {
        if let Some(payload) = self.panic.take() {
            // At thread exit a panic cannot propagate (it would abort); the panic hook has
            // reported it already.
            if self.exiting.get() {
                drop_payload(payload);
            } else {
                std::panic::resume_unwind(payload);
            }
        }
    }

    /// Keep an empty page for reuse, or give it back to mallard.
    ///
    /// # Safety
    /// `page` is a page of this heap that no class holds any more, with no live object in it.
    unsafe fn release_page(&self, page: NonNull<u8>) {
        // SAFETY: no other reference to the spare pool is live.
        let spare = unsafe { &mut *self.spare.get() };
        if spare.len() < SPARE_PAGES {
            spare.push(page);
        } else {
            self.heap_bytes.set(self.heap_bytes.get() - PAGE_SIZE);
            // SAFETY: pages come from `raw_alloc(PAGE_LAYOUT)`; nothing uses this one again.
            unsafe { raw_free(page, PAGE_LAYOUT) };
        }
    }

    /// Sweep every page still waiting (before a cycle starts, and in `collect`).
    pub(super) fn finish_sweep(&self) {
        for c in 0..CLASSES {
            // SAFETY: a read of one field; the borrow ends before the sweep runs any `Drop`.
            while unsafe { self.class(c) }.unswept > 0 {
                self.sweep_next(c);
            }
        }
    }

    /// Free the dead large objects.
    ///
    /// # Safety
    /// As for `begin_sweep`: every object whose mark differs from `epoch` is garbage.
    pub(super) unsafe fn sweep_large(&self) {
        let epoch = self.epoch.get();
        let busy = Busy::enter(self);
        let mut i = 0;
        loop {
            let h = {
                // SAFETY: the borrow ends before any `Drop` runs.
                let large = unsafe { &mut *self.large.get() };
                if i >= large.len() {
                    break;
                }
                let h = large[i];
                // SAFETY: objects on the large list are live until freed here.
                if unsafe { h.as_ref().mark.get() } == epoch {
                    i += 1;
                    continue;
                }
                large.swap_remove(i);
                h
            };
            // SAFETY: a large object's vtable is set; the object is dead (the contract) and off
            // the list.
            unsafe {
                let vt = &*h.as_ref().vtable.get();
                let layout = Layout::from_size_align_unchecked(vt.size, vt.align);
                if let Some(drop) = vt.drop {
                    self.run_drop(drop, h);
                }
                self.objects.set(self.objects.get() - 1);
                self.bytes.set(self.bytes.get() - vt.size);
                self.heap_bytes.set(self.heap_bytes.get() - vt.size);
                raw_free(h.cast(), layout);
            }
        }
        drop(busy);
        self.resume_panic();
    }

    /// Give every spare page back to mallard.
    pub(super) fn free_spare_pages(&self) {
        // SAFETY: no other reference to the spare pool is live.
        for page in unsafe { (*self.spare.get()).drain(..) } {
            self.heap_bytes.set(self.heap_bytes.get() - PAGE_SIZE);
            // SAFETY: spare pages come from `raw_alloc(PAGE_LAYOUT)` and hold no object.
            unsafe { raw_free(page, PAGE_LAYOUT) };
        }
    }
}
