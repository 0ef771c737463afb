//! `gc-bench`: mallard-gc against `Rc<RefCell<_>>`, the `gc` crate (0.5) and `dumpster` (2.x).
//!
//! Two workloads, each run in its own process per collector, interleaved round by round:
//!
//! - **binary-trees** (the benchmarks game's): build and drop trees of depth 4, 6, ... up to
//!   `Size::depth`, many times, while one long-lived tree stays. Allocation-bound; no cycles.
//! - **graph-mutation**: a table of `Size::nodes` roots; each step replaces a root with a new node
//!   pointing at two random roots, and every other step re-points an edge of a random node at
//!   another (cycles form all the time, which `Rc` leaks).
//!
//! Figures per run: wall time, peak RSS (`wait4`), and latency: the time of every batch of
//! `BATCH` allocations, whose p99 and maximum show the pauses of every collector the same way
//! (for `Rc`, the pause of dropping a big tree at once). mallard-gc's own pause statistics are
//! reported beside them. All collectors run on mallard as the global allocator.
//!
//! `gc-bench [--rounds N] [--smoke] [--json FILE]` runs everything and prints a Markdown table;
//! `gc-bench run WORKLOAD COLLECTOR [--smoke]` is one child.

// The `gc` crate's derive (synstructure) defines its impls inside a const.
#![allow(non_local_definitions)]

use mallard_bench::process::{reset_peak_rss, wait_child};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mallard::Mallard = mallard::Mallard;

const COLLECTORS: [&str; 5] = ["mallard-gc", "mallard-gc-stop-the-world", "rc-refcell", "gc-0.5", "dumpster-2"];
const WORKLOADS: [&str; 2] = ["binary-trees", "graph-mutation"];
/// Allocations per latency batch.
const BATCH: u32 = 4096;

/// Sizes of the workloads (smaller under `--smoke`).
#[derive(Clone, Copy)]
struct Size {
    depth: u32,
    nodes: usize,
    steps: usize,
}

const FULL: Size = Size { depth: 16, nodes: 100_000, steps: 2_000_000 };
const SMOKE: Size = Size { depth: 8, nodes: 1_000, steps: 10_000 };

thread_local! {
    /// (allocations in this batch, when it began, batch times in ns)
    static TICKS: RefCell<(u32, Option<Instant>, Vec<u64>)> = const { RefCell::new((0, None, Vec::new())) };
}

/// Count one allocation; every `BATCH`, record how long the batch took.
#[inline]
fn tick() {
    TICKS.with(|t| {
        let mut t = t.borrow_mut();
        t.0 += 1;
        if t.0 == BATCH {
            let now = Instant::now();
            if let Some(start) = t.1 {
                let ns = now.duration_since(start).as_nanos() as u64;
                t.2.push(ns);
            }
            t.0 = 0;
            t.1 = Some(now);
        }
    })
}

/// One collector's version of both workloads: `$tree` and `$node` are the types, `$new` wraps a
/// value, `$cell` makes a cell. (The types come whole, not built here from the handle and cell
/// types: some derives, dumpster's among them, fail on fields a `macro_rules!` defines.)
macro_rules! workloads {
    ($module:ident, $Gc:ident, $tree:item, $node:item, $new:path, $cell:path) => {
        mod $module {
            use super::*;
            $tree
            $node

            fn bottom_up(depth: u32) -> $Gc<Tree> {
                tick();
                if depth == 0 {
                    $new(Tree { left: None, right: None })
                } else {
                    $new(Tree { left: Some(bottom_up(depth - 1)), right: Some(bottom_up(depth - 1)) })
                }
            }

            fn check(t: &Tree) -> u32 {
                1 + t.left.as_ref().map_or(0, |l| check(l)) + t.right.as_ref().map_or(0, |r| check(r))
            }

            pub fn binary_trees(max: u32) -> u64 {
                let mut sum = check(&bottom_up(max + 1)) as u64;
                let long_lived = bottom_up(max);
                let mut depth = 4;
                while depth <= max {
                    let iterations = 1u32 << (max - depth + 4);
                    for _ in 0..iterations {
                        sum += check(&bottom_up(depth)) as u64;
                    }
                    depth += 2;
                }
                sum + check(&long_lived) as u64
            }

            pub fn graph_mutation(nodes: usize, steps: usize) -> u64 {
                // The same random program for every collector.
                let mut rng = mallard_bench::workloads::Rng::new(0x9e37_79b9_7f4a_7c15);
                let mut roots: Vec<$Gc<Node>> = Vec::with_capacity(nodes);
                for i in 0..nodes {
                    tick();
                    roots.push($new(Node { id: i as u64, edges: $cell(Vec::new()) }));
                }
                let mut sum = 0u64;
                for step in 0..steps {
                    let a = roots[rng.below(nodes)].clone();
                    let b = roots[rng.below(nodes)].clone();
                    tick();
                    let n = $new(Node { id: (nodes + step) as u64, edges: $cell(vec![a, b]) });
                    let i = rng.below(nodes);
                    roots[i] = n;
                    if step % 2 == 0 {
                        let x = roots[rng.below(nodes)].clone();
                        let to = roots[rng.below(nodes)].clone();
                        let mut edges = x.edges.borrow_mut();
                        if edges.is_empty() {
                            edges.push(to);
                        } else {
                            let k = rng.below(edges.len());
                            edges[k] = to;
                        }
                    }
                    sum = sum.wrapping_add(roots[rng.below(nodes)].id);
                }
                sum
            }
        }
    };
}

use mallard_gc::{Gc as MGc, GcCell as MGcCell};
workloads!(
    mallard_gc_impl,
    MGc,
    #[derive(mallard_gc::Trace)]
    struct Tree {
        left: Option<MGc<Tree>>,
        right: Option<MGc<Tree>>,
    },
    #[derive(mallard_gc::Trace)]
    struct Node {
        id: u64,
        edges: MGcCell<Vec<MGc<Node>>>,
    },
    MGc::new,
    MGcCell::new
);

use std::rc::Rc;
workloads!(
    rc_impl,
    Rc,
    struct Tree {
        left: Option<Rc<Tree>>,
        right: Option<Rc<Tree>>,
    },
    struct Node {
        id: u64,
        edges: RefCell<Vec<Rc<Node>>>,
    },
    Rc::new,
    RefCell::new
);

use gc::{Gc as CGc, GcCell as CGcCell};
workloads!(
    gc_crate_impl,
    CGc,
    #[derive(gc::Trace, gc::Finalize)]
    struct Tree {
        left: Option<CGc<Tree>>,
        right: Option<CGc<Tree>>,
    },
    #[derive(gc::Trace, gc::Finalize)]
    struct Node {
        id: u64,
        edges: CGcCell<Vec<CGc<Node>>>,
    },
    CGc::new,
    CGcCell::new
);

use dumpster::unsync::Gc as DGc;
workloads!(
    dumpster_impl,
    DGc,
    #[derive(dumpster::Trace)]
    struct Tree {
        left: Option<DGc<Tree>>,
        right: Option<DGc<Tree>>,
    },
    #[derive(dumpster::Trace)]
    struct Node {
        id: u64,
        edges: RefCell<Vec<DGc<Node>>>,
    },
    DGc::new,
    RefCell::new
);

/// What one child reports.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Run {
    secs: f64,
    /// Batch latency (ns per `BATCH` allocations): median, p99, max.
    batch_p50: u64,
    batch_p99: u64,
    batch_max: u64,
    /// mallard-gc's own pauses (ns), zero for the others.
    gc_pauses: u64,
    gc_p99: u64,
    gc_max: u64,
    checksum: u64,
    #[serde(default)]
    max_rss_kib: u64,
}

fn child(workload: &str, collector: &str, size: Size) -> Result<Run, String> {
    let collector = match collector {
        "mallard-gc-stop-the-world" => {
            mallard_gc::configure(mallard_gc::Config { incremental: false, ..mallard_gc::Config::default() });
            "mallard-gc"
        }
        other => other,
    };
    let start = Instant::now();
    let checksum = match (workload, collector) {
        ("binary-trees", "mallard-gc") => mallard_gc_impl::binary_trees(size.depth),
        ("binary-trees", "rc-refcell") => rc_impl::binary_trees(size.depth),
        ("binary-trees", "gc-0.5") => gc_crate_impl::binary_trees(size.depth),
        ("binary-trees", "dumpster-2") => dumpster_impl::binary_trees(size.depth),
        ("graph-mutation", "mallard-gc") => mallard_gc_impl::graph_mutation(size.nodes, size.steps),
        ("graph-mutation", "rc-refcell") => rc_impl::graph_mutation(size.nodes, size.steps),
        ("graph-mutation", "gc-0.5") => gc_crate_impl::graph_mutation(size.nodes, size.steps),
        ("graph-mutation", "dumpster-2") => dumpster_impl::graph_mutation(size.nodes, size.steps),
        _ => return Err(format!("unknown workload {workload:?} or collector {collector:?}")),
    };
    let secs = start.elapsed().as_secs_f64();
    let mut batches = TICKS.with(|t| std::mem::take(&mut t.borrow_mut().2));
    batches.sort_unstable();
    let at = |q: f64| batches.get(((batches.len() as f64 * q) as usize).min(batches.len().saturating_sub(1))).copied();
    let pauses = mallard_gc::stats().pauses;
    Ok(Run {
        secs,
        batch_p50: at(0.5).unwrap_or(0),
        batch_p99: at(0.99).unwrap_or(0),
        batch_max: batches.last().copied().unwrap_or(0),
        gc_pauses: pauses.count,
        gc_p99: pauses.p99.as_nanos() as u64,
        gc_max: pauses.max.as_nanos() as u64,
        checksum,
        max_rss_kib: 0,
    })
}

fn spawn(workload: &str, collector: &str, smoke: bool) -> Result<Run, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", workload, collector]).stdout(Stdio::piped());
    if smoke {
        cmd.arg("--smoke");
    }
    reset_peak_rss();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start a child: {e}"))?;
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("piped"), &mut out).map_err(|e| e.to_string())?;
    let (status, usage) = wait_child(child.id() as libc::pid_t).map_err(|e| e.to_string())?;
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        return Err(format!("{workload} on {collector} failed: {status}"));
    }
    let mut run: Run =
        serde_json::from_str(out.trim()).map_err(|e| format!("{workload} on {collector}: {e}: {out}"))?;
    run.max_rss_kib = usage.ru_maxrss as u64;
    Ok(run)
}

fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    mallard_bench::median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn ms(ns: f64) -> String {
    format!("{:.2}", ns / 1e6)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let size = if smoke { SMOKE } else { FULL };
    if args.first().map(String::as_str) == Some("run") {
        let (Some(w), Some(c)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: gc-bench run WORKLOAD COLLECTOR [--smoke]");
            return ExitCode::from(2);
        };
        // The `gc` crate marks recursively: on graph-mutation it overflows the default 8 MiB
        // stack. Every collector runs on a thread with a 1 GiB stack (reserved, not touched:
        // only the depth a collector really uses shows in its peak RSS).
        let (w, c) = (w.clone(), c.clone());
        let run = std::thread::Builder::new().stack_size(1 << 30).spawn(move || child(&w, &c, size));
        let result = match run.map(|t| t.join()) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the workload panicked".into()),
            Err(e) => Err(format!("cannot start the workload's thread: {e}")),
        };
        return match result {
            Ok(run) => {
                println!("{}", serde_json::to_string(&run).expect("plain data"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gc-bench: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rounds = match args.iter().position(|a| a == "--rounds").map(|i| args.get(i + 1).map(|r| r.parse::<usize>())) {
        None => 5,
        Some(Some(Ok(n))) if n > 0 => n,
        _ => {
            eprintln!("gc-bench: --rounds takes a positive number");
            return ExitCode::from(2);
        }
    };
    let rounds = if smoke { 1 } else { rounds };
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();

    // samples[workload][collector]
    let mut samples = vec![vec![Vec::new(); COLLECTORS.len()]; WORKLOADS.len()];
    let total = rounds * WORKLOADS.len() * COLLECTORS.len();
    let mut done = 0;
    for _ in 0..rounds {
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for (c, collector) in COLLECTORS.iter().enumerate() {
                match spawn(workload, collector, smoke) {
                    Ok(run) => samples[w][c].push(run),
                    Err(e) => {
                        eprintln!("gc-bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                done += 1;
                eprint!("\r[{done}/{total}] {workload} on {collector}          ");
            }
        }
    }
    eprintln!();
    // Every collector must have computed the same thing.
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let sums: Vec<u64> = samples[w].iter().map(|runs| runs[0].checksum).collect();
        if sums.iter().any(|&s| s != sums[0]) {
            eprintln!("gc-bench: {workload}: collectors disagree on the result: {sums:?}");
            return ExitCode::FAILURE;
        }
    }

    let meta = mallard_bench::report::Meta::collect();
    println!(
        "{} · {} · {} cores · {} · median of {rounds} interleaved runs\n",
        meta.date, meta.cpu, meta.cores, meta.rustc
    );
    println!("| workload | collector | time (s) | peak RSS (MiB) | batch p50 (ms) | batch p99 (ms) | batch max (ms) | mallard-gc pauses: count, p99, max (ms) |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        for (c, collector) in COLLECTORS.iter().enumerate() {
            let runs = &samples[w][c];
            let own = if collector.starts_with("mallard-gc") {
                format!(
                    "{}, {}, {}",
                    median_of(runs, |r| r.gc_pauses as f64),
                    ms(median_of(runs, |r| r.gc_p99 as f64)),
                    ms(median_of(runs, |r| r.gc_max as f64))
                )
            } else {
                "—".into()
            };
            println!(
                "| {workload} | {collector} | {:.2} | {:.1} | {} | {} | {} | {own} |",
                median_of(runs, |r| r.secs),
                median_of(runs, |r| r.max_rss_kib as f64) / 1024.0,
                ms(median_of(runs, |r| r.batch_p50 as f64)),
                ms(median_of(runs, |r| r.batch_p99 as f64)),
                ms(median_of(runs, |r| r.batch_max as f64)),
            );
        }
    }
    if let Some(path) = json {
        let out = serde_json::json!({ "rounds": rounds, "smoke": smoke, "workloads": WORKLOADS, "collectors": COLLECTORS, "samples": samples });
        if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&out).expect("plain data")) {
            eprintln!("gc-bench: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
