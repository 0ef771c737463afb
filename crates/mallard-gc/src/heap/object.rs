//! Objects and pages: the header every object starts with, its type's vtable, and where the
//! slots of a page lie.
//!
//! Every object starts with a `Header`: its type's `VTable` (null in a free slot), its count of
//! rooted handles, and its mark. A page starts with a `PageHeader`; its slots follow, all of
//! one class.

use crate::trace::{Trace, Visitor};
use mallard::raw::{class_of, CLASS_SIZE};
use std::cell::Cell;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};

/// Bytes of a page: a multiple of every class up to `MAX_SLOT` is not needed (the tail is
/// unused); 64 KiB keeps that tail under 1/16 of the page for every class.
pub(super) const PAGE_SIZE: usize = 64 * 1024;
/// The largest slot served from pages; bigger objects are allocated one by one.
pub(super) const MAX_SLOT: usize = 4096;
/// Slots in pages are 16-byte aligned (every class is a multiple of 16).
const SLOT_ALIGN: usize = 16;

/// The first 16 bytes of every object (and of every free slot, where `vtable` is null and the
/// second word links the free list).
#[repr(C)]
pub(crate) struct Header {
    pub(super) vtable: Cell<*const VTable>,
    pub(super) roots: Cell<u32>,
    pub(super) mark: Cell<u8>,
    /// `LARGE` for an object allocated one by one (not in a page).
    pub(super) flags: Cell<u8>,
}

pub(super) const LARGE: u8 = 1;

const _: () = assert!(size_of::<Header>() == 16);

/// The first 16 bytes of a page; slots follow.
#[repr(C)]
pub(super) struct PageHeader {
    /// Objects in the page with a root count above zero: the root scan skips pages without.
    pub(super) rooted: Cell<u32>,
}

/// Where a page's first slot begins.
const FIRST_SLOT: usize = 16;
const _: () = assert!(size_of::<PageHeader>() <= FIRST_SLOT);

/// The slots of a page of `slot`-byte objects.
pub(super) const fn slots(slot: usize) -> usize {
    (PAGE_SIZE - FIRST_SLOT) / slot
}

/// Slot `i` of `page`.
///
/// # Safety
/// `i < slots(slot)`.
#[inline]
pub(super) unsafe fn slot_at(page: NonNull<u8>, slot: usize, i: usize) -> *mut Header {
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

/// The free-list link in a free slot's second word.
///
/// # Safety
/// `slot` is a free slot.
pub(super) unsafe fn link(slot: *mut Header) -> *mut *mut Header {
    // SAFETY: the second word of the slot's 16-byte header.
    unsafe { (slot as *mut u8).add(8).cast() }
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
pub(super) struct VTable {
    pub(super) trace: unsafe fn(NonNull<Header>, &mut Visitor),
    /// `None` for types without drop glue: their slots are freed without a call.
    pub(super) drop: Option<unsafe fn(NonNull<Header>)>,
    /// Size and alignment of the whole `GcBox<T>`.
    pub(super) size: usize,
    pub(super) align: usize,
    /// Bytes the object takes: its slot's size, or its own size if allocated one by one.
    pub(super) footprint: usize,
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

/// Whether `GcBox<T>` lives in a page slot, and which class.
pub(super) const fn slot_class<T>() -> Option<usize> {
    let size = size_of::<GcBox<T>>();
    if size <= MAX_SLOT && align_of::<GcBox<T>>() <= SLOT_ALIGN {
        Some(class_of(size))
    } else {
        None
    }
}
