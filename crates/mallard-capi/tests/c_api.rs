//! libmallard.so from C and C++: the programs in `tests/cases/` are compiled with gcc/g++ and
//! run with the library preloaded (or linked, or dlopened), each with a timeout.
//!
//! - `contract.c`: the glibc contract of the malloc family and mallard's own API, as numbered
//!   checks (also run on glibc itself, which keeps the checks honest);
//! - `threads.c`, `fork.c`, `tls_dtor.c`: cross-thread frees and thread churn, fork from a busy
//!   multi-threaded parent, allocation in other libraries' thread-exit destructors;
//! - `large_remote.c`: large blocks freed by other threads while empty chunk segments come due
//!   for purge;
//! - `idle.c`: free memory goes back while every thread sits idle (the background purger),
//!   also across `fork` and when `main` calls `pthread_exit`;
//! - `page_churn.c` under `page_size_shim.c`: a kernel with 16 or 64 KiB pages (aarch64), with
//!   every madvise, mprotect, munmap and mremap checked against them, and the contents too;
//! - `dlopen.c`: the library dlopened by a program that does not use it as its malloc;
//! - `cxx.cpp`: every `operator new`/`delete`, `std::bad_alloc`, new-handlers, the STL;
//! - `cxx_plugin.cpp`, `cxx_plugin_host.c`: the same out of memory in C++ code that a C
//!   program loads with dlopen;
//! - `misuse.c`: bad frees and double frees, each reported in one line before an abort;
//! - the environment variables `MALLARD_STATS`, `MALLARD_VERBOSE`, `MALLARD_PURGE_DELAY_MS`.
//!
//! gcc and g++ are required: without them the tests fail and say how to install them.
//!
//! With `MALLARD_TEST_TARGET` (tests/support) the library and the programs are built for
//! another target and run under an emulator. scripts/test-aarch64 runs them so under qemu-user,
//! all but three: `preloading_loads_no_unwinder_library` (it runs the host's `cat`),
//! `fork_from_busy_threads` (qemu-user 7.2 itself fails an assertion when a multi-threaded
//! program forks) and `idle_program_gets_its_free_memory_back` (the RSS it reads is the
//! emulator's, with its translated code).

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A program that runs longer than this is killed (with its process group) and fails.
const TIMEOUT: Duration = Duration::from_secs(120);

fn cases() -> PathBuf {
    support::workspace().join("tests/cases")
}

fn lib_dir() -> PathBuf {
    support::lib().parent().expect("the library has a directory").to_path_buf()
}

/// Checks once that `compiler` runs; panics with how to install it if not.
fn require_compiler(compiler: &str) {
    static FOUND: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if found.iter().any(|c| c == compiler) {
        return;
    }
    let ok = Command::new(compiler)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{compiler}` is needed to build the C/C++ test programs of libmallard.so and was not found: install it \
         (Debian/Ubuntu: `sudo apt-get install build-essential`)"
    );
    found.push(compiler.to_string());
}

/// Compiles `tests/cases/<source>` (C with gcc, C++ with g++) with `-O2 -g -pthread -Wall` and
/// `extra` flags, into a scratch directory named `name`; returns the program's path. Each
/// name is built once per test run, however many tests use it.
fn build(name: &str, source: &str, extra: &[&str]) -> PathBuf {
    type Slot = Arc<OnceLock<PathBuf>>;
    static BUILT: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let slot = {
        let mut map = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    };
    slot.get_or_init(|| {
        let cxx = source.ends_with(".cpp");
        let compiler = support::compiler(cxx);
        require_compiler(&compiler);
        let dir = support::scratch(&format!("bin-{name}"));
        let exe = dir.join(name);
        let mut cmd = Command::new(&compiler);
        cmd.args(["-O2", "-g", "-pthread", "-Wall"]);
        if cxx {
            cmd.arg("-std=c++17");
        } else {
            cmd.arg("-std=gnu11");
        }
        cmd.arg(cases().join(source)).arg("-o").arg(&exe).args(extra).arg("-ldl");
        let out = support::output(&mut cmd);
        assert!(
            out.status.success(),
            "compiling {source} failed: {cmd:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
    .clone()
}

/// What a program did.
struct Run {
    cmd: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Run {
    fn exited_ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }

    /// The whole story, for failure messages.
    fn describe(&self) -> String {
        let status = match self.status {
            None => format!("killed after the {} s timeout", TIMEOUT.as_secs()),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (_, Some(sig)) => {
                    format!("killed by signal {sig}{}", if s.core_dumped() { " (core dumped)" } else { "" })
                }
                _ => format!("{s}"),
            },
        };
        let mut d = format!("$ {}\n{status} after {:.2} s\n", self.cmd, self.secs);
        let _ = write!(d, "--- stdout ---\n{}--- stderr ---\n{}--- end ---", tail(&self.stdout), tail(&self.stderr));
        d
    }
}

/// The last 20000 bytes of `s` (failure messages stay readable).
fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(20_000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` in `dir` with stdout and stderr into files of its own there, in a process group
/// of its own that is killed whole after `TIMEOUT`, and with core dumps off (the misuse cases
/// abort on purpose).
fn run_in(dir: &Path, mut cmd: Command) -> Run {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("run{n}.stdout"));
    let err_path = dir.join(format!("run{n}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .current_dir(dir)
        .process_group(0);
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the test program") {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            // SAFETY: kill(2) of the process group this test created for the child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Run { cmd: shown, status, stdout: read(&out_path), stderr: support::program_stderr(read(&err_path)), secs }
}

/// Runs `exe args` with libmallard.so preloaded and `env` set. The C programs check that
/// mallard is really loaded (`MALLARD_TEST_REQUIRE=1`, see `tests/cases/common.h`).
fn run_preloaded(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = support::preloaded(exe);
    cmd.args(args).env("MALLARD_TEST_REQUIRE", "1");
    for &(k, v) in env {
        // (Another LD_PRELOAD is for the program, not for an emulator running it.)
        if k == "LD_PRELOAD" {
            support::program_env(&mut cmd, k, v);
        } else {
            cmd.env(k, v);
        }
    }
    for v in ["MALLARD_STATS", "MALLARD_VERBOSE", "MALLARD_PURGE_DELAY_MS", "MALLARD_PURGE_THREAD"] {
        if !env.iter().any(|(k, _)| *k == v) {
            cmd.env_remove(v);
        }
    }
    run_in(exe.parent().expect("program directory"), cmd)
}

/// Runs `exe args` without preloading anything.
fn run_plain(exe: &Path, args: &[&str]) -> Run {
    let mut cmd = support::command(exe);
    cmd.args(args).env_remove("LD_PRELOAD").env_remove("MALLARD_TEST_REQUIRE");
    run_in(exe.parent().expect("program directory"), cmd)
}

fn assert_ok(what: &str, run: &Run) {
    assert!(run.exited_ok(), "{what} failed\n{}", run.describe());
    eprintln!("{what}: ok in {:.2} s", run.secs);
}

/// The lines of a contract run that report failed checks.
fn failed_checks(run: &Run) -> String {
    run.stdout.lines().filter(|l| l.starts_with("FAIL")).collect::<Vec<_>>().join("\n")
}

// ---- the contract ----

#[test]
fn contract_preloaded() {
    let exe = build("contract", "contract.c", &[]);
    let run = run_preloaded(&exe, &["--require-mallard"], &[]);
    assert!(run.exited_ok(), "contract checks failed under LD_PRELOAD:\n{}\n\n{}", failed_checks(&run), run.describe());
    assert!(run.stdout.contains("# contract checks on mallard"), "{}", run.describe());
}

/// The checks are glibc's contract: they pass on glibc too (mallard-only ones are skipped).
#[test]
fn contract_checks_hold_on_glibc() {
    let exe = build("contract", "contract.c", &[]);
    let run = run_plain(&exe, &[]);
    assert!(
        run.exited_ok(),
        "the contract checks fail on glibc itself: a check expects more than glibc's contract\n{}\n\n{}",
        failed_checks(&run),
        run.describe()
    );
    assert!(run.stdout.contains("on the default allocator (glibc)"), "{}", run.describe());
}

/// `-lmallard` with an rpath, no LD_PRELOAD: mallard serves every allocation function.
#[test]
fn contract_linked() {
    let dir = lib_dir();
    let (l, rpath) = (format!("-L{}", dir.display()), format!("-Wl,-rpath,{}", dir.display()));
    // An old-style DT_RPATH, which wins over LD_LIBRARY_PATH (cargo puts its own target
    // directory there, which may hold another build of libmallard.so).
    let exe = build("contract-linked", "contract.c", &[&l, "-lmallard", &rpath, "-Wl,--disable-new-dtags"]);
    // What `ldd` shows (it sets this variable too), also for a program run by an emulator.
    let mut ldd = support::command(&exe);
    support::program_env(&mut ldd, "LD_TRACE_LOADED_OBJECTS", "1");
    let ldd = support::output(&mut ldd);
    let ldd_out = String::from_utf8_lossy(&ldd.stdout);
    let expected = format!("libmallard.so => {}", support::lib().display());
    assert!(ldd_out.contains(&expected), "ldd {} does not show `{expected}`:\n{ldd_out}", exe.display());
    let run = run_plain(&exe, &["--require-mallard"]);
    assert!(run.exited_ok(), "contract checks failed with -lmallard:\n{}\n\n{}", failed_checks(&run), run.describe());
}

// ---- threads, fork, thread exit, dlopen ----

#[test]
fn threads_cross_thread_frees_and_churn() {
    let exe = build("threads", "threads.c", &[]);
    assert_ok("threads.c", &run_preloaded(&exe, &[], &[]));
}

#[test]
fn fork_from_busy_threads() {
    let exe = build("fork", "fork.c", &[]);
    assert_ok("fork.c", &run_preloaded(&exe, &[], &[]));
}

#[test]
fn thread_exit_destructors_allocate() {
    let exe = build("tls_dtor", "tls_dtor.c", &[]);
    assert_ok("tls_dtor.c", &run_preloaded(&exe, &[], &[]));
}

#[test]
fn large_blocks_remote_frees_and_purge() {
    let exe = build("large_remote", "large_remote.c", &[]);
    assert_ok("large_remote.c", &run_preloaded(&exe, &[], &[]));
}

#[test]
fn idle_program_gets_its_free_memory_back() {
    let exe = build("idle", "idle.c", &[]);
    // Each mode ends with RSS at most 3 % of the peak while no thread calls the allocator,
    // and the process exits although the purger may be running (`main-exit`).
    for mode in ["live", "exited", "fork", "main-exit"] {
        assert_ok(&format!("idle.c {mode}"), &run_preloaded(&exe, &[mode], &[]));
    }
}

/// The purger is never started from inside a free (glibc frees thread stacks' TLS holding the
/// lock that `pthread_create` takes: a thread started there deadlocks), nor from inside
/// `pthread_join`; but it is started.
#[test]
fn purger_is_never_started_inside_a_free() {
    let exe = build("thread_start", "thread_start.c", &[]);
    let shim = build("thread_start_shim.so", "thread_start_shim.c", &["-shared", "-fPIC"]);
    // The shim first, then libmallard.so. Delay 0: every purge point finds something due,
    // the most chances to start a thread.
    let preload = format!("{} {}", shim.display(), support::lib().display());
    let run = run_preloaded(&exe, &[], &[("LD_PRELOAD", &preload), ("MALLARD_PURGE_DELAY_MS", "0")]);
    assert_ok("thread_start.c", &run);
    assert!(
        run.stderr.contains("thread_start_shim: detached threads started: 1\n"),
        "expected the purger to start once\n{}",
        run.describe()
    );
}

/// `page_churn.c` on `lib` under `page_size_shim.c`, a kernel with `page`-byte pages (with a
/// purge delay of 0, every purge point purges): the shim stops the program with one line on any
/// madvise, mprotect, munmap or mremap such a kernel would refuse or round over live data.
fn churn_on_pages(lib: &Path, page: usize, args: &[&str], env: &[(&str, &str)]) -> Run {
    let exe = build("page_churn", "page_churn.c", &[]);
    let shim = build("page_size_shim.so", "page_size_shim.c", &["-shared", "-fPIC"]);
    // The shim first, then the library.
    let preload = format!("{} {}", shim.display(), lib.display());
    let page = page.to_string();
    let mut vars = vec![("LD_PRELOAD", preload.as_str()), ("FAKE_PAGE", page.as_str())];
    vars.extend_from_slice(env);
    let run = run_preloaded(&exe, args, &vars);
    // The shim is there: the program sees its page.
    assert!(
        run.stdout.contains(&format!("page_churn: sysconf(_SC_PAGESIZE) = {page}, getpagesize() = {page}\n")),
        "the program does not see the shim's page size\n{}",
        run.describe()
    );
    run
}

/// mallard on a kernel with 16 and 64 KiB pages (aarch64), simulated on this one by a shim:
/// every decommit (the in-page purge of free OS pages inside small pages, free pages, chunks,
/// segments, huge mappings' excess), every mremap of a huge block, and the page-aligned
/// functions are whole pages of it, and no live byte is lost (`page_churn.c` checks them all).
#[test]
fn every_decommit_is_whole_pages_of_16_and_64_kib() {
    for page in [16384, 65536] {
        let run = churn_on_pages(support::lib(), page, &["3"], &[("MALLARD_PURGE_DELAY_MS", "0")]);
        assert_ok(&format!("page_churn.c on {page}-byte pages"), &run);
        assert!(run.stdout.contains("page_churn: ok; bytes purged "), "{}", run.describe());
    }
}

/// The same with the secure build, whose guard pages (after each huge block, after a segment's
/// header) are whole pages too.
#[test]
fn secure_guards_are_whole_pages_of_16_and_64_kib() {
    for page in [16384, 65536] {
        let run = churn_on_pages(support::secure_lib(), page, &["1"], &[("MALLARD_PURGE_DELAY_MS", "0")]);
        assert_ok(&format!("page_churn.c on {page}-byte pages, secure build"), &run);
    }
}

/// The recorder gives a thread's buffer back when the thread exits by whole OS pages (it used
/// to madvise from the buffer's data, 96 bytes into a page: EINVAL on any kernel, so the
/// memory stayed).
#[test]
fn recorder_gives_thread_buffers_back_in_whole_pages() {
    let trace = support::scratch("page-trace").join("trace");
    let trace = trace.to_str().expect("UTF-8 path");
    let run = churn_on_pages(support::trace_lib(), 16384, &["1"], &[("MALLARD_TRACE", trace)]);
    assert_ok("page_churn.c on 16384-byte pages, recording", &run);
}

/// The shim really checks: a MADV_DONTNEED that starts inside a page, or is shorter than one,
/// stops the program with the shim's line.
#[test]
fn page_size_shim_stops_a_partial_page_madvise() {
    for (mode, what) in
        [("misaligned-madvise", "address not page-aligned"), ("short-madvise", "MADV_DONTNEED length not whole pages")]
    {
        let run = churn_on_pages(support::lib(), 16384, &[mode], &[]);
        let line = format!(", 4096) on 16384-byte pages: {what}");
        assert!(
            run.signal() == Some(libc::SIGABRT)
                && run.stderr.contains("page_size_shim: madvise(")
                && run.stderr.contains(&line)
                && run.stderr.contains("; called from page_churn+"),
            "expected the shim to stop `page_churn {mode}` with `{line}`\n{}",
            run.describe()
        );
    }
}

/// With a purge delay of an hour, a program whose `main` calls `pthread_exit` still ends at once:
/// once no thread has a heap the purger gives the caches back and leaves, instead of keeping
/// the process (and, as it blocks every signal, its pending SIGTERM) until the delay passes.
#[test]
fn main_exit_ends_the_process_whatever_the_purge_delay() {
    let exe = build("idle", "idle.c", &[]);
    let run = run_preloaded(&exe, &["main-exit"], &[("MALLARD_PURGE_DELAY_MS", "3600000")]);
    assert_ok("idle.c main-exit, delay 1 h", &run);
}

#[test]
fn idle_program_keeps_its_free_memory_with_the_purge_thread_off() {
    // The control: without the purger the same program keeps what was free at its last call.
    // The delay (3 s) is longer than freeing takes, even on a loaded machine, so no owner's
    // own purge comes due before the threads go idle; the program then waits 4.5 s.
    let exe = build("idle", "idle.c", &[]);
    let env = [("MALLARD_PURGE_THREAD", "0"), ("MALLARD_PURGE_DELAY_MS", "3000")];
    let run = run_preloaded(&exe, &["live", "4500"], &env);
    assert_eq!(run.status.and_then(|s| s.code()), Some(3), "expected RSS to stay high\n{}", run.describe());
}

#[test]
fn dlopen_local() {
    let exe = build("dlopen", "dlopen.c", &[]);
    let lib = support::lib().to_str().expect("UTF-8 library path").to_string();
    assert_ok("dlopen.c", &run_plain(&exe, &[&lib]));
}

// ---- C++ ----

#[test]
fn cxx_new_delete_preloaded() {
    let exe = build("cxx", "cxx.cpp", &["-fsized-deallocation"]);
    assert_ok("cxx.cpp", &run_preloaded(&exe, &["--require-mallard"], &[]));
}

#[test]
fn cxx_loaded_by_a_c_program_gets_bad_alloc_and_its_new_handler() {
    // libstdc++ arrives after libmallard.so here (dlopen, RTLD_LOCAL): operator new must find
    // its bad_alloc and new_handler all the same, not abort.
    let plugin = build("cxx-plugin", "cxx_plugin.cpp", &["-shared", "-fPIC"]);
    let host = build("cxx-plugin-host", "cxx_plugin_host.c", &[]);
    let plugin = plugin.to_str().expect("UTF-8 path");
    assert_ok("cxx_plugin_host.c without mallard", &run_plain(&host, &[plugin]));
    assert_ok("cxx_plugin_host.c", &run_preloaded(&host, &[plugin], &[]));
}

#[test]
fn cxx_new_delete_linked() {
    let dir = lib_dir();
    let (l, rpath) = (format!("-L{}", dir.display()), format!("-Wl,-rpath,{}", dir.display()));
    let exe = build("cxx-linked", "cxx.cpp", &["-fsized-deallocation", &l, "-lmallard", &rpath]);
    assert_ok("cxx.cpp linked with -lmallard", &run_plain(&exe, &["--require-mallard"]));
}

/// Aligned `operator new` of a size that overflows when rounded up to the alignment throws
/// `bad_alloc` (the nothrow forms return null) instead of returning a small block.
#[test]
fn cxx_aligned_new_impossible_sizes() {
    let exe = build("cxx", "cxx.cpp", &["-fsized-deallocation"]);
    assert_ok("cxx.cpp aligned-impossible", &run_preloaded(&exe, &["--require-mallard", "aligned-impossible"], &[]));
}

/// The standard's nothrow `operator new` returns null when the new-handler throws
/// `bad_alloc` (it calls the throwing form and catches).
#[test]
fn cxx_nothrow_new_with_throwing_handler() {
    let exe = build("cxx", "cxx.cpp", &["-fsized-deallocation"]);
    assert_ok(
        "cxx.cpp nothrow-throwing-handler",
        &run_preloaded(&exe, &["--require-mallard", "nothrow-throwing-handler"], &[]),
    );
}

// ---- misuse: one line on stderr, then abort ----

/// Whether `line` is `mallard: <what> at 0x<hex>`; returns the address.
fn report_address(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("mallard: ")?;
    let (what, hex) = rest.rsplit_once(" at 0x")?;
    if what.is_empty() || hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Runs `misuse <case>`: it must die by SIGABRT after exactly one stderr line
/// `mallard: <what> at <address>` naming the pointer it printed, with `text` in the line.
fn misuse(case: &str, text: Option<&str>) {
    let exe = build("misuse", "misuse.c", &[]);
    let run = run_preloaded(&exe, &[case], &[]);
    let d = run.describe();
    assert_eq!(run.signal(), Some(libc::SIGABRT), "misuse {case}: the program must abort\n{d}");
    let printed = run.stdout.lines().last().unwrap_or_default().trim();
    let expected = printed
        .strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("misuse {case}: the program did not print the pointer it misused\n{d}"));
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "misuse {case}: want exactly one line on stderr\n{d}");
    let line = lines[0];
    let addr = report_address(line)
        .unwrap_or_else(|| panic!("misuse {case}: `{line}` is not `mallard: <what> at 0x<hex address>`\n{d}"));
    assert_eq!(addr, expected, "misuse {case}: the report names {addr:#x}, the program misused {printed}\n{d}");
    if let Some(t) = text {
        assert!(line.contains(t), "misuse {case}: the report `{line}` does not say `{t}`\n{d}");
    }
}

#[test]
fn misuse_free_stack_pointer() {
    misuse("free-stack", None);
}

#[test]
fn misuse_free_global() {
    misuse("free-global", None);
}

#[test]
fn misuse_free_interior_of_small_block() {
    misuse("free-interior-small", None);
}

#[test]
fn misuse_free_interior_of_large_block() {
    misuse("free-interior-large", None);
}

#[test]
fn misuse_free_interior_of_huge_block() {
    misuse("free-interior-huge", None);
}

#[test]
fn misuse_free_mmap_pointer() {
    misuse("free-mmap", None);
}

#[test]
fn misuse_double_free_small() {
    misuse("double-free-small", Some("double free"));
}

#[test]
fn misuse_double_free_of_a_block_whose_os_page_was_purged() {
    misuse("double-free-purged", Some("double free"));
}

#[test]
fn misuse_double_free_large() {
    misuse("double-free-large", Some("double free"));
}

/// A freed 64 MiB block may be unmapped already: the report need not say "double free".
#[test]
fn misuse_double_free_huge() {
    misuse("double-free-huge", None);
}

#[test]
fn misuse_double_free_after_remote_free() {
    misuse("double-free-remote", Some("double free"));
}

#[test]
fn misuse_double_free_while_the_remote_free_waits_in_a_batch() {
    misuse("double-free-batched", Some("double free"));
}

#[test]
fn misuse_double_free_from_other_thread() {
    misuse("double-free-cross", Some("double free"));
}

/// `realloc(p, 0)` freed `p`: freeing it again is a double free.
#[test]
fn misuse_free_after_realloc_to_zero() {
    misuse("free-after-realloc-zero", Some("double free"));
}

#[test]
fn misuse_realloc_of_freed_block() {
    misuse("realloc-freed", None);
}

#[test]
fn misuse_realloc_of_freed_large_block() {
    misuse("realloc-freed-large", None);
}

#[test]
fn misuse_realloc_of_stack_pointer() {
    misuse("realloc-stack", None);
}

#[test]
fn report_format_matcher() {
    assert_eq!(report_address("mallard: double free at 0x7f00aa10"), Some(0x7f00aa10));
    assert_eq!(report_address("mallard: realloc of a freed block at 0xdead0"), Some(0xdead0));
    for bad in [
        "mallard:  at 0x10",
        "mallard: double free at 0x",
        "mallard: double free at 0X10",
        "mallard: double free at 0x7F",
        "free(): double free detected in tcache 2",
        "mallard: double free at 0x10 ",
    ] {
        assert_eq!(report_address(bad), None, "{bad}");
    }
}

// ---- environment variables ----

#[test]
fn quiet_by_default() {
    let exe = build("misuse", "misuse.c", &[]);
    let run = run_preloaded(&exe, &["none"], &[]);
    assert!(run.exited_ok() && run.stdout == "no misuse\n", "{}", run.describe());
    assert!(run.stderr.is_empty(), "mallard printed something without being asked\n{}", run.describe());
}

#[test]
fn env_stats_at_exit() {
    let exe = build("misuse", "misuse.c", &[]);
    let run = run_preloaded(&exe, &["none"], &[("MALLARD_STATS", "1")]);
    assert!(run.exited_ok() && run.stdout == "no misuse\n", "{}", run.describe());
    assert!(run.stderr.contains("mallard statistics"), "MALLARD_STATS=1: no table at exit\n{}", run.describe());
}

#[test]
fn env_verbose() {
    let exe = build("misuse", "misuse.c", &[]);
    let run = run_preloaded(&exe, &["none"], &[("MALLARD_VERBOSE", "1")]);
    assert!(run.exited_ok() && run.stdout == "no misuse\n", "{}", run.describe());
    assert!(
        run.stderr.lines().any(|l| l.contains("mallard") && l.contains("loaded")),
        "MALLARD_VERBOSE=1: no line saying mallard is loaded\n{}",
        run.describe()
    );
}

#[test]
fn env_bad_purge_delay_warns_once() {
    let exe = build("misuse", "misuse.c", &[]);
    let run = run_preloaded(&exe, &["none"], &[("MALLARD_PURGE_DELAY_MS", "abc")]);
    assert!(run.exited_ok() && run.stdout == "no misuse\n", "{}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].contains("MALLARD_PURGE_DELAY_MS"),
        "MALLARD_PURGE_DELAY_MS=abc: want one warning line naming the variable\n{}",
        run.describe()
    );
}

#[test]
fn preloading_loads_no_unwinder_library() {
    // libmallard.so never unwinds (src/no_unwinder.c): a preloaded program that did not load
    // libgcc_s before does not load it now (about 100 KiB of RSS in every process).
    let run = support::output(support::preloaded("cat").arg("/proc/self/maps"));
    let maps = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && maps.contains("libmallard"), "cat did not run on mallard:\n{maps}");
    assert!(!maps.contains("libgcc_s"), "libgcc_s was loaded with libmallard.so:\n{maps}");
}
