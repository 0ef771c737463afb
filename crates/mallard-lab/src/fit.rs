//! The sequential-fit strategies of the talk: one heap of chunks with headers, free chunks
//! split to serve a request and coalesced with their free neighbours when freed, and a choice
//! of which free chunk serves a request:
//! - **first fit**: the lowest-addressed chunk that fits (address-ordered, as Knuth and
//!   Johnstone & Wilson study it);
//! - **next fit**: the first that fits at or after where the last search ended, wrapping round;
//! - **best fit**: the smallest that fits (the lowest address among equals);
//! - **TLSF** (two-level segregated fit, Masmano et al. 2004): free chunks sit in bins, 4 per
//!   power of two (`TLSF_SL_LOG`); a request is rounded up to the start of the next bin, so
//!   that *any* chunk of the first non-empty bin from there fits, and takes one (here the
//!   lowest address, where a real TLSF takes its list's head). Finding the bin is two bitmap
//!   scans, O(1); the price is up to a bin's width of waste: a chunk up to 25 % larger than a
//!   best fit, split off again when the rest makes a chunk.
//!
//! A chunk is a `HEADER` of 16 bytes (size and flags, as glibc's) followed by the block; a
//! free chunk is at least `MIN_CHUNK`. The heap grows at its top by at least `GROW_MIN` (in
//! whole pages), extending a free chunk that ends there, and gives back all but a page's
//! worth of a free top chunk larger than `TRIM`, as glibc's `malloc_trim` threshold does.

use crate::{align_up, Span, Strategy, HEAP_BASE, PAGE};
use std::collections::{BTreeMap, BTreeSet};

pub const HEADER: u64 = 16;
pub const MIN_CHUNK: u64 = 32;
pub const GROW_MIN: u64 = 128 << 10;
pub const TRIM: u64 = 128 << 10;

/// Which free chunk serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    FirstFit,
    NextFit,
    BestFit,
    Tlsf,
}

/// TLSF's second level: bins per power of two (2^2).
pub const TLSF_SL_LOG: u32 = 2;

/// The TLSF bin of a chunk of `size` bytes: (power of two, sub-bin) as one ordered number.
pub fn tlsf_bin(size: u64) -> u64 {
    let fl = 63 - size.leading_zeros() as u64;
    let sl = if fl >= TLSF_SL_LOG as u64 { (size >> (fl - TLSF_SL_LOG as u64)) & ((1 << TLSF_SL_LOG) - 1) } else { 0 };
    (fl << TLSF_SL_LOG) | sl
}

/// A request for a chunk of `size` bytes rounded up to the first size of the next bin (unless
/// it starts a bin), so that every chunk in the bin it lands in fits.
fn tlsf_round(size: u64) -> u64 {
    let fl = 63 - size.leading_zeros();
    if fl < TLSF_SL_LOG {
        return size;
    }
    let step = 1u64 << (fl - TLSF_SL_LOG);
    (size + step - 1) & !(step - 1)
}

/// A heap of chunks with a sequential-fit policy.
pub struct FitHeap {
    policy: Policy,
    /// The end of the heap (its start is `HEAP_BASE`).
    top: u64,
    /// Free chunks: start -> size.
    free: BTreeMap<u64, u64>,
    /// The same chunks by (size, start), for best fit.
    by_size: BTreeSet<(u64, u64)>,
    /// Chunks in use: block address -> chunk size (the chunk starts `HEADER` before).
    used: BTreeMap<u64, u64>,
    /// Next fit: where the last search ended.
    rover: u64,
}

impl FitHeap {
    pub fn new(policy: Policy) -> FitHeap {
        FitHeap {
            policy,
            top: HEAP_BASE,
            free: BTreeMap::new(),
            by_size: BTreeSet::new(),
            used: BTreeMap::new(),
            rover: HEAP_BASE,
        }
    }

    fn insert_free(&mut self, start: u64, size: u64) {
        debug_assert!(size >= MIN_CHUNK);
        self.free.insert(start, size);
        self.by_size.insert((size, start));
    }

    fn remove_free(&mut self, start: u64) -> u64 {
        let size = self.free.remove(&start).expect("a free chunk");
        self.by_size.remove(&(size, start));
        size
    }

    /// The chunk that serves a block of `psize` bytes aligned to `align`, by the policy:
    /// (chunk start, block address).
    fn find(&self, psize: u64, align: u64) -> Option<(u64, u64)> {
        let fits = |(&start, &size): (&u64, &u64)| place(start, size, psize, align).map(|p| (start, p));
        match self.policy {
            Policy::FirstFit => self.free.iter().find_map(fits),
            Policy::NextFit => self.free.range(self.rover..).chain(self.free.range(..self.rover)).find_map(fits),
            Policy::BestFit => self.by_size.range((psize + HEADER, 0)..).find_map(|(size, start)| fits((start, size))),
            Policy::Tlsf => {
                // The first non-empty bin at or above the rounded request (an aligned request
                // asks for its worst-case padding too), its lowest-addressed chunk; should
                // alignment make that one miss, the next bins.
                let want = tlsf_round(psize + HEADER + if align > 16 { align + MIN_CHUNK } else { 0 });
                let mut rest = self.by_size.range((want, 0)..).peekable();
                while let Some(&&(size, _)) = rest.peek() {
                    let bin = tlsf_bin(size);
                    let mut best: Option<(u64, u64)> = None;
                    while let Some(&&(z, s)) = rest.peek() {
                        if tlsf_bin(z) != bin {
                            break;
                        }
                        rest.next();
                        if best.is_none_or(|(b, _)| s < b) {
                            if let Some(p) = place(s, z, psize, align) {
                                best = Some((s, p));
                            }
                        }
                    }
                    if best.is_some() {
                        return best;
                    }
                }
                None
            }
        }
    }

    /// Grows the heap so that its top free chunk can hold `psize` bytes aligned to `align`;
    /// returns that chunk's start.
    fn grow(&mut self, psize: u64, align: u64) -> u64 {
        let want = align_up((psize + align + HEADER + MIN_CHUNK).max(GROW_MIN), PAGE);
        let old_top = self.top;
        self.top += want;
        match self.free.range(..old_top).next_back().map(|(&s, &z)| (s, z)) {
            Some((start, size)) if start + size == old_top => {
                self.remove_free(start);
                self.insert_free(start, size + want);
                start
            }
            _ => {
                self.insert_free(old_top, want);
                old_top
            }
        }
    }

    /// Takes free chunk `start` to hold block `p` of `psize` bytes: the gap before it and the
    /// rest after it stay free when they can make a chunk.
    fn carve(&mut self, start: u64, p: u64, psize: u64) {
        let size = self.remove_free(start);
        let chunk = p - HEADER;
        if chunk > start {
            self.insert_free(start, chunk - start);
        }
        let mut end = p + psize;
        let rest = start + size - end;
        if rest >= MIN_CHUNK {
            self.insert_free(end, rest);
        } else {
            end += rest;
        }
        self.used.insert(p, end - chunk);
        self.rover = end;
    }

    /// Gives back the top free chunk beyond a page, once it is larger than `TRIM`.
    fn trim(&mut self) {
        let Some((&start, &size)) = self.free.iter().next_back() else { return };
        if start + size != self.top || size <= TRIM {
            return;
        }
        let new_top = align_up(start + MIN_CHUNK, PAGE);
        self.remove_free(start);
        self.insert_free(start, new_top - start);
        self.top = new_top;
    }

    /// Free chunks now (for the lab's figures).
    pub fn free_chunks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free.iter().map(|(&s, &z)| (s, z))
    }
}

/// Where block of `psize` bytes aligned to `align` goes in free chunk (`start`, `size`), if it
/// fits: right after the header, or far enough on that the gap before it is a chunk.
fn place(start: u64, size: u64, psize: u64, align: u64) -> Option<u64> {
    let mut p = align_up(start + HEADER, align);
    let gap = p - HEADER - start;
    if gap != 0 && gap < MIN_CHUNK {
        p = align_up(start + MIN_CHUNK + HEADER, align);
    }
    (p + psize <= start + size).then_some(p)
}

impl Strategy for FitHeap {
    fn name(&self) -> &'static str {
        match self.policy {
            Policy::FirstFit => "first-fit",
            Policy::NextFit => "next-fit",
            Policy::BestFit => "best-fit",
            Policy::Tlsf => "tlsf",
        }
    }

    fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let align = align.max(16);
        let psize = align_up(size.max(1), 16);
        let (start, p) = match self.find(psize, align) {
            Some(found) => found,
            None => {
                let start = self.grow(psize, align);
                let size = self.free[&start];
                (start, place(start, size, psize, align).expect("the grown top chunk fits"))
            }
        };
        self.carve(start, p, psize);
        p
    }

    fn free(&mut self, addr: u64) {
        let size = self.used.remove(&addr).unwrap_or_else(|| panic!("free of {addr:#x}, not a live block"));
        let (mut start, mut end) = (addr - HEADER, addr - HEADER + size);
        if let Some((&ps, &pz)) = self.free.range(..start).next_back() {
            if ps + pz == start {
                self.remove_free(ps);
                start = ps;
            }
        }
        if self.free.contains_key(&end) {
            end += self.remove_free(end);
        }
        self.insert_free(start, end - start);
        self.trim();
    }

    fn footprint(&self) -> u64 {
        self.top - HEAP_BASE
    }

    fn block_size(&self, addr: u64) -> u64 {
        self.used[&addr]
    }

    fn largest_free(&self) -> u64 {
        self.by_size.last().map_or(0, |&(size, _)| size)
    }

    fn spans(&self) -> Vec<Span> {
        let mut v: Vec<Span> = self.free.iter().map(|(&start, &len)| Span { start, len, free: true }).collect();
        v.extend(self.used.iter().map(|(&p, &len)| Span { start: p - HEADER, len, free: false }));
        v.sort_unstable_by_key(|s| s.start);
        v
    }

    fn validate(&self) {
        assert!(self.top >= HEAP_BASE && (self.top - HEAP_BASE).is_multiple_of(PAGE), "the heap is whole pages");
        let mut chunks: Vec<(u64, u64, bool)> = self.free.iter().map(|(&s, &z)| (s, z, true)).collect();
        chunks.extend(self.used.iter().map(|(&p, &z)| (p - HEADER, z, false)));
        chunks.sort_unstable();
        let mut at = HEAP_BASE;
        let mut last_free = false;
        for &(start, size, is_free) in &chunks {
            assert_eq!(start, at, "chunks tile the heap: a gap or an overlap at {at:#x}");
            assert!(size >= MIN_CHUNK || !is_free, "free chunk at {start:#x} smaller than a chunk");
            assert!(!(is_free && last_free), "two free chunks side by side at {start:#x}: not coalesced");
            at += size;
            last_free = is_free;
        }
        assert_eq!(at, self.top, "chunks end at the top");
        assert_eq!(self.by_size.len(), self.free.len());
        assert!(self.free.iter().all(|(&s, &z)| self.by_size.contains(&(z, s))), "size index matches");
    }
}
