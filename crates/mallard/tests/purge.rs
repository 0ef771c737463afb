//! Returning memory to the OS, measured as the process's resident set (/proc/self/statm):
//! after a program frees what it allocated, `collect(true)` gives it back at once, and the
//! delayed purge gives it back without `collect` once the delay has passed. One test per
//! binary section, run one at a time: RSS is process-wide.

use mallard::Mallard;
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: Mallard = Mallard;

static SERIAL: Mutex<()> = Mutex::new(());

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

const MIB: usize = 1 << 20;

/// Sets the purge delay until it is dropped, then the default again (also when a test fails).
struct PurgeDelay;

impl PurgeDelay {
    fn set(ms: u64) -> PurgeDelay {
        mallard::set_purge_delay_ms(ms);
        PurgeDelay
    }
}

impl Drop for PurgeDelay {
    fn drop(&mut self) {
        mallard::set_purge_delay_ms(mallard::raw::PURGE_DELAY_MS);
    }
}

/// Hundreds of MiB in small, medium, chunk and huge blocks, every page written.
fn grow() -> Vec<Vec<Box<[u8]>>> {
    let mut groups = Vec::new();
    for (count, size) in [(600_000, 100), (4_000, 20_000), (80, 700_000), (12, 6 * MIB)] {
        groups.push((0..count).map(|i| vec![(i % 251) as u8 + 1; size].into_boxed_slice()).collect::<Vec<_>>());
    }
    groups
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn collect_returns_freed_memory_to_the_os() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mallard::collect(true);
    let base = rss();
    let mut groups = grow();
    let peak = rss();
    assert!(peak > base + 250 * MIB, "grew by {} MiB only", (peak - base) / MIB);
    // Half of every group is freed by another thread (remote frees), the rest here.
    let halves: Vec<Vec<Box<[u8]>>> = groups.iter_mut().map(|g| g.split_off(g.len() / 2)).collect();
    std::thread::spawn(move || drop(halves)).join().unwrap();
    drop(groups);
    mallard::collect(true);
    let after = rss();
    let kept = after.saturating_sub(base);
    assert!(kept < 24 * MIB, "after collect(true) {} MiB of {} MiB stay resident", kept / MIB, (peak - base) / MIB);
    assert!(mallard::stats().bytes_purged > 0);
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn free_memory_is_purged_after_the_delay_without_collect() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mallard::collect(true);
    let _delay = PurgeDelay::set(50);
    let base = rss();
    let groups = grow();
    let peak = rss();
    drop(groups);
    // Keep allocating a small working set: its slow paths are where due purges run.
    let start = std::time::Instant::now();
    let mut work: Vec<Box<[u8]>> = Vec::new();
    let mut i = 0usize;
    loop {
        work.push(vec![1u8; 64 + (i * 97) % 30_000].into_boxed_slice());
        if work.len() > 200 {
            work.clear();
        }
        i += 1;
        if i.is_multiple_of(1000) && rss() < base + (peak - base) / 10 {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "RSS stayed at {} MiB of a {} MiB peak",
            (rss() - base) / MIB,
            (peak - base) / MIB
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn a_free_run_inside_a_chunk_segment_is_purged_only_once_due() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let fill = |n: usize| vec![7u8; n].into_boxed_slice();
        // B keeps the chunk segment alive while A's run is free.
        let delay = PurgeDelay::set(60_000);
        let a = fill(3 * MIB);
        let b = fill(512 << 10);
        let before = rss();
        drop(a);
        mallard::collect(false);
        let not_due = rss();
        assert!(before.saturating_sub(not_due) < MIB, "a run freed just now is not purged before its delay");
        mallard::collect(true);
        let forced = rss();
        assert!(not_due.saturating_sub(forced) >= 2 * MIB, "collect(true) purges it");
        // With no delay the run is due at once, and any purge point takes it.
        mallard::set_purge_delay_ms(0);
        let a = fill(3 * MIB);
        let before = rss();
        drop(a);
        mallard::collect(false);
        assert!(before.saturating_sub(rss()) >= 2 * MIB, "a due run is purged without force");
        drop(delay);
        drop(b);
    })
    .join()
    .unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn scattered_survivors_do_not_pin_their_pages() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mallard::collect(true);
    let base = rss();
    // 200 MiB of 64-byte blocks, then every 256th kept: a survivor every 16 KiB, so every
    // 64 KiB page stays in use but three OS pages in four hold nothing live.
    let mut blocks: Vec<Box<[u8]>> = (0..3_200_000).map(|i| vec![(i % 251) as u8 + 1; 64].into_boxed_slice()).collect();
    let peak = rss();
    let keep: Vec<Box<[u8]>> = blocks.drain(..).step_by(256).collect();
    drop(blocks); // the 50 MiB vector of pointers
    mallard::collect(true);
    let after = rss().saturating_sub(base);
    let grown = peak - base;
    assert!(
        after < grown / 3,
        "after collect(true) {} MiB of {} MiB stay resident with {} small survivors",
        after / MIB,
        grown / MIB,
        keep.len()
    );
    assert!(keep.iter().enumerate().all(|(k, b)| b.iter().all(|&x| x == ((k * 256) % 251) as u8 + 1)));
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn sparse_pages_give_back_their_free_os_pages_before_the_heap_maps_more() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mallard::collect(true);
    // No delay passes in this test: only the purge before a new mapping can give pages back.
    let _delay = PurgeDelay::set(3_600_000);
    std::thread::spawn(|| {
        let base = rss();
        // As above: 200 MiB of 64-byte blocks, a survivor every 16 KiB.
        let mut blocks: Vec<Box<[u8]>> =
            (0..3_200_000).map(|i| vec![(i % 251) as u8 + 1; 64].into_boxed_slice()).collect();
        let keep: Vec<Box<[u8]>> = blocks.drain(..).step_by(256).collect();
        drop(blocks);
        let sparse = rss() - base;
        // Then 100 MiB of another size, which needs new segments.
        let big: Vec<Box<[u8]>> = (0..25_600).map(|i| vec![(i % 251) as u8 + 1; 4000].into_boxed_slice()).collect();
        let grown = rss() - base;
        assert!(
            grown < sparse,
            "{} MiB resident after 100 MiB more, with {} MiB resident before: the sparse pages kept their free OS pages",
            grown / MIB,
            sparse / MIB
        );
        assert!(keep.iter().enumerate().all(|(k, b)| b.iter().all(|&x| x == ((k * 256) % 251) as u8 + 1)));
        assert!(big.iter().enumerate().all(|(k, b)| b.iter().all(|&x| x == (k % 251) as u8 + 1)));
    })
    .join()
    .unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc")]
fn the_segment_cache_keeps_freed_segments_until_purged_then_only_a_few() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mallard::collect(true);
    // (No purge may come due before the checks below, however slow the build.)
    let _delay = PurgeDelay::set(3_600_000);
    let before = mallard::stats();
    // 40 segments' worth of small blocks, all freed: more than SEGMENT_CACHE_KEEP.
    let blocks: Vec<Box<[u8]>> = (0..160 * MIB / 1000).map(|i| vec![i as u8; 1000].into_boxed_slice()).collect();
    drop(blocks);
    let freed = mallard::stats();
    assert!(
        freed.segments_cached > mallard::raw::SEGMENT_CACHE_KEEP as i64,
        "freed segments are cached for reuse until the purge delay: {} cached",
        freed.segments_cached
    );
    // Reuse: the same amount again comes mostly from the cache.
    let again: Vec<Box<[u8]>> = (0..160 * MIB / 1000).map(|i| vec![i as u8; 1000].into_boxed_slice()).collect();
    let reused = mallard::stats();
    assert!(
        reused.segments_reused - freed.segments_reused >= 30,
        "{} segments reused and {} mapped for 40 segments' worth of blocks",
        reused.segments_reused - freed.segments_reused,
        reused.segments_mapped - freed.segments_mapped
    );
    drop(again);
    mallard::collect(true);
    let purged = mallard::stats();
    // (`segments_cached` also counts cached huge mappings, which `before` already holds.)
    let kept = purged.segments_cached - before.segments_cached;
    assert!(kept <= mallard::raw::SEGMENT_CACHE_KEEP as i64, "{kept} more segments cached after the purge");
    assert!(purged.segments_released - before.segments_released >= 30, "{:?}", purged.segments_released);
}

/// A purge delay of `u64::MAX` means "never" (the deadline saturates; it used to wrap around
/// to "at once", and overflowed in a debug build).
#[test]
#[cfg_attr(miri, ignore = "maps MiBs")]
fn the_longest_purge_delay_never_purges() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _delay = PurgeDelay::set(u64::MAX);
    let blocks: Vec<Box<[u8]>> = (0..64).map(|i| vec![i as u8 + 1; 300_000].into_boxed_slice()).collect();
    let before = mallard::stats().bytes_purged;
    drop(blocks);
    mallard::collect(false);
    assert_eq!(mallard::stats().bytes_purged, before, "nothing is due under the longest delay");
}
