//! Replaying a trace through a strategy, and the figures that say how well it packed the heap.
//!
//! Each allocation of the trace is placed by the strategy; the trace's addresses are only
//! names for blocks. A realloc is an allocation of the new size and a free of the old block
//! (the simulated strategies do not grow blocks in place). A free of a block the trace never
//! allocated (made before recording began) is skipped and counted.

use crate::trace::{Op, Trace};
use crate::Strategy;
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
    /// Footprint ÷ live averaged over the trace's events (those with something live).
    pub frag_mean: f64,
    /// Bytes the live blocks took beyond what was asked (headers, rounding) at the peak of
    /// live bytes: internal fragmentation.
    pub waste_at_peak: u64,
    /// The largest free hole inside the heap at the peak of live bytes.
    pub largest_hole_at_peak: u64,
    /// Frees of blocks the trace never allocated (skipped).
    pub unmatched_frees: u64,
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
}

impl Run<'_> {
    fn alloc(&mut self, addr: u64, size: u64, align: u64) {
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

    fn step(&mut self, op: Op) {
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

/// Replays `trace` through a fresh strategy called `name` (one of `crate::STRATEGIES`; `None`
/// for another name), calling `progress(done, total)` now and then.
pub fn replay(trace: &Trace, name: &str, progress: &mut dyn FnMut(usize, usize)) -> Option<Figures> {
    let mut s = crate::strategy(name)?;
    let s = s.as_mut();
    let strategy = s.name();
    let total = trace.events.len();
    let start = Instant::now();
    let mut run = Run { s, blocks: HashMap::new(), live: 0, taken: 0, unmatched: 0 };
    let (mut peak_footprint, mut peak_live, mut at_peak) = (0, 0, (0, 0, 0usize));
    let (mut frag_sum, mut frag_n) = (0.0, 0u64);
    for (i, e) in trace.events.iter().enumerate() {
        run.step(e.op);
        let footprint = run.s.footprint();
        peak_footprint = peak_footprint.max(footprint);
        if run.live > peak_live {
            peak_live = run.live;
            at_peak = (footprint, run.taken - run.live, i);
        }
        if run.live > 0 {
            frag_sum += footprint as f64 / run.live as f64;
            frag_n += 1;
        }
        if i % 65536 == 0 {
            progress(i, total);
        }
    }
    progress(total, total);
    let elapsed = start.elapsed().as_secs_f64();
    let unmatched_frees = run.unmatched;
    let figures = Figures {
        strategy,
        peak_footprint,
        peak_live,
        footprint_at_peak_live: at_peak.0,
        frag_at_peak: if peak_live > 0 { at_peak.0 as f64 / peak_live as f64 } else { 0.0 },
        frag_mean: if frag_n > 0 { frag_sum / frag_n as f64 } else { 0.0 },
        waste_at_peak: at_peak.1,
        largest_hole_at_peak: 0,
        unmatched_frees,
        ops_per_sec: if elapsed > 0.0 { total as f64 / elapsed } else { 0.0 },
    };
    Some(figures.with_hole(trace, at_peak.2))
}

impl Figures {
    /// Fills in the largest hole at the peak of live bytes by replaying again up to it (a
    /// scan of the free chunks at every new peak would make a growing heap quadratic).
    fn with_hole(mut self, trace: &Trace, peak_index: usize) -> Figures {
        if self.peak_live == 0 {
            return self;
        }
        let mut s = crate::strategy(self.strategy).expect("a known strategy");
        let mut run = Run { s: s.as_mut(), blocks: HashMap::new(), live: 0, taken: 0, unmatched: 0 };
        for e in &trace.events[..=peak_index] {
            run.step(e.op);
        }
        self.largest_hole_at_peak = run.s.largest_free();
        self
    }
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
