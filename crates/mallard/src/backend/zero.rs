//! Zero-size blocks (secure build, `mitigations::ZERO_BLOCKS`): `malloc(0)` returns a unique
//! address in a segment whose memory after the header slice is inaccessible, so that a
//! program that reads or writes through it (it may use none of it) faults at once instead of
//! touching a neighbour's bytes.
//!
//! The backend maps one such segment on first use (`Backend::zero_alloc`); its header says
//! `SegmentKind::Zero`, so `free` and `malloc_usable_size` find it as they find any block.
//! Which of its `ZERO_SLOTS` addresses are handed out is a bitmap in the backend
//! (`ZeroSlots`), set and cleared atomically, so a double free or a free of an address never
//! handed out is caught. When every slot is taken, `malloc(0)` falls back to a 16-byte block.

use super::Backend;
use crate::config::*;
use crate::segment::{Segment, SegmentKind};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// How many zero-size blocks can be live at once (one per 16 bytes after the header slice).
pub(crate) const ZERO_SLOTS: usize = 1 << 16;
const WORDS: usize = ZERO_SLOTS / 64;

/// The zero-size segment of a backend and which of its slots are handed out.
pub(crate) struct ZeroSlots {
    segment: AtomicPtr<Segment>,
    live: [AtomicU64; WORDS],
    /// The word the next search starts at.
    cursor: AtomicUsize,
}

impl ZeroSlots {
    pub(crate) const fn new() -> Self {
        ZeroSlots {
            segment: AtomicPtr::new(ptr::null_mut()),
            live: [const { AtomicU64::new(0) }; WORDS],
            cursor: AtomicUsize::new(0),
        }
    }
}

impl Default for ZeroSlots {
    fn default() -> Self {
        Self::new()
    }
}

/// The slot index of `p` in the zero segment `seg`, if `p` is a slot's address.
fn slot_of(seg: &Segment, p: *const u8) -> Option<usize> {
    let off = p.addr().wrapping_sub(seg.addr().addr() + SLICE_SIZE);
    (off % MIN_ALIGN == 0 && off / MIN_ALIGN < ZERO_SLOTS).then_some(off / MIN_ALIGN)
}

impl Backend {
    /// A fresh zero-size block, or `None` if none can be had (the caller falls back to a
    /// plain block).
    pub(crate) fn zero_alloc(&self) -> Option<NonNull<u8>> {
        let seg = self.zero_segment()?;
        let z = &self.zero;
        let start = z.cursor.load(Ordering::Relaxed);
        for k in 0..WORDS {
            let w = (start + k) % WORDS;
            let mut v = z.live[w].load(Ordering::Relaxed);
            while v != u64::MAX {
                let bit = (!v).trailing_zeros() as usize;
                v = z.live[w].fetch_or(1 << bit, Ordering::Relaxed);
                if v & (1 << bit) == 0 {
                    z.cursor.store(w, Ordering::Relaxed);
                    // SAFETY: the slot lies inside the segment, after its header slice.
                    return NonNull::new(unsafe { seg.addr().add(SLICE_SIZE + (w * 64 + bit) * MIN_ALIGN) });
                }
            }
        }
        None
    }

    /// Frees zero-size block `p` of zero segment `seg`; reports one that is not handed out.
    pub(crate) fn zero_free(&self, seg: &Segment, p: *mut u8) {
        let Some(i) = slot_of(seg, p) else {
            crate::misuse::report("free of a pointer that is not a block", p);
        };
        let bit = 1u64 << (i % 64);
        if self.zero.live[i / 64].fetch_and(!bit, Ordering::Relaxed) & bit == 0 {
            // (A zero-size block has no bytes: a pointer past one is the next one's address.)
            crate::misuse::report("double free (or free of a pointer that is not a block)", p);
        }
    }

    /// Whether `p` is a zero-size block of zero segment `seg` that is handed out.
    pub(crate) fn zero_live(&self, seg: &Segment, p: *const u8) -> bool {
        slot_of(seg, p).is_some_and(|i| self.zero.live[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }

    /// The zero segment, mapped on first use: a header and nothing accessible after it.
    fn zero_segment(&self) -> Option<&Segment> {
        let z = &self.zero;
        let s = z.segment.load(Ordering::Acquire);
        if !s.is_null() {
            // SAFETY: once set, the zero segment is never unmapped.
            return Some(unsafe { &*s });
        }
        let base = self.source().reserve(SEGMENT_SIZE, SEGMENT_SIZE)?;
        // SAFETY: fresh zero-filled memory is a valid (empty) segment header.
        let seg = unsafe { &*(base.as_ptr() as *const Segment) };
        seg.init(SegmentKind::Zero, self.id(), &self.shared, base.as_ptr(), SEGMENT_SIZE, true);
        // SAFETY: everything after the header slice is ours and holds nothing.
        unsafe { self.source().guard(NonNull::new_unchecked(seg.addr().add(SLICE_SIZE)), SEGMENT_SIZE - SLICE_SIZE) };
        match z.segment.compare_exchange(ptr::null_mut(), base.as_ptr().cast(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                crate::segment_map::insert(seg.addr());
                Some(seg)
            }
            Err(won) => {
                // Another thread mapped one first: use it, give this one back.
                // SAFETY: the mapping is ours and was never published.
                unsafe { self.source().release(base, SEGMENT_SIZE) };
                // SAFETY: as above.
                Some(unsafe { &*won })
            }
        }
    }
}
