//! Every strategy against a model: blocks never overlap, stay inside the footprint and are
//! aligned, the strategy's own invariants hold after every step, and a heap freed entirely
//! shrinks back. Then textbook cases with known answers.

use mallard_lab::buddy::Buddy;
use mallard_lab::fit::{FitHeap, Policy, HEADER, TRIM};
use mallard_lab::{Strategy as Placement, HEAP_BASE, PAGE};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn strategies() -> Vec<Box<dyn Placement>> {
    vec![
        Box::new(FitHeap::new(Policy::FirstFit)),
        Box::new(FitHeap::new(Policy::NextFit)),
        Box::new(FitHeap::new(Policy::BestFit)),
        Box::new(FitHeap::new(Policy::Tlsf)),
        Box::new(mallard_lab::seg::Segregated::new()),
        Box::new(Buddy::new()),
        mallard_lab::strategy("mallard").unwrap(),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: u64,
        align: u64,
    },
    /// Frees the live block at this index (modulo the number live).
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..18, 1u64..=4096, prop::sample::select(vec![1u64, 8, 16, 64, 4096]))
            .prop_map(|(shift, mul, align)| Op::Alloc { size: ((mul << shift) >> 12).max(1), align }),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// Runs `ops` on `s`, checking the model after every step; then frees everything.
fn run(s: &mut dyn Placement, ops: &[Op]) {
    // Live blocks: address -> end.
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    for o in ops {
        match *o {
            Op::Alloc { size, align } => {
                let p = s.alloc(size, align);
                let end = p + size;
                assert_eq!(p % align.max(16), 0, "{}: {p:#x} aligned to {align}", s.name());
                assert!(p >= HEAP_BASE && end <= HEAP_BASE + s.extent(), "{}: inside the heap", s.name());
                if let Some((_, &e)) = live.range(..=p).next_back() {
                    assert!(e <= p, "{}: {p:#x} overlaps the block before", s.name());
                }
                if let Some((&q, _)) = live.range(p..).next() {
                    assert!(end <= q, "{}: {p:#x} overlaps the block after", s.name());
                }
                live.insert(p, end);
            }
            Op::Free(i) if !live.is_empty() => {
                let p = *live.keys().nth(i % live.len()).unwrap();
                live.remove(&p);
                s.free(p);
            }
            Op::Free(_) => {}
        }
        s.validate();
    }
    for p in std::mem::take(&mut live).into_keys() {
        s.free(p);
    }
    s.trim();
    s.validate();
    // (mallard keeps its heaps' metadata committed.)
    let left = if s.name() == "mallard" { 256 << 10 } else { TRIM + PAGE };
    assert!(s.footprint() <= left, "{}: a heap freed entirely gives its memory back ({})", s.name(), s.footprint());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn op_programs_keep_blocks_apart_aligned_and_inside(ops in prop::collection::vec(op(), 1..300)) {
        for mut s in strategies() {
            run(s.as_mut(), &ops);
        }
    }
}

/// A heap with free holes of the given chunk sizes, in this address order, each between two
/// live blocks (so they cannot coalesce), and its footprint.
fn with_holes(policy: Policy, holes: &[u64]) -> (FitHeap, u64) {
    let mut h = FitHeap::new(policy);
    h.alloc(16, 16);
    let blocks: Vec<u64> = holes
        .iter()
        .map(|&chunk| {
            let p = h.alloc(chunk - HEADER, 16);
            h.alloc(16, 16); // a live separator
            p
        })
        .collect();
    blocks.into_iter().for_each(|p| h.free(p));
    h.validate();
    let f = h.footprint();
    (h, f)
}

#[test]
fn best_fit_keeps_the_big_hole_for_the_big_request_where_first_fit_splits_it() {
    // Holes of 320 and 224 bytes; requests of 208 then 304 (chunks of 224 and 320).
    for (policy, grows) in [(Policy::BestFit, false), (Policy::FirstFit, true)] {
        let (mut h, before) = with_holes(policy, &[320, 224]);
        // Fill the rest of the heap's top so that only the holes can serve.
        let top_free: u64 = h.free_chunks().last().map(|(_, z)| z).unwrap();
        h.alloc(top_free - HEADER, 16);
        let full = h.footprint();
        assert_eq!(full, before);
        h.alloc(208, 16);
        h.alloc(304, 16);
        h.validate();
        assert_eq!(h.footprint() > full, grows, "{policy:?}");
    }
}

#[test]
fn first_fit_fills_one_hole_exactly_where_best_fit_leaves_two_slivers() {
    // Holes of 320 and 224 bytes; requests of 144, 144 (chunks of 160) then 208 (224).
    for (policy, grows) in [(Policy::FirstFit, false), (Policy::BestFit, true)] {
        let (mut h, _) = with_holes(policy, &[320, 224]);
        let top_free: u64 = h.free_chunks().last().map(|(_, z)| z).unwrap();
        h.alloc(top_free - HEADER, 16);
        let full = h.footprint();
        h.alloc(144, 16);
        h.alloc(144, 16);
        h.alloc(208, 16);
        h.validate();
        assert_eq!(h.footprint() > full, grows, "{policy:?}");
    }
}

#[test]
fn a_chunk_freed_between_two_free_neighbours_merges_with_both() {
    for policy in [Policy::FirstFit, Policy::NextFit, Policy::BestFit] {
        let mut h = FitHeap::new(policy);
        let [a, b, c, _d] = [h.alloc(100, 16), h.alloc(100, 16), h.alloc(100, 16), h.alloc(100, 16)];
        let free_before = h.free_chunks().count();
        h.free(a);
        h.free(c);
        assert_eq!(h.free_chunks().count(), free_before + 2);
        h.free(b);
        h.validate();
        assert_eq!(h.free_chunks().count(), free_before + 1, "{policy:?}: a, b and c are one chunk");
        assert!(h.free_chunks().any(|(s, z)| s == a - HEADER && z == 3 * (112 + HEADER)));
    }
}

#[test]
fn next_fit_moves_on_where_first_fit_goes_back_to_the_start() {
    let (mut first, _) = with_holes(Policy::FirstFit, &[160, 160, 160]);
    let (mut next, _) = with_holes(Policy::NextFit, &[160, 160, 160]);
    let a1 = first.alloc(100, 16);
    let b1 = first.alloc(100, 16);
    let a2 = next.alloc(100, 16);
    let b2 = next.alloc(100, 16);
    assert!(b1 > a1 && b2 > a2);
    // First fit: the second request takes the next hole up (the first is used). Next fit
    // started after the last hole made (at the top), so it took the top chunk, then wraps.
    assert_eq!(a1, HEAP_BASE + 32 + HEADER);
    assert!(a2 > HEAP_BASE + 32 + 3 * (160 + 32), "next fit continues from the last placement");
}

#[test]
fn buddy_wastes_almost_half_on_sizes_just_over_a_power_of_two() {
    let (mut exact, mut over) = (Buddy::new(), Buddy::new());
    for _ in 0..1000 {
        exact.alloc(1024, 16);
        over.alloc(1025, 16);
    }
    exact.validate();
    over.validate();
    assert_eq!(exact.footprint(), 1000 * 1024, "powers of two fit exactly");
    assert_eq!(over.footprint(), 1000 * 2048, "1025 bytes take a block of 2048");
    // First fit packs the same requests in chunks of 1056 bytes (a header, rounding to 16),
    // and its heap grows in steps of GROW_MIN.
    let mut ff = FitHeap::new(Policy::FirstFit);
    (0..1000).for_each(|_| {
        ff.alloc(1025, 16);
    });
    assert!(ff.footprint() <= 1000 * 1056 + mallard_lab::fit::GROW_MIN, "first fit: {}", ff.footprint());
}

#[test]
fn buddies_merge_back_into_the_block_they_were_split_from() {
    let mut b = Buddy::new();
    let blocks: Vec<u64> = (0..64).map(|_| b.alloc(64, 16)).collect();
    assert_eq!(b.footprint(), PAGE, "64 blocks of 64 bytes split one page");
    let keep = b.alloc(16, 16); // in a second page: the first one is full
    for p in blocks {
        b.free(p);
        b.validate();
    }
    // The first page is one free block again; the second holds `keep`, so nothing is given back.
    assert_eq!(b.footprint(), 2 * PAGE);
    assert_eq!(b.alloc(PAGE, 16), HEAP_BASE, "the merged page serves a page-sized request");
    b.free(keep);
    b.validate();
}

#[test]
fn tlsf_bins_are_four_per_power_of_two_and_a_request_skips_a_bin_that_might_not_fit() {
    use mallard_lab::fit::tlsf_bin;
    assert_eq!(tlsf_bin(256), tlsf_bin(319));
    assert_ne!(tlsf_bin(319), tlsf_bin(320));
    assert!(tlsf_bin(511) < tlsf_bin(512));
    // Holes of 336 and 400 bytes (bins [320, 384) and [384, 448)); a request for a chunk of
    // 336 rounds up to 384, so TLSF takes the 400 hole where best fit takes the exact one.
    for (policy, exact) in [(Policy::BestFit, true), (Policy::Tlsf, false)] {
        let (mut h, _) = with_holes(policy, &[336, 400]);
        let hole = |h: &FitHeap, size| h.free_chunks().find(|&(_, z)| z == size).unwrap().0;
        let exact_hole = hole(&h, 336);
        let p = h.alloc(336 - HEADER, 16);
        assert_eq!(p == exact_hole + HEADER, exact, "{policy:?}");
        h.validate();
    }
}

#[test]
fn segregated_storage_cannot_reuse_a_sparse_run_for_another_size_where_first_fit_can() {
    use mallard_lab::seg::Segregated;
    let mut seg = Segregated::new();
    let mut ff = FitHeap::new(Policy::FirstFit);
    for s in [&mut seg as &mut dyn Placement, &mut ff] {
        // 64 KiB of 32-byte blocks; keep one in 16 (one per 512 bytes), free the rest.
        let blocks: Vec<u64> = (0..2048).map(|_| s.alloc(32, 16)).collect();
        blocks.iter().enumerate().filter(|(i, _)| i % 16 != 0).for_each(|(_, &p)| s.free(p));
        let last_survivor = blocks.iter().step_by(16).max().copied().unwrap();
        // Then 32 KiB of 256-byte blocks: where do they go?
        let new: Vec<u64> = (0..128).map(|_| s.alloc(256, 16)).collect();
        s.validate();
        let in_holes = new.iter().all(|&p| p < last_survivor);
        let above = new.iter().all(|&p| p > last_survivor);
        // Segregated: every run keeps a live block, so the 256-byte class takes new pages.
        // First fit: the holes between survivors (15 × 48 bytes) take the new blocks.
        assert_eq!(
            (in_holes, above),
            if s.name() == "segregated" { (false, true) } else { (true, false) },
            "{}",
            s.name()
        );
    }
}
