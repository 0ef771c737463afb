//! Every cross-thread path of the core at once, for ThreadSanitizer (`scripts/test` runs it
//! instrumented; natively it is a quick smoke test). Threads allocate blocks of every kind
//! (page classes, chunks, huge blocks), hand half of them to a neighbour that frees them
//! remotely, keep some past their exit (abandoned segments, reclaimed by later threads), while
//! one thread reads `stats()` and calls `collect` in a loop and the background purger runs
//! with a 1 ms delay. The Rust counterpart of the C programs `threads.c`, `large_remote.c` and
//! `idle.c`, which cannot run under ThreadSanitizer (they take mallard as their malloc).

use mallard::Mallard;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

#[global_allocator]
static GLOBAL: Mallard = Mallard;

const SIZES: [usize; 9] = [16, 24, 200, 3000, 20_000, 70_000, 300_000, 1 << 20, 5 << 20];

fn fill(v: &mut [u8], seed: usize) {
    for (k, b) in v.iter_mut().enumerate().step_by(509) {
        *b = (seed + k) as u8;
    }
}

fn check(v: &[u8], seed: usize) {
    for (k, b) in v.iter().enumerate().step_by(509) {
        assert_eq!(*b, (seed + k) as u8);
    }
}

#[test]
#[cfg_attr(miri, ignore = "threads, MiBs")]
fn every_cross_thread_path_at_once() {
    mallard::set_purge_delay_ms(1);
    mallard::set_background_purge(true);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = mallard::stats();
                assert!(s.mapped_bytes >= 0);
                mallard::collect(n.is_multiple_of(8));
                n += 1;
                std::thread::yield_now();
            }
        })
    };
    let rounds = 12;
    const THREADS: usize = 4;
    let mut kept: Vec<(Vec<u8>, usize)> = Vec::new();
    for round in 0..rounds {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<(Vec<u8>, usize)>()).unzip();
        let mut handles = Vec::new();
        for (t, rx) in rxs.into_iter().enumerate() {
            let tx = txs[(t + 1) % THREADS].clone();
            handles.push(std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..300usize {
                    let seed = round * 7919 + t * 131 + i;
                    let size = SIZES[seed % SIZES.len()] + seed % 97;
                    let mut v = vec![0u8; size];
                    fill(&mut v, seed);
                    if i % 2 == 0 {
                        let _ = tx.send((v, seed));
                    } else {
                        mine.push((v, seed));
                    }
                    // Grow some blocks across kinds (realloc of chunks and huge blocks).
                    if i % 37 == 0 {
                        if let Some((v, s)) = mine.last_mut() {
                            let old = v.len();
                            v.resize(old * 3 + 1, 0);
                            check(&v[..old], *s);
                            v.truncate(old);
                        }
                    }
                    while let Ok((v, s)) = rx.try_recv() {
                        check(&v, s);
                        drop(v); // a remote free
                    }
                    if mine.len() > 40 {
                        let (v, s) = mine.swap_remove(seed % mine.len());
                        check(&v, s);
                    }
                }
                drop(tx);
                // Outlive the thread: freed later by the main thread, after this heap is gone.
                mine.truncate(20);
                mine
            }));
        }
        drop(txs);
        for h in handles {
            kept.extend(h.join().unwrap());
        }
        if kept.len() > 200 {
            for (v, s) in kept.drain(..) {
                check(&v, s);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    drop(kept);
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    mallard::set_background_purge(false);
    // The paths were taken (not the purger's rounds: whether it ran depends on the scheduler).
    // This thread takes over what is still abandoned, so reclaims are counted however the
    // threads were scheduled.
    mallard::collect(true);
    let s = mallard::stats();
    assert!(s.remote_frees > 0 && s.segments_reclaimed > 0 && s.huge_allocs > 0, "{s:?}");
}
