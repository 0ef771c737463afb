//! Marking: the root scan, the worklist, tracing, incremental slices and the write barrier.
//!
//! **Marking** is tricolour. An object is white if its mark differs from `epoch`, grey if it is
//! marked and on the worklist, black once traced. A cycle flips `epoch` (everything turns
//! white), shades every object with a root count above zero (the root scan, page by page), then
//! traces the worklist until it is empty. The worklist is a `Vec`, so a list of a million nodes
//! needs no recursion. Objects allocated during a cycle are born black.
//!
//! **Incremental marking** spreads the root scan and the tracing over allocations, a slice at a
//! time. It is correct because of the write barrier: while marking, every handle that becomes a
//! root (`Gc::clone`, a `GcCell` borrowed mutably) and every handle stored into the heap
//! (`Gc::new`, the end of a `GcCell` borrow) shades its target. A program can only make a white
//! object reachable through one of those, so no black object ever hides a white one that a
//! root can reach; objects that die during the cycle survive it (floating garbage) and go in
//! the next.

use super::object::{slot_at, slots, Header, PageHeader};
use super::{Heap, Phase, CLASSES, MARKING};
use crate::trace::{Visitor, Walk};
use std::ptr::{self, NonNull};

/// Whether this thread's collector is marking (so the write barrier must shade).
#[inline]
pub(crate) fn marking() -> bool {
    MARKING.with(|m| m.get())
}

/// Shade `header`'s object: if it is white, mark it and put it on the worklist.
///
/// # Safety
/// `header` heads a live object of `h`.
#[inline]
pub(crate) unsafe fn shade(h: &Heap, header: NonNull<Header>) {
    // SAFETY: per the contract.
    let hd = unsafe { header.as_ref() };
    let epoch = h.epoch.get();
    if hd.mark.get() != epoch {
        hd.mark.set(epoch);
        // SAFETY: no other reference to the worklist is live (tracing pops before it visits).
        unsafe { (*h.worklist.get()).push(header) };
        // SAFETY: a live object's vtable is set.
        let size = unsafe { (*hd.vtable.get()).footprint };
        h.marked_objects.set(h.marked_objects.get() + 1);
        h.marked_bytes.set(h.marked_bytes.get() + size);
    }
}

impl Heap {
    /// The mark a new object is born with.
    #[inline]
    pub(crate) fn epoch(&self) -> u8 {
        self.epoch.get()
    }

    /// The heap pointer a rooting or unrooting walk needs: this heap while it marks.
    pub(crate) fn barrier(&self) -> *const Heap {
        if matches!(self.phase.get(), Phase::Marking { .. }) {
            self
        } else {
            ptr::null()
        }
    }

    /// Start a cycle: finish the sweep, turn everything white, begin the root scan.
    pub(super) fn begin_mark(&self) {
        self.finish_sweep();
        self.epoch.set(self.epoch.get() ^ 1);
        self.marked_objects.set(0);
        self.marked_bytes.set(0);
        self.phase.set(Phase::Marking { class: 0, page: 0, large: 0 });
        MARKING.with(|m| m.set(true));
        self.last_slice.set(self.allocated.get());
    }

    /// Do up to `budget` bytes of marking work, and if that completes the marking, end the
    /// cycle (`finish_mark`); true then.
    pub(super) fn mark(&self, budget: isize) -> bool {
        let done = self.mark_slice(budget);
        if done {
            // SAFETY: `mark_slice` says marking is complete.
            unsafe { self.finish_mark() };
        }
        done
    }

    /// Do up to `budget` bytes of marking work; true when marking is complete.
    fn mark_slice(&self, mut budget: isize) -> bool {
        // The root scan: shade every object with a rooted handle.
        while let Phase::Marking { mut class, mut page, mut large } = self.phase.get() {
            if class < CLASSES {
                let (next, slot) = {
                    // SAFETY: a short read, over before any shading.
                    let cl = unsafe { self.class(class) };
                    (cl.pages.get(page).copied(), cl.slot)
                };
                match next {
                    None => {
                        class += 1;
                        page = 0;
                    }
                    Some(base) => {
                        // SAFETY: the page starts with its header.
                        let mut rooted = unsafe { base.cast::<PageHeader>().as_ref().rooted.get() };
                        let mut i = 0;
                        let n = slots(slot);
                        while rooted > 0 && i < n {
                            // SAFETY: slot `i` lies inside the page and holds a header; a live
                            // object if its vtable is set.
                            unsafe {
                                let h = slot_at(base, slot, i);
                                if !(*h).vtable.get().is_null() && (*h).roots.get() > 0 {
                                    shade(self, NonNull::new_unchecked(h));
                                    rooted -= 1;
                                }
                            }
                            i += 1;
                        }
                        page += 1;
                        budget -= (i * slot) as isize + 64;
                    }
                }
            } else {
                // SAFETY: the borrow ends before shading (which touches only the worklist).
                let next = unsafe { (&*self.large.get()).get(large).copied() };
                match next {
                    Some(h) => {
                        // SAFETY: objects on the large list are live.
                        if unsafe { h.as_ref().roots.get() } > 0 {
                            // SAFETY: a large object of this heap, live.
                            unsafe { shade(self, h) };
                        }
                        large += 1;
                        budget -= 64;
                    }
                    None => break,
                }
            }
            self.phase.set(Phase::Marking { class, page, large });
            if budget <= 0 {
                return false;
            }
        }
        // Tracing: pop grey objects and shade what they point to.
        // SAFETY: this heap is this thread's.
        let mut visitor = unsafe { Visitor::new(Walk::Mark, self) };
        loop {
            if budget <= 0 {
                return false;
            }
            // SAFETY: the borrow ends before tracing pushes.
            let next = unsafe { (*self.worklist.get()).pop() };
            let Some(h) = next else { return true };
            // SAFETY: objects on the worklist are live and have their vtable set.
            unsafe {
                let vt = &*h.as_ref().vtable.get();
                (vt.trace)(h, &mut visitor);
                budget -= vt.size as isize;
            }
        }
    }

    /// Marking is complete: everything white is garbage. Start the (lazy) sweep.
    ///
    /// # Safety
    /// Marking is complete (`mark_slice` returned true): everything white is unreachable.
    unsafe fn finish_mark(&self) {
        self.phase.set(Phase::Idle);
        MARKING.with(|m| m.set(false));
        self.collections.set(self.collections.get() + 1);
        self.live_objects.set(self.marked_objects.get());
        self.live_bytes.set(self.marked_bytes.get());
        // SAFETY: per the contract, and marking is over.
        unsafe { self.begin_sweep() };
        self.retarget();
        // SAFETY: as above.
        unsafe { self.sweep_large() };
    }
}
#[cfg(test)]
mod tests {
    //! The write barrier, step by step: each test stops the marker at the moment a missing
    //! barrier would lose an object, makes the mutation, and finishes the cycle.
    use super::*;
    use crate::heap::object::slot_class;
    use crate::heap::with;
    use crate::{Gc, GcCell};

    #[derive(crate::Trace)]
    struct Node {
        id: u32,
        edges: GcCell<Vec<Gc<Node>>>,
    }

    fn node(id: u32) -> Gc<Node> {
        Gc::new(Node { id, edges: GcCell::new(Vec::new()) })
    }

    /// Finish the cycle and the sweep without starting another.
    fn finish(h: &Heap) {
        assert!(h.mark(isize::MAX));
        h.finish_sweep();
    }

    /// Whether the root scan has passed every page of classes up to `class`.
    fn scanned(h: &Heap, up_to: usize) -> bool {
        let Phase::Marking { class, page, .. } = h.phase.get() else { unreachable!() };
        // SAFETY: a short read, in no user code.
        class > up_to || (class == up_to && page >= unsafe { h.class(class) }.pages.len())
    }

    /// Run the root scan to its end, without tracing anything (a budget of 0 scans one page
    /// and stops before tracing).
    fn scan_roots(h: &Heap) {
        while !scanned(h, CLASSES - 1) {
            h.mark_slice(0);
        }
        // The large list (empty in these tests) and the switch to tracing.
        assert!(!h.mark_slice(0));
    }

    #[test]
    fn storing_into_a_black_object_shades() {
        let y = node(1);
        let y2 = y.clone();
        with(|h| {
            h.begin_mark(); // nothing scanned yet: y is white
            let b = node(2); // born black: the marker will not trace it
            b.edges.borrow_mut().push(y2); // the handle becomes an edge of b
            drop(y); // ... and y's only path
            finish(h);
            assert_eq!(h.live_objects.get(), 2, "y is reachable from b");
            assert_eq!(b.edges.borrow()[0].id, 1);
        });
    }

    #[test]
    fn borrowing_a_cell_during_marking_roots_and_shades_its_contents() {
        let a = node(1);
        a.edges.borrow_mut().push(node(2)); // 2 is reachable only from a
        with(|h| {
            h.begin_mark();
            scan_roots(h); // a is grey, 2 white (it had no root when the scan passed it)
            let two = a.edges.borrow_mut().pop().unwrap(); // moved out: now a root
            finish(h);
            assert_eq!(h.live_objects.get(), 2, "2 is rooted");
            assert_eq!(two.id, 2);
        });
    }

    #[test]
    fn a_root_made_during_marking_is_shaded() {
        #[derive(crate::Trace)]
        struct Big {
            pad: [u64; 64],
            edges: GcCell<Vec<Gc<Node>>>,
        }
        // a is in a bigger class than 2, so the root scan passes 2's page first.
        let a = Gc::new(Big { pad: [0; 64], edges: GcCell::new(Vec::new()) });
        a.edges.borrow_mut().push(node(2));
        let small = slot_class::<Node>().unwrap();
        assert!(small < slot_class::<Big>().unwrap());
        with(|h| {
            h.begin_mark();
            while !scanned(h, small) {
                h.mark_slice(0);
            }
            // 2 had no root when the scan passed it; now it gets one, and a, not yet scanned,
            // loses its own.
            let two = a.edges.borrow()[0].clone();
            drop(a);
            finish(h);
            assert_eq!(h.live_objects.get(), 1, "2 is rooted");
            assert_eq!(two.id, 2);
        });
    }
}
