//! The workloads. Each one is generic over the allocator and calls it directly with raw
//! pointers, so its inner loop is monomorphized per allocator (no `dyn`). Each writes to the
//! memory it gets (one byte per cache line, or per OS page for large blocks) and checks a
//! pattern before freeing, so page faults and cache misses count and a broken allocator fails
//! loudly instead of looking fast. The harness's own bookkeeping (slot rings, channels, threads)
//! uses the global allocator, which is never the one under test.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use std::hint::black_box;

/// xorshift64*: tiny, fast, and the same sequence for every allocator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` for `n < 2^32` (multiply-shift, no division).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A size in `min..=max`, skewed towards `min` the way real programs are: pick a
    /// power-of-two ceiling uniformly in log space, then a size uniformly below it.
    pub fn skewed(&mut self, min: usize, max: usize) -> usize {
        let bands = (max / min).ilog2() as usize;
        let ceiling = ((min * 2) << self.below(bands)).min(max);
        min + self.below(ceiling - min + 1)
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("benchmark sizes are small")
}

/// The byte a block of `size` is filled with, so a block handed out twice shows up as a
/// mismatch when one owner checks it.
fn pattern(size: usize) -> u8 {
    (size as u8) ^ 0x5A
}

/// # Safety
/// `a` must be a working allocator; the caller owns the result and frees it with `layout`.
#[inline(always)]
unsafe fn alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: the layouts used here all have non-zero size.
    let p = unsafe { a.alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    black_box(p)
}

/// Writes `v` at every `stride`-th byte of `p[..size]` and at its last byte.
///
/// # Safety
/// `p` must be valid for writes of `size > 0` bytes.
#[inline(always)]
unsafe fn touch(p: *mut u8, size: usize, stride: usize, v: u8) {
    let mut i = 0;
    while i < size {
        // SAFETY: i < size.
        unsafe { p.add(i).write(v) };
        i += stride;
    }
    // SAFETY: size > 0.
    unsafe { p.add(size - 1).write(v) };
}

/// Reads back the first and last byte that [`touch`] wrote.
///
/// # Safety
/// `p` must be valid for reads of `size > 0` bytes.
#[inline(always)]
unsafe fn check(p: *const u8, size: usize, v: u8) {
    // SAFETY: size > 0, so both offsets are inside the block.
    let (first, last) = unsafe { (p.read(), p.add(size - 1).read()) };
    assert!(first == v && last == v, "block {p:?} of {size} B corrupted: {first:#x}/{last:#x}, want {v:#x}");
}

/// Checks and frees the block a slot holds, if any.
fn free_slot<A: GlobalAlloc>(a: &A, slot: &mut (*mut u8, usize)) {
    if !slot.0.is_null() {
        // SAFETY: the slot holds a block we allocated with this size and touched.
        unsafe {
            check(slot.0, slot.1, pattern(slot.1));
            a.dealloc(slot.0, layout(slot.1));
        }
        slot.0 = null_mut();
    }
}

/// Replaces a random slot of a ring of `SLOTS` live blocks, `steps` times; 8..=1024 bytes,
/// one in eight from `alloc_zeroed`.
pub fn churn<A: GlobalAlloc>(a: &A, steps: usize, seed: u64) {
    const SLOTS: usize = 1000;
    let mut rng = Rng::new(seed);
    let mut live = vec![(null_mut::<u8>(), 0usize); SLOTS];
    for _ in 0..steps {
        let slot = &mut live[rng.below(SLOTS)];
        free_slot(a, slot);
        let size = rng.skewed(8, 1024);
        // One in eight is calloc-style, so the zeroing path is measured and checked too.
        let zeroed = rng.below(8) == 0;
        // SAFETY: fresh block of `size` bytes, owned by the slot until freed.
        unsafe {
            let p = if zeroed { alloc_zeroed(a, layout(size)) } else { alloc(a, layout(size)) };
            touch(p, size, 64, pattern(size));
            *slot = (p, size);
        }
    }
    free_all(a, &live);
}

/// Like [`alloc`], and checks the block really is zeroed.
///
/// # Safety
/// As for [`alloc`].
#[inline(always)]
unsafe fn alloc_zeroed<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: the layouts used here all have non-zero size.
    let p = unsafe { a.alloc_zeroed(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: the block has layout.size() > 0 bytes.
    unsafe { check(p, layout.size(), 0) };
    black_box(p)
}

fn free_all<A: GlobalAlloc>(a: &A, live: &[(*mut u8, usize)]) {
    for &(p, size) in live {
        if !p.is_null() {
            // SAFETY: every non-null entry is a live block of that size from `a`.
            unsafe { a.dealloc(p, layout(size)) };
        }
    }
}

/// [`churn`] on `threads` threads at once, each with its own blocks.
pub fn mt_churn<A: GlobalAlloc + Sync>(a: &A, threads: usize, steps_per_thread: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || churn(a, steps_per_thread, 1 + t as u64));
        }
    });
}

const BATCH: usize = 64;

/// Pointers in flight from producer to consumer.
struct Batch([*mut u8; BATCH]);

// SAFETY: the blocks are handed over whole: the producer never touches a block after sending it.
unsafe impl Send for Batch {}

/// One thread allocates `blocks` blocks of 16..=256 bytes and sends them in batches to a second
/// thread, which checks and frees them: every free is a remote free. The channel is bounded so
/// the live set stays small (at most ~`BOUND * BATCH` blocks in flight).
pub fn prod_cons<A: GlobalAlloc + Sync>(a: &A, blocks: usize) {
    prod_cons_sized(a, blocks, (16, 256), 64, BATCH);
}

/// `prod_cons` with blocks of 512 KiB..=2 MiB (the chunk heap's range), sent one at a time and
/// written every 4 KiB: how large blocks freed by another thread behave.
pub fn prod_cons_large<A: GlobalAlloc + Sync>(a: &A, blocks: usize) {
    prod_cons_sized(a, blocks, (512 << 10, 2 << 20), 4096, 1);
}

fn prod_cons_sized<A: GlobalAlloc + Sync>(
    a: &A,
    blocks: usize,
    (min, max): (usize, usize),
    stride: usize,
    per_batch: usize,
) {
    const BOUND: usize = 16;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(BOUND);
    std::thread::scope(|s| {
        s.spawn(move || {
            for batch in rx {
                for &p in batch.0.iter().take_while(|p| !p.is_null()) {
                    // SAFETY: the producer wrote the block's size in its first word and
                    // touched the rest; we are now its only owner.
                    unsafe {
                        let size = p.cast::<usize>().read();
                        check(p.add(size - 1), 1, pattern(size));
                        a.dealloc(p, layout(size));
                    }
                }
            }
        });
        let mut rng = Rng::new(7);
        let mut batch = Batch([null_mut(); BATCH]);
        for i in 0..blocks {
            let size = rng.skewed(min, max);
            // SAFETY: fresh block of at least 16 bytes, 8-aligned, so the size word fits.
            unsafe {
                let p = alloc(a, layout(size));
                touch(p, size, stride, pattern(size));
                p.cast::<usize>().write(size);
                batch.0[i % per_batch] = p;
            }
            if i % per_batch == per_batch - 1 {
                tx.send(batch).expect("consumer alive");
                batch = Batch([null_mut(); BATCH]);
            }
        }
        if !batch.0[0].is_null() {
            tx.send(batch).expect("consumer alive");
        }
        drop(tx); // ends the consumer's loop; the scope then joins it
    });
}

/// `BUFS` buffers grow together by realloc doubling from 16 B to `max` and shrink back by
/// halving, `cycles` times; new halves are written, kept bytes are checked after each move.
pub fn vec_grow<A: GlobalAlloc>(a: &A, cycles: usize, max: usize) {
    const BUFS: usize = 8;
    const MIN: usize = 16;
    let v = |i: usize| 0xA0 + i as u8;
    let mut bufs = [null_mut::<u8>(); BUFS];
    for (i, b) in bufs.iter_mut().enumerate() {
        // SAFETY: fresh block of MIN bytes.
        unsafe {
            *b = alloc(a, layout(MIN));
            touch(*b, MIN, 64, v(i));
        }
    }
    // Each buffer moves size -> new; `keep` bytes must survive, the rest is new and written.
    let resize = |b: &mut *mut u8, i: usize, size: usize, new: usize| {
        // SAFETY: `*b` is a live block of `size` bytes from `a`, and `new` is non-zero.
        unsafe {
            let p = a.realloc(*b, layout(size), new);
            if p.is_null() {
                std::alloc::handle_alloc_error(layout(new));
            }
            check(p, size.min(new), v(i));
            if new > size {
                touch(p.add(size), new - size, 64, v(i));
            }
            *b = black_box(p);
        }
    };
    for _ in 0..cycles {
        let mut size = MIN;
        while size < max {
            for (i, b) in bufs.iter_mut().enumerate() {
                resize(b, i, size, size * 2);
            }
            size *= 2;
        }
        while size > MIN {
            for (i, b) in bufs.iter_mut().enumerate() {
                resize(b, i, size, size / 2);
            }
            size /= 2;
        }
    }
    for b in bufs {
        // SAFETY: each buffer is back to MIN bytes.
        unsafe { a.dealloc(b, layout(MIN)) };
    }
}

/// malloc-large style, as the standard suite's program: a ring of 20 buffers of 5..25 MiB
/// (uniform); each step makes a new buffer, zeroed and so written in full, before the one it
/// replaces is freed.
pub fn large<A: GlobalAlloc>(a: &A, steps: usize) {
    const SLOTS: usize = 20;
    const MIN: usize = 5 << 20;
    const MAX: usize = 25 << 20;
    let mut rng = Rng::new(3);
    let mut live = vec![(null_mut::<u8>(), 0usize); SLOTS];
    for _ in 0..steps {
        let i = rng.below(SLOTS);
        let size = MIN + rng.below(MAX - MIN + 1);
        // SAFETY: fresh block of `size` bytes; zeroing writes every byte, as `make_unique<char[]>`.
        let p = unsafe {
            let p = alloc(a, layout(size));
            p.write_bytes(0, size);
            touch(p, size, 4096, pattern(size));
            p
        };
        free_slot(a, &mut live[i]);
        live[i] = (p, size);
    }
    free_all(a, &live);
}

/// A churn of big blocks: a ring of 16 live blocks of 64 KiB..=8 MiB (a power-of-two band
/// from 64 KiB to 8 MiB picked uniformly, then a size in it: a quarter of them huge, the rest
/// the chunk heap's), a random one replaced each step; one byte written per OS page, so
/// memory mapped or purged anew costs its page faults.
pub fn big_churn<A: GlobalAlloc>(a: &A, steps: usize) {
    const SLOTS: usize = 16;
    let mut rng = Rng::new(9);
    let mut live = vec![(null_mut::<u8>(), 0usize); SLOTS];
    for _ in 0..steps {
        let slot = &mut live[rng.below(SLOTS)];
        let band = (64 << 10) << rng.below(8);
        replace(a, slot, (band + rng.below(band)).min(8 << 20), 4096);
    }
    free_all(a, &live);
}

/// A set of slots that moves between threads whole.
struct Slots(Vec<(*mut u8, usize)>);

// SAFETY: the blocks are handed over with the vector: the thread that gave it up never touches
// them again.
unsafe impl Send for Slots {}

/// Replaces the block in `slot` by a fresh one of `size` bytes, touched with its pattern
/// every `stride` bytes (and at its last byte).
fn replace<A: GlobalAlloc>(a: &A, slot: &mut (*mut u8, usize), size: usize, stride: usize) {
    free_slot(a, slot);
    // SAFETY: fresh block of `size` bytes, owned by the slot until freed.
    unsafe {
        let p = alloc(a, layout(size));
        touch(p, size, stride, pattern(size));
        *slot = (p, size);
    }
}

/// larson-style server, shaped like the standard `larson 5 8 1000 5000 100 4141 2`: each of
/// `threads` chains owns 5000 slots of uniform 8..1000 B blocks (the main thread fills them
/// first) and replaces random ones, writing two bytes of each, `steps` times per thread. Then
/// the thread starts its successor, hands it the slots and exits while the successor already
/// runs, `generations` times: every thread begins by freeing blocks that threads now gone (or
/// going) allocated, and the allocator sees a stream of threads that come and go.
pub fn larson<A: GlobalAlloc + Sync>(a: &'static A, threads: usize, generations: usize, steps: usize) {
    const SLOTS: usize = 5000;
    const MIN: usize = 8;
    const MAX: usize = 1000;
    /// One thread of a chain: replaces blocks, then passes the slots on or back to `done`.
    fn link<A: GlobalAlloc + Sync>(
        a: &'static A,
        mut set: Slots,
        seed: u64,
        left: usize,
        steps: usize,
        done: std::sync::mpsc::Sender<Slots>,
    ) {
        let mut rng = Rng::new(seed);
        for _ in 0..steps {
            let size = MIN + rng.below(MAX - MIN);
            // The first and last byte only, as larson writes two.
            replace(a, &mut set.0[rng.below(SLOTS)], size, size);
        }
        if left == 0 {
            done.send(set).expect("larson: main waits for every chain");
        } else {
            let seed = rng.next_u64();
            // The successor is detached: it reports through `done`, not a join.
            std::thread::spawn(move || link(a, set, seed, left - 1, steps, done));
        }
    }
    let (done, finished) = std::sync::mpsc::channel();
    let mut rng = Rng::new(4141);
    for t in 0..threads {
        let mut set = Slots(vec![(null_mut(), 0); SLOTS]);
        for slot in &mut set.0 {
            replace(a, slot, MIN + rng.below(MAX - MIN), 64);
        }
        let done = done.clone();
        std::thread::spawn(move || link(a, set, t as u64 + 11, generations - 1, steps, done));
    }
    drop(done);
    for mut set in finished.iter().take(threads) {
        for slot in &mut set.0 {
            free_slot(a, slot);
        }
    }
}

/// alloc-test style: one thread replaces a random slot of 2^18 live blocks, `steps` times,
/// with sizes up to 64 KiB drawn by power-of-two class with halving odds (half are 5..8 B, a
/// quarter 9..16 B, ..., one in 2^13 above 32 KiB): most calls are tiny, but the blocks of
/// 1–64 KiB hold half of the bytes.
pub fn random_sizes<A: GlobalAlloc>(a: &A, steps: usize) {
    const SLOTS: usize = 1 << 18;
    let mut rng = Rng::new(17);
    let mut live = vec![(null_mut::<u8>(), 0usize); SLOTS];
    for _ in 0..steps {
        let r = rng.next_u64();
        // Class k (sizes 2^(k+2)+1 ..= 2^(k+3)) with odds 2^-(k+1), k = 0..=13.
        let k = ((r as u32) | (1 << 13)).trailing_zeros() as usize;
        let size = (1 << (k + 2)) + 1 + ((r >> 32) as usize & ((1 << (k + 2)) - 1));
        replace(a, &mut live[rng.below(SLOTS)], size, 64);
    }
    free_all(a, &live);
}

/// Hoard's threadtest: `threads` threads each allocate `per_round` blocks of 64 B, write
/// them, and free them all, `rounds` times.
pub fn threadtest<A: GlobalAlloc + Sync>(a: &A, threads: usize, rounds: usize, per_round: usize) {
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || {
                let mut blocks = vec![null_mut::<u8>(); per_round];
                for _ in 0..rounds {
                    for b in blocks.iter_mut() {
                        // SAFETY: fresh block of 64 bytes.
                        unsafe {
                            *b = alloc(a, layout(64));
                            touch(*b, 64, 64, pattern(64));
                        }
                    }
                    for &b in &blocks {
                        // SAFETY: each is a live 64-byte block from `a`, touched above.
                        unsafe {
                            check(b, 64, pattern(64));
                            a.dealloc(b, layout(64));
                        }
                    }
                }
            });
        }
    });
}

/// Hoard's cache-scratch (passive false sharing): the main thread allocates one 8-byte block
/// per thread, side by side, and gives one to each thread. Each thread frees it, then
/// `objects` times allocates an 8-byte block, writes it `writes` times and frees it. An
/// allocator that hands a thread the memory next to another thread's block makes both cores
/// fight over one cache line.
pub fn cache_scratch<A: GlobalAlloc + Sync>(a: &A, threads: usize, objects: usize, writes: usize) {
    let first: Vec<Batch> = (0..threads)
        .map(|_| {
            let mut b = Batch([null_mut(); BATCH]);
            // SAFETY: fresh block of 8 bytes.
            b.0[0] = unsafe { alloc(a, layout(8)) };
            b
        })
        .collect();
    std::thread::scope(|s| {
        for given in first {
            s.spawn(move || {
                let given = given; // the whole Batch moves in, not just its (non-Send) field
                                   // SAFETY: the block was allocated with 8 bytes and handed to this thread.
                unsafe { a.dealloc(given.0[0], layout(8)) };
                for _ in 0..objects {
                    // SAFETY: fresh block of 8 bytes, freed below.
                    unsafe {
                        let p = alloc(a, layout(8));
                        for j in 0..writes {
                            core::ptr::write_volatile(p.add(j % 8), j as u8);
                        }
                        a.dealloc(p, layout(8));
                    }
                }
            });
        }
    });
}

/// mstress/rptest style: `threads` threads with random lifetimes and mixed sizes (16 B–16 KiB
/// skewed small, one in 200 up to 256 KiB). Each step allocates into, frees, or trades a
/// block through a shared exchange of 1024 slots, so blocks outlive their step and are freed
/// by threads that did not allocate them.
pub fn mstress<A: GlobalAlloc + Sync>(a: &A, threads: usize, steps: usize) {
    use std::sync::atomic::{AtomicPtr, Ordering};
    const LOCAL: usize = 500;
    const EXCHANGE: usize = 1024;
    let exchange: Vec<AtomicPtr<u8>> = (0..EXCHANGE).map(|_| AtomicPtr::new(null_mut())).collect();
    let exchange = &exchange;
    // A block's size is in its first word (every size here is >= 16), its pattern in its last
    // byte, so any thread can check and free it.
    let free_sized = |p: *mut u8| {
        if !p.is_null() {
            // SAFETY: p is a live block this workload made; its first word is its size.
            unsafe {
                let size = p.cast::<usize>().read();
                check(p.add(size - 1), 1, pattern(size));
                a.dealloc(p, layout(size));
            }
        }
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut rng = Rng::new(t as u64 + 101);
                let mut local = vec![null_mut::<u8>(); LOCAL];
                for _ in 0..steps {
                    let i = rng.below(LOCAL);
                    match rng.below(10) {
                        0..=4 => {
                            free_sized(local[i]);
                            let size = if rng.below(200) == 0 {
                                rng.skewed(16 << 10, 256 << 10)
                            } else {
                                rng.skewed(16, 16 << 10)
                            };
                            // SAFETY: fresh block of at least 16 bytes, 8-aligned.
                            unsafe {
                                let p = alloc(a, layout(size));
                                touch(p, size, 64, pattern(size));
                                p.cast::<usize>().write(size);
                                local[i] = p;
                            }
                        }
                        5..=7 => {
                            free_sized(local[i]);
                            local[i] = null_mut();
                        }
                        _ => local[i] = exchange[rng.below(EXCHANGE)].swap(local[i], Ordering::AcqRel),
                    }
                }
                local.into_iter().for_each(free_sized);
            });
        }
    });
    for slot in exchange {
        free_sized(slot.swap(null_mut(), core::sync::atomic::Ordering::Acquire));
    }
}

/// The fragmentation case: `small_mib` of 16 B–1 KiB blocks (skewed small), 90 % of them
/// freed in a scattered pattern (every tenth kept), then `large_mib` of 2–8 KiB blocks. Peak
/// RSS is the figure that matters: an allocator that can reuse the holes needs little new
/// memory for the larger blocks.
pub fn frag<A: GlobalAlloc>(a: &A, small_mib: usize, large_mib: usize) {
    let mut rng = Rng::new(5);
    let mut blocks = Vec::new();
    let mut total = 0;
    while total < small_mib << 20 {
        let mut slot = (null_mut(), 0);
        let size = rng.skewed(16, 1024);
        replace(a, &mut slot, size, 64);
        blocks.push(slot);
        total += size;
    }
    for (i, slot) in blocks.iter_mut().enumerate() {
        if i % 10 != 0 {
            free_slot(a, slot);
        }
    }
    total = 0;
    while total < large_mib << 20 {
        let mut slot = (null_mut(), 0);
        let size = rng.skewed(2 << 10, 8 << 10);
        replace(a, &mut slot, size, 64);
        blocks.push(slot);
        total += size;
    }
    for slot in &mut blocks {
        free_slot(a, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_sizes_stay_in_range_and_favour_small() {
        let mut rng = Rng::new(1);
        let sizes: Vec<usize> = (0..100_000).map(|_| rng.skewed(8, 1024)).collect();
        assert!(sizes.iter().all(|&s| (8..=1024).contains(&s)));
        assert!(sizes.contains(&8) && sizes.contains(&1024));
        let small = sizes.iter().filter(|&&s| s <= 128).count();
        assert!(small > sizes.len() / 2, "only {small} of {} are <= 128 B", sizes.len());
    }
}
