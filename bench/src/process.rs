//! One process per run: every workload runs in a child process under every allocator,
//! interleaved round by round. A C allocator is chosen with `LD_PRELOAD`; a Rust crate
//! allocator is a sibling of `mallard-workload` built with it as `#[global_allocator]`. Each
//! run yields its wall time and its peak RSS (`ru_maxrss` from `wait4`), so no allocator
//! inherits another's heap, and the memory figure is the whole process's.

use crate::programs::Program;
use crate::report::{geomean, Meta};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// An allocator under test.
#[derive(Debug, Clone, Serialize)]
pub struct Allocator {
    pub name: String,
    /// The library to preload; none for glibc's own malloc and for crates.
    pub preload: Option<PathBuf>,
    /// For a Rust crate: the workload binary built with it as `#[global_allocator]`. Such an
    /// allocator runs the Rust workloads only, not the real programs.
    pub exe: Option<PathBuf>,
    /// Environment variables set for its runs (an option of the library, such as
    /// `MALLARD_HARDEN=full`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

impl Allocator {
    pub fn c(name: &str, preload: Option<PathBuf>) -> Allocator {
        Allocator { name: name.into(), preload, exe: None, env: Vec::new() }
    }
}

/// glibc, mallard (`mallard_lib`), and Debian's jemalloc, mimalloc and tcmalloc where
/// installed (`apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4`).
pub fn detect(mallard_lib: &Path) -> Vec<Allocator> {
    let mut v = vec![Allocator::c("glibc", None), Allocator::c("mallard", Some(mallard_lib.to_path_buf()))];
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"];
    for (name, file) in
        [("jemalloc", "libjemalloc.so.2"), ("mimalloc", "libmimalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4")]
    {
        if let Some(p) = dirs.iter().map(|d| Path::new(d).join(file)).find(|p| p.exists()) {
            v.push(Allocator::c(name, Some(p)));
        }
    }
    v
}

/// The crate allocators: `mallard-workload-{mallard,mimalloc,jemalloc}` next to `workload_exe`,
/// those that exist.
pub fn crates(workload_exe: &Path) -> Vec<Allocator> {
    ["mallard", "mimalloc", "jemalloc"]
        .iter()
        .filter_map(|c| {
            let exe = workload_exe.with_file_name(format!("mallard-workload-{c}"));
            exe.exists().then(|| Allocator {
                name: format!("{c}-crate"),
                preload: None,
                exe: Some(exe),
                env: Vec::new(),
            })
        })
        .collect()
}

/// What runs: a workload of `mallard-workload`, or a real program.
#[derive(Debug, Clone)]
pub enum Job {
    Workload(String),
    Program(Program),
}

impl Job {
    pub fn name(&self) -> &str {
        match self {
            Job::Workload(n) => n,
            Job::Program(p) => &p.name,
        }
    }

    /// Whether `alloc` can run this job: crate allocators run only `mallard-workload`'s.
    pub fn runs_on(&self, alloc: &Allocator) -> bool {
        matches!(self, Job::Workload(_)) || alloc.exe.is_none()
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub ms: f64,
    pub peak_rss_kib: i64,
}

/// Runs `job` once in a child process under `alloc`. A workload's time is what the child
/// measured around it; a program's is the parent's clock from spawn to reaping.
pub fn run_one(exe: &Path, job: &Job, smoke: bool, alloc: &Allocator) -> Result<Sample, String> {
    let mut cmd = match job {
        Job::Workload(w) => {
            let mut c = Command::new(alloc.exe.as_deref().unwrap_or(exe));
            c.arg(w);
            if smoke {
                c.arg("--smoke");
            }
            c.stdout(Stdio::piped());
            c
        }
        Job::Program(p) => {
            let mut c = Command::new(&p.argv[0]);
            c.args(&p.argv[1..]).envs(p.env.iter().map(|(k, v)| (k, v))).stdout(Stdio::null());
            c
        }
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::piped()).env_remove("LD_PRELOAD");
    if let Some(lib) = &alloc.preload {
        cmd.env("LD_PRELOAD", lib);
    }
    cmd.envs(alloc.env.iter().map(|(k, v)| (k, v)));
    let name = job.name();
    reset_peak_rss();
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{name}: cannot run {:?}: {e}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    // Read the output before waiting (the pipes are small), then reap with wait4 for rusage.
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    std::mem::forget(child); // reaped below by wait_child, not by Child
    let (status, usage) = wait_child(pid).map_err(|e| format!("waiting for {name}: {e}"))?;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{name} on {} failed (status {status:#x}): {}", alloc.name, stderr.trim()));
    }
    let ms = match job {
        Job::Workload(_) => {
            stdout.trim().parse::<f64>().map_err(|_| format!("{name} on {}: no time in {stdout:?}", alloc.name))?
        }
        Job::Program(..) => wall_ms,
    };
    Ok(Sample { ms, peak_rss_kib: usage.ru_maxrss })
}

/// Lowers this process's recorded peak RSS to its current RSS. A child's `ru_maxrss` starts
/// from the spawning process's peak: `posix_spawn` runs the child on the parent's memory map
/// until `exec`, and the kernel keeps that map's high-water mark as the child's. Without this,
/// every child of a runner that once used 13 MiB reports at least 13 MiB. Best effort (Linux
/// 4.0 and later); the figure stays as it was where `/proc` refuses.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Reaps child `pid` (retrying on EINTR): its wait status and resource usage (`ru_maxrss` is
/// the peak RSS of it and its reaped descendants).
pub fn wait_child(pid: libc::pid_t) -> std::io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid out-pointers; pid is the caller's child.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Where a run is, for a progress bar.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    /// The run just finished, in words.
    pub line: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub meta: Meta,
    pub rounds: usize,
    pub smoke: bool,
    pub allocators: Vec<Allocator>,
    pub workloads: Vec<String>,
    /// `samples[workload][allocator]`: one per round; empty where the allocator cannot run the
    /// workload (a crate allocator and a real program).
    pub samples: Vec<Vec<Vec<Sample>>>,
}

/// Runs every job under every allocator that can run it, `rounds` times, interleaved (all
/// allocators on one job, then the next job, then the next round).
pub fn run(
    exe: &Path,
    jobs: &[Job],
    allocators: &[Allocator],
    rounds: usize,
    smoke: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<ProcessReport, String> {
    let rounds = if smoke { 1 } else { rounds.max(1) };
    let mut samples = vec![vec![Vec::with_capacity(rounds); allocators.len()]; jobs.len()];
    let cells = jobs.iter().map(|j| allocators.iter().filter(|a| j.runs_on(a)).count()).sum::<usize>();
    let total = rounds * cells;
    let mut done = 0;
    for round in 1..=rounds {
        for (w, job) in jobs.iter().enumerate() {
            for (a, alloc) in allocators.iter().enumerate().filter(|(_, a)| job.runs_on(a)) {
                let s = run_one(exe, job, smoke, alloc)?;
                done += 1;
                let line = format!(
                    "round {round}/{rounds} {:<16} {:<15} {:>9.1} ms {:>8.1} MiB",
                    job.name(),
                    alloc.name,
                    s.ms,
                    s.peak_rss_kib as f64 / 1024.0
                );
                progress(Progress { done, total, line: &line });
                samples[w][a].push(s);
            }
        }
    }
    Ok(ProcessReport {
        meta: Meta::collect(),
        rounds,
        smoke,
        allocators: allocators.to_vec(),
        workloads: jobs.iter().map(|j| j.name().to_string()).collect(),
        samples,
    })
}

/// Which figure of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Time,
    PeakRss,
}

impl Figure {
    fn title(self) -> &'static str {
        match self {
            Figure::Time => "wall time, ms (median)",
            Figure::PeakRss => "peak RSS, MiB (median)",
        }
    }
}

impl ProcessReport {
    /// The median of `figure` for (workload `w`, allocator `a`); None where it did not run.
    pub fn median(&self, w: usize, a: usize, figure: Figure) -> Option<f64> {
        let s = &self.samples[w][a];
        if s.is_empty() {
            return None;
        }
        let v: Vec<f64> = s
            .iter()
            .map(|x| match figure {
                Figure::Time => x.ms,
                Figure::PeakRss => x.peak_rss_kib as f64 / 1024.0,
            })
            .collect();
        Some(crate::median(&v))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.allocators.iter().position(|a| a.name == name)
    }

    /// The geomean over workloads of `a`'s median divided by `b`'s, over the workloads both
    /// ran, and how many those were.
    pub fn geomean_ratio(&self, a: usize, b: usize, figure: Figure) -> (f64, usize) {
        let ratios: Vec<f64> = (0..self.workloads.len())
            .filter_map(|w| Some(self.median(w, a, figure)? / self.median(w, b, figure)?))
            .collect();
        (geomean(ratios.iter().copied()), ratios.len())
    }

    /// Two Markdown tables (time, peak RSS), medians, with each allocator's ratio to the first
    /// allocator (glibc) and a geomean row, then issue 6's targets for mallard.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let mode = if self.smoke { "smoke mode, not a measurement" } else { "medians" };
        let _ = writeln!(
            o,
            "mallard bench --process — {} — {} ({} cores) — {} round(s), one process per run, interleaved ({mode})\n",
            self.meta.date, self.meta.cpu, self.meta.cores, self.rounds
        );
        let names: Vec<&str> = self.allocators.iter().map(|a| a.name.as_str()).collect();
        let base = names.first().copied().unwrap_or("glibc");
        for figure in [Figure::Time, Figure::PeakRss] {
            let _ = writeln!(o, "{}, ratio to {base} in brackets, best in bold\n", figure.title());
            let _ = writeln!(o, "| workload | {} |", names.join(" | "));
            let _ = writeln!(o, "|---|{}", "--:|".repeat(names.len()));
            for (w, workload) in self.workloads.iter().enumerate() {
                let vals: Vec<Option<f64>> = (0..names.len()).map(|a| self.median(w, a, figure)).collect();
                let best = vals.iter().flatten().copied().fold(f64::INFINITY, f64::min);
                let cells: Vec<String> = vals
                    .iter()
                    .map(|v| match (v, vals[0]) {
                        (None, _) => "–".to_string(),
                        (Some(v), base) => {
                            let ratio = base.map_or(String::new(), |b| format!(" ({:.2})", v / b));
                            let s = format!("{v:.1}{ratio}");
                            if *v == best {
                                format!("**{s}**")
                            } else {
                                s
                            }
                        }
                    })
                    .collect();
                let _ = writeln!(o, "| {workload} | {} |", cells.join(" | "));
            }
            let geo: Vec<String> = (0..names.len())
                .map(|a| {
                    let (g, n) = self.geomean_ratio(a, 0, figure);
                    if n == self.workloads.len() {
                        format!("{g:.2}")
                    } else {
                        format!("{g:.2} ({n} rows)")
                    }
                })
                .collect();
            let _ = writeln!(o, "| **geomean ratio to {base}** | {} |\n", geo.join(" | "));
        }
        o += &self.targets();
        o
    }

    /// Issue 6's targets for mallard: geomean time ≤ 0.95 × mimalloc, geomean peak RSS ≤
    /// mimalloc's, no workload slower than glibc or more than 1.5 × the best allocator.
    fn targets(&self) -> String {
        let (Some(m), Some(g)) = (self.index("mallard"), self.index("glibc")) else {
            return String::new();
        };
        let mut o = String::from("mallard against the targets\n\n");
        if let Some(mi) = self.index("mimalloc") {
            let (t, _) = self.geomean_ratio(m, mi, Figure::Time);
            let (r, _) = self.geomean_ratio(m, mi, Figure::PeakRss);
            let mark = |ok: bool| if ok { "met" } else { "missed" };
            let _ = writeln!(o, "- geomean time ÷ mimalloc: {t:.2} (target ≤ 0.95: {})", mark(t <= 0.95));
            let _ = writeln!(o, "- geomean peak RSS ÷ mimalloc: {r:.2} (target ≤ 1.00: {})", mark(r <= 1.0));
        }
        let mut slower = Vec::new();
        for (w, name) in self.workloads.iter().enumerate() {
            let (Some(mt), Some(gt)) = (self.median(w, m, Figure::Time), self.median(w, g, Figure::Time)) else {
                continue;
            };
            let (best, who) = (0..self.allocators.len())
                .filter_map(|a| Some((self.median(w, a, Figure::Time)?, a)))
                .fold((f64::INFINITY, 0), |x, y| if y.0 < x.0 { y } else { x });
            if mt > gt {
                slower.push(format!("{name}: {:.2} × glibc", mt / gt));
            }
            if mt > 1.5 * best {
                slower.push(format!("{name}: {:.2} × {} (the best)", mt / best, self.allocators[who].name));
            }
        }
        if slower.is_empty() {
            o += "- no workload slower than glibc or more than 1.5 × the best: met\n";
        } else {
            let _ = writeln!(o, "- slower than glibc or more than 1.5 × the best: {}", slower.join("; "));
        }
        o
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A chart of time and peak RSS relative to the first allocator (glibc): one group of
    /// bars per workload, one bar per allocator, on a log scale from 1/8 to 4 (ratios outside
    /// are drawn at the edge and labelled). One self-contained SVG document.
    pub fn to_svg(&self) -> String {
        const COLORS: [&str; 8] =
            ["#888888", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
        let (bar, gap, label_w, panel_w, top) = (7.0, 8.0, 120.0, 340.0, 56.0);
        let panel_gap = 60.0;
        let n_alloc = self.allocators.len();
        let group_h = bar * n_alloc as f64 + gap;
        let height = top + group_h * self.workloads.len() as f64 + 30.0;
        let width = label_w + 2.0 * (panel_w + panel_gap);
        let (lo, hi) = (-3.0f64, 2.0f64); // log2 of the axis ends
        let x_of = |panel: usize, ratio: f64| {
            let l = ratio.log2().clamp(lo, hi);
            label_w + panel as f64 * (panel_w + panel_gap) + (l - lo) / (hi - lo) * panel_w
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="8" y="16" font-size="13">mallard bench --process, {}: ratio to {} (log scale, lower is better)</text>"#,
            self.meta.date,
            self.allocators.first().map_or("glibc", |a| a.name.as_str())
        );
        for (i, a) in self.allocators.iter().enumerate() {
            let x = 8.0 + i as f64 * 100.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="26" width="10" height="10" fill="{}"/><text x="{}" y="35">{}</text>"#,
                COLORS[i % COLORS.len()],
                x + 14.0,
                a.name
            );
        }
        for (panel, figure) in [Figure::Time, Figure::PeakRss].into_iter().enumerate() {
            let title = if figure == Figure::Time { "wall time" } else { "peak RSS" };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" font-weight="bold">{title}</text>"#,
                x_of(panel, 0.125),
                top - 4.0
            );
            for tick in [0.125, 0.25, 0.5, 1.0, 2.0, 4.0] {
                let x = x_of(panel, tick);
                let stroke = if tick == 1.0 { "#000" } else { "#ddd" };
                let _ = writeln!(
                    s,
                    r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="{stroke}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{tick}</text>"#,
                    height - 24.0,
                    height - 10.0
                );
            }
            for (w, name) in self.workloads.iter().enumerate() {
                let y0 = top + w as f64 * group_h;
                if panel == 0 {
                    let _ = writeln!(s, r#"<text x="8" y="{:.1}">{name}</text>"#, y0 + group_h / 2.0);
                }
                let Some(base) = self.median(w, 0, figure) else { continue };
                for a in 0..n_alloc {
                    let Some(v) = self.median(w, a, figure) else { continue };
                    let ratio = v / base;
                    let (x1, x2) = (x_of(panel, 1.0), x_of(panel, ratio));
                    let y = y0 + a as f64 * bar;
                    let _ = writeln!(
                        s,
                        r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{name} {}: {ratio:.2}</title></rect>"#,
                        x1.min(x2),
                        (x2 - x1).abs().max(1.0),
                        bar - 1.0,
                        COLORS[a % COLORS.len()],
                        self.allocators[a].name
                    );
                    if !(0.125..=4.0).contains(&ratio) {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" font-size="8">{ratio:.2}</text>"#,
                            x2 + 2.0,
                            y + bar - 1.0
                        );
                    }
                }
            }
        }
        s += "</svg>\n";
        s
    }
}
