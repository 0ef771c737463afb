//! What a trace says about a program's heap, by call site: the figures every view of `mallard
//! report` (text, HTML, JSON, folded stacks, diff) is drawn from.
//!
//! Two passes over the events. The first names each allocation's call site (its stack,
//! symbolized and cut at the first value that is no return address; sites with the same names
//! are one site), and finds the peak of live bytes, the leaks (blocks never freed), lifetimes
//! and sizes. The second replays the live set again to draw the timeline and to take the
//! picture of what was live at the peak.
//!
//! The JSON form of [`Profile`] (`mallard report --json`) is documented in `docs/lab.md`; its
//! `schema` number changes when a field changes meaning or goes away.

use crate::symbols::Symbolizer;
use crate::trace::{Op, Trace};
use serde::Serialize;
use std::collections::HashMap;

/// The JSON schema's version.
pub const SCHEMA: u32 = 1;
/// A stack candidate's blocks are at most this big.
pub const STACK_MAX_SIZE: u64 = 1024;
/// ... and freed within this many nanoseconds by the thread that made them.
pub const STACK_MAX_LIFETIME_NS: u64 = 100_000;
/// Points of the timeline (each the highest value in its stretch of time).
pub const TIMELINE_POINTS: usize = 1000;
/// Threads drawn on their own in the timeline (those with the highest peaks).
pub const TIMELINE_THREADS: usize = 8;

/// Blocks and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub blocks: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, bytes: u64) {
        self.blocks += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// One call site: a stack of named frames, and what its allocations did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Site {
    /// The frames, innermost (the call to the allocator) first; inlined calls are frames of
    /// their own. Empty: the trace kept no call site.
    pub stack: Vec<String>,
    /// Allocations (reallocs included) and their bytes.
    pub allocated: Totals,
    /// Its blocks live at the moment of the peak.
    pub live_at_peak: Totals,
    /// Its blocks never freed.
    pub leaked: Totals,
    /// Blocks of at most `STACK_MAX_SIZE` bytes freed within `STACK_MAX_LIFETIME_NS` by the
    /// thread that made them.
    pub freed_soon: u64,
    /// The one size all its blocks had, if they had one.
    pub size: Option<u64>,
    /// The median time from allocation to free of its freed blocks.
    pub median_lifetime_ns: Option<u64>,
    /// One size of at most `STACK_MAX_SIZE`, and at least 90 % of its blocks freed soon by
    /// their own thread: they could be local variables (the talk's escape analysis).
    pub stack_candidate: bool,
    #[serde(skip)]
    mixed_sizes: bool,
    #[serde(skip)]
    lifetimes: Vec<u64>,
}

/// Live bytes over time: `TIMELINE_POINTS` stretches of equal length from the start of
/// recording to the last event, each with the highest value in it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    /// The end of each stretch, in nanoseconds since the trace began.
    pub time_ns: Vec<u64>,
    /// All threads' live bytes.
    pub live: Vec<u64>,
    /// The live bytes each of the threads with the highest peaks allocated.
    pub threads: Vec<ThreadLine>,
    /// The process's resident set where the recorder noted it (every 10 ms of allocating):
    /// (ns since the trace began, bytes), at most one point a stretch (its highest).
    pub rss: Vec<(u64, u64)>,
}

/// One process (one program image) of a run, in brief: for the table and the chart of the
/// processes a run started (FILE and its FILE.PID siblings read together).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessRow {
    /// The trace file, and which image of it (0 for the first program the process ran).
    pub file: String,
    pub image: usize,
    pub pid: u32,
    /// The program: the file name of the first mapping of its memory map.
    pub program: String,
    /// When it began recording, on the monotonic clock (ns; 0 if the trace does not say). A
    /// child made by fork counts from its parent's start: its first event is when it began.
    pub start_ns: u64,
    /// Its first event and its last (ns since `start_ns`).
    pub first_ns: u64,
    pub duration_ns: u64,
    pub events: u64,
    pub peak: Totals,
    pub leaked: Totals,
    /// Live bytes over its time: (ns since it began recording, bytes), at most
    /// `TIMELINE_POINTS` points (each the highest of its stretch).
    pub live: Vec<(u64, u64)>,
}

/// The brief of trace `t` (image `image` of `file`): live bytes only, no call sites.
pub fn process_row(file: &str, image: usize, t: &Trace) -> ProcessRow {
    let mut heap = Heap::default();
    let mut row = ProcessRow {
        file: file.to_owned(),
        image,
        pid: t.pid,
        program: program_of(&t.maps),
        start_ns: t.start_ns,
        first_ns: t.events.first().map_or(0, |e| e.time),
        duration_ns: t.events.last().map_or(0, |e| e.time),
        events: t.events.len() as u64,
        ..ProcessRow::default()
    };
    let span = row.duration_ns.max(1) as u128;
    let mut points: Vec<Option<(u64, u64)>> = vec![None; TIMELINE_POINTS];
    for e in &t.events {
        match e.op {
            Op::Alloc { addr: 0, .. } => {}
            Op::Alloc { addr, size, .. } => {
                heap.insert(addr, Live { size, time: 0, thread: 0, site: 0 });
            }
            Op::Free { addr } => {
                heap.remove(addr);
            }
            Op::Realloc { addr: 0, .. } => {}
            Op::Realloc { old, addr, size } => {
                heap.remove(old);
                heap.insert(addr, Live { size, time: 0, thread: 0, site: 0 });
            }
        }
        if (heap.bytes, heap.live.len() as u64) > (row.peak.bytes, row.peak.blocks) {
            row.peak = Totals { blocks: heap.live.len() as u64, bytes: heap.bytes };
        }
        let k = ((e.time as u128 * TIMELINE_POINTS as u128 / (span + 1)) as usize).min(TIMELINE_POINTS - 1);
        let p = &mut points[k];
        *p =
            Some(p.map_or((e.time, heap.bytes), |(t0, b)| if heap.bytes > b { (e.time, heap.bytes) } else { (t0, b) }));
    }
    row.leaked = Totals { blocks: heap.live.len() as u64, bytes: heap.bytes };
    row.live = points.into_iter().flatten().collect();
    row
}

/// The program of a memory map: the file name of its first mapping of a file.
pub fn program_of(maps: &str) -> String {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.starts_with('/'))
        .map_or_else(|| "?".to_owned(), |p| p.rsplit('/').next().unwrap_or(p).to_owned())
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ThreadLine {
    pub thread: u32,
    pub peak: u64,
    pub live: Vec<u64>,
}

/// Allocations by size: `[min, max]` bytes.
#[derive(Clone, Debug, Serialize)]
pub struct SizeRow {
    pub min: u64,
    pub max: u64,
    pub allocations: u64,
    pub bytes: u64,
}

/// Freed blocks by lifetime: under `max_ns` (none: the rest).
#[derive(Clone, Debug, Serialize)]
pub struct LifetimeRow {
    pub label: &'static str,
    pub max_ns: Option<u64>,
    pub blocks: u64,
}

/// Everything `mallard report` shows about one trace (one program image of one process).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    pub schema: u32,
    /// The trace file's name, and which of its program images this is (0 for the first; a
    /// process that `exec`s writes one image per program).
    pub title: String,
    pub image: usize,
    pub pid: u32,
    pub events: u64,
    pub allocations: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Frees of blocks the trace never saw allocated (made before recording began).
    pub unmatched_frees: u64,
    pub threads: u32,
    /// From the start of recording to the last event.
    pub duration_ns: u64,
    /// The most bytes live at once, and when.
    pub peak: Totals,
    pub peak_time_ns: u64,
    pub leaked: Totals,
    /// Whether the trace had a memory map to name call sites with.
    pub symbolized: bool,
    /// Files of the memory map modified after the trace was written: their frames are shown as
    /// `module+0xADDR`.
    pub changed_files: Vec<String>,
    /// The program (the first file of its memory map).
    pub program: String,
    /// When recording began, on the monotonic clock (ns; 0 if the trace does not say).
    pub start_ns: u64,
    /// The processes of the run (this trace's images and its FILE.PID siblings), when they were
    /// read together (`mallard report` does): empty otherwise.
    pub processes: Vec<ProcessRow>,
    /// By bytes allocated, most first.
    pub sites: Vec<Site>,
    pub timeline: Timeline,
    pub sizes: Vec<SizeRow>,
    pub lifetimes: Vec<LifetimeRow>,
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

/// A live block: its size, when and by which thread it was made, and its site.
#[derive(Clone, Copy)]
struct Live {
    size: u64,
    time: u64,
    thread: u32,
    site: u32,
}

/// One pass's live set and counts.
#[derive(Default)]
struct Heap {
    live: HashMap<u64, Live>,
    bytes: u64,
}

impl Heap {
    fn insert(&mut self, addr: u64, b: Live) -> Option<Live> {
        let old = self.live.insert(addr, b);
        self.bytes = self.bytes.saturating_add(b.size);
        if let Some(o) = old {
            self.bytes = self.bytes.saturating_sub(o.size);
        }
        old
    }

    fn remove(&mut self, addr: u64) -> Option<Live> {
        let b = self.live.remove(&addr)?;
        self.bytes = self.bytes.saturating_sub(b.size);
        Some(b)
    }
}

/// The profile of trace `t`, called `title`.
pub fn profile(title: &str, t: &Trace) -> Profile {
    profile_recorded(title, t, None)
}

/// The profile of trace `t`, written at `recorded` (the file's time): files of its memory map
/// changed since are not used to name call sites (`Profile::changed_files`).
pub fn profile_recorded<'t>(title: &str, t: &'t Trace, recorded: Option<std::time::SystemTime>) -> Profile {
    let mut sym = Symbolizer::new(&t.maps).recorded_at(recorded);
    let mut p = Profile {
        schema: SCHEMA,
        title: title.to_owned(),
        pid: t.pid,
        symbolized: sym.has_maps(),
        program: program_of(&t.maps),
        start_ns: t.start_ns,
        ..Profile::default()
    };
    p.events = t.events.len() as u64;
    p.duration_ns = t.events.last().map_or(0, |e| e.time);

    // Pass 1: sites, peak, leaks, lifetimes, sizes.
    let mut by_stack: HashMap<&'t [u64], u32> = HashMap::new();
    let mut by_names: HashMap<Vec<String>, u32> = HashMap::new();
    let mut sites: Vec<Site> = Vec::new();
    let mut site_of = |stack: &'t [u64], sites: &mut Vec<Site>| -> u32 {
        if let Some(&id) = by_stack.get(stack) {
            return id;
        }
        let names: Vec<String> = sym.clean(stack).into_iter().flat_map(|r| sym.labels(r)).collect();
        let id = *by_names.entry(names.clone()).or_insert_with(|| {
            sites.push(Site { stack: names, ..Site::default() });
            (sites.len() - 1) as u32
        });
        by_stack.insert(stack, id);
        id
    };
    let mut heap = Heap::default();
    let mut peak_index = None;
    let mut thread_peaks: HashMap<u32, (u64, u64)> = HashMap::new(); // thread -> (live, peak)
    let mut sizes = [(0u64, 0u64); 65];
    let mut lifetimes = [0u64; LIFETIMES.len() + 1];
    let mut release = |heap: &mut Heap,
                       addr: u64,
                       time: u64,
                       thread: u32,
                       sites: &mut Vec<Site>,
                       tp: &mut HashMap<u32, (u64, u64)>|
     -> bool {
        let Some(b) = heap.remove(addr) else { return false };
        let life = time.saturating_sub(b.time);
        lifetimes[LIFETIMES.iter().position(|&(max, _)| life < max).unwrap_or(LIFETIMES.len())] += 1;
        let s = &mut sites[b.site as usize];
        if thread == b.thread && b.size <= STACK_MAX_SIZE && life <= STACK_MAX_LIFETIME_NS {
            s.freed_soon += 1;
        }
        s.lifetimes.push(life);
        if let Some(e) = tp.get_mut(&b.thread) {
            e.0 = e.0.saturating_sub(b.size);
        }
        true
    };
    let mut site_ids = vec![u32::MAX; t.events.len()];
    for (i, e) in t.events.iter().enumerate() {
        let made = match e.op {
            Op::Alloc { addr, size, .. } => {
                p.allocations += 1;
                Some((addr, size))
            }
            Op::Free { addr } => {
                p.frees += 1;
                if !release(&mut heap, addr, e.time, e.thread, &mut sites, &mut thread_peaks) {
                    p.unmatched_frees += 1;
                }
                None
            }
            Op::Realloc { addr: 0, .. } => {
                p.reallocs += 1;
                None
            }
            Op::Realloc { old, addr, size } => {
                p.reallocs += 1;
                if old != 0 {
                    release(&mut heap, old, e.time, e.thread, &mut sites, &mut thread_peaks);
                }
                Some((addr, size))
            }
        };
        // (A null result is no block: the recorder writes none, a hand-made trace might.)
        let Some((addr, size)) = made.filter(|&(addr, _)| addr != 0) else { continue };
        if heap.live.contains_key(&addr) {
            // The trace lost this block's free.
            p.unmatched_frees += 1;
            release(&mut heap, addr, e.time, e.thread, &mut sites, &mut thread_peaks);
        }
        let id = site_of(&e.stack, &mut sites);
        site_ids[i] = id;
        let s = &mut sites[id as usize];
        s.allocated.add(size);
        match s.size {
            None if !s.mixed_sizes => s.size = Some(size),
            Some(z) if z != size => {
                s.size = None;
                s.mixed_sizes = true;
            }
            _ => {}
        }
        let b = (64 - size.leading_zeros()) as usize;
        sizes[b].0 += 1;
        sizes[b].1 = sizes[b].1.saturating_add(size);
        heap.insert(addr, Live { size, time: e.time, thread: e.thread, site: id });
        let tp = thread_peaks.entry(e.thread).or_default();
        tp.0 = tp.0.saturating_add(size);
        tp.1 = tp.1.max(tp.0);
        // (Blocks count too: a peak of zero-size blocks is still a peak.)
        if (heap.bytes, heap.live.len() as u64) > (p.peak.bytes, p.peak.blocks) {
            p.peak = Totals { blocks: heap.live.len() as u64, bytes: heap.bytes };
            p.peak_time_ns = e.time;
            peak_index = Some(i);
        }
    }
    for b in heap.live.values() {
        sites[b.site as usize].leaked.add(b.size);
        p.leaked.add(b.size);
    }
    let mut threads: Vec<u32> = t.events.iter().map(|e| e.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    p.threads = threads.len() as u32;

    // Pass 2: the timeline, and the live set at the peak.
    let mut top: Vec<(u32, u64)> = thread_peaks.iter().map(|(&t, &(_, peak))| (t, peak)).collect();
    top.sort_by_key(|&(t, peak)| (std::cmp::Reverse(peak), t));
    top.truncate(if top.len() > 1 { TIMELINE_THREADS } else { 0 });
    let n = if t.events.is_empty() { 0 } else { TIMELINE_POINTS };
    let span = p.duration_ns.max(1);
    let point = |time: u64| ((time as u128 * n as u128 / (span as u128 + 1)) as usize).min(n.saturating_sub(1));
    p.timeline.time_ns = (1..=n).map(|k| (span as u128 * k as u128 / n as u128) as u64).collect();
    let mut live = vec![None; n];
    let mut lines: Vec<Vec<Option<u64>>> = vec![vec![None; n]; top.len()];
    let mut thread_live = vec![0u64; top.len()];
    let line_of: HashMap<u32, usize> = top.iter().enumerate().map(|(k, &(t, _))| (t, k)).collect();
    let mut heap = Heap::default();
    for (i, e) in t.events.iter().enumerate() {
        let mut gone = |heap: &mut Heap, addr: u64| {
            if let Some(b) = heap.remove(addr) {
                if let Some(&k) = line_of.get(&b.thread) {
                    thread_live[k] = thread_live[k].saturating_sub(b.size);
                    let at = &mut lines[k][point(e.time)];
                    *at = Some(at.unwrap_or(0).max(thread_live[k]));
                }
            }
        };
        match e.op {
            Op::Free { addr } => gone(&mut heap, addr),
            Op::Realloc { old, addr, .. } if addr != 0 && old != 0 => gone(&mut heap, old),
            _ => {}
        }
        if let Op::Alloc { addr, size, .. } | Op::Realloc { addr, size, .. } = e.op {
            if addr != 0 {
                gone(&mut heap, addr);
                heap.insert(addr, Live { size, time: e.time, thread: e.thread, site: site_ids[i] });
                if let Some(&k) = line_of.get(&e.thread) {
                    thread_live[k] = thread_live[k].saturating_add(size);
                    let at = &mut lines[k][point(e.time)];
                    *at = Some(at.unwrap_or(0).max(thread_live[k]));
                }
            }
        }
        let at = &mut live[point(e.time)];
        *at = Some(at.unwrap_or(0).max(heap.bytes));
        if Some(i) == peak_index {
            for b in heap.live.values() {
                sites[b.site as usize].live_at_peak.add(b.size);
            }
        }
    }
    // A stretch without events holds the value the one before it ended with.
    let fill = |v: Vec<Option<u64>>| {
        let mut last = 0;
        v.into_iter().map(|x| *last_set(&mut last, x)).collect::<Vec<u64>>()
    };
    p.timeline.live = fill(live);
    // The resident set: the highest sample of each stretch.
    let mut rss: Vec<Option<(u64, u64)>> = vec![None; n];
    for &(time, bytes) in &t.rss {
        if n > 0 {
            let at = &mut rss[point(time.min(span))];
            *at = Some(at.map_or((time, bytes), |(t0, b)| if bytes > b { (time, bytes) } else { (t0, b) }));
        }
    }
    p.timeline.rss = rss.into_iter().flatten().collect();
    p.timeline.threads =
        top.iter().zip(lines).map(|(&(thread, peak), line)| ThreadLine { thread, peak, live: fill(line) }).collect();

    for s in &mut sites {
        s.lifetimes.sort_unstable();
        s.median_lifetime_ns = s.lifetimes.get(s.lifetimes.len() / 2).copied();
        s.stack_candidate = s.size.is_some_and(|z| z <= STACK_MAX_SIZE)
            && s.allocated.blocks > 0
            && s.freed_soon * 10 >= s.allocated.blocks * 9;
    }
    p.changed_files = std::mem::take(&mut sym.stale);
    sites.sort_by(|a, b| b.allocated.bytes.cmp(&a.allocated.bytes).then_with(|| a.stack.cmp(&b.stack)));
    p.sites = sites;
    p.sizes = sizes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(b, &(allocations, bytes))| {
            let (min, max) =
                if b == 0 { (0, 0) } else { (1u64 << (b - 1), ((1u128 << b) - 1).min(u64::MAX as u128) as u64) };
            SizeRow { min, max, allocations, bytes }
        })
        .collect();
    p.lifetimes = LIFETIMES
        .iter()
        .enumerate()
        .map(|(k, &(max, label))| LifetimeRow { label, max_ns: Some(max), blocks: lifetimes[k] })
        .chain(std::iter::once(LifetimeRow { label: "≥ 1 s", max_ns: None, blocks: lifetimes[LIFETIMES.len()] }))
        .collect();
    p
}

fn last_set(last: &mut u64, x: Option<u64>) -> &u64 {
    if let Some(v) = x {
        *last = v;
    }
    last
}

/// Frames of the allocator's own plumbing (Rust's global allocator and `RawVec`, C++'s
/// `operator new`), which a short label skips to reach the program's code.
pub fn is_plumbing(frame: &str) -> bool {
    const PREFIXES: [&str; 22] = [
        "<std::alloc::System as ",
        "__rustc::",
        "__rdl_",
        "__rust_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
        "alloc::raw_vec::",
        "<alloc::raw_vec::",
        "alloc::boxed::box_new",
        "operator new",
        "std::alloc::",
        "<mallard::Mallard as ",
        "alloc::vec::",
        "<alloc::vec::",
        "alloc::string::",
        "<alloc::string::",
        "<alloc::boxed::",
        "std::__new_allocator",
        "__gnu_cxx::new_allocator",
        "std::allocator",
        "std::_Vector_base",
        "std::__allocated_ptr",
    ];
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

/// A short label for a site in a table: its first `n` frames after the plumbing.
pub fn short_label(stack: &[String], n: usize) -> String {
    if stack.is_empty() {
        return "(no call site)".into();
    }
    let skip = stack.iter().take_while(|f| is_plumbing(f)).count().min(stack.len() - 1);
    stack[skip..].iter().take(n).cloned().collect::<Vec<_>>().join(" ← ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Event;

    fn ev(time: u64, thread: u32, op: Op, stack: &[u64]) -> Event {
        Event { time, thread, op, stack: stack.to_vec() }
    }

    #[test]
    fn the_peak_leaks_and_timeline_follow_the_events() {
        let (x, y) = (&[0x1000u64, 0x2000][..], &[0x3000u64][..]);
        let t = Trace {
            pid: 1,
            events: vec![
                ev(10, 0, Op::Alloc { addr: 0xa0, size: 100, align: 16 }, x),
                ev(20, 1, Op::Alloc { addr: 0xb0, size: 200, align: 16 }, y),
                ev(30, 0, Op::Free { addr: 0xa0 }, &[]),
                ev(40, 0, Op::Alloc { addr: 0xc0, size: 50, align: 16 }, x),
                ev(50, 1, Op::Realloc { old: 0xc0, addr: 0xd0, size: 70 }, y),
                ev(60, 0, Op::Free { addr: 0xeeee }, &[]),
            ],
            ..Trace::default()
        };
        let p = profile("t", &t);
        assert_eq!((p.allocations, p.frees, p.reallocs, p.unmatched_frees, p.threads), (3, 2, 1, 1, 2));
        assert_eq!((p.peak, p.peak_time_ns), (Totals { blocks: 2, bytes: 300 }, 20));
        assert_eq!(p.leaked, Totals { blocks: 2, bytes: 270 });
        let site = |stack: &[&str]| p.sites.iter().find(|s| s.stack == stack).unwrap_or_else(|| panic!("{stack:?}"));
        let (sx, sy) = (site(&["0x1000", "0x2000"]), site(&["0x3000"]));
        assert_eq!(
            (sx.allocated, sx.live_at_peak, sx.leaked),
            (Totals { blocks: 2, bytes: 150 }, Totals { blocks: 1, bytes: 100 }, Totals::default())
        );
        assert_eq!(
            (sy.allocated, sy.live_at_peak, sy.leaked),
            (Totals { blocks: 2, bytes: 270 }, Totals { blocks: 1, bytes: 200 }, Totals { blocks: 2, bytes: 270 })
        );
        // The timeline's highest point is the peak; it ends with what is left; thread 1's line
        // holds its 200 bytes and then its realloc's 70.
        assert_eq!(p.timeline.live.iter().max(), Some(&300));
        assert_eq!(p.timeline.live.last(), Some(&270));
        assert_eq!(p.timeline.live.len(), TIMELINE_POINTS);
        let t1 = p.timeline.threads.iter().find(|l| l.thread == 1).unwrap();
        assert_eq!((t1.peak, t1.live.last()), (270, Some(&270)));
        assert_eq!(short_label(&["__rdl_alloc".into(), "a".into(), "b".into()], 1), "a");
        // Resident-set samples (a stretch here is shorter than a nanosecond: all kept).
        let t = Trace { rss: vec![(15, 100), (16, 900), (55, 400)], ..t };
        let p = profile("t", &t);
        assert_eq!(p.timeline.rss, vec![(15, 100), (16, 900), (55, 400)]);
    }
}
