//! Binary buddy (Knowlton 1965; the talk's power-of-two bins taken to their end): every block
//! is a power of two, at an offset from `HEAP_BASE` that is a multiple of its size, so a block's
//! *buddy* (the other half of the block it was split from) is found by flipping one bit of its
//! offset. A request takes the smallest free block of its size or more and splits it in halves
//! down to its size; a freed block merges with its buddy while the buddy is free.
//!
//! The size of a block is kept beside the heap (as a bitmap would be), not in a header, so a
//! request of `2^k` bytes takes exactly `2^k`; one of `2^k + 1` takes `2^(k+1)`, wasting almost
//! half: the internal fragmentation buddy is known for. The heap grows at its top in whole
//! pages: first free blocks up to the alignment the new block needs, then the block.

use crate::{Span, Strategy, HEAP_BASE, PAGE};
use std::collections::{BTreeMap, BTreeSet};

/// The smallest block: 16 bytes.
pub const MIN_ORDER: u32 = 4;
const PAGE_ORDER: u32 = PAGE.trailing_zeros();

pub struct Buddy {
    top: u64,
    /// Free blocks per order (offsets from `HEAP_BASE`).
    free: Vec<BTreeSet<u64>>,
    /// All free blocks by offset, with their order (to find the one at the top).
    free_at: BTreeMap<u64, u32>,
    /// Blocks in use: offset -> order.
    used: BTreeMap<u64, u32>,
}

impl Default for Buddy {
    fn default() -> Self {
        Self::new()
    }
}

impl Buddy {
    pub fn new() -> Buddy {
        Buddy { top: 0, free: vec![BTreeSet::new(); 64], free_at: BTreeMap::new(), used: BTreeMap::new() }
    }

    fn push(&mut self, off: u64, order: u32) {
        self.free[order as usize].insert(off);
        self.free_at.insert(off, order);
    }

    fn take(&mut self, off: u64, order: u32) -> bool {
        if self.free[order as usize].remove(&off) {
            self.free_at.remove(&off);
            true
        } else {
            false
        }
    }

    /// Frees block `off` of `order`, merging it with its buddy as far as it goes.
    fn release(&mut self, mut off: u64, mut order: u32) {
        loop {
            let buddy = off ^ (1 << order);
            if buddy + (1 << order) > self.top || !self.take(buddy, order) {
                break;
            }
            off = off.min(buddy);
            order += 1;
        }
        self.push(off, order);
    }

    /// Grows the heap by a free block of `order` (at least a page) at a multiple of its size.
    fn grow(&mut self, order: u32) {
        let order = order.max(PAGE_ORDER);
        while !self.top.is_multiple_of(1 << order) {
            let fill = self.top.trailing_zeros();
            self.top += 1 << fill;
            self.release(self.top - (1 << fill), fill);
        }
        self.top += 1 << order;
        self.release(self.top - (1 << order), order);
    }
}

/// The order of a block that holds `size` bytes aligned to `align`.
fn order_of(size: u64, align: u64) -> u32 {
    size.max(align).max(1 << MIN_ORDER).next_power_of_two().trailing_zeros()
}

impl Strategy for Buddy {
    fn name(&self) -> &'static str {
        "buddy"
    }

    fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let k = order_of(size, align);
        let (off, mut j) = loop {
            let found = (k as usize..self.free.len()).find_map(|j| self.free[j].first().map(|&o| (o, j as u32)));
            match found {
                Some(f) => break f,
                None => self.grow(k),
            }
        };
        self.take(off, j);
        while j > k {
            j -= 1;
            self.push(off + (1 << j), j);
        }
        self.used.insert(off, k);
        HEAP_BASE + off
    }

    fn free(&mut self, addr: u64) {
        let off = addr.wrapping_sub(HEAP_BASE);
        let order = self.used.remove(&off).unwrap_or_else(|| panic!("free of {addr:#x}, not a live block"));
        self.release(off, order);
        // Give back free blocks at the top, whole pages at a time.
        while let Some((&o, &k)) = self.free_at.iter().next_back() {
            if o + (1 << k) != self.top || k < PAGE_ORDER {
                break;
            }
            self.take(o, k);
            self.top = o;
        }
    }

    fn footprint(&self) -> u64 {
        self.top
    }

    fn block_size(&self, addr: u64) -> u64 {
        1 << self.used[&addr.wrapping_sub(HEAP_BASE)]
    }

    fn largest_free(&self) -> u64 {
        self.free.iter().rposition(|s| !s.is_empty()).map_or(0, |k| 1 << k)
    }

    fn spans(&self) -> Vec<Span> {
        let span = |(&o, &k): (&u64, &u32), free| Span { start: HEAP_BASE + o, len: 1 << k, free };
        let mut v: Vec<Span> = self.free_at.iter().map(|e| span(e, true)).collect();
        v.extend(self.used.iter().map(|e| span(e, false)));
        v.sort_unstable_by_key(|s| s.start);
        v
    }

    fn validate(&self) {
        assert!(self.top.is_multiple_of(PAGE), "the heap is whole pages");
        let mut blocks: Vec<(u64, u32, bool)> = self.free_at.iter().map(|(&o, &k)| (o, k, true)).collect();
        blocks.extend(self.used.iter().map(|(&o, &k)| (o, k, false)));
        blocks.sort_unstable();
        let mut at = 0;
        for &(off, k, is_free) in &blocks {
            assert_eq!(off, at, "blocks tile the heap: a gap or an overlap at offset {at:#x}");
            assert!(off.is_multiple_of(1 << k), "block at {off:#x} of order {k} is aligned to its size");
            if is_free {
                assert!(self.free[k as usize].contains(&off), "per-order lists match");
                let buddy = off ^ (1 << k);
                assert!(self.free_at.get(&buddy) != Some(&k), "free buddies at {off:#x} and {buddy:#x}: not merged");
            }
            at += 1 << k;
        }
        assert_eq!(at, self.top, "blocks end at the top");
        assert_eq!(self.free.iter().map(|s| s.len()).sum::<usize>(), self.free_at.len());
    }
}
