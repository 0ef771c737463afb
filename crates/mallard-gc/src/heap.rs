//! The collected heap of one thread: pages of size-class slots, the marker and the sweeper.
//!
//! **Memory.** Objects up to `MAX_SLOT` bytes (header included) live in 64 KiB pages taken
//! from mallard, one size class per page, with mallard's class table (so the rounding waste is
//! mallard's: at most 1/8 above 128 bytes). Bigger or over-aligned objects are allocated from
//! mallard one by one. Every object starts with a `Header`: its type's `VTable` (null in a free
//! slot), its count of rooted handles, and its mark.
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
//!
//! **Sweeping** is lazy. When marking ends, every page is marked unswept; the allocator sweeps
//! a page of a class when that class runs out of free slots, running the `Drop` of its dead
//! objects and putting their slots on the class's free list. A page left empty goes to a small
//! spare pool, and back to mallard beyond it. Large objects are swept at once when marking
//! ends. The next cycle finishes the sweep before it starts, and `collect()` finishes it too,
//! so after `collect()` every unreachable object has been dropped.
//!
//! **Re-entrancy.** A `Drop` run by the sweep may allocate, clone and drop handles, and borrow
//! cells; while it runs, `busy` is set and the heap does no collector work (allocation takes a
//! fresh page instead of sweeping, `collect()` returns at once). No `&mut` into the heap's
//! state is held across a `Drop`.

use crate::stats::{Pauses, Stats};
use crate::trace::{Trace, Visitor, Walk};
use crate::Config;
use mallard::raw::{class_of, CLASS_SIZE};
use std::alloc::Layout;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};
use std::time::Instant;

/// Bytes of a page: a multiple of every class up to `MAX_SLOT` is not needed (the tail is
/// unused); 64 KiB keeps that tail under 1/16 of the page for every class.
pub(crate) const PAGE_SIZE: usize = 64 * 1024;
/// The largest slot served from pages; bigger objects are allocated one by one.
pub(crate) const MAX_SLOT: usize = 4096;
/// Slots in pages are 16-byte aligned (every class is a multiple of 16).
const SLOT_ALIGN: usize = 16;
const CLASSES: usize = class_of(MAX_SLOT) + 1;
/// Empty pages kept for reuse beyond which they go back to mallard.
const SPARE_PAGES: usize = 4;

/// The first 16 bytes of every object (and of every free slot, where `vtable` is null and the
/// second word links the free list).
#[repr(C)]
pub(crate) struct Header {
    vtable: Cell<*const VTable>,
    roots: Cell<u32>,
    mark: Cell<u8>,
    /// `LARGE` for an object allocated one by one (not in a page).
    flags: Cell<u8>,
}

const LARGE: u8 = 1;

const _: () = assert!(size_of::<Header>() == 16);

/// The first 16 bytes of a page; slots follow.
#[repr(C)]
struct PageHeader {
    /// Objects in the page with a root count above zero: the root scan skips pages without.
    rooted: Cell<u32>,
}

/// Where a page's first slot begins.
const FIRST_SLOT: usize = 16;
const _: () = assert!(size_of::<PageHeader>() <= FIRST_SLOT);

/// The slots of a page of `slot`-byte objects.
const fn slots(slot: usize) -> usize {
    (PAGE_SIZE - FIRST_SLOT) / slot
}

/// Slot `i` of `page`.
///
/// # Safety
/// `i < slots(slot)`.
#[inline]
unsafe fn slot_at(page: NonNull<u8>, slot: usize, i: usize) -> *mut Header {
    // SAFETY: per the contract the slot lies inside the page.
    unsafe { page.as_ptr().add(FIRST_SLOT + i * slot).cast() }
}

/// The header of the page holding `object` (pages are `PAGE_SIZE`-aligned).
///
/// # Safety
/// `object` heads an object in a page (not a large one).
#[inline]
unsafe fn page_of<'a>(object: NonNull<Header>) -> &'a PageHeader {
    // SAFETY: per the contract; the pointer keeps the page allocation's provenance.
    unsafe { &*object.as_ptr().map_addr(|a| a & !(PAGE_SIZE - 1)).cast::<PageHeader>() }
}

impl Header {
    /// Count one more rooted handle to `object`.
    ///
    /// # Safety
    /// `object` heads a live object.
    #[inline]
    pub(crate) unsafe fn add_root(object: NonNull<Header>) {
        // SAFETY: per the contract.
        let h = unsafe { object.as_ref() };
        let n = h.roots.get();
        if n == u32::MAX {
            // Like `Rc`: a count this high means handles are being leaked; wrapping would free
            // a live object.
            std::process::abort();
        }
        if n == 0 && h.flags.get() & LARGE == 0 {
            // SAFETY: a page object.
            let page = unsafe { page_of(object) };
            page.rooted.set(page.rooted.get() + 1);
        }
        h.roots.set(n + 1);
    }

    /// Count one rooted handle to `object` less.
    ///
    /// # Safety
    /// `object` heads a live object with a rooted handle.
    #[inline]
    pub(crate) unsafe fn remove_root(object: NonNull<Header>) {
        // SAFETY: per the contract.
        let h = unsafe { object.as_ref() };
        let n = h.roots.get() - 1;
        h.roots.set(n);
        if n == 0 && h.flags.get() & LARGE == 0 {
            // SAFETY: a page object.
            let page = unsafe { page_of(object) };
            page.rooted.set(page.rooted.get() - 1);
        }
    }
}

/// What the collector needs to know about an object's type.
pub(crate) struct VTable {
    trace: unsafe fn(NonNull<Header>, &mut Visitor),
    /// `None` for types without drop glue: their slots are freed without a call.
    drop: Option<unsafe fn(NonNull<Header>)>,
    /// Size and alignment of the whole `GcBox<T>`.
    size: usize,
    align: usize,
    /// Bytes the object takes: its slot's size, or its own size if allocated one by one.
    footprint: usize,
}

/// An object: its header, then its value.
#[repr(C)]
pub(crate) struct GcBox<T> {
    pub(crate) header: Header,
    pub(crate) value: T,
}

impl<T: Trace + 'static> GcBox<T> {
    const VTABLE: VTable = VTable {
        trace: Self::trace_value,
        drop: if T::DROP_IN_SWEEP { Some(Self::drop_value) } else { None },
        size: size_of::<GcBox<T>>(),
        align: align_of::<GcBox<T>>(),
        footprint: match slot_class::<T>() {
            Some(c) => CLASS_SIZE[c],
            None => size_of::<GcBox<T>>(),
        },
    };

    /// # Safety
    /// `h` heads a live `GcBox<T>`.
    unsafe fn trace_value(h: NonNull<Header>, v: &mut Visitor) {
        // SAFETY: per the contract.
        unsafe { (*h.cast::<GcBox<T>>().as_ptr()).value.trace(v) }
    }

    /// # Safety
    /// `h` heads a live `GcBox<T>` that nothing will use again.
    unsafe fn drop_value(h: NonNull<Header>) {
        // SAFETY: per the contract.
        unsafe { ptr::drop_in_place(&mut (*h.cast::<GcBox<T>>().as_ptr()).value) }
    }

    /// Write a new object with one root into `slot`, born black (`epoch`).
    ///
    /// # Safety
    /// `slot` is fresh memory sized and aligned for `GcBox<T>`.
    pub(crate) unsafe fn init(slot: NonNull<u8>, value: T, epoch: u8) -> NonNull<GcBox<T>> {
        let boxed = slot.cast::<GcBox<T>>();
        let large = slot_class::<T>().is_none();
        // SAFETY: per the contract.
        unsafe {
            boxed.as_ptr().write(GcBox {
                header: Header {
                    vtable: Cell::new(&Self::VTABLE),
                    roots: Cell::new(0),
                    mark: Cell::new(epoch),
                    flags: Cell::new(if large { LARGE } else { 0 }),
                },
                value,
            });
            Header::add_root(boxed.cast());
        }
        boxed
    }
}

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

/// Whether `GcBox<T>` lives in a page slot, and which class.
const fn slot_class<T>() -> Option<usize> {
    let size = size_of::<GcBox<T>>();
    if size <= MAX_SLOT && align_of::<GcBox<T>>() <= SLOT_ALIGN {
        Some(class_of(size))
    } else {
        None
    }
}

/// The pages of one size class.
struct Class {
    slot: usize,
    /// Free slots ready to allocate, linked through their headers' second word.
    free: *mut Header,
    pages: Vec<NonNull<u8>>,
    /// `pages[..unswept]` wait for the sweep; the rest are swept (or fresh).
    unswept: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    /// Root scan at (class, page), then `large` from index `large`, then tracing.
    Marking {
        class: usize,
        page: usize,
        large: usize,
    },
}

pub(crate) struct Heap {
    classes: [UnsafeCell<Class>; CLASSES],
    /// Objects allocated one by one (the large list); swept when marking ends.
    large: UnsafeCell<Vec<NonNull<Header>>>,
    /// Empty pages kept for reuse by any class.
    spare: UnsafeCell<Vec<NonNull<u8>>>,
    epoch: Cell<u8>,
    phase: Cell<Phase>,
    worklist: UnsafeCell<Vec<NonNull<Header>>>,
    /// Collector code is running a `Drop` (or is itself running): no nested collector work.
    busy: Cell<bool>,
    config: Cell<Config>,
    /// Objects and bytes allocated and not yet swept.
    objects: Cell<usize>,
    bytes: Cell<usize>,
    /// Bytes ever allocated (the clock that paces the collector).
    allocated: Cell<usize>,
    /// When `allocated` reaches this, `pace` runs.
    next_check: Cell<usize>,
    /// `allocated` at the last incremental slice.
    last_slice: Cell<usize>,
    /// A cycle starts when `bytes` exceeds this.
    threshold: Cell<usize>,
    /// Marked objects and bytes in the current (or last) cycle.
    marked_objects: Cell<usize>,
    marked_bytes: Cell<usize>,
    live_objects: Cell<usize>,
    live_bytes: Cell<usize>,
    heap_bytes: Cell<usize>,
    collections: Cell<u64>,
    pauses: UnsafeCell<Pauses>,
    /// The first panic of a `Drop` during a sweep, resumed once the sweep is consistent.
    panic: Cell<Option<Box<dyn Any + Send>>>,
    /// The thread is exiting: this is the heap's last collection.
    exiting: Cell<bool>,
}

thread_local! {
    static HEAP: Heap = Heap::new();
    /// Whether this thread's heap is marking: read on every `Gc::clone`, so it is a plain
    /// const thread-local (no lazy initialisation, no destructor).
    static MARKING: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` on this thread's heap.
///
/// # Panics
/// If the thread is exiting and its heap is already gone (a `Gc` created by a thread-local's
/// destructor that runs after the heap's).
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&Heap) -> R) -> R {
    match HEAP.try_with(|h| h as *const Heap) {
        // SAFETY: the heap lives until the thread's destructors reach it, and this thread is
        // using it now, so not there yet. (Going through a pointer lets `f` re-enter `with`.)
        Ok(h) => f(unsafe { &*h }),
        Err(_) => panic!("mallard_gc: this thread's collected heap was destroyed at thread exit"),
    }
}

/// Whether this thread's collector is marking (so the write barrier must shade).
#[inline]
pub(crate) fn marking() -> bool {
    MARKING.with(|m| m.get())
}

/// Shade `header`'s object: if it is white, mark it and put it on the worklist.
#[inline]
pub(crate) fn shade(h: &Heap, header: NonNull<Header>) {
    // SAFETY: `header` heads a live object (every caller reached it through a handle).
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
unsafe fn raw_free(p: NonNull<u8>, layout: Layout) {
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

const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
    Ok(l) => l,
    Err(_) => panic!("page layout"),
};

/// The free-list link in a free slot's second word.
///
/// # Safety
/// `slot` is a free slot.
unsafe fn link(slot: *mut Header) -> *mut *mut Header {
    // SAFETY: the second word of the slot's 16-byte header.
    unsafe { (slot as *mut u8).add(8).cast() }
}

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

/// Marks the heap busy for as long as it lives.
struct Busy<'a>(&'a Heap);

impl<'a> Busy<'a> {
    fn enter(h: &'a Heap) -> Option<Busy<'a>> {
        if h.busy.replace(true) {
            None
        } else {
            Some(Busy(h))
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

impl Heap {
    fn new() -> Heap {
        let config = Config::default();
        Heap {
            classes: std::array::from_fn(|c| {
                UnsafeCell::new(Class { slot: CLASS_SIZE[c], free: ptr::null_mut(), pages: Vec::new(), unswept: 0 })
            }),
            large: UnsafeCell::new(Vec::new()),
            spare: UnsafeCell::new(Vec::new()),
            epoch: Cell::new(0),
            phase: Cell::new(Phase::Idle),
            worklist: UnsafeCell::new(Vec::new()),
            busy: Cell::new(false),
            config: Cell::new(config),
            objects: Cell::new(0),
            bytes: Cell::new(0),
            allocated: Cell::new(0),
            next_check: Cell::new(config.min_heap),
            last_slice: Cell::new(0),
            threshold: Cell::new(config.min_heap),
            marked_objects: Cell::new(0),
            marked_bytes: Cell::new(0),
            live_objects: Cell::new(0),
            live_bytes: Cell::new(0),
            heap_bytes: Cell::new(0),
            collections: Cell::new(0),
            pauses: UnsafeCell::new(Pauses::new()),
            panic: Cell::new(None),
            exiting: Cell::new(false),
        }
    }

    /// The class's state. Callers hold the reference only while no user code can run.
    #[allow(clippy::mut_from_ref)]
    fn class(&self, c: usize) -> &mut Class {
        // SAFETY: one thread; callers keep the borrow short (module comment, re-entrancy).
        unsafe { &mut *self.classes[c].get() }
    }

    /// The heap pointer a rooting or unrooting walk needs: this heap while it marks.
    /// The mark a new object is born with.
    #[inline]
    pub(crate) fn epoch(&self) -> u8 {
        self.epoch.get()
    }

    pub(crate) fn barrier(&self) -> *const Heap {
        if matches!(self.phase.get(), Phase::Marking { .. }) {
            self
        } else {
            ptr::null()
        }
    }

    /// Memory for one `GcBox<T>`. May do collector work first.
    #[inline]
    pub(crate) fn alloc<T: Trace + 'static>(&self) -> NonNull<u8> {
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
            Some(c) => {
                let cl = self.class(c);
                let slot = cl.free;
                if slot.is_null() {
                    self.alloc_slow(c)
                } else {
                    // SAFETY: a slot on the free list is free and links the next one.
                    cl.free = unsafe { *link(slot) };
                    // SAFETY: `slot` is a 16-byte-aligned slot of at least `size` bytes.
                    unsafe { NonNull::new_unchecked(slot.cast()) }
                }
            }
            None => self.alloc_large(Layout::new::<GcBox<T>>()),
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

    /// The class's free list is empty: sweep its pages until one yields a slot, or take a new
    /// page.
    #[cold]
    fn alloc_slow(&self, c: usize) -> NonNull<u8> {
        loop {
            let cl = self.class(c);
            if !cl.free.is_null() {
                let slot = cl.free;
                // SAFETY: a slot on the free list is free and links the next one.
                cl.free = unsafe { *link(slot) };
                // SAFETY: non-null.
                return unsafe { NonNull::new_unchecked(slot.cast()) };
            }
            if cl.unswept == 0 || self.busy.get() {
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
        let cl = self.class(c);
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

    #[cold]
    fn alloc_large(&self, layout: Layout) -> NonNull<u8> {
        let p = raw_alloc(layout);
        self.heap_bytes.set(self.heap_bytes.get() + layout.size());
        // SAFETY: no other reference to the large list is live.
        unsafe { (*self.large.get()).push(p.cast()) };
        p
    }

    /// Sweep the next unswept page of class `c`, adding its free slots to the class's list.
    fn sweep_next(&self, c: usize) {
        let (page, slot) = {
            let cl = self.class(c);
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
        let cl = self.class(c);
        if live == 0 {
            // Empty: give the page up (it is at `unswept`, the swept side, so the swap keeps
            // the unswept pages where they are).
            let at = cl.unswept;
            cl.pages.swap_remove(at);
            self.release_page(page);
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

    fn release_page(&self, page: NonNull<u8>) {
        // SAFETY: no other reference to the spare pool is live.
        let spare = unsafe { &mut *self.spare.get() };
        if spare.len() < SPARE_PAGES {
            spare.push(page);
        } else {
            self.heap_bytes.set(self.heap_bytes.get() - PAGE_SIZE);
            // SAFETY: pages come from `raw_alloc(PAGE_LAYOUT)`.
            unsafe { raw_free(page, PAGE_LAYOUT) };
        }
    }

    /// Sweep every page still waiting (before a cycle starts, and in `collect`).
    fn finish_sweep(&self) {
        for c in 0..CLASSES {
            while self.class(c).unswept > 0 {
                self.sweep_next(c);
            }
        }
    }

    /// Free the dead large objects.
    fn sweep_large(&self) {
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
            // SAFETY: a large object's vtable is set; the object is dead and off the list.
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

    /// Start a cycle: finish the sweep, turn everything white, begin the root scan.
    fn begin_mark(&self) {
        self.finish_sweep();
        self.epoch.set(self.epoch.get() ^ 1);
        self.marked_objects.set(0);
        self.marked_bytes.set(0);
        self.phase.set(Phase::Marking { class: 0, page: 0, large: 0 });
        MARKING.with(|m| m.set(true));
        self.last_slice.set(self.allocated.get());
    }

    /// Do up to `budget` bytes of marking work; true when marking is complete.
    fn mark_slice(&self, mut budget: isize) -> bool {
        // The root scan: shade every object with a rooted handle.
        while let Phase::Marking { mut class, mut page, mut large } = self.phase.get() {
            if class < CLASSES {
                let cl = self.class(class);
                if page >= cl.pages.len() {
                    class += 1;
                    page = 0;
                } else {
                    let base = cl.pages[page];
                    let slot = cl.slot;
                    // SAFETY: the page starts with its header.
                    let mut rooted = unsafe { base.cast::<PageHeader>().as_ref().rooted.get() };
                    let mut i = 0;
                    let n = slots(slot);
                    while rooted > 0 && i < n {
                        // SAFETY: slot `i` lies inside the page and holds a header.
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
            } else {
                // SAFETY: the borrow ends before shading (which touches only the worklist).
                let next = unsafe { (&*self.large.get()).get(large).copied() };
                match next {
                    Some(h) => {
                        // SAFETY: objects on the large list are live.
                        if unsafe { h.as_ref().roots.get() } > 0 {
                            shade(self, h);
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
        let mut visitor = Visitor { walk: Walk::Mark, heap: self };
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
    fn finish_mark(&self) {
        self.phase.set(Phase::Idle);
        MARKING.with(|m| m.set(false));
        self.collections.set(self.collections.get() + 1);
        self.live_objects.set(self.marked_objects.get());
        self.live_bytes.set(self.marked_bytes.get());
        for c in 0..CLASSES {
            let cl = self.class(c);
            // The free slots on the list are found again by the sweep.
            cl.free = ptr::null_mut();
            cl.unswept = cl.pages.len();
        }
        self.retarget();
        self.sweep_large();
    }

    /// The next cycle starts when the heap reaches `growth` times the live bytes (at least
    /// `min_heap`).
    fn retarget(&self) {
        let config = self.config.get();
        let target = (self.live_bytes.get() as f64 * config.growth) as usize;
        self.threshold.set(target.max(config.min_heap));
        self.schedule();
    }

    /// Set `next_check`: when the heap reaches the threshold, or the next slice is due.
    fn schedule(&self) {
        let allocated = self.allocated.get();
        let next = match self.phase.get() {
            Phase::Idle => allocated + self.threshold.get().saturating_sub(self.bytes.get()).max(1),
            Phase::Marking { .. } => allocated + self.config.get().slice_bytes.max(1),
        };
        self.next_check.set(next);
    }

    /// Collector work paced by allocation: start a cycle when the heap has grown enough, and
    /// while an incremental cycle marks, do a slice of it.
    #[cold]
    fn pace(&self) {
        // Inside a `Drop` run by the sweep: no collector work until it is over.
        if self.busy.get() {
            return;
        }
        let start = Instant::now();
        let config = self.config.get();
        match self.phase.get() {
            Phase::Idle => {
                if self.bytes.get() < self.threshold.get() {
                    self.schedule();
                    return;
                }
                self.begin_mark();
                if !config.incremental {
                    self.mark_slice(isize::MAX);
                    self.finish_mark();
                }
            }
            Phase::Marking { .. } => {
                let since = self.allocated.get() - self.last_slice.get();
                self.last_slice.set(self.allocated.get());
                // Marking must end before the heap outgrows its threshold by half again.
                let overdue = self.bytes.get() > self.threshold.get().saturating_mul(3) / 2;
                let budget = if overdue {
                    isize::MAX
                } else {
                    since.saturating_mul(config.mark_rate).min(isize::MAX as usize) as isize
                };
                if self.mark_slice(budget) {
                    self.finish_mark();
                }
            }
        }
        self.schedule();
        // SAFETY: no other reference to the histogram is live.
        unsafe { (*self.pauses.get()).record(start.elapsed()) };
    }

    /// A full collection: finish any cycle under way, run a whole new one, sweep everything.
    pub(crate) fn collect(&self) {
        if self.busy.get() {
            return;
        }
        let start = Instant::now();
        if matches!(self.phase.get(), Phase::Marking { .. }) {
            self.mark_slice(isize::MAX);
            self.finish_mark();
        }
        self.begin_mark();
        self.mark_slice(isize::MAX);
        self.finish_mark();
        self.finish_sweep();
        self.schedule();
        // SAFETY: no other reference to the histogram is live.
        unsafe { (*self.pauses.get()).record(start.elapsed()) };
    }

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
            moved += self.evacuate_class(c);
        }
        if moved > 0 {
            // Point every handle in the heap at the new places. Handles outside the heap are
            // rooted, and rooted objects did not move.
            let mut visitor = Visitor { walk: Walk::Fixup, heap: self };
            self.each_slot(|h| {
                // SAFETY: a slot holds a header; a live object's vtable traces it.
                unsafe {
                    let vt = (*h).vtable.get();
                    if !vt.is_null() && !ptr::eq(vt, &FORWARDED) {
                        ((*vt).trace)(NonNull::new_unchecked(h), &mut visitor);
                    }
                }
            });
            // SAFETY: a short read of the large list; tracing does not change it.
            for &h in unsafe { &*self.large.get() } {
                // SAFETY: a large object is live and its vtable set.
                unsafe { ((*h.as_ref().vtable.get()).trace)(h, &mut visitor) };
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
        for c in 0..CLASSES {
            let cl = self.class(c);
            cl.free = ptr::null_mut();
            cl.unswept = cl.pages.len();
        }
        drop(busy);
        self.finish_sweep();
        // The point of the call is to give memory back: the spare pages go too.
        self.free_spare_pages();
        moved
    }

    /// Give every spare page back to mallard.
    fn free_spare_pages(&self) {
        // SAFETY: no other reference to the spare pool is live.
        for page in unsafe { (*self.spare.get()).drain(..) } {
            self.heap_bytes.set(self.heap_bytes.get() - PAGE_SIZE);
            // SAFETY: spare pages come from `raw_alloc(PAGE_LAYOUT)` and hold no object.
            unsafe { raw_free(page, PAGE_LAYOUT) };
        }
    }

    /// Call `f` on every slot of every page (free or not). `f` must not add or remove pages.
    fn each_slot(&self, mut f: impl FnMut(*mut Header)) {
        for c in 0..CLASSES {
            let cl = self.class(c);
            for &page in &cl.pages {
                for i in 0..slots(cl.slot) {
                    // SAFETY: slot `i` lies inside the page.
                    f(unsafe { slot_at(page, cl.slot, i) });
                }
            }
        }
    }

    /// Move the unrooted objects of class `c`'s sparsest pages into free slots of its fullest
    /// pages, while the fuller pages have room. Leaves `FORWARDED` behind.
    fn evacuate_class(&self, c: usize) -> usize {
        let cl = self.class(c);
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

    /// Check the heap's invariants; panics with the first one broken. For tests.
    pub(crate) fn validate(&self) {
        let mut objects = 0;
        let mut bytes = 0;
        for c in 0..CLASSES {
            let cl = self.class(c);
            let mut free_slots = 0;
            for &page in &cl.pages {
                let mut rooted = 0;
                for i in 0..slots(cl.slot) {
                    // SAFETY: slot `i` lies inside the page and holds a header.
                    let h = unsafe { &*slot_at(page, cl.slot, i) };
                    if h.vtable.get().is_null() {
                        free_slots += 1;
                        continue;
                    }
                    assert_eq!(h.flags.get() & LARGE, 0, "a large object in a page");
                    objects += 1;
                    bytes += cl.slot;
                    rooted += usize::from(h.roots.get() > 0);
                }
                // SAFETY: the page starts with its header.
                let counted = unsafe { page.cast::<PageHeader>().as_ref().rooted.get() };
                assert_eq!(counted as usize, rooted, "page {page:p} (class {c}) miscounts its rooted objects");
            }
            let mut listed = 0;
            let mut at = cl.free;
            while !at.is_null() {
                // SAFETY: the slots on the free list are free slots in this class's pages.
                unsafe {
                    assert!((*at).vtable.get().is_null(), "a live object on the free list of class {c}");
                    let page = at.map_addr(|a| a & !(PAGE_SIZE - 1)) as *mut u8;
                    assert!(cl.pages.iter().any(|p| p.as_ptr() == page), "a free slot outside class {c}'s pages");
                    at = *link(at);
                }
                listed += 1;
                assert!(listed <= free_slots, "class {c}'s free list is longer than its free slots (a cycle?)");
            }
        }
        // SAFETY: a short read of the large list.
        for &h in unsafe { &*self.large.get() } {
            // SAFETY: objects on the large list are live.
            let h = unsafe { h.as_ref() };
            assert_eq!(h.flags.get() & LARGE, LARGE, "a page object on the large list");
            objects += 1;
            // SAFETY: a live object's vtable is set.
            bytes += unsafe { (*h.vtable.get()).footprint };
        }
        assert_eq!(objects, self.objects.get(), "object count");
        assert_eq!(bytes, self.bytes.get(), "byte count");
    }

    pub(crate) fn configure(&self, config: Config) {
        self.config.set(config);
        self.retarget();
    }

    pub(crate) fn config(&self) -> Config {
        self.config.get()
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            collections: self.collections.get(),
            objects: self.objects.get(),
            bytes: self.bytes.get(),
            live_objects: self.live_objects.get(),
            live_bytes: self.live_bytes.get(),
            heap_bytes: self.heap_bytes.get(),
            marking: matches!(self.phase.get(), Phase::Marking { .. }),
            // SAFETY: no other reference to the histogram is live.
            pauses: unsafe { (*self.pauses.get()).summary() },
        }
    }
}

impl Drop for Heap {
    /// Thread exit: collect once, so garbage is dropped and its memory returned. A `Drop` that
    /// panics here (say, on a thread-local destroyed before the heap) is reported by the panic
    /// hook and otherwise ignored (its payload dropped, or leaked if that panics too): the
    /// collection finishes. Objects still rooted (by handles in other thread-locals, or leaked)
    /// stay where they are, with their pages: a handle dropped later must find its object's
    /// header.
    fn drop(&mut self) {
        self.exiting.set(true);
        self.collect();
        MARKING.with(|m| m.set(false));
        self.free_spare_pages();
    }
}

#[cfg(test)]
mod tests {
    //! The write barrier, step by step: each test stops the marker at the moment a missing
    //! barrier would lose an object, makes the mutation, and finishes the cycle.
    use super::*;
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
        assert!(h.mark_slice(isize::MAX));
        h.finish_mark();
        h.finish_sweep();
    }

    /// Whether the root scan has passed every page of classes up to `class`.
    fn scanned(h: &Heap, up_to: usize) -> bool {
        let Phase::Marking { class, page, .. } = h.phase.get() else { unreachable!() };
        class > up_to || (class == up_to && page >= h.class(class).pages.len())
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
