//! How soon freed memory goes back to the OS on its own: grow to ~500 MiB in mixed sizes, free
//! all but a small working set, keep working on that set, and report how long until RSS is
//! below 10 % of its peak (giving up after 10 s). Runs on mallard (its global allocator) with
//! the default purge delay. `rss_drop [recent|scattered]`.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mallard::Mallard = mallard::Mallard;

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

fn main() {
    let base = rss();
    let mut blocks: Vec<Box<[u8]>> = Vec::new();
    for (count, size) in [(1_000_000, 100), (10_000, 20_000), (150, 700_000), (20, 6 << 20)] {
        blocks.extend((0..count).map(|i| vec![(i % 251) as u8 + 1; size].into_boxed_slice()));
    }
    let peak = rss();
    // The working set: 10,000 small blocks, either the first ones allocated ("recent" keeps
    // them together) or every 100th ("scattered" pins a few blocks in every page).
    let scattered = std::env::args().nth(1).as_deref() == Some("scattered");
    let keep: Vec<Box<[u8]>> =
        if scattered { blocks.drain(..).step_by(100).take(10_000).collect() } else { blocks.drain(..10_000).collect() };
    drop(blocks);
    let freed = Instant::now();
    let mut work: Vec<Box<[u8]>> = Vec::new();
    let mut i = 0usize;
    let mut at_free = None;
    loop {
        work.push(vec![1u8; 64 + (i * 97) % 30_000].into_boxed_slice());
        if work.len() > 200 {
            work.clear();
        }
        i += 1;
        if i.is_multiple_of(1000) {
            let now = rss();
            at_free.get_or_insert(now);
            if now - base < (peak - base) / 10 || freed.elapsed().as_secs() >= 10 {
                let below = now - base < (peak - base) / 10;
                println!(
                    "peak {} MiB above start; right after the frees {} MiB; {} MiB ({:.0} % of the peak, {}) after {:.0} ms",
                    (peak - base) >> 20,
                    (at_free.unwrap() - base) >> 20,
                    (now - base) >> 20,
                    100.0 * (now - base) as f64 / (peak - base) as f64,
                    if below { "below 10 %" } else { "not below 10 %" },
                    freed.elapsed().as_secs_f64() * 1e3
                );
                break;
            }
        }
    }
    assert_eq!(keep.len(), 10_000);
}
