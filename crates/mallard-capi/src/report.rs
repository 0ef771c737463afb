//! The exit record for `mallard run`: with `MALLARD_REPORT=<file>`, each process that ran on
//! the library appends one line to the file when it exits, `key=value` pairs separated by
//! spaces:
//!
//! ```text
//! pid=4242 live_bytes=… live_blocks=… in_use_bytes=… peak_in_use_bytes=… resident_bytes=…
//! peak_rss_bytes=… heap_resident_bytes=… mapped_bytes=… segments=… segments_cached=… segments_mapped=…
//! huge_fresh=… segments_released=… bytes_purged=… remote_frees=… heaps=… huge_allocs=…
//! large_blocks=… large_bytes=… huge_blocks=… huge_bytes=… classes=SIZE:PAGES_STARTED:LIVE_BLOCKS,…
//! exe=NAME
//! ```
//!
//! `exe` is the program's file name (`/proc/self/exe`), last, with spaces as `%20`.
//!
//! The line is formatted on the stack and written with one `write` (O_APPEND), so the
//! records of processes that exit together do not mix. Nothing allocates.

use core::ffi::c_char;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use core_alloc::raw::CLASS_SIZE;

static PATH: AtomicPtr<c_char> = AtomicPtr::new(core::ptr::null_mut());
/// The process whose record this is: a child of `vfork` shares our memory, and must not write
/// it under its own pid.
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Set once the record is written (`exit` runs our handler, then `_exit`).
static WRITTEN: AtomicBool = AtomicBool::new(false);

/// Remembers where to write (the environment string, which lives as long as the process).
pub fn set_path(path: *const c_char) {
    PATH.store(path.cast_mut(), Ordering::Relaxed);
    forked();
}

/// In a child made by `fork`: the record to write is now this process's.
pub fn forked() {
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    WRITTEN.store(false, Ordering::Relaxed);
}

/// Appends this process's record, once (from `atexit`, or from `_exit`, which a forked child
/// or a shell such as dash leaves by).
pub extern "C" fn write_at_exit() {
    let path = PATH.load(Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    if path.is_null() || unsafe { libc::getpid() } != OWNER.load(Ordering::Relaxed) {
        return;
    }
    if WRITTEN.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut line = Line { buf: [0; 8192], len: 0 };
    if format(&mut line).is_err() {
        return;
    }
    // SAFETY: `path` is a NUL-terminated environment string; the buffer is initialized up to
    // `len`.
    unsafe {
        let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC, 0o644);
        if fd >= 0 {
            libc::write(fd, line.buf.as_ptr().cast(), line.len);
            libc::close(fd);
        }
    }
}

fn format(w: &mut Line) -> fmt::Result {
    let s = core_alloc::stats();
    let live_blocks: i64 = s.class_blocks.iter().sum::<i64>() + s.large_blocks + s.huge_blocks;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let peak_rss = peak_rss_bytes();
    write!(
        w,
        "pid={pid} live_bytes={} live_blocks={live_blocks} in_use_bytes={} peak_in_use_bytes={} resident_bytes={} \
         peak_rss_bytes={} heap_resident_bytes={} mapped_bytes={} segments={} segments_cached={} segments_mapped={} huge_fresh={} \
         segments_released={} bytes_purged={} remote_frees={} heaps={} huge_allocs={} large_blocks={} large_bytes={} \
         huge_blocks={} huge_bytes={} classes=",
        s.live_bytes(),
        s.in_use_bytes,
        s.peak_in_use_bytes,
        s.resident_bytes,
        // (The kernel updates its high-water mark lazily: never below what is resident now.)
        peak_rss.max(s.resident_bytes),
        s.heap_resident_bytes,
        s.mapped_bytes,
        s.segments_current,
        s.segments_cached,
        s.segments_mapped,
        s.huge_fresh,
        s.segments_released,
        s.bytes_purged,
        s.remote_frees,
        s.heaps_created,
        s.huge_allocs,
        s.large_blocks,
        s.large_bytes,
        s.huge_blocks,
        s.huge_bytes,
    )?;
    let mut first = true;
    for ((size, pages), blocks) in CLASS_SIZE.iter().zip(&s.class_pages_started).zip(&s.class_blocks) {
        if *pages > 0 || *blocks > 0 {
            let sep = if first { "" } else { "," };
            first = false;
            write!(w, "{sep}{size}:{pages}:{blocks}")?;
        }
    }
    w.write_str(" exe=")?;
    let mut exe = [0u8; 256];
    // SAFETY: exe is a valid buffer of its length.
    let n = unsafe { libc::readlink(c"/proc/self/exe".as_ptr(), exe.as_mut_ptr().cast(), exe.len()) };
    let path = &exe[..n.max(0) as usize];
    let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    for part in name.split_inclusive(|&c| c == b' ') {
        let (text, space) = match part.split_last() {
            Some((b' ', text)) => (text, true),
            _ => (part, false),
        };
        w.write_str(core::str::from_utf8(text).unwrap_or("?"))?;
        if space {
            w.write_str("%20")?;
        }
    }
    w.write_str("\n")
}

/// This program's peak resident set: `VmHWM` of /proc/self/status, the high-water mark of its
/// own memory (getrusage's `ru_maxrss` would carry the parent's over fork and exec: a `true`
/// started by a 300 MB Python would show 300 MB). 0 if it cannot be read.
fn peak_rss_bytes() -> i64 {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path; buf is writable for its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n.max(0) as usize
    };
    let text = &buf[..n];
    let Some(at) = text.windows(6).position(|w| w == b"VmHWM:") else { return 0 };
    let kib = text[at + 6..]
        .iter()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .fold(0i64, |a, &d| a * 10 + (d - b'0') as i64);
    kib * 1024
}

/// A line formatted on the stack.
struct Line {
    buf: [u8; 8192],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
