//! `mallard report`: the views of a [`Profile`]. Text (Markdown): what was live at the peak
//! and what was never freed, by call site, the biggest allocation sites, stack candidates
//! (the talk's escape analysis, done from the outside), sizes and lifetimes, then the full
//! stacks of the sites named. Collapsed stacks (`--folded`) for flamegraph.pl, inferno and
//! speedscope. A diff of two profiles: which sites grew.

use crate::html::human;
use crate::profile::{short_label, Profile, Site, STACK_MAX_LIFETIME_NS, STACK_MAX_SIZE};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// Frames a table row shows (the full stack is under "Stacks").
const ROW_FRAMES: usize = 3;

/// What a folded-stack export or a flame graph weighs each stack by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Bytes allocated over the whole run.
    Allocated,
    /// Bytes live at the peak.
    LiveAtPeak,
    /// Bytes never freed.
    Leaked,
}

impl Measure {
    pub const ALL: [Measure; 3] = [Measure::Allocated, Measure::LiveAtPeak, Measure::Leaked];

    pub fn name(self) -> &'static str {
        match self {
            Measure::Allocated => "allocated",
            Measure::LiveAtPeak => "peak",
            Measure::Leaked => "leaked",
        }
    }

    pub fn from_name(s: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == s)
    }

    pub fn of(self, s: &Site) -> u64 {
        match self {
            Measure::Allocated => s.allocated.bytes,
            Measure::LiveAtPeak => s.live_at_peak.bytes,
            Measure::Leaked => s.leaked.bytes,
        }
    }
}

/// The first sentence of every report: how many calls of each kind, in how many threads,
/// over how long.
pub fn what_happened(p: &Profile) -> String {
    format!(
        "{} events: {} allocations, {} frees, {} reallocs, in {} of process {}, over {}.",
        p.events,
        p.allocations,
        p.frees,
        p.reallocs,
        plural(p.threads as u64, "thread"),
        p.pid,
        seconds(p.duration_ns)
    )
}

/// The report as Markdown, its tables `top` rows long at most.
pub fn markdown(p: &Profile, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mallard report: {}\n\n{} Peak live: {} in {}, at {}; never freed: {}, {}.{}\n",
        p.title,
        what_happened(p),
        human(p.peak.bytes),
        plural(p.peak.blocks, "block"),
        seconds(p.peak_time_ns),
        plural(p.leaked.blocks, "block"),
        human(p.leaked.bytes),
        match p.unmatched_frees {
            0 => String::new(),
            1 => " (1 free of a block the trace did not see allocated, made before recording began or with its \
                  event lost, was skipped.)"
                .into(),
            n => format!(
                " ({n} frees of blocks the trace did not see allocated, made before recording began or with their \
                 events lost, were skipped.)"
            ),
        }
    );
    if !p.symbolized {
        out += "The trace has no memory map: call sites are shown as addresses.\n\n";
    }
    if !p.changed_files.is_empty() {
        let _ = writeln!(
            out,
            "Changed since the recording (rebuilt or replaced), so their frames are shown as `module+0xADDR`: {}.\n",
            p.changed_files.join(", ")
        );
    }
    if p.processes.len() > 1 {
        let _ = write!(
            out,
            "## Processes of the run\n\nThe trace's program images (before and after an exec) and the traces of the \
             processes it started (FILE.PID), by start; this report is of {} (pid {}).\n\n\
             | pid | program | file (image) | started | events | peak live | never freed |\n|--:|---|---|--:|--:|--:|--:|\n",
            p.program, p.pid
        );
        let first = p.processes.iter().filter(|r| r.start_ns > 0).map(|r| r.start_ns + r.first_ns).min().unwrap_or(0);
        // The `top` with the highest peaks, in the order they started; the rest in one row.
        let mut by_peak: Vec<&crate::profile::ProcessRow> = p.processes.iter().collect();
        by_peak.sort_by_key(|r| std::cmp::Reverse(r.peak.bytes));
        let shown: Vec<&crate::profile::ProcessRow> = by_peak.iter().take(top).copied().collect();
        for r in p.processes.iter().filter(|r| shown.iter().any(|s| std::ptr::eq(*s, *r))) {
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} | {} | {} |",
                r.pid,
                r.program,
                r.file.rsplit('/').next().unwrap_or(&r.file),
                r.image,
                // (An image without events has no time of its own.)
                if r.start_ns > 0 && r.events > 0 {
                    format!("+{}", seconds((r.start_ns + r.first_ns).saturating_sub(first)))
                } else {
                    "–".into()
                },
                r.events,
                human(r.peak.bytes),
                human(r.leaked.bytes)
            );
        }
        let rest = &by_peak[shown.len()..];
        if !rest.is_empty() {
            let _ = writeln!(
                out,
                "| | {} more | | | {} | {} at most | |",
                rest.len(),
                rest.iter().map(|r| r.events).sum::<u64>(),
                human(rest.iter().map(|r| r.peak.bytes).max().unwrap_or(0))
            );
        }
        if let Some(big) =
            p.processes.iter().max_by_key(|r| r.peak.bytes).filter(|r| !(r.file == p.title && r.image == p.image))
        {
            let _ = writeln!(
                out,
                "The highest peak is {}'s (pid {}, {}): `mallard report {} --image {}` shows it.",
                big.program,
                big.pid,
                human(big.peak.bytes),
                big.file,
                big.image
            );
        }
        out.push('\n');
    }
    let mut named = BTreeSet::new();
    let mut table =
        |out: &mut String, title: &str, rows: Vec<(usize, &Site)>, cells: &dyn Fn(&Site) -> String, head: &str| {
            let _ = write!(
                out,
                "## {title}\n\n| # | call site | {head} |\n|--:|---|{}\n",
                "--:|".repeat(head.matches('|').count() + 1)
            );
            if rows.is_empty() {
                let _ = writeln!(out, "| | (none) |{}", " |".repeat(head.matches('|').count() + 1));
            }
            for (id, s) in rows.into_iter().take(top) {
                named.insert(id);
                let _ = writeln!(out, "| {id} | {} | {} |", short_label(&s.stack, ROW_FRAMES), cells(s));
            }
            out.push('\n');
        };
    let by = |m: Measure| -> Vec<(usize, &Site)> {
        let mut v: Vec<(usize, &Site)> = p.sites.iter().enumerate().filter(|(_, s)| m.of(s) > 0).collect();
        v.sort_by_key(|(_, s)| std::cmp::Reverse(m.of(s)));
        v
    };
    let share = |b: u64, of: u64| if of == 0 { 0.0 } else { b as f64 * 100.0 / of as f64 };
    table(
        &mut out,
        &format!("Live at the peak ({} at {}), by call site", human(p.peak.bytes), seconds(p.peak_time_ns)),
        by(Measure::LiveAtPeak),
        &|s| {
            format!(
                "{} | {} | {:.1} %",
                s.live_at_peak.blocks,
                human(s.live_at_peak.bytes),
                share(s.live_at_peak.bytes, p.peak.bytes)
            )
        },
        "blocks | bytes | share",
    );
    table(
        &mut out,
        "Leaks: blocks never freed, by call site",
        by(Measure::Leaked),
        &|s| format!("{} | {}", s.leaked.blocks, human(s.leaked.bytes)),
        "blocks | bytes",
    );
    table(
        &mut out,
        "Biggest allocation sites",
        by(Measure::Allocated),
        &|s| format!("{} | {}", s.allocated.blocks, human(s.allocated.bytes)),
        "allocations | bytes",
    );
    let _ = writeln!(
        out,
        "Stack candidates: call sites whose blocks all have one size of at most {STACK_MAX_SIZE} bytes, and at least \
         90 % of them freed within {} µs by the thread that made them: they could be local variables.\n",
        STACK_MAX_LIFETIME_NS / 1000
    );
    let mut candidates: Vec<(usize, &Site)> = p.sites.iter().enumerate().filter(|(_, s)| s.stack_candidate).collect();
    candidates.sort_by_key(|(_, s)| std::cmp::Reverse(s.freed_soon));
    table(
        &mut out,
        "Stack candidates",
        candidates,
        &|s| {
            format!(
                "{} | {} | {} | {:.1} µs",
                s.size.unwrap_or(0),
                s.allocated.blocks,
                s.freed_soon,
                s.median_lifetime_ns.unwrap_or(0) as f64 / 1000.0
            )
        },
        "size | blocks | freed soon | median lifetime",
    );

    out += "## Sizes\n\n| size | allocations | bytes |\n|---|--:|--:|\n";
    for r in &p.sizes {
        let _ = writeln!(out, "| {} – {} | {} | {} |", human(r.min), human(r.max), r.allocations, human(r.bytes));
    }
    out += "\n## Lifetimes (allocation to free)\n\n| lifetime | blocks |\n|---|--:|\n";
    for r in &p.lifetimes {
        let _ = writeln!(out, "| {} | {} |", r.label, r.blocks);
    }
    let _ = writeln!(out, "| never freed | {} |", p.leaked.blocks);

    out += "\n## Stacks\n\nThe call sites above, innermost frame first.\n";
    for id in named {
        let s = &p.sites[id];
        let _ = writeln!(out, "\n**#{id}**\n");
        if s.stack.is_empty() {
            out += "    (no call site)\n";
        }
        for f in &s.stack {
            let _ = writeln!(out, "    {f}");
        }
    }
    out
}

/// The collapsed stacks of `p` weighed by `m`: one line per stack, `outer;…;inner bytes`, as
/// flamegraph.pl, inferno and speedscope read them. (`;` inside a name becomes `,`.)
pub fn folded(p: &Profile, m: Measure) -> String {
    let mut out = String::new();
    for s in p.sites.iter().filter(|s| m.of(s) > 0) {
        let stack: Vec<String> = if s.stack.is_empty() {
            vec!["(no call site)".into()]
        } else {
            s.stack.iter().rev().map(|f| f.replace(';', ",")).collect()
        };
        let _ = writeln!(out, "{} {}", stack.join(";"), m.of(s));
    }
    out
}

/// One call site in two profiles, `before` and `after`.
#[derive(Clone, Debug, Serialize)]
pub struct SiteDiff {
    pub stack: Vec<String>,
    pub before: DiffFigures,
    pub after: DiffFigures,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DiffFigures {
    pub allocated: u64,
    pub live_at_peak: u64,
    pub leaked: u64,
}

/// Two profiles compared, site by site (sites are matched by their frames' names, which do
/// not depend on where the program was loaded).
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub schema: u32,
    pub before: String,
    pub after: String,
    pub peak: (u64, u64),
    pub leaked: (u64, u64),
    pub allocated: (u64, u64),
    /// By growth of bytes live at the peak, then of bytes allocated, most first.
    pub sites: Vec<SiteDiff>,
}

pub fn diff(before: &Profile, after: &Profile) -> Diff {
    let figures = |s: &Site| DiffFigures {
        allocated: s.allocated.bytes,
        live_at_peak: s.live_at_peak.bytes,
        leaked: s.leaked.bytes,
    };
    let mut map: HashMap<&[String], (DiffFigures, DiffFigures)> = HashMap::new();
    for s in &before.sites {
        map.entry(&s.stack).or_default().0 = figures(s);
    }
    for s in &after.sites {
        map.entry(&s.stack).or_default().1 = figures(s);
    }
    let mut sites: Vec<SiteDiff> =
        map.into_iter().map(|(k, (b, a))| SiteDiff { stack: k.to_vec(), before: b, after: a }).collect();
    let growth = |d: &SiteDiff| {
        (
            d.after.live_at_peak as i128 - d.before.live_at_peak as i128,
            d.after.allocated as i128 - d.before.allocated as i128,
        )
    };
    sites.sort_by(|x, y| growth(y).cmp(&growth(x)).then_with(|| x.stack.cmp(&y.stack)));
    let total = |p: &Profile| p.sites.iter().fold(0u64, |n, s| n.saturating_add(s.allocated.bytes));
    Diff {
        schema: crate::profile::SCHEMA,
        before: before.title.clone(),
        after: after.title.clone(),
        peak: (before.peak.bytes, after.peak.bytes),
        leaked: (before.leaked.bytes, after.leaked.bytes),
        allocated: (total(before), total(after)),
        sites,
    }
}

/// The diff as Markdown: the totals, then the sites that changed most (grown first, then
/// shrunk), `top` of each.
pub fn diff_markdown(d: &Diff, top: usize) -> String {
    let mut out =
        format!("# mallard report: {} → {}\n\n| | before | after | change |\n|---|--:|--:|--:|\n", d.before, d.after);
    for (name, (b, a)) in [("peak live", d.peak), ("never freed", d.leaked), ("allocated", d.allocated)] {
        let _ = writeln!(out, "| {name} | {} | {} | {} |", human(b), human(a), signed(a as i128 - b as i128));
    }
    let row = |out: &mut String, s: &SiteDiff| {
        let _ = writeln!(
            out,
            "| {} | {} → {} | {} | {} → {} | {} → {} |",
            short_label(&s.stack, ROW_FRAMES),
            human(s.before.live_at_peak),
            human(s.after.live_at_peak),
            signed(s.after.live_at_peak as i128 - s.before.live_at_peak as i128),
            human(s.before.allocated),
            human(s.after.allocated),
            human(s.before.leaked),
            human(s.after.leaked)
        );
    };
    let head = "| call site | live at peak | change | allocated | never freed |\n|---|--:|--:|--:|--:|\n";
    let changed = |s: &&SiteDiff| {
        s.before.live_at_peak != s.after.live_at_peak
            || s.before.allocated != s.after.allocated
            || s.before.leaked != s.after.leaked
    };
    out += "\n## Grown\n\n";
    out += head;
    let grown: Vec<&SiteDiff> = d.sites.iter().filter(changed).filter(|s| !shrank(s)).take(top).collect();
    for s in &grown {
        row(&mut out, s);
    }
    if grown.is_empty() {
        out += "| (none) | | | | |\n";
    }
    out += "\n## Shrunk\n\n";
    out += head;
    let shrunk: Vec<&SiteDiff> = d.sites.iter().rev().filter(changed).filter(|s| shrank(s)).take(top).collect();
    for s in &shrunk {
        row(&mut out, s);
    }
    if shrunk.is_empty() {
        out += "| (none) | | | | |\n";
    }
    out
}

fn shrank(s: &SiteDiff) -> bool {
    (
        s.after.live_at_peak as i128 - s.before.live_at_peak as i128,
        s.after.allocated as i128 - s.before.allocated as i128,
    ) < (0, 0)
}

fn signed(d: i128) -> String {
    match d {
        0 => "0".into(),
        d if d > 0 => format!("+{}", human(d.min(u64::MAX as i128) as u64)),
        d => format!("−{}", human((-d).min(u64::MAX as i128) as u64)),
    }
}

/// `1.25 s`, `3.4 ms`, `120 µs`.
pub fn seconds(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n => format!("{:.0} µs", n as f64 / 1e3),
    }
}

/// `n thing` or `n things`.
pub fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}
