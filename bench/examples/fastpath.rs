//! Fast-path cost under callgrind: `fastpath <system|mallard|mimalloc> <iterations>` does
//! `iterations` pairs of alloc(32 B, align 8) + dealloc after a warm-up. Running it at two
//! iteration counts and subtracting the instruction totals gives instructions per pair with
//! start-up cost cancelled out (see `bench/callgrind-fastpath.sh`).

use core::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

fn pairs<A: GlobalAlloc>(a: &A, n: usize) {
    let layout = Layout::from_size_align(32, 8).unwrap();
    // One block stays live so the page never empties: the loop measures the fast paths, not
    // each allocator's empty-page handling.
    // SAFETY: non-zero size; freed below.
    let anchor = unsafe { a.alloc(layout) };
    for _ in 0..n {
        // SAFETY: non-zero size; the block is freed right away with the same layout.
        unsafe {
            let p = black_box(a.alloc(layout));
            assert!(!p.is_null());
            a.dealloc(p, layout);
        }
    }
    // SAFETY: allocated above with this layout.
    unsafe { a.dealloc(anchor, layout) };
}

/// Hands out one static block and ignores frees: measures the loop around the pairs.
struct Noop;
static mut SLOT: [u64; 8] = [0; 8];
// SAFETY: never used for real storage; the loop only checks the pointer for null.
unsafe impl GlobalAlloc for Noop {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        &raw mut SLOT as *mut u8
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: fastpath <system|mallard|mimalloc|noop> <iterations>";
    let (Some(which), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let run: fn(usize) = match which.as_str() {
        "system" => |n| pairs(&std::alloc::System, n),
        "mallard" => |n| pairs(&mallard::Mallard, n),
        "mimalloc" => |n| pairs(&mimalloc::MiMalloc, n),
        // The harness alone: subtract its count to get the allocator's own instructions.
        "noop" => |n| pairs(&Noop, n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    run(1000); // warm-up: thread heap set up, first page carved
    run(n);
}
