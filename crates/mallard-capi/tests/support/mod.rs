//! Shared by the C API tests: the library under test and a way to run programs on it.
//!
//! `cargo test` does not build a cdylib for its integration tests, so the first test that needs
//! `libmallard.so` builds it with cargo, in release mode, into a target directory of its own
//! (`target/capi-test`: a nested cargo on the outer build's directory would wait for its lock).
//! `MALLARD_TEST_LIB=/path/to/libmallard.so` uses a given library instead.
//!
//! Another target (scripts/test-aarch64): with `MALLARD_TEST_TARGET` set to a Rust target
//! triple, the library is built for it, the C programs are compiled with the compilers that
//! `CC_<triple>` and `CXX_<triple>` name (as for the `cc` crate), and they run through the
//! emulator that `MALLARD_TEST_RUNNER` names (`qemu-aarch64 -L /usr/aarch64-linux-gnu`).
//! Only `c_api.rs` runs that way (a program of the host, preloaded, is not the target's).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Path of the `libmallard.so` under test (built on first use).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build("MALLARD_TEST_LIB", "target/capi-test", &[]))
}

/// Path of the secure build under test, `libmallard_secure.so` (built on first use, in a
/// target directory of its own so that its feature does not reach `lib()`).
/// `MALLARD_TEST_SECURE_LIB=/path` uses a given library instead.
pub fn secure_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build("MALLARD_TEST_SECURE_LIB", "target/capi-test-secure", &["--features", "secure"]))
}

/// Path of the recording build under test, `libmallard_trace.so` (built on first use, in a
/// target directory of its own). `MALLARD_TEST_TRACE_LIB=/path` uses a given library instead.
pub fn trace_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build("MALLARD_TEST_TRACE_LIB", "target/capi-test-trace", &["--features", "trace"]))
}

/// Builds `mallard-capi` with `args` into `target_dir` (unless `env` names a library to use)
/// and returns the library's path.
fn build(env: &str, target_dir: &str, args: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "-p", "mallard-capi"]).args(args);
    // Another target: a target directory of its own, and cargo's subdirectory for the target.
    let lib = match target_triple() {
        None => {
            cmd.arg("--target-dir").arg(workspace().join(target_dir));
            workspace().join(target_dir).join("release/libmallard.so")
        }
        Some(triple) => {
            let dir = workspace().join(format!("{target_dir}-{triple}"));
            cmd.args(["--target", &triple]).arg("--target-dir").arg(&dir);
            dir.join(triple).join("release/libmallard.so")
        }
    };
    let status = cmd.current_dir(workspace()).status().expect("run cargo to build libmallard.so");
    assert!(status.success(), "building libmallard.so {args:?} failed");
    assert!(lib.exists(), "{} missing after the build", lib.display());
    lib
}

/// A scratch directory for one test (under target/, emptied first).
pub fn scratch(name: &str) -> PathBuf {
    let d = workspace().join("target/capi-test/scratch").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch directory");
    d
}

/// `MALLARD_TEST_TARGET`: the Rust target triple the library and the C programs are built
/// for, when it is not the host's.
pub fn target_triple() -> Option<String> {
    std::env::var("MALLARD_TEST_TARGET").ok().filter(|t| !t.is_empty())
}

/// The C compiler (`cxx`: C++) for the programs: gcc and g++, or for another target what
/// `CC_<triple>` or `CXX_<triple>` names (`aarch64-linux-gnu-gcc`).
pub fn compiler(cxx: bool) -> String {
    let host = if cxx { "g++" } else { "gcc" };
    let Some(triple) = target_triple() else { return host.into() };
    let var = format!("{}_{}", if cxx { "CXX" } else { "CC" }, triple.replace('-', "_"));
    std::env::var(&var).unwrap_or_else(|_| panic!("MALLARD_TEST_TARGET={triple} needs {var}: the compiler to use"))
}

/// `MALLARD_TEST_RUNNER`: the emulator that runs the target's programs, as words.
fn runner() -> Option<Vec<String>> {
    let words: Vec<String> = std::env::var("MALLARD_TEST_RUNNER").ok()?.split_whitespace().map(String::from).collect();
    (!words.is_empty()).then_some(words)
}

/// A command that runs `program` (through the emulator if there is one).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match runner() {
        None => Command::new(program),
        Some(words) => {
            let mut c = Command::new(&words[0]);
            c.args(&words[1..]).arg(program);
            c
        }
    }
}

/// Sets environment variable `key` for the program of `cmd` (from `command`). Through an
/// emulator, in qemu's `QEMU_SET_ENV` (comma-separated `KEY=VALUE`s): a `LD_PRELOAD` of the
/// target's library in the emulator's own environment would be for the emulator, whose (host)
/// dynamic linker would complain that it cannot load it.
pub fn program_env(cmd: &mut Command, key: &str, value: impl AsRef<std::ffi::OsStr>) {
    let value = value.as_ref();
    if runner().is_none() {
        cmd.env(key, value);
        return;
    }
    let set = cmd.get_envs().find(|(k, _)| *k == "QEMU_SET_ENV").and_then(|(_, v)| v.map(|v| v.to_owned()));
    let mut all = set.unwrap_or_default();
    if !all.is_empty() {
        all.push(",");
    }
    all.push(format!("{key}="));
    all.push(value);
    cmd.env("QEMU_SET_ENV", all);
}

/// What a program wrote to stderr, without what an emulator running it added: qemu reports a
/// program killed by a signal (`qemu: uncaught target signal 6 (Aborted) - core dumped`)
/// before dying of the same signal.
pub fn program_stderr(stderr: String) -> String {
    if runner().is_none() {
        return stderr;
    }
    stderr.lines().filter(|l| !l.starts_with("qemu: uncaught target signal")).map(|l| format!("{l}\n")).collect()
}

/// `cmd` with libmallard.so preloaded.
pub fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = command(program);
    program_env(&mut c, "LD_PRELOAD", lib());
    c
}

/// Runs `cmd` and returns its output, with the command line in the panic message on failure
/// to start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}
