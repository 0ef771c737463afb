//! Recording a program's allocations for the heap lab (`mallard record`): only in
//! `libmallard_trace.so`, the library built with the cargo feature `trace`
//! (`scripts/build-trace`), so that `libmallard.so` has no recorder on its paths.
//!
//! With `MALLARD_TRACE=FILE` set, every `malloc`, `calloc`, aligned allocation, `realloc` and
//! `free` (and the C++ operators, which come through them) is written to FILE in the format of
//! `docs/trace-format.md`. Each thread encodes its events into a buffer of its own (1 MiB,
//! mapped straight from the OS: the recorder never allocates) and appends it to the file as
//! one chunk, with one `writev` on a descriptor opened with `O_APPEND`, when it fills and when
//! the thread exits (a pthread key's destructor).
//!
//! Nothing is lost when the program ends: `end` writes every thread's buffer, running or not,
//! and the memory map, on `exit` (an `atexit` handler), `_exit`/`_Exit` (`exit.rs`), `exec`
//! (wrapped here and in `trace_hooks.c`), and a fatal signal (a handler installed where the
//! program has the default; the program still sees the default, see `trace_hooks.c`). A buffer
//! belongs to whoever holds its `state`: its thread while it records an event or writes a
//! chunk, and `end` afterwards; events after the end are dropped.
//!
//! Processes: the first process to open FILE creates it, and when it `exec`s another program
//! (a shim such as pyenv's `python3` does), the new image appends an image marker to FILE and
//! goes on there: a reader sees one image per program the process ran. Any other process that
//! inherits `MALLARD_TRACE` writes `FILE.PID` (likewise across its `exec`s), and a child made
//! by `fork` switches to `FILE.PID` at once, dropping the parent's unwritten events from its
//! copy of the buffers (the parent writes them).
//!
//! Call sites: an allocation (or realloc) keeps up to `FRAMES` return addresses from the
//! frame-pointer chain (`call_site`), leaving out the frames of this library; the first is
//! always right, the ones above it only in code built with frame pointers. Frees keep none.
//! The memory map (`/proc/self/maps`) is appended at the end as a maps chunk (`write_maps`),
//! so that a report can say which library and function each address is in.

use core::cell::{Cell, UnsafeCell};
use core::ffi::{c_int, c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use core_alloc::raw::{keep_errno, page_size, OsPageSource, PageSource, MIN_PAGE_SIZE};

/// The recorder's system calls, made directly: libc's `open`, `read` and `writev` are
/// cancellation points, and a `malloc` must not become one (a thread with a cancel pending
/// would be cancelled inside it).
mod sys {
    use core::ffi::{c_int, c_long, c_void, CStr};

    fn ret(r: c_long) -> isize {
        r as isize
    }

    pub fn open(path: &CStr, flags: c_int, mode: c_int) -> c_int {
        // SAFETY: a NUL-terminated path; the kernel checks the rest.
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode) as c_int }
    }

    pub fn read(fd: c_int, buf: &mut [u8]) -> isize {
        // SAFETY: buf is writable for its length.
        ret(unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) })
    }

    pub fn write(fd: c_int, buf: &[u8]) -> isize {
        // SAFETY: buf is readable for its length.
        ret(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })
    }

    pub fn writev(fd: c_int, iov: &[libc::iovec]) -> isize {
        // SAFETY: the iovecs point at live memory (the caller's slices).
        ret(unsafe { libc::syscall(libc::SYS_writev, fd, iov.as_ptr(), iov.len()) })
    }

    pub fn close(fd: c_int) {
        // SAFETY: closing a descriptor of our own.
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }

    pub fn fstat(fd: c_int) -> Option<libc::stat> {
        // SAFETY: st is a valid out-pointer of the kernel's struct stat.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            (libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat as *mut c_void) == 0).then_some(st)
        }
    }

    /// `fd` moved to a high number (close-on-exec), away from the low ones a program expects
    /// to get from its own `open` (a daemon reopens 0, 1 and 2; a shell uses 3 to 9).
    pub fn move_high(fd: c_int) -> c_int {
        for min in [1000, 500, 200, 100, 20] {
            // SAFETY: duplicating a descriptor of our own.
            let high = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) } as c_int;
            if high >= 0 {
                close(fd);
                return high;
            }
        }
        fd
    }

    /// The process's memory map: `/proc/thread-self/maps`, which still reads after the main
    /// thread has called `pthread_exit` (`/proc/self/maps` is then empty).
    pub fn open_maps() -> c_int {
        let fd = open(c"/proc/thread-self/maps", libc::O_RDONLY | libc::O_CLOEXEC, 0);
        if fd >= 0 {
            fd
        } else {
            open(c"/proc/self/maps", libc::O_RDONLY | libc::O_CLOEXEC, 0)
        }
    }
}

/// Bytes of a thread's buffer, its bookkeeping included.
const BUF_BYTES: usize = 1 << 20;
/// Bytes of a buffer's header (the fields before `data`).
const BUF_HEADER: usize = 96;
/// Return addresses an allocation keeps: its call site and the callers above it.
pub const FRAMES: usize = 6;
/// The most one event takes: kind, time, three numbers, the frame count and the frames.
const MAX_EVENT: usize = 1 + 4 * 10 + 1 + 1 + FRAMES * 10;
/// The library's own code, whose frames a call site leaves out: [start, end).
static SELF_START: AtomicU64 = AtomicU64::new(0);
static SELF_END: AtomicU64 = AtomicU64::new(0);

/// The trace file's descriptor; -1 while not recording.
static FD: AtomicI32 = AtomicI32::new(-1);
/// The process that opened `FD`: a child of `vfork` shares our memory but must not write it.
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Set by `end`: the program has ended (or is about to `exec`); events are dropped.
static ENDED: AtomicBool = AtomicBool::new(false);
/// The monotonic clock when recording began (ns).
static T0: AtomicU64 = AtomicU64::new(0);
static NEXT_THREAD: AtomicU32 = AtomicU32::new(0);
/// The pthread key whose destructor writes an exiting thread's buffer.
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
/// Every buffer ever mapped, linked through `next` (pushed, never removed: a buffer whose
/// thread exited is taken by the next new thread), so that `end` finds them all.
static BUFFERS: AtomicPtr<Buffer> = AtomicPtr::new(ptr::null_mut());
/// `MALLARD_TRACE`'s value, NUL-terminated (for `FILE.PID`): written once at start-up, read
/// afterwards.
struct Path(UnsafeCell<[u8; 4096]>);
// SAFETY: written only by `init`, before the program runs other threads.
unsafe impl Sync for Path {}
static PATH: Path = Path(UnsafeCell::new([0; 4096]));

/// `BUF` of a thread whose buffer was written and given up at its exit: the frees glibc makes
/// after the last key destructor (its own thread-local buffers) are not recorded.
const EXITED: *mut Buffer = ptr::dangling_mut::<Buffer>();

/// `Buffer::state`: nobody is using it.
const IDLE: u32 = 0;
/// Its thread is recording an event or writing it out.
const BUSY: u32 = 1;
/// `end` has written it: nothing more is recorded into it.
const TAKEN: u32 = 2;
/// Another thread is writing it out before an `exec`: its thread waits, then goes on.
const FLUSHING: u32 = 3;

/// A thread's events not yet written: the body of its next chunk.
#[repr(C)]
struct Buffer {
    /// `IDLE`, `BUSY` or `TAKEN`: who may touch the fields below `next`.
    state: AtomicU32,
    /// Whether a thread has it (false once its thread exited).
    in_use: AtomicBool,
    /// Events and bytes in `data`, as `count << 32 | len`, stored in one go after each event,
    /// so that `end` (perhaps in a signal handler that interrupted the event) reads a whole
    /// prefix of events.
    fill: AtomicU64,
    /// The next buffer in `BUFFERS` (set before the buffer is pushed, never changed).
    next: *mut Buffer,
    thread: u32,
    start: u64,
    last: u64,
    prev_addr: u64,
    /// This thread's stack, [low, high), for `call_site` (0, 0 while not known).
    stack_low: u64,
    stack_high: u64,
    _pad: [u64; 3],
    data: [u8; BUF_BYTES - BUF_HEADER],
}

const _: () = assert!(core::mem::size_of::<Buffer>() == BUF_BYTES);

std::thread_local! {
    // A plain cell with a constant initializer and no destructor: no allocation, no
    // registration at first use.
    static BUF: Cell<*mut Buffer> = const { Cell::new(ptr::null_mut()) };
}

fn clock_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU's counter at calibration, and nanoseconds per tick in 32.32 fixed point (0: the
/// counter is not used).
static TSC0: AtomicU64 = AtomicU64::new(0);
static TSC_SCALE: AtomicU64 = AtomicU64::new(0);

/// Whether the CPU has a counter that ticks at one rate on every core and in every power
/// state: on x86-64 the time-stamp counter where CPUID says it is invariant, on aarch64 the
/// generic timer's virtual count (constant-rate by the architecture, and Linux lets user
/// space read it). Without one, event times come from `clock_gettime`.
fn counter_is_invariant() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__cpuid;
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
    #[cfg(target_arch = "aarch64")]
    return true;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return false;
}

/// The counter of `counter_is_invariant` (0 where there is none).
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc is available on every x86-64 CPU.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // `cntvct_el0`; the `isb` keeps the read from being done early, as in the kernel's vDSO.
        // SAFETY: reads a system register that Linux lets user space read.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    0
}

/// Uses the CPU's counter for event times when it is invariant: reading it costs a few
/// nanoseconds where `clock_gettime` costs about 20, on every event. Calibrated against the
/// monotonic clock over 2 ms at start-up (on aarch64 too: `cntfrq_el0` says only what the
/// firmware wrote there).
fn calibrate() {
    if !counter_is_invariant() {
        return;
    }
    let (t0, c0) = (clock_ns(), ticks());
    let (mut t1, mut c1) = (t0, c0);
    while t1 - t0 < 2_000_000 {
        (t1, c1) = (clock_ns(), ticks());
    }
    if c1 > c0 {
        TSC0.store(c0, Ordering::Relaxed);
        T0.store(t0, Ordering::Relaxed);
        TSC_SCALE.store((((t1 - t0) as u128) << 32).div_ceil((c1 - c0) as u128) as u64, Ordering::Relaxed);
    }
}

/// Nanoseconds on the monotonic clock (through the CPU's counter when calibrated).
fn now_ns() -> u64 {
    let scale = TSC_SCALE.load(Ordering::Relaxed);
    if scale != 0 {
        let ticks = ticks().wrapping_sub(TSC0.load(Ordering::Relaxed));
        return T0.load(Ordering::Relaxed) + ((ticks as u128 * scale as u128) >> 32) as u64;
    }
    clock_ns()
}

/// Starts recording if `MALLARD_TRACE` names a file (from the library's constructor).
pub fn init() {
    // SAFETY: getenv during start-up, before any other thread runs.
    let v = unsafe { libc::getenv(c"MALLARD_TRACE".as_ptr()) };
    if v.is_null() {
        return;
    }
    // A program starts with errno 0, and opening the trace may fail on the way (EEXIST).
    keep_errno(|| start(v));
}

fn start(v: *const core::ffi::c_char) {
    // SAFETY: a non-null getenv result is a C string.
    let path = unsafe { CStr::from_ptr(v) }.to_bytes();
    if path.is_empty() || path.len() >= 4000 {
        return;
    }
    // SAFETY: start-up runs on one thread; PATH is only read after this.
    unsafe { (&mut *PATH.0.get())[..path.len()].copy_from_slice(path) };
    T0.store(clock_ns(), Ordering::Relaxed);
    calibrate();
    find_self();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: key is a valid out-pointer; the destructor is a plain function.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        KEY.store(key, Ordering::Relaxed);
    }
    // The first process takes FILE, and keeps it across `exec` (a shim that execs the real
    // program: the new image appends to it); other processes, FILE.PID.
    let fd = open(Name::Fresh).or_else(|| open(Name::Again)).or_else(|| open(Name::Pid)).unwrap_or(-1);
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    FD.store(fd, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: plain functions that only write to a descriptor; the hooks' set-up looks up
        // libc's functions and installs signal handlers, during start-up.
        unsafe {
            libc::atexit(process_exit);
            at_quick_exit(process_exit);
            libc::pthread_atfork(None, None, Some(fork_child));
            mallard_trace_hooks_init();
        }
    }
}

extern "C" {
    /// `trace_hooks.c`: finds libc's `exec` functions and installs the fatal-signal handlers.
    fn mallard_trace_hooks_init();
    /// C11's: `quick_exit` runs these (and not the `atexit` ones) before its own `_exit`.
    fn at_quick_exit(f: extern "C" fn()) -> c_int;
}

// How a program ends, and `sigaction`, which must not show the fatal-signal handlers: the C
// functions of `trace_hooks.c`, exported under libc's names.
#[allow(non_snake_case)]
mod hooks {
    trampolines! {
        execve => __mallard_trace_execve;
        execv => __mallard_trace_execv;
        execvpe => __mallard_trace_execvpe;
        execvp => __mallard_trace_execvp;
        execl => __mallard_trace_execl;
        execlp => __mallard_trace_execlp;
        execle => __mallard_trace_execle;
        fexecve => __mallard_trace_fexecve;
        execveat => __mallard_trace_execveat;
        sigaction => __mallard_trace_sigaction;
        signal => __mallard_trace_signal;
        bsd_signal => __mallard_trace_bsd_signal;
        sysv_signal => __mallard_trace_sysv_signal;
        sigset => __mallard_trace_sigset;
        siginterrupt => __mallard_trace_siginterrupt;
        daemon => __mallard_trace_daemon;
    }
}

/// The return addresses of a walk, this library's frames left out.
struct Walk {
    frames: [u64; FRAMES],
    n: usize,
}

/// The stack that `sp` is on, [low, high), read from `/proc/self/maps` with plain system calls
/// (glibc's `pthread_getattr_np` would be simpler, but for the main thread it takes a lock and
/// allocates, and a program may be calling it when its first allocation comes here: a
/// self-deadlock). The text goes through `window`, the thread's empty buffer. For the main
/// thread's `[stack]`, which grows, `low` is its top less the stack limit. (0, 0) if `sp` is in
/// no mapping.
fn stack_of(sp: u64, window: &mut [u8]) -> (u64, u64) {
    let fd = sys::open_maps();
    if fd < 0 {
        return (0, 0);
    }
    let mut found = (0, 0);
    let mut have = 0;
    'read: loop {
        let n = sys::read(fd, &mut window[have..]);
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut at = 0;
        while let Some(nl) = window[at..have].iter().position(|&c| c == b'\n') {
            let line = &window[at..at + nl];
            at += nl + 1;
            let (Some(start), Some(end)) =
                (hex(line, 0), line.iter().position(|&c| c == b'-').and_then(|d| hex(line, d + 1)))
            else {
                continue;
            };
            if (start..end).contains(&sp) {
                found = (start, end);
                if line.ends_with(b"[stack]") {
                    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    // SAFETY: lim is a valid out-pointer.
                    let max = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0
                        && lim.rlim_cur != libc::RLIM_INFINITY
                    {
                        lim.rlim_cur
                    } else {
                        1 << 30
                    };
                    found.0 = found.0.min(end.saturating_sub(max));
                }
                break 'read;
            }
        }
        // Keep the unfinished line; a line longer than the window is skipped whole.
        window.copy_within(at..have, 0);
        have -= at;
        if have == window.len() {
            have = 0;
        }
    }
    sys::close(fd);
    found
}

/// The hexadecimal number at `line[from..]`, up to the first non-hex byte.
fn hex(line: &[u8], from: usize) -> Option<u64> {
    let digits = line.get(from..)?.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let text = core::str::from_utf8(&line[from..from + digits]).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// The caller's call site: up to `FRAMES` return addresses outside this library, by walking
/// the frame-pointer chain (the library is built with frame pointers; `scripts/build-trace`).
/// The walk reads only inside the thread's stack as glibc reports it (`stack_bounds`), from
/// the stack pointer up, each frame above the last and 16-aligned, and not at all when the
/// stack pointer is elsewhere (a signal stack, a coroutine's), so a program without frame
/// pointers ends the walk early or gives wrong frames, never a fault.
/// (libgcc's unwinder would be exact, but made CPython 20 times slower.)
#[inline(always)]
fn call_site(low: u64, high: u64) -> Walk {
    let mut w = Walk { frames: [0; FRAMES], n: 0 };
    let (fp, sp) = frame_and_stack_pointers();
    let (lo, hi) = (SELF_START.load(Ordering::Relaxed), SELF_END.load(Ordering::Relaxed));
    let mut fp = fp;
    let mut steps = 0;
    // Only on the thread's own stack (not a signal stack or a coroutine's), and only inside it.
    if sp < low || sp >= high {
        return w;
    }
    while fp >= sp && fp.is_multiple_of(16) && fp <= high - 16 && w.n < FRAMES && steps < 64 {
        // SAFETY: [fp, fp + 16) lies inside this thread's stack (checked above).
        let (next, ret) = unsafe { (*(fp as *const u64), strip_signature(*((fp + 8) as *const u64))) };
        if !(lo..hi).contains(&ret) {
            if ret < 4096 {
                break; // not code: the chain left the frames (code without frame pointers)
            }
            w.frames[w.n] = ret;
            w.n += 1;
        }
        if next <= fp {
            break;
        }
        fp = next;
        steps += 1;
    }
    w
}

/// The frame pointer and the stack pointer of the caller (inlined into it). On x86-64 `rbp`
/// points at the saved `rbp` with the return address above it; on aarch64 `x29` points at
/// the frame record, the caller's `x29` with the return address (its `x30`) above it: the
/// same walk for both.
#[inline(always)]
fn frame_and_stack_pointers() -> (u64, u64) {
    let (fp, sp): (u64, u64);
    // SAFETY: reads two registers.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: reads two registers.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mov {}, x29", "mov {}, sp", out(reg) fp, out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    (fp, sp)
}

/// The stack pointer of the caller (inlined into it).
#[inline(always)]
fn stack_pointer() -> u64 {
    frame_and_stack_pointers().1
}

/// A return address without its pointer-authentication code: on aarch64, code built with
/// `-mbranch-protection=pac-ret` saves a signed `x30`. `xpaclri` (a hint: a no-op on CPUs
/// without pointer authentication) strips it; it works on `x30` only.
#[inline(always)]
fn strip_signature(ret: u64) -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        let mut r = ret;
        // SAFETY: moves a value through x30, which the asm declares it changes.
        unsafe {
            core::arch::asm!("mov x30, {r}", "hint #7", "mov {r}, x30", r = inout(reg) r, out("x30") _, options(nomem, nostack, preserves_flags))
        };
        r
    }
    #[cfg(not(target_arch = "aarch64"))]
    ret
}

/// Finds this library's loaded segments (`SELF_START`, `SELF_END`) with `dl_iterate_phdr`.
fn find_self() {
    extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, _arg: *mut c_void) -> c_int {
        let me = find_self as *const () as u64;
        // SAFETY: the loader passes a valid info with `dlpi_phnum` program headers.
        unsafe {
            let info = &*info;
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            for k in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(k);
                if ph.p_type == libc::PT_LOAD {
                    let start = info.dlpi_addr + ph.p_vaddr;
                    lo = lo.min(start);
                    hi = hi.max(start + ph.p_memsz);
                }
            }
            if me >= lo && me < hi {
                SELF_START.store(lo, Ordering::Relaxed);
                SELF_END.store(hi, Ordering::Relaxed);
                return 1;
            }
        }
        0
    }
    // SAFETY: the callback only reads what the loader gives it.
    unsafe { libc::dl_iterate_phdr(Some(each), ptr::null_mut()) };
}

/// Which file a process records to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    /// FILE, which must not exist yet.
    Fresh,
    /// FILE again, if this process (before an `exec`) made it: its header has our pid.
    Again,
    /// FILE.PID, appended to if this process wrote it before an `exec`.
    Pid,
}

/// Opens the trace file `how` says and writes the header, or, in a file this process wrote
/// before it `exec`ed, an image marker.
fn open(how: Name) -> Option<c_int> {
    let mut name = [0u8; 4096 + 24];
    // SAFETY: PATH was set at start-up and is not changed afterwards.
    let path = unsafe { &*PATH.0.get() };
    let n = path.iter().position(|&c| c == 0)?;
    name[..n].copy_from_slice(&path[..n]);
    let mut end = n;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if how == Name::Pid {
        name[end] = b'.';
        end += 1;
        let mut digits = [0u8; 10];
        let mut k = digits.len();
        let mut v = pid;
        loop {
            k -= 1;
            digits[k] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        name[end..end + digits.len() - k].copy_from_slice(&digits[k..]);
        end += digits.len() - k;
    }
    name[end] = 0;
    let cname = CStr::from_bytes_until_nul(&name).ok()?;
    let mut h = [0u8; 24];
    let ours = {
        let fd = sys::open(cname, libc::O_RDONLY | libc::O_CLOEXEC, 0);
        let n = if fd >= 0 { sys::read(fd, &mut h) } else { -1 };
        if fd >= 0 {
            sys::close(fd);
        }
        n == 24 && &h[..8] == b"MLLRDTRC" && h[16..20] == pid.to_le_bytes()
    };
    if how == Name::Again && !ours {
        return None;
    }
    let flags = libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_APPEND
        | libc::O_CLOEXEC
        | match how {
            Name::Fresh => libc::O_EXCL,
            Name::Pid if !ours => libc::O_TRUNC,
            _ => 0,
        };
    let fd = sys::open(cname, flags, 0o644);
    if fd < 0 {
        return None;
    }
    let fd = sys::move_high(fd);
    let st = sys::fstat(fd)?;
    FILE_ID.store(st.st_dev, st.st_ino);
    // SAFETY: start-up or a child of fork: one thread; NAME is read only by `out_fd`, later.
    unsafe { (&mut *NAME.0.get())[..=end].copy_from_slice(&name[..=end]) };
    // The clock chunk: when recording began on the monotonic clock, so that the traces of the
    // processes of one run line up in time.
    let mut clock = [0u8; 11];
    clock[0] = 0xC4;
    let c = 1 + varint(&mut clock[1..], T0.load(Ordering::Relaxed));
    if ours && how != Name::Fresh {
        // A new program image in this process: the marker, with our pid.
        let mut m = [0u8; 11];
        m[0] = 0xC3;
        let n = 1 + varint(&mut m[1..], pid as u64);
        write_to(fd, &[&m[..n], &clock[..c]]);
    } else {
        h = [0u8; 24];
        h[..8].copy_from_slice(b"MLLRDTRC");
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        h[16..20].copy_from_slice(&pid.to_le_bytes());
        write_to(fd, &[&h, &clock[..c]]);
    }
    Some(fd)
}

/// This process's trace file: its full name (for `out_fd` to open it again)...
static NAME: Path = Path(UnsafeCell::new([0; 4096]));

/// ... and its device and inode, to tell whether `FD` is still it.
struct FileId {
    dev: AtomicU64,
    ino: AtomicU64,
}

impl FileId {
    fn store(&self, dev: u64, ino: u64) {
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
    }

    fn is(&self, st: &libc::stat) -> bool {
        st.st_dev == self.dev.load(Ordering::Relaxed) && st.st_ino == self.ino.load(Ordering::Relaxed)
    }
}

static FILE_ID: FileId = FileId { dev: AtomicU64::new(0), ino: AtomicU64::new(0) };

/// The trace file's descriptor, checked before each write: a program may close every
/// descriptor it did not open (a daemon does) and open its own files under the same number,
/// which must not receive the trace. If `FD` is no longer the file, the file is opened again
/// by name; if that fails, recording stops. `None` when not recording, or when `need` more
/// bytes would pass the file-size limit (`RLIMIT_FSIZE`: the kernel would kill the program
/// with SIGXFSZ): recording stops there, the file ending after its last whole chunk.
fn out_fd(need: usize) -> Option<c_int> {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return None;
    }
    let (fd, size) = match sys::fstat(fd) {
        Some(st) if FILE_ID.is(&st) => (fd, st.st_size as u64),
        _ => {
            // SAFETY: NAME was set when the file was opened and is not changed while FD >= 0.
            let name = unsafe { &*NAME.0.get() };
            let again = CStr::from_bytes_until_nul(name)
                .ok()
                .map(|n| sys::open(n, libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC, 0))
                .filter(|&f| f >= 0)
                .map(sys::move_high);
            let st = again.and_then(sys::fstat).filter(|st| FILE_ID.is(st));
            match (again, st) {
                (Some(new), Some(st)) => match FD.compare_exchange(fd, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => (new, st.st_size as u64),
                    Err(other) => {
                        sys::close(new); // another thread opened it again first
                        (other, st.st_size as u64)
                    }
                },
                (again, _) => {
                    if let Some(f) = again {
                        sys::close(f);
                    }
                    let _ = FD.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed);
                    return None;
                }
            }
        }
    };
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && size + need as u64 > lim.rlim_cur
    {
        FD.store(-1, Ordering::Relaxed);
        return None;
    }
    Some(fd)
}

/// Appends `parts` to the trace as one piece, with signals blocked (see `blocked`).
fn write_all(parts: &[&[u8]]) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    blocked(|| {
        if let Some(fd) = out_fd(total) {
            write_to(fd, parts);
        }
    });
}

/// Runs `f` with every signal blocked in this thread: a handler that ends the program (`_exit`
/// from a SIGALRM handler, a fatal signal) must not run in the middle of a write to the trace,
/// and find a chunk half written or write it a second time.
fn blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sets and restores this thread's signal mask (glibc keeps its own internal
    // signals out of it).
    unsafe {
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = (core::mem::zeroed(), core::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        r
    }
}

/// Writes all of `parts` to `fd` (one `writev`, then the rest if the kernel took less).
fn write_to(fd: c_int, parts: &[&[u8]]) {
    let mut iov = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; 2];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec { iov_base: p.as_ptr() as *mut c_void, iov_len: p.len() };
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = loop {
        let n = sys::writev(fd, &iov[..parts.len().min(2)]);
        // SAFETY: __errno_location returns the calling thread's errno.
        if n >= 0 || unsafe { *libc::__errno_location() } != libc::EINTR {
            break n;
        }
    };
    if done < 0 {
        return;
    }
    // Rare: finish a short write part by part.
    let mut skip = done as usize;
    if skip < total {
        for p in parts {
            let from = skip.min(p.len());
            skip -= from;
            let mut rest = &p[from..];
            while !rest.is_empty() {
                done = sys::write(fd, rest);
                if done <= 0 {
                    return;
                }
                rest = &rest[done as usize..];
            }
        }
    }
}

/// This thread's buffer, taken on its first event; `None` when not recording.
fn buffer() -> Option<*mut Buffer> {
    if FD.load(Ordering::Relaxed) < 0 || ENDED.load(Ordering::Relaxed) {
        return None;
    }
    let b = BUF.with(|c| c.get());
    if b == EXITED {
        return None; // after this thread's buffer was written at its exit
    }
    if !b.is_null() {
        return Some(b);
    }
    let b = new_buffer()?;
    BUF.with(|c| c.set(b));
    let key = KEY.load(Ordering::Relaxed);
    if key != u32::MAX {
        // SAFETY: a valid key. (It may allocate, for keys past the first 32: that allocation
        // finds this thread's buffer already set.)
        unsafe { libc::pthread_setspecific(key, b as *const c_void) };
    }
    Some(b)
}

/// Every buffer ever mapped (`BUFFERS`), newest first. They stay mapped: the pointers stay
/// valid; who may touch a buffer's fields is its `state`'s business.
fn buffers() -> impl Iterator<Item = *mut Buffer> {
    core::iter::successors(Some(BUFFERS.load(Ordering::Acquire)).filter(|b| !b.is_null()), |&b| {
        // SAFETY: a buffer's `next` is set before it is pushed and never changed.
        Some(unsafe { (*b).next }).filter(|n| !n.is_null())
    })
}

/// Whether this process is the one recording: a child of vfork shares our memory (and our
/// statics) but must not write the trace.
fn ours() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    pid == OWNER.load(Ordering::Relaxed)
}

/// A buffer for a new thread: one that an exited thread left, or a fresh mapping. It finds
/// the thread's stack while its data is still empty.
fn new_buffer() -> Option<*mut Buffer> {
    // SAFETY: every buffer on the list stays mapped; `in_use` is taken with a CAS.
    let free = buffers()
        .find(|&b| unsafe { (*b).in_use.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed) }.is_ok());
    // SAFETY: `b` is ours: taken above, or fresh.
    unsafe {
        let b = match free {
            Some(b) => b,
            None => {
                let b: *mut Buffer = OsPageSource.reserve(BUF_BYTES, MIN_PAGE_SIZE)?.as_ptr().cast();
                // Fresh zeroed memory: an IDLE, empty buffer.
                (*b).in_use.store(true, Ordering::Relaxed);
                let mut head = BUFFERS.load(Ordering::Relaxed);
                loop {
                    (*b).next = head;
                    match BUFFERS.compare_exchange_weak(head, b, Ordering::Release, Ordering::Relaxed) {
                        Ok(_) => break,
                        Err(h) => head = h,
                    }
                }
                b
            }
        };
        // This thread owns it now.
        (*b).fill.store(0, Ordering::Relaxed);
        (*b).thread = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
        let sp = stack_pointer();
        let (low, high) = stack_of(sp, &mut (&mut (*b).data)[..64 << 10]);
        (*b).stack_low = low;
        (*b).stack_high = high;
        Some(b)
    }
}

/// Appends the buffer's events to the file as a chunk. The caller holds the buffer (`BUSY` or
/// `TAKEN`); it empties it.
///
/// # Safety
/// `b` is a buffer the caller holds.
unsafe fn flush(b: *mut Buffer) {
    // SAFETY: the caller holds the buffer.
    let b = unsafe { &mut *b };
    let fill = b.fill.load(Ordering::Acquire);
    let (count, len) = (fill >> 32, (fill & 0xffff_ffff) as usize);
    let mut h = [0u8; 48];
    let mut n = 0;
    h[n] = 0xC1;
    n += 1;
    for v in [b.thread as u64, b.start, count, len as u64] {
        n += varint(&mut h[n..], v);
    }
    // The chunk is written and the buffer emptied with signals blocked: a handler that ends
    // the program must find it either not yet written or written and empty.
    blocked(|| {
        if count != 0 && len <= b.data.len() {
            if let Some(fd) = out_fd(n + len) {
                write_to(fd, &[&h[..n], &b.data[..len]]);
            }
        }
        b.fill.store(0, Ordering::Release);
    });
}

fn varint(out: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

/// Records one event: `kind` (1 alloc, 2 free, 3 realloc), an address as a zigzag difference
/// from the chunk's last one, then `plain` numbers as they are (and `align_log` for an alloc).
fn record(kind: u8, addr: u64, plain: &[u64], align_log: Option<u8>, with_site: bool, time: Option<u64>) {
    if FD.load(Ordering::Relaxed) < 0 {
        return;
    }
    // The recorder's system calls (a buffer's mapping, a write) must not change errno: `free`
    // keeps it, and a successful `malloc` leaves it alone.
    keep_errno(|| record_event(kind, addr, plain, align_log, with_site, time));
}

fn record_event(kind: u8, addr: u64, plain: &[u64], align_log: Option<u8>, with_site: bool, time: Option<u64>) {
    let Some(b) = buffer() else { return };
    // SAFETY: the buffer stays mapped; its fields are ours while we hold it as BUSY.
    let b = unsafe { &mut *b };
    loop {
        match b.state.compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            // Written out by a thread about to exec: for a moment.
            Err(FLUSHING) => core::hint::spin_loop(),
            // TAKEN: the program has ended. (BUSY: a signal handler's allocation interrupted
            // this thread's own; it is dropped rather than mixed into the event being written.)
            Err(_) => return,
        }
    }
    let site = with_site.then(|| call_site(b.stack_low, b.stack_high));
    let fill = b.fill.load(Ordering::Relaxed);
    let (mut count, mut len) = (fill >> 32, (fill & 0xffff_ffff) as usize);
    if len + MAX_EVENT > b.data.len() {
        // SAFETY: we hold the buffer.
        unsafe { flush(b) };
        (count, len) = (0, 0);
    }
    let now = time.unwrap_or_else(now_ns).saturating_sub(T0.load(Ordering::Relaxed));
    if count == 0 {
        b.start = now;
        b.last = now;
        b.prev_addr = 0;
    }
    let now = now.max(b.last);
    let d = &mut b.data[len..];
    let mut n = 0;
    d[n] = kind;
    n += 1;
    n += varint(&mut d[n..], now - b.last);
    n += varint(&mut d[n..], zigzag(addr.wrapping_sub(b.prev_addr) as i64));
    for &v in plain {
        n += varint(&mut d[n..], v);
    }
    if let Some(l) = align_log {
        d[n] = l;
        n += 1;
    }
    let frames = site.as_ref().map_or(&[][..], |w| &w.frames[..w.n]);
    d[n] = frames.len() as u8;
    n += 1;
    for &f in frames {
        n += varint(&mut d[n..], f);
    }
    b.last = now;
    b.prev_addr = addr;
    len += n;
    count += 1;
    // Every `RSS_EVERY_NS`, one thread also notes the process's resident set (kind 4).
    let last = LAST_RSS.load(Ordering::Relaxed);
    if now >= last + RSS_EVERY_NS
        && LAST_RSS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        && len + 21 <= b.data.len()
    {
        let rss = core_alloc::raw::resident_bytes().max(0) as u64;
        let d = &mut b.data[len..];
        d[0] = 4;
        let mut n = 1;
        n += varint(&mut d[n..], 0);
        n += varint(&mut d[n..], rss);
        len += n;
        count += 1;
    }
    b.fill.store(count << 32 | len as u64, Ordering::Release);
    b.state.store(IDLE, Ordering::Release);
}

/// How often the resident set is noted (ns), and when it last was (ns since `T0`).
const RSS_EVERY_NS: u64 = 10_000_000;
static LAST_RSS: AtomicU64 = AtomicU64::new(0);

/// An allocation of `size` bytes aligned to `align` returned `p` (nothing if null).
#[inline]
pub fn alloc(p: *mut c_void, size: usize, align: usize) {
    if !p.is_null() {
        record(1, p as u64, &[size as u64], Some(align.max(1).trailing_zeros() as u8), true, None);
    }
}

/// `p` is being freed (nothing for null).
#[inline]
pub fn free(p: *mut c_void) {
    if !p.is_null() {
        record(2, p as u64, &[], None, false, None);
    }
}

/// The time to give a realloc: taken before the call, since the old block may be handed to
/// another thread before the call returns, and that thread's allocation must come after.
#[inline]
pub fn realloc_time() -> u64 {
    if FD.load(Ordering::Relaxed) < 0 {
        return 0;
    }
    now_ns()
}

/// `old` was resized to `size` bytes at `new` (null: the call failed), at `time`
/// (`realloc_time`, before the call).
#[inline]
pub fn realloc(old: *mut c_void, new: *mut c_void, size: usize, time: u64) {
    record(3, old as u64, &[new as u64, size as u64], None, true, Some(time));
}

extern "C" fn thread_exit(b: *mut c_void) {
    if b.is_null() {
        return;
    }
    let b = b as *mut Buffer;
    BUF.with(|c| c.set(EXITED));
    // SAFETY: the key's value is this thread's buffer, which stays mapped.
    unsafe {
        loop {
            match (*b).state.compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(FLUSHING) => core::hint::spin_loop(),
                Err(_) => return, // TAKEN: the program has ended, and `end` wrote it
            }
        }
        keep_errno(|| {
            flush(b);
            // Give the data's memory back before another thread takes the buffer: its whole OS
            // pages (`data` starts inside the buffer's first page, after the header, and a
            // madvise that does not start on a page boundary fails, on 4 KiB pages too).
            let page = page_size();
            let start = ((*b).data.as_ptr() as usize).next_multiple_of(page);
            let end = (b as usize + BUF_BYTES) & !(page - 1);
            if end > start {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        });
        (*b).state.store(IDLE, Ordering::Release);
        (*b).in_use.store(false, Ordering::Release);
    }
}

extern "C" fn process_exit() {
    mallard_trace_end();
}

/// The program ends (or `exec`s): writes every thread's events and the memory map, once; later
/// events are dropped. Only plain system calls, no locks: it may run in a signal handler, or
/// in a process whose other threads are still running (their buffers are taken between two
/// events).
#[no_mangle]
pub extern "C" fn mallard_trace_end() {
    if FD.load(Ordering::Relaxed) < 0 {
        return;
    }
    if !ours() {
        return; // a child of vfork, in our memory: the process that shares it goes on
    }
    if ENDED.swap(true, Ordering::AcqRel) {
        return;
    }
    keep_errno(|| {
        for b in buffers() {
            // SAFETY: each is written once it is held as TAKEN (or, for this thread's own in a
            // handler that interrupted its event, from `fill`, which covers only whole
            // events). It stays TAKEN: nothing more is recorded into it.
            unsafe {
                if take(b, true) {
                    flush(b);
                }
            }
        }
        write_maps();
    });
}

/// The program is about to `exec` (or `daemon` is about to end the parent): every thread's
/// events so far, and the memory map, are written; recording goes on (the call may fail). The
/// map is written at most every 50 ms: a program that tries many paths to `exec` one after
/// the other does not write it each time.
#[no_mangle]
pub extern "C" fn mallard_trace_flush() {
    static LAST_MAPS: AtomicU64 = AtomicU64::new(0);
    if FD.load(Ordering::Relaxed) < 0 || !ours() {
        return; // not recording, or a child of vfork
    }
    keep_errno(|| {
        for b in buffers() {
            // SAFETY: each is written while we hold it, then handed back (its thread, waiting
            // in `record_event`, goes on with the next event).
            unsafe {
                if take(b, false) {
                    flush(b);
                    (*b).state.store(IDLE, Ordering::Release);
                }
            }
        }
        let now = clock_ns();
        if now.saturating_sub(LAST_MAPS.swap(now, Ordering::Relaxed)) >= 50_000_000 {
            write_maps();
        }
    });
}

/// Takes buffer `b` for writing it out, waiting for its thread to finish the event it is
/// recording: true once held (as TAKEN when `ending`, else as FLUSHING, which its thread waits
/// out); false if it is TAKEN already, or if it is this thread's own and busy. When `ending` (the program ends: there is no later chance), true
/// also for this thread's own buffer interrupted inside an event and for a thread that does
/// not finish its event (stopped in a handler): then only their whole events, from `fill`, are
/// written.
///
/// # Safety
/// `b` is a buffer on `BUFFERS`.
unsafe fn take(b: *mut Buffer, ending: bool) -> bool {
    let me = BUF.with(|c| c.get());
    let mut spins = 0u32;
    let to = if ending { TAKEN } else { FLUSHING };
    loop {
        // SAFETY: buffers stay mapped.
        match unsafe { &*b }.state.compare_exchange(IDLE, to, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(TAKEN) => return false,
            Err(_) if ending && (b == me || spins > 100_000) => return true,
            Err(_) if b == me => return false,
            Err(_) => {
                spins += 1;
                if spins.is_multiple_of(64) {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
                core::hint::spin_loop();
            }
        }
    }
}

/// Appends the process's memory map (`/proc/thread-self/maps`, up to 4 MiB of it) as a maps
/// chunk: tag `0xC2`, its length, the text.
fn write_maps() {
    const MAX: usize = 4 << 20;
    if FD.load(Ordering::Relaxed) < 0 {
        return;
    }
    let Some(m) = OsPageSource.reserve(MAX, MIN_PAGE_SIZE) else { return };
    // SAFETY: a fresh mapping for the text, released below; the file is read with plain system
    // calls into it.
    unsafe {
        let text = core::slice::from_raw_parts_mut(m.as_ptr(), MAX);
        let maps = sys::open_maps();
        let mut len = 0;
        if maps >= 0 {
            while len < MAX {
                let n = sys::read(maps, &mut text[len..]);
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            sys::close(maps);
        }
        if len > 0 {
            let mut h = [0u8; 11];
            h[0] = 0xC2;
            let n = 1 + varint(&mut h[1..], len as u64);
            write_all(&[&h[..n], &text[..len]]);
        }
        OsPageSource.release(m, MAX);
    }
}

extern "C" fn fork_child() {
    keep_errno(switch_to_child_file);
}

/// In a child made by `fork`: the parent writes what the buffers hold; the child starts its
/// own file, and the buffers of the parent's other threads are free for its new threads.
fn switch_to_child_file() {
    let me = BUF.with(|c| c.get());
    for b in buffers() {
        // SAFETY: the child's only thread owns them all now.
        unsafe {
            (*b).fill.store(0, Ordering::Relaxed);
            (*b).state.store(IDLE, Ordering::Relaxed);
            if b != me {
                (*b).in_use.store(false, Ordering::Relaxed);
            }
        }
    }
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    ENDED.store(false, Ordering::Relaxed);
    let old = FD.swap(-1, Ordering::Relaxed);
    if old >= 0 {
        // Only if it is still the trace: the program may have put a file of its own there.
        if sys::fstat(old).is_some_and(|st| FILE_ID.is(&st)) {
            sys::close(old);
        }
        FD.store(open(Name::Pid).unwrap_or(-1), Ordering::Relaxed);
    }
}
