//! `mallard run` end to end: the real binary, the real library, real programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// libmallard.so, built into a target directory of its own (a nested cargo on the outer
/// build's directory would wait for its lock).
fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
        let target = root.join("target/capi-test");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "mallard-capi", "--target-dir"])
            .arg(&target)
            .current_dir(&root)
            .status()
            .expect("run cargo")
            .success();
        assert!(ok, "building libmallard.so failed");
        target.join("release/libmallard.so")
    })
}

/// `mallard run --lib <lib> ARGS…`, not under cargo (so it does not try to build).
fn mallard_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mallard"))
        .arg("run")
        .arg("--lib")
        .arg(lib())
        .args(args)
        .env_remove("CARGO")
        .output()
        .expect("run mallard")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn python_runs_on_mallard_and_the_report_reads_at_a_glance() {
    let out = mallard_run(&["--", "python3", "-c", "d = {i: str(i) * 3 for i in range(200000)}; print(len(d))"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "200000");
    for want in [
        "mallard run: python3 -c",
        "exit status 0",
        "peak RSS",
        "peak in use",
        "live at exit",
        "segments",
        "remote frees",
        "size classes",
    ] {
        assert!(stderr.contains(want), "report lacks {want:?}:\n{stderr}");
    }
    // CPython's objects went through mallard (PYTHONMALLOC=malloc): the 48..80-byte classes
    // that hold small ints, strings and dict entries started many pages.
    let pages: i64 = stderr
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2 && f[0].parse::<i64>().is_ok()).then(|| f[1].replace(',', "").parse::<i64>().unwrap_or(0))
        })
        .sum();
    assert!(pages > 50, "too few pages for 200k Python objects: is PYTHONMALLOC=malloc set?\n{stderr}");
}

#[test]
fn the_exit_code_and_signals_are_passed_on() {
    let out = mallard_run(&["--quiet", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stderr.is_empty(), "--quiet prints nothing: {}", text(&out.stderr));
    let out = mallard_run(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("killed by signal 15"), "{}", text(&out.stderr));
}

#[test]
fn stats_adds_the_library_table() {
    // ls closes stderr in its own exit handler, before the library prints: the table must
    // still appear.
    let out = mallard_run(&["--stats", "--", "ls", "/"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("mallard statistics"), "{}", text(&out.stderr));
}

#[test]
fn a_missing_program_or_library_is_a_clear_error() {
    let out = mallard_run(&["--", "/nonexistent/program"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot run /nonexistent/program"), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(["run", "--lib", "/nonexistent/libmallard.so", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/libmallard.so is not a file"), "{}", text(&out.stderr));
}

/// `mallard bench --process --extra NAME=LIB` adds another C allocator (here: the same library
/// under another name), so two builds can be compared side by side.
#[test]
fn bench_process_runs_an_extra_library_as_a_column() {
    let bench = |extra: &str| {
        Command::new(env!("CARGO_BIN_EXE_mallard"))
            .args([
                "bench",
                "--process",
                "--smoke",
                "--only",
                "churn",
                "--allocators",
                "glibc,before",
                "--extra",
                extra,
            ])
            .env("MALLARD_LIB", lib())
            .env_remove("CARGO")
            .output()
            .expect("run mallard bench")
    };
    let out = bench(&format!("before={}", lib().display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| workload | glibc | before |"), "{}", text(&out.stdout));
    let bad = bench("no-equals-sign");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("want NAME=LIB"), "{}", text(&bad.stderr));
}

#[test]
fn a_run_of_several_processes_reports_one_row_each_and_warns_once() {
    // A shell that runs two programs, each its own process on the library; a bad option value.
    let out = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(["run", "--lib"])
        .arg(lib())
        .args(["--", "sh", "-c", "ls / > /dev/null; cat /dev/null; echo 'done it'"])
        .env_remove("CARGO")
        .env("MALLARD_PURGE_DELAY_MS", "soon")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches(r#"MALLARD_PURGE_DELAY_MS="soon" is not a whole number"#).count(), 1, "{stderr}");
    let typed = r#"mallard run: sh -c 'ls / > /dev/null; cat /dev/null; echo '\''done it'\'''"#;
    assert!(stderr.contains(typed), "quoted as typed: {stderr}");
    assert!(stderr.contains("3 processes on mallard"), "{stderr}");
    let table = stderr.split("processes, in the order they exited").nth(1).expect(&stderr);
    // (The rest of the title line, then the column heads.)
    let rows: Vec<&str> = table.lines().skip(2).take_while(|l| l.starts_with("    ")).collect();
    assert_eq!(rows.len(), 3, "{stderr}");
    // (`sh` may be dash or bash: its row names the file it runs.)
    for name in ["ls", "cat"] {
        assert!(rows.iter().any(|r| r.split_whitespace().nth(1) == Some(name)), "no row for {name}: {stderr}");
    }
    assert!(stderr.contains("the one mallard run started"), "{stderr}");
    assert!(!stderr.contains("1 heaps") && !stderr.contains("1 huge allocations"), "{stderr}");
}

#[test]
fn an_unknown_option_is_named() {
    let out = mallard_run(&["--unknown-flag", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unexpected argument '--unknown-flag'"), "{}", text(&out.stderr));
    // After the program's name, options are the program's.
    let out = mallard_run(&["--quiet", "--", "sh", "-c", "exit 0", "--unknown-flag"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn each_process_row_has_its_own_peak_rss() {
    // A Python that holds 200 MiB, then forks and execs `true`: the row of `true`
    // must not carry its parent's peak across fork and exec.
    let out = mallard_run(&[
        "--",
        "python3",
        "-c",
        "import os; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); pid = os.fork()\nif pid == 0: os.execv('/bin/true', ['true'])\nos.waitpid(pid, 0)",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let row = stderr
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("true"))
        .unwrap_or_else(|| panic!("no row for true: {stderr}"));
    // | pid | program | peak in use | peak RSS | RSS at exit |: the peak RSS cell in MiB, if MiB.
    let cells: Vec<&str> = row.split_whitespace().collect();
    let peak_rss = cells[4..6].join(" ");
    assert!(!peak_rss.ends_with("MiB") || peak_rss.trim_end_matches(" MiB").parse::<f64>().unwrap() < 50.0, "{row}");
    let python =
        stderr.lines().find(|l| l.split_whitespace().nth(1).is_some_and(|p| p.starts_with("python"))).expect(&stderr);
    assert!(python.contains("MiB"), "{python}");
}
