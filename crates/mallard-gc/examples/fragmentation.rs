//! How much memory the collected heap holds against what is alive, over a long run.
//!
//! A table of `SLOTS` entries is overwritten at random with objects of three sizes whose
//! lifetimes differ (the small ones are replaced often, the big ones rarely), and every so
//! often the mix of sizes shifts. Every `REPORT` steps the example prints the heap's bytes
//! (pages and large objects from mallard) against the bytes the last collection found alive,
//! as the program runs (garbage not yet collected included: the collector lets the heap grow
//! to `growth` times the live bytes) and right after a full `collect()` (what is left is
//! fragmentation: free slots in pages that still hold live objects), and after `compact()`
//! (which moves objects out of sparse pages).
//! `cargo run --release -p mallard-gc --example fragmentation`

use mallard_gc::{Gc, GcCell, Trace};

#[derive(Trace)]
enum Obj {
    Small(Gc<[u64; 2]>),
    Medium(Gc<[u64; 30]>),
    Big(Gc<[u64; 200]>),
}

const SLOTS: usize = 200_000;
/// The table is cut into chunks in the heap, so its entries are edges (unrooted handles,
/// which `compact` may move) and changing one walks only its chunk.
const CHUNK: usize = 16;
const STEPS: usize = 20_000_000;
const REPORT: usize = 2_000_000;

fn main() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let table: Vec<Gc<GcCell<Vec<Option<Obj>>>>> =
        (0..SLOTS / CHUNK).map(|_| Gc::new(GcCell::new((0..CHUNK).map(|_| None).collect()))).collect();
    let mut worst: f64 = 0.0;
    let mut worst_packed: f64 = 0.0;
    println!("| step | heap (MiB) | live at last collection (MiB) | heap ÷ live | after collect(): heap (MiB) | live (MiB) | heap ÷ live | after compact(): heap (MiB) | heap ÷ live |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for step in 1..=STEPS {
        // The mix shifts every 5 million steps: from mostly small to mostly medium and back.
        let phase = (step / 5_000_000) % 2;
        let r = rand(100);
        let i = rand(SLOTS as u64) as usize;
        // Small objects live short (any slot), big ones long (only a tenth of the slots).
        let obj = match (phase, r) {
            (0, 0..=79) | (1, 0..=19) => Obj::Small(Gc::new([step as u64; 2])),
            (_, 98..=99) if i.is_multiple_of(10) => Obj::Big(Gc::new([step as u64; 200])),
            _ => Obj::Medium(Gc::new([step as u64; 30])),
        };
        table[i / CHUNK].borrow_mut()[i % CHUNK] = Some(obj);
        if step % REPORT == 0 {
            let mib = |b: usize| b as f64 / (1 << 20) as f64;
            let s = mallard_gc::stats();
            let ratio = s.heap_bytes as f64 / s.live_bytes.max(1) as f64;
            mallard_gc::collect();
            let c = mallard_gc::stats();
            let frag = c.heap_bytes as f64 / c.live_bytes.max(1) as f64;
            worst = worst.max(frag);
            // SAFETY: the program holds handles only (`table`), no reference into the heap.
            unsafe { mallard_gc::compact() };
            let k = mallard_gc::stats();
            let packed = k.heap_bytes as f64 / k.live_bytes.max(1) as f64;
            worst_packed = worst_packed.max(packed);
            println!(
                "| {step} | {:.1} | {:.1} | {ratio:.2} | {:.1} | {:.1} | {frag:.2} | {:.1} | {packed:.2} |",
                mib(s.heap_bytes),
                mib(s.live_bytes),
                mib(c.heap_bytes),
                mib(c.live_bytes),
                mib(k.heap_bytes)
            );
        }
    }
    // Check the table is intact.
    for chunk in &table {
        for o in chunk.borrow().iter().flatten() {
            match o {
                Obj::Small(g) => assert!(g.iter().all(|&x| x == g[0])),
                Obj::Medium(g) => assert!(g.iter().all(|&x| x == g[0])),
                Obj::Big(g) => assert!(g.iter().all(|&x| x == g[0])),
            }
        }
    }
    println!("\nworst heap ÷ live right after a collection: {worst:.2}; after compact(): {worst_packed:.2}");
}
