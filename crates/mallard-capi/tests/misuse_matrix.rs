//! Misuse that comes in many shapes, each run in a child process on `libmallard.so` and on the
//! secure build, which must abort with exactly one line `mallard: <what> at 0x<address>`:
//! - `tests/misuse/matrix/corrupt_metadata.c`: every metadata word a block overflow or
//!   underflow can reach (chunk headers, footers, links, canaries; a small free block's link
//!   and free mark) written over with several byte patterns, then the heap used on. No such
//!   corruption may go unseen, crash, hang or panic;
//! - `tests/misuse/matrix/double_free_retired.c`: a double free after the block's page went
//!   back to its segment, after its memory was purged, and after the page serves another
//!   size; small and medium pages; by the owner thread and by another.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn compile(name: &str) -> PathBuf {
    let dir = support::scratch(&format!("matrix-{name}"));
    let exe = dir.join(name);
    let src = support::workspace().join(format!("tests/misuse/matrix/{name}.c"));
    let out = support::output(
        Command::new("gcc")
            .args(["-O1", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-pthread"])
            .arg(&src)
            .arg("-o")
            .arg(&exe),
    );
    assert!(out.status.success(), "compiling {name}.c failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// What one run did.
enum Ran {
    /// The one-line report and SIGABRT, as wanted.
    Reported,
    /// Exit 3: the program could not set up its case (it says why); not a verdict.
    NotReached(String),
    /// Anything else, described.
    Wrong(String),
}

fn run(exe: &Path, lib: &Path, args: &[&str]) -> Ran {
    let out = support::output(
        Command::new(exe).args(args).env("LD_PRELOAD", lib).env("RUST_BACKTRACE", "0").stdin(Stdio::null()),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(3) {
        return Ran::NotReached(stdout.trim().to_string());
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let one_line = lines.len() == 1
        && lines[0].starts_with("mallard: ")
        && lines[0].contains(" at 0x")
        && !lines[0].contains("panic");
    if out.status.signal() == Some(libc::SIGABRT) && one_line {
        Ran::Reported
    } else {
        Ran::Wrong(format!(
            "signal {:?} exit {:?}; stdout: {}; stderr: {}",
            out.status.signal(),
            out.status.code(),
            stdout.trim(),
            stderr.trim()
        ))
    }
}

fn libs() -> [(&'static str, &'static Path); 2] {
    [("libmallard.so", support::lib()), ("libmallard_secure.so", support::secure_lib())]
}

#[test]
fn every_reachable_metadata_word_corrupted_is_reported() {
    let exe = compile("corrupt_metadata");
    let words = ["canary", "size", "next", "prev", "footer", "csize", "link", "mark"];
    let patterns = ["00", "01", "10", "41", "ff"];
    let (mut failures, mut reported) = (Vec::new(), 0);
    for (name, lib) in libs() {
        for word in words {
            for pattern in patterns {
                match run(&exe, lib, &[word, pattern]) {
                    Ran::Reported => reported += 1,
                    // A word that already holds the pattern is not corrupted by it (a null link).
                    Ran::NotReached(why) if why.contains("already holds") => {}
                    Ran::NotReached(why) => failures.push(format!("{name} {word} {pattern}: not reached: {why}")),
                    Ran::Wrong(what) => failures.push(format!("{name} {word} {pattern}: {what}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) not reported:\n{}", failures.len(), failures.join("\n"));
    assert!(reported >= 70, "only {reported} cases ran to a report");
}

#[test]
fn a_double_free_after_the_page_was_retired_is_reported() {
    let exe = compile("double_free_retired");
    let mut failures = Vec::new();
    for (name, lib) in libs() {
        for kind in ["small", "medium"] {
            for when in ["retire", "purge", "reuse"] {
                for who in ["owner", "other"] {
                    match run(&exe, lib, &[kind, when, who]) {
                        Ran::Reported => {}
                        Ran::NotReached(why) => {
                            failures.push(format!("{name} {kind} {when} {who}: not reached: {why}"))
                        }
                        Ran::Wrong(what) => failures.push(format!("{name} {kind} {when} {who}: {what}")),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) not reported:\n{}", failures.len(), failures.join("\n"));
}
