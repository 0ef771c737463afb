//! The `mallard` command. It runs on the system allocator on purpose: a harness that
//! allocated through the allocator under test would measure itself and could crash with it.

mod embedded;
mod lab;
mod record;
mod run;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mallard", version, about = "mallard heap allocator: tools and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program on libmallard.so (LD_PRELOAD) and report its heap:
    /// `mallard run -- python3 -c 'print(sum(range(10**6)))'`.
    Run(run::RunArgs),
    /// Compare System, mallard and mimalloc on in-process workloads (interleaved, median).
    Bench(BenchArgs),
    /// Run a program on libmallard_trace.so and write every allocation it makes to a trace:
    /// `mallard record -o py.trace -- python3 script.py`.
    Record(record::RecordArgs),
    /// Replay a trace through the classic strategies (first fit, next fit, best fit, TLSF,
    /// segregated lists, buddy) and mallard itself
    /// and compare how they pack the heap: `mallard replay TRACE`.
    Replay(lab::ReplayArgs),
    /// What a trace allocated and where: sizes, lifetimes, the biggest call sites, leaks (never
    /// freed, by call site) and stack candidates (small blocks freed soon by their own thread).
    Report(lab::ReportArgs),
    /// The heap lab's other tools: `mallard lab gen` makes synthetic traces.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Tiny sizes, one round: proves every workload still runs (for CI), measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Timed rounds per (workload, allocator); the table shows the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these workloads (comma-separated): churn, mt-churn, larson, threadtest,
    /// cache-scratch, prod-cons, prod-cons-large, mstress, random-sizes, vec-grow, malloc-large,
    /// big-churn, frag; with --process also json, collections, python, sqlite3, git.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// One process per run: each workload runs in its own process under each C allocator,
    /// chosen with LD_PRELOAD (glibc, mallard, and Debian's jemalloc, mimalloc and tcmalloc
    /// where installed), and the Rust workloads also on the mallard, mimalloc and
    /// tikv-jemallocator crates; adds Rust and real programs; reports wall time and peak RSS.
    #[arg(long)]
    process: bool,
    /// With --process: only these allocators (comma-separated names).
    #[arg(long, value_name = "NAME", requires = "process")]
    allocators: Option<String>,
    /// With --process: also run under the C allocator in LIB, called NAME (repeatable), e.g.
    /// another build of libmallard.so to compare with: `--extra before=/tmp/libmallard.so`;
    /// `@VAR=VALUE` after the path sets an environment variable for its runs
    /// (`--extra full=target/release/libmallard_secure.so@MALLARD_HARDEN=full`).
    #[arg(long, value_name = "NAME=LIB", requires = "process")]
    extra: Vec<String>,
    /// With --process: also draw time and peak RSS relative to glibc as an SVG chart in FILE.
    #[arg(long, value_name = "FILE", requires = "process")]
    svg: Option<PathBuf>,
}

fn bench(args: BenchArgs) -> Result<(), String> {
    for path in [&args.json, &args.svg].into_iter().flatten() {
        writable(path)?;
    }
    let known: Vec<&str> = if args.process {
        [mallard_bench::WORKLOADS, mallard_bench::RUST_PROGRAMS, mallard_bench::programs::REAL_PROGRAMS].concat()
    } else {
        mallard_bench::WORKLOADS.to_vec()
    };
    let selected: Vec<&str> = match &args.only {
        None => known.clone(),
        Some(f) => {
            let wanted: Vec<&str> = f.split(',').map(str::trim).collect();
            if let Some(bad) = wanted.iter().find(|w| !known.contains(w)) {
                let hint = if args.process { "" } else { " (the Rust and real programs need --process)" };
                return Err(format!("unknown workload {bad:?}; known: {}{hint}", known.join(", ")));
            }
            known.iter().copied().filter(|w| wanted.contains(w)).collect()
        }
    };
    if args.process {
        return bench_process(&args, &selected);
    }
    let opts = mallard_bench::Options {
        rounds: args.rounds as usize,
        smoke: args.smoke,
        filter: Some(selected.join(",")),
        progress: true,
    };
    let report = mallard_bench::run(&opts);
    print!("{}", report.to_markdown());
    write_out(args.json.as_deref(), || report.to_json())
}

/// Writes `text` to standard output; an error (a closed pipe, a full disk) is a one-line error
/// instead of a panic.
pub fn emit(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing to standard output: {e}"))
}

/// Checks, before any work, that `path` can be written: an error with the system's reason
/// (a missing directory, a directory, no permission) rather than a lost run. An existing file
/// is left as it is; a new one is created and removed again.
pub fn writable(path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if path.is_dir() {
        return Err(format!("cannot write {}: it is a directory", path.display()));
    }
    // A device, FIFO or /proc file is not where a report goes (and `record` replaces the file).
    if path.exists() && !path.metadata().map_err(fail)?.is_file() {
        return Err(format!("cannot write {}: not a regular file", path.display()));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(fail)?;
    if !existed {
        std::fs::remove_file(path).map_err(fail)?;
    }
    Ok(())
}

fn write_out(path: Option<&Path>, text: impl FnOnce() -> String) -> Result<(), String> {
    if let Some(path) = path {
        std::fs::write(path, text() + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn bench_process(args: &BenchArgs, selected: &[&str]) -> Result<(), String> {
    use mallard_bench::process::{self, Job};
    let lib = run::find_library(None)?;
    let exe = run::sibling(
        "mallard-workload",
        &["-p", "mallard-bench", "--bins"],
        "install it beside mallard: cargo install --path bench",
    )?;
    let mut allocators = process::detect(&lib);
    for e in &args.extra {
        let (name, rest) = e.split_once('=').ok_or_else(|| format!("--extra {e:?}: want NAME=LIB[@VAR=VALUE...]"))?;
        let mut parts = rest.split('@');
        let path = parts.next().unwrap_or_default();
        let path = std::fs::canonicalize(path).map_err(|err| format!("--extra {name}: {path}: {err}"))?;
        if name.is_empty() || allocators.iter().any(|a| a.name == name) {
            return Err(format!("--extra {e:?}: the name must be new and not empty"));
        }
        let mut alloc = process::Allocator::c(name, Some(path));
        for var in parts {
            let (k, v) = var
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--extra {e:?}: {var:?} is not VAR=VALUE"))?;
            alloc.env.push((k.to_string(), v.to_string()));
        }
        allocators.push(alloc);
    }
    allocators.extend(process::crates(&exe));
    if let Some(only) = &args.allocators {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        let here: Vec<String> = allocators.iter().map(|a| a.name.clone()).collect();
        if let Some(bad) = wanted.iter().find(|w| !here.iter().any(|k| k == *w)) {
            return Err(format!("unknown or missing allocator {bad:?}; here: {}", here.join(", ")));
        }
        allocators.retain(|a| wanted.contains(&a.name.as_str()));
    }
    // The real programs' inputs live in a scratch directory for the length of the run.
    let scratch = std::env::temp_dir().join(format!("mallard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let result = (|| {
        let mut jobs: Vec<Job> = selected
            .iter()
            .filter(|w| !mallard_bench::programs::REAL_PROGRAMS.contains(w))
            .map(|w| Job::Workload(w.to_string()))
            .collect();
        if selected.iter().any(|w| mallard_bench::programs::REAL_PROGRAMS.contains(w)) {
            let prepared = mallard_bench::programs::prepare(&scratch, args.smoke)?;
            for s in prepared.skipped {
                eprintln!("skipping {s}");
            }
            let wanted = |p: &mallard_bench::programs::Program| selected.contains(&p.name.as_str());
            jobs.extend(prepared.ready.into_iter().filter(wanted).map(Job::Program));
        }
        let mut bar = ProgressBar::new();
        let report = process::run(&exe, &jobs, &allocators, args.rounds as usize, args.smoke, &mut |p| bar.show(p));
        bar.finish();
        report
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    print!("{}", report.to_markdown());
    write_out(args.json.as_deref(), || report.to_json())?;
    write_out(args.svg.as_deref(), || report.to_svg())
}

/// A one-line progress bar on a terminal; one line per run otherwise (CI logs).
struct ProgressBar {
    tty: bool,
    start: std::time::Instant,
}

impl ProgressBar {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        ProgressBar { tty: std::io::stderr().is_terminal(), start: std::time::Instant::now() }
    }

    fn show(&mut self, p: mallard_bench::process::Progress) {
        if !self.tty {
            eprintln!("[{}/{}] {}", p.done, p.total, p.line);
            return;
        }
        const WIDTH: usize = 30;
        let filled = WIDTH * p.done / p.total.max(1);
        let elapsed = self.start.elapsed().as_secs_f64();
        let left = elapsed / p.done as f64 * (p.total - p.done) as f64;
        eprint!(
            "\r\x1b[2K[{}{}] {}/{} ~{:.0}s left  {}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            p.done,
            p.total,
            left,
            p.line.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn main() -> ExitCode {
    // As other Unix tools: a reader that goes away (`mallard report T | head`) ends us quietly.
    // SAFETY: setting a signal's disposition to the default has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let result = match Cli::parse().command {
        Command::Bench(args) => bench(args),
        Command::Replay(args) => lab::replay(args),
        Command::Report(args) => lab::report(args),
        Command::Record(args) => match record::record(args) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Command::Lab(cmd) => lab::lab(cmd),
        Command::Run(args) => match run::run(args) {
            // The program's own exit code (128 + signal if it was killed), as a shell does.
            Ok(outcome) => return ExitCode::from(outcome.code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mallard: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_rejects_unknown_workload() {
        let cli = Cli::try_parse_from(["mallard", "bench", "--smoke", "--only", "nope"]).unwrap();
        let Command::Bench(args) = cli.command else { panic!("parsed as another command") };
        assert!(bench(args).unwrap_err().contains("unknown workload"));
    }

    #[test]
    fn run_takes_the_command_after_its_options() {
        let cli = Cli::try_parse_from(["mallard", "run", "--stats", "--", "python3", "-c", "pass"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("parsed as another command") };
        assert!(args.stats);
        assert_eq!(args.command, ["python3", "-c", "pass"]);
        assert!(Cli::try_parse_from(["mallard", "run"]).is_err(), "a command is required");
    }

    #[test]
    fn bench_rejects_zero_rounds() {
        assert!(Cli::try_parse_from(["mallard", "bench", "--rounds", "0"]).is_err());
    }
}
