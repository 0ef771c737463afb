//! The size-class table, computed at compile time.
//!
//! Classes: every multiple of 16 up to 256, then eight classes per doubling (256 + 32·k,
//! 512 + 64·k, …) up to `LARGE_MAX`. Eight steps per doubling bound the rounding waste above
//! 128 bytes by 1/8 of the request; every class is a multiple of 16, so every block is 16-byte
//! aligned (what C's `malloc` promises) and has room for the two words of a free block (its
//! link and the double-free mark, see `block::Block`); and every power of two is a class, which
//! the aligned allocation path relies on. `const` asserts below hold the table to all of it.

use crate::config::{LARGE_MAX, MEDIUM_MAX, MIN_ALIGN, SMALL_MAX};

/// Which kind of page (and segment) serves a class.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum PageKind {
    Small = 0,
    Medium = 1,
    Large = 2,
}

const fn count_classes() -> usize {
    // 16..=256 step 16 (16 classes), then 8 per doubling from 256 to LARGE_MAX.
    let doublings = LARGE_MAX.trailing_zeros() as usize - 8;
    16 + 8 * doublings
}

/// Number of size classes.
pub(crate) const CLASS_COUNT: usize = count_classes();

const fn build_table() -> [usize; CLASS_COUNT] {
    let mut t = [0usize; CLASS_COUNT];
    let mut i = 0;
    while i < 16 {
        t[i] = 16 * (i + 1);
        i += 1;
    }
    let mut base = 256;
    while i < CLASS_COUNT {
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            t[i] = base + k * step;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    t
}

/// Block size of each class, ascending.
pub static CLASS_SIZE: [usize; CLASS_COUNT] = build_table();
const TABLE: [usize; CLASS_COUNT] = build_table();

/// The class serving `size` bytes (`size <= LARGE_MAX`).
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    if size <= 16 {
        0
    } else if size <= 256 {
        ((size + 15) >> 4) - 1
    } else {
        let w = size - 1;
        let b = (usize::BITS - 1 - w.leading_zeros()) as usize; // 2^b <= w < 2^(b+1), b >= 8
        let sub = (w >> (b - 3)) & 7;
        16 + (b - 8) * 8 + sub
    }
}

/// Whether `class_of(size) == class`, by the class table's bounds: cheaper than computing
/// the class of `size` (a sized free checks this).
#[inline(always)]
pub(crate) fn in_class(size: usize, class: usize) -> bool {
    let upper = CLASS_SIZE.get(class).is_some_and(|&top| size <= top);
    upper && (class == 0 || CLASS_SIZE.get(class - 1).is_some_and(|&below| size > below))
}

/// The page kind serving class `class`.
#[inline]
pub(crate) const fn kind_of(class: usize) -> PageKind {
    let size = TABLE[class];
    if size <= SMALL_MAX {
        PageKind::Small
    } else if size <= MEDIUM_MAX {
        PageKind::Medium
    } else {
        PageKind::Large
    }
}

/// The smallest class that holds `size` bytes and whose blocks are all `align`-aligned, for
/// `align` up to a slice (pages start slice-aligned, so a block size that is a multiple of
/// `align` gives aligned blocks). `None` if no page class fits: the block is huge.
pub(crate) const fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    // A size near usize::MAX must not wrap to a small one.
    let rounded = match size.checked_add(align - 1) {
        Some(s) => s & !(align - 1),
        None => return None,
    };
    if rounded > LARGE_MAX {
        return None;
    }
    let mut c = class_of(rounded);
    while c < CLASS_COUNT {
        if TABLE[c] % align == 0 {
            return Some(c);
        }
        c += 1;
    }
    None
}

// The table's promises, checked when the crate compiles.
const _: () = {
    assert!(TABLE[CLASS_COUNT - 1] == LARGE_MAX);
    let mut i = 0;
    while i < CLASS_COUNT {
        let size = TABLE[i];
        // ascending, 16-byte aligned, room for a free block's two words
        assert!(i == 0 || size > TABLE[i - 1]);
        assert!(size % MIN_ALIGN == 0 && size >= 16);
        // the lookup agrees with the table at both edges of every class
        assert!(class_of(size) == i);
        if i > 0 {
            let smallest = TABLE[i - 1] + 1;
            assert!(class_of(smallest) == i);
            // rounding waste above 128 bytes is at most 12.5 % of the request
            if smallest > 128 {
                assert!((size - smallest) * 8 <= smallest);
            }
        }
        // every power of two is a class
        if size.is_power_of_two() {
            assert!(class_for_aligned(size, size).is_some());
        }
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "seven million checks")]
    fn in_class_agrees_with_class_of() {
        for size in 0..=crate::config::CLASS_MAX + 64 {
            for class in 0..CLASS_COUNT + 1 {
                let expected = size <= LARGE_MAX && class_of(size) == class;
                assert_eq!(in_class(size, class), expected, "size {size}, class {class}");
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "half a million sizes")]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        let mut prev = 0;
        for (c, &size) in CLASS_SIZE.iter().enumerate() {
            for s in (prev + 1)..=size {
                assert_eq!(class_of(s), c, "size {s}");
            }
            prev = size;
        }
    }

    #[test]
    fn sizes_that_would_wrap_when_rounded_have_no_class() {
        for shift in 0..=16 {
            let align = 1usize << shift;
            for size in [usize::MAX, usize::MAX - align / 2, usize::MAX / 2 + 1] {
                assert_eq!(class_for_aligned(size, align), None, "size {size:#x} align {align}");
            }
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for shift in 3..=16 {
            let align = 1usize << shift;
            for size in [1, 7, 100, 1000, 5000, 70000, 300000] {
                if let Some(c) = class_for_aligned(size, align) {
                    assert!(CLASS_SIZE[c] >= size && CLASS_SIZE[c] % align == 0);
                }
            }
        }
    }
}
