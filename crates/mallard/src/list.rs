//! An intrusive doubly linked list through its nodes' own `prev`/`next` cells: how a heap
//! keeps its page queues and segment lists without allocating. Owner-thread only.

use core::cell::Cell;
use core::ptr;

/// A node of a `List`: gives access to its link cells.
pub(crate) trait Linked: Sized {
    fn prev(&self) -> &Cell<*mut Self>;
    fn next(&self) -> &Cell<*mut Self>;
}

pub(crate) struct List<T> {
    pub(crate) first: Cell<*mut T>,
    pub(crate) last: Cell<*mut T>,
}

impl<T: Linked> List<T> {
    pub(crate) const EMPTY: List<T> = List { first: Cell::new(ptr::null_mut()), last: Cell::new(ptr::null_mut()) };

    pub(crate) fn push_front(&self, x: &T) {
        let xp = x as *const T as *mut T;
        x.prev().set(ptr::null_mut());
        x.next().set(self.first.get());
        match self.first.get() {
            // SAFETY: list members are valid nodes.
            f if !f.is_null() => unsafe { (*f).prev().set(xp) },
            _ => self.last.set(xp),
        }
        self.first.set(xp);
    }

    pub(crate) fn push_back(&self, x: &T) {
        let xp = x as *const T as *mut T;
        x.next().set(ptr::null_mut());
        x.prev().set(self.last.get());
        match self.last.get() {
            // SAFETY: list members are valid nodes.
            l if !l.is_null() => unsafe { (*l).next().set(xp) },
            _ => self.first.set(xp),
        }
        self.last.set(xp);
    }

    /// Unlinks `x`, which must be on this list.
    pub(crate) fn remove(&self, x: &T) {
        let (prev, next) = (x.prev().get(), x.next().get());
        // SAFETY: list members are valid nodes.
        unsafe {
            if prev.is_null() {
                self.first.set(next)
            } else {
                (*prev).next().set(next)
            }
            if next.is_null() {
                self.last.set(prev)
            } else {
                (*next).prev().set(prev)
            }
        }
        x.prev().set(ptr::null_mut());
        x.next().set(ptr::null_mut());
    }

    pub(crate) fn first(&self) -> Option<&T> {
        // SAFETY: list members are valid nodes.
        unsafe { self.first.get().as_ref() }
    }
}
