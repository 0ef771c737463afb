//! Replays with known answers, and the synthetic shapes through every strategy.

use mallard_lab::fit::{GROW_MIN, HEADER};
use mallard_lab::gen::{generate, Shape};
use mallard_lab::replay::{replay, table};
use mallard_lab::trace::{Event, Op, Trace};
use mallard_lab::STRATEGIES;

fn trace(ops: &[Op]) -> Trace {
    let events =
        ops.iter().enumerate().map(|(i, &op)| Event { time: i as u64, thread: 0, op, stack: Vec::new() }).collect();
    Trace { pid: 1, events, ..Trace::default() }
}

#[test]
fn a_small_trace_has_the_figures_worked_out_by_hand() {
    let t = trace(&[
        Op::Alloc { addr: 0xa000, size: 100, align: 16 },
        Op::Alloc { addr: 0xb000, size: 1000, align: 16 },
        Op::Free { addr: 0xa000 },
        Op::Free { addr: 0xdead }, // never allocated: skipped and counted
        Op::Realloc { old: 0xb000, addr: 0xc000, size: 2000 },
        Op::Free { addr: 0xc000 },
    ]);
    let f = replay(&t, "first-fit", &mut |_, _| {}).unwrap();
    // Live bytes are counted after each event: 100, 1100, 1000, 1000, then 2000 once the
    // realloc moved the block (its new block is placed before the old one is freed).
    assert_eq!(f.peak_live, 2000);
    assert_eq!(f.unmatched_frees, 1);
    assert_eq!(f.peak_footprint, GROW_MIN, "one growth of the heap covers it all");
    assert_eq!(f.footprint_at_peak_live, GROW_MIN);
    // The 2000-byte block's chunk: 2000 rounded to 16, and its header.
    assert_eq!(f.waste_at_peak, HEADER);
    // At the peak: the first two chunks (128 + 1024 bytes) are one free hole, then the new
    // chunk of 2016, then the rest of the heap, the largest hole.
    assert_eq!(f.largest_hole_at_peak, GROW_MIN - 1152 - 2016);
    assert!((f.frag_at_peak - GROW_MIN as f64 / 2000.0).abs() < 1e-9);
    let b = replay(&t, "buddy", &mut |_, _| {}).unwrap();
    assert_eq!(b.waste_at_peak, 2048 - 2000);
    assert!(replay(&t, "worst-fit", &mut |_, _| {}).is_none());
}

#[test]
fn every_shape_replays_through_every_strategy_and_ends_empty() {
    for shape in Shape::ALL {
        let t = generate(shape, 20_000, 7);
        assert_eq!(t, generate(shape, 20_000, 7), "the same seed gives the same trace");
        let figures: Vec<_> = STRATEGIES.iter().map(|s| replay(&t, s, &mut |_, _| {}).unwrap()).collect();
        for f in &figures {
            assert_eq!(f.unmatched_frees, 0, "{shape:?} {}", f.strategy);
            assert!(f.peak_footprint >= f.peak_live && f.frag_at_peak >= 1.0, "{shape:?} {}", f.strategy);
            assert!(f.peak_footprint >= f.footprint_at_peak_live);
        }
        // Buddy rounds every block to a power of two: its internal waste is the largest.
        let waste = |n: &str| figures.iter().find(|f| f.strategy == n).unwrap().waste_at_peak;
        assert!(waste("buddy") > waste("first-fit"), "{shape:?}");
        let md = table(&figures);
        assert!(STRATEGIES.iter().all(|s| md.contains(&format!("| {s} |"))), "{md}");
    }
}

#[test]
fn the_report_has_a_chart_and_a_heap_map_per_strategy() {
    let t = generate(Shape::Plateau, 5000, 3);
    let replays: Vec<_> =
        STRATEGIES.iter().map(|s| mallard_lab::replay::replay_full(&t, s, &mut |_, _| {}).unwrap()).collect();
    for r in &replays {
        assert!(r.series.len() > 100 && r.series.len() <= mallard_lab::replay::SAMPLES + 2);
        let m = &r.map;
        assert!(m.live > 0 && m.footprint >= m.live, "{}", r.figures.strategy);
        // The map is the whole heap then: its spans tile it.
        let mut at = mallard_lab::HEAP_BASE;
        for s in &m.spans {
            assert_eq!(s.start, at, "{}: spans tile the heap", r.figures.strategy);
            at += s.len;
        }
        assert_eq!(at, mallard_lab::HEAP_BASE + m.extent);
        assert!(m.extent >= m.footprint || r.figures.strategy == "mallard");
    }
    let page = mallard_lab::html::report("plateau <test>", t.events.len(), &replays);
    assert_eq!(page.matches("<svg").count(), 2, "a chart and the size scale");
    assert_eq!(page.matches("data:image/png;base64,").count(), STRATEGIES.len(), "a map each");
    assert!(page.contains("plateau &lt;test&gt;"), "the title is escaped");
    assert!(STRATEGIES.iter().all(|s| page.contains(&format!("<td>{s}</td>"))));
}

#[test]
fn a_report_of_a_trace_without_a_memory_map_names_sites_by_address() {
    let ev = |time: u64, thread: u32, op: Op, stack: Vec<u64>| Event { time, thread, op, stack };
    let mut events = vec![
        // A leak of 3 × 100 bytes from site 0xaaaa.
        ev(0, 0, Op::Alloc { addr: 0x1000, size: 100, align: 16 }, vec![0xaaaa, 0x1111]),
        ev(1, 0, Op::Alloc { addr: 0x2000, size: 100, align: 16 }, vec![0xaaaa, 0x1111]),
        ev(2, 0, Op::Alloc { addr: 0x3000, size: 100, align: 16 }, vec![0xaaaa, 0x1111]),
        ev(3, 0, Op::Free { addr: 0x9999 }, vec![]), // allocated before recording
    ];
    // Site 0xbbbb: 10 blocks of 24 bytes freed 50 ns later by the same thread.
    for i in 0..10u64 {
        events.push(ev(100 + 100 * i, 1, Op::Alloc { addr: 0x5000 + i, size: 24, align: 16 }, vec![0xbbbb]));
        events.push(ev(150 + 100 * i, 1, Op::Free { addr: 0x5000 + i }, vec![]));
    }
    // Site 0xcccc: the same shape, but freed by another thread: not a stack candidate.
    for i in 0..10u64 {
        events.push(ev(2000 + 100 * i, 1, Op::Alloc { addr: 0x7000 + i, size: 24, align: 16 }, vec![0xcccc]));
        events.push(ev(2050 + 100 * i, 2, Op::Free { addr: 0x7000 + i }, vec![]));
    }
    let t = Trace { pid: 7, events, ..Trace::default() };
    let text = mallard_lab::report::markdown(&mallard_lab::profile::profile("hand-made", &t), 10);
    let section = |name: &str| text.split("## ").find(|s| s.starts_with(name)).unwrap();
    assert!(
        text.contains("23 allocations, 21 frees") && text.contains("1 free of a block the trace did not see allocated"),
        "{text}"
    );
    assert!(section("Leaks").contains(" | 0xaaaa ← 0x1111 | 3 | 300 B |"), "{text}");
    let stack = section("Stack candidates");
    assert!(stack.contains(" | 0xbbbb | 24 | 10 | 10 |") && !stack.contains("0xcccc"), "{text}");
    assert!(section("Lifetimes").contains("| < 1 µs | 20 |"), "{text}");
    assert!(section("Sizes").contains("| 16 B – 31 B | 20 | 480 B |"), "{text}");
}

#[test]
fn allocations_no_strategy_can_simulate_are_skipped_not_a_crash() {
    let t = trace(&[
        Op::Alloc { addr: 0xa000, size: 1 << 50, align: 16 },
        Op::Alloc { addr: 0xb000, size: 64, align: 1 << 40 },
        Op::Alloc { addr: 0xc000, size: 100, align: 16 },
        Op::Realloc { old: 0xc000, addr: 0xd000, size: u64::MAX },
        Op::Free { addr: 0xa000 },
        Op::Free { addr: 0xb000 },
    ]);
    for s in STRATEGIES {
        let f = replay(&t, s, &mut |_, _| {}).unwrap();
        assert_eq!(f.impossible, 3, "{s}");
        assert_eq!(f.peak_live, 100, "{s}");
    }
    // The report only counts: it takes them as they are.
    let text = mallard_lab::report::markdown(&mallard_lab::profile::profile("huge", &t), 5);
    assert!(text.contains("3 allocations"), "{text}");
}

#[test]
fn the_largest_hole_at_the_peak_fits_in_the_heap_of_that_moment() {
    for shape in mallard_lab::gen::Shape::ALL {
        let t = mallard_lab::gen::generate(shape, 20_000, 3);
        for s in STRATEGIES {
            let r = mallard_lab::replay::replay_full(&t, s, &mut |_, _| {}).unwrap();
            let f = &r.figures;
            assert!(
                f.largest_hole_at_peak <= f.footprint_at_peak_live,
                "{s} on {}: hole {} in a heap of {}",
                shape.name(),
                f.largest_hole_at_peak,
                f.footprint_at_peak_live
            );
            assert_eq!(r.map.live, f.peak_live, "{s}: the map is of the peak");
        }
    }
}

#[test]
fn more_live_bytes_than_the_lab_simulates_are_skipped_not_a_crash() {
    let t = trace(&[
        Op::Alloc { addr: 0xa000, size: 32 << 30, align: 16 },
        Op::Alloc { addr: 0xb000, size: 32 << 30, align: 16 },
        Op::Alloc { addr: 0xc000, size: 100, align: 16 },
    ]);
    for s in STRATEGIES {
        let f = replay(&t, s, &mut |_, _| {}).unwrap();
        assert_eq!((f.impossible, f.peak_live), (2, 100), "{s}");
    }
}
