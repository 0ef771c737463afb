//! Replaying a trace through a strategy, and the figures that say how well it packed the heap.
//!
//! Each allocation of the trace is placed by the strategy; the trace's addresses are only
//! names for blocks. A realloc is an allocation of the new size and a free of the old block
//! (the simulated strategies do not grow blocks in place). A free of a block the trace never
//! allocated (made before recording began) is skipped and counted.

use crate::trace::{Op, Trace};
use crate::{Span, Strategy};
use std::collections::HashMap;
use std::time::Instant;

/// What a replay measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub strategy: &'static str,
    /// The most address space the heap held at any time.
    pub peak_footprint: u64,
    /// The most bytes the program had live (as it asked for them).
    pub peak_live: u64,
    /// The heap's footprint when the live bytes peaked, and fragmentation then: footprint ÷
    /// live.
    pub footprint_at_peak_live: u64,
    pub frag_at_peak: f64,
    /// Footprint ÷ live averaged over the trace's time (each state weighted by how long it lasted;
    /// by event for a trace without times), over the moments something is live.
    pub frag_mean: f64,
    /// Bytes the live blocks took beyond what was asked (headers, rounding) at the peak of
    /// live bytes: internal fragmentation.
    pub waste_at_peak: u64,
    /// The largest free hole inside the heap at the peak of live bytes.
    pub largest_hole_at_peak: u64,
    /// Frees of blocks the trace never allocated (skipped).
    pub unmatched_frees: u64,
    /// Allocations no strategy could simulate (over `MAX_SIZE` bytes, aligned beyond
    /// `MAX_ALIGN`, or more than `MAX_LIVE` live: a damaged or hand-made trace), skipped with
    /// their frees.
    pub impossible: u64,
    /// Events replayed per second.
    pub ops_per_sec: f64,
}

/// The running state of one replay.
struct Run<'a> {
    s: &'a mut dyn Strategy,
    /// Trace address -> (strategy address, size asked).
    blocks: HashMap<u64, (u64, u64)>,
    live: u64,
    taken: u64,
    unmatched: u64,
    impossible: u64,
}

/// The largest block and alignment a replay simulates (1 TiB, 1 GiB)...
pub const MAX_SIZE: u64 = 1 << 40;
pub const MAX_ALIGN: u64 = 1 << 30;
/// ... and the most bytes live at once (16 GiB: the lab's mallard has 64 GiB of address space).
pub const MAX_LIVE: u64 = 16 << 30;

impl Run<'_> {
    fn new(s: &mut dyn Strategy) -> Run<'_> {
        Run { s, blocks: HashMap::new(), live: 0, taken: 0, unmatched: 0, impossible: 0 }
    }

    fn alloc(&mut self, addr: u64, size: u64, align: u64) {
        if size > MAX_SIZE || !align.is_power_of_two() || align > MAX_ALIGN || self.live + size > MAX_LIVE {
            // (Its free, later, counts as unmatched.)
            self.impossible += 1;
            return;
        }
        if self.blocks.contains_key(&addr) {
            // The trace lost the free of a block at this address: free it now.
            self.free(addr);
            self.unmatched += 1;
        }
        let p = self.s.alloc(size, align);
        self.live += size;
        self.taken += self.s.block_size(p);
        self.blocks.insert(addr, (p, size));
    }

    fn free(&mut self, addr: u64) {
        match self.blocks.remove(&addr) {
            Some((p, size)) => {
                self.live -= size;
                self.taken -= self.s.block_size(p);
                self.s.free(p);
            }
            None => self.unmatched += 1,
        }
    }

    fn step(&mut self, thread: u32, op: Op) {
        self.s.set_thread(thread);
        match op {
            Op::Alloc { addr, size, align } => self.alloc(addr, size, align),
            Op::Free { addr } => self.free(addr),
            Op::Realloc { addr: 0, .. } => {}
            Op::Realloc { old, addr, size } => {
                let align = 16;
                if old != 0 && old == addr && self.blocks.contains_key(&old) {
                    self.free(old);
                    self.alloc(addr, size, align);
                } else {
                    self.alloc(addr, size, align);
                    if old != 0 {
                        self.free(old);
                    }
                }
            }
        }
    }
}

/// One point of a replay's time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The event just replayed (its index in the trace).
    pub event: usize,
    pub live: u64,
    pub footprint: u64,
}

/// The heap at one moment, for a heap map.
#[derive(Clone, Debug, PartialEq)]
pub struct HeapMap {
    pub event: usize,
    pub live: u64,
    pub footprint: u64,
    /// The addresses the spans cover: `[HEAP_BASE, HEAP_BASE + extent)`.
    pub extent: u64,
    pub spans: Vec<Span>,
}

/// Everything one replay produced: the figures, the footprint and live bytes over time (about
/// `SAMPLES` points), and the heap at the moment of peak live bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub figures: Figures,
    pub series: Vec<Sample>,
    pub map: HeapMap,
}

/// About how many points a replay's series has.
pub const SAMPLES: usize = 1000;

/// Replays `trace` through a fresh strategy called `name` (one of `crate::STRATEGIES`; `None`
/// for another name), calling `progress(done, total)` now and then.
pub fn replay(trace: &Trace, name: &str, progress: &mut dyn FnMut(usize, usize)) -> Option<Figures> {
    replay_full(trace, name, progress).map(|r| r.figures)
}

/// `replay`, with the series and the heap map.
pub fn replay_full(trace: &Trace, name: &str, progress: &mut dyn FnMut(usize, usize)) -> Option<Replay> {
    let mut s = crate::strategy(name)?;
    let strategy = s.name();
    let total = trace.events.len();
    let every = total.div_ceil(SAMPLES).max(1);
    let start = Instant::now();
    let mut run = Run::new(s.as_mut());
    let (mut peak_footprint, mut peak_live, mut at_peak) = (0, 0, (0, 0, 0usize));
    // Footprint ÷ live weighted by how long each state lasted (the time to the next event);
    // by event where the trace has no times (all equal).
    let (mut frag_sum, mut frag_weight) = (0.0, 0.0);
    let timed = trace.events.first().zip(trace.events.last()).is_some_and(|(a, b)| b.time > a.time);
    let mut series = Vec::with_capacity(SAMPLES + 2);
    for (i, e) in trace.events.iter().enumerate() {
        run.step(e.thread, e.op);
        let footprint = run.s.footprint();
        peak_footprint = peak_footprint.max(footprint);
        if run.live > peak_live {
            peak_live = run.live;
            at_peak = (footprint, run.taken - run.live, i);
        }
        if run.live > 0 {
            let w =
                if timed { trace.events.get(i + 1).map_or(0, |n| n.time.saturating_sub(e.time)) as f64 } else { 1.0 };
            frag_sum += w * footprint as f64 / run.live as f64;
            frag_weight += w;
        }
        if i % every == 0 || i + 1 == total {
            series.push(Sample { event: i, live: run.live, footprint });
        }
        if i % 65536 == 0 {
            progress(i, total);
        }
    }
    progress(total, total);
    let elapsed = start.elapsed().as_secs_f64();
    let mut figures = Figures {
        strategy,
        peak_footprint,
        peak_live,
        footprint_at_peak_live: at_peak.0,
        frag_at_peak: if peak_live > 0 { at_peak.0 as f64 / peak_live as f64 } else { 0.0 },
        frag_mean: if frag_weight > 0.0 { frag_sum / frag_weight } else { 0.0 },
        waste_at_peak: at_peak.1,
        largest_hole_at_peak: 0,
        unmatched_frees: run.unmatched,
        impossible: run.impossible,
        ops_per_sec: if elapsed > 0.0 { total as f64 / elapsed } else { 0.0 },
    };
    // A second replay, stopped at the peak, looks at the heap there (scanning the free
    // chunks at every new peak would make a growing heap quadratic).
    // The heap map: at the moment of peak live, the same for every strategy (live bytes do not
    // depend on the strategy), so that maps side by side compare.
    let map_at = at_peak.2;
    let mut map = HeapMap { event: map_at, live: 0, footprint: 0, extent: 0, spans: Vec::new() };
    if total > 0 {
        let mut s = crate::strategy(name)?;
        let mut run = Run::new(s.as_mut());
        for (i, e) in trace.events[..=at_peak.2].iter().enumerate() {
            run.step(e.thread, e.op);
            if i == at_peak.2 && peak_live > 0 {
                figures.largest_hole_at_peak = run.s.largest_free();
            }
            if i == map_at {
                map = HeapMap {
                    event: i,
                    live: run.live,
                    footprint: run.s.footprint(),
                    extent: run.s.extent(),
                    spans: run.s.spans(),
                };
            }
        }
    }
    Some(Replay { figures, series, map })
}

/// The figures of several replays as a Markdown table.
pub fn table(figures: &[Figures]) -> String {
    let kib = |b: u64| format!("{:.1}", b as f64 / 1024.0);
    let mut t = String::from(
        "| strategy | peak footprint (KiB) | peak live (KiB) | footprint at peak live (KiB) | fragmentation at peak | fragmentation, mean | internal waste at peak (KiB) | largest hole at peak (KiB) | Mops/s |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for f in figures {
        t += &format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {:.2} |\n",
            f.strategy,
            kib(f.peak_footprint),
            kib(f.peak_live),
            kib(f.footprint_at_peak_live),
            f.frag_at_peak,
            f.frag_mean,
            kib(f.waste_at_peak),
            kib(f.largest_hole_at_peak),
            f.ops_per_sec / 1e6
        );
    }
    t
}
