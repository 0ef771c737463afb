//! One process per run: every workload runs in a child process (`mallard-workload`) under
//! every allocator, chosen with `LD_PRELOAD`, interleaved round by round. Each run yields its
//! wall time (as the child measured it) and its peak RSS (`ru_maxrss` from `wait4`), so no
//! allocator inherits another's heap, and the memory figure is the whole process's.

use crate::report::Meta;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An allocator under test: a name and the library to preload (none: glibc's own).
#[derive(Debug, Clone, Serialize)]
pub struct Allocator {
    pub name: String,
    pub preload: Option<PathBuf>,
}

/// glibc, mallard (`mallard_lib`), and Debian's jemalloc, mimalloc and tcmalloc where
/// installed (`apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4`).
pub fn detect(mallard_lib: &Path) -> Vec<Allocator> {
    let mut v = vec![
        Allocator { name: "glibc".into(), preload: None },
        Allocator { name: "mallard".into(), preload: Some(mallard_lib.to_path_buf()) },
    ];
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"];
    for (name, file) in
        [("jemalloc", "libjemalloc.so.2"), ("mimalloc", "libmimalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4")]
    {
        if let Some(p) = dirs.iter().map(|d| Path::new(d).join(file)).find(|p| p.exists()) {
            v.push(Allocator { name: name.into(), preload: Some(p) });
        }
    }
    v
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub ms: f64,
    pub peak_rss_kib: i64,
}

/// Runs `workload` once in a child process of `exe` under `alloc`.
pub fn run_one(exe: &Path, workload: &str, smoke: bool, alloc: &Allocator) -> Result<Sample, String> {
    let mut cmd = Command::new(exe);
    cmd.arg(workload).stdout(Stdio::piped()).stderr(Stdio::piped()).env_remove("LD_PRELOAD");
    if smoke {
        cmd.arg("--smoke");
    }
    if let Some(lib) = &alloc.preload {
        cmd.env("LD_PRELOAD", lib);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let pid = child.id() as libc::pid_t;
    // Read the output before waiting (the pipes are small), then reap with wait4 for rusage.
    let mut stdout = String::new();
    let mut stderr = String::new();
    {
        use std::io::Read as _;
        let mut child = child;
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        std::mem::forget(child); // reaped below by wait_child, not by Child
    }
    let (status, usage) = wait_child(pid).map_err(|e| format!("waiting for {workload}: {e}"))?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{workload} on {} failed (status {status:#x}): {}", alloc.name, stderr.trim()));
    }
    let ms =
        stdout.trim().parse::<f64>().map_err(|_| format!("{workload} on {}: no time in {stdout:?}", alloc.name))?;
    Ok(Sample { ms, peak_rss_kib: usage.ru_maxrss })
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

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub meta: Meta,
    pub rounds: usize,
    pub smoke: bool,
    pub allocators: Vec<Allocator>,
    /// `samples[workload][allocator]`: one per round.
    pub workloads: Vec<String>,
    pub samples: Vec<Vec<Vec<Sample>>>,
}

/// Runs every workload under every allocator, `rounds` times, interleaved (all allocators on
/// one workload, then the next workload, then the next round). `progress` gets one line per
/// run.
pub fn run(
    exe: &Path,
    workloads: &[&str],
    allocators: &[Allocator],
    rounds: usize,
    smoke: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<ProcessReport, String> {
    let rounds = if smoke { 1 } else { rounds.max(1) };
    let mut samples = vec![vec![Vec::with_capacity(rounds); allocators.len()]; workloads.len()];
    let total = rounds * workloads.len() * allocators.len();
    let mut done = 0;
    for round in 1..=rounds {
        for (w, workload) in workloads.iter().enumerate() {
            for (a, alloc) in allocators.iter().enumerate() {
                let s = run_one(exe, workload, smoke, alloc)?;
                done += 1;
                progress(&format!(
                    "[{done}/{total}] round {round}/{rounds} {workload:<16} {:<9} {:>9.1} ms {:>8.1} MiB",
                    alloc.name,
                    s.ms,
                    s.peak_rss_kib as f64 / 1024.0
                ));
                samples[w][a].push(s);
            }
        }
    }
    Ok(ProcessReport {
        meta: Meta::collect(),
        rounds,
        smoke,
        allocators: allocators.to_vec(),
        workloads: workloads.iter().map(|s| s.to_string()).collect(),
        samples,
    })
}

impl ProcessReport {
    fn medians(&self, w: usize, a: usize) -> (f64, f64) {
        let s = &self.samples[w][a];
        let ms: Vec<f64> = s.iter().map(|x| x.ms).collect();
        let rss: Vec<f64> = s.iter().map(|x| x.peak_rss_kib as f64 / 1024.0).collect();
        (crate::median(&ms), crate::median(&rss))
    }

    /// Two Markdown tables (time, peak RSS), medians, with each allocator's ratio to glibc
    /// and a geomean row.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "mallard bench --process — {} — {} ({} cores) — {} round(s), one process per run, interleaved\n",
            self.meta.date, self.meta.cpu, self.meta.cores, self.rounds
        );
        for (title, pick) in [("wall time, ms (median)", 0usize), ("peak RSS, MiB (median)", 1)] {
            let _ = writeln!(o, "{title}\n");
            let names: Vec<&str> = self.allocators.iter().map(|a| a.name.as_str()).collect();
            let _ = writeln!(o, "| workload | {} |", names.join(" | "));
            let _ = writeln!(o, "|---|{}", "--:|".repeat(names.len()));
            let mut logs = vec![0.0f64; names.len()];
            for (w, workload) in self.workloads.iter().enumerate() {
                let vals: Vec<f64> = (0..names.len())
                    .map(|a| {
                        let (t, r) = self.medians(w, a);
                        if pick == 0 {
                            t
                        } else {
                            r
                        }
                    })
                    .collect();
                let best = vals.iter().copied().fold(f64::INFINITY, f64::min);
                let cells: Vec<String> = vals
                    .iter()
                    .enumerate()
                    .map(|(a, &v)| {
                        logs[a] += (v / vals[0]).ln();
                        let s = format!("{v:.1} ({:.2})", v / vals[0]);
                        if v == best {
                            format!("**{s}**")
                        } else {
                            s
                        }
                    })
                    .collect();
                let _ = writeln!(o, "| {workload} | {} |", cells.join(" | "));
            }
            let n = self.workloads.len().max(1) as f64;
            let geo: Vec<String> = logs.iter().map(|l| format!("{:.2}", (l / n).exp())).collect();
            let _ = writeln!(o, "| **geomean ratio to glibc** | {} |\n", geo.join(" | "));
        }
        o
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
