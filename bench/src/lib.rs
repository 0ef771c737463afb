//! Allocator benchmarks: in-process workloads run against `System` (glibc), `mallard::Mallard`
//! and `mimalloc::MiMalloc` side by side in one process. Rounds are interleaved (A B C, A B C,
//! …) so drift in machine state hits every allocator alike, and each cell is the median of the
//! rounds. Timing lives here, not in tests; `smoke` mode shrinks every workload so CI can
//! prove they still run.

use core::alloc::GlobalAlloc;
use std::time::Instant;

pub mod apps;
pub mod process;
pub mod programs;
pub mod report;
pub mod workloads;

pub use report::{Cell, Meta, Report, Row};

/// The allocator workloads, in table order: generic over the allocator, so they run in one
/// process against several (`run`) or in a process of their own (`process`).
pub const WORKLOADS: &[&str] = &[
    "churn",
    "mt-churn",
    "larson",
    "threadtest",
    "cache-scratch",
    "prod-cons",
    "prod-cons-large",
    "mstress",
    "random-sizes",
    "vec-grow",
    "malloc-large",
    "big-churn",
    "frag",
];

/// Rust programs ([`apps`]): they use the global allocator, so they run only in a process of
/// their own, where the binary or `LD_PRELOAD` picks it.
pub const RUST_PROGRAMS: &[&str] = &["json", "collections"];

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
        "larson" => workloads::larson(a, threads(), n(20, 2), n(500_000, 2_000)),
        "threadtest" => workloads::threadtest(a, threads(), n(200, 2), n(50_000, 1_000)),
        "cache-scratch" => workloads::cache_scratch(a, threads(), n(1_000_000, 1_000), n(400, 10)),
        "mstress" => workloads::mstress(a, threads(), n(2_000_000, 5_000)),
        "vec-grow" => workloads::vec_grow(a, n(40, 2), n(4 << 20, 64 << 10)),
        "malloc-large" => workloads::large(a, n(300, 3)),
        "big-churn" => workloads::big_churn(a, n(5_000, 20)),
        "random-sizes" => workloads::random_sizes(a, n(10_000_000, 5_000)),
        "frag" => workloads::frag(a, n(128, 1), n(64, 1)),
        "json" => apps::json(n(3, 1), n(20_000, 100)),
        "collections" => apps::collections(n(3, 1), n(200_000, 1_000)),
        other => panic!("unknown workload {other:?}; known: {WORKLOADS:?} {RUST_PROGRAMS:?}"),
    }
    start.elapsed().as_secs_f64() * 1e3
}

/// The global allocator, whichever the binary has, as a [`GlobalAlloc`] value: the workloads
/// of `mallard-workload` and its siblings run on it.
pub struct Global;

// SAFETY: forwards every call to the global allocator, which upholds the contract.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { std::alloc::alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { std::alloc::alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: the caller passes a block from `alloc` with its layout.
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller checks `new_size`.
        unsafe { std::alloc::realloc(ptr, layout, new_size) }
    }
}

/// `main` of `mallard-workload` and its siblings: `BINARY WORKLOAD [--smoke]` runs one
/// workload once on the binary's global allocator and prints its wall time in ms on stdout.
pub fn workload_main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = || [WORKLOADS, RUST_PROGRAMS].concat().join(", ");
    let Some(workload) = args.first() else {
        eprintln!("usage: mallard-workload WORKLOAD [--smoke]  (workloads: {})", known());
        return std::process::ExitCode::from(2);
    };
    if !WORKLOADS.contains(&workload.as_str()) && !RUST_PROGRAMS.contains(&workload.as_str()) {
        eprintln!("mallard-workload: unknown workload {workload:?}; known: {}", known());
        return std::process::ExitCode::from(2);
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let ms = run_once(&Global, workload, smoke);
    println!("{ms:.3}");
    std::process::ExitCode::SUCCESS
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
        let opts = Options { filter: Some("malloc-large, churn".into()), ..Options::default() };
        assert_eq!(opts.workloads(), ["churn", "malloc-large"]);
    }
}
