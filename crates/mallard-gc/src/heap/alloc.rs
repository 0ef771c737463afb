//! Allocation: slots from the free lists, pages and large objects from mallard.
//!
//! **Memory.** Objects up to `MAX_SLOT` bytes (header included) live in 64 KiB pages taken
//! from mallard, one size class per page, with mallard's class table (so the rounding waste is
//! mallard's: at most 1/8 above 128 bytes). Bigger or over-aligned objects are allocated from
//! mallard one by one.

use super::object::{link, slot_at, slot_class, slots, GcBox, PageHeader, PAGE_SIZE};
use super::{Heap, Phase};
use crate::trace::Trace;
use mallard::raw::CLASS_SIZE;
use std::alloc::Layout;
use std::cell::Cell;
use std::mem::size_of;
use std::ptr::{self, NonNull};

/// Memory for pages and large objects: mallard itself (the system allocator under Miri, which
/// cannot run mallard's page source).
fn raw_alloc(layout: Layout) -> NonNull<u8> {
    #[cfg(not(miri))]
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { std::alloc::GlobalAlloc::alloc(&mallard::Mallard, layout) };
    #[cfg(miri)]
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// # Safety
/// `p` came from `raw_alloc(layout)`.
pub(super) unsafe fn raw_free(p: NonNull<u8>, layout: Layout) {
    #[cfg(not(miri))]
    // SAFETY: per the contract.
    unsafe {
        std::alloc::GlobalAlloc::dealloc(&mallard::Mallard, p.as_ptr(), layout)
    };
    #[cfg(miri)]
    // SAFETY: per the contract.
    unsafe {
        std::alloc::dealloc(p.as_ptr(), layout)
    };
}

pub(super) const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
    Ok(l) => l,
    Err(_) => panic!("page layout"),
};

impl Heap {
    /// Memory for one `GcBox<T>`. May do collector work first.
    ///
    /// # Safety
    /// The caller writes a `GcBox<T>` into the memory (`GcBox::init`) before the collector can
    /// run again: in between, nothing may allocate or collect. Until then the memory is counted
    /// as an object, and a large one is already on the large list, which the marker and the
    /// sweep read.
    #[inline]
    pub(crate) unsafe fn alloc<T: Trace + 'static>(&self) -> NonNull<u8> {
        let class = const { slot_class::<T>() };
        let size = match class {
            Some(c) => CLASS_SIZE[c],
            None => size_of::<GcBox<T>>(),
        };
        let allocated = self.allocated.get() + size;
        self.allocated.set(allocated);
        if allocated >= self.next_check.get() {
            self.pace();
        }
        // Find the slot first: a `Drop` run by a lazy sweep may panic out of here, and then
        // no object was made.
        let slot = match class {
            Some(c) => match self.pop_free(c) {
                Some(slot) => slot,
                None => self.alloc_slow(c),
            },
            // SAFETY: the caller's promise (the large list holds the memory from here on).
            None => unsafe { self.alloc_large(Layout::new::<GcBox<T>>()) },
        };
        self.objects.set(self.objects.get() + 1);
        self.bytes.set(self.bytes.get() + size);
        if let Phase::Marking { .. } = self.phase.get() {
            // Born black: alive for this cycle.
            self.marked_objects.set(self.marked_objects.get() + 1);
            self.marked_bytes.set(self.marked_bytes.get() + size);
        }
        slot
    }

    /// A slot off class `c`'s free list (16-byte aligned, of the class's size), if it has one.
    #[inline]
    fn pop_free(&self, c: usize) -> Option<NonNull<u8>> {
        // SAFETY: the borrow ends in this function, and runs no user code.
        let cl = unsafe { self.class(c) };
        let slot = NonNull::new(cl.free)?;
        // SAFETY: a slot on the free list is free and links the next one.
        cl.free = unsafe { *link(slot.as_ptr()) };
        Some(slot.cast())
    }

    /// The class's free list is empty: sweep its pages until one yields a slot, or take a new
    /// page.
    #[cold]
    fn alloc_slow(&self, c: usize) -> NonNull<u8> {
        loop {
            if let Some(slot) = self.pop_free(c) {
                return slot;
            }
            // SAFETY: a read of one field; the borrow ends before the sweep runs any `Drop`.
            if unsafe { self.class(c) }.unswept == 0 || self.busy.get() {
                break;
            }
            self.sweep_next(c);
        }
        self.add_page(c);
        self.alloc_slow(c)
    }

    /// Give class `c` a fresh page (a spare one or a new one from mallard), all slots free.
    fn add_page(&self, c: usize) {
        // SAFETY: no other reference to the spare pool is live.
        let page = match unsafe { (*self.spare.get()).pop() } {
            Some(p) => p,
            None => {
                self.heap_bytes.set(self.heap_bytes.get() + PAGE_SIZE);
                raw_alloc(PAGE_LAYOUT)
            }
        };
        // SAFETY: the borrow ends in this function, and runs no user code.
        let cl = unsafe { self.class(c) };
        // SAFETY: the page is ours and starts with room for its header.
        unsafe { page.cast::<PageHeader>().write(PageHeader { rooted: Cell::new(0) }) };
        let mut free = cl.free;
        for i in (0..slots(cl.slot)).rev() {
            // SAFETY: slot `i` lies inside the page.
            unsafe {
                let slot = slot_at(page, cl.slot, i);
                ptr::addr_of_mut!((*slot).vtable).write(Cell::new(ptr::null()));
                link(slot).write(free);
                free = slot;
            }
        }
        cl.free = free;
        cl.pages.push(page); // after `unswept`: a fresh page counts as swept
    }

    /// Memory for one large object, already on the large list.
    ///
    /// # Safety
    /// As for `alloc`: the caller writes the object before the collector runs again.
    #[cold]
    unsafe fn alloc_large(&self, layout: Layout) -> NonNull<u8> {
        let p = raw_alloc(layout);
        self.heap_bytes.set(self.heap_bytes.get() + layout.size());
        // SAFETY: no other reference to the large list is live.
        unsafe { (*self.large.get()).push(p.cast()) };
        p
    }
}
