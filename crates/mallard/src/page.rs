//! Pages and their sharded free lists.
//!
//! A page is a run of memory inside a segment that serves blocks of one size class. Its free
//! blocks sit on three lists, so that the hot paths never contend:
//! - `free`: the owner allocates from it (the malloc fast path pops it);
//! - `local_free`: the owner frees onto it (the free fast path pushes it);
//! - `thread_free`: other threads free onto it with one atomic push (a remote free).
//!
//! The owner moves `local_free` and `thread_free` to `free` in its slow path (`collect`).
//! A fresh page starts with empty lists and is carved lazily (`extend`), a few KiB at a time,
//! so memory the program never uses is never touched.
//!
//! Invariant (owner's view, no remote free in flight):
//! `used + len(free) + len(local_free) == capacity <= reserved`, and the blocks on
//! `thread_free` are still counted in `used` until they are collected.
//!
//! The low bit of `thread_free` is the `FULL` flag: set by the owner when it moves the page to
//! its full list, cleared by the first remote free that arrives after, which then tells the
//! owning heap (`Heap::remote_hint`) that a full page has room again. Because flag and list
//! head are one word, the freer learns "this page was full" atomically with its push.

use crate::config::EXTEND_BYTES;
use crate::heap::Heap;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};

/// A free block: its first word links to the next free block, its second holds the
/// double-free mark (`crate::misuse::free_mark()`) from the moment it is freed until it is
/// handed out again. Every size class has room for both (16 bytes at least).
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub mark: usize,
}

/// The second word of block `b`, for the free-mark test (`crate::misuse`).
///
/// A live block's second word may hold bytes the program never initialized (padding, a
/// moved `MaybeUninit`); reading them as an integer is undefined behaviour in Rust's model,
/// which the optimizer could exploit once the allocator is inlined into its caller. Natively
/// the load is therefore one instruction of inline assembly, whose result is whatever bits
/// are there. Miri can run no assembly and would flag the read: it gets 0, a value that never
/// equals the mark, so double frees go unseen there (the misuse tests run natively).
///
/// # Safety
/// `b` points at a block of at least 16 bytes.
#[inline(always)]
pub unsafe fn read_mark(b: *const Block) -> usize {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        let v: usize;
        // SAFETY: the block's second word is mapped memory of the block.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [{b} + 8]",
                b = in(reg) b,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    {
        let v: usize;
        // SAFETY: as above.
        unsafe {
            core::arch::asm!("ldr {v}, [{b}, #8]", b = in(reg) b, v = out(reg) v, options(nostack, readonly, preserves_flags, pure));
        }
        v
    }
    #[cfg(miri)]
    {
        let _ = b;
        0
    }
    #[cfg(not(any(miri, target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: as above (no assembly here: the plain read it is).
    unsafe {
        (*b).mark
    }
}

/// Marks block `b` freed: writes the free mark into its second word. Not under Miri: there the
/// pointer a program frees may carry a tag that reaches only the bytes it stored (a `Box` of 8
/// bytes), and a write through the allocator's own pointer would clash with the caller's
/// protected `Box` argument; Miri never reads the mark anyway (see `read_mark`).
///
/// # Safety
/// `b` is a block of at least 16 bytes that the program is freeing.
#[inline(always)]
pub unsafe fn write_mark(b: *mut Block, mark: usize) {
    #[cfg(not(miri))]
    // SAFETY: per the contract.
    unsafe {
        (*b).mark = mark
    };
    #[cfg(miri)]
    let _ = (b, mark);
}

/// `ceil(2^64 / size)` (0 for an unused page).
const fn block_magic(size: usize) -> u64 {
    if size == 0 {
        0
    } else {
        u64::MAX / size as u64 + 1
    }
}

/// `thread_free` tag bit: the page is in its owner's full list.
pub const FULL: usize = 1;

/// An empty `thread_free` list tagged `FULL`.
pub const EMPTY_FULL: *mut Block = ptr::without_provenance_mut(FULL);

/// Tag bit of `Page::owner`: the page is in its heap's full list, so a local free must take
/// the slow path and move it back.
pub const IN_FULL: usize = 1;

/// Two cache lines: the first is written only by the owning thread (the fast paths), the
/// second is what other threads touch (a remote free reads `owner` and `class` and pushes on
/// `thread_free`), so remote frees do not steal the line the owner allocates from.
#[repr(C, align(64))]
pub struct Page {
    // ---- owner's line ----
    pub free: Cell<*mut Block>,
    pub local_free: Cell<*mut Block>,
    /// Blocks handed out and not yet freed-and-collected. Written only by the owner; an atomic
    /// so that `stats()` may read it from another thread.
    pub used: AtomicU32,
    /// Blocks carved so far / blocks that fit.
    pub capacity: Cell<u32>,
    pub reserved: Cell<u32>,
    /// Every block on `free` is zero apart from its link word.
    pub free_is_zero: Cell<bool>,
    /// The memory past `capacity` has not been touched since the OS zeroed it.
    pub fresh: Cell<bool>,
    pub block_size: Cell<usize>,
    /// `ceil(2^64 / block_size)`: `p` starts a block exactly when
    /// `(p - start) * block_magic mod 2^64 < block_magic` (Lemire's divisibility test, exact
    /// for offsets below 2^32), a multiply where `%` would divide.
    pub block_magic: Cell<u64>,
    /// First block of the page.
    pub start: Cell<*mut u8>,
    _line_end: [u8; 8],
    // ---- shared line ----
    /// The owning heap, tagged with `IN_FULL`; null when abandoned (or huge). The free fast
    /// path's one test: equal to the caller's heap means a local free into a non-full page.
    /// Written by the owner (and by whoever reclaims the page), read by remote freers.
    pub owner: AtomicPtr<Heap>,
    pub thread_free: AtomicPtr<Block>,
    /// The size class; read by remote freers and `stats()`.
    pub class: AtomicU8,
    /// Links in the owning heap's page queue (or full list). Owner only, but written so
    /// rarely that they live here, leaving the owner's line to the fast paths.
    pub prev: Cell<*mut Page>,
    pub next: Cell<*mut Page>,
}

const _: () = assert!(core::mem::size_of::<Page>() == 128 && core::mem::offset_of!(Page, owner) == 64);

impl Page {
    pub const EMPTY: Page = Page {
        free: Cell::new(ptr::null_mut()),
        used: AtomicU32::new(0),
        owner: AtomicPtr::new(ptr::null_mut()),
        class: AtomicU8::new(0),
        free_is_zero: Cell::new(false),
        fresh: Cell::new(false),
        local_free: Cell::new(ptr::null_mut()),
        thread_free: AtomicPtr::new(ptr::null_mut()),
        block_size: Cell::new(0),
        block_magic: Cell::new(0),
        capacity: Cell::new(0),
        reserved: Cell::new(0),
        start: Cell::new(ptr::null_mut()),
        _line_end: [0; 8],
        prev: Cell::new(ptr::null_mut()),
        next: Cell::new(ptr::null_mut()),
    };

    /// Prepares the page to serve `class` from `[start, start + len)`.
    pub fn init(&self, owner: *mut Heap, class: usize, block_size: usize, start: *mut u8, len: usize, fresh: bool) {
        self.free.set(ptr::null_mut());
        self.used.store(0, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Relaxed);
        self.class.store(class as u8, Ordering::Relaxed);
        self.free_is_zero.set(false);
        self.fresh.set(fresh);
        self.local_free.set(ptr::null_mut());
        self.thread_free.store(ptr::null_mut(), Ordering::Relaxed);
        self.block_size.set(block_size);
        self.block_magic.set(block_magic(block_size));
        self.capacity.set(0);
        self.reserved.set((len / block_size) as u32);
        self.start.set(start);
        self.prev.set(ptr::null_mut());
        self.next.set(ptr::null_mut());
    }

    #[inline(always)]
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Owner only: `used += delta` without a locked instruction.
    #[inline(always)]
    pub fn add_used(&self, delta: i32) {
        self.used.store(self.used().wrapping_add(delta as u32), Ordering::Relaxed);
    }

    /// Pops a block from `free`, which must not be empty, and clears its double-free mark.
    ///
    /// # Safety
    /// Owner only; `free` is non-empty.
    #[inline(always)]
    pub unsafe fn pop(&self) -> *mut Block {
        let b = self.free.get();
        // SAFETY: b is a free block of this page; its first word is the link, its second the
        // mark (a block in use must not look freed).
        unsafe {
            self.free.set((*b).next);
            (*b).mark = 0;
        }
        self.add_used(1);
        b
    }

    /// Whether `p` is the start of a block, by the multiply test of `block_magic` (fast path;
    /// `is_block_start` also checks the range).
    #[inline(always)]
    pub fn starts_block(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start.get() as usize) as u64;
        let m = self.block_magic.get();
        off.wrapping_mul(m) < m
    }

    /// Owner only: whether `b` is on one of the page's free lists (`free`, `local_free`,
    /// `thread_free`). Walks them: used only to confirm a suspected double free.
    pub fn holds_free(&self, b: *const Block) -> bool {
        let on = |mut x: *mut Block| {
            let mut n = 0u32;
            while !x.is_null() && n <= self.reserved.get() {
                if core::ptr::eq(x, b) {
                    return true;
                }
                // SAFETY: x is a free block of this page.
                x = unsafe { (*x).next };
                n += 1;
            }
            false
        };
        on(self.free.get())
            || on(self.local_free.get())
            || on(self.thread_free.load(Ordering::Acquire).map_addr(|a| a & !FULL))
    }

    /// Owner only: pushes a block freed by the owner.
    ///
    /// # Safety
    /// `b` is a block of this page that is in use.
    #[inline(always)]
    pub unsafe fn push_local(&self, b: *mut Block) {
        // SAFETY: forwarded.
        unsafe { self.link_local(b) };
        self.add_used(-1);
    }

    /// Owner only: links a freed block onto `local_free` without updating `used`.
    ///
    /// # Safety
    /// As for `push_local`; the caller accounts for the block in `used`.
    #[inline(always)]
    pub unsafe fn link_local(&self, b: *mut Block) {
        // SAFETY: the block is ours and no longer used by the program.
        unsafe { (*b).next = self.local_free.get() };
        self.local_free.set(b);
    }

    /// Pushes a block freed by another thread. Returns the old tag: `FULL` if the page sat in
    /// its owner's full list (the push cleared the flag and the caller must tell the owner).
    ///
    /// # Safety
    /// `b` is a block of this page that is in use. The page's memory may be reused by its
    /// owner as soon as this returns, so the caller must not touch the page afterwards.
    pub unsafe fn push_remote(&self, b: *mut Block) -> usize {
        let mut old = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours to link until the push publishes it.
            unsafe { (*b).next = old.map_addr(|a| a & !FULL) };
            match self.thread_free.compare_exchange_weak(old, b, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return old.addr() & FULL,
                Err(cur) => old = cur,
            }
        }
    }

    /// Owner only: moves remote and local frees to `free` if `free` is empty. Returns the
    /// number of remote frees collected.
    pub fn collect(&self) -> u32 {
        let n = self.collect_remote();
        if self.free.get().is_null() && !self.local_free.get().is_null() {
            self.free.set(self.local_free.replace(ptr::null_mut()));
            self.free_is_zero.set(false);
        }
        n
    }

    /// Owner only: moves the `thread_free` list onto `local_free`. The page must not be in
    /// the full list (its `FULL` tag is clear).
    pub fn collect_remote(&self) -> u32 {
        if self.thread_free.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        let head = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        debug_assert!(head.addr() & FULL == 0);
        // Find the tail and count; these blocks are about to be reused anyway.
        let mut n = 1u32;
        let mut tail = head;
        // SAFETY: every block on the list was pushed by a remote free of this page, and the
        // Acquire swap makes the freers' link writes visible.
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                n += 1;
            }
            (*tail).next = self.local_free.get();
        }
        self.local_free.set(head);
        self.add_used(-(n as i32));
        n
    }

    /// Owner only: carves more blocks from the untouched end of the page onto `free`
    /// (`free` must be empty and `capacity < reserved`). Builds at most `EXTEND_BYTES` worth,
    /// and at least one block. Returns the bytes carved.
    pub fn extend(&self) -> usize {
        let size = self.block_size.get();
        let cap = self.capacity.get() as usize;
        let n = (EXTEND_BYTES / size).clamp(1, self.reserved.get() as usize - cap);
        // SAFETY: blocks cap..cap+n lie inside the page (n <= reserved - cap) and are unused.
        unsafe {
            let first = self.start.get().add(cap * size);
            let mut b = first;
            for _ in 1..n {
                let next = b.add(size);
                (*(b as *mut Block)).next = next as *mut Block;
                b = next;
            }
            (*(b as *mut Block)).next = ptr::null_mut();
            self.free.set(first as *mut Block);
        }
        self.free_is_zero.set(self.fresh.get());
        self.capacity.set((cap + n) as u32);
        n * size
    }

    /// The owning heap without the tag.
    #[inline]
    pub fn owner_heap(&self) -> *mut Heap {
        self.owner.load(Ordering::Relaxed).map_addr(|a| a & !IN_FULL)
    }

    /// Owner only: sets or clears the `IN_FULL` tag.
    pub fn set_in_full(&self, heap: *mut Heap, in_full: bool) {
        self.owner.store(heap.map_addr(|a| a | in_full as usize), Ordering::Relaxed);
    }

    pub fn in_full(&self) -> bool {
        self.owner.load(Ordering::Relaxed).addr() & IN_FULL != 0
    }

    /// Owner only: whether the page can hand out a block without growing.
    #[inline]
    pub fn has_room(&self) -> bool {
        !self.free.get().is_null() || self.capacity.get() < self.reserved.get()
    }

    /// Whether `p` is the start of a block of this page (as opposed to an interior pointer).
    pub fn is_block_start(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start.get() as usize);
        let size = self.block_size.get();
        size != 0 && off < size * self.reserved.get() as usize && off % size == 0
    }

    /// Checks the page invariants (owner only, no remote free in flight). Panics on violation.
    pub fn validate(&self) {
        let count = |mut b: *mut Block| {
            let mut n = 0u32;
            while !b.is_null() {
                assert!(self.is_block_start(b as *const u8), "free-list entry {b:p} is not a block of its page");
                assert!(
                    (b as usize - self.start.get() as usize) / self.block_size.get() < self.capacity.get() as usize
                );
                n += 1;
                assert!(n <= self.capacity.get(), "free list longer than the page: a cycle");
                // SAFETY: b is a free block of this page (checked above).
                b = unsafe { (*b).next };
            }
            n
        };
        let free = count(self.free.get());
        let local = count(self.local_free.get());
        let remote = count(self.thread_free.load(Ordering::Acquire).map_addr(|a| a & !FULL));
        assert!(self.capacity.get() <= self.reserved.get());
        assert_eq!(self.used() + free + local, self.capacity.get(), "used + free + local_free == capacity");
        assert!(remote <= self.used(), "remote frees are counted in used until collected");
    }
}
