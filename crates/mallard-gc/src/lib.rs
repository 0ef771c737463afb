//! mallard-gc: a tracing garbage collector on the mallard heap.
//!
//! ```
//! use mallard_gc::{Gc, GcCell, Trace};
//!
//! #[derive(Trace)]
//! struct Node {
//!     name: String,
//!     next: GcCell<Option<Gc<Node>>>,
//! }
//!
//! let a = Gc::new(Node { name: "a".into(), next: GcCell::new(None) });
//! let b = Gc::new(Node { name: "b".into(), next: GcCell::new(Some(a.clone())) });
//! *a.next.borrow_mut() = Some(b.clone()); // a cycle: `Rc` would leak it
//! drop((a, b));
//! mallard_gc::collect();
//! assert_eq!(mallard_gc::stats().live_objects, 0);
//! ```
//!
//! - `Gc<T>` is a handle to a `T` in the collected heap; `GcCell<T>` makes a part of an object
//!   mutable; `Trace` (derived) tells the collector where the handles are.
//! - Roots are tracked precisely: handles outside the heap are counted, handles inside it are
//!   not, and the collector traces from the counted ones (see `gc.rs` for why this is sound).
//! - Mark (explicit worklist, incremental by default, with a write barrier), lazy sweep page by
//!   page. Objects move only in `compact()`, an `unsafe` call for points where the program
//!   holds no reference into the heap (moving and `&T` from `Deref` cannot go together safely).
//! - **One collector per thread.** `Gc<T>` is neither `Send` nor `Sync`; each thread has its
//!   own heap, collections and statistics. A thread's garbage is collected when it exits.
//! - `#[derive(Trace)]` visits every field. `#[trace(skip)]` on a field leaves it out (it need
//!   not implement `Trace`; handles inside it stay roots, so it can only keep objects alive
//!   longer); `#[trace(leaf)]` on a type visits nothing and lets the type implement `Drop`.
//! - `T` in `Gc<T>` is `Sized + 'static` (no `Gc<dyn Trait>` or `Gc<str>` yet).
//!
//! What the compiler refuses, so that no use-after-free is reachable from safe code:
//!
//! A traced type cannot implement `Drop` (its `drop` could read an object the same sweep has
//! freed, or store a handle to one somewhere); put the `Drop` on a `#[trace(leaf)]` field type
//! instead, which holds no unrooted handle.
//!
//! ```compile_fail
//! use mallard_gc::{Gc, Trace};
//! #[derive(Trace)]
//! struct Node { next: Option<Gc<Node>> }
//! impl Drop for Node {
//!     fn drop(&mut self) {}
//! }
//! ```
//!
//! A handle cannot leave its thread:
//!
//! ```compile_fail
//! let g = mallard_gc::Gc::new(1u32);
//! std::thread::spawn(move || drop(g));
//! ```
//!
//! `Trace` cannot be derived for a type whose fields do not implement it (a `RefCell` holding
//! handles would let them move without the collector seeing it: use `GcCell`):
//!
//! ```compile_fail
//! use mallard_gc::{Gc, Trace};
//! use std::cell::RefCell;
//! #[derive(Trace)]
//! struct Node { next: RefCell<Option<Gc<Node>>> }
//! ```

// The derive names `::mallard_gc`; this lets the crate's own tests use it.
extern crate self as mallard_gc;

mod cell;
mod gc;
mod heap;
mod stats;
mod trace;

pub use cell::{BorrowError, GcCell, GcRef, GcRefMut};
pub use gc::Gc;
pub use mallard_gc_derive::Trace;
pub use stats::{PauseStats, Stats};
pub use trace::{Trace, Visitor};

/// How this thread's collector paces itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// A collection starts when the heap's bytes reach `growth` times what the last one found
    /// alive. Default 2.
    pub growth: f64,
    /// ... but not before the heap holds this many bytes. Default 1 MiB.
    pub min_heap: usize,
    /// Mark in slices spread over allocation, instead of all at once. Default true.
    pub incremental: bool,
    /// In incremental mode, a slice runs every `slice_bytes` bytes of allocation ...
    pub slice_bytes: usize,
    /// ... and marks `mark_rate` bytes for every byte allocated since the last one.
    pub mark_rate: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { growth: 2.0, min_heap: 1 << 20, incremental: true, slice_bytes: 64 << 10, mark_rate: 4 }
    }
}

/// Collect now: every object no root reaches is dropped and its memory reused.
///
/// Does nothing when called from a `Drop` that the collector is running.
///
/// # Panics
/// If a `Drop` of a collected object panics (after the sweep has finished, with the first
/// such panic), and if called from a thread-local's destructor that runs after this thread's
/// collector is gone (as `Gc::new`, `stats` and `configure` do).
pub fn collect() {
    heap::with(|h| h.collect())
}

/// Collect, then move objects out of sparse pages into the free slots of fuller ones so the
/// sparse pages empty and go back to mallard (with the few empty pages the heap keeps for
/// reuse): the collector's defragmentation. Returns how many objects moved.
///
/// The collector never moves objects on its own: `Deref` hands out `&T` into objects that
/// only unrooted handles reach, and no safe API can know when such a reference ends. So
/// moving is this explicit call, for a point of the program where no such reference exists
/// (the top of an event loop, between requests, between frames). Objects with a rooted
/// handle (one held outside the heap) never move, and handles stay valid: those in the heap
/// are updated.
///
/// Returns 0 and does nothing when called from a `Drop` that the collector is running.
///
/// # Safety
/// No reference into the collected heap may be live across the call: no `&T` obtained by
/// dereferencing a `Gc` (or anything borrowed from one), no `GcRef` or `GcRefMut`, and no
/// pointer from `Gc::as_ptr` used afterwards. That includes references stored inside objects:
/// a `&'static T` field (which `Trace` does not follow) that points into the heap, say into an
/// object reached from a leaked handle. Handles (`Gc` values) themselves may be held.
///
/// ```
/// use mallard_gc::{Gc, GcCell, Trace};
/// #[derive(Trace)]
/// struct Node { next: GcCell<Option<Gc<Node>>>, n: u64 }
/// let list = Gc::new(Node { next: GcCell::new(None), n: 0 });
/// // ... a long-running program ...
/// // SAFETY: only handles are held here, no reference into the heap.
/// unsafe { mallard_gc::compact() };
/// assert_eq!(list.n, 0);
/// ```
pub unsafe fn compact() -> usize {
    // SAFETY: the caller's promise.
    heap::with(|h| unsafe { h.compact() })
}

/// This thread's collector figures.
pub fn stats() -> Stats {
    heap::with(|h| h.stats())
}

/// Change how this thread's collector paces itself.
pub fn configure(config: Config) {
    heap::with(|h| h.configure(config))
}

/// Check this thread's heap's invariants (rooted counts, free lists, object and byte counts);
/// panics with the first one broken. Slow: for tests.
#[doc(hidden)]
pub fn debug_validate() {
    heap::with(|h| h.validate())
}

/// This thread's pacing.
pub fn config() -> Config {
    heap::with(|h| h.config())
}
