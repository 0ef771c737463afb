//! `mallard run`: runs a program on libmallard.so and reports its heap.
//!
//! The library is preloaded (`LD_PRELOAD`) and asked for an exit record (`MALLARD_REPORT`, see
//! `crates/mallard-capi/src/report.rs`): every process of the run appends one line when it
//! exits. The report shows the record of the process `run` started (or of the last one to
//! exit, when that one was replaced by `exec`), with the time and peak RSS that `wait4`
//! measured for the whole process tree.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Also print the library's full statistics table from every process at its exit
    /// (`MALLARD_STATS=1`).
    #[arg(long)]
    pub stats: bool,
    /// Do not print the heap report.
    #[arg(short, long)]
    pub quiet: bool,
    /// Leave `PYTHONMALLOC` alone (by default it is set to `malloc`, so CPython's small
    /// objects go through mallard instead of CPython's own allocator).
    #[arg(long)]
    pub keep_pymalloc: bool,
    /// The libmallard.so to preload (default: `$MALLARD_LIB`, else the one built with this
    /// program, written to ~/.cache/mallard on first use).
    #[arg(long, value_name = "PATH")]
    pub lib: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// What happened to the program.
pub struct Outcome {
    /// The exit code `mallard run` passes on: the program's, or 128 + signal.
    pub code: i32,
}

pub fn run(args: RunArgs) -> Result<Outcome, String> {
    let lib = find_library(args.lib.as_deref())?;
    // In a directory of our own: in a shared /tmp another user could have put a file (or a
    // link) there first, to read the report or add to it.
    let report_dir = private_dir("mallard-run")?;
    let report_path = report_dir.join("records");
    let mut cmd = preloaded(&args.command, &lib, args.keep_pymalloc);
    cmd.env("MALLARD_REPORT", &report_path);
    if args.stats {
        cmd.env("MALLARD_STATS", "1");
    }
    let start = Instant::now();
    mallard_bench::process::reset_peak_rss();
    let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", args.command[0].to_string_lossy()))?;
    // Like `time`: ^C and ^\ are for the program (our process group); we stay to report.
    // SAFETY: setting signal dispositions to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let (status, usage) = mallard_bench::process::wait_child(child.id() as libc::pid_t)
        .map_err(|e| format!("waiting for the program: {e}"))?;
    let wall = start.elapsed();
    let records = std::fs::read_to_string(&report_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&report_dir);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    };
    if !args.quiet {
        let records = parse_records(&records);
        eprint!("{}", format_report(&args.command, status, wall, &usage, &records, child.id()));
    }
    Ok(Outcome { code })
}

/// A new directory in the temporary directory that only we can use (mode 0700, made here).
fn private_dir(prefix: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let tmp = std::path::absolute(std::env::temp_dir()).map_err(|e| format!("the temporary directory: {e}"))?;
    let mut last = None;
    for n in 0..100u32 {
        let dir = tmp.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("cannot make a directory in {}: {e}", tmp.display())),
        }
    }
    Err(format!("cannot make a directory in {}: {}", tmp.display(), last.map(|e| e.to_string()).unwrap_or_default()))
}

/// `command` (program and arguments) with `lib` first in `LD_PRELOAD`, and, unless
/// `keep_pymalloc` or the caller's environment sets it, `PYTHONMALLOC=malloc` (so CPython's
/// small objects go through the preloaded library too).
pub fn preloaded(command: &[OsString], lib: &Path, keep_pymalloc: bool) -> Command {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = lib.as_os_str().to_owned();
            v.push(":");
            v.push(old);
            v
        }
        _ => lib.as_os_str().to_owned(),
    };
    cmd.env("LD_PRELOAD", preload);
    if !keep_pymalloc && std::env::var_os("PYTHONMALLOC").is_none() {
        cmd.env("PYTHONMALLOC", "malloc");
    }
    cmd
}

/// Finds libmallard.so: `--lib`, `$MALLARD_LIB`, or the one built with this program
/// (`crate::embedded`, written to a cache directory on first use).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, String> {
    match named_library(explicit, "MALLARD_LIB")? {
        Some(p) => Ok(p),
        None => crate::embedded::MALLARD.path(),
    }
}

/// The library `--lib` or environment variable `var` names (an empty value is no name): a
/// file, as a real absolute path that `LD_PRELOAD` can carry.
pub fn named_library(explicit: Option<&Path>, var: &str) -> Result<Option<PathBuf>, String> {
    let named = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os(var).map(PathBuf::from));
    let Some(p) = named.filter(|p| !p.as_os_str().is_empty()) else { return Ok(None) };
    if !p.is_file() {
        return Err(format!("{} is not a file", p.display()));
    }
    let p = p.canonicalize().map_err(|e| format!("{}: {e}", p.display()))?;
    preloadable(&p)?;
    Ok(Some(p))
}

/// Whether `LD_PRELOAD` can name `lib` as it is: the dynamic loader splits the variable at
/// spaces and colons, and would look the pieces up from the program's directory.
pub fn preloadable(lib: &Path) -> Result<(), String> {
    let text = lib.as_os_str().as_encoded_bytes();
    if !lib.is_absolute() || text.iter().any(|b| b" :\t\n".contains(b)) {
        return Err(format!("{}: LD_PRELOAD cannot name a library whose path has a space or a colon", lib.display()));
    }
    Ok(())
}

/// A file built next to this program (`target/<profile>/`). Under `cargo run` it is built
/// first, with the same profile and the given cargo arguments, so a fresh checkout works and
/// nothing is stale.
pub fn sibling(name: &str, cargo_args: &[&str], otherwise: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let dir = exe.parent().ok_or("this program has no directory")?;
    let path = dir.join(name);
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet"]).args(cargo_args);
        if release {
            build.arg("--release");
        }
        if let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR") {
            build.current_dir(manifest);
        }
        let status = build.status().map_err(|e| format!("cannot run cargo to build {name}: {e}"))?;
        if !status.success() {
            return Err(format!("building {name} failed (see above)"));
        }
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cannot find {}: build it with `cargo build --release {}`, or {otherwise}",
            path.display(),
            cargo_args.join(" ")
        ))
    }
}

/// One process's exit record: `key=value` pairs.
pub type Record = BTreeMap<String, String>;

pub fn parse_records(text: &str) -> Vec<Record> {
    text.lines()
        .filter(|l| l.starts_with("pid="))
        .map(|l| {
            l.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .collect()
}

fn num(r: &Record, key: &str) -> i64 {
    r.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Bytes as a short human figure (KiB, MiB, GiB).
pub fn bytes(n: i64) -> String {
    let f = n as f64;
    let (v, unit) = if f.abs() >= 1024.0 * 1024.0 * 1024.0 {
        (f / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if f.abs() >= 1024.0 * 1024.0 {
        (f / (1024.0 * 1024.0), "MiB")
    } else if f.abs() >= 1024.0 {
        (f / 1024.0, "KiB")
    } else {
        return format!("{n} B");
    };
    format!("{v:.1} {unit}")
}

/// An integer with thousands separators.
pub fn count(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// `args` as a shell would need them typed: words with spaces or special characters quoted.
pub fn shell_words(args: &[OsString]) -> String {
    args.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@^".contains(c));
            if plain {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `n thing` or `n things` (`n thinges` for a word in -s).
pub fn plural(n: i64, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        _ if thing.ends_with('s') => format!("{} {thing}es", count(n)),
        _ => format!("{} {thing}s", count(n)),
    }
}

pub fn format_report(
    command: &[OsString],
    status: i32,
    wall: Duration,
    usage: &libc::rusage,
    records: &[Record],
    pid: u32,
) -> String {
    let mut o = String::new();
    let how = if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        "stopped".to_string()
    };
    let _ = writeln!(o, "\nmallard run: {}", shell_words(command));
    let _ = writeln!(
        o,
        "  {how}; {:.2} s wall, {:.2} s user, {:.2} s system; {} on mallard",
        wall.as_secs_f64(),
        seconds(usage.ru_utime),
        seconds(usage.ru_stime),
        plural(records.len() as i64, "process")
    );
    let peak_rss = usage.ru_maxrss * 1024;
    let Some(r) = records.iter().find(|r| num(r, "pid") == pid as i64).or(records.last()) else {
        let _ = writeln!(o, "  peak RSS {}", bytes(peak_rss));
        let _ = writeln!(
            o,
            "  no heap record: the program did not run on mallard, or it did not exit normally (exec of a \
             static binary, a crash or _exit before the library's exit handler)"
        );
        return o;
    };
    if records.len() > 1 {
        let _ = writeln!(
            o,
            "  processes, in the order they exited (one killed by a signal, as a pipe's writer by SIGPIPE, leaves no \
             record):"
        );
        let _ = writeln!(
            o,
            "    {:>8}  {:<16} {:>12} {:>10} {:>12}",
            "pid", "program", "peak in use", "peak RSS", "RSS at exit"
        );
        for p in records {
            let exe = p.get("exe").map_or("?".to_string(), |e| e.replace("%20", " "));
            let _ = writeln!(
                o,
                "    {:>8}  {:<16} {:>12} {:>10} {:>12}",
                num(p, "pid"),
                exe,
                bytes(num(p, "peak_in_use_bytes")),
                bytes(num(p, "peak_rss_bytes").max(num(p, "resident_bytes"))),
                bytes(num(p, "resident_bytes"))
            );
        }
        let _ = writeln!(
            o,
            "  figures below are of process {} ({}{})",
            num(r, "pid"),
            r.get("exe").map_or("?".to_string(), |e| e.replace("%20", " ")),
            if num(r, "pid") == pid as i64 { ", the one mallard run started" } else { ", the last to exit" }
        );
    }
    let rss = num(r, "resident_bytes");
    let _ = writeln!(
        o,
        "  memory    peak RSS {}, RSS at exit {} (the heap's own mappings: {})",
        bytes(num(r, "peak_rss_bytes").max(rss).max(if records.len() == 1 { peak_rss } else { 0 })),
        bytes(rss),
        bytes(num(r, "heap_resident_bytes"))
    );
    let _ = writeln!(
        o,
        "  heap      peak in use {} (blocks carved + large + huge: an upper bound of peak live)",
        bytes(num(r, "peak_in_use_bytes"))
    );
    let _ = writeln!(
        o,
        "            live at exit {} in {} ({} in {}, {} in {})",
        bytes(num(r, "live_bytes")),
        plural(num(r, "live_blocks"), "block"),
        bytes(num(r, "large_bytes")),
        plural(num(r, "large_blocks"), "large chunk"),
        bytes(num(r, "huge_bytes")),
        plural(num(r, "huge_blocks"), "huge block"),
    );
    let _ = writeln!(
        o,
        "  mappings  {} now ({}, {} of them cached empty); over the run {} and {} fresh from the OS, {} given \
         back; {} purged",
        count(num(r, "segments")),
        bytes(num(r, "mapped_bytes")),
        count(num(r, "segments_cached")),
        plural(num(r, "segments_mapped"), "segment"),
        plural(num(r, "huge_fresh"), "huge block"),
        count(num(r, "segments_released")),
        bytes(num(r, "bytes_purged")),
    );
    let _ = writeln!(
        o,
        "  threads   {}, {}, {}",
        plural(num(r, "heaps"), "heap"),
        plural(num(r, "remote_frees"), "remote free"),
        plural(num(r, "huge_allocs"), "huge allocation")
    );
    let classes: Vec<(i64, i64, i64)> = r
        .get("classes")
        .map(|c| {
            c.split(',')
                .filter_map(|e| {
                    let mut it = e.split(':').map(|x| x.parse::<i64>().ok());
                    Some((it.next()??, it.next()??, it.next()??))
                })
                .collect()
        })
        .unwrap_or_default();
    if !classes.is_empty() {
        let shown = busiest(&classes, CLASS_ROWS);
        let _ = writeln!(
            o,
            "  size classes, the {} busiest of {} used (pages started over the run; blocks live at exit):",
            shown.len(),
            classes.len()
        );
        let _ = writeln!(o, "    {:>8} {:>8} {:>12} {:>12}", "size", "pages", "live blocks", "live bytes");
        for &(size, pages, live) in &shown {
            let _ = writeln!(o, "    {:>8} {:>8} {:>12} {:>12}", size, count(pages), count(live), bytes(live * size));
        }
        let rest: Vec<_> = classes.iter().filter(|c| !shown.contains(c)).collect();
        if !rest.is_empty() {
            let pages: i64 = rest.iter().map(|c| c.1).sum();
            let live: i64 = rest.iter().map(|c| c.2 * c.0).sum();
            let _ = writeln!(
                o,
                "    {:>8} {:>8} {:>12} {:>12}",
                format!("{} more", rest.len()),
                count(pages),
                "",
                bytes(live)
            );
        }
    }
    o
}

/// Rows of the size-class table.
const CLASS_ROWS: usize = 12;

/// The `n` classes that saw the most pages started, then the most live bytes; by size.
fn busiest(classes: &[(i64, i64, i64)], n: usize) -> Vec<(i64, i64, i64)> {
    let mut v = classes.to_vec();
    v.sort_by_key(|&(size, pages, live)| std::cmp::Reverse((pages, live * size)));
    v.truncate(n);
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_the_started_process_is_chosen() {
        let text = "pid=7 live_bytes=10 classes=16:2:3,32:1:0\npid=9 live_bytes=2048 live_blocks=1\ngarbage\n";
        let recs = parse_records(text);
        assert_eq!(recs.len(), 2);
        // SAFETY: plain data.
        let usage: libc::rusage = unsafe { std::mem::zeroed() };
        let out = format_report(&["prog".into()], 0, Duration::from_millis(1500), &usage, &recs, 7);
        assert!(out.contains("exit status 0"), "{out}");
        assert!(out.contains("2 processes"), "{out}");
        assert!(out.contains("live at exit 10 B"), "{out}");
        assert!(out.contains("      16        2            3         48 B"), "{out}");
        assert!(out.contains("the 2 busiest of 2 used"), "{out}");
        let out = format_report(&["prog".into()], 0, Duration::ZERO, &usage, &recs, 1234);
        assert!(out.contains("live at exit 2.0 KiB"), "{out}");
    }

    #[test]
    fn the_class_table_keeps_the_busiest() {
        let classes: Vec<_> = (1..=40).map(|i| (i * 16, if i == 7 { 50 } else { 1 }, i)).collect();
        let top = busiest(&classes, 3);
        assert_eq!(top.len(), 3);
        assert!(top.contains(&(112, 50, 7)), "{top:?}");
        assert!(top.windows(2).all(|w| w[0].0 < w[1].0), "sorted by size: {top:?}");
    }

    #[test]
    fn no_record_is_explained() {
        // SAFETY: plain data.
        let usage: libc::rusage = unsafe { std::mem::zeroed() };
        let out = format_report(&["prog".into()], 0, Duration::ZERO, &usage, &[], 1);
        assert!(out.contains("no heap record"), "{out}");
    }

    #[test]
    fn figures_read_at_a_glance() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(count(12), "12");
    }
}
