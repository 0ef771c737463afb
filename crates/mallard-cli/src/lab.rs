//! `mallard replay` and `mallard lab`: the heap lab's commands (crate `mallard-lab`).

use mallard_lab::gen::{generate, Shape};
use mallard_lab::{replay, trace, STRATEGIES};
use std::io::IsTerminal as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The trace to replay (from `mallard record` or `mallard lab gen`).
    trace: PathBuf,
    /// Only these strategies (comma-separated): first-fit, next-fit, best-fit, tlsf,
    /// segregated, buddy, mallard.
    #[arg(long, value_name = "NAME")]
    strategies: Option<String>,
    /// Also write a report to FILE: one HTML file with the figures, the footprint of every
    /// strategy and the live bytes over the trace, and a heap map per strategy at its moment of
    /// peak fragmentation.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The trace (from `mallard record`).
    trace: PathBuf,
    /// Rows per table.
    #[arg(long, default_value_t = 15)]
    top: usize,
}

pub fn report(a: ReportArgs) -> Result<(), String> {
    let t = trace::read(&a.trace).map_err(|e| e.to_string())?;
    print!("{}", mallard_lab::report::report(&a.trace.display().to_string(), &t, a.top));
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Write a synthetic trace in one of the classic shapes: ramp, peaks, plateau, random.
    Gen(GenArgs),
}

#[derive(clap::Args)]
pub struct GenArgs {
    /// The shape of the live heap over time: ramp, peaks, plateau or random.
    #[arg(long, default_value = "peaks")]
    shape: String,
    /// How many allocations and frees.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// The same seed gives the same trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the trace.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

pub fn lab(cmd: LabCommand) -> Result<(), String> {
    match cmd {
        LabCommand::Gen(a) => {
            let names = Shape::ALL.map(Shape::name).join(", ");
            let shape =
                Shape::from_name(&a.shape).ok_or_else(|| format!("unknown shape {:?}; known: {names}", a.shape))?;
            crate::writable(&a.output)?;
            let t = generate(shape, a.events, a.seed);
            std::fs::write(&a.output, trace::encode(&t)).map_err(|e| format!("writing {}: {e}", a.output.display()))?;
            eprintln!("wrote {} ({} events, shape {})", a.output.display(), t.events.len(), shape.name());
            Ok(())
        }
    }
}

pub fn replay(a: ReplayArgs) -> Result<(), String> {
    let names: Vec<&str> = match &a.strategies {
        None => STRATEGIES.to_vec(),
        Some(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(bad) = wanted.iter().find(|w| !STRATEGIES.contains(w)) {
                return Err(format!("unknown strategy {bad:?}; known: {}", STRATEGIES.join(", ")));
            }
            STRATEGIES.iter().copied().filter(|s| wanted.contains(s)).collect()
        }
    };
    if let Some(path) = &a.html {
        crate::writable(path)?;
    }
    let t = trace::read(&a.trace).map_err(|e| e.to_string())?;
    let tty = std::io::stderr().is_terminal();
    let mut figures = Vec::new();
    for name in names {
        let mut last = 0;
        let mut progress = |done: usize, total: usize| {
            // A bar on a terminal; a line per strategy otherwise.
            if tty && (done == total || done - last >= total / 100) {
                last = done;
                let filled = 30 * done / total.max(1);
                eprint!("\r\x1b[2K{name:<10} [{}{}] {done}/{total}", "#".repeat(filled), ".".repeat(30 - filled));
            }
        };
        let r = replay::replay_full(&t, name, &mut progress).expect("a known strategy");
        if tty {
            eprintln!();
        } else {
            eprintln!("replayed {} events through {name}", t.events.len());
        }
        figures.push(r);
    }
    let table = replay::table(&figures.iter().map(|r| r.figures.clone()).collect::<Vec<_>>());
    println!("{}: {} events, pid {}\n\n{table}", a.trace.display(), t.events.len(), t.pid);
    if let Some(n) = figures.first().map(|r| r.figures.impossible).filter(|&n| n > 0) {
        println!(
            "{n} allocations larger than {} or aligned beyond {} were skipped: no strategy simulates them",
            mallard_lab::html::human(replay::MAX_SIZE),
            mallard_lab::html::human(replay::MAX_ALIGN)
        );
    }
    if let Some(path) = &a.html {
        let html = mallard_lab::html::report(&a.trace.display().to_string(), t.events.len(), &figures);
        std::fs::write(path, html).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
