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
    /// strategy and the live bytes over the trace, and a heap map per strategy at the moment of
    /// peak live bytes (the same moment and scale for all).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The trace (from `mallard record`); with a second trace, what changed from the first to
    /// the second, site by site.
    #[arg(required = true, num_args = 1..=2, value_name = "TRACE")]
    traces: Vec<PathBuf>,
    /// Rows per table.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Write the report as JSON to FILE (`-`: standard output, instead of the text); the
    /// schema is in docs/lab.md.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the collapsed stacks (`outer;...;inner bytes`, for flamegraph.pl, inferno,
    /// speedscope) to FILE (`-`: standard output, instead of the text).
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// What --folded weighs each stack by: allocated (bytes over the run), peak (bytes live at
    /// the peak) or leaked (bytes never freed).
    #[arg(long, value_name = "WHAT", default_value = "allocated")]
    by: String,
    /// Write the report as one self-contained HTML page to FILE: timeline, flame graphs,
    /// tables with full stacks.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Which program image of the trace to report (0 for the first program the process ran;
    /// default: the last, the program it became after its `exec`s).
    #[arg(long, value_name = "N")]
    image: Option<usize>,
}

pub fn report(a: ReportArgs) -> Result<(), String> {
    use mallard_lab::report::{self, Measure};
    let by = Measure::from_name(&a.by)
        .ok_or_else(|| format!("--by {:?}: want one of {}", a.by, Measure::ALL.map(Measure::name).join(", ")))?;
    if a.html.as_deref() == Some(std::path::Path::new("-")) {
        return Err("--html needs a file name, not `-`".into());
    }
    let outputs = [&a.json, &a.folded, &a.html];
    let to_stdout = outputs.iter().filter(|o| o.as_deref() == Some(std::path::Path::new("-"))).count();
    if to_stdout > 1 {
        return Err("only one of --json and --folded can be `-` (standard output)".into());
    }
    let files: Vec<&PathBuf> = outputs.into_iter().flatten().filter(|p| p.as_os_str() != "-").collect();
    let same = |x: &PathBuf, y: &PathBuf| {
        x == y || matches!((std::fs::canonicalize(x), std::fs::canonicalize(y)), (Ok(a), Ok(b)) if a == b)
    };
    for (k, path) in files.iter().enumerate() {
        crate::writable(path)?;
        if let Some(input) = a.traces.iter().find(|t| same(t, path)) {
            return Err(format!("{} is the trace read: an output would overwrite it", input.display()));
        }
        if files[..k].iter().any(|other| same(other, path)) {
            return Err(format!("{} is named by two outputs", path.display()));
        }
    }
    let load = |path: &PathBuf| -> Result<mallard_lab::profile::Profile, String> {
        let t = trace::read(path).map_err(|e| e.to_string())?;
        let recorded = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(mallard_lab::profile::profile_recorded(&path.display().to_string(), &t, recorded))
    };
    if let [before, after] = &a.traces[..] {
        if a.folded.is_some() || a.html.is_some() {
            return Err("a diff of two traces has text and --json output only".into());
        }
        let d = report::diff(&load(before)?, &load(after)?);
        let json = || serde_json::to_string_pretty(&d).expect("a diff serializes");
        match a.json.as_deref() {
            Some(p) if p.as_os_str() == "-" => crate::emit(&(json() + "\n"))?,
            Some(p) => {
                crate::emit(&report::diff_markdown(&d, a.top))?;
                write_file(p, &json())?;
            }
            None => crate::emit(&report::diff_markdown(&d, a.top))?,
        }
        return Ok(());
    }
    let path = &a.traces[0];
    let images = trace::read_images(path).map_err(|e| e.to_string())?;
    let chosen = a.image.unwrap_or(images.len() - 1);
    let t = images.get(chosen).ok_or_else(|| {
        format!("--image {chosen}: {} holds {} images (0 to {})", path.display(), images.len(), images.len() - 1)
    })?;
    let recorded = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut p = mallard_lab::profile::profile_recorded(&path.display().to_string(), t, recorded);
    p.image = chosen;
    // The run's other processes: this file's earlier images (before an exec) and FILE.PID.
    let mut rows: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(k, t)| mallard_lab::profile::process_row(&path.display().to_string(), k, t))
        .collect();
    for other in crate::record::siblings(path) {
        match trace::read_images(&other) {
            Ok(imgs) => rows.extend(
                imgs.iter()
                    .enumerate()
                    .map(|(k, t)| mallard_lab::profile::process_row(&other.display().to_string(), k, t)),
            ),
            Err(e) => eprintln!("mallard: skipping {e}"),
        }
    }
    if rows.len() > 1 {
        rows.sort_by_key(|r| (r.start_ns + r.first_ns, r.pid, r.image));
        p.processes = rows;
    }
    let mut text_to_stdout = to_stdout == 0;
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&p).expect("a profile serializes");
        if path.as_os_str() == "-" {
            crate::emit(&(json + "\n"))?;
            text_to_stdout = false;
        } else {
            write_file(path, &json)?;
        }
    }
    if let Some(path) = &a.folded {
        let f = report::folded(&p, by);
        if path.as_os_str() == "-" {
            crate::emit(&f)?;
            text_to_stdout = false;
        } else {
            write_file(path, &f)?;
        }
    }
    if let Some(path) = &a.html {
        write_file(path, &mallard_lab::html::profile_page(&p))?;
    }
    if text_to_stdout {
        crate::emit(&report::markdown(&p, a.top))?;
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
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
    /// How many allocations and frees (at most 100 million).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    events: u64,
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
            let t = generate(shape, a.events as usize, a.seed);
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
        let r = replay::replay_full(&t, name, &mut progress).ok_or_else(|| {
            format!("the {name} strategy cannot start: the lab cannot reserve its 64 GiB of address space (ulimit -v?)")
        })?;
        if tty {
            eprintln!();
        } else {
            eprintln!("replayed {} events through {name}", t.events.len());
        }
        figures.push(r);
    }
    let table = replay::table(&figures.iter().map(|r| r.figures.clone()).collect::<Vec<_>>());
    let mut text = format!("{}: {} events, pid {}\n\n{table}\n", a.trace.display(), t.events.len(), t.pid);
    if let Some(n) = figures.first().map(|r| r.figures.impossible).filter(|&n| n > 0) {
        text += &format!(
            "{n} allocations larger than {}, aligned beyond {} or beyond {} live were skipped: no strategy simulates \
             them\n",
            mallard_lab::html::human(replay::MAX_SIZE),
            mallard_lab::html::human(replay::MAX_ALIGN),
            mallard_lab::html::human(replay::MAX_LIVE)
        );
    }
    crate::emit(&text)?;
    if let Some(path) = &a.html {
        let html = mallard_lab::html::report(&a.trace.display().to_string(), t.events.len(), &figures);
        std::fs::write(path, html).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
