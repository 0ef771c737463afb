//! Shared by the C API tests: the library under test and a way to run programs on it.
//!
//! `cargo test` does not build a cdylib for its integration tests, so the first test that needs
//! `libmallard.so` builds it with cargo, in release mode, into a target directory of its own
//! (`target/capi-test`: a nested cargo on the outer build's directory would wait for its lock).
//! `MALLARD_TEST_LIB=/path/to/libmallard.so` uses a given library instead.
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
    let target = workspace().join(target_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "mallard-capi"])
        .args(args)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace())
        .status()
        .expect("run cargo to build libmallard.so");
    assert!(status.success(), "building libmallard.so {args:?} failed");
    let lib = target.join("release/libmallard.so");
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

/// `cmd` with libmallard.so preloaded.
pub fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", lib());
    c
}

/// Runs `cmd` and returns its output, with the command line in the panic message on failure
/// to start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}
