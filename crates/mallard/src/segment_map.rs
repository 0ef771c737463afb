//! The segment map: which 4 MiB regions of the address space hold a mallard segment header.
//!
//! `free` consults it before it reads anything at `segment_of(p)`: a pointer mallard did not
//! hand out (on the stack, in a global, from another allocator, or null) usually lies in a
//! region with no segment, whose header address may not even be mapped. One byte per region
//! of the user address space (2^47 bytes on x86-64, 2^48 elsewhere) is 32 or 64 MiB of `.bss`
//! address space, of which a process touches a page or two (one page covers 16 GiB); the test
//! is a compare and one byte load, two instructions cheaper than a bitmap.
//!
//! Under Miri, whose addresses are not those of a real process, every non-null pointer passes.

#[cfg(not(miri))]
use crate::config::SEGMENT_SHIFT;
#[cfg(not(miri))]
use core::sync::atomic::{AtomicU8, Ordering};

#[cfg(all(target_arch = "x86_64", not(miri)))]
const ADDRESS_BITS: u32 = 47;
#[cfg(all(not(target_arch = "x86_64"), not(miri)))]
const ADDRESS_BITS: u32 = 48;

#[cfg(not(miri))]
const ENTRIES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

#[cfg(not(miri))]
static MAP: [AtomicU8; ENTRIES] = [const { AtomicU8::new(0) }; ENTRIES];

/// Index of the region holding the segment of block `p`: like `segment_of`, `p - 1`, so that
/// a block that ends a huge mapping's first region is found by its start.
#[cfg(not(miri))]
#[inline(always)]
fn index(p: *const u8) -> usize {
    p.addr().wrapping_sub(1) >> SEGMENT_SHIFT
}

/// Whether `p` lies in a region that holds a mallard segment (false for null).
///
/// The index wraps at the top of the user address space instead of being range-checked (one
/// instruction instead of three on every free): an address above it, which no user pointer
/// has, aliases a region near the top, where the stack is and no segment is ever mapped;
/// null wraps to the very last region, likewise.
#[inline(always)]
pub(crate) fn contains(p: *const u8) -> bool {
    #[cfg(not(miri))]
    {
        // An address past the map (beyond user space, or null, which wraps to the top) is
        // in no segment: masking it into range instead would alias it to a segment's region.
        let i = index(p);
        // SAFETY: i < ENTRIES (checked first).
        i < ENTRIES && unsafe { MAP.get_unchecked(i) }.load(Ordering::Relaxed) != 0
    }
    #[cfg(miri)]
    !p.is_null()
}

/// Records the segment whose header is at `seg` (segment aligned). Done before any block of it
/// is handed out.
pub(crate) fn insert(seg: *const u8) {
    #[cfg(not(miri))]
    if let Some(e) = MAP.get(index(seg.wrapping_add(1))) {
        debug_assert!(index(seg.wrapping_add(1)) < ENTRIES - 1, "a segment in the last region, which null aliases");
        e.store(1, Ordering::Relaxed);
    }
    #[cfg(miri)]
    let _ = seg;
}

/// Forgets the segment whose header is at `seg`, before its memory is unmapped or moved.
pub(crate) fn remove(seg: *const u8) {
    #[cfg(not(miri))]
    if let Some(e) = MAP.get(index(seg.wrapping_add(1))) {
        e.store(0, Ordering::Relaxed);
    }
    #[cfg(miri)]
    let _ = seg;
}
