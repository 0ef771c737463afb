//! The chunk heap: variable-size blocks with boundary tags, split on allocation, coalesced on
//! free, found in O(1) by two-level segregated fit (TLSF).
//!
//! A region (the inside of a chunk segment) is tiled by chunks. Each chunk starts with a
//! 16-byte header; the block the program gets follows it:
//!
//! ```text
//!   chunk c:  [prev_size | size | FREE | PREV_FREE] [ block … ]  next chunk at c + size
//!   free c:   [prev_size | size | FREE | PREV_FREE] [next_free][prev_free] … [footer = size]
//! ```
//!
//! A free chunk's footer is the `prev_size` word of the next chunk's header, so a free chunk
//! finds both neighbours in O(1): the next one at `c + size`, the previous one (when
//! `PREV_FREE` says it is free) at `c - prev_size`. The region ends with a sentinel header
//! (size 0, in use), so the last chunk needs no special case.
//!
//! Invariants (checked by `validate_region`):
//! - the chunks tile the region exactly: Σ size == region length − sentinel;
//! - no two free chunks are adjacent (free coalesces at once);
//! - `PREV_FREE` of a chunk == `FREE` of its predecessor, and a free chunk's footer == size;
//! - every free chunk is on the list its size maps to, and the bitmaps say which lists are
//!   non-empty.
//!
//! Fit policy ("good fit", as in TLSF): a request is rounded up to the next list boundary
//! (at most 1/16 of its size), so that any chunk on the first non-empty list at or above it
//! fits without a search. The chunk is then split; the remainder stays free if it is at least
//! `MIN_SPLIT`. Worst-case waste of one allocation: the rounding is only used for the search,
//! so the waste is the unsplit remainder, under `MIN_SPLIT` (4 KiB) plus 16 bytes of header.
//! The price of O(1) is that a chunk of the exact size on the request's own list is not found
//! by the search; only when the search finds nothing does `alloc` scan that one list (first
//! fit), so a request for most of an empty region still succeeds.
//!
//! Nothing read from a region is trusted, since an overflow or a use after free in a
//! neighbouring block can rewrite it (in every build): a size must be a multiple of 16, at
//! least a minimal chunk and end inside the region (`checked_size`); a chunk said to be free
//! must have a footer equal to its size and its successor's `PREV_FREE` bit set
//! (`checked_free_size`); a link must lead into a mapped region (`link`), and a chunk is
//! unlinked only if its neighbours on the list point back at it and the list's head is it
//! when it has no predecessor (`remove`: glibc's "safe unlinking"). A walk along a list
//! checks each step the same way, so a corrupted list cannot make it loop. Anything else is
//! reported (`mallard: corrupted chunk header at …`, `chunk free list corrupted`) and the
//! process aborts; no index or loop depends on an unchecked word. In the secure build the
//! links are also encoded with a secret (`mitigations::encode_link`, `chunk_key`), and the
//! size words sealed (`mitigations::SEALED_HEADERS`).

use crate::config::{SEGMENT_SIZE, SLICE_SIZE};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::{AcqRel, Relaxed};

/// Header bytes before each block.
pub(crate) const HEADER: usize = 16;
/// Blocks above `CLASS_MAX` up to this come from the chunk heap, whose regions are chunk
/// segments (all of a segment but its header slice, minus a chunk header and the region's end
/// sentinel). Bigger blocks are huge.
pub const CHUNK_MAX: usize = SEGMENT_SIZE - SLICE_SIZE - 2 * HEADER;
/// Free chunks smaller than this are never split off (they could serve no large request).
pub(crate) const MIN_SPLIT: usize = 4096;
const FREE: usize = 1;
const PREV_FREE: usize = 2;
const FLAGS: usize = FREE | PREV_FREE;

/// Second-level lists per power of two.
const SL_LOG: u32 = 4;
const SL_COUNT: usize = 1 << SL_LOG;
/// Sizes under 2^FL_MIN share first-level list 0 (in steps of 256 bytes); above, one
/// first-level list per power of two up to the region size (under 2^22 bytes).
const FL_MIN: u32 = 12;
const FL_COUNT: usize = 22 - FL_MIN as usize + 1;
/// The largest chunk the bins can hold.
pub(crate) const MAX_CHUNK: usize = (1 << 22) - 1;
const _: () = assert!(SEGMENT_SIZE - SLICE_SIZE - HEADER <= MAX_CHUNK, "a region's one chunk fits the bins");

/// Two-level segregated free lists of chunks (one per heap; it spans all its regions).
pub(crate) struct ChunkHeap {
    fl_bitmap: Cell<u32>,
    sl_bitmap: [Cell<u32>; FL_COUNT],
    heads: [[Cell<*mut u8>; SL_COUNT]; FL_COUNT],
}

/// Where regions lie: each is the part of a chunk segment (`SEGMENT_SIZE`, aligned) after its
/// header slice, `[base + REGION_OFF, base + SEGMENT_SIZE)`.
const REGION_OFF: usize = SLICE_SIZE;

/// Whether address `p` can be in a mapped region, for links read from memory a program could
/// have written: the segment map knows its segment. (The unit tests' regions are in no
/// segment.)
#[inline]
fn mapped(p: *const u8) -> bool {
    cfg!(test) || crate::segment_map::contains(p)
}

/// Reports a chunk header that cannot be right (for chunk `c`) and aborts.
#[cold]
#[inline(never)]
fn corrupted_header(c: *mut u8) -> ! {
    crate::misuse::report("corrupted chunk header", c.wrapping_add(HEADER))
}

/// Reports a chunk free list whose links do not agree (at chunk `c`) and aborts.
#[cold]
#[inline(never)]
fn corrupted_list(c: *mut u8) -> ! {
    crate::misuse::report("chunk free list corrupted", c.wrapping_add(HEADER))
}

// ---- raw chunk access (c is a chunk address, always 16-aligned inside a region) ----
//
// A header's words (size, prev_size) and a canary are read and written as relaxed atomics
// (plain moves on every target): another thread that frees a chunk reads its size word and
// swaps its canary (`mark_remote_free`) while the owner may be setting the same size word's
// PREV_FREE bit as it frees the chunk before it.

/// The word at `p` (8-aligned, inside a region) as an atomic.
///
/// # Safety
/// `p` is an 8-aligned word of a mapped region that lives as long as the reference is used.
#[inline(always)]
unsafe fn word<'a>(p: *mut u8) -> &'a AtomicUsize {
    // SAFETY: per the contract; every access to header and canary words goes through here.
    unsafe { AtomicUsize::from_ptr(p as *mut usize) }
}

/// The size word of the header at `c`; reports a word that does not carry its checksum.
#[inline]
unsafe fn size_flags(c: *mut u8) -> usize {
    // SAFETY: c is a chunk header inside a region.
    match unsafe { try_size_flags(c) } {
        Some(v) => v,
        None => crate::misuse::report("corrupted chunk header", c.wrapping_add(HEADER)),
    }
}
#[inline]
unsafe fn set_size_flags(c: *mut u8, v: usize) {
    // SAFETY: as above.
    unsafe { word(c.add(8)) }.store(crate::mitigations::seal_header(c, v), Relaxed)
}
/// `size_flags` without the report: `None` if the sealed word does not check.
#[inline]
unsafe fn try_size_flags(c: *mut u8) -> Option<usize> {
    // SAFETY: c is a header-sized range inside a region.
    crate::mitigations::try_open_header(c, unsafe { word(c.add(8)) }.load(Relaxed))
}
#[inline]
unsafe fn size_of(c: *mut u8) -> usize {
    // SAFETY: forwarded.
    unsafe { size_flags(c) & !FLAGS }
}
#[inline]
unsafe fn is_free(c: *mut u8) -> bool {
    // SAFETY: forwarded.
    unsafe { size_flags(c) & FREE != 0 }
}
#[inline]
unsafe fn prev_is_free(c: *mut u8) -> bool {
    // SAFETY: forwarded.
    unsafe { size_flags(c) & PREV_FREE != 0 }
}
#[inline]
unsafe fn prev_size(c: *mut u8) -> usize {
    // SAFETY: the first word of a header; meaningful only when PREV_FREE is set.
    unsafe { word(c) }.load(Relaxed)
}
/// Which link word of a free chunk: the next chunk on its list, or the previous one.
const NEXT: usize = 0;
const PREV: usize = 1;

/// The address of link word `which` of free chunk `c`.
#[inline]
fn link_slot(c: *mut u8, which: usize) -> *mut *mut u8 {
    c.wrapping_add(HEADER + 8 * which) as *mut *mut u8
}

/// Writes link word `which` of free chunk `c` (encoded in the secure build).
///
/// # Safety
/// `c` is a chunk of a region being made or kept free.
#[inline]
unsafe fn set_link(c: *mut u8, which: usize, to: *mut u8) {
    let slot = link_slot(c, which);
    let word = crate::mitigations::encode_link(crate::mitigations::chunk_key(), slot.cast(), to.cast());
    // SAFETY: per the contract, the link words follow the header inside the chunk.
    unsafe { *slot = word.cast() }
}

/// Writes chunk `c` as free with `size` (keeping its PREV_FREE bit as given), its footer, and
/// tells the next chunk that its predecessor is free.
unsafe fn write_free(c: *mut u8, size: usize, prev_free: bool) {
    // SAFETY: [c, c + size + 16) lies in the region (the next header follows).
    unsafe {
        set_size_flags(c, size | FREE | if prev_free { PREV_FREE } else { 0 });
        let next = c.add(size);
        word(next).store(size, Relaxed); // footer = next chunk's prev_size
        set_size_flags(next, size_flags(next) | PREV_FREE);
    }
}

/// Writes chunk `c` as in use with `size`, and clears the next chunk's PREV_FREE bit.
unsafe fn write_used(c: *mut u8, size: usize, prev_free: bool) {
    // SAFETY: as for write_free.
    unsafe {
        write_used_header(c, size, prev_free);
        let next = c.add(size);
        set_size_flags(next, size_flags(next) & !PREV_FREE);
    }
}

/// Writes only chunk `c`'s header, as in use with `size`: for a split, whose remainder's
/// header is written next (reading it before would read stale bytes, which the secure
/// build's sealed headers refuse).
unsafe fn write_used_header(c: *mut u8, size: usize, prev_free: bool) {
    // SAFETY: c is a chunk header of the region.
    unsafe { set_size_flags(c, size | if prev_free { PREV_FREE } else { 0 }) }
}

/// Zeroes `words` words at `at`: the header or links of a chunk that another absorbed, or a
/// block's first words, so that no block handed out holds an encoded link, a sealed size or
/// a canary (each would tell a secret's value at one address).
///
/// # Safety
/// `[at, at + 8 * words)` lies inside a chunk the caller owns.
#[inline]
unsafe fn forget(at: *mut u8, words: usize) {
    // SAFETY: per the contract.
    unsafe { ptr::write_bytes(at as *mut usize, 0, words) }
}

/// Writes the canary of in-use chunk `c` of `size` bytes into the word after its block (the
/// next chunk's `prev_size`, which means nothing while `c` is in use), where a write past the
/// block's end lands first. `check_live` and `resize_in_place` check it.
///
/// # Safety
/// `c` is an in-use chunk of a region, of `size` bytes.
#[inline]
unsafe fn set_canary(c: *mut u8, size: usize) {
    // SAFETY: c + size is the next chunk's header (or the sentinel), inside the region.
    unsafe { word(c.add(size)) }.store(crate::mitigations::chunk_canary(c), Relaxed)
}

/// Whether the canary of in-use chunk `c` of `size` bytes is intact.
///
/// # Safety
/// As for `set_canary`.
#[inline]
unsafe fn canary_intact(c: *mut u8, size: usize) -> bool {
    // SAFETY: as for set_canary.
    unsafe { word(c.add(size)) }.load(Relaxed) == crate::mitigations::chunk_canary(c)
}

/// List indices of a free chunk of `size`.
#[inline]
fn mapping(size: usize) -> (usize, usize) {
    if size < 1 << FL_MIN {
        return (0, size >> (FL_MIN - SL_LOG));
    }
    let fl = usize::BITS - 1 - size.leading_zeros();
    let sl = (size >> (fl - SL_LOG)) & (SL_COUNT - 1);
    ((fl - FL_MIN + 1) as usize, sl)
}

/// First list whose every chunk holds `size` bytes, or `None` past the largest list.
#[inline]
fn mapping_search(size: usize) -> Option<(usize, usize)> {
    let step = if size < 1 << FL_MIN {
        1 << (FL_MIN - SL_LOG)
    } else {
        1 << (usize::BITS - 1 - size.leading_zeros() - SL_LOG)
    };
    let rounded = size.checked_add(step - 1)?;
    if rounded > MAX_CHUNK {
        return None;
    }
    Some(mapping(rounded))
}

impl ChunkHeap {
    /// An empty chunk heap (all zero, so a heap in zeroed memory has one).
    pub(crate) const fn new() -> Self {
        ChunkHeap {
            fl_bitmap: Cell::new(0),
            sl_bitmap: [const { Cell::new(0) }; FL_COUNT],
            heads: [const { [const { Cell::new(ptr::null_mut()) }; SL_COUNT] }; FL_COUNT],
        }
    }

    /// The bounds that region chunk address `c` can lie in, as `(start, end)` addresses (end:
    /// one past the sentinel of a region that ends its segment).
    #[inline]
    fn region(&self, c: *mut u8) -> (usize, usize) {
        let base = c.addr() & !(SEGMENT_SIZE - 1);
        (base + REGION_OFF, base + SEGMENT_SIZE)
    }

    /// The size of chunk `c` (which lies in a region), checked: a multiple of 16, at least
    /// a minimal chunk, and ending at or before the region's sentinel.
    ///
    /// # Safety
    /// `c` is 16-aligned and inside a mapped region, before its sentinel.
    #[inline]
    unsafe fn checked_size(&self, c: *mut u8) -> usize {
        // SAFETY: per the contract.
        let size = unsafe { size_of(c) };
        let (_, end) = self.region(c);
        if size < 2 * HEADER || size % 16 != 0 || size > end - HEADER - c.addr() {
            corrupted_header(c);
        }
        size
    }

    /// The size of chunk `c`, whose header says it is free, checked as `checked_size` does,
    /// and against its footer and its successor's `PREV_FREE` bit.
    ///
    /// # Safety
    /// As for `checked_size`.
    unsafe fn checked_free_size(&self, c: *mut u8) -> usize {
        // SAFETY: per the contract; c + size is the next header, inside the region.
        unsafe {
            let size = self.checked_size(c);
            let next = c.add(size);
            if !is_free(c) || prev_size(next) != size || !prev_is_free(next) {
                corrupted_header(c);
            }
            size
        }
    }

    /// Link word `which` of free chunk `c`, decoded and checked to be null or a plausible
    /// chunk address in a mapped region.
    ///
    /// # Safety
    /// `c` is a free chunk of a region.
    #[inline]
    unsafe fn link(&self, c: *mut u8, which: usize) -> *mut u8 {
        let slot = link_slot(c, which);
        // SAFETY: per the contract, the link words follow the header inside the chunk.
        let word = unsafe { *slot };
        let to: *mut u8 =
            crate::mitigations::decode_link(crate::mitigations::chunk_key(), slot.cast(), word.cast()).cast();
        if !to.is_null() {
            let off = to.addr() & (SEGMENT_SIZE - 1);
            if to.addr() % 16 != 0 || !(REGION_OFF..=SEGMENT_SIZE - 3 * HEADER).contains(&off) || !mapped(to) {
                corrupted_list(c);
            }
        }
        to
    }

    /// The list indices of a free chunk of `size` (a checked size: the indices are in range).
    #[inline]
    fn list_of(&self, size: usize) -> (usize, usize) {
        let (fl, sl) = mapping(size.min(MAX_CHUNK));
        (fl.min(FL_COUNT - 1), sl)
    }

    /// Forgets every free chunk (the regions are being handed to another heap).
    pub(crate) fn clear(&self) {
        self.fl_bitmap.set(0);
        self.sl_bitmap.iter().for_each(|c| c.set(0));
        self.heads.iter().flatten().for_each(|c| c.set(ptr::null_mut()));
    }

    /// Puts free chunk `c` of `size` bytes (its header written) on the list of its size.
    ///
    /// # Safety
    /// `c` is a free chunk not on any list.
    unsafe fn insert(&self, c: *mut u8, size: usize) {
        let (fl, sl) = self.list_of(size);
        let head = self.heads[fl][sl].get();
        // SAFETY: c and the head are free chunks of this heap's regions.
        unsafe {
            set_link(c, NEXT, head);
            set_link(c, PREV, ptr::null_mut());
            if !head.is_null() {
                set_link(head, PREV, c);
            }
        }
        self.heads[fl][sl].set(c);
        self.sl_bitmap[fl].set(self.sl_bitmap[fl].get() | 1 << sl);
        self.fl_bitmap.set(self.fl_bitmap.get() | 1 << fl);
    }

    /// Takes free chunk `c` of (checked) `size` bytes off its list, after checking that its
    /// neighbours on the list point back at it: a link rewritten by a use after free must not
    /// become a write to an address of the program's choice.
    ///
    /// # Safety
    /// `c` is a free chunk of this heap's regions.
    unsafe fn remove(&self, c: *mut u8, size: usize) {
        let (fl, sl) = self.list_of(size);
        // SAFETY: c is free; its links lead to free chunks of mapped regions (checked by
        // `link`), whose links are read only after that.
        unsafe {
            let (next, prev) = (self.link(c, NEXT), self.link(c, PREV));
            let prev_ok = if prev.is_null() { self.heads[fl][sl].get() == c } else { self.link(prev, NEXT) == c };
            if !prev_ok || (!next.is_null() && self.link(next, PREV) != c) {
                corrupted_list(c);
            }
            if !next.is_null() {
                set_link(next, PREV, prev);
            }
            if prev.is_null() {
                self.heads[fl][sl].set(next);
                if next.is_null() {
                    let slm = self.sl_bitmap[fl].get() & !(1 << sl);
                    self.sl_bitmap[fl].set(slm);
                    if slm == 0 {
                        self.fl_bitmap.set(self.fl_bitmap.get() & !(1 << fl));
                    }
                }
            } else {
                set_link(prev, NEXT, next);
            }
        }
    }

    /// The chunk after `c` on list `(fl, sl)`, whose predecessor on the list is `prev`,
    /// checked: it must point back at `c` and be a free chunk of the list's sizes. So a walk
    /// cannot loop: a cycle needs a chunk whose back link names two predecessors, or a head
    /// with one.
    ///
    /// # Safety
    /// `c` is on list `(fl, sl)` (checked by the call that reached it).
    unsafe fn list_step(&self, c: *mut u8, prev: *mut u8, fl: usize, sl: usize) -> *mut u8 {
        // SAFETY: forwarded; `link` checks the addresses it returns.
        unsafe {
            if self.link(c, PREV) != prev || self.list_of(self.checked_free_size(c)) != (fl, sl) {
                corrupted_list(c);
            }
            self.link(c, NEXT)
        }
    }

    /// Calls `f` with each chunk on list `(fl, sl)` and its size until `f` returns true;
    /// returns that chunk. Every step is checked (`list_step`).
    fn find_on_list(&self, fl: usize, sl: usize, mut f: impl FnMut(*mut u8, usize) -> bool) -> Option<*mut u8> {
        let (mut prev, mut c) = (ptr::null_mut(), self.heads[fl][sl].get());
        while !c.is_null() {
            // SAFETY: c was reached from the list head by checked steps.
            let next = unsafe { self.list_step(c, prev, fl, sl) };
            // SAFETY: checked by the step.
            if f(c, unsafe { size_of(c) }) {
                return Some(c);
            }
            (prev, c) = (c, next);
        }
        None
    }

    /// A free chunk of at least `size` bytes, taken off its list, and its size; `None` if
    /// there is none.
    fn take_fit(&self, size: usize) -> Option<(*mut u8, usize)> {
        let (fl, sl) = mapping_search(size)?;
        let mut sl_map = self.sl_bitmap[fl].get() & (!0u32 << sl);
        let mut fl = fl;
        if sl_map == 0 {
            let fl_map = self.fl_bitmap.get() & (!0u32).checked_shl(fl as u32 + 1).unwrap_or(0);
            if fl_map == 0 {
                return None;
            }
            fl = fl_map.trailing_zeros() as usize;
            sl_map = self.sl_bitmap[fl].get();
        }
        let sl = sl_map.trailing_zeros() as usize;
        let c = self.heads[fl][sl].get();
        if c.is_null() || fl >= FL_COUNT {
            corrupted_list(c); // (the bitmaps are the heap's own memory: not reachable)
        }
        // SAFETY: c heads a non-empty list, so it is a free chunk; its header is checked.
        unsafe {
            self.list_step(c, ptr::null_mut(), fl, sl);
            let have = size_of(c);
            self.remove(c, have);
            Some((c, have))
        }
    }

    /// Makes `[start, end)` (16-aligned, at least 2 * MIN_SPLIT long) one free chunk plus
    /// the end sentinel.
    ///
    /// # Safety
    /// The range is writable memory owned by this heap and used for nothing else.
    pub(crate) unsafe fn add_region(&self, start: *mut u8, end: *mut u8) {
        let len = end as usize - start as usize;
        debug_assert!(start as usize % 16 == 0 && len % 16 == 0 && len - HEADER <= MAX_CHUNK);
        // SAFETY: the sentinel header occupies the last 16 bytes of the range.
        unsafe {
            let sentinel = end.sub(HEADER);
            set_size_flags(sentinel, 0);
            write_free(start, len - HEADER, false);
            self.insert(start, len - HEADER);
        }
    }

    /// Adopts a region another heap built (after its owner exited): its free chunks join
    /// this heap's lists. Returns the number of chunks in use.
    ///
    /// # Safety
    /// A valid region that no other heap lists.
    pub(crate) unsafe fn adopt_region(&self, start: *mut u8, end: *mut u8) -> usize {
        let mut used = 0;
        let mut c = start;
        // SAFETY: walking a region chunk by chunk up to its sentinel; every size is checked,
        // so each step moves forward and stays inside.
        unsafe {
            while c < end.sub(HEADER) {
                let size = if is_free(c) {
                    let size = self.checked_free_size(c);
                    self.insert(c, size);
                    size
                } else {
                    used += 1;
                    self.checked_size(c)
                };
                c = c.add(size);
            }
        }
        used
    }

    /// Takes a region out of this heap's lists: it must be one free chunk (the region is
    /// empty) and is about to be released.
    ///
    /// # Safety
    /// `start` begins a region of this heap whose only chunk is free.
    pub(crate) unsafe fn remove_region(&self, start: *mut u8) {
        // SAFETY: per the contract.
        unsafe {
            let size = self.checked_free_size(start);
            self.remove(start, size);
        }
    }

    /// First fit within the request's own list, for when the good-fit search finds nothing
    /// (a request just under a chunk's size, e.g. most of an empty region).
    fn take_scan(&self, size: usize) -> Option<(*mut u8, usize)> {
        if size > MAX_CHUNK {
            return None;
        }
        let (fl, sl) = mapping(size);
        let c = self.find_on_list(fl, sl, |_, have| have >= size)?;
        // SAFETY: c is a free chunk on its list (checked by the walk).
        unsafe {
            let have = size_of(c);
            self.remove(c, have);
            Some((c, have))
        }
    }

    /// Allocates a block of `size` bytes (16-aligned). `None` if no free chunk fits: the
    /// caller adds a region and retries.
    pub(crate) fn alloc(&self, size: usize) -> Option<*mut u8> {
        let need = size.checked_add(HEADER + 15)? & !15;
        let (c, have) = self.take_fit(need).or_else(|| self.take_scan(need))?;
        if have < need {
            corrupted_header(c); // (the lists hold only chunks of their sizes: not reachable)
        }
        // SAFETY: c is a free chunk of `have` (checked) >= `need` bytes, off every list.
        unsafe {
            let prev_free = prev_is_free(c);
            if have - need >= MIN_SPLIT {
                write_used_header(c, need, prev_free);
                let rest = c.add(need);
                write_free(rest, have - need, false);
                self.insert(rest, have - need);
            } else {
                write_used(c, have, prev_free);
            }
            set_canary(c, size_of(c));
            // The block's first words held the free chunk's links: a fresh block shows none.
            forget(c.add(HEADER), 2);
            Some(c.add(HEADER))
        }
    }

    /// Frees block `p`, coalescing with free neighbours. Returns the resulting free chunk and
    /// its size (the caller releases the region when that chunk covers all of it).
    ///
    /// # Safety
    /// `p` passed `check_live`: a block of one of this heap's regions whose header says it is
    /// in use (what its neighbours' headers say is checked here).
    pub(crate) unsafe fn free(&self, p: *mut u8) -> (*mut u8, usize) {
        // SAFETY: p follows its chunk header; neighbours are found through the boundary tags,
        // each checked before it is used.
        unsafe {
            let mut c = p.sub(HEADER);
            let mut size = self.checked_size(c);
            let mut prev_free = prev_is_free(c);
            if prev_free {
                // The footer must name a free chunk of exactly its size inside the region: an
                // overflow that rewrote it must not make the coalesce swallow live memory.
                let ps = prev_size(c);
                let (start, _) = self.region(c);
                if ps < 2 * HEADER || ps % 16 != 0 || ps > c.addr() - start {
                    corrupted_header(c);
                }
                let prev = c.sub(ps);
                if !is_free(prev) || size_of(prev) != ps || prev_is_free(prev) {
                    corrupted_header(c);
                }
                self.remove(prev, ps);
                forget(c, 2); // c's header, now inside prev
                size += ps;
                prev_free = false; // (checked: no two free chunks touch)
                c = prev;
            }
            let next = c.add(size);
            if is_free(next) {
                let ns = self.checked_free_size(next);
                self.remove(next, ns);
                forget(next, 4); // its header and links, now inside c
                size += ns;
            }
            write_free(c, size, prev_free);
            self.insert(c, size);
            (c, size)
        }
    }

    /// Why `p` cannot be a live block of the region `[start, end)`, or `None` if its header
    /// says it is one: the pointer must be aligned and inside, the chunk in use, its size
    /// sane, its canary intact and the next chunk's `PREV_FREE` bit clear. (A chunk another
    /// thread freed, waiting for its owner, has its canary complemented: "a freed block".)
    ///
    /// # Safety
    /// `[start, end)` is a mapped chunk region.
    pub(crate) unsafe fn check_live(p: *mut u8, start: *mut u8, end: *mut u8) -> Option<&'static str> {
        // SAFETY: forwarded.
        let (c, size) = match unsafe { Self::check_header(p, start, end) } {
            Ok(cs) => cs,
            Err(what) => return Some(what),
        };
        // SAFETY: c + size is the next header, inside the region (checked).
        unsafe {
            // The canary first: an overflow past the block reaches it before the next header.
            let w = word(c.add(size)).load(Relaxed);
            if w != crate::mitigations::chunk_canary(c) {
                return Some(if w == !crate::mitigations::chunk_canary(c) {
                    "a freed block"
                } else {
                    "a block written past its end"
                });
            }
            match try_size_flags(c.add(size)) {
                Some(sf) if sf & PREV_FREE == 0 => None,
                _ => Some("a corrupted chunk header"),
            }
        }
    }

    /// The chunk of `p` and its size, if `p` is aligned and inside `[start, end)` and its
    /// header says it is a chunk in use of a sane size; else why not.
    ///
    /// # Safety
    /// `[start, end)` is a mapped chunk region.
    unsafe fn check_header(p: *mut u8, start: *mut u8, end: *mut u8) -> Result<(*mut u8, usize), &'static str> {
        let a = p.addr();
        if a % 16 != 0 || a < start.addr() + HEADER || a >= end.addr() {
            return Err("a pointer that is not a block");
        }
        // SAFETY: the header lies inside the region (checked above).
        unsafe {
            let c = p.sub(HEADER);
            // (Not sealed, or not sane: p may be no block at all, its "header" any 16 bytes.)
            let Some(sf) = try_size_flags(c) else {
                return Err("a pointer that is not a block (or a corrupted chunk header)");
            };
            let size = sf & !FLAGS;
            if size < 2 * HEADER || size % 16 != 0 || size > end.addr() - HEADER - c.addr() {
                return Err("a pointer that is not a block (or a corrupted chunk header)");
            }
            if sf & FREE != 0 {
                // A free chunk has its footer and its successor's PREV_FREE bit: else the
                // bit was written over.
                let next = c.add(size);
                return Err(match try_size_flags(next) {
                    Some(n) if prev_size(next) == size && n & PREV_FREE != 0 => "a freed block",
                    _ => "a corrupted chunk header",
                });
            }
            Ok((c, size))
        }
    }

    /// For a free of `p` by a thread that does not own its chunk, which only pushes it for the
    /// owner to free later: checks it as `check_live` does, and marks it freed at once by
    /// complementing its canary (one compare-and-swap), so that a second free of it, by any
    /// thread, is caught now rather than when the owner gets to it. The canary changes only
    /// when the block is freed or resized, which its program may not do while it frees it.
    /// Why not, or `None` when it is marked.
    ///
    /// # Safety
    /// `[start, end)` is a mapped chunk region.
    pub(crate) unsafe fn mark_remote_free(p: *mut u8, start: *mut u8, end: *mut u8) -> Option<&'static str> {
        // SAFETY: forwarded.
        let (c, size) = match unsafe { Self::check_header(p, start, end) } {
            Ok(cs) => cs,
            Err(what) => return Some(what),
        };
        let canary = crate::mitigations::chunk_canary(c);
        // SAFETY: the canary word, inside the region; only this CAS and the owner (once it
        // frees the block) write it while the block is being freed.
        match unsafe { word(c.add(size)) }.compare_exchange(canary, !canary, AcqRel, Relaxed) {
            Ok(_) => None,
            Err(w) if w == !canary => Some("a freed block"),
            Err(_) => Some("a block written past its end"),
        }
    }

    /// The owner's side of `mark_remote_free`, as it takes `p` from the remote list to free
    /// it: puts the canary back. False if it was not complemented (the list is corrupted).
    ///
    /// # Safety
    /// `p` came off a chunk segment's remote list and passed `check_header`'s range checks.
    pub(crate) unsafe fn unmark_remote_free(p: *mut u8, start: *mut u8, end: *mut u8) -> bool {
        // SAFETY: forwarded.
        let Ok((c, size)) = (unsafe { Self::check_header(p, start, end) }) else { return false };
        let canary = crate::mitigations::chunk_canary(c);
        // SAFETY: as in mark_remote_free; the block is the owner's alone now.
        unsafe {
            let w = word(c.add(size));
            if w.load(Relaxed) != !canary {
                return false;
            }
            w.store(canary, Relaxed);
        }
        true
    }

    /// The usable size of block `p`.
    ///
    /// # Safety
    /// `p` is a live block.
    pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
        // SAFETY: p follows its header.
        unsafe { size_of(p.sub(HEADER)).saturating_sub(HEADER) }
    }

    /// Resizes block `p` in place to hold `new_size` bytes: grows into a free next neighbour,
    /// shrinks by splitting off the tail. False if it cannot (the block is unchanged).
    ///
    /// # Safety
    /// `p` is a live block of this heap's regions.
    pub(crate) unsafe fn resize_in_place(&self, p: *mut u8, new_size: usize) -> bool {
        let Some(need) = new_size.checked_add(HEADER + 15).map(|n| n & !15) else { return false };
        // SAFETY: p is live; its neighbours are found through the boundary tags, each checked.
        unsafe {
            let c = p.sub(HEADER);
            let have = self.checked_size(c);
            if !canary_intact(c, have) {
                crate::misuse::report("a block written past its end", p);
            }
            let prev_free = prev_is_free(c);
            let mut total = have;
            let next = c.add(have);
            if need > have {
                if !is_free(next) {
                    return false;
                }
                let ns = self.checked_free_size(next);
                if have + ns < need {
                    return false;
                }
                self.remove(next, ns);
                forget(next, 4); // its header and links, now inside the block
                total += ns;
            } else if have - need < MIN_SPLIT {
                return true; // a small shrink: keep the chunk as it is
            }
            // `total` bytes from c are ours; keep `need`, free the tail if it is worth it.
            let tail = total - need;
            if tail >= MIN_SPLIT {
                write_used_header(c, need, prev_free);
                let rest = c.add(need);
                let after = rest.add(tail);
                let rest_size = if is_free(after) {
                    let after_size = self.checked_free_size(after);
                    self.remove(after, after_size);
                    forget(after, 4);
                    tail + after_size
                } else {
                    tail
                };
                write_free(rest, rest_size, false);
                self.insert(rest, rest_size);
            } else {
                write_used(c, total, prev_free);
            }
            set_canary(c, size_of(c));
            true
        }
    }

    /// Decommits the whole OS pages (of `page` bytes, a power of two) inside every free chunk
    /// of a region (headers, links and footers stay). Returns the bytes decommitted.
    ///
    /// # Safety
    /// `[start, end)` is a region of this heap; `decommit` may drop the contents of the ranges
    /// it is given.
    pub(crate) unsafe fn purge_free(
        &self,
        start: *mut u8,
        end: *mut u8,
        page: usize,
        mut decommit: impl FnMut(*mut u8, usize),
    ) -> usize {
        let mut bytes = 0;
        let mut c = start;
        // SAFETY: walking the region through its headers (each size checked).
        unsafe {
            while c < end.sub(HEADER) {
                let size = self.checked_size(c);
                if is_free(c) {
                    let from = (c as usize + HEADER + 16).next_multiple_of(page);
                    let to = (c as usize + size) & !(page - 1);
                    if to > from {
                        decommit(c.add(from - c as usize), to - from);
                        bytes += to - from;
                    }
                }
                c = c.add(size);
            }
        }
        bytes
    }

    /// (free chunks, their bytes, the largest) over the lists, for fragmentation figures.
    pub(crate) fn free_figures(&self) -> (usize, usize, usize) {
        let (mut n, mut bytes, mut largest) = (0, 0, 0);
        for fl in 0..FL_COUNT {
            for sl in 0..SL_COUNT {
                self.find_on_list(fl, sl, |_, size| {
                    n += 1;
                    bytes += size;
                    largest = largest.max(size);
                    false
                });
            }
        }
        (n, bytes, largest)
    }

    /// Checks the region invariants; returns (free chunks, free bytes, used chunks). Panics on
    /// a violation.
    ///
    /// # Safety
    /// `[start, end)` is a region of this heap.
    pub(crate) unsafe fn validate_region(&self, start: *mut u8, end: *mut u8) -> (usize, usize, usize) {
        let (mut free, mut free_bytes, mut used) = (0, 0, 0);
        let mut c = start;
        let mut prev_was_free = false;
        // SAFETY: walking the region through its headers.
        unsafe {
            let sentinel = end.sub(HEADER);
            while c < sentinel {
                let size = size_of(c);
                assert!(size >= 32 && size % 16 == 0, "chunk {c:p} has a bad size {size}");
                assert_eq!(prev_is_free(c), prev_was_free, "PREV_FREE of {c:p} matches its predecessor");
                if is_free(c) {
                    assert!(!prev_was_free, "two adjacent free chunks at {c:p}");
                    assert_eq!(prev_size(c.add(size)), size, "footer of free chunk {c:p}");
                    assert!(self.lists_contain(c), "free chunk {c:p} is on the list its size maps to");
                    free += 1;
                    free_bytes += size;
                } else {
                    used += 1;
                }
                prev_was_free = is_free(c);
                c = c.add(size);
            }
            assert_eq!(c, sentinel, "chunks tile the region exactly");
            assert_eq!(size_of(sentinel), 0);
            assert_eq!(prev_is_free(sentinel), prev_was_free);
        }
        (free, free_bytes, used)
    }

    fn lists_contain(&self, c: *mut u8) -> bool {
        // SAFETY: called on a free chunk.
        let (fl, sl) = self.list_of(unsafe { size_of(c) });
        self.find_on_list(fl, sl, |x, _| x == c).is_some()
    }

    /// Checks the lists and bitmaps; returns the number of free chunks listed.
    pub(crate) fn validate_lists(&self) -> usize {
        let mut n = 0;
        for fl in 0..FL_COUNT {
            assert_eq!(self.fl_bitmap.get() & (1 << fl) != 0, self.sl_bitmap[fl].get() != 0, "first-level bit {fl}");
            for sl in 0..SL_COUNT {
                let head = self.heads[fl][sl].get();
                assert_eq!(self.sl_bitmap[fl].get() & (1 << sl) != 0, !head.is_null(), "second-level bit {fl}/{sl}");
                let mut prev = ptr::null_mut();
                let mut c = head;
                while !c.is_null() {
                    // SAFETY: list members are free chunks.
                    unsafe {
                        assert!(is_free(c));
                        assert_eq!(mapping(size_of(c)), (fl, sl), "chunk on the list of its size");
                        assert_eq!(self.link(c, PREV), prev);
                        prev = c;
                        c = self.link(c, NEXT);
                    }
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A region of `len` bytes that ends where a chunk segment would (at a multiple of
    /// `SEGMENT_SIZE`), inside a buffer that has room for that.
    struct Region {
        buf: Vec<u128>,
        len: usize,
    }

    impl Region {
        fn new(len: usize) -> Self {
            assert!(len <= SEGMENT_SIZE - REGION_OFF);
            Region { buf: vec![0; (len + SEGMENT_SIZE) / 16], len }
        }
        fn end(&mut self) -> *mut u8 {
            let p: *mut u8 = self.buf.as_mut_ptr().cast();
            p.wrapping_add((p.addr() + self.len).next_multiple_of(SEGMENT_SIZE) - p.addr())
        }
        fn start(&mut self) -> *mut u8 {
            self.end().wrapping_sub(self.len)
        }
        /// The chunk heap for this region.
        fn heap(&self) -> ChunkHeap {
            ChunkHeap::new()
        }
    }

    fn check(h: &ChunkHeap, r: &mut Region) -> (usize, usize, usize) {
        let (start, end) = (r.start(), r.end());
        // SAFETY: the region belongs to h.
        let v = unsafe { h.validate_region(start, end) };
        assert_eq!(h.validate_lists(), v.0, "every listed chunk is a free chunk of the region");
        v
    }

    const LEN: usize = 1 << 20;

    #[test]
    fn free_between_two_free_neighbours_merges_all_three() {
        let mut r = Region::new(LEN);
        let h = r.heap();
        // SAFETY: a fresh region.
        unsafe { h.add_region(r.start(), r.end()) };
        let a = h.alloc(100_000).unwrap();
        let b = h.alloc(100_000).unwrap();
        let c = h.alloc(100_000).unwrap();
        let _d = h.alloc(100_000).unwrap();
        // SAFETY: live blocks.
        unsafe {
            h.free(a);
            h.free(c);
            assert_eq!(check(&h, &mut r).0, 3, "a, c and the tail are free");
            let (merged, size) = h.free(b);
            assert_eq!(merged, a.sub(HEADER), "b merged with a before it");
            assert!(size >= 3 * 100_000, "and with c after it");
        }
        assert_eq!(check(&h, &mut r), (2, LEN - HEADER - (100_000 + HEADER).next_multiple_of(16), 1));
    }

    #[test]
    fn free_at_region_edges_coalesces_to_one_chunk() {
        let mut r = Region::new(LEN);
        let h = r.heap();
        // SAFETY: a fresh region.
        unsafe { h.add_region(r.start(), r.end()) };
        let first = h.alloc(200_000).unwrap();
        let last = h.alloc(LEN - 200_000 - 4 * HEADER - 32).unwrap();
        assert_eq!(check(&h, &mut r).0, 0, "the region is full");
        // SAFETY: live blocks.
        unsafe {
            h.free(last);
            check(&h, &mut r);
            let (c, size) = h.free(first);
            assert_eq!(c, r.start());
            assert_eq!(size, LEN - HEADER, "everything merged back into one chunk");
        }
        assert_eq!(check(&h, &mut r), (1, LEN - HEADER, 0));
    }

    #[test]
    fn a_remainder_too_small_to_split_stays_with_the_block() {
        let mut r = Region::new(LEN);
        let h = r.heap();
        // SAFETY: a fresh region.
        unsafe { h.add_region(r.start(), r.end()) };
        let whole = LEN - HEADER;
        let p = h.alloc(whole - HEADER - 1000).unwrap();
        // SAFETY: live block.
        assert_eq!(unsafe { ChunkHeap::usable_size(p) }, whole - HEADER, "the 1000-byte rest was not split off");
        assert_eq!(check(&h, &mut r), (0, 0, 1));
        assert!(h.alloc(10).is_none(), "nothing left");
    }

    #[test]
    fn resize_grows_into_a_free_neighbour_and_shrinks_by_splitting() {
        let mut r = Region::new(LEN);
        let h = r.heap();
        // SAFETY: a fresh region; p stays live.
        unsafe {
            h.add_region(r.start(), r.end());
            let p = h.alloc(100_000).unwrap();
            let q = h.alloc(100_000).unwrap();
            h.free(q);
            assert!(h.resize_in_place(p, 300_000), "grows into the free chunk after it");
            assert!(ChunkHeap::usable_size(p) >= 300_000);
            check(&h, &mut r);
            assert!(h.resize_in_place(p, 50_000), "shrinks in place");
            assert!(ChunkHeap::usable_size(p) < 60_000);
            assert_eq!(check(&h, &mut r), (1, LEN - HEADER - (50_000 + HEADER).next_multiple_of(16), 1));
            let blocker = h.alloc(LEN - 200_000).unwrap();
            assert!(!h.resize_in_place(p, LEN - 100_000), "cannot grow past a used neighbour");
            h.free(blocker);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize),
        Free(usize),
        Resize(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..200_000).prop_map(Op::Alloc),
            3 => any::<usize>().prop_map(Op::Free),
            2 => (any::<usize>(), 1usize..300_000).prop_map(|(i, s)| Op::Resize(i, s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn op_programs_keep_blocks_apart_and_invariants_true(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 30 } else { 300 })) {
            let mut r = Region::new(if cfg!(miri) { 1 << 18 } else { 2 << 20 });
            let h = r.heap();
            // SAFETY: a fresh region.
            unsafe { h.add_region(r.start(), r.end()) };
            let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
            let mut seed = 0u8;
            let fill = |p: *mut u8, n: usize, s: u8| {
                // SAFETY: p holds n bytes (sampled under Miri).
                unsafe { for k in (0..n).step_by(if cfg!(miri) { 997 } else { 61 }) { *p.add(k) = s ^ k as u8 } }
            };
            let same = |p: *mut u8, n: usize, s: u8| {
                // SAFETY: as for fill.
                (0..n).step_by(if cfg!(miri) { 997 } else { 61 }).all(|k| unsafe { *p.add(k) } == s ^ k as u8)
            };
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        if let Some(p) = h.alloc(n) {
                            assert_eq!(p as usize % 16, 0);
                            // SAFETY: live block.
                            assert!(unsafe { ChunkHeap::usable_size(p) } >= n);
                            for &(q, m, _) in &live {
                                assert!(p as usize + n <= q as usize || q as usize + m <= p as usize, "overlap");
                            }
                            seed = seed.wrapping_add(1);
                            fill(p, n, seed);
                            live.push((p, n, seed));
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (p, n, s) = live.swap_remove(i % live.len());
                        assert!(same(p, n, s), "contents kept until free");
                        // SAFETY: live block.
                        unsafe { h.free(p) };
                    }
                    Op::Resize(i, n) if !live.is_empty() => {
                        let k = i % live.len();
                        let (p, m, s) = live[k];
                        // SAFETY: live block.
                        if unsafe { h.resize_in_place(p, n) } {
                            assert!(same(p, m.min(n), s), "contents kept by a resize in place");
                            // SAFETY: live block.
                            assert!(unsafe { ChunkHeap::usable_size(p) } >= n);
                            seed = seed.wrapping_add(1);
                            fill(p, n, seed);
                            live[k] = (p, n, seed);
                        }
                    }
                    _ => {}
                }
                let (_, _, used) = check(&h, &mut r);
                assert_eq!(used, live.len());
            }
            for (p, _, _) in live.drain(..) {
                // SAFETY: live block.
                unsafe { h.free(p) };
            }
            let len = r.len;
            assert_eq!(check(&h, &mut r), (1, len - HEADER, 0), "all free: one chunk again");
        }
    }
}
