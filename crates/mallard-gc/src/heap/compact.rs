//! Compaction, on request: moving objects out of sparse pages so the pages go back.
//!
//! The collector never moves objects on its own: `Deref` hands out `&T` into objects that only
//! unrooted handles reach, and only the caller of the `unsafe` `crate::compact` can say that no
//! such reference is live. `compact` collects, moves the unrooted objects of each class's
//! sparsest pages into the free slots of its fullest (leaving `FORWARDED` and the new address
//! in the old slot), re-walks the heap to point every handle in it at the new places (rooted
//! objects never move, so handles outside the heap stay right), and lets the sweep give the
//! emptied pages back.

use super::object::{link, slot_at, slots, Header, VTable};
use super::{Busy, Heap, CLASSES};
use crate::trace::{Visitor, Walk};
use std::ptr::{self, NonNull};

/// The vtable of a slot whose object `compact` moved: the slot's second word holds the new
/// address until the compaction ends.
static FORWARDED: VTable = VTable { trace: |_, _| {}, drop: None, size: 0, align: 1, footprint: 0 };

/// Where `compact` moved `object`, if it did.
///
/// # Safety
/// `object` heads an object (or a slot `compact` moved it out of).
#[inline]
pub(crate) unsafe fn forwarded(object: NonNull<Header>) -> Option<NonNull<Header>> {
    // SAFETY: per the contract.
    unsafe {
        if ptr::eq(object.as_ref().vtable.get(), &FORWARDED) {
            NonNull::new(*link(object.as_ptr()))
        } else {
            None
        }
    }
}

impl Heap {
    /// Move the objects of sparse pages into the free slots of fuller ones, so the sparse pages
    /// empty and go back. Returns the objects moved.
    ///
    /// # Safety
    /// No reference into the heap is live (see `crate::compact`).
    pub(crate) unsafe fn compact(&self) -> usize {
        if self.busy.get() {
            return 0;
        }
        // A full collection first: every page swept, every live object marked, free lists
        // complete.
        self.collect();
        let busy = Busy::enter(self);
        let mut moved = 0;
        for c in 0..CLASSES {
            // SAFETY: the caller's promise; below, the walk points the handles at the new places
            // and the `FORWARDED` slots are freed.
            moved += unsafe { self.evacuate_class(c) };
        }
        if moved > 0 {
            // Point every handle in the heap at the new places. Handles outside the heap are
            // rooted, and rooted objects did not move.
            // SAFETY: this heap is this thread's.
            let mut visitor = unsafe { Visitor::new(Walk::Fixup, self) };
            self.each_slot(|h| {
                // SAFETY: a slot holds a header; a live object's vtable traces it.
                unsafe {
                    let vt = (*h).vtable.get();
                    if !vt.is_null() && !ptr::eq(vt, &FORWARDED) {
                        ((*vt).trace)(NonNull::new_unchecked(h), &mut visitor);
                    }
                }
            });
            let mut i = 0;
            // SAFETY: each read of the large list ends before tracing.
            while let Some(h) = unsafe { (&*self.large.get()).get(i).copied() } {
                // SAFETY: a large object is live and its vtable set.
                unsafe { ((*h.as_ref().vtable.get()).trace)(h, &mut visitor) };
                i += 1;
            }
        }
        // Free the slots moved out of, give back the pages left empty, and rebuild the free
        // lists (the sweep does all three: every object is marked, so it drops nothing).
        self.each_slot(|h| {
            // SAFETY: a slot holds a header.
            unsafe {
                if ptr::eq((*h).vtable.get(), &FORWARDED) {
                    (*h).vtable.set(ptr::null());
                }
            }
        });
        // SAFETY: the full collection marked every live object, and nothing is marking.
        unsafe { self.begin_sweep() };
        drop(busy);
        self.finish_sweep();
        // The point of the call is to give memory back: the spare pages go too.
        self.free_spare_pages();
        moved
    }

    /// Call `f` on every slot of every page (free or not). `f` must not add or remove pages.
    /// It may run user code (a `Trace`), so no class is borrowed while it runs.
    fn each_slot(&self, mut f: impl FnMut(*mut Header)) {
        for c in 0..CLASSES {
            // SAFETY: a read of one field.
            let slot = unsafe { self.class(c) }.slot;
            for p in 0.. {
                // SAFETY: a short read of the page list, over before `f` runs.
                let Some(&page) = unsafe { self.class(c) }.pages.get(p) else { break };
                for i in 0..slots(slot) {
                    // SAFETY: slot `i` lies inside the page.
                    f(unsafe { slot_at(page, slot, i) });
                }
            }
        }
    }

    /// Move the unrooted objects of class `c`'s sparsest pages into free slots of its fullest
    /// pages, while the fuller pages have room. Leaves `FORWARDED` behind.
    ///
    /// # Safety
    /// As for `compact`: no reference into the heap is live. And before the heap is used again,
    /// the caller points every handle at the new places and frees the `FORWARDED` slots.
    unsafe fn evacuate_class(&self, c: usize) -> usize {
        // SAFETY: the borrow ends in this function, and runs no user code (moving is a copy).
        let cl = unsafe { self.class(c) };
        if cl.pages.len() < 2 {
            return 0;
        }
        let per_page = slots(cl.slot);
        // Live objects per page, sparsest first.
        let mut pages: Vec<(usize, NonNull<u8>)> = cl
            .pages
            .iter()
            .map(|&page| {
                // SAFETY: every slot of the page holds a header.
                let live =
                    (0..per_page).filter(|&i| unsafe { !(*slot_at(page, cl.slot, i)).vtable.get().is_null() }).count();
                (live, page)
            })
            .collect();
        pages.sort_unstable_by_key(|&(live, _)| live);
        // Evacuate the sparsest pages whose objects fit in the free slots of the others.
        let total: usize = pages.iter().map(|&(live, _)| live).sum();
        let needed_pages = total.div_ceil(per_page);
        let sources = pages.len().saturating_sub(needed_pages);
        let (from, to) = pages.split_at(sources);
        let from: Vec<NonNull<u8>> = from.iter().filter(|&&(live, _)| live > 0).map(|&(_, p)| p).collect();
        // Targets: the free slots of the kept pages, fullest first.
        let mut targets: Vec<*mut Header> = Vec::new();
        for &(_, page) in to.iter().rev() {
            for i in 0..per_page {
                // SAFETY: slot `i` lies inside the page and holds a header.
                let h = unsafe { slot_at(page, cl.slot, i) };
                // SAFETY: as above.
                if unsafe { (*h).vtable.get().is_null() } {
                    targets.push(h);
                }
            }
        }
        targets.reverse(); // pop from the fullest page first
        let mut moved = 0;
        'pages: for page in from {
            for i in 0..per_page {
                // SAFETY: slot `i` lies inside the page and holds a header.
                unsafe {
                    let h = slot_at(page, cl.slot, i);
                    let vt = (*h).vtable.get();
                    // Rooted objects stay: a handle outside the heap points at them.
                    if vt.is_null() || (*h).roots.get() > 0 {
                        continue;
                    }
                    let Some(to) = targets.pop() else { break 'pages };
                    ptr::copy_nonoverlapping(h as *const u8, to as *mut u8, (*vt).size);
                    (*h).vtable.set(&FORWARDED);
                    link(h).write(to);
                    moved += 1;
                }
            }
        }
        moved
    }
}
