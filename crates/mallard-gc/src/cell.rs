//! `GcCell<T>`: interior mutability for values in the collected heap.
//!
//! A `RefCell` that keeps the rooting rule of `gc.rs`: while a mutable borrow lasts, the
//! contents are rooted (whatever the program moves out is then a counted root), and when it
//! ends they are unrooted again (whatever was moved in becomes an edge). A cell that is itself
//! outside the heap (`rooted`) keeps its contents rooted all along and skips both walks. The
//! end of a mutable borrow is also the collector's write barrier: while it marks, unrooting
//! shades every handle in the cell, so a marked object never hides an unmarked one.

use crate::heap;
use crate::trace::{Trace, Visitor, Walk};
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::ops::{Deref, DerefMut};

/// The cell is outside the heap: its contents are counted roots.
const ROOTED: usize = 1;
/// A mutable borrow is live (all other bits set).
const WRITING: usize = !ROOTED;
/// One shared borrow.
const READER: usize = 2;

/// A mutable memory location inside the collected heap, with dynamically checked borrows.
///
/// Cost: `borrow_mut` on a cell inside the heap walks its contents twice (rooting them, then
/// unrooting them when the borrow ends), so it costs as much as the handles the cell holds. Keep
/// cells small: a big table is better cut into chunks, each in a cell of its own (the
/// `fragmentation` example keeps 200,000 entries in cells of 16). `borrow` costs nothing extra,
/// and neither does `borrow_mut` on a cell outside the heap.
pub struct GcCell<T: Trace + ?Sized> {
    /// `ROOTED`, and the borrow state in the other bits: 0, a count of readers, or `WRITING`.
    flags: Cell<usize>,
    value: UnsafeCell<T>,
}

/// The error of `try_borrow` and `try_borrow_mut`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BorrowError;

impl fmt::Display for BorrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcCell already borrowed in a conflicting way")
    }
}

impl std::error::Error for BorrowError {}

impl<T: Trace> GcCell<T> {
    /// A new cell holding `value`.
    pub const fn new(value: T) -> GcCell<T> {
        GcCell { flags: Cell::new(ROOTED), value: UnsafeCell::new(value) }
    }

    /// The value, consuming the cell.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    /// Replace the value, returning the old one.
    ///
    /// # Panics
    /// If the cell is borrowed.
    pub fn replace(&self, value: T) -> T {
        std::mem::replace(&mut *self.borrow_mut(), value)
    }
}

impl<T: Trace + ?Sized> GcCell<T> {
    fn borrow_state(&self) -> usize {
        self.flags.get() & !ROOTED
    }

    fn rooted(&self) -> bool {
        self.flags.get() & ROOTED != 0
    }

    /// Borrow the value.
    ///
    /// # Panics
    /// If the cell is mutably borrowed.
    #[track_caller]
    pub fn borrow(&self) -> GcRef<'_, T> {
        match self.try_borrow() {
            Ok(r) => r,
            Err(_) => panic!("GcCell<{}> already mutably borrowed", std::any::type_name::<T>()),
        }
    }

    /// Borrow the value, or fail if it is mutably borrowed.
    pub fn try_borrow(&self) -> Result<GcRef<'_, T>, BorrowError> {
        let state = self.borrow_state();
        if state == WRITING || state == WRITING - READER {
            return Err(BorrowError);
        }
        self.flags.set(self.flags.get() + READER);
        Ok(GcRef { cell: self })
    }

    /// Borrow the value mutably.
    ///
    /// # Panics
    /// If the cell is borrowed.
    #[track_caller]
    pub fn borrow_mut(&self) -> GcRefMut<'_, T> {
        match self.try_borrow_mut() {
            Ok(r) => r,
            Err(_) => panic!("GcCell<{}> already borrowed", std::any::type_name::<T>()),
        }
    }

    /// Borrow the value mutably, or fail if it is borrowed.
    pub fn try_borrow_mut(&self) -> Result<GcRefMut<'_, T>, BorrowError> {
        if self.borrow_state() != 0 {
            return Err(BorrowError);
        }
        self.flags.set(self.flags.get() | WRITING);
        if !self.rooted() {
            // SAFETY: no other borrow is live (the walk only flips handles); the cell is in the
            // heap, and its mutable borrow starts.
            unsafe { walk(&*self.value.get(), Walk::Root) };
        }
        Ok(GcRefMut { cell: self })
    }
}

/// Root or unroot every handle in `value`, shading them if the collector is marking.
///
/// # Safety
/// `value` is the contents of a cell in the heap, and `walk` is `Walk::Root` as a mutable
/// borrow of the cell starts or `Walk::Unroot` as it ends (a handle outside the heap left
/// unrooted would not keep its object alive).
unsafe fn walk<T: Trace + ?Sized>(value: &T, walk: Walk) {
    let heap = if heap::marking() { heap::with(|h| h as *const heap::Heap) } else { std::ptr::null() };
    // SAFETY: this thread's heap, or null; the walk roots or unroots, it does not mark.
    let mut visitor = unsafe { Visitor::new(walk, heap) };
    value.trace(&mut visitor);
}

// SAFETY: visits the contents unless a mutable borrow has them rooted already; flips the cell's
// own state with them, so the contents are rooted exactly when the cell is rooted or written.
unsafe impl<T: Trace + ?Sized> Trace for GcCell<T> {
    const DROP_IN_SWEEP: bool = T::DROP_IN_SWEEP;

    fn trace(&self, visitor: &mut Visitor) {
        let writing = self.borrow_state() == WRITING;
        match visitor.walk() {
            Walk::Mark | Walk::Fixup => {}
            Walk::Root => {
                if self.rooted() {
                    return;
                }
                self.flags.set(self.flags.get() | ROOTED);
            }
            Walk::Unroot => {
                if !self.rooted() {
                    return;
                }
                self.flags.set(self.flags.get() & !ROOTED);
            }
        }
        if !writing {
            // SAFETY: no mutable borrow is live, so reading through a shared reference is fine.
            unsafe { (*self.value.get()).trace(visitor) }
        }
    }
}

/// A shared borrow of a `GcCell`'s value.
pub struct GcRef<'a, T: Trace + ?Sized> {
    cell: &'a GcCell<T>,
}

impl<T: Trace + ?Sized> Deref for GcRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a shared borrow is registered in the flags.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: Trace + ?Sized> Drop for GcRef<'_, T> {
    fn drop(&mut self) {
        self.cell.flags.set(self.cell.flags.get() - READER);
    }
}

/// A mutable borrow of a `GcCell`'s value.
pub struct GcRefMut<'a, T: Trace + ?Sized> {
    cell: &'a GcCell<T>,
}

impl<T: Trace + ?Sized> Deref for GcRefMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mutable borrow is registered in the flags.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T: Trace + ?Sized> DerefMut for GcRefMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the mutable borrow is registered in the flags, and this guard is its only
        // owner.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T: Trace + ?Sized> Drop for GcRefMut<'_, T> {
    fn drop(&mut self) {
        if !self.cell.rooted() {
            // SAFETY: the guard is being dropped, so no reference from it is live; the cell is
            // in the heap, and its mutable borrow ends.
            unsafe { walk(&*self.cell.value.get(), Walk::Unroot) };
        }
        self.cell.flags.set(self.cell.flags.get() & ROOTED);
    }
}

impl<T: Trace + fmt::Debug + ?Sized> fmt::Debug for GcCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_borrow() {
            Ok(v) => f.debug_struct("GcCell").field("value", &&*v).finish(),
            Err(_) => f.debug_struct("GcCell").field("value", &"<borrowed>").finish(),
        }
    }
}

impl<T: Trace + Default> Default for GcCell<T> {
    fn default() -> GcCell<T> {
        GcCell::new(T::default())
    }
}

impl<T: Trace + Clone> Clone for GcCell<T> {
    fn clone(&self) -> GcCell<T> {
        GcCell::new(self.borrow().clone())
    }
}
