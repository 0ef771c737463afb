//! Tunables, each with the reason for its value. `const` asserts tie them together so that a
//! change to one that breaks another fails to compile.

/// The smallest OS page mallard runs on. The kernel's own page, the unit of decommit, guard
/// pages and RSS, is read at start-up (`os::page_size`, or the page source's `page_size`):
/// 4 KiB on x86-64, and 4, 16 or 64 KiB on aarch64 kernels, where a madvise or mprotect on a
/// 4 KiB boundary inside a bigger page fails (or, for a length, is rounded up over live data).
pub const MIN_PAGE_SIZE: usize = 4096;

/// The largest OS page mallard runs on: a slice (every page and every decommit of whole
/// pages starts on a slice boundary).
pub const MAX_PAGE_SIZE: usize = SLICE_SIZE;

/// Segments are 4 MiB and aligned to 4 MiB, so a block's segment header is found by masking
/// its address. Big enough that mmap is rare, small enough that a thread's first segment does
/// not reserve much address space.
pub(crate) const SEGMENT_SHIFT: u32 = 22;
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub(crate) const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;

/// A segment is cut into 64 KiB slices: the page map has one entry per slice, and slice 0
/// holds the segment header, so every page starts 64 KiB-aligned.
pub(crate) const SLICE_SHIFT: u32 = 16;
pub(crate) const SLICE_SIZE: usize = 1 << SLICE_SHIFT;
pub(crate) const SLICES_PER_SEGMENT: usize = SEGMENT_SIZE / SLICE_SIZE;

/// Small pages are one slice; medium pages are eight. A large page is the whole segment
/// (minus its header). Each kind serves blocks up to an eighth of its page, so a page holds at
/// least 7 blocks and the tail waste of a page stays under one block.
pub(crate) const SMALL_PAGE_SIZE: usize = SLICE_SIZE;
pub(crate) const MEDIUM_PAGE_SIZE: usize = 8 * SLICE_SIZE;
pub const SMALL_MAX: usize = SMALL_PAGE_SIZE / 8; // 8 KiB
pub(crate) const MEDIUM_MAX: usize = MEDIUM_PAGE_SIZE / 8; // 64 KiB
pub const LARGE_MAX: usize = SEGMENT_SIZE / 8; // 512 KiB: the largest page class

/// Plain `malloc` sizes up to this are served by page classes; above, by the chunk heap (or
/// huge blocks). The large classes (up to `LARGE_MAX`) serve only aligned requests: a large
/// page is a whole segment per class and thread, so a program with blocks of many sizes
/// from 64 KiB up kept a partly touched 4 MiB page for each, where the chunk heap puts them
/// all in one region and coalesces what they free. Measured (peak RSS, large pages → chunk
/// heap): mstress 22.5 → 15.1 MiB, malloc-large 131 → 111, python 108 → 99.5; time the same
/// or better.
pub const CLASS_MAX: usize = MEDIUM_MAX;

/// A block that `realloc` must move to grow beyond this gets a huge mapping of its own, which
/// grows in place (and then by `mremap`) without copying again; it keeps the mapping while it
/// shrinks, down to the page classes. Measured on vec-grow (8 buffers doubling from 16 B to
/// 4 MiB and back), 5 interleaved rounds: 512 KiB 147.5 ms; 256 KiB 131.6–134.1 ms
/// (2026-11-30, Intel). On 2026-12-01 (AMD, 7 rounds): 256 KiB 166 ms, the same with huge
/// blocks kept while they shrink 150 ms, and this (`CLASS_MAX`) with them kept 128 ms, with
/// 35.5 MiB peak RSS against 43.0 and copying 64 MiB in all where 435 MiB were copied
/// (jemalloc 120 ms); json, python and collections level within the noise (json and python
/// peak RSS +2 % and +3.5 %). The price is address space: each such buffer reserves a
/// segment-aligned mapping (4 MiB and up) where at least 64 KiB is used, so at most 64 × its
/// size; when mappings run out (`vm.max_map_count`) the chunk heap serves it instead.
pub(crate) const GROW_HUGE_MIN: usize = CLASS_MAX;

/// Sizes up to this are looked up in the heap's direct table (one entry per 8 bytes), so the
/// common small malloc needs no size-class computation.
pub const DIRECT_MAX: usize = 1024;
pub(crate) const DIRECT_SLOTS: usize = DIRECT_MAX / 8 + 1;

/// Every block of 16 bytes or more is aligned to 16, like glibc's malloc.
pub const MIN_ALIGN: usize = 16;

/// A fresh page's free list is built at most this many bytes at a time, so memory the program
/// never uses is never touched (and never counted in RSS).
pub(crate) const EXTEND_BYTES: usize = MIN_PAGE_SIZE;

/// Empty segments kept for reuse (process-wide) instead of being unmapped at once: the cost
/// of a program that frees many blocks and allocates again right after is then a list pop,
/// not munmap, mmap and a page fault per 4 KiB. Cached segments stay committed until the
/// purge delay passes, so the cache holds at most half the peak memory in use, in segments
/// (`Backend::segment_cache_limit`), and never more than this. Measured: with 8 the json
/// workload (rounds that build and drop a 56 MiB tree) unmapped and faulted in 13 segments
/// a round, 60 % more page faults than mimalloc; with 64 for everyone, vec-grow kept 64
/// freed segments (256 MiB) committed.
pub(crate) const SEGMENT_CACHE_MAX: usize = 64;

/// When a cached segment's purge is due, at most this many cached segments stay mapped
/// (decommitted, so costing address space only); the others are unmapped.
pub const SEGMENT_CACHE_KEEP: usize = 8;

/// Freed huge mappings kept for reuse (process-wide), by count and by bytes: a program that
/// frees and allocates multi-MiB blocks in turn reuses pages that are already faulted in,
/// instead of an munmap, an mmap and a page fault per 4 KiB each time. (What is cached and
/// not reused is purged after the delay, so the bytes bound address space more than RSS.)
/// Measured 2026-12-06 on a ring of 16 blocks of 64 KiB-8 MiB replaced at random (one byte
/// written per 4 KiB; an 8 MiB block has a 12 MiB mapping): with 64 MiB the number of freed
/// huge mappings swung past the cap, 190 of them were unmapped and mapped again, 417 k page
/// faults, 0.99 s (mimalloc 2.0 0.16 s, glibc 3.6 s); with 128 MiB 31 k faults and 0.15 s,
/// peak RSS 115 -> 117 MiB. malloc-large (20 blocks of 5-25 MiB) 1.83 -> 1.9 s.
pub(crate) const HUGE_CACHE_SLOTS: usize = 16;
pub(crate) const HUGE_CACHE_BYTES: usize = 128 << 20;

/// Free memory stays committed this long before it is decommitted (purged): long enough
/// that a program that frees and allocates in turn reuses it without page faults, short
/// enough that memory a program stopped using goes back to the OS at once on a human scale.
/// Settable at run time (`mallard::set_purge_delay_ms`). Measured on the suite (2026-12-01,
/// 7 interleaved rounds, against 500 ms): peak RSS json 157 → 136.5 MiB (it drops and
/// rebuilds a 56 MiB tree every ~150 ms), collections 33.2 → 29.4, python 102.5 → 97.7; time
/// json +2 %, collections +4 %, python +2 % (the faults of memory purged between rounds),
/// malloc-large, larson, threadtest, prod-cons and mstress level. 200 ms kept json's peak
/// (155 MiB); 50 ms took json to 119 MiB for +2 % more time. mimalloc 2.0 waits 100 ms.
pub const PURGE_DELAY_MS: u64 = 100;

/// A free chunk run at least this big makes its chunk segment due for purging (smaller runs
/// are left alone: their few pages are likely reused soon).
pub(crate) const CHUNK_PURGE_MIN: usize = 256 << 10;

/// A heap scans its full pages for remote frees at least once per this many fresh pages it
/// takes, as a backstop to the remote-free hints.
pub(crate) const FULL_SCAN_PERIOD: u32 = 32;

/// A thread pushes its remote frees to one page in batches of up to this many blocks (see
/// `Heap::batch_remote`); at most this many less one wait per thread between its slow paths.
pub(crate) const REMOTE_BATCH_MAX: u32 = 64;

/// Heap metadata is carved from chunks of this size taken from the page source.
pub(crate) const META_CHUNK_SIZE: usize = SLICE_SIZE;

const _: () = assert!(SEGMENT_SIZE % SLICE_SIZE == 0 && SLICES_PER_SEGMENT == 64);
const _: () = assert!(SLICE_SIZE % MIN_PAGE_SIZE == 0 && MAX_PAGE_SIZE.is_power_of_two());
const _: () = assert!(MEDIUM_PAGE_SIZE <= SEGMENT_SIZE && SEGMENT_SIZE % MEDIUM_PAGE_SIZE == 0);
const _: () = assert!(DIRECT_MAX <= SMALL_MAX && DIRECT_MAX % 8 == 0);
const _: () = assert!(LARGE_MAX * 7 <= SEGMENT_SIZE - SLICE_SIZE);
