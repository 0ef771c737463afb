//! `Gc<T>`: a handle to an object in the collected heap.
//!
//! **Roots.** A handle is either *rooted* (it lives outside the heap: on the stack, in a `Vec`
//! the program owns, in a static) or *unrooted* (it lives inside another object in the heap).
//! Each object counts its rooted handles (`Header::roots`); the collector's roots are the
//! objects with a count above zero, and it reaches the rest by tracing unrooted handles from
//! them. A handle carries its state in the low bit of its address (`ROOTED`), so it can flip
//! in place when the value holding it moves in or out of the heap:
//!
//! - `Gc::new(value)` unroots every handle in `value` (it is entering the heap) and returns a
//!   rooted handle; `clone` returns a rooted handle; dropping a rooted handle uncounts it.
//! - The only way to change a value in the heap is `GcCell::borrow_mut`, which roots the cell's
//!   contents for as long as the borrow lasts (so whatever is moved out is a counted root) and
//!   unroots them when it ends (so whatever was moved in is an edge again).
//!
//! So every handle outside the heap is counted, and every object a program can reach is either
//! counted or reachable from one that is: the collector frees neither. That is the argument for
//! soundness, and the `Trace` contract (each value visits exactly the handles it owns) is what it
//! rests on. A reference `&T` obtained from a handle borrows the handle, so the handle (and
//! with it the chain of objects up to a root) outlives the reference; the collector moves
//! objects only in `compact()`, whose caller promises that no such reference is live, so the
//! reference stays valid.
//!
//! **Drop.** A collected object's `Drop` runs once, when the sweep reaches it. Types that
//! derive `Trace` cannot implement `Drop` (the derive refuses), so the code that runs is the
//! drop glue of fields (`String`, `Vec`, ...) and the `Drop` of leaf types, which hold no
//! unrooted handle: nothing can reach another collected object or resurrect one.

use crate::heap::{self, GcBox, Header};
use crate::trace::{Trace, Visitor, Walk};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

/// The low bit of a handle: set while the handle is a counted root.
pub(crate) const ROOTED: usize = 1;

/// A handle's object address, without the tag.
///
/// # Safety
/// `tagged` is a handle's pointer (a 16-aligned address, maybe with `ROOTED`).
#[inline]
pub(crate) unsafe fn untag(tagged: NonNull<Header>) -> NonNull<Header> {
    // SAFETY: per the contract the address stays non-zero.
    tagged.map_addr(|a| unsafe { std::num::NonZeroUsize::new_unchecked(a.get() & !ROOTED) })
}

/// A handle to a `T` in the collected heap of this thread.
///
/// Cloning a handle is cheap (a counter increment); the object lives as long as it is
/// reachable from any handle outside the heap. `Gc` is neither `Send` nor `Sync`: each thread
/// has its own collector.
pub struct Gc<T: Trace + 'static> {
    /// The object (its header first), tagged with `ROOTED`.
    ptr: Cell<NonNull<Header>>,
    _marker: PhantomData<*const GcBox<T>>,
}

impl<T: Trace + 'static> Gc<T> {
    /// Move `value` into the collected heap.
    ///
    /// This may run part of a collection first (see `Config`), and so the `Drop` of objects
    /// that became unreachable.
    ///
    /// # Panics
    /// If such a `Drop` panics (the panic is passed on once the heap is consistent), and if
    /// called from a thread-local's destructor that runs after this thread's collector is gone.
    pub fn new(value: T) -> Gc<T> {
        let boxed = heap::with(|h| {
            // Allocate first: allocating can collect, and until `value` is in the heap the
            // handles inside it must still be roots.
            // SAFETY: `init` below fills the slot; in between only a `Trace` walk runs, and
            // that does not allocate or collect.
            let slot = unsafe { h.alloc::<T>() };
            // SAFETY: `barrier` is this thread's heap while it marks, null otherwise.
            let mut visitor = unsafe { Visitor::new(Walk::Unroot, h.barrier()) };
            value.trace(&mut visitor);
            // SAFETY: `slot` is a fresh allocation sized and aligned for `GcBox<T>`.
            unsafe { GcBox::init(slot, value, h.epoch()) }
        });
        Gc { ptr: Cell::new(boxed.cast::<Header>().map_addr(|a| a | ROOTED)), _marker: PhantomData }
    }

    /// The object's address, without the tag.
    #[inline]
    fn object(&self) -> NonNull<Header> {
        // SAFETY: clearing the low bit of a non-null, 16-aligned address leaves it non-null.
        unsafe { untag(self.ptr.get()) }
    }

    #[inline]
    fn boxed(&self) -> &GcBox<T> {
        // SAFETY: the object is alive while a handle to it is (module comment).
        unsafe { self.object().cast::<GcBox<T>>().as_ref() }
    }

    /// Whether two handles point to the same object.
    #[inline]
    pub fn ptr_eq(this: &Gc<T>, other: &Gc<T>) -> bool {
        this.object() == other.object()
    }

    /// The address of the value (for printing and identity, not for access). It stays the same
    /// while the object lives, except across `compact()`, which may move objects that no handle
    /// outside the heap points at.
    #[inline]
    pub fn as_ptr(this: &Gc<T>) -> *const T {
        &this.boxed().value
    }

    /// Whether this handle is a counted root (it lives outside the heap).
    #[doc(hidden)]
    pub fn is_rooted(this: &Gc<T>) -> bool {
        this.ptr.get().addr().get() & ROOTED != 0
    }
}

impl<T: Trace + 'static> Clone for Gc<T> {
    /// A new rooted handle to the same object.
    #[inline]
    fn clone(&self) -> Gc<T> {
        let object = self.object();
        // SAFETY: the object is alive while this handle is.
        unsafe { Header::add_root(object) };
        if heap::marking() {
            // A new root while the collector marks: shade it (the write barrier, `heap/mark.rs`).
            // SAFETY: the object is alive while this handle is, and in this thread's heap.
            heap::with(|h| unsafe { heap::shade(h, object) });
        }
        Gc { ptr: Cell::new(object.map_addr(|a| a | ROOTED)), _marker: PhantomData }
    }
}

impl<T: Trace + 'static> Drop for Gc<T> {
    #[inline]
    fn drop(&mut self) {
        if self.ptr.get().addr().get() & ROOTED != 0 {
            // SAFETY: this rooted handle is counted in the live object.
            unsafe { Header::remove_root(self.object()) };
        }
        // An unrooted handle is an edge inside an object being dropped: nothing to undo, and
        // its target may itself be collected already, so it is not touched.
    }
}

impl<T: Trace + 'static> Deref for Gc<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.boxed().value
    }
}

// SAFETY: visits the one handle it owns.
unsafe impl<T: Trace + 'static> Trace for Gc<T> {
    /// A handle in a dead object is unrooted: dropping it does nothing.
    const DROP_IN_SWEEP: bool = false;

    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        // SAFETY: this handle's pointer; its object is alive while the handle is.
        unsafe { visitor.visit_handle(&self.ptr) };
    }
}

impl<T: Trace + 'static> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: Trace + 'static> std::borrow::Borrow<T> for Gc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: Trace + Default + 'static> Default for Gc<T> {
    fn default() -> Gc<T> {
        Gc::new(T::default())
    }
}

impl<T: Trace + fmt::Debug + 'static> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Trace + fmt::Display + 'static> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: Trace + 'static> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Gc::as_ptr(self), f)
    }
}

impl<T: Trace + PartialEq + 'static> PartialEq for Gc<T> {
    fn eq(&self, other: &Gc<T>) -> bool {
        **self == **other
    }
}

impl<T: Trace + Eq + 'static> Eq for Gc<T> {}

impl<T: Trace + PartialOrd + 'static> PartialOrd for Gc<T> {
    fn partial_cmp(&self, other: &Gc<T>) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: Trace + Ord + 'static> Ord for Gc<T> {
    fn cmp(&self, other: &Gc<T>) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: Trace + std::hash::Hash + 'static> std::hash::Hash for Gc<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
