//! `mallard record`: runs a program on `libmallard_trace.so` with `MALLARD_TRACE` set, so that
//! every allocation it makes is written to a trace (docs/trace-format.md) for `mallard replay`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RecordArgs {
    /// Where to write the trace. Other processes of the run (children that inherit the
    /// environment) write FILE.PID beside it.
    #[arg(short, long, value_name = "FILE", default_value = "mallard.trace")]
    output: PathBuf,
    /// Leave `PYTHONMALLOC` alone (by default it is set to `malloc`, so that CPython's small
    /// objects are recorded too).
    #[arg(long)]
    keep_pymalloc: bool,
    /// The libmallard_trace.so to preload (default: `$MALLARD_TRACE_LIB`, else the one built
    /// with this program, written to ~/.cache/mallard on first use).
    #[arg(long, value_name = "PATH")]
    lib: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Finds libmallard_trace.so: `--lib`, `$MALLARD_TRACE_LIB`, or the one built with this
/// program (`crate::embedded`: mallard-capi with the feature `trace`, built apart so that the
/// recorder never reaches libmallard.so through feature unification).
fn find_library(explicit: Option<&Path>) -> Result<PathBuf, String> {
    match crate::run::named_library(explicit, "MALLARD_TRACE_LIB")? {
        Some(p) => Ok(p),
        None => crate::embedded::TRACE.path(),
    }
}

/// Runs the program; returns its exit code (128 + signal if it was killed).
pub fn record(args: RecordArgs) -> Result<i32, String> {
    let out = std::path::absolute(&args.output).map_err(|e| format!("{}: {e}", args.output.display()))?;
    crate::writable(&out)?;
    let lib = find_library(args.lib.as_deref())?;
    // The first process creates the file; an old trace (and its FILE.PID siblings) would be
    // mistaken for this run's. Only traces are removed: `data.1234` beside `-o data` may be
    // anything.
    let _ = std::fs::remove_file(&out);
    for sibling in siblings(&out) {
        let _ = std::fs::remove_file(sibling);
    }
    let mut child = crate::run::preloaded(&args.command, &lib, args.keep_pymalloc)
        .env("MALLARD_TRACE", &out)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", args.command[0].to_string_lossy()))?;
    // Like `time`: ^C and ^\ are for the program (our process group), which may handle them;
    // we stay to the end, to pass its exit status on and say what it wrote.
    // SAFETY: setting signal dispositions to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait().map_err(|e| format!("waiting for the program: {e}"))?;
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt as _;
        128 + status.signal().unwrap_or(0)
    });
    // From here on, what went wrong with the trace is said, and the program's exit status is
    // still passed on: the run itself happened.
    if !out.is_file() {
        eprintln!(
            "mallard record: {} is not there: the program did not load {} (a static binary, or one that clears \
             LD_PRELOAD), or it removed or renamed the file",
            out.display(),
            lib.display()
        );
        return Ok(code);
    }
    // (The chunk headers only: decoding a big trace would take longer than the run.)
    let images = match mallard_lab::trace::summarize(&out) {
        Ok(images) => images,
        Err(e) => {
            eprintln!("mallard record: {e} (the program may have written over the file)");
            return Ok(code);
        }
    };
    let t = images.last().expect("at least one image");
    eprintln!(
        "mallard record: wrote {} ({} and resident-set samples, {})",
        out.display(),
        plural(t.events as usize, "event"),
        plural(t.threads as usize, "thread")
    );
    if !t.has_maps {
        eprintln!(
            "mallard record: the trace has no memory map (written at the end), so call sites will be addresses: the \
             program was killed by SIGKILL, the file size limit (ulimit -f) stopped the recording, or at its end \
             it could not read /proc (no descriptor left, a chroot)"
        );
    }
    if images.len() > 1 {
        let before: usize = images[..images.len() - 1].iter().map(|t| t.events as usize).sum();
        eprintln!(
            "mallard record: the process ran {} programs (exec); the figures above are the last one's, and the \
             file also holds the {} of the programs before it",
            images.len(),
            plural(before, "event")
        );
    }
    let others = siblings(&out);
    let size = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    if let Some(big) = others.iter().max_by_key(|p| size(p)) {
        eprintln!(
            "mallard record: {} wrote {}.PID; the largest is {} ({} bytes)",
            plural(others.len(), "other process"),
            out.display(),
            big.display(),
            size(big)
        );
    }
    Ok(code)
}

/// Whether `path` is a regular file that starts as a trace does.
fn is_trace(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 8];
    path.metadata().is_ok_and(|m| m.is_file())
        && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == mallard_lab::trace::MAGIC
}

/// `n thing` or `n things`.
pub fn plural(n: usize, thing: &str) -> String {
    match (n, thing.ends_with('s')) {
        (1, _) => format!("1 {thing}"),
        (_, true) => format!("{n} {thing}es"),
        _ => format!("{n} {thing}s"),
    }
}

/// The FILE.PID traces beside `out` (files of that name that are not traces are left out).
pub fn siblings(out: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (out.parent(), out.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    // (A bare file name's parent is "": the current directory.)
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|c| c.is_ascii_digit()))
        })
        .collect();
    v.retain(|p| is_trace(p));
    v.sort();
    v
}
