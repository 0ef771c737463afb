//! mallard: a fast, thread-caching heap allocator.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: mallard::Mallard = mallard::Mallard;
//! ```
//!
//! That is all a program needs: every allocation (`Box`, `Vec`, `String`, …) is then mallard's.
//! A whole program, with a look at the heap:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: mallard::Mallard = mallard::Mallard;
//!
//! fn main() {
//!     let squares: Vec<u64> = (0..1_000_000).map(|i| i * i).collect();
//!     let s = mallard::stats();
//!     assert!(s.in_use_bytes >= 8_000_000, "the vector's 8 MB are mallard's");
//!     println!("{} bytes in use, {} mapped", s.in_use_bytes, s.mapped_bytes);
//!     drop(squares);
//!     mallard::collect(true); // give free memory back to the OS now
//! }
//! ```
//!
//! Besides [`Mallard`], the crate offers the allocator's statistics ([`stats`],
//! [`print_stats`]), giving free memory back now ([`collect`]) or after a delay of your choice
//! ([`set_purge_delay_ms`], [`set_background_purge`]), and [`usable_size`]. Misuse that would
//! corrupt the heap (a double free, a free of a pointer it did not hand out) stops the
//! program with one line on stderr.

// The modules, bottom up, as DESIGN.md's "Layers" draws them (tests/layers.rs holds the code
// to it: a module names only modules of lower layers): config; lock, list, segment_map; os
// (every system call and line of assembly); block; size_class; stats, misuse; mitigations;
// page; chunk, segment; backend (with huge, zero, purger); heap; alloc; global; raw (the
// unsafe interface of mallard's own crates). The allocator never allocates for itself:
// metadata lives in segment headers and in memory taken straight from the page source.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
// Templates of statics (`Page::EMPTY`, empty queues) are consts with cells on purpose.
#![allow(clippy::declare_interior_mutable_const, clippy::needless_range_loop, clippy::new_without_default)]
#![allow(clippy::manual_is_multiple_of)]
// `a % b == 0` reads as the arithmetic it is
// Under the model checker only the page and what it needs are built (`sync`).
#![cfg_attr(loom, allow(dead_code, unused_imports, unreachable_pub))]

// The targets mallard runs on: Linux on x86-64 and aarch64 (glibc or musl), tested; macOS on
// the same two, compiled in CI but untested. Elsewhere a clear error, not a pile of them.
#[cfg(not(all(
    any(target_os = "linux", target_os = "macos"),
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_pointer_width = "64"
)))]
compile_error!(concat!(
    "mallard does not support the target ",
    env!("MALLARD_TARGET"),
    ": it runs on Linux (x86_64, aarch64; glibc or musl) and, untested, macOS (x86_64, aarch64)"
));

// What the model checker builds (`--cfg loom`, see `sync`): the page and what it needs.
mod block;
mod config;
mod lock;
mod misuse;
mod mitigations;
mod os;
mod page;
mod sync;

/// The rest of the crate, which the model checker does not build.
macro_rules! beyond_the_page {
    ($($(#[$attr:meta])* $vis:vis mod $name:ident;)*) => {
        $( #[cfg(not(loom))] $(#[$attr])* $vis mod $name; )*
    };
}

beyond_the_page! {
    mod alloc;
    mod backend;
    mod chunk;
    mod global;
    mod heap;
    mod list;
    #[doc(hidden)]
    pub mod raw;
    mod segment;
    mod segment_map;
    mod size_class;
    mod stats;
}

#[cfg(not(loom))]
pub use global::Mallard;
#[cfg(not(loom))]
pub use stats::Stats;

#[cfg(not(loom))]
/// A snapshot of the global allocator's statistics, summed over all threads (the chunk-heap
/// figures are the calling thread's). Does not allocate.
pub fn stats() -> Stats {
    let mut s = global::GLOBAL_BACKEND.stats();
    s.resident_bytes = os::resident_bytes();
    let (n, bytes, largest) = global::thread_heap().chunk_figures();
    (s.free_chunks, s.free_chunk_bytes, s.largest_free_chunk) = (n as i64, bytes as i64, largest as i64);
    s
}

#[cfg(not(loom))]
/// Collects the calling thread's pending frees (its quarantine in the secure build, remote
/// frees into its pages and chunks) and
/// gives free memory back to the OS: with `force`, all free memory of this thread's heap and
/// of the process-wide caches (and every segment abandoned by exited threads is taken over
/// first); without, only what has stayed free longer than the purge delay. Free memory of
/// other live threads' heaps is purged by those threads as they allocate.
pub fn collect(force: bool) {
    let heap = global::thread_heap();
    let now = os::now_ms();
    if heap.is_placeholder() {
        global::GLOBAL_BACKEND.purge(now, force);
    } else {
        alloc::flush_quarantine(heap);
        heap.collect(force);
        heap.purge(now, force);
    }
}

#[cfg(not(loom))]
/// Sets how long free memory stays committed before it is purged, in milliseconds (default
/// `config::PURGE_DELAY_MS`; 0 purges at the first chance).
pub fn set_purge_delay_ms(ms: u64) {
    global::GLOBAL_BACKEND.set_purge_delay_ms(ms);
}

#[cfg(not(loom))]
/// Turns the background purger on or off (see `purger`): a thread, started when there is free
/// memory to give back and gone when there is none, that gives it back after the purge delay
/// even while the program makes no allocator calls. Off by default for `Mallard`; the C
/// library turns it on (`MALLARD_PURGE_THREAD=0` keeps it off).
pub fn set_background_purge(on: bool) {
    global::GLOBAL_BACKEND.purger.set_enabled(on);
}

#[cfg(not(loom))]
/// Writes the global allocator's statistics to stderr, without allocating.
pub fn print_stats() {
    print_stats_to(2);
}

#[cfg(not(loom))]
/// Writes the global allocator's statistics to file descriptor `fd`, without allocating.
pub fn print_stats_to(fd: i32) {
    let mut w = os::FdWriter::new(fd);
    let _ = stats().write_table(&mut w);
}

#[cfg(not(loom))]
/// The usable size of a block returned by `Mallard` (at least the size asked for).
///
/// # Safety
/// `p` is a live block allocated by `Mallard`.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { alloc::usable_size(p) }
}
