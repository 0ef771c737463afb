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

/// `tests/programs/SRC` built with `compiler` and `flags` into the scratch directory as `name`.
fn build(compiler: &str, flags: &[&str], src: &str, name: &str) -> PathBuf {
    let exe = scratch(name);
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs")).join(src);
    let ok = Command::new(compiler).args(flags).arg("-o").arg(&exe).arg(&src).status();
    assert!(ok.unwrap_or_else(|e| panic!("cannot run {compiler}: {e}")).success(), "{compiler} {}", src.display());
    exe
}

/// `mallard record -o OUT -- CMD...` (failing the test on a hang).
fn record_into(out: &std::path::Path, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["record", "-o", out.to_str().unwrap(), "--"];
    args.extend_from_slice(cmd);
    mallard_or_hang(&args)
}

/// `mallard ARGS`, failing the test if it has not finished after two minutes (a hang: the
/// figure is far above any run's time, so it never decides a passing run).
fn mallard_or_hang(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs mallard");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = Command::new("pkill").args(["-KILL", "-P", &child.id().to_string()]).status();
            let _ = child.kill();
            panic!("mallard {args:?} hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `tests/programs/endings.c`, built once.
fn endings() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build("cc", &["-O1", "-pthread"], "endings.c", "endings")).clone()
}

/// Records `endings MODE` into its own trace; the run's output and the trace's path.
fn record_ending(mode: &str) -> (std::process::Output, PathBuf) {
    let out = scratch(&format!("ending-{mode}.trace"));
    let r = record_into(&out, &[endings().to_str().unwrap(), mode]);
    (r, out)
}

fn allocs(t: &trace::Trace, size: u64) -> usize {
    t.events.iter().filter(|e| matches!(e.op, Op::Alloc { size: s, .. } if s == size)).count()
}

#[test]
fn a_rust_program_is_recorded_and_does_not_hang() {
    // mallard itself is a Rust program: std's start-up asks glibc for the main thread's stack
    // (pthread_getattr_np, which allocates while it holds a lock).
    let out = scratch("rust.trace");
    let r = record_into(&out, &[env!("CARGO_BIN_EXE_mallard"), "--version"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("mallard "));
    let t = trace::read(&out).unwrap();
    assert!(!t.events.is_empty());
    assert!(t.events.iter().any(|e| !e.stack.is_empty()), "call sites were walked");
}

#[test]
fn a_c_program_whose_first_call_is_pthread_getattr_np_is_recorded() {
    let (r, out) = record_ending("getattr");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(allocs(&trace::read(&out).unwrap(), 1111), 11);
}

#[test]
fn a_thread_still_running_at_exit_loses_no_event() {
    let (r, out) = record_ending("thread-alive");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(allocs(&trace::read(&out).unwrap(), 4242), 3000);
}

#[test]
fn a_child_that_leaves_with_exit_underscore_writes_its_events() {
    let (r, out) = record_ending("fork-_exit");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("1 other process wrote"), "{err}");
    let name = out.file_name().unwrap().to_str().unwrap().to_owned() + ".";
    let child = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&name))
        .expect("the child's trace");
    let c = trace::read(&child).unwrap();
    assert_eq!(allocs(&c, 3131), 77);
    assert!(!c.maps.is_empty(), "the child's memory map is written too");
}

#[test]
fn a_fatal_signal_loses_no_event() {
    for (mode, signal) in [("abort", 6), ("segv", 11), ("term", 15)] {
        let (r, out) = record_ending(mode);
        assert_eq!(r.status.code(), Some(128 + signal), "{mode}: {}", String::from_utf8_lossy(&r.stderr));
        let t = trace::read(&out).unwrap();
        assert_eq!(allocs(&t, 2727), 55, "{mode}");
        assert!(!t.maps.is_empty(), "{mode}: the memory map is written too");
    }
}

#[test]
fn an_exec_keeps_the_events_of_the_program_before_it() {
    let (r, out) = record_ending("exec");
    assert_eq!(r.status.code(), Some(7), "{}", String::from_utf8_lossy(&r.stderr));
    let images = trace::read_images(&out).unwrap();
    assert_eq!(images.len(), 2, "endings, then sh");
    assert_eq!(allocs(&images[0], 1919), 33);
    assert!(images[0].maps.contains("endings") && images[1].maps.contains("sh"));
    assert_eq!(allocs(&images[1], 1919), 0);
    // The report shows the last program by default, any other with --image.
    let r = mallard(&["report", out.to_str().unwrap(), "--image", "0", "--json", "-"]);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON");
    assert_eq!((j["image"].as_u64(), j["program"].as_str()), (Some(0), Some("endings")));
    let r = mallard(&["report", out.to_str().unwrap(), "--image", "2"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("holds 2 images (0 to 1)"));
}

#[test]
fn quick_exit_and_daemon_lose_no_event() {
    let (r, out) = record_ending("quick-exit");
    assert_eq!(r.status.code(), Some(5), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(allocs(&trace::read(&out).unwrap(), 2323), 22);
    // daemon() ends the parent inside glibc; its events are in FILE, the child's in FILE.PID.
    let (r, out) = record_ending("daemon");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let t = trace::read(&out).unwrap();
    assert_eq!(allocs(&t, 1717), 17);
    assert!(!t.maps.is_empty());
}

#[test]
fn the_trace_never_writes_into_a_program_s_own_descriptors() {
    // The program closes every descriptor it did not open, then opens a file of its own, which
    // gets the number the trace had.
    let file = scratch("closefds.txt");
    let out = scratch("closefds.trace");
    let r = record_into(&out, &[endings().to_str().unwrap(), "closefds", file.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    assert_eq!(allocs(&trace::read(&out).unwrap(), 2121), 40);
}

#[test]
fn malloc_is_no_cancellation_point_and_a_failed_exec_loses_nothing() {
    let (r, _) = record_ending("cancel");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "returned\n", "{}", String::from_utf8_lossy(&r.stderr));
    // Every event of the threads that ran through 200 failed execs.
    let (r, out) = record_ending("exec-fails");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let images = trace::read_images(&out).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(allocs(&images[0], 5020), 40000);
}

#[test]
fn a_program_that_removes_its_trace_still_gets_its_exit_status_passed_on() {
    let (r, _) = record_ending("unlink-trace");
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{err}");
    assert!(err.contains("removed or renamed"), "{err}");
}

#[test]
fn a_file_size_limit_stops_the_recording_not_the_program() {
    let (r, out) = record_ending("fsize");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout), "done\n");
    assert!(std::fs::metadata(&out).unwrap().len() <= 64 << 10);
    trace::read(&out).expect("the trace ends after a whole chunk");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("has no memory map"), "the summary says so: {err}");
}

/// The recorded program sees the signal dispositions it would see without the recorder: the
/// ones this test inherited (so the check holds under `nohup`, which ignores SIGHUP, or in a
/// background job, which ignores SIGINT), compared with a run of the same program without it.
#[test]
fn the_program_still_sees_the_default_signal_dispositions() {
    let plain = Command::new(endings()).arg("signals").output().expect("runs endings");
    let (r, _) = record_ending("signals");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let expected = String::from_utf8_lossy(&plain.stdout);
    assert!(expected.contains("SIGUSR1 handled\nSIGUSR1 handler ours\n"), "the control run: {expected}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), expected);
    // CPython installs its KeyboardInterrupt handler only where SIGINT is at the default.
    let py = ["-c", "import signal as s; print(s.getsignal(s.SIGINT).__name__, s.getsignal(s.SIGTERM) == s.SIG_DFL)"];
    let plain = Command::new("python3").args(py).output().expect("runs python3");
    let out = scratch("py-signals.trace");
    let r = record_into(&out, &["python3", py[0], py[1]]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&plain.stdout));
}

#[test]
fn a_bad_output_path_is_reported_before_the_program_runs() {
    let marker = scratch("bad-output-ran");
    let touch = format!("touch {}", marker.display());
    let dir = scratch("");
    for (path, reason) in
        [("/nonexistent/dir/x.trace", "No such file or directory"), (dir.to_str().unwrap(), "it is a directory")]
    {
        let r = mallard(&["record", "-o", path, "--", "sh", "-c", &touch]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("mallard: cannot write {}", path.trim_end_matches('/'))), "{err}");
        assert!(err.contains(reason), "{err}");
        assert!(!marker.exists(), "the program ran");
    }
    let r = mallard(&["replay", "--html", "/nonexistent/dir/x.html", "/nonexistent/trace"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot write /nonexistent/dir/x.html"));
    let r = mallard(&["bench", "--smoke", "--json", "/nonexistent/dir/x.json"]);
    assert!(String::from_utf8_lossy(&r.stderr).starts_with("mallard: cannot write /nonexistent/dir/x.json"));
}

#[test]
fn threads_and_a_fork_are_recorded_each_where_they_belong() {
    let exe = build("cc", &["-O1", "-pthread"], "threads_fork.c", "threads_fork");
    let out = scratch("threads.trace");
    let r = record_into(&out, &[exe.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "the program's exit code is passed on: {err}");
    assert!(err.contains("wrote") && err.contains("1 other process wrote"), "{err}");
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
    // The report reads the run's traces together: one row per process, on one clock.
    let r = mallard(&["report", out.to_str().unwrap(), "--json", "-"]);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON");
    let procs = j["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 2, "{procs:?}");
    assert!(procs.iter().all(|p| p["program"] == "threads_fork" && p["start_ns"].as_u64() > Some(0)), "{procs:?}");
    assert_ne!(procs[0]["pid"], procs[1]["pid"]);
    let r = mallard(&["report", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stdout).contains("## Processes of the run"));
}

#[test]
fn a_cpython_run_is_recorded_and_replays() {
    let out = scratch("py.trace");
    let r = record_into(&out, &["python3", "-c", "d = {i: str(i) * 3 for i in range(50000)}; print(len(d))"]);
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
    // The resident set was noted while it allocated, and held the dict.
    assert!(t.start_ns > 0);
    assert!(t.rss.iter().any(|&(_, b)| b > 4 << 20), "{:?}", t.rss);
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
    let exe = build("cc", &["-O0", "-fno-omit-frame-pointer"], "leaks.c", "leaks");
    let out = scratch("leaks.trace");
    let r = record_into(&out, &[exe.to_str().unwrap()]);
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
    // (How many were freed within 100 µs depends on the machine's load: at least 90 % of them.)
    assert!(stack.contains("| temp_user (leaks) ← main (leaks)") && stack.contains("| 32 | 1000 |"), "{stack}");
    assert!(!stack.contains("leaky_function"), "{stack}");
}

#[test]
fn a_sqlite3_run_is_recorded_and_replays_with_first_fit_ahead_of_buddy() {
    let out = scratch("sqlite3.trace");
    let sql = "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); \
               WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) \
               INSERT INTO t SELECT x, printf('%.*c', x % 500, 'z') FROM c; \
               CREATE INDEX t_b ON t(b); DELETE FROM t WHERE a % 3 = 0; SELECT count(*) FROM t;";
    let r = record_into(&out, &["sqlite3", ":memory:", sql]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "13334");
    let t = trace::read(&out).unwrap();
    assert!(t.events.len() > 10_000, "{} events", t.events.len());
    assert!(t.maps.contains("sqlite"), "the memory map names sqlite3's library");
    let frag = |s: &str| mallard_lab::replay::replay(&t, s, &mut |_, _| {}).unwrap().frag_at_peak;
    assert!(frag("first-fit") < frag("buddy"), "first fit {} against buddy {}", frag("first-fit"), frag("buddy"));
}

#[test]
fn call_sites_name_file_and_line_with_debug_info_and_module_offsets_when_stripped() {
    let debug = build("cc", &["-O0", "-g", "-fno-omit-frame-pointer"], "leaks.c", "leaks_g");
    let stripped = scratch("leaks_stripped");
    std::fs::copy(&debug, &stripped).unwrap();
    assert!(Command::new("strip").arg(&stripped).status().expect("strip").success());
    let leak_row = |exe: &PathBuf| {
        let out = exe.with_extension("trace");
        let r = record_into(&out, &[exe.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let r = mallard(&["report", out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&r.stdout).into_owned();
        let leaks = text.split("## ").find(|s| s.starts_with("Leaks")).expect("a leaks section").to_owned();
        let row = leaks.lines().find(|l| l.contains("| 100 |")).unwrap_or_else(|| panic!("{leaks}"));
        // | # | call site | blocks | bytes |
        row.split(" | ").nth(1).unwrap_or_else(|| panic!("{row}")).to_owned()
    };
    let row = leak_row(&debug);
    assert!(row.starts_with("leaky_function (leaks.c:6) ← main (leaks.c:8)"), "{row}");
    // Stripped: `module+0xADDR`, and binutils' addr2line finds the function at ADDR - 1 in the
    // unstripped copy.
    let row = leak_row(&stripped);
    let first = row.split(" ← ").next().unwrap();
    let offset = first.strip_prefix("leaks_stripped+0x").unwrap_or_else(|| panic!("{row}"));
    let ret = u64::from_str_radix(offset, 16).unwrap();
    let a2l = Command::new("addr2line").args(["-f", "-e"]).arg(&debug).arg(format!("{:#x}", ret - 1)).output();
    let a2l = String::from_utf8_lossy(&a2l.expect("addr2line").stdout).into_owned();
    assert!(a2l.starts_with("leaky_function\n") && a2l.contains("leaks.c:6"), "{a2l}");
}

/// `tests/programs/leaks.c` built with debug info and frame pointers, recorded once.
fn leaks_trace() -> PathBuf {
    static DONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let exe = build("cc", &["-O0", "-g", "-fno-omit-frame-pointer"], "leaks.c", "leaks_views");
        let out = scratch("leaks_views.trace");
        let r = record_into(&out, &[exe.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        out
    })
    .clone()
}

#[test]
fn the_report_shows_what_was_live_at_the_peak_and_the_leaks_with_full_stacks() {
    let r = mallard(&["report", leaks_trace().to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    let section =
        |name: &str| text.split("\n## ").find(|s| s.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    // At the peak: the 100 leaked blocks of 48 bytes, and one block of temp_user's.
    let peak = section("Live at the peak");
    let row = peak.lines().find(|l| l.contains("leaky_function (leaks.c:6) ← main (leaks.c:8)")).expect(peak);
    assert!(row.contains("| 100 | 4.7 KiB |"), "{row}");
    let id = row.trim_start_matches("| ").split(' ').next().unwrap();
    let stacks = section("Stacks");
    let stack = stacks.split("**#").find(|s| s.starts_with(&format!("{id}**"))).expect(stacks);
    assert!(stack.contains("    leaky_function (leaks.c:6)\n    main (leaks.c:8)\n"), "{stack}");
}

#[test]
fn the_report_exports_json_and_collapsed_stacks() {
    let t = leaks_trace();
    let r = mallard(&["report", t.to_str().unwrap(), "--json", "-"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON on stdout, nothing else");
    assert_eq!(j["schema"], 1);
    assert_eq!(
        j["leaked"]["blocks"].as_u64(),
        Some(
            100 + j["sites"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| !s["stack"][0].as_str().unwrap_or("").starts_with("leaky"))
                .map(|s| s["leaked"]["blocks"].as_u64().unwrap())
                .sum::<u64>()
        )
    );
    let leaky = j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stack"][0] == "leaky_function (leaks.c:6)")
        .expect("the site");
    assert_eq!(leaky["leaked"], serde_json::json!({"blocks": 100, "bytes": 4800}));
    assert_eq!(leaky["allocated"], serde_json::json!({"blocks": 100, "bytes": 4800}));
    assert_eq!(leaky["stack"][1], "main (leaks.c:8)");
    assert!(j["timeline"]["live"].as_array().unwrap().len() == 1000 && j["peak"]["bytes"].as_u64() >= Some(4800));
    let r = mallard(&["report", t.to_str().unwrap(), "--folded", "-", "--by", "leaked"]);
    let folded = String::from_utf8_lossy(&r.stdout);
    assert!(
        folded.lines().any(|l| l.ends_with(";main (leaks.c:8);leaky_function (leaks.c:6) 4800")),
        "outer;...;inner bytes: {folded}"
    );
    assert!(folded.lines().all(|l| l.rsplit_once(' ').is_some_and(|(_, n)| n.parse::<u64>().is_ok())));
    let r = mallard(&["report", t.to_str().unwrap(), "--folded", "-", "--by", "everything"]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--by \"everything\""));
}

#[test]
fn a_diff_of_two_traces_names_the_site_that_grew() {
    let (r, small) = record_ending("abort");
    assert_eq!(r.status.code(), Some(134));
    let (_, big) = record_ending("thread-alive");
    let r = mallard(&["report", small.to_str().unwrap(), big.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    let grown = text.split("## Grown").nth(1).expect("a Grown section");
    let first = grown.lines().find(|l| l.starts_with("| make")).expect("make grew");
    // 55 blocks of 2727 bytes live at the peak before, 3000 of 4242 after.
    assert!(first.contains("146.5 KiB → 12.1 MiB"), "{first}");
    let r = mallard(&["report", small.to_str().unwrap(), big.to_str().unwrap(), "--json", "-"]);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["sites"][0]["stack"][0].as_str().map(|s| s.starts_with("make")), Some(true), "{j}");
    assert_eq!(j["sites"][0]["before"]["live_at_peak"], 55 * 2727);
    assert_eq!(j["sites"][0]["after"]["live_at_peak"], 3000 * 4242);
}

#[test]
fn the_report_page_renders_in_headless_chromium_and_stays_small() {
    let (html, shot) = (scratch("leaks.html"), scratch("leaks.png"));
    let r = mallard(&["report", leaks_trace().to_str().unwrap(), "--html", html.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("NaN") && !page.contains("inf<"), "no broken numbers");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "self-contained");
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("the HTML test needs Chromium: apt-get install chromium");
    let run = |extra: &[&str]| {
        Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"])
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .expect("runs chromium")
    };
    let dom = String::from_utf8_lossy(&run(&["--dump-dom"]).stdout).into_owned();
    for text in [
        "Live bytes over time",
        "Flame graph: bytes live at the peak",
        "Leaks: never freed",
        "leaky_function (leaks.c:6)",
        "peak: ",
    ] {
        assert!(dom.contains(text), "{text} is not in the rendered page");
    }
    let out = run(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(info.color_type.samples()).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let inked = pixels.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    assert!(colours.len() > 50 && inked * 20 > pixels.len(), "{} colours, {inked} pixels drawn", colours.len());

    // A trace of a million events gives a page under 2 MB.
    let (big, big_html) = (scratch("million.trace"), scratch("million.html"));
    let r = mallard(&["lab", "gen", "--events", "1000000", "-o", big.to_str().unwrap()]);
    assert!(r.status.success());
    let r = mallard(&["report", big.to_str().unwrap(), "--html", big_html.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let size = std::fs::metadata(&big_html).unwrap().len();
    assert!(size < 2_000_000, "{size} bytes");
}

#[test]
fn record_replaces_only_traces_and_report_refuses_what_is_no_trace() {
    // A device node as -o: refused, and left alone.
    let dev = scratch("a-device");
    if !dev.exists() {
        let _ = Command::new("mknod").arg(&dev).args(["c", "1", "3"]).status();
    }
    if dev.exists() {
        let r = record_into(&dev, &["true"]);
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("not a regular file"),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        use std::os::unix::fs::FileTypeExt as _;
        assert!(std::fs::metadata(&dev).unwrap().file_type().is_char_device(), "the device is still there");
    }
    // `-o data` replaces data and data.PID traces of an earlier run, never other data.NNNN files.
    let data = scratch("data");
    let other = scratch("data.1234");
    std::fs::write(&other, "a user's file").unwrap();
    let r = record_into(&data, &["true"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "a user's file");
    // Reading: a device or a FIFO is refused at once (it would be read forever, or block).
    let r = mallard(&["report", "/dev/zero"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("not a regular file"), "{err}");
    // An output may not be the trace read, nor named twice.
    let t = leaks_trace();
    let r = mallard(&["report", t.to_str().unwrap(), "--json", t.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("an output would overwrite it"));
    let o = scratch("twice.json");
    let r = mallard(&["report", t.to_str().unwrap(), "--json", o.to_str().unwrap(), "--folded", o.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("named by two outputs"));
    // A reader that goes away is no crash.
    let sh = format!("{} report {} --json - | head -c 1 >/dev/null", env!("CARGO_BIN_EXE_mallard"), t.display());
    let r = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert!(!String::from_utf8_lossy(&r.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn a_binary_changed_after_the_recording_is_named_not_misread() {
    let exe = build("cc", &["-O0", "-g", "-fno-omit-frame-pointer"], "leaks.c", "leaks_rebuilt");
    let out = scratch("leaks_rebuilt.trace");
    let r = record_into(&out, &[exe.to_str().unwrap()]);
    assert!(r.status.success());
    // Rebuilt after the trace was written (a later modification time).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options().write(true).open(&exe).unwrap().set_modified(later).unwrap();
    let r = mallard(&["report", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("Changed since the recording") && text.contains("leaks_rebuilt"), "{text}");
    assert!(text.contains("leaks_rebuilt+0x"), "frames as module+offset: {text}");
}

#[test]
fn cxx_template_frames_are_demangled() {
    let exe = build("c++", &["-O1", "-g", "-fno-omit-frame-pointer"], "templates.cpp", "templates");
    let out = scratch("templates.trace");
    let r = record_into(&out, &[exe.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = mallard(&["report", out.to_str().unwrap(), "--folded", "-"]);
    let folded = String::from_utf8_lossy(&r.stdout);
    assert!(folded.contains("std::make_shared<"), "{folded}");
    let mangled: Vec<&str> = folded.lines().flat_map(|l| l.split(';')).filter(|f| f.starts_with("_Z")).collect();
    assert!(mangled.is_empty(), "still mangled: {mangled:?}");
}
