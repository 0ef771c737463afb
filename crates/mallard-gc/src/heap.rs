//! The collected heap of one thread: pages of size-class slots, the marker and the sweeper.
//!
//! This module holds the heap's state (`Heap`: the pages of each size class, the large
//! objects, the phase, the figures), gives each thread its heap (`with`), paces the collector
//! (`pace`: when a cycle starts, when a slice of marking runs) and has the entry points the
//! crate calls (`collect`, `stats`, `configure`). The work is in one module a job:
//!
//! - `object`: the header every object starts with, its type's vtable, the slots of a page;
//! - `alloc`: memory: slots from the free lists, pages and large objects from mallard;
//! - `mark`: tricolour, incremental marking and the write barrier;
//! - `sweep`: the lazy sweep, which runs the `Drop` of dead objects and gives pages back;
//! - `compact`: moving objects out of sparse pages, only when asked.
//!
//! **Re-entrancy.** A `Drop` run by the sweep may allocate, clone and drop handles, and borrow
//! cells; while it runs, `busy` is set and the heap does no collector work (allocation takes a
//! fresh page instead of sweeping, `collect()` returns at once). No `&mut` into the heap's
//! state is held across a `Drop` (nor across a `Trace` call): that is the contract of
//! `Heap::class`.

mod alloc;
mod compact;
mod mark;
mod object;
mod sweep;

pub(crate) use compact::forwarded;
pub(crate) use mark::{marking, shade};
pub(crate) use object::{GcBox, Header};

use crate::stats::{Pauses, Stats};
use crate::Config;
use mallard::raw::{class_of, CLASS_SIZE};
use object::{link, slot_at, slots, PageHeader, LARGE, MAX_SLOT, PAGE_SIZE};
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::time::Instant;

const CLASSES: usize = class_of(MAX_SLOT) + 1;

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

    /// The state of class `c`.
    ///
    /// # Safety
    /// No other reference to class `c`'s state is live while the returned one is, and it is
    /// not held across user code (a `Drop` run by the sweep, a `Trace` call), which may
    /// re-enter the heap and take its own.
    #[allow(clippy::mut_from_ref)]
    unsafe fn class(&self, c: usize) -> &mut Class {
        // SAFETY: per the contract; a heap is one thread's (`Heap` is neither `Send` nor `Sync`).
        unsafe { &mut *self.classes[c].get() }
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
                    self.mark(isize::MAX);
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
                self.mark(budget);
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
            self.mark(isize::MAX);
        }
        self.begin_mark();
        self.mark(isize::MAX);
        self.finish_sweep();
        self.schedule();
        // SAFETY: no other reference to the histogram is live.
        unsafe { (*self.pauses.get()).record(start.elapsed()) };
    }

    /// Check the heap's invariants; panics with the first one broken. For tests.
    pub(crate) fn validate(&self) {
        let mut objects = 0;
        let mut bytes = 0;
        for c in 0..CLASSES {
            // SAFETY: the borrow ends in this iteration, and runs no user code.
            let cl = unsafe { self.class(c) };
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
