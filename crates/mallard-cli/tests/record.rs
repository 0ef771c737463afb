//! `mallard record` on real programs: threads, a fork, CPython; what it writes must read back
//! and replay.

use mallard_lab::trace::{self, Op};
use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mallard-cli-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn mallard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mallard")).args(args).output().expect("runs mallard")
}

#[test]
fn threads_and_a_fork_are_recorded_each_where_they_belong() {
    let exe = scratch("threads_fork");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/threads_fork.c");
    let cc = Command::new("cc").args(["-O1", "-pthread", "-o"]).arg(&exe).arg(src).status().expect("cc");
    assert!(cc.success());
    let out = scratch("threads.trace");
    let r = mallard(&["record", "-o", out.to_str().unwrap(), "--", exe.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "the program's exit code is passed on: {err}");
    assert!(err.contains("wrote") && err.contains("1 other processes"), "{err}");
    let t = trace::read(&out).unwrap();
    // The main thread's 400 blocks of 808 bytes (a size nothing else asks for), freed by the
    // workers.
    let allocs = |t: &trace::Trace, size: u64| {
        t.events.iter().filter(|e| matches!(e.op, Op::Alloc { size: s, .. } if s == size)).count()
    };
    assert_eq!(allocs(&t, 808), 400);
    let mut threads: Vec<u32> = t.events.iter().map(|e| e.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    assert!(threads.len() >= 5, "the main thread and 4 workers: {threads:?}");
    let f = mallard_lab::replay::replay(&t, "first-fit", &mut |_, _| {}).unwrap();
    assert!(f.peak_live >= 400 * 808);
    // Every free matches an allocation of the trace, except frees of blocks made before
    // recording began (by the C library's start-up).
    assert!(f.unmatched_frees < 20, "{} unmatched frees", f.unmatched_frees);
    // The child wrote its own trace: its 10 blocks of 1000 bytes, none of the parent's.
    let child = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("threads.trace."))
        .expect("the child's trace");
    let c = trace::read(&child).unwrap();
    assert_eq!(allocs(&c, 1000), 10);
    assert_eq!(allocs(&c, 808), 0, "the parent's events stay in the parent's trace");
    assert_eq!(allocs(&t, 1000), 0);
}

#[test]
fn a_cpython_run_is_recorded_and_replays() {
    let out = scratch("py.trace");
    let r = mallard(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        "python3",
        "-c",
        "d = {i: str(i) * 3 for i in range(50000)}; print(len(d))",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "50000");
    // `python3` may be a shim (pyenv's) that runs the interpreter in a child process, which
    // writes its own FILE.PID: the interpreter's trace is the largest of the run.
    let largest = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("py.trace"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let t = trace::read(&largest).unwrap();
    assert!(t.events.len() > 100_000, "{} events", t.events.len());
    let f = mallard_lab::replay::replay(&t, "segregated", &mut |_, _| {}).unwrap();
    assert!(f.peak_live > 2 << 20, "the dict and its strings: {} bytes live at the peak", f.peak_live);
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let r = mallard(&["record", "-o", scratch("none.trace").to_str().unwrap(), "--", "/nonexistent/program"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("cannot run /nonexistent/program"), "{err}");
}

#[test]
fn the_report_names_the_leaking_function_and_the_stack_candidate() {
    let exe = scratch("leaks");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/leaks.c");
    let cc = Command::new("cc").args(["-O0", "-fno-omit-frame-pointer", "-o"]).arg(&exe).arg(src).status().expect("cc");
    assert!(cc.success());
    let out = scratch("leaks.trace");
    let r = mallard(&["record", "-o", out.to_str().unwrap(), "--", exe.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = mallard(&["report", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    let section =
        |name: &str| text.split("## ").find(|s| s.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    let leaks = section("Leaks");
    assert!(leaks.contains("| leaky_function (leaks) ← main (leaks)") && leaks.contains("| 100 |"), "{leaks}");
    assert!(!leaks.contains("temp_user"), "{leaks}");
    let stack = section("Stack candidates");
    assert!(stack.contains("| temp_user (leaks) ← main (leaks)") && stack.contains("| 32 | 1000 | 1000 |"), "{stack}");
    assert!(!stack.contains("leaky_function"), "{stack}");
}

#[test]
fn a_sqlite3_run_is_recorded_and_replays_with_first_fit_ahead_of_buddy() {
    let out = scratch("sqlite3.trace");
    let sql = "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); \
               WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) \
               INSERT INTO t SELECT x, printf('%.*c', x % 500, 'z') FROM c; \
               CREATE INDEX t_b ON t(b); DELETE FROM t WHERE a % 3 = 0; SELECT count(*) FROM t;";
    let r = mallard(&["record", "-o", out.to_str().unwrap(), "--", "sqlite3", ":memory:", sql]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "13334");
    let t = trace::read(&out).unwrap();
    assert!(t.events.len() > 10_000, "{} events", t.events.len());
    assert!(t.maps.contains("sqlite"), "the memory map names sqlite3's library");
    let frag = |s: &str| mallard_lab::replay::replay(&t, s, &mut |_, _| {}).unwrap().frag_at_peak;
    assert!(frag("first-fit") < frag("buddy"), "first fit {} against buddy {}", frag("first-fit"), frag("buddy"));
}
