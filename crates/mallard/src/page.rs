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
//! `used - remote_freed + len(free) + len(local_free) + len(thread_free) + purged_blocks()
//! == capacity <= reserved`: a remotely freed block stays counted in `used` until the owner
//! collects its count (`remote_freed`), which may come after the block itself. (Purged
//! blocks: see "giving back the free OS pages of a page in use" below.)
//!
//! The low bit of `thread_free` is the `FULL` flag: set by the owner when it moves the page to
//! its full list, cleared by the first remote free that arrives after, which then tells the
//! owning heap (`Heap::remote_hint`) that a full page has room again. Because flag and list
//! head are one word, the freer learns "this page was full" atomically with its push.

use crate::block::{read_mark, write_mark, Block};
use crate::config::{EXTEND_BYTES, MIN_PAGE_SIZE, SEGMENT_SIZE, SLICE_SIZE};
use crate::mitigations;
use crate::sync::{AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering};

#[cfg(all(test, loom))]
mod loom_models;
use core::cell::Cell;
use core::ptr;

/// A free list of a page led to memory that is not a free block of it.
#[cold]
#[inline(never)]
fn list_corrupted(b: *mut Block) -> ! {
    crate::misuse::report("free list corrupted", b as *const u8)
}

/// `ceil(2^64 / size)` (0 for an unused page).
const fn block_magic(size: usize) -> u64 {
    if size == 0 {
        0
    } else {
        u64::MAX / size as u64 + 1
    }
}

/// Who owns a page or segment: a heap, to this module only an address to compare and hand
/// back (the heap turns it into itself), so that pages need not know heaps. A type with no
/// values: an `*mut Owner` is never dereferenced.
pub(crate) enum Owner {}

/// `thread_free` tag bit: the page is in its owner's full list.
pub(crate) const FULL: usize = 1;

/// An empty `thread_free` list tagged `FULL`.
pub(crate) const EMPTY_FULL: *mut Block = ptr::without_provenance_mut(FULL);

/// Tag bit of `Page::owner`: the page is in its heap's full list, so a local free must take
/// the slow path and move it back.
pub(crate) const IN_FULL: usize = 1;

/// Tag bit of `Page::owner`: some OS pages of the page are purged (`Page::purged`), so a
/// local free must take the slow path, which checks that the block is not in one of them.
pub(crate) const PURGED: usize = 2;

const OWNER_TAGS: usize = IN_FULL | PURGED;

/// Three cache lines, so that the two sides of a remote free do not fight over one:
/// - the owner's line: what the fast paths write (`free`, `local_free`, `used`);
/// - the page's description: set when the page starts serving a class and read by every free,
///   local or remote (`owner`, `block_size`, `start`, ...); rarely written, so every core
///   keeps a shared copy;
/// - the remote line: `thread_free` and `remote_freed`, which remote frees write.
///
/// When remote freers read `block_size` from the owner's line, each of their frees stole that
/// line from the allocating core (35 % of the consumer's time in prod-cons).
#[repr(C, align(64))]
pub(crate) struct Page {
    // ---- owner's line ----
    pub(crate) free: Cell<*mut Block>,
    pub(crate) local_free: Cell<*mut Block>,
    /// Blocks handed out and not yet freed-and-collected. Written only by the owner; an atomic
    /// so that `stats()` may read it from another thread.
    pub(crate) used: AtomicU32,
    /// Blocks carved so far.
    pub(crate) capacity: Cell<u32>,
    /// Every block on `free` is zero apart from its link and mark words.
    pub(crate) free_is_zero: Cell<bool>,
    /// The memory past `capacity` has not been touched since the OS zeroed it.
    pub(crate) fresh: Cell<bool>,
    /// In-page purge bookkeeping (owner only): `used` when its free OS pages were last
    /// purged, and since when (ms) the page has been sparse enough to purge (0: it is not).
    pub(crate) purge_used: Cell<u32>,
    pub(crate) sparse_since: Cell<u64>,
    /// Links in the owning heap's page queue (or full list). Owner only.
    pub(crate) prev: Cell<*mut Page>,
    pub(crate) next: Cell<*mut Page>,
    /// A copy of `mark` for `pop`, which touches only the owner's line.
    pop_mark: Cell<usize>,
    // ---- description line ----
    /// The owning heap, tagged with `IN_FULL`; null when abandoned (or huge). The free fast
    /// path's one test: equal to the caller's heap means a local free into a non-full page.
    /// Written by the owner (and by whoever reclaims the page), read by remote freers.
    pub(crate) owner: AtomicPtr<Owner>,
    pub(crate) block_size: Cell<usize>,
    /// `ceil(2^64 / block_size)`: `p` starts a block exactly when
    /// `(p - start) * block_magic mod 2^64 < block_magic` (Lemire's divisibility test, exact
    /// for offsets below 2^32), a multiply where `%` would divide.
    pub(crate) block_magic: Cell<u64>,
    /// First block of the page.
    pub(crate) start: Cell<*mut u8>,
    /// Blocks that fit (0 once the page is given back to its segment).
    pub(crate) reserved: Cell<u32>,
    /// OS pages given back while the page stays in use (bit k: the k-th 4 KiB of a small
    /// page); the blocks that start in them are free and on no list (`purge_free_os_pages`).
    /// Atomic because a remote free reads it to catch a double free.
    pub(crate) purged: AtomicU16,
    /// The size class; read by remote freers and `stats()`.
    pub(crate) class: AtomicU8,
    /// Bytes from `start` that are carved into blocks (`capacity * block_size`); a pointer
    /// past them was never handed out. Written by the owner when it carves (rarely), read by
    /// every free.
    pub(crate) carved_end: AtomicU32,
    /// The secret that encodes the links of this page's free blocks in the secure build
    /// (`mitigations::ENCODED_LINKS`; 0 otherwise). Set when the page starts a class.
    pub(crate) key: Cell<usize>,
    /// The free mark of this page's blocks (`mitigations::page_mark`; see `mark_of`).
    mark: Cell<usize>,
    // ---- remote line ----
    pub(crate) thread_free: AtomicPtr<Block>,
    /// Remote frees of blocks not yet subtracted from `used`. A remote freer adds one after
    /// its push, so the owner learns the count without walking the list (whose blocks the
    /// freeing core wrote: a cache miss each). See `collect_remote`.
    pub(crate) remote_freed: AtomicU32,
}

#[cfg(not(loom))] // (loom's atomics are bigger)
const _: () = assert!(
    core::mem::size_of::<Page>() == 192
        && core::mem::offset_of!(Page, pop_mark) < 64
        && core::mem::offset_of!(Page, owner) == 64
        && core::mem::offset_of!(Page, mark) < 128
        && core::mem::offset_of!(Page, thread_free) == 128
);

macro_rules! empty_page {
    () => {
        Page {
            free: Cell::new(ptr::null_mut()),
            used: AtomicU32::new(0),
            owner: AtomicPtr::new(ptr::null_mut()),
            class: AtomicU8::new(0),
            free_is_zero: Cell::new(false),
            fresh: Cell::new(false),
            local_free: Cell::new(ptr::null_mut()),
            thread_free: AtomicPtr::new(ptr::null_mut()),
            remote_freed: AtomicU32::new(0),
            block_size: Cell::new(0),
            block_magic: Cell::new(0),
            capacity: Cell::new(0),
            reserved: Cell::new(0),
            start: Cell::new(ptr::null_mut()),
            purged: AtomicU16::new(0),
            carved_end: AtomicU32::new(0),
            key: Cell::new(0),
            mark: Cell::new(0),
            pop_mark: Cell::new(0),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
            purge_used: Cell::new(u32::MAX),
            sparse_since: Cell::new(0),
        }
    };
}

impl Page {
    /// A page serving no class (the template of every page of a header).
    #[cfg(not(loom))]
    pub(crate) const EMPTY: Page = empty_page!();

    /// `EMPTY`, for the model checker (whose atomics are not `const`).
    #[cfg(loom)]
    pub(crate) fn new() -> Page {
        empty_page!()
    }

    /// Prepares the page to serve `class` from `[start, start + len)`.
    pub(crate) fn init(
        &self,
        owner: *mut Owner,
        class: usize,
        block_size: usize,
        start: *mut u8,
        len: usize,
        fresh: bool,
    ) {
        self.free.set(ptr::null_mut());
        self.used.store(0, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Relaxed);
        self.class.store(class as u8, Ordering::Relaxed);
        self.free_is_zero.set(false);
        self.fresh.set(fresh);
        self.local_free.set(ptr::null_mut());
        self.thread_free.store(ptr::null_mut(), Ordering::Relaxed);
        self.remote_freed.store(0, Ordering::Relaxed);
        self.block_size.set(block_size);
        self.block_magic.set(block_magic(block_size));
        self.capacity.set(0);
        self.reserved.set(len.checked_div(block_size).unwrap_or(0) as u32);
        self.start.set(start);
        self.purged.store(0, Ordering::Relaxed);
        self.purge_used.set(u32::MAX);
        self.sparse_since.set(0);
        self.prev.set(ptr::null_mut());
        self.next.set(ptr::null_mut());
        self.carved_end.store(0, Ordering::Relaxed);
        let salt = mitigations::page_salt(self as *const Page as usize);
        self.key.set(mitigations::page_key(salt));
        let mark = mitigations::page_mark(salt);
        self.mark.set(mark);
        self.pop_mark.set(mark);
    }

    /// The next block after free block `b` of this page on its list, for walks along a list:
    /// decoded (secure build) and checked (`check_listed`). `pop` checks the block it hands
    /// out instead.
    ///
    /// # Safety
    /// `b` is a free block of this page, on one of its lists.
    #[inline(always)]
    pub(crate) unsafe fn next_of(&self, b: *mut Block) -> *mut Block {
        // SAFETY: per the contract, b's first word is its link.
        let next = mitigations::decode_link(self.key.get(), b, unsafe { (*b).next });
        if !next.is_null() {
            // SAFETY: forwarded.
            unsafe { self.check_listed(next, b) };
        }
        next
    }

    /// Reports (`free list corrupted`, at `from`, the block whose link led here) unless `b` is
    /// a carved block of this page that carries its free mark, as every listed block does: a
    /// link that a use after free or an overflow rewrote leads to memory that does not.
    ///
    /// # Safety
    /// None beyond the page being a live page of a mapped segment.
    unsafe fn check_listed(&self, b: *mut Block, from: *mut Block) {
        if !self.is_carved_block(b as *const u8) {
            list_corrupted(from);
        }
        // (Under Miri the mark is not written; see `read_mark`.)
        // SAFETY: a carved block: inside the page's memory.
        if !cfg!(miri) && unsafe { read_mark(b) } != self.mark_of(b as *const u8) {
            list_corrupted(from);
        }
    }

    /// Walks the list from `head` (a list of this page's free blocks), calling `f` on each
    /// block after its link was read (so `f` may relink it). Every block is checked
    /// (`check_listed`), and a walk longer than the page has blocks, which only a cycle makes,
    /// is reported too: a corrupted list ends in a report, never in a wild read or a hang.
    /// Returns the last block (null for an empty list).
    ///
    /// # Safety
    /// Owner only; `head` is the head of one of the page's lists.
    unsafe fn walk(&self, head: *mut Block, mut f: impl FnMut(*mut Block)) -> *mut Block {
        let (mut b, mut last, mut n): (_, *mut Block, u32) = (head, ptr::null_mut(), 0);
        while !b.is_null() {
            // SAFETY: checked before the link is read.
            unsafe { self.check_listed(b, if last.is_null() { b } else { last }) };
            n += 1;
            if n > self.capacity.get() {
                list_corrupted(b);
            }
            // SAFETY: b is a checked free block of this page.
            let next = mitigations::decode_link(self.key.get(), b, unsafe { (*b).next });
            f(b);
            (last, b) = (b, next);
        }
        last
    }

    /// Links free block `b` of this page to `next` (encoded in the secure build).
    ///
    /// # Safety
    /// `b` is a block of this page that the caller owns as free (being freed or listed).
    #[inline(always)]
    pub(crate) unsafe fn set_next(&self, b: *mut Block, next: *mut Block) {
        // SAFETY: per the contract.
        unsafe { (*b).next = mitigations::encode_link(self.key.get(), b, next) };
    }

    #[inline(always)]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Owner only: `used += delta` without a locked instruction.
    #[inline(always)]
    pub(crate) fn add_used(&self, delta: i32) {
        self.used.store(self.used().wrapping_add(delta as u32), Ordering::Relaxed);
    }

    /// Owner only: counts one freed block out of `used`, and runs `empty` when that leaves
    /// none (`os::decrement_then`: on x86-64 one `dec` and a jump on its zero flag).
    #[inline(always)]
    pub(crate) fn release_one(&self, empty: impl FnOnce()) {
        #[cfg(not(loom))]
        // SAFETY: only the owner writes `used`, so an unlocked decrement is what
        // `store(load() - 1)` means (`stats()` readers see the old or the new value); the
        // page is live.
        unsafe {
            crate::os::decrement_then::<{ core::mem::offset_of!(Page, used) }>((self as *const Page).cast(), empty)
        }
        #[cfg(loom)]
        if self.used() == 1 {
            self.used.store(0, Ordering::Relaxed);
            empty();
        } else {
            self.add_used(-1);
        }
    }

    /// Pops a block from `free`, which must not be empty, and clears its link and its
    /// double-free mark (a fresh block shows nothing of the list).
    ///
    /// The block must carry the page's mark, as every free block does: a link that a use
    /// after free or an overflow rewrote leads to memory that does not (a live block, or an
    /// address of the attacker's choice), and is reported instead of handed out.
    ///
    /// # Safety
    /// Owner only; `free` is non-empty.
    #[inline(always)]
    pub(crate) unsafe fn pop(&self) -> *mut Block {
        let b = self.free.get();
        // SAFETY: b is on the free list: a free block of this page unless a corrupted link
        // put it there, which its missing mark tells before anything is written.
        unsafe {
            // In this page's segment (where its header is) before anything is read from it:
            // a rewritten link must not be followed out of the heap.
            let here = (b.addr() ^ (self as *const Page).addr()) < SEGMENT_SIZE;
            if !cfg!(miri) && (!here || read_mark(b) != mitigations::block_mark(self.pop_mark.get(), b.addr())) {
                list_corrupted(b);
            }
            // (The next block is checked when it is popped in turn.)
            self.free.set(mitigations::decode_link(self.key.get(), b, (*b).next));
            // Neither word tells anything of the list (the next block's address, a key).
            b.write(Block { next: ptr::null_mut(), mark: 0 });
        }
        self.add_used(1);
        b
    }

    /// Whether `p` is the start of a block, by the multiply test of `block_magic` (fast path;
    /// `is_block_start` also checks the range).
    #[inline(always)]
    pub(crate) fn starts_block(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start.get() as usize) as u64;
        let m = self.block_magic.get();
        off.wrapping_mul(m) < m
    }

    /// The free mark of block `b` of this page: every free block carries it in its second
    /// word, from the moment it is carved or freed until it is handed out. The default build
    /// gives all blocks of a page one mark, the secure build each block its own
    /// (`mitigations::block_mark`), so that a mark read from a freed block is no use
    /// elsewhere.
    #[inline(always)]
    pub(crate) fn mark_of(&self, b: *const u8) -> usize {
        mitigations::block_mark(self.mark.get(), b.addr())
    }

    /// Whether `p` is the start of a block carved so far: one that has been handed out, or
    /// is free (then it carries the mark). Any other pointer into the page was never a block.
    #[inline(always)]
    pub(crate) fn is_carved_block(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start.get() as usize) as u64;
        let m = self.block_magic.get();
        off < self.carved_end.load(Ordering::Relaxed) as u64 && off.wrapping_mul(m) < m
    }

    /// Owner only: pushes a block freed by the owner.
    ///
    /// # Safety
    /// `b` is a block of this page that is in use.
    #[inline(always)]
    pub(crate) unsafe fn push_local(&self, b: *mut Block) {
        // SAFETY: forwarded.
        unsafe { self.link_local(b) };
        self.add_used(-1);
    }

    /// Owner only, `free` empty: makes the blocks the owner freed (`local_free`) the free
    /// list, if there are any. Inline on `malloc`'s path, because in a program that frees and
    /// allocates a class in turn (larson) the free list runs dry after nearly every block the
    /// owner frees back: the slow path that collected one block each time was 40 % of all
    /// `malloc` calls there.
    #[inline(always)]
    pub(crate) fn take_local(&self) -> bool {
        let local = self.local_free.get();
        if local.is_null() {
            return false;
        }
        self.free.set(local);
        self.local_free.set(ptr::null_mut());
        self.free_is_zero.set(false);
        true
    }

    /// Owner only: links a freed block onto `local_free` without updating `used`.
    ///
    /// # Safety
    /// As for `push_local`; the caller accounts for the block in `used`.
    #[inline(always)]
    pub(crate) unsafe fn link_local(&self, b: *mut Block) {
        // SAFETY: the block is ours and no longer used by the program.
        unsafe { self.set_next(b, self.local_free.get()) };
        self.local_free.set(b);
    }

    /// Pushes a block (or a chunk) freed by another thread. Returns the old tag: `FULL` if the
    /// page sat in its owner's full list (the push cleared the flag and the caller must tell
    /// the owner).
    ///
    /// # Safety
    /// `b` is a block of this page that is in use. The page's memory may be reused by its
    /// owner as soon as this returns, so the caller must not touch the page afterwards.
    pub(crate) unsafe fn push_remote(&self, b: *mut Block) -> usize {
        // SAFETY: forwarded; a single block is a list of one.
        unsafe { self.push_remote_list(b, b) }
    }

    /// `push_remote` of the blocks `head..=tail`, linked through `next`: one CAS for all.
    ///
    /// # Safety
    /// As for `push_remote`, for every block of the list.
    unsafe fn push_remote_list(&self, head: *mut Block, tail: *mut Block) -> usize {
        let mut old = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the blocks are ours to link until the push publishes them.
            unsafe { self.set_next(tail, old.map_addr(|a| a & !FULL)) };
            // (Acquire too: a push that finds `FULL` must see the owner that set it.)
            match self.thread_free.compare_exchange_weak(old, head, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return old.addr() & FULL,
                Err(cur) => old = cur,
            }
        }
    }

    /// Remote frees of the `n` blocks `head..=tail` (linked through `next`): pushes them, then
    /// counts them in `remote_freed`, one push and one count for all. Between the two it calls
    /// `pushed(tag, owner)` with the tag the push found (`FULL`: the page sat in its owner's
    /// full list, and the push cleared the flag, so the owner must be told) and the page's
    /// owner as of the push (null: abandoned).
    ///
    /// The count comes after the push, so `used - remote_freed` never falls below the true
    /// number of live blocks: the owner may take the blocks off the list before the count
    /// arrives, but until it does they stay counted in `used`, the page cannot look empty, and
    /// so its memory stays a page of this class while the count is added. That is also why
    /// the owner is read between the two: earlier, the page could change hands before the
    /// push, and the hint would go to a heap that no longer owns it (the new owner, never
    /// told, would leave the page in its full list); later, the page could be gone.
    ///
    /// # Safety
    /// Every block of the list is a block of this page that is in use. The caller must not
    /// touch the page afterwards (nor in `pushed`, but for its segment).
    pub(crate) unsafe fn free_remote_list(
        &self,
        head: *mut Block,
        tail: *mut Block,
        n: u32,
        pushed: impl FnOnce(usize, *mut Owner),
    ) {
        // SAFETY: forwarded.
        let tag = unsafe { self.push_remote_list(head, tail) };
        // (A push that cleared `FULL` synchronized with the owner that set it, whose id, or a
        // later owner's, this reads.)
        pushed(tag, self.owner_heap());
        self.remote_freed.fetch_add(n, Ordering::Release);
    }

    /// Owner only: tags the page `FULL` as it joins the full list, unless remote frees are
    /// waiting (then false: it has room). The tag is set with the list empty, so the next
    /// remote free finds it and tells the owner.
    pub(crate) fn mark_full(&self) -> bool {
        self.thread_free.compare_exchange(ptr::null_mut(), EMPTY_FULL, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Owner only: whether a remote free cleared the `FULL` tag (the page has room again).
    pub(crate) fn full_cleared(&self) -> bool {
        self.thread_free.load(Ordering::Acquire).addr() & FULL == 0
    }

    /// Owner only: clears the `FULL` tag (the page leaves the full list, or its owner).
    pub(crate) fn unmark_full(&self) {
        // (A loop rather than `fetch_and`, which the model checker's pointers lack; a slow path.)
        let mut cur = self.thread_free.load(Ordering::Relaxed);
        while cur.addr() & FULL != 0 {
            match self.thread_free.compare_exchange_weak(
                cur,
                cur.map_addr(|a| a & !FULL),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Owner only: moves remote and local frees to `free` if `free` is empty. Returns the
    /// number of remote frees collected.
    pub(crate) fn collect(&self) -> u32 {
        if !self.free.get().is_null() {
            return self.collect_remote();
        }
        let n = self.take_remote_count();
        let remote = self.take_remote_list();
        // Both lists move without a walk: the local one (warm in this core's cache) first.
        let local = self.local_free.replace(ptr::null_mut());
        if local.is_null() {
            self.free.set(remote);
        } else {
            self.free.set(local);
            self.local_free.set(remote);
        }
        self.free_is_zero.set(false);
        n
    }

    /// Owner only: moves the `thread_free` list onto `local_free` and subtracts the remote
    /// frees counted so far from `used`. The page must not be in the full list (its `FULL`
    /// tag is clear). Returns the number of remote frees collected.
    pub(crate) fn collect_remote(&self) -> u32 {
        let n = self.take_remote_count();
        let head = self.take_remote_list();
        if !head.is_null() {
            let local = self.local_free.get();
            if !local.is_null() {
                // Rare (`free` and `local_free` both non-empty): walk the local list, whose
                // blocks this core wrote, to its end and hang the remote list there.
                // SAFETY: local_free holds free blocks of this page, owned by this thread.
                unsafe {
                    let tail = self.walk(local, |_| {});
                    self.set_next(tail, head);
                }
            } else {
                self.local_free.set(head);
            }
        }
        n
    }

    /// Owner only: takes the count of remote frees and subtracts it from `used`.
    fn take_remote_count(&self) -> u32 {
        if self.remote_freed.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let n = self.remote_freed.swap(0, Ordering::Acquire);
        self.add_used(-(n as i32));
        n
    }

    /// Owner only: takes the `thread_free` list (its `FULL` tag must be clear).
    fn take_remote_list(&self) -> *mut Block {
        if self.thread_free.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        let head = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        debug_assert!(head.addr() & FULL == 0);
        head
    }

    /// Owner only: carves more blocks from the untouched end of the page onto `free`
    /// (`free` must be empty and `capacity < reserved`). Builds at most `EXTEND_BYTES` worth,
    /// and at least one block, each linked and marked free. Returns the bytes carved.
    pub(crate) fn extend(&self) -> usize {
        let size = self.block_size.get();
        let cap = self.capacity.get() as usize;
        let n = (EXTEND_BYTES / size).clamp(1, self.reserved.get() as usize - cap);
        if mitigations::RANDOM_ORDER && n > 1 {
            self.link_shuffled(cap, n);
        } else {
            // SAFETY: blocks cap..cap+n lie inside the page (n <= reserved - cap) and are unused.
            unsafe {
                let first = self.start.get().add(cap * size);
                let mut b = first;
                for _ in 1..n {
                    let next = b.add(size);
                    self.link_carved(b as *mut Block, next as *mut Block);
                    b = next;
                }
                self.link_carved(b as *mut Block, ptr::null_mut());
                self.free.set(first as *mut Block);
            }
        }
        self.free_is_zero.set(self.fresh.get());
        self.capacity.set((cap + n) as u32);
        self.carved_end.store(((cap + n) * size) as u32, Ordering::Relaxed);
        n * size
    }

    /// Makes unused block `b` a free block linked to `next`.
    ///
    /// # Safety
    /// `b` is a block of this page that was never handed out.
    #[inline(always)]
    unsafe fn link_carved(&self, b: *mut Block, next: *mut Block) {
        // SAFETY: per the contract.
        unsafe {
            self.set_next(b, next);
            write_mark(b, self.mark_of(b as *const u8));
        }
    }

    /// `extend` for the secure build: links blocks `cap..cap + n` onto `free` in a random
    /// order (`mitigations::RANDOM_ORDER`).
    fn link_shuffled(&self, cap: usize, n: usize) {
        const RUNS: usize = mitigations::RANDOM_RUNS;
        let mut rng = mitigations::Rng::new(self.key.get() ^ cap.wrapping_mul(0x2545_f491_4f6c_dd1d));
        // Run k is blocks next[k]..end[k] (of cap..cap+n, counted from cap); some may be empty.
        let mut next: [usize; RUNS] = core::array::from_fn(|k| k * n / RUNS);
        let end: [usize; RUNS] = core::array::from_fn(|k| (k + 1) * n / RUNS);
        let (start, size) = (self.start.get(), self.block_size.get());
        // Bit k: run k has blocks left.
        let mut runs: u32 = (0..RUNS).filter(|&k| next[k] < end[k]).fold(0, |m, k| m | 1 << k);
        let (mut bits, mut left) = (0u64, 0);
        let mut head = ptr::null_mut();
        for _ in 0..n {
            if left == 0 {
                (bits, left) = (rng.next_u64(), 64 / 3);
            }
            let pick = (bits % RUNS as u64) as u32;
            (bits, left) = (bits / RUNS as u64, left - 1);
            // The picked run, or the next one round that has blocks left.
            let rotated = (runs | runs << RUNS) >> pick;
            let k = (pick + rotated.trailing_zeros()) as usize % RUNS;
            // SAFETY: block cap + next[k] is one of the unused blocks cap..cap+n of the page.
            let b = unsafe { start.add((cap + next[k]) * size) } as *mut Block;
            next[k] += 1;
            if next[k] == end[k] {
                runs &= !(1 << k);
            }
            // SAFETY: b is an unused block of this page, now free.
            unsafe { self.link_carved(b, head) };
            head = b;
        }
        self.free.set(head);
    }

    /// The owning heap without the tags.
    #[inline]
    pub(crate) fn owner_heap(&self) -> *mut Owner {
        self.owner.load(Ordering::Relaxed).map_addr(|a| a & !OWNER_TAGS)
    }

    /// Owner only: sets the owner with the `IN_FULL` tag as given and the `PURGED` tag as
    /// `purged` says.
    pub(crate) fn set_in_full(&self, heap: *mut Owner, in_full: bool) {
        let purged = if self.purged.load(Ordering::Relaxed) != 0 { PURGED } else { 0 };
        self.owner.store(heap.map_addr(|a| a | in_full as usize | purged), Ordering::Relaxed);
    }

    pub(crate) fn in_full(&self) -> bool {
        self.owner.load(Ordering::Relaxed).addr() & IN_FULL != 0
    }

    /// Owner only: whether the page can hand out a block without growing.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        !self.free.get().is_null()
            || self.capacity.get() < self.reserved.get()
            || self.purged.load(Ordering::Relaxed) != 0
    }

    // ---- giving back the free OS pages of a page in use (small pages) ----
    //
    // A page whose blocks were mostly freed in a scattered pattern never empties, so the
    // page-level purge never gives it back. Here its OS pages that hold only free blocks are
    // decommitted while the page stays in use. A free block keeps its list link in its first
    // word, which the purge zeroes, so the blocks that *start* in a purged granule (4 KiB) are
    // taken off the lists and remembered by the `purged` bitmap alone; `unpurge_one` puts
    // them back (faulting the memory in again) when the page runs out of other free blocks.
    // They are the `purged_blocks()` term of the invariant at the top of this file. While any
    // bit is set the owner carries the `PURGED` tag, so the free fast path (which cannot tell
    // a purged block from a live one) sends the page's frees to the slow path, which reports
    // a free of a block in a purged granule as the double free it is.
    //
    // The bitmap counts 4 KiB granules whatever the kernel's page; on a kernel with bigger
    // pages (16 or 64 KiB on aarch64) a whole OS page of granules is decommitted at once, and
    // only when every block it overlaps is free.

    /// The bookkeeping unit of in-page purging: the smallest OS page.
    pub(crate) const GRANULE: usize = MIN_PAGE_SIZE;

    /// Granules per small page: the `purged` bitmap has one bit for each.
    pub(crate) const GRANULES: usize = SLICE_SIZE / Self::GRANULE;

    /// Blocks of the page whose first byte lies in granule `k`, as an index range.
    fn blocks_starting_in(&self, k: usize) -> core::ops::Range<usize> {
        let size = self.block_size.get();
        let cap = self.capacity.get() as usize;
        let first = (k * Self::GRANULE).div_ceil(size);
        let end = ((k + 1) * Self::GRANULE).div_ceil(size);
        first.min(cap)..end.min(cap)
    }

    /// Whether block `p` of this page starts in a purged granule (it is then free).
    pub(crate) fn in_purged_os_page(&self, p: *const u8) -> bool {
        let bits = self.purged.load(Ordering::Relaxed);
        let off = (p as usize).wrapping_sub(self.start.get() as usize);
        bits != 0 && off < SLICE_SIZE && bits & (1 << (off / Self::GRANULE)) != 0
    }

    /// Blocks that start in purged granules (free, on no list).
    pub(crate) fn purged_blocks(&self) -> u32 {
        let bits = self.purged.load(Ordering::Relaxed);
        (0..Self::GRANULES).filter(|k| bits & (1 << k) != 0).map(|k| self.blocks_starting_in(k).len() as u32).sum()
    }

    /// Owner only, small pages only: decommits (through `decommit`) every OS page (of `page`
    /// bytes, a power of two from 4 to 64 KiB) of the carved part that holds only free blocks
    /// (remote frees not yet collected count as in use). Returns the bytes given back.
    pub(crate) fn purge_free_os_pages(&self, page: usize, decommit: &mut dyn FnMut(*mut u8, usize)) -> usize {
        let size = self.block_size.get();
        debug_assert!(size <= crate::config::SMALL_MAX);
        debug_assert!(page.is_power_of_two() && (Self::GRANULE..=SLICE_SIZE).contains(&page));
        // All free blocks onto `free`.
        let local = self.local_free.replace(ptr::null_mut());
        if !local.is_null() {
            // SAFETY: local_free holds free blocks of this page.
            unsafe {
                let tail = self.walk(local, |_| {});
                self.set_next(tail, self.free.get());
            }
            self.free.set(local);
            self.free_is_zero.set(false);
        }
        // Which carved blocks are free: one bit each (at most 64 KiB / 16 B = 4096 blocks).
        let mut free_bits = [0u64; SLICE_SIZE / 16 / 64];
        let start = self.start.get();
        // SAFETY: the free list of this page (the walk checks every block: carved, so `i` is
        // below the page's capacity).
        unsafe {
            self.walk(self.free.get(), |b| {
                let i = (b as usize - start as usize) / size;
                let bit = 1u64 << (i % 64);
                if free_bits.get(i / 64).is_none_or(|w| w & bit != 0) {
                    list_corrupted(b); // listed twice
                }
                free_bits[i / 64] |= bit;
            })
        };
        let old = self.purged.load(Ordering::Relaxed);
        // A block is free when it is listed or starts in a purged granule (kept on no list).
        let is_free =
            |i: usize| free_bits[i / 64] & (1 << (i % 64)) != 0 || old & (1 << (i * size / Self::GRANULE)) != 0;
        let cap = self.capacity.get() as usize;
        let carved_end = cap * size;
        let per_page = page / Self::GRANULE;
        let page_mask = ((1u32 << per_page) - 1) as u16;
        let mut new = 0u16; // granules purged now
        let mut whole = 0u16; // the OS pages they lie in, every granule of each
        for k in (0..Self::GRANULES).step_by(per_page) {
            let (lo, hi) = (k * Self::GRANULE, k * Self::GRANULE + page);
            let granules = page_mask << k;
            // Only wholly carved OS pages (a block carved later must not start in a purged
            // granule) that are not purged already.
            if old & granules == granules || hi > carved_end {
                continue;
            }
            // Every block overlapping [lo, hi) must be free.
            let blocks = lo / size..hi.div_ceil(size).min(cap);
            if blocks.clone().all(is_free) {
                new |= granules & !old;
                whole |= granules;
            }
        }
        if new == 0 {
            return 0;
        }
        // Take the blocks that start in the newly purged granules off the list, before the
        // purge zeroes their links.
        let mut keep: *mut Block = ptr::null_mut();
        // SAFETY: the free list of this page, just walked; each block relinked onto the kept
        // list after its link was read.
        unsafe {
            self.walk(self.free.get(), |b| {
                let k = (b as usize - start as usize) / Self::GRANULE;
                if new & (1 << k) == 0 {
                    self.set_next(b, keep);
                    keep = b;
                }
            })
        };
        self.free.set(keep);
        let mut k = 0;
        while k < Self::GRANULES {
            if whole & (1 << k) == 0 {
                k += 1;
                continue;
            }
            let run = (whole >> k).trailing_ones() as usize;
            // SAFETY: granules k..k+run are whole OS pages inside the page, holding only free
            // blocks (those purged before read as zero already).
            decommit(unsafe { start.add(k * Self::GRANULE) }, run * Self::GRANULE);
            k += run;
        }
        self.purged.store(old | new, Ordering::Relaxed);
        self.set_in_full(self.owner_heap(), self.in_full());
        new.count_ones() as usize * Self::GRANULE
    }

    /// Owner only: puts the blocks that start in the lowest purged granule back on `free`,
    /// faulting it in. A granule that no block starts in (inside a block bigger than 4 KiB)
    /// just loses its bit, and the next one is tried. False if no purged block is left. A
    /// block found freed there (the free mark) was freed twice while its granule was purged.
    pub(crate) fn unpurge_one(&self) -> bool {
        let blocks = loop {
            let bits = self.purged.load(Ordering::Relaxed);
            if bits == 0 {
                return false;
            }
            let k = bits.trailing_zeros() as usize;
            self.purged.store(bits & !(1 << k), Ordering::Relaxed);
            self.set_in_full(self.owner_heap(), self.in_full());
            let blocks = self.blocks_starting_in(k);
            if !blocks.is_empty() {
                break blocks;
            }
        };
        let size = self.block_size.get();
        let start = self.start.get();
        let mut head = self.free.get();
        for i in blocks.rev() {
            // SAFETY: block i is a free block of this page, in a granule that reads as zero.
            unsafe {
                let b = start.add(i * size) as *mut Block;
                if read_mark(b) == self.mark_of(b as *const u8) {
                    crate::misuse::report("double free", b as *const u8);
                }
                self.link_carved(b, head);
                head = b;
            }
        }
        self.free.set(head);
        self.free_is_zero.set(false);
        true
    }

    /// Whether `p` is the start of a block of this page (as opposed to an interior pointer),
    /// in its reserved range (carved or not). A multiply, not a division: remote frees run this.
    pub(crate) fn is_block_start(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start.get() as usize);
        let size = self.block_size.get();
        size != 0 && off < size * self.reserved.get() as usize && self.starts_block(p)
    }

    /// Checks the page invariants (owner only, no remote free in flight). Panics on violation.
    pub(crate) fn validate(&self) {
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
                b = unsafe { self.next_of(b) };
            }
            n
        };
        let free = count(self.free.get());
        let local = count(self.local_free.get());
        let remote = count(self.thread_free.load(Ordering::Acquire).map_addr(|a| a & !FULL));
        assert!(self.capacity.get() <= self.reserved.get());
        let purged = self.purged_blocks();
        let counted = self.remote_freed.load(Ordering::Acquire);
        assert!(remote <= counted && counted <= self.used(), "every listed remote free is counted, and in used");
        assert_eq!(
            self.used() - counted + free + local + remote + purged,
            self.capacity.get(),
            "live + free + local_free + thread_free + purged blocks == capacity"
        );
        assert_eq!(
            self.purged.load(Ordering::Relaxed) != 0,
            self.owner.load(Ordering::Relaxed).addr() & PURGED != 0,
            "the PURGED tag says whether OS pages are purged"
        );
        for list in [self.free.get(), self.local_free.get()] {
            let mut b = list;
            while !b.is_null() {
                assert!(!self.in_purged_os_page(b as *const u8), "a listed block in a purged OS page");
                // SAFETY: b is a free block of this page (checked by `count`).
                b = unsafe { self.next_of(b) };
            }
        }
    }
}
