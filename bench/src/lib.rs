//! Allocator benchmarks: in-process workloads run against `System` (glibc), `mallard::Mallard`
//! and `mimalloc::MiMalloc` side by side in one process. Rounds are interleaved (A B C, A B C,
//! …) so drift in machine state hits every allocator alike, and each cell is the median of the
//! rounds. Timing lives here, not in tests; `smoke` mode shrinks every workload so CI can
//! prove they still run.

use core::alloc::GlobalAlloc;
use std::time::Instant;

pub mod process;
pub mod report;
pub mod workloads;

pub use report::{Cell, Meta, Report, Row};

/// Workload names, in table order.
pub const WORKLOADS: &[&str] = &["churn", "mt-churn", "prod-cons", "prod-cons-large", "vec-grow", "large"];

/// Allocator names, in column order.
pub const ALLOCATORS: &[&str] = &["system", "mallard", "mimalloc"];

pub static SYSTEM: std::alloc::System = std::alloc::System;
pub static MALLARD: mallard::Mallard = mallard::Mallard;
pub static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone)]
pub struct Options {
    /// Timed runs per (workload, allocator); the report shows their median.
    pub rounds: usize,
    /// Tiny sizes (a few ms per run) to prove the workloads work, not to measure.
    pub smoke: bool,
    /// Only workloads whose name is in this comma-separated list.
    pub filter: Option<String>,
    /// Print one line per round and workload on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { rounds: 5, smoke: false, filter: None, progress: false }
    }
}

impl Options {
    /// The workloads this run covers, in table order.
    pub fn workloads(&self) -> Vec<&'static str> {
        let wanted = |w: &str| match &self.filter {
            None => true,
            Some(f) => f.split(',').any(|x| x.trim() == w),
        };
        WORKLOADS.iter().copied().filter(|w| wanted(w)).collect()
    }
}

/// Threads for `mt-churn`: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `workload` once on allocator `a`; returns wall time in milliseconds. Sizes are set
/// so a normal run takes ~0.2–1 s on a 2-core machine and a smoke run a few ms.
pub fn run_once<A: GlobalAlloc + Sync + 'static>(a: &'static A, workload: &str, smoke: bool) -> f64 {
    let n = |normal: usize, tiny: usize| if smoke { tiny } else { normal };
    let start = Instant::now();
    match workload {
        "churn" => workloads::churn(a, n(8_000_000, 5_000), 1),
        "mt-churn" => workloads::mt_churn(a, threads(), n(8_000_000, 5_000)),
        "prod-cons" => workloads::prod_cons(a, n(4_000_000, 5_000)),
        "prod-cons-large" => workloads::prod_cons_large(a, n(20_000, 20)),
        "vec-grow" => workloads::vec_grow(a, n(40, 2), n(4 << 20, 64 << 10)),
        "large" => workloads::large(a, n(4_000, 20)),
        other => panic!("unknown workload {other:?}; known: {WORKLOADS:?}"),
    }
    start.elapsed().as_secs_f64() * 1e3
}

/// The only place the allocator name becomes a type: everything below is monomorphized.
pub fn run_named(allocator: &str, workload: &str, smoke: bool) -> f64 {
    match allocator {
        "system" => run_once(&SYSTEM, workload, smoke),
        "mallard" => run_once(&MALLARD, workload, smoke),
        "mimalloc" => run_once(&MIMALLOC, workload, smoke),
        other => panic!("unknown allocator {other:?}"),
    }
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs every selected workload `rounds` times per allocator, interleaved, and reports medians.
pub fn run(opts: &Options) -> Report {
    let rounds = if opts.smoke { 1 } else { opts.rounds.max(1) };
    let workloads = opts.workloads();
    let mut samples = vec![vec![Vec::with_capacity(rounds); ALLOCATORS.len()]; workloads.len()];
    for round in 1..=rounds {
        for (w, workload) in workloads.iter().enumerate() {
            let mut line = format!("round {round}/{rounds} {workload:<10}");
            for (a, allocator) in ALLOCATORS.iter().enumerate() {
                let ms = run_named(allocator, workload, opts.smoke);
                samples[w][a].push(ms);
                line += &format!(" {allocator} {ms:8.1} ms");
            }
            if opts.progress {
                eprintln!("{line}");
            }
        }
    }
    let rows = workloads
        .iter()
        .zip(samples)
        .map(|(workload, per_alloc)| Row {
            workload: workload.to_string(),
            cells: ALLOCATORS
                .iter()
                .zip(per_alloc)
                .map(|(allocator, samples_ms)| Cell {
                    allocator: allocator.to_string(),
                    median_ms: median(&samples_ms),
                    samples_ms,
                })
                .collect(),
        })
        .collect();
    Report { meta: Meta::collect(), rounds, smoke: opts.smoke, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn filter_selects_listed_workloads_in_table_order() {
        let opts = Options { filter: Some("large, churn".into()), ..Options::default() };
        assert_eq!(opts.workloads(), ["churn", "large"]);
    }
}
