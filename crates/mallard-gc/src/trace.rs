//! `Trace`: how the collector finds the handles inside a value, and the impls for std types.
//!
//! One method, `trace`, serves three walks, chosen by the `Visitor`: marking (shade what each
//! handle points to), rooting and unrooting (flip each handle between "a root on the stack" and
//! "an edge inside the heap"; see `gc.rs`). One method for all three keeps them consistent: a
//! walk can only differ from another by what the value holds at the time, and values in the
//! heap change only under `GcCell`, which re-walks what it hands out. (The one deliberate
//! difference: marking skips a cell while it is mutably borrowed, as its contents are roots
//! then.)

use crate::gc::{untag, ROOTED};
use crate::heap::{self, Header};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::ptr::NonNull;

/// A type whose values may hold `Gc` handles.
///
/// Derive it (`#[derive(Trace)]`) rather than writing it by hand.
///
/// # Safety
/// `trace` must call `trace` on every field that owns a handle (directly or inside a container
/// it owns), the same fields on every call, and nothing else: no handle it merely borrows
/// (behind `&`, `Rc`, ...), no allocation or collection. Visiting fewer fields than it owns is
/// safe (the unvisited handles stay roots: a leak, not a dangling pointer); visiting a handle
/// the value does not own, or a different set from one call to the next, is not.
pub unsafe trait Trace {
    /// Visit every handle this value owns.
    fn trace(&self, visitor: &mut Visitor);

    /// Whether the sweep must drop a dead value of this type: false when all it owns is
    /// handles (unrooted in a dead object, so dropping them does nothing), which saves a call
    /// per dead object. Saying false for a type that owns more leaks it; it is never unsound.
    #[doc(hidden)]
    const DROP_IN_SWEEP: bool = std::mem::needs_drop::<Self>();
}

/// Which walk a `trace` call is part of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Walk {
    /// Shade the target of every handle (the collector's mark phase).
    Mark,
    /// Make every handle a root: the value is leaving the heap (a `GcCell` borrowed mutably).
    Root,
    /// Make every handle an edge: the value is entering the heap (`Gc::new`, a `GcCell`'s
    /// mutable borrow ending).
    Unroot,
    /// Point every handle whose object `compact` moved at the object's new place.
    Fixup,
}

/// What a `Trace` impl is handed: it passes it on to the fields it visits.
pub struct Visitor {
    walk: Walk,
    /// The thread's heap while it marks (so rooting and unrooting shade: the write barrier),
    /// null otherwise.
    heap: *const heap::Heap,
}

impl Visitor {
    /// A visitor for one walk.
    ///
    /// # Safety
    /// `heap` is this thread's heap, or null; not null for `Walk::Mark`.
    #[inline]
    pub(crate) unsafe fn new(walk: Walk, heap: *const heap::Heap) -> Visitor {
        Visitor { walk, heap }
    }

    #[inline]
    pub(crate) fn walk(&self) -> Walk {
        self.walk
    }

    /// Visit one handle: its object's address, tagged with `ROOTED` (see `gc.rs`).
    ///
    /// # Safety
    /// `handle` is a `Gc`'s pointer, to a live object.
    #[inline]
    pub(crate) unsafe fn visit_handle(&mut self, handle: &Cell<NonNull<Header>>) {
        let tagged = handle.get();
        let rooted = tagged.addr().get() & ROOTED != 0;
        // SAFETY: a handle's pointer.
        let object = unsafe { untag(tagged) };
        // SAFETY: the object is live (the contract), and `heap` is this thread's heap, or null
        // outside marking (`Visitor::new`).
        unsafe {
            match self.walk {
                Walk::Mark => heap::shade(&*self.heap, object),
                Walk::Fixup => {
                    if let Some(to) = heap::forwarded(object) {
                        handle.set(to.map_addr(|a| a | (tagged.addr().get() & ROOTED)));
                    }
                }
                Walk::Root => {
                    if !rooted {
                        handle.set(tagged.map_addr(|a| a | ROOTED));
                        Header::add_root(object);
                    }
                    if let Some(heap) = self.heap.as_ref() {
                        heap::shade(heap, object);
                    }
                }
                Walk::Unroot => {
                    if rooted {
                        handle.set(object);
                        Header::remove_root(object);
                    }
                    if let Some(heap) = self.heap.as_ref() {
                        heap::shade(heap, object);
                    }
                }
            }
        }
    }
}

/// `Trace` for types that hold no handles.
macro_rules! leaf {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: the type holds no handles.
        unsafe impl Trace for $t {
            #[inline(always)]
            fn trace(&self, _: &mut Visitor) {}
        }
    )*};
}

leaf!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    str,
    std::path::PathBuf,
    std::path::Path,
    std::ffi::OsString,
    std::ffi::CString,
    std::time::Duration,
    std::time::Instant,
    std::time::SystemTime,
    std::num::NonZeroU8,
    std::num::NonZeroU16,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroUsize,
    std::num::NonZeroI32,
    std::num::NonZeroI64,
    std::sync::atomic::AtomicBool,
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicI64,
    std::sync::atomic::AtomicU32,
    std::sync::atomic::AtomicI32,
);

// SAFETY: a shared reference owns nothing; the handles behind it belong to someone else.
unsafe impl<T: ?Sized> Trace for &'static T {
    #[inline(always)]
    fn trace(&self, _: &mut Visitor) {}
}

// SAFETY: holds no value.
unsafe impl<T: ?Sized> Trace for std::marker::PhantomData<T> {
    #[inline(always)]
    fn trace(&self, _: &mut Visitor) {}
}

// SAFETY: a `Copy` type owns no handle (`Gc` is not `Copy`), and `Cell` lends none out.
unsafe impl<T: Copy> Trace for Cell<T> {
    #[inline(always)]
    fn trace(&self, _: &mut Visitor) {}
}

// SAFETY: visits what the box owns.
unsafe impl<T: Trace + ?Sized> Trace for Box<T> {
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        (**self).trace(v)
    }
}

// SAFETY: visits every element the slice owns.
unsafe impl<T: Trace> Trace for [T] {
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        for x in self {
            x.trace(v)
        }
    }
}

// SAFETY: visits every element the array owns.
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    const DROP_IN_SWEEP: bool = T::DROP_IN_SWEEP;
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        for x in self {
            x.trace(v)
        }
    }
}

// SAFETY: visits the value if there is one.
unsafe impl<T: Trace> Trace for Option<T> {
    const DROP_IN_SWEEP: bool = T::DROP_IN_SWEEP;
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        if let Some(x) = self {
            x.trace(v)
        }
    }
}

// SAFETY: visits whichever value is there.
unsafe impl<T: Trace, E: Trace> Trace for Result<T, E> {
    const DROP_IN_SWEEP: bool = T::DROP_IN_SWEEP || E::DROP_IN_SWEEP;
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        match self {
            Ok(x) => x.trace(v),
            Err(e) => e.trace(v),
        }
    }
}

/// `Trace` for sequences whose `iter()` yields every owned element.
macro_rules! sequence {
    ($($c:ident),*) => {$(
        // SAFETY: visits every element the container owns.
        unsafe impl<T: Trace> Trace for $c<T> {
            #[inline]
            fn trace(&self, v: &mut Visitor) {
                for x in self.iter() {
                    x.trace(v)
                }
            }
        }
    )*};
}

sequence!(Vec, VecDeque, LinkedList, BinaryHeap, BTreeSet);

// SAFETY: visits every element the set owns.
unsafe impl<T: Trace, S> Trace for HashSet<T, S> {
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        for x in self.iter() {
            x.trace(v)
        }
    }
}

// SAFETY: visits every key and value the map owns.
unsafe impl<K: Trace, V: Trace, S> Trace for HashMap<K, V, S> {
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        for (k, x) in self.iter() {
            k.trace(v);
            x.trace(v);
        }
    }
}

// SAFETY: visits every key and value the map owns.
unsafe impl<K: Trace, V: Trace> Trace for BTreeMap<K, V> {
    #[inline]
    fn trace(&self, v: &mut Visitor) {
        for (k, x) in self.iter() {
            k.trace(v);
            x.trace(v);
        }
    }
}

/// `Trace` for tuples: every element.
macro_rules! tuple {
    ($($name:ident)+) => {
        // SAFETY: visits every element the tuple owns.
        unsafe impl<$($name: Trace),+> Trace for ($($name,)+) {
            const DROP_IN_SWEEP: bool = false $(|| $name::DROP_IN_SWEEP)+;
            #[inline]
            #[allow(non_snake_case)]
            fn trace(&self, v: &mut Visitor) {
                let ($($name,)+) = self;
                $($name.trace(v);)+
            }
        }
    };
}

tuple!(A);
tuple!(A B);
tuple!(A B C);
tuple!(A B C D);
tuple!(A B C D E);
tuple!(A B C D E F);
tuple!(A B C D E F G);
tuple!(A B C D E F G H);
