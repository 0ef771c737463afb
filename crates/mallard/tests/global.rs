//! `Mallard` as the global allocator of this test binary: threads, thread exit, remote frees,
//! alignment, zeroing, realloc and out-of-memory, checked through contents and statistics.
//! Tests that read the process-wide statistics run one at a time (`SERIAL`).

use mallard::Mallard;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{mpsc, Mutex};

#[global_allocator]
static GLOBAL: Mallard = Mallard;

/// Every test here holds this lock: the statistics and RSS figures some of them check are
/// process-wide, so another test allocating meanwhile (say, blocks of the class a test counts)
/// would change them.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// For a test that compares process-wide figures exactly: runs test `name` alone in a child
/// process of this test binary (one test thread), where no thread of the harness allocates
/// while it runs (here the harness's main thread may be reporting another test meanwhile).
/// Returns true where the caller is to do the test: in the child (and under Miri, which runs
/// no processes and has no preemption).
fn alone(name: &str) -> bool {
    alone_with(name, &[])
}

/// `alone`, with environment variables `env` set in the child (options mallard reads at its
/// first allocation, such as `MALLARD_HARDEN`). Under Miri the test runs in place, without
/// them.
fn alone_with(name: &str, env: &[(&str, &str)]) -> bool {
    if cfg!(miri) || std::env::var_os("MALLARD_TEST_ALONE").is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    // Under an emulator (`MALLARD_TEST_RUNNER`, such as qemu-user running the aarch64 tests in
    // scripts/test-aarch64) the child runs through it too: the host cannot run the binary.
    let runner = std::env::var("MALLARD_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(emulator) => {
            let mut c = std::process::Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let out = cmd
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("MALLARD_TEST_ALONE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{name}, run alone, failed:\n{text}");
    false
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (seed.wrapping_mul(31) + k) as u8).collect()
}

/// Whether `len` bytes at `p` all equal `v` (under Miri, a sample of them: every byte costs).
fn all_bytes(p: *const u8, len: usize, v: u8) -> bool {
    // SAFETY: callers pass a block of at least `len` bytes.
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    let step = if cfg!(miri) { 61 } else { 1 };
    s.iter().step_by(step).all(|&b| b == v) && s.last().is_none_or(|&b| b == v)
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn blocks_passed_between_threads_keep_their_contents() {
    let _g = serial();
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::sync_channel::<(usize, Vec<u8>)>(64)).unzip();
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let next = txs[(t + 1) % THREADS].clone();
        handles.push(std::thread::spawn(move || {
            let mut received = 0;
            for i in 0..rounds {
                let seed = t * 1_000_000 + i;
                let len = (seed * 7919) % 3000;
                next.send((seed, pattern(seed, len))).unwrap();
                // Free (remotely) what the previous thread made.
                while let Ok((s, v)) = rx.try_recv() {
                    assert_eq!(v, pattern(s, v.len()), "block from another thread changed");
                    received += 1;
                }
            }
            drop(next);
            for (s, v) in rx.iter() {
                assert_eq!(v, pattern(s, v.len()));
                received += 1;
            }
            received
        }));
    }
    drop(txs);
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, THREADS * rounds);
}

#[test]
#[cfg_attr(miri, ignore = "10,000 threads")]
fn ten_thousand_threads_do_not_grow_memory() {
    let _g = serial();
    let before = mallard::stats();
    let mut leftovers: Vec<Vec<u64>> = Vec::new();
    for round in 0..10_000usize {
        let h = std::thread::spawn(move || {
            let mut keep = Vec::new();
            for i in 0..50 {
                let v: Vec<u64> = vec![(round + i) as u64; 1 + (round * 13 + i * 7) % 300];
                if i % 10 == 0 {
                    keep.push(v); // outlives the thread; freed later by the main thread
                }
            }
            keep
        });
        leftovers.extend(h.join().unwrap());
        if leftovers.len() > 1000 {
            for (k, v) in leftovers.drain(..).enumerate() {
                assert!(v.iter().all(|&x| x == v[0]), "block {k} kept its contents");
            }
        }
    }
    drop(leftovers);
    let after = mallard::stats();
    let new_segments = after.segments_mapped - before.segments_mapped;
    assert!(new_segments <= 16, "10,000 threads mapped {new_segments} new segments");
    assert!(after.segments_reclaimed - before.segments_reclaimed >= 1000, "abandoned segments are reclaimed");
    assert!(after.heaps_reused - before.heaps_reused >= 9000, "heaps are reused");
}

#[test]
#[cfg_attr(miri, ignore = "long")]
fn producer_consumer_reuses_memory() {
    let _g = serial();
    let before = mallard::stats();
    let (tx, rx) = mpsc::sync_channel::<Vec<Box<[u8]>>>(16);
    let consumer = std::thread::spawn(move || {
        let mut n = 0usize;
        for batch in rx {
            for b in batch {
                assert!(b.iter().all(|&x| x == b.len() as u8));
                n += 1;
            }
        }
        n
    });
    let total = 2_000_000usize;
    for i in 0..total / 64 {
        let batch: Vec<Box<[u8]>> = (0..64)
            .map(|k| {
                let len = 16 + (i * 64 + k) % 240;
                vec![len as u8; len].into_boxed_slice()
            })
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), total);
    let after = mallard::stats();
    // ~300 MB went through; at most a few MiB are live at a time.
    let grew = after.segments_mapped - before.segments_mapped;
    assert!(grew <= 8, "producer/consumer mapped {grew} segments for bounded live memory");
    assert!(after.remote_frees - before.remote_frees >= total as i64);
}

#[test]
fn every_power_of_two_alignment_is_honoured() {
    let _g = serial();
    let mut blocks = Vec::new();
    for shift in 0..=if cfg!(miri) { 16 } else { 26 } {
        let align = 1usize << shift;
        // (Miri's simulated memory is 64 MiB: no huge blocks for every alignment there.)
        for &size in
            if cfg!(miri) { &[1, 8, 24, 100, 4096, 70_000][..] } else { &[1, 8, 24, 100, 4096, 70_000, 700_000] }
        {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: p holds `size` bytes.
            unsafe { p.write_bytes(0xa5, size) };
            blocks.push((p, layout));
        }
    }
    for (p, layout) in blocks {
        assert!(all_bytes(p, layout.size(), 0xa5));
        // SAFETY: allocated above with this layout.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

#[test]
fn alloc_zeroed_returns_zeroes_even_on_reused_memory() {
    let _g = serial();
    for size in [8, 16, 100, 1000, 5000, 100_000, 1 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for _ in 0..3 {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            // SAFETY: p holds `size` bytes; dirty it and free it so it gets reused.
            unsafe {
                p.write_bytes(0xff, size);
                GLOBAL.dealloc(p, layout);
            }
            // SAFETY: non-zero size.
            let z = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(all_bytes(z, size, 0), "size {size}");
            // SAFETY: allocated above.
            unsafe { GLOBAL.dealloc(z, layout) };
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn large_zeroed_allocation_from_fresh_memory_is_not_touched() {
    let _g = serial();
    let size = 1usize << 30;
    let before = resident_bytes();
    let v: Vec<u8> = vec![0; size]; // alloc_zeroed
    let during = resident_bytes();
    assert!(v[size / 2] == 0 && v[size - 1] == 0);
    assert!(during < before + (64 << 20), "1 GiB calloc made {} MiB resident", (during - before) >> 20);
}

#[test]
fn realloc_stays_in_place_within_the_class() {
    let _g = serial();
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero size; realloc to sizes that fit the 112-byte class.
    unsafe {
        let p = GLOBAL.alloc(layout);
        p.write_bytes(7, 100);
        let q = GLOBAL.realloc(p, layout, 112);
        assert_eq!(p, q, "grow within the class stays in place");
        let r = GLOBAL.realloc(q, Layout::from_size_align(112, 8).unwrap(), 97);
        assert_eq!(p, r, "shrink within the class stays in place");
        assert!(std::slice::from_raw_parts(r, 97).iter().all(|&b| b == 7));
        let s = GLOBAL.realloc(r, Layout::from_size_align(97, 8).unwrap(), 5000);
        assert_ne!(s, r, "growing past the class moves");
        assert!(std::slice::from_raw_parts(s, 97).iter().all(|&b| b == 7), "contents kept");
        GLOBAL.dealloc(s, Layout::from_size_align(5000, 8).unwrap());
    }
}

#[test]
#[cfg_attr(miri, ignore = "maps GiBs")]
fn huge_realloc_keeps_contents_while_growing_and_shrinking() {
    let _g = serial();
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(64u64 << 20) / 8 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
}

/// Minor page faults of this process so far.
fn page_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

#[test]
#[cfg_attr(miri, ignore = "counts page faults")]
fn a_buffer_growing_out_of_the_chunk_heap_and_back_reuses_its_memory() {
    let _g = serial();
    const MIB: usize = 1 << 20;
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    // 512 KiB (chunk) -> 2 MiB (chunk, in place) -> 4 MiB (huge: an 8 MiB mapping) -> 1 MiB
    // (the mapping shrinks to one segment) -> 256 KiB (back to the chunk heap; the segment
    // goes to the segment cache). The next round's 8 MiB mapping must come from that
    // segment, not from the OS: 4 MiB of fresh memory is 1024 page faults.
    let round = move || {
        // SAFETY: non-zero sizes; each block is resized and freed with its current layout.
        unsafe {
            let mut p = GLOBAL.alloc(l(512 << 10));
            let mut size = 512 << 10;
            for new in [2 * MIB, 4 * MIB, MIB, 256 << 10] {
                p = GLOBAL.realloc(p, l(size), new);
                assert!(!p.is_null());
                if new > size {
                    p.add(size).write_bytes(1, new - size);
                }
                size = new;
            }
            GLOBAL.dealloc(p, l(size));
        }
    };
    std::thread::spawn(move || {
        for _ in 0..3 {
            round();
        }
        let before = page_faults();
        for _ in 0..10 {
            round();
        }
        let per_round = (page_faults() - before) / 10;
        assert!(per_round < 256, "{per_round} page faults per round: the memory was not reused");
    })
    .join()
    .unwrap();
}

#[test]
fn out_of_memory_returns_null() {
    let _g = serial();
    for size in [isize::MAX as usize - 8191, 1usize << 46] {
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(p.is_null(), "an impossible allocation of {size} bytes returns null");
    }
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(1usize << 50).is_err());
}

#[test]
fn stats_count_live_blocks_per_class() {
    if !alone("stats_count_live_blocks_per_class") {
        return;
    }
    let _g = serial();
    // (The secure build's quarantine holds freed blocks, counted live until they leave it;
    // `collect` empties it.)
    mallard::collect(false);
    let before = mallard::stats();
    let blocks: Vec<Box<[u8; 200]>> = (0..1000).map(|_| Box::new([1u8; 200])).collect();
    let during = mallard::stats();
    let class = mallard::raw::class_of(200);
    assert!(during.class_blocks[class] - before.class_blocks[class] >= 1000);
    drop(blocks);
    mallard::collect(false);
    let after = mallard::stats();
    assert_eq!(after.class_blocks[class], before.class_blocks[class]);
}

#[test]
fn chunk_realloc_grows_in_place_into_a_free_neighbour_and_keeps_contents() {
    let _g = serial();
    const MIB: usize = 1 << 20;
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    // SAFETY: non-zero sizes; every block is freed with its current layout.
    unsafe {
        // A fresh thread has a fresh chunk segment: a and b are neighbours. (Taking over the
        // segments exited threads abandoned first keeps the new thread from adopting one.)
        mallard::collect(true);
        std::thread::spawn(move || {
            let a = GLOBAL.alloc(l(MIB));
            let b = GLOBAL.alloc(l(MIB));
            assert!(!a.is_null() && !b.is_null());
            a.write_bytes(0x5a, MIB);
            GLOBAL.dealloc(b, l(MIB));
            let grown = GLOBAL.realloc(a, l(MIB), 2 * MIB);
            assert_eq!(grown, a, "grew into the freed neighbour without moving");
            assert!(all_bytes(grown, MIB, 0x5a), "contents kept");
            let shrunk = GLOBAL.realloc(grown, l(2 * MIB), 600_000);
            assert_eq!(shrunk, a, "shrinks in place");
            assert!(all_bytes(shrunk, 600_000, 0x5a));
            // Growing past what the segment holds moves the block, keeping its contents.
            let moved = GLOBAL.realloc(shrunk, l(600_000), 6 * MIB);
            assert!(!moved.is_null());
            assert!(all_bytes(moved, 600_000, 0x5a), "contents kept by a move");
            GLOBAL.dealloc(moved, l(6 * MIB));
        })
        .join()
        .unwrap();
    }
}

#[test]
fn stats_show_fragmentation_figures() {
    let _g = serial();
    const MIB: usize = 1 << 20;
    let l = Layout::from_size_align(MIB, 8).unwrap();
    // The new thread's chunk heap must start empty: it would adopt segments exited threads
    // abandoned, which this thread takes over first.
    mallard::collect(true);
    std::thread::spawn(move || {
        // SAFETY: non-zero sizes; freed below.
        unsafe {
            let (a, b, c) = (GLOBAL.alloc(l), GLOBAL.alloc(l), GLOBAL.alloc(l));
            GLOBAL.dealloc(b, l);
            // Written, so resident.
            a.write_bytes(1, MIB);
            c.write_bytes(2, MIB);
            let s = mallard::stats();
            assert_eq!(s.free_chunks, 2, "the hole left by b and the rest of the region");
            assert!(s.largest_free_chunk as usize >= MIB && s.free_chunk_bytes > s.largest_free_chunk);
            assert!(s.large_blocks >= 2 && s.large_bytes >= 2 * MIB as i64);
            if !cfg!(miri) {
                // The heap's resident bytes: at least the two written blocks, at most the
                // process's; fragmentation is heap resident over live, not the process's RSS.
                assert!(s.heap_resident_bytes >= 2 * MIB as i64, "{}", s.heap_resident_bytes);
                assert!(s.heap_resident_bytes <= s.resident_bytes, "{} > {}", s.heap_resident_bytes, s.resident_bytes);
                let f = s.fragmentation();
                assert!((f - s.heap_resident_bytes as f64 / s.live_bytes() as f64).abs() < 1e-9 && f >= 0.5, "{f}");
            }
            GLOBAL.dealloc(a, l);
            GLOBAL.dealloc(c, l);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn large_blocks_freed_by_other_threads_and_after_exit_keep_contents_and_are_reused() {
    let _g = serial();
    const MIB: usize = 1 << 20;
    let rounds = if cfg!(miri) { 3 } else { 200 };
    let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(4);
    // Producers allocate large blocks (chunk heap and huge) and exit while the consumer still
    // holds some: their chunk segments are abandoned with live chunks, then freed remotely.
    let producers: Vec<_> = (0..2)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..rounds {
                    let seed = t * 10_000 + i;
                    let len = if cfg!(miri) { 600_000 } else { 600_000 + (seed * 7919) % (5 * MIB) };
                    let mut v = vec![0u8; len];
                    let step = if cfg!(miri) { 4093 } else { 61 };
                    for k in (0..len).step_by(step) {
                        v[k] = (seed + k) as u8;
                    }
                    tx.send((seed, v)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut n = 0;
    for (seed, v) in rx {
        let step = if cfg!(miri) { 4093 } else { 61 };
        assert!((0..v.len()).step_by(step).all(|k| v[k] == (seed + k) as u8), "large block {seed} changed");
        n += 1;
    }
    producers.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(n, 2 * rounds);
    // The consumer's next large allocation takes over what the producers left.
    let v = vec![1u8; 2 * MIB];
    assert_eq!(v[MIB], 1);
}

#[test]
fn the_secure_build_hands_out_a_fresh_page_in_random_order() {
    let _g = serial();
    let l = Layout::from_size_align(48, 8).unwrap();
    // A fresh thread carves a fresh page of the class.
    let addrs = std::thread::spawn(move || {
        // SAFETY: a non-zero size; every block is freed below.
        let blocks: Vec<*mut u8> = (0..64).map(|_| unsafe { GLOBAL.alloc(l) }).collect();
        let addrs: Vec<usize> = blocks.iter().map(|p| p.addr()).collect();
        // SAFETY: each block is live, allocated with `l`.
        blocks.into_iter().for_each(|p| unsafe { GLOBAL.dealloc(p, l) });
        addrs
    })
    .join()
    .unwrap();
    let neighbours = addrs.windows(2).filter(|w| w[1].abs_diff(w[0]) == 48).count();
    if mallard::raw::RANDOM_ORDER {
        // Two picks in a row from one of the 8 runs: about one pair in 8.
        assert!(neighbours < 24, "{neighbours} of 63 consecutive mallocs returned neighbours");
    } else {
        assert!(neighbours > 48, "the default build carves in address order ({neighbours} of 63)");
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads freed memory")]
fn the_full_level_fills_a_freed_block_and_keeps_it_from_reuse_until_the_quarantine_passes() {
    let name = "the_full_level_fills_a_freed_block_and_keeps_it_from_reuse_until_the_quarantine_passes";
    if !alone_with(name, &[("MALLARD_HARDEN", "full")]) {
        return;
    }
    let _g = serial();
    // The secure build at its full level (else nothing of this happens).
    let secure = mallard::raw::quarantine();
    assert_eq!(secure, mallard::raw::SECURE && !cfg!(miri));
    let l = Layout::from_size_align(100, 8).unwrap();
    // A fresh thread: its quarantine starts empty.
    std::thread::spawn(move || {
        // SAFETY: non-zero sizes; every block is freed once; the freed block is only read
        // (its memory stays mapped: its page holds live blocks).
        unsafe {
            let keep = GLOBAL.alloc(l); // keeps the page in use
            let p = GLOBAL.alloc(l);
            p.write_bytes(0xab, 100);
            GLOBAL.dealloc(p, l);
            let tail = core::slice::from_raw_parts(p.add(16), 96);
            assert_eq!(tail.iter().all(|&b| b == 0), mallard::raw::fill_freed(), "filled in the secure build only");
            let next: Vec<*mut u8> = (0..200).map(|_| GLOBAL.alloc(l)).collect();
            assert_eq!(!next.contains(&p), secure, "reused at once in the default build only");
            next.into_iter().for_each(|q| GLOBAL.dealloc(q, l));
            if secure {
                // The 200 frees pushed p out of the quarantine: it is free again.
                let again: Vec<*mut u8> = (0..300).map(|_| GLOBAL.alloc(l)).collect();
                assert!(again.contains(&p), "released after the quarantine");
                again.into_iter().for_each(|q| GLOBAL.dealloc(q, l));
            }
            GLOBAL.dealloc(keep, l);
        }
    })
    .join()
    .unwrap();
}

/// Whether writing a byte at `p` kills a child process with SIGSEGV (else the write must
/// succeed: the child exits 0).
fn a_write_faults(p: *mut u8) -> bool {
    // SAFETY: the child only writes one byte and exits, without allocating.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: the callers pass an address inside one of the allocator's mappings.
        unsafe {
            p.write_volatile(1);
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork");
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV {
        return true;
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child wrote and exited ({status:#x})");
    false
}

#[test]
#[cfg_attr(miri, ignore = "forks")]
fn the_header_guard_page_faults_in_the_secure_build() {
    let _g = serial();
    let l = Layout::from_size_align(1 << 20, 16).unwrap();
    // SAFETY: a non-zero size; freed below.
    let p = unsafe { GLOBAL.alloc(l) };
    assert!(!p.is_null());
    // The block's segment, and the last OS page of its header slice (where no block goes; in
    // the default build unused memory of the header slice). On a kernel with 64 KiB pages that
    // page would be the header's own, and there is none.
    let segment = p.wrapping_sub(1).map_addr(|a| a & !(mallard::raw::SEGMENT_SIZE - 1));
    let Some(guard) = mallard::raw::header_guard(segment, mallard::raw::page_size()) else {
        // SAFETY: p is live, allocated with l.
        unsafe { GLOBAL.dealloc(p, l) };
        assert_eq!(mallard::raw::page_size(), mallard::raw::MAX_PAGE_SIZE);
        return;
    };
    let faults = a_write_faults(guard);
    // SAFETY: p is live, allocated with l.
    unsafe { GLOBAL.dealloc(p, l) };
    assert_eq!(faults, mallard::raw::HEADER_GUARD, "the guard page faults in the secure build only");
}

#[test]
#[cfg_attr(miri, ignore = "forks, maps MiBs")]
fn a_write_past_a_huge_block_faults_in_the_secure_build_as_it_grows_and_moves() {
    let _g = serial();
    const MIB: usize = 1 << 20;
    let l = |n| Layout::from_size_align(n, 16).unwrap();
    let secure = mallard::raw::HUGE_GUARD;
    // SAFETY: non-zero sizes; the block is resized and freed with its current layout; the
    // writes past its end are made by children.
    unsafe {
        let p = GLOBAL.alloc(l(5 * MIB));
        assert!(!p.is_null());
        p.write_bytes(3, 5 * MIB);
        assert_eq!(a_write_faults(p.add(5 * MIB)), secure, "the page after a fresh huge block");
        assert!(!a_write_faults(p.add(5 * MIB - 1)), "the block's last byte is writable");
        // In place (its 8 MiB mapping has room): the guard moves to the new end.
        let q = GLOBAL.realloc(p, l(5 * MIB), 6 * MIB + 100);
        assert_eq!(q, p, "grows in place");
        assert!(!a_write_faults(p.add(6 * MIB)), "the old guard is memory again");
        assert_eq!(mallard::usable_size(p), if secure { 6 * MIB + 4096 } else { 8 * MIB - (64 << 10) });
        assert_eq!(a_write_faults(p.add(6 * MIB + 4096)), secure, "the guard after the grown block");
        // Beyond its mapping: mremap (the guards are lifted around it) and a new guard.
        let r = GLOBAL.realloc(p, l(6 * MIB + 100), 20 * MIB);
        assert!(!r.is_null());
        assert!(all_bytes(r, 5 * MIB, 3), "contents kept");
        r.add(20 * MIB - 1).write(9);
        assert_eq!(a_write_faults(r.add(20 * MIB)), secure, "the guard after the moved block");
        GLOBAL.dealloc(r, l(20 * MIB));
    }
}

#[test]
#[cfg_attr(miri, ignore = "maps MiBs")]
fn a_buffer_that_must_move_to_grow_past_64_kib_then_grows_and_shrinks_without_moving() {
    let _g = serial();
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    mallard::collect(true); // (so the new thread adopts no abandoned chunk segment)
    std::thread::spawn(move || {
        // SAFETY: non-zero sizes; every block is resized and freed with its current layout.
        unsafe {
            let a = GLOBAL.alloc(l(48 << 10)); // a page-class block: it cannot grow in place
            a.write_bytes(7, 48 << 10);
            let moved = GLOBAL.realloc(a, l(48 << 10), 100 << 10);
            assert!(!moved.is_null() && moved != a);
            let mut size = 100 << 10;
            for new in [300 << 10, 1 << 20, 2 << 20, (4 << 20) - (128 << 10), 1 << 20, 200 << 10, 65 << 10] {
                moved.add(size.min(new) - 1).write(7);
                let p = GLOBAL.realloc(moved, l(size), new);
                assert_eq!(p, moved, "resizing {size} to {new} bytes moved the buffer");
                assert!(all_bytes(moved, (48 << 10).min(new), 7), "contents kept");
                assert_eq!(moved.add(size.min(new) - 1).read(), 7, "contents kept");
                size = new;
            }
            // Into the page classes it moves, and keeps its contents.
            let small = GLOBAL.realloc(moved, l(size), 40 << 10);
            assert!(!small.is_null() && small != moved);
            assert!(all_bytes(small, 40 << 10, 7), "contents kept");
            GLOBAL.dealloc(small, l(40 << 10));
        }
    })
    .join()
    .unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "maps hundreds of MiB")]
fn a_ring_of_huge_blocks_replaced_at_random_reuses_their_mappings() {
    // 16 slots of 64 KiB-8 MiB blocks (log-uniform: a quarter are huge, with mappings of 8 or
    // 12 MiB), a random one replaced 2,000 times, one byte written per 4 KiB. The number of
    // live huge blocks, and so of freed mappings, swings; once warm, the cache must cover the
    // swing instead of unmapping a mapping and mapping (and faulting in) a fresh one.
    let _g = serial();
    if !alone("a_ring_of_huge_blocks_replaced_at_random_reuses_their_mappings") {
        return;
    }
    // No purge comes due while it runs, however slow the machine: the figure is the cache's.
    mallard::set_purge_delay_ms(3_600_000);
    const MIB: usize = 1 << 20;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut ring: Vec<(*mut u8, Layout)> = Vec::new();
    let mut fresh_after_warmup = 0;
    for step in 0..2_200 {
        if step == 200 {
            fresh_after_warmup = mallard::stats().huge_fresh;
        }
        let r = next();
        let band = 64 << 10 << (r % 8);
        let size = (band + (r >> 20) as usize % band).min(8 * MIB);
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero size; the block is written within its size and freed once below.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null());
        for o in (0..layout.size()).step_by(4096) {
            // SAFETY: o < size.
            unsafe { p.add(o).write(step as u8) };
        }
        if ring.len() < 16 {
            ring.push((p, layout));
        } else {
            let (old, old_layout) = std::mem::replace(&mut ring[(r >> 8) as usize % 16], (p, layout));
            // SAFETY: a live block of this layout, freed once.
            unsafe { GLOBAL.dealloc(old, old_layout) };
        }
    }
    let fresh = mallard::stats().huge_fresh - fresh_after_warmup;
    for (p, layout) in ring {
        // SAFETY: as above.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    assert!(fresh <= 3, "2,000 replacements mapped {fresh} fresh huge mappings");
}
