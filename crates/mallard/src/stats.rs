//! Statistics: counters declared once (the `counters!` list below); each heap keeps its own
//! set, written only by its thread, and `stats()` sums them with the backend's shared set and
//! with what the segment registry shows (live blocks per class, segments, huge blocks).
//! `print_stats` formats into a stack buffer: it never allocates.

use crate::size_class::{CLASS_COUNT, CLASS_SIZE};
use core::cell::Cell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI64, Ordering::Relaxed};

macro_rules! counters {
    ($( $name:ident : $desc:literal, )*) => {
        /// Event counters. In a heap they are written only by its owner (plain load and
        /// store, no locked instruction); in the backend by any thread (`fetch_add`).
        pub(crate) struct Counters { $( pub(crate) $name: AtomicI64, )* }

        impl Counters {
            pub(crate) const fn new() -> Self { Counters { $( $name: AtomicI64::new(0), )* } }
            fn sum_into(&self, s: &mut Stats) { $( s.$name += self.$name.load(Relaxed); )* }
        }

        /// A summed snapshot of the allocator's state. Taken while other threads run, it is
        /// consistent per counter, not across counters.
        #[derive(Clone, Copy, Debug)]
        pub struct Stats {
            $( #[doc = $desc] pub $name: i64, )*
            /// Blocks live per size class (in the secure build, with the freed blocks that
            /// wait in a thread's quarantine).
            pub class_blocks: [i64; CLASS_COUNT],
            /// Pages with blocks in use (or freed remotely and not yet collected) per class.
            pub class_pages: [i64; CLASS_COUNT],
            /// Pages started per class since the process began (how much each class was used).
            pub class_pages_started: [i64; CLASS_COUNT],
            /// Bytes in use (blocks carved from pages, live chunks, huge blocks) now and at the
            /// peak: an upper bound of live bytes that costs nothing on the fast paths.
            pub in_use_bytes: i64,
            pub peak_in_use_bytes: i64,
            /// Segments currently mapped (page segments, cached ones and huge ones).
            pub segments_current: i64,
            /// Empty segments kept in the cache.
            pub segments_cached: i64,
            /// Chunk-heap blocks live, and their usable bytes.
            pub large_blocks: i64,
            pub large_bytes: i64,
            /// Huge blocks live, and their requested bytes.
            pub huge_blocks: i64,
            pub huge_bytes: i64,
            /// Bytes mapped from the OS for segments right now.
            pub mapped_bytes: i64,
            /// The process's resident set (from /proc/self/statm; 0 where unavailable).
            pub resident_bytes: i64,
            /// The allocator's own mappings (segments, cached ones, huge blocks) resident in
            /// memory: what the heap costs, without the program's other memory.
            pub heap_resident_bytes: i64,
            /// The calling thread's chunk heap: free chunks, their bytes, the largest.
            pub free_chunks: i64,
            pub free_chunk_bytes: i64,
            pub largest_free_chunk: i64,
        }

        impl Stats {
            const ZERO: Stats = Stats {
                $( $name: 0, )*
                class_blocks: [0; CLASS_COUNT],
                class_pages: [0; CLASS_COUNT],
                class_pages_started: [0; CLASS_COUNT],
                in_use_bytes: 0, peak_in_use_bytes: 0,
                segments_current: 0, segments_cached: 0, large_blocks: 0, large_bytes: 0, huge_blocks: 0, huge_bytes: 0, mapped_bytes: 0,
                resident_bytes: 0, heap_resident_bytes: 0, free_chunks: 0, free_chunk_bytes: 0, largest_free_chunk: 0,
            };
            /// The event counters as (name, description, value).
            pub fn counters(&self) -> [(&'static str, &'static str, i64); [$(stringify!($name)),*].len()] {
                [ $( (stringify!($name), $desc, self.$name), )* ]
            }
        }
    };
}

/// A heap's statistics. The backend sums them over every heap it made (`Backend::stats`)
/// and keeps its pool of heaps by them, so it knows heaps by these alone: they lead the heap
/// (`Heap` is `repr(C)` with them first), so a pointer to them is one to the heap.
#[repr(C)]
pub(crate) struct HeapStats {
    pub(crate) counters: Counters,
    /// Per class: blocks this heap freed remotely minus remote frees it collected. Summed over
    /// all heaps it is the number of blocks freed but still counted in their page's `used`.
    pub(crate) remote_pending: [AtomicI64; CLASS_COUNT],
    /// Pages started per class (owner-written).
    pub(crate) class_pages_started: [AtomicI64; CLASS_COUNT],
    /// Links (under the backend's lock): every heap of the backend; the pool of free heaps.
    pub(crate) all_next: Cell<*mut HeapStats>,
    pub(crate) pool_next: Cell<*mut HeapStats>,
}

impl HeapStats {
    pub(crate) const fn new() -> Self {
        HeapStats {
            counters: Counters::new(),
            remote_pending: [const { AtomicI64::new(0) }; CLASS_COUNT],
            class_pages_started: [const { AtomicI64::new(0) }; CLASS_COUNT],
            all_next: Cell::new(core::ptr::null_mut()),
            pool_next: Cell::new(core::ptr::null_mut()),
        }
    }
}

counters! {
    segments_mapped: "segments taken from the OS",
    segments_released: "segments given back to the OS",
    segments_reused: "segments taken again from the cache",
    segments_abandoned: "segments left by exiting threads",
    segments_reclaimed: "abandoned segments taken over by another thread",
    pages_fresh: "pages started for a size class",
    pages_retired: "empty pages returned to their segment",
    pages_abandoned: "pages in use left by exiting threads",
    pages_reclaimed: "abandoned pages taken over by another thread",
    remote_frees: "blocks freed by a thread other than their owner",
    huge_allocs: "huge blocks mapped",
    huge_fresh: "huge blocks given a fresh mapping from the OS (not a cached one)",
    huge_frees: "huge blocks unmapped",
    huge_remaps: "huge blocks resized by mremap",
    heaps_created: "thread heaps created",
    heaps_reused: "thread heaps reused after their thread exited",
    malloc_slow: "allocations that took the slow path",
    bytes_purged: "bytes of free memory decommitted (given back to the OS)",
    purger_threads: "background purger threads started",
    purger_rounds: "background purger rounds",
    purger_bytes: "bytes the background purger gave back (part of bytes_purged)",
}

impl Counters {
    /// Owner-only increment (no locked instruction).
    #[inline(always)]
    pub(crate) fn bump(c: &AtomicI64, n: i64) {
        c.store(c.load(Relaxed) + n, Relaxed);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::ZERO
    }
}

impl Stats {
    pub(crate) fn add_counters(&mut self, c: &Counters) {
        c.sum_into(self);
    }

    /// Bytes in live blocks of the page classes (block sizes, not requested sizes).
    pub fn small_live_bytes(&self) -> i64 {
        self.class_blocks.iter().zip(CLASS_SIZE.iter()).map(|(&n, &s)| n * s as i64).sum()
    }

    /// Bytes in live blocks: page classes, chunks and huge blocks together.
    pub fn live_bytes(&self) -> i64 {
        self.small_live_bytes() + self.large_bytes + self.huge_bytes
    }

    /// The heap's resident bytes per live byte: 1.0 is no waste; what is above it is
    /// fragmentation, metadata, caches and memory not yet purged. (Not the whole process's
    /// resident set, which holds the program's code, stacks and other mappings too.)
    pub fn fragmentation(&self) -> f64 {
        if self.live_bytes() <= 0 {
            return 0.0;
        }
        self.heap_resident_bytes as f64 / self.live_bytes() as f64
    }

    /// Writes the statistics as a compact table.
    pub fn write_table(&self, w: &mut dyn Write) -> fmt::Result {
        writeln!(w, "mallard statistics")?;
        writeln!(
            w,
            "  live {} bytes ({} in {} chunks, {} in {} huge blocks), {} segments mapped ({} bytes, {} cached)",
            self.live_bytes(),
            self.large_bytes,
            self.large_blocks,
            self.huge_bytes,
            self.huge_blocks,
            self.segments_current,
            self.mapped_bytes,
            self.segments_cached
        )?;
        writeln!(
            w,
            "  resident {} bytes (the process), {} bytes (the heap), fragmentation {:.2} (heap resident / live); this thread's chunk heap: {} free chunks, {} bytes, largest {}",
            self.resident_bytes,
            self.heap_resident_bytes,
            self.fragmentation(),
            self.free_chunks,
            self.free_chunk_bytes,
            self.largest_free_chunk
        )?;
        for (name, _, v) in self.counters() {
            if v != 0 {
                writeln!(w, "  {name:<20} {v:>12}")?;
            }
        }
        writeln!(w, "  {:>8} {:>10} {:>8} {:>12}", "class", "blocks", "pages", "bytes")?;
        for c in 0..CLASS_COUNT {
            if self.class_blocks[c] != 0 || self.class_pages[c] != 0 {
                let size = CLASS_SIZE[c] as i64;
                writeln!(
                    w,
                    "  {:>8} {:>10} {:>8} {:>12}",
                    size,
                    self.class_blocks[c],
                    self.class_pages[c],
                    self.class_blocks[c] * size
                )?;
            }
        }
        Ok(())
    }
}
