//! The heap lab (issue 8): the classic allocation strategies the talk describes, each a real
//! implementation over a simulated address space, so that one program's allocations can be
//! replayed through all of them and their heaps compared. No memory is touched: a strategy
//! hands out addresses and keeps its own books.
//!
//! Every strategy implements [`Strategy`]. Its heap grows from [`HEAP_BASE`] in steps of whole
//! OS pages, as `brk` does, and gives trailing free space back, so its [`Strategy::footprint`]
//! is what a real process would hold.
//!
//! Strategies so far: address-ordered first fit, next fit (a roving pointer) and best fit,
//! TLSF, all with boundary-tag style headers, splitting and coalescing ([`fit`]); segregated
//! free lists with size classes ([`seg`]); binary buddy ([`buddy`]); and mallard itself
//! ([`own`]).

pub mod buddy;
pub mod fit;
pub mod gen;
pub mod html;
pub mod own;
pub mod profile;
pub mod replay;
pub mod report;
pub mod seg;
pub mod symbols;
pub mod trace;

/// Where every simulated heap starts.
pub const HEAP_BASE: u64 = 0x1000_0000;
/// The OS page: heaps grow and shrink in whole pages.
pub const PAGE: u64 = 4096;

/// An allocation strategy over a simulated address space.
pub trait Strategy {
    /// A short name for tables ("first-fit").
    fn name(&self) -> &'static str;
    /// Places a block of `size` bytes (at least 1) aligned to `align` (a power of two), growing
    /// the heap when nothing fits. Returns the block's address.
    fn alloc(&mut self, size: u64, align: u64) -> u64;
    /// Frees the block at `addr`, which `alloc` returned and was not freed since.
    ///
    /// # Panics
    /// On an address that is not a live block (a bug in the trace or the replay).
    fn free(&mut self, addr: u64);
    /// Bytes of memory the heap holds now: for a heap that grows at its top, from `HEAP_BASE`
    /// to its top.
    fn footprint(&self) -> u64;
    /// The addresses its blocks lie in: `[HEAP_BASE, HEAP_BASE + extent)`. The footprint, unless
    /// the strategy holds address space it does not count (mallard's uncommitted pages).
    fn extent(&self) -> u64 {
        self.footprint()
    }
    /// The trace thread whose events follow (for strategies with a heap per thread).
    fn set_thread(&mut self, _thread: u32) {}
    /// Gives back now what the strategy would give back in time (mallard's purge): the end of
    /// a program that calls `malloc_trim`.
    fn trim(&mut self) {}
    /// Bytes live block `addr` takes from the heap, its header and rounding included.
    fn block_size(&self, addr: u64) -> u64;
    /// The largest free chunk or block inside the heap now (0 if none).
    fn largest_free(&self) -> u64;
    /// The heap now, in address order: every block and free span (for heap maps).
    fn spans(&self) -> Vec<Span>;
    /// Checks the strategy's invariants; panics with what is wrong.
    fn validate(&self);
}

/// A stretch of a heap: a block in use (its whole size, header included) or free space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
    pub free: bool,
}

/// `x` rounded up to a multiple of `a` (a power of two).
pub const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// The strategies the lab has, by name, in the order tables show them.
pub const STRATEGIES: [&str; 7] = ["first-fit", "next-fit", "best-fit", "tlsf", "segregated", "buddy", "mallard"];

/// A fresh strategy by name (one of `STRATEGIES`).
pub fn strategy(name: &str) -> Option<Box<dyn Strategy>> {
    use fit::{FitHeap, Policy};
    Some(match name {
        "first-fit" => Box::new(FitHeap::new(Policy::FirstFit)),
        "next-fit" => Box::new(FitHeap::new(Policy::NextFit)),
        "best-fit" => Box::new(FitHeap::new(Policy::BestFit)),
        "tlsf" => Box::new(FitHeap::new(Policy::Tlsf)),
        "segregated" => Box::new(seg::Segregated::new()),
        "buddy" => Box::new(buddy::Buddy::new()),
        "mallard" => Box::new(own::Mallard::new()?),
        _ => return None,
    })
}
