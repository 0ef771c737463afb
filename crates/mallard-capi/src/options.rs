//! Start-up: options from the environment, the fork handlers and the exit report.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `MALLARD_STATS` | `0` | `1`: print the statistics table to stderr at exit |
//! | `MALLARD_VERBOSE` | `0` | `1`: say on stderr that mallard is loaded, with its options |
//! | `MALLARD_PURGE_DELAY_MS` | `100` | how long free memory stays committed before it is given back to the OS |
//! | `MALLARD_PURGE_THREAD` | `1` | `0`: no background purger thread (free memory is then given back only when the program calls the allocator) |
//! | `MALLARD_REPORT` | unset | a file to which each process appends its exit record (`report.rs`; used by `mallard run`) |
//!
//! A value that does not parse prints one warning line and keeps the default; the processes
//! it starts inherit `MALLARD_WARNED=1` and do not print it again. Everything here
//! runs from the library's constructor, before `main`, and never allocates.

use core::ffi::{c_char, c_int, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicI32, Ordering};
use core_alloc::raw::{FdWriter, PURGE_DELAY_MS};

/// `mallopt` parameter: the purge delay in milliseconds (mallard's own).
pub const M_PURGE_DELAY: c_int = -200;

/// Where the statistics go at exit (-1: nowhere). A copy of stderr taken at start-up: many
/// programs close stderr in their own exit handlers (coreutils' `close_stdout` does), which
/// run before ours.
static STATS_FD: AtomicI32 = AtomicI32::new(-1);

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    #[cfg(feature = "trace")]
    crate::trace::init();
    let verbose = flag("MALLARD_VERBOSE");
    let stats = flag("MALLARD_STATS");
    let delay = number("MALLARD_PURGE_DELAY_MS", PURGE_DELAY_MS);
    core_alloc::set_purge_delay_ms(delay);
    // (Not in the recorder: a recording shows the program's own calls.)
    let purge_thread =
        !cfg!(feature = "trace") && var_named("MALLARD_PURGE_THREAD").is_none_or(|_| flag("MALLARD_PURGE_THREAD"));
    core_alloc::set_background_purge(purge_thread);
    if WARNED.load(Ordering::Relaxed) {
        // SAFETY: start-up, one thread; setenv copies its arguments (through this allocator).
        unsafe { libc::setenv(c"MALLARD_WARNED".as_ptr(), c"1".as_ptr(), 1) };
    }
    // SAFETY: the handlers are plain functions that only take and release the backend lock
    // or write to a file descriptor; fcntl duplicates a descriptor.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
        if stats {
            STATS_FD.store(libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3), Ordering::Relaxed);
            libc::atexit(print_at_exit);
        }
        let report = libc::getenv(c"MALLARD_REPORT".as_ptr());
        if !report.is_null() && *report != 0 {
            crate::report::set_path(report);
            libc::atexit(crate::report::write_at_exit);
            at_quick_exit(crate::report::write_at_exit);
        }
    }
    if verbose {
        let mut w = FdWriter::new(2);
        let _ = writeln!(
            w,
            "mallard {}{}: loaded; MALLARD_STATS={} MALLARD_PURGE_DELAY_MS={} MALLARD_PURGE_THREAD={}",
            env!("CARGO_PKG_VERSION"),
            if core_alloc::raw::SECURE { " (secure build)" } else { "" },
            stats as u8,
            delay,
            purge_thread as u8
        );
        w.flush();
    }
}

extern "C" {
    /// C11's: `quick_exit` runs these (and not the `atexit` ones) before its own `_exit`.
    fn at_quick_exit(f: extern "C" fn()) -> c_int;
}

extern "C" fn print_at_exit() {
    let fd = STATS_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        core_alloc::print_stats_to(fd);
    }
}

// `fork` copies the backend's lock in whatever state it is; holding it across the fork makes
// sure no other thread is half-way through a change the child would inherit.
extern "C" fn fork_prepare() {
    // SAFETY: pthread_atfork runs fork_parent or fork_child after every fork_prepare.
    unsafe { core_alloc::raw::lock_for_fork() };
}

extern "C" fn fork_parent() {
    // SAFETY: fork_prepare took the lock in this thread.
    unsafe { core_alloc::raw::unlock_after_fork(false) };
}

extern "C" fn fork_child() {
    // SAFETY: the child's only thread is the copy of the one that took the lock.
    unsafe { core_alloc::raw::unlock_after_fork(true) };
    crate::report::forked();
}

fn var(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv takes a C string and returns NULL or a C string that lives as long as
    // the environment is not changed, which nothing does during start-up.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: non-null result of getenv.
    Some(unsafe { CStr::from_ptr(v as *const c_char) }.to_bytes())
}

/// Whether this process printed a warning (then `MALLARD_WARNED=1` is set for its children).
static WARNED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// One line on stderr about a variable that does not parse, once per run: not again in the
/// processes this one starts (a shell script's commands), which inherit `MALLARD_WARNED`.
fn warn(name: &str, value: &[u8], expected: &str, default: &dyn core::fmt::Display) {
    if var(c"MALLARD_WARNED").is_some() {
        return;
    }
    WARNED.store(true, Ordering::Relaxed);
    let mut w = FdWriter::new(2);
    let shown = core::str::from_utf8(value).unwrap_or("(not UTF-8)");
    let _ = writeln!(w, "mallard: {name}={shown:?} is not {expected}; keeping the default {default}");
    w.flush();
}

/// A 0/1 switch (also `true`/`false`, `yes`/`no`, `on`/`off`).
fn flag(name: &'static str) -> bool {
    let Some(v) = var_named(name) else { return false };
    match parse_flag(v) {
        Some(b) => b,
        None => {
            warn(name, v, "0 or 1", &0);
            false
        }
    }
}

fn number(name: &'static str, default: u64) -> u64 {
    let Some(v) = var_named(name) else { return default };
    match parse_number(v) {
        Some(n) => n,
        None => {
            warn(name, v, "a whole number", &default);
            default
        }
    }
}

fn var_named(name: &'static str) -> Option<&'static [u8]> {
    // Names are short constants; build the C string on the stack.
    let mut buf = [0u8; 64];
    let n = name.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    var(CStr::from_bytes_until_nul(&buf).ok()?)
}

pub fn parse_flag(v: &[u8]) -> Option<bool> {
    match v {
        b"" | b"0" | b"false" | b"no" | b"off" => Some(false),
        b"1" | b"true" | b"yes" | b"on" => Some(true),
        _ => None,
    }
}

/// A whole number up to `u64::MAX` (`MALLARD_PURGE_DELAY_MS=18446744073709551615`: never).
pub fn parse_number(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add((c - b'0') as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_parse_up_to_u64_max_and_no_further() {
        assert_eq!(parse_number(b"0"), Some(0));
        assert_eq!(parse_number(b"100"), Some(100));
        assert_eq!(parse_number(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"18446744073709551616", b"99999999999999999999", b"-1", b"1e3", b" 5", b"5ms"] {
            assert_eq!(parse_number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
