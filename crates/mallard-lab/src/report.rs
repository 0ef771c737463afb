//! `mallard report TRACE`: what a program allocated and where. Sizes, lifetimes, the biggest
//! allocation sites, **leaks** (blocks never freed, by call site) and **stack candidates**:
//! call sites whose blocks all have one small size and are freed soon after by the thread
//! that made them, so that they could live on that thread's stack instead (the talk's escape
//! analysis, done from the outside).

use crate::html::human;
use crate::symbols::Symbolizer;
use crate::trace::{Op, Trace};
use std::collections::HashMap;
use std::fmt::Write as _;

/// A stack candidate's blocks are at most this big.
pub const STACK_MAX_SIZE: u64 = 1024;
/// ... and freed within this many nanoseconds by the thread that made them.
pub const STACK_MAX_LIFETIME_NS: u64 = 100_000;

/// What is known of one call site (its first frames).
#[derive(Default, Clone)]
struct Site {
    allocs: u64,
    bytes: u64,
    leaked: u64,
    leaked_bytes: u64,
    /// Blocks freed soon by their own thread, at most `STACK_MAX_SIZE`.
    temporary: u64,
    /// The one size all its blocks had, if they had one.
    size: Option<u64>,
    mixed_sizes: bool,
    lifetimes: Vec<u64>,
}

struct Live {
    size: u64,
    time: u64,
    thread: u32,
    site: usize,
}

/// Lifetime buckets: upper bounds in ns (the last is "longer").
const LIFETIMES: [(u64, &str); 7] = [
    (1_000, "< 1 µs"),
    (10_000, "< 10 µs"),
    (100_000, "< 100 µs"),
    (1_000_000, "< 1 ms"),
    (10_000_000, "< 10 ms"),
    (100_000_000, "< 100 ms"),
    (1_000_000_000, "< 1 s"),
];

/// The running tally of a pass over the trace.
#[derive(Default)]
struct Tally {
    site_ids: HashMap<Vec<u64>, usize>,
    sites: Vec<(Vec<u64>, Site)>,
    live: HashMap<u64, Live>,
    sizes: Vec<(u64, u64)>,
    lifetimes: [u64; LIFETIMES.len() + 1],
    allocs: u64,
    frees: u64,
    reallocs: u64,
    unmatched: u64,
    live_bytes: u64,
    peak: u64,
}

impl Tally {
    fn alloc(&mut self, addr: u64, size: u64, stack: &[u64], time: u64, thread: u32, sym: &mut Symbolizer) {
        if self.live.contains_key(&addr) {
            // The trace lost this block's free.
            self.unmatched += 1;
            self.release(addr, time, thread);
        }
        self.allocs += 1;
        let key: Vec<u64> = sym.clean(stack);
        let sites = &mut self.sites;
        let id = *self.site_ids.entry(key.clone()).or_insert_with(|| {
            sites.push((key, Site::default()));
            sites.len() - 1
        });
        let s = &mut self.sites[id].1;
        s.allocs += 1;
        s.bytes = s.bytes.saturating_add(size);
        match s.size {
            None if !s.mixed_sizes => s.size = Some(size),
            Some(z) if z != size => {
                s.size = None;
                s.mixed_sizes = true;
            }
            _ => {}
        }
        let b = (64 - size.leading_zeros()) as usize;
        self.sizes[b].0 += 1;
        self.sizes[b].1 = self.sizes[b].1.saturating_add(size);
        self.live.insert(addr, Live { size, time, thread, site: id });
        self.live_bytes = self.live_bytes.saturating_add(size);
        self.peak = self.peak.max(self.live_bytes);
    }

    fn release(&mut self, addr: u64, time: u64, thread: u32) -> bool {
        let Some(b) = self.live.remove(&addr) else { return false };
        let life = time.saturating_sub(b.time);
        let k = LIFETIMES.iter().position(|&(max, _)| life < max).unwrap_or(LIFETIMES.len());
        self.lifetimes[k] += 1;
        let s = &mut self.sites[b.site].1;
        if thread == b.thread && b.size <= STACK_MAX_SIZE && life <= STACK_MAX_LIFETIME_NS {
            s.temporary += 1;
        }
        s.lifetimes.push(life);
        self.live_bytes = self.live_bytes.saturating_sub(b.size);
        true
    }
}

/// The report as Markdown, its tables `top` rows long at most.
pub fn report(title: &str, t: &Trace, top: usize) -> String {
    let mut sym = Symbolizer::new(&t.maps);
    let mut y = Tally { sizes: vec![(0, 0); 65], ..Tally::default() };
    let mut threads = std::collections::BTreeSet::new();
    for e in &t.events {
        threads.insert(e.thread);
        match e.op {
            Op::Alloc { addr, size, .. } => y.alloc(addr, size, &e.stack, e.time, e.thread, &mut sym),
            Op::Free { addr } => {
                y.frees += 1;
                if !y.release(addr, e.time, e.thread) {
                    y.unmatched += 1;
                }
            }
            Op::Realloc { addr: 0, .. } => y.reallocs += 1,
            Op::Realloc { old, addr, size } => {
                y.reallocs += 1;
                if old != 0 {
                    y.release(old, e.time, e.thread);
                }
                y.alloc(addr, size, &e.stack, e.time, e.thread, &mut sym);
                y.allocs -= 1; // (counted as a realloc)
            }
        }
    }
    for b in y.live.values() {
        let s = &mut y.sites[b.site].1;
        s.leaked += 1;
        s.leaked_bytes = s.leaked_bytes.saturating_add(b.size);
    }
    let Tally { mut sites, live, sizes, lifetimes, allocs, frees, reallocs, unmatched, peak, .. } = y;
    let never = live.len() as u64;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mallard report: {title}\n\n{} events: {allocs} allocations, {frees} frees, {reallocs} reallocs, in {} \
         threads of process {}. Peak live: {}; never freed: {} blocks, {}.{}\n",
        t.events.len(),
        threads.len(),
        t.pid,
        human(peak),
        never,
        human(live.values().fold(0u64, |n, b| n.saturating_add(b.size))),
        if unmatched > 0 {
            format!(" ({unmatched} frees of blocks allocated before recording began were skipped.)")
        } else {
            String::new()
        }
    );
    if t.maps.is_empty() {
        out += "The trace has no memory map: call sites are shown as addresses.\n\n";
    }
    let mut site_name = |frames: &[u64]| -> String {
        if frames.is_empty() {
            return "(no call site)".into();
        }
        frames.iter().map(|&f| sym.name(f)).collect::<Vec<_>>().join(" ← ")
    };

    out += "## Biggest allocation sites\n\n| call site (caller ← its callers) | allocations | bytes |\n|---|--:|--:|\n";
    let mut by_bytes: Vec<&(Vec<u64>, Site)> = sites.iter().collect();
    by_bytes.sort_by_key(|(_, s)| std::cmp::Reverse(s.bytes));
    for (frames, s) in by_bytes.iter().take(top) {
        let _ = writeln!(out, "| {} | {} | {} |", site_name(frames), s.allocs, human(s.bytes));
    }

    out += "\n## Leaks: blocks never freed, by call site\n\n| call site | blocks | bytes |\n|---|--:|--:|\n";
    let mut leaks: Vec<&(Vec<u64>, Site)> = sites.iter().filter(|(_, s)| s.leaked > 0).collect();
    leaks.sort_by_key(|(_, s)| std::cmp::Reverse((s.leaked_bytes, s.leaked)));
    for (frames, s) in leaks.iter().take(top) {
        let _ = writeln!(out, "| {} | {} | {} |", site_name(frames), s.leaked, human(s.leaked_bytes));
    }
    if leaks.is_empty() {
        out += "| (none) | | |\n";
    }

    let _ = write!(
        out,
        "\n## Stack candidates\n\nCall sites whose blocks all have one size of at most {STACK_MAX_SIZE} bytes, and at \
         least 90 % of them freed within {} µs by the thread that made them: they could be local variables.\n\n\
         | call site | size | blocks | freed soon | median lifetime |\n|---|--:|--:|--:|--:|\n",
        STACK_MAX_LIFETIME_NS / 1000
    );
    let mut candidates: Vec<&mut (Vec<u64>, Site)> = sites
        .iter_mut()
        .filter(|(_, s)| {
            s.size.is_some_and(|z| z <= STACK_MAX_SIZE) && s.temporary * 10 >= s.allocs * 9 && s.allocs > 0
        })
        .collect();
    candidates.sort_by_key(|(_, s)| std::cmp::Reverse(s.temporary));
    let n_candidates = candidates.len();
    for (frames, s) in candidates.into_iter().take(top) {
        s.lifetimes.sort_unstable();
        let median = s.lifetimes.get(s.lifetimes.len() / 2).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} µs |",
            site_name(frames),
            s.size.unwrap_or(0),
            s.allocs,
            s.temporary,
            median as f64 / 1000.0
        );
    }
    if n_candidates == 0 {
        out += "| (none) | | | | |\n";
    }

    out += "\n## Sizes\n\n| size | allocations | bytes |\n|---|--:|--:|\n";
    for (b, &(n, bytes)) in sizes.iter().enumerate().filter(|(_, s)| s.0 > 0) {
        let (lo, hi) = if b == 0 { (0, 0) } else { (1u64 << (b - 1), (1u128 << b) - 1) };
        let _ =
            writeln!(out, "| {} – {} | {n} | {} |", human(lo), human(hi.min(u64::MAX as u128) as u64), human(bytes));
    }
    out += "\n## Lifetimes (allocation to free)\n\n| lifetime | blocks |\n|---|--:|\n";
    for (k, &(_, label)) in LIFETIMES.iter().enumerate() {
        let _ = writeln!(out, "| {label} | {} |", lifetimes[k]);
    }
    let _ = writeln!(out, "| ≥ 1 s | {} |\n| never freed | {never} |", lifetimes[LIFETIMES.len()]);
    out
}
