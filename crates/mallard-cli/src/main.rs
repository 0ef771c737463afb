//! The `mallard` command. It runs on the system allocator on purpose: a harness that
//! allocated through the allocator under test would measure itself and could crash with it.

mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    /// Run only these workloads (comma-separated): churn, mt-churn, prod-cons, prod-cons-large,
    /// vec-grow, large.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// One process per run: each workload runs in its own process under each C allocator,
    /// chosen with LD_PRELOAD (glibc, mallard, and Debian's jemalloc, mimalloc and tcmalloc
    /// where installed); reports wall time and peak RSS.
    #[arg(long)]
    process: bool,
    /// With --process: only these allocators (comma-separated names).
    #[arg(long, value_name = "NAME", requires = "process")]
    allocators: Option<String>,
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let opts =
        mallard_bench::Options { rounds: args.rounds as usize, smoke: args.smoke, filter: args.only, progress: true };
    if let Some(f) = &opts.filter {
        let unknown: Vec<&str> =
            f.split(',').map(str::trim).filter(|w| !mallard_bench::WORKLOADS.contains(w)).collect();
        if !unknown.is_empty() {
            return Err(format!("unknown workload(s) {unknown:?}; known: {}", mallard_bench::WORKLOADS.join(", ")));
        }
    }
    if args.process {
        return bench_process(&opts, args.allocators.as_deref(), args.json.as_deref());
    }
    let report = mallard_bench::run(&opts);
    print!("{}", report.to_markdown());
    if let Some(path) = args.json {
        std::fs::write(&path, report.to_json() + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn bench_process(
    opts: &mallard_bench::Options,
    only: Option<&str>,
    json: Option<&std::path::Path>,
) -> Result<(), String> {
    let lib = run::find_library(None)?;
    let exe = run::sibling("mallard-workload", &["-p", "mallard-bench", "--bin", "mallard-workload"], "build it")?;
    let mut allocators = mallard_bench::process::detect(&lib);
    if let Some(only) = only {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        let known: Vec<String> = allocators.iter().map(|a| a.name.clone()).collect();
        if let Some(bad) = wanted.iter().find(|w| !known.iter().any(|k| k == *w)) {
            return Err(format!("unknown or missing allocator {bad:?}; here: {}", known.join(", ")));
        }
        allocators.retain(|a| wanted.contains(&a.name.as_str()));
    }
    let workloads = opts.workloads();
    let report = mallard_bench::process::run(&exe, &workloads, &allocators, opts.rounds, opts.smoke, &mut |line| {
        eprintln!("{line}")
    })?;
    print!("{}", report.to_markdown());
    if let Some(path) = json {
        std::fs::write(path, report.to_json() + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench(args),
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
