//! The OS layer: where memory comes from.
//!
//! `PageSource` is the narrow interface the allocator needs: reserve an aligned region
//! (readable, writable and zero-filled), decommit parts of it (the contents may be dropped and
//! the memory stops counting as resident; it reads as zero when touched again), and release
//! it. `OsPageSource` implements it with mmap/madvise/munmap; `SimPageSource` carves a fixed
//! buffer, so that Miri and the model tests run the real allocator without system calls.

use crate::config::{MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use crate::lock::SpinLock;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

/// A source of aligned, zero-filled memory.
///
/// # Safety
/// `reserve` must return memory that is valid for reads and writes of `size` bytes, aligned to
/// `align`, zero-filled, and not handed out again until it is released.
pub unsafe trait PageSource: Sync {
    /// The source's page: the unit of `decommit`, `guard` and `unguard`. A power of two from
    /// `MIN_PAGE_SIZE` to `MAX_PAGE_SIZE`; the kernel's page for the OS source.
    fn page_size(&self) -> usize {
        page_size()
    }

    /// Reserves `size` bytes (a multiple of `MIN_PAGE_SIZE`) aligned to `align` (a power of
    /// two, at least `MIN_PAGE_SIZE`). `None` when the system is out of memory.
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>>;

    /// Lets the system drop the contents of `[p, p + size)`; it reads as zero afterwards.
    ///
    /// # Safety
    /// The range lies inside one reserved region, holds no live data, and starts and ends on
    /// the source's page boundaries (`page_size`).
    unsafe fn decommit(&self, p: NonNull<u8>, size: usize);

    /// Returns a whole region to the system.
    ///
    /// # Safety
    /// `p` and `size` are exactly what one `reserve` returned and asked for; nothing in the
    /// region is used afterwards.
    unsafe fn release(&self, p: NonNull<u8>, size: usize);

    /// Grows or shrinks the region `[p, p + old_size)` to `new_size` bytes, moving it if
    /// needed to an address aligned to `align`, without copying the bytes in user space.
    /// `None` if that is not possible; the old region is then unchanged.
    ///
    /// # Safety
    /// As for `release`: `p` and `old_size` describe one whole reserved region.
    unsafe fn remap(&self, _p: NonNull<u8>, _old_size: usize, _new_size: usize, _align: usize) -> Option<NonNull<u8>> {
        None
    }

    /// Makes `[p, p + size)` (whole pages of `page_size`) a guard: any access faults. Sources
    /// that cannot (the simulated one) leave it as it is.
    ///
    /// # Safety
    /// The range lies inside one reserved region and holds nothing that is ever accessed.
    unsafe fn guard(&self, _p: NonNull<u8>, _size: usize) {}

    /// Makes a guard made by `guard` ordinary memory again (readable and writable; its
    /// contents are not kept).
    ///
    /// # Safety
    /// `[p, p + size)` is exactly a range an earlier `guard` covered.
    unsafe fn unguard(&self, _p: NonNull<u8>, _size: usize) {}
}

/// The word `OFFSET` bytes after `p`, whatever bits it holds: one load instruction in
/// assembly, so that bytes the program never initialized (a block's padding) are read as some
/// integer, not as the undefined value they are to the compiler, which could exploit that
/// once the allocator is inlined into its caller. (The offset is part of the instruction, so
/// that it costs no addition.) Not under Miri, which runs no assembly.
///
/// # Safety
/// `p + OFFSET` is aligned and valid for a read of one word.
#[cfg(not(miri))]
#[inline(always)]
pub(crate) unsafe fn load_any_bits<const OFFSET: usize>(p: *const u8) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let v: usize;
        // SAFETY: per the contract.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [{p} + {off}]",
                p = in(reg) p,
                off = const OFFSET,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: usize;
        // SAFETY: per the contract.
        unsafe {
            core::arch::asm!(
                "ldr {v}, [{p}, #{off}]",
                p = in(reg) p,
                off = const OFFSET,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: per the contract (no assembly here: the plain read it is).
    unsafe {
        p.add(OFFSET).cast::<usize>().read()
    }
}

/// Decrements the `u32` `OFFSET` bytes after `base` and runs `then` if it became zero. On
/// x86-64 one `dec` and a jump on the zero flag it sets (a load and a store would need a
/// reload and a compare; the offset is part of the instruction). Not atomic: for a counter
/// only this thread writes, which other threads may read (they see the old or the new value).
///
/// # Safety
/// `base + OFFSET` is an aligned, live `AtomicU32` that only the calling thread writes.
#[inline(always)]
pub(crate) unsafe fn decrement_then<const OFFSET: usize>(base: *const u8, then: impl FnOnce()) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: per the contract; the asm touches only the counter and the flags.
    unsafe {
        core::arch::asm!(
            "dec dword ptr [{base} + {off}]",
            "jz {then}",
            base = in(reg) base,
            off = const OFFSET,
            then = label { then() },
            options(nostack),
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
        // SAFETY: per the contract.
        let counter = unsafe { &*base.add(OFFSET).cast::<AtomicU32>() };
        let left = counter.load(Relaxed).wrapping_sub(1);
        counter.store(left, Relaxed);
        if left == 0 {
            then();
        }
    }
}

/// Runs `f` (a system call on a `free` path) without letting it change errno: C's `free` must
/// keep errno, and a failed `madvise` or `munmap` would set it.
#[cfg(not(miri))]
pub fn keep_errno<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: errno_location returns the calling thread's errno.
    let saved = unsafe { *errno_location() };
    let r = f();
    // SAFETY: as above.
    unsafe { *errno_location() = saved };
    r
}

/// The calling thread's errno.
#[cfg(all(target_os = "linux", not(miri)))]
fn errno_location() -> *mut i32 {
    // SAFETY: no preconditions.
    unsafe { libc::__errno_location() }
}

/// The calling thread's errno.
#[cfg(all(target_os = "macos", not(miri)))]
fn errno_location() -> *mut i32 {
    // SAFETY: no preconditions.
    unsafe { libc::__error() }
}

pub(crate) use libc::ENOMEM;

/// Sets the calling thread's errno (C callers read it after a failed `malloc`).
pub(crate) fn set_errno(value: i32) {
    #[cfg(not(miri))]
    // SAFETY: errno_location returns the calling thread's errno.
    unsafe {
        *errno_location() = value
    };
    #[cfg(miri)]
    let _ = value;
}

/// The value of environment variable `name`, if it is set (without allocating; under Miri,
/// never). For start-up only: the slice lives as long as nothing changes the environment.
pub(crate) fn env(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    #[cfg(not(miri))]
    {
        // SAFETY: getenv takes a C string and returns NULL or a C string of the environment.
        let v = unsafe { libc::getenv(name.as_ptr()) };
        if v.is_null() {
            return None;
        }
        // SAFETY: a non-null result of getenv.
        Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
    }
    #[cfg(miri)]
    {
        let _ = name;
        None
    }
}

/// Milliseconds on a monotonic clock (for purge delays; read only on slow paths).
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // (The coarse clock is enough for delays in ms, and costs no more than a memory read.)
    #[cfg(all(target_os = "linux", not(miri)))]
    let clock = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(all(target_os = "linux", not(miri))))]
    let clock = libc::CLOCK_MONOTONIC;
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Starts a detached thread running `f(arg)` with every signal blocked and a small stack
/// (the background purger). False if no thread could be made. Allocates as glibc's
/// `pthread_create` does; errno is kept.
///
/// # Safety
/// `f(arg)` runs on the new thread: `arg` must be valid there for as long as `f` uses it.
pub(crate) unsafe fn spawn_detached(
    f: extern "C" fn(*mut core::ffi::c_void) -> *mut core::ffi::c_void,
    arg: *mut core::ffi::c_void,
) -> bool {
    #[cfg(not(miri))]
    {
        keep_errno(|| {
            // SAFETY: attr and the signal sets are initialised before use and destroyed after;
            // the thread handle is an out-pointer.
            unsafe {
                let mut all: libc::sigset_t = core::mem::zeroed();
                let mut old: libc::sigset_t = core::mem::zeroed();
                libc::sigfillset(&mut all);
                // The new thread inherits the mask: blocked from its first instruction.
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
                let mut attr: libc::pthread_attr_t = core::mem::zeroed();
                libc::pthread_attr_init(&mut attr);
                libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
                // (An integer on glibc, a pointer on musl.)
                let mut t: libc::pthread_t = core::mem::zeroed();
                // A small stack; should the program's static TLS not fit in it, the default.
                let small = libc::pthread_attr_setstacksize(&mut attr, 256 << 10) == 0
                    && libc::pthread_create(&mut t, &attr, f, arg) == 0;
                let ok = small || {
                    libc::pthread_attr_destroy(&mut attr);
                    libc::pthread_attr_init(&mut attr);
                    libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
                    libc::pthread_create(&mut t, &attr, f, arg) == 0
                };
                libc::pthread_attr_destroy(&mut attr);
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
                ok
            }
        })
    }
    #[cfg(miri)]
    {
        let _ = (f, arg);
        false
    }
}

/// Names the calling thread (as `top -H` and `/proc/PID/task/*/comm` show it).
pub(crate) fn name_thread(name: &core::ffi::CStr) {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of up to 16 bytes.
    keep_errno(|| unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) });
    #[cfg(all(target_os = "macos", not(miri)))]
    // SAFETY: names the calling thread; reads a NUL-terminated string.
    keep_errno(|| unsafe { libc::pthread_setname_np(name.as_ptr()) });
    #[cfg(miri)]
    let _ = name;
}

/// Sleeps until `now_ms()` reaches `at`.
pub(crate) fn sleep_until_ms(at: u64) {
    loop {
        let now = now_ms();
        if now >= at {
            return;
        }
        let ms = at - now;
        let ts = libc::timespec { tv_sec: (ms / 1000) as _, tv_nsec: ((ms % 1000) * 1_000_000) as _ };
        // SAFETY: ts is a valid timespec; the remainder is not wanted (the loop re-reads the clock).
        #[cfg(not(miri))]
        keep_errno(|| unsafe { libc::nanosleep(&ts, ptr::null_mut()) });
        // (The purger never runs under Miri.)
        #[cfg(miri)]
        let _ = ts;
    }
}

/// The kernel's page size, read once (`sysconf`, which does not allocate). mallard runs on
/// pages of 4 to 64 KiB (`MIN_PAGE_SIZE`, `MAX_PAGE_SIZE`: aarch64 kernels come with 4, 16
/// or 64 KiB); on any other size it stops at its first allocation with one line, rather than
/// decommit or guard ranges the kernel would round over live data.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            #[cfg(not(miri))]
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            #[cfg(miri)]
            let p = MIN_PAGE_SIZE;
            if !page_size_supported(p) {
                unsupported_page_size(p);
            }
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Whether mallard runs on OS pages of `p` bytes (what `sysconf` said; -1 is `usize::MAX`).
fn page_size_supported(p: usize) -> bool {
    p.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&p)
}

#[cold]
fn unsupported_page_size(p: usize) -> ! {
    use core::fmt::Write;
    let mut w = FdWriter::new(2);
    let _ = writeln!(w, "mallard: the OS page size is {p} bytes; mallard runs on pages of 4 KiB to 64 KiB");
    w.flush();
    std::process::abort()
}

/// Memory straight from the kernel: anonymous private mappings.
pub struct OsPageSource;

#[cfg(not(miri))]
// SAFETY: mmap returns fresh zero-filled pages; the trimming below keeps exactly the aligned
// `size` bytes mapped.
unsafe impl PageSource for OsPageSource {
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        debug_assert!(size % MIN_PAGE_SIZE == 0 && align.is_power_of_two());
        // Ask for a region that is aligned by luck first (the kernel often places mappings
        // next to each other); otherwise over-reserve and trim both ends.
        let p = mmap(ptr::null_mut(), size)?;
        if (p.as_ptr() as usize) & (align - 1) == 0 {
            return Some(p);
        }
        // SAFETY: p is a mapping of exactly `size` bytes that we own.
        unsafe { libc::munmap(p.as_ptr().cast(), size) };
        let total = size.checked_add(align.saturating_sub(MIN_PAGE_SIZE))?;
        let raw = mmap(ptr::null_mut(), total)?;
        let start = raw.as_ptr() as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = total - head - size;
        // SAFETY: both trimmed ranges lie inside the mapping we just made and are unused.
        unsafe {
            if head > 0 {
                libc::munmap(raw.as_ptr().cast(), head);
            }
            if tail > 0 {
                libc::munmap(raw.as_ptr().add(head + size).cast(), tail);
            }
            Some(NonNull::new_unchecked(raw.as_ptr().add(head)))
        }
    }

    unsafe fn decommit(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: the caller owns the range; MADV_DONTNEED on private anonymous memory drops
        // the pages and makes them read as zero on the next touch.
        #[cfg(target_os = "linux")]
        keep_errno(|| unsafe { libc::madvise(p.as_ptr().cast(), size, libc::MADV_DONTNEED) });
        // macOS keeps the contents after MADV_DONTNEED, and MADV_FREE drops them only under
        // memory pressure, so neither reads as zero, which `decommit` promises (a purged page
        // is handed out as zeroed memory, for calloc). A fresh mapping over the range does;
        // should it fail, the range merely stays as it was (it is not zero then, but the
        // failure leaves the old mapping: the caller's blocks are never lost).
        // SAFETY: the caller owns the range; MAP_FIXED replaces exactly these pages.
        #[cfg(target_os = "macos")]
        keep_errno(|| unsafe {
            libc::mmap(
                p.as_ptr().cast(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        });
    }

    unsafe fn release(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes back exactly one region it reserved.
        keep_errno(|| unsafe { libc::munmap(p.as_ptr().cast(), size) });
    }

    unsafe fn guard(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: the caller owns the range and never accesses it.
        keep_errno(|| unsafe { libc::mprotect(p.as_ptr().cast(), size, libc::PROT_NONE) });
    }

    unsafe fn unguard(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: the caller owns the range, a guard of one of its mappings. Back to the
        // protection of the rest, the kernel merges it with its neighbours again (one mapping
        // that `mremap` can move).
        keep_errno(|| unsafe { libc::mprotect(p.as_ptr().cast(), size, libc::PROT_READ | libc::PROT_WRITE) });
    }

    // (macOS has no mremap: huge blocks that grow past their mapping are copied.)
    #[cfg(target_os = "linux")]
    unsafe fn remap(&self, p: NonNull<u8>, old_size: usize, new_size: usize, align: usize) -> Option<NonNull<u8>> {
        // Shrinking or growing in place keeps the alignment; try that first.
        // SAFETY: the caller passes one whole region; without MREMAP_MAYMOVE the kernel
        // either resizes it in place or fails leaving it unchanged.
        let r = unsafe { libc::mremap(p.as_ptr().cast(), old_size, new_size, 0) };
        if r != libc::MAP_FAILED {
            return Some(p);
        }
        // Move it: reserve an aligned target, then let the kernel move the page tables there
        // (MREMAP_FIXED replaces the target mapping), so no byte is copied.
        let target = self.reserve(new_size, align)?;
        // SAFETY: `target` is a fresh mapping of `new_size` bytes that we own; on failure the
        // old region is untouched and we give the target back.
        unsafe {
            let r = libc::mremap(
                p.as_ptr().cast(),
                old_size,
                new_size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.as_ptr() as *mut core::ffi::c_void,
            );
            if r == libc::MAP_FAILED {
                libc::munmap(target.as_ptr().cast(), new_size);
                return None;
            }
        }
        Some(target)
    }
}

#[cfg(not(miri))]
fn mmap(hint: *mut u8, size: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping has no preconditions.
    let p = unsafe {
        libc::mmap(
            hint.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Under Miri the OS source is a simulated one over memory taken once from the system
/// allocator (Miri cannot run mmap).
#[cfg(miri)]
static MIRI_SOURCE: SimPageSource = SimPageSource::lazy(64 << 20);

#[cfg(miri)]
// SAFETY: delegates to a SimPageSource, which keeps the PageSource promises.
unsafe impl PageSource for OsPageSource {
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        MIRI_SOURCE.reserve(size, align)
    }
    unsafe fn decommit(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIRI_SOURCE.decommit(p, size) }
    }
    unsafe fn release(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIRI_SOURCE.release(p, size) }
    }
}

#[cfg(not(loom))] // (the model checker's lock is not `const`)
/// Maximum number of released regions a `SimPageSource` remembers for reuse.
const SIM_FREE_SLOTS: usize = 64;

#[cfg(not(loom))] // (the model checker's lock is not `const`)
/// A page source over one fixed buffer: bump allocation plus a small first-fit list of
/// released regions. Decommit zeroes the range, as the kernel would on the next touch.
pub struct SimPageSource {
    size: usize,
    /// The simulated kernel's page: every decommit, release and guard must be whole pages of
    /// it (checked), as a kernel with that page would need.
    page: usize,
    state: SpinLock<SimState>,
}

#[cfg(not(loom))]
struct SimState {
    /// The buffer; null until first use for a `lazy` source.
    base: *mut u8,
    bump: usize,
    free: [(usize, usize); SIM_FREE_SLOTS], // (offset, size); size 0 = unused slot
}

#[cfg(not(loom))]
// SAFETY: the buffer is only handed out in disjoint regions, under the lock.
unsafe impl Send for SimState {}

#[cfg(not(loom))]
impl SimPageSource {
    /// A source over `[base, base + size)`.
    ///
    /// # Safety
    /// The buffer must be valid for reads and writes, zero-filled, and used by nothing else for
    /// as long as the source or any memory from it is used.
    pub const unsafe fn new(base: *mut u8, size: usize) -> Self {
        SimPageSource {
            size,
            page: MIN_PAGE_SIZE,
            state: SpinLock::new(SimState { base, bump: 0, free: [(0, 0); SIM_FREE_SLOTS] }),
        }
    }

    /// The same source simulating a kernel whose page is `page` bytes (a power of two from
    /// `MIN_PAGE_SIZE` to `MAX_PAGE_SIZE`; 4 KiB by default).
    pub const fn with_page_size(self, page: usize) -> Self {
        assert!(page.is_power_of_two() && page >= MIN_PAGE_SIZE && page <= MAX_PAGE_SIZE, "page size");
        SimPageSource { page, ..self }
    }

    /// Panics unless `[p, p + size)` is whole pages: a kernel would refuse it, or round the
    /// length up over the bytes that follow.
    fn check_pages(&self, what: &str, p: NonNull<u8>, size: usize) {
        let page = self.page;
        assert!(
            (p.as_ptr() as usize) % page == 0 && size % page == 0,
            "SimPageSource: {what} of {size} bytes at {p:p} is not whole {page}-byte pages"
        );
    }

    /// A source whose zeroed buffer of `size` bytes is taken on first use, straight from the
    /// system (never through the global allocator, which may be mallard itself).
    pub const fn lazy(size: usize) -> Self {
        // SAFETY: a null base is replaced by a fresh buffer before any use.
        unsafe { Self::new(ptr::null_mut(), size) }
    }

    /// A source over a fresh zeroed buffer of `size` bytes (for tests and simulations). The
    /// buffer is never freed unless `free_buffer` is called: memory from the source may
    /// outlive any owner.
    pub fn with_capacity(size: usize) -> Self {
        let base = take_buffer(size);
        assert!(!base.is_null(), "SimPageSource: cannot get {size} bytes");
        // SAFETY: a fresh, zeroed, exclusively owned buffer.
        unsafe { Self::new(base, size) }
    }

    /// Gives the buffer back to the system.
    ///
    /// # Safety
    /// Neither the source nor any memory from it is used again.
    pub unsafe fn free_buffer(&self) {
        let mut st = self.state.lock();
        if !st.base.is_null() {
            // SAFETY: per the contract; the buffer came from take_buffer(self.size).
            unsafe { give_buffer(st.base, self.size) };
            st.base = ptr::null_mut();
        }
    }
}

#[cfg(miri)]
fn buffer_layout(size: usize) -> core::alloc::Layout {
    core::alloc::Layout::from_size_align(size, crate::config::SEGMENT_SIZE).expect("buffer size")
}

/// A zeroed, segment-aligned buffer of `size` bytes from the system, or null.
fn take_buffer(size: usize) -> *mut u8 {
    #[cfg(miri)]
    {
        use std::alloc::GlobalAlloc;
        // SAFETY: the layout has a non-zero size.
        unsafe { std::alloc::System.alloc_zeroed(buffer_layout(size)) }
    }
    // Straight from mmap: untouched pages cost nothing.
    #[cfg(not(miri))]
    OsPageSource.reserve(size, crate::config::SEGMENT_SIZE).map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// # Safety
/// `base` came from `take_buffer(size)` and is not used afterwards.
unsafe fn give_buffer(base: *mut u8, size: usize) {
    #[cfg(miri)]
    {
        use std::alloc::GlobalAlloc;
        // SAFETY: per the contract.
        unsafe { std::alloc::System.dealloc(base, buffer_layout(size)) }
    }
    #[cfg(not(miri))]
    // SAFETY: per the contract, one whole region from OsPageSource.
    unsafe {
        OsPageSource.release(NonNull::new_unchecked(base), size)
    }
}

// SAFETY: regions are disjoint sub-ranges of a buffer we own; released ranges are zeroed
// before they are handed out again.
#[cfg(not(loom))]
unsafe impl PageSource for SimPageSource {
    fn page_size(&self) -> usize {
        self.page
    }

    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // A kernel's mappings start on its pages.
        let align = align.max(self.page);
        let mut st = self.state.lock();
        if st.base.is_null() {
            st.base = take_buffer(self.size);
            if st.base.is_null() {
                return None;
            }
        }
        let base = st.base;
        let at = |off: usize| {
            // SAFETY: offsets are always inside the buffer, so the pointer is non-null.
            unsafe { NonNull::new_unchecked(base.add(off)) }
        };
        // First fit among released regions (only ones that already have the alignment).
        for slot in st.free.iter_mut() {
            let (off, len) = *slot;
            if len >= size && (base as usize + off) % align == 0 {
                *slot = if len == size { (0, 0) } else { (off + size, len - size) };
                return Some(at(off));
            }
        }
        let start = ((base as usize + st.bump + align - 1) & !(align - 1)) - base as usize;
        if start.checked_add(size)? > self.size {
            return None;
        }
        st.bump = start + size;
        Some(at(start))
    }

    unsafe fn decommit(&self, p: NonNull<u8>, size: usize) {
        self.check_pages("decommit", p, size);
        // SAFETY: the caller owns the range and holds no live data in it.
        unsafe { ptr::write_bytes(p.as_ptr(), 0, size) };
    }

    unsafe fn guard(&self, p: NonNull<u8>, size: usize) {
        self.check_pages("guard", p, size);
    }

    unsafe fn unguard(&self, p: NonNull<u8>, size: usize) {
        self.check_pages("unguard", p, size);
    }

    unsafe fn release(&self, p: NonNull<u8>, size: usize) {
        // (Only the start: a kernel rounds a released length up to its page, as reserve did.)
        self.check_pages("release", p, 0);
        // SAFETY: the caller gives the region back; zero it so a later reserve gets zeroes.
        unsafe { ptr::write_bytes(p.as_ptr(), 0, size) };
        let mut st = self.state.lock();
        let off = p.as_ptr() as usize - st.base as usize;
        if off + size == st.bump {
            st.bump = off;
            return;
        }
        if let Some(slot) = st.free.iter_mut().find(|s| s.1 == 0) {
            *slot = (off, size);
        } // else: the region is forgotten (a bounded leak of simulated memory)
    }
}

/// A random word from the kernel, or from the clock and an address if it has none to give.
pub(crate) fn random_word() -> usize {
    let mut r: usize = 0;
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: writes at most size_of::<usize>() bytes into `r`.
        let n = unsafe {
            libc::getrandom(
                &mut r as *mut usize as *mut core::ffi::c_void,
                core::mem::size_of::<usize>(),
                libc::GRND_NONBLOCK,
            )
        };
        if n == core::mem::size_of::<usize>() as isize {
            return r;
        }
    }
    #[cfg(all(target_os = "macos", not(miri)))]
    // SAFETY: writes size_of::<usize>() bytes (at most 256) into `r`.
    if unsafe { libc::getentropy(&mut r as *mut usize as *mut core::ffi::c_void, core::mem::size_of::<usize>()) } == 0 {
        return r;
    }
    r = crate::os::now_ms() as usize ^ (&r as *const usize as usize).rotate_left(29);
    r.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The process's resident set in bytes, read from /proc/self/statm without allocating.
/// 0 where there is no /proc (macOS, Miri).
pub fn resident_bytes() -> i64 {
    #[cfg(not(all(target_os = "linux", not(miri))))]
    return 0;
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let mut buf = [0u8; 128];
        // Plain system calls, not libc's `open` and `read`: those are cancellation points, and
        // the recorder reads this from inside `malloc`.
        // SAFETY: a NUL-terminated path; buf is a valid, writable buffer.
        let n = unsafe {
            let path = c"/proc/self/statm".as_ptr();
            let fd = libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path, libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return 0;
            }
            let n = libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
            libc::syscall(libc::SYS_close, fd);
            n
        };
        let text = &buf[..n.max(0) as usize];
        let pages = text.split(|&b| b == b' ').nth(1).unwrap_or(b"0");
        let pages = pages.iter().take_while(|b| b.is_ascii_digit()).fold(0i64, |a, &d| a * 10 + (d - b'0') as i64);
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64
    }
}

/// Bytes of `[base, base + len)` resident in memory (`mincore`, in steps of 16 MiB through a
/// vector on the stack: nothing allocates); 0 under Miri or if the kernel says no.
pub(crate) fn resident_in(base: *mut u8, len: usize) -> i64 {
    #[cfg(miri)]
    {
        let _ = (base, len);
        0
    }
    #[cfg(not(miri))]
    {
        let page = page_size();
        let step = 4096 * page;
        let mut vec = [0u8; 4096];
        let mut pages = 0i64;
        let mut at = 0;
        while at < len {
            let n = (len - at).min(step);
            // SAFETY: `vec` has a byte for each OS page of the `n` bytes asked about; the range
            // is one the caller has mapped (mincore only reads the page tables).
            let ok = unsafe { libc::mincore(base.add(at).cast(), n, vec.as_mut_ptr().cast()) } == 0;
            if ok {
                pages += vec[..n.div_ceil(page)].iter().filter(|&&b| b & 1 != 0).count() as i64;
            }
            at += n;
        }
        pages * page as i64
    }
}

/// A `fmt::Write` into a fixed buffer that flushes to a file descriptor when full.
pub struct FdWriter {
    fd: i32,
    buf: [u8; 512],
    len: usize,
}

impl FdWriter {
    pub const fn new(fd: i32) -> Self {
        FdWriter { fd, buf: [0; 512], len: 0 }
    }

    pub fn flush(&mut self) {
        let mut off = 0;
        while off < self.len {
            // SAFETY: buf[off..len] is initialized memory we own.
            let n = unsafe { libc::write(self.fd, self.buf.as_ptr().add(off).cast(), self.len - off) };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
        self.len = 0;
    }
}

impl core::fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for FdWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Declares `mod $name`, one pointer to a `$ty` per thread (`get`, `set`), whose value in
/// every new thread is the address of static `$init`.
///
/// On x86-64 and aarch64 Linux the slot is in the initial-exec TLS model. Rust's
/// `thread_local!` uses the general-dynamic model in a shared library, where every access
/// calls `__tls_get_addr`, and that may itself call malloc the first time a thread touches a
/// dlopened library's TLS: a recursion back into the allocator. The initial-exec model reads
/// the slot at a fixed offset from the thread pointer, an offset the dynamic linker writes
/// into the GOT (x86-64: two instructions, no call; aarch64: four) and is what C allocators
/// use; a library that has it can still be dlopened, as glibc keeps spare static TLS for
/// exactly this. Stable Rust cannot choose the model, so the slot is declared in assembly.
/// Elsewhere (and under Miri) it is a `const` thread-local with no destructor.
#[cfg_attr(loom, allow(unused_macros))]
macro_rules! thread_slot {
    ($name:ident: $ty:ty = $init:ident) => {
        // The slot itself, in the initial TLS image (`.tdata`), holding `$init`'s address; the
        // same on both (`%` rather than `@` for types: `@` starts a comment in ARM assembly).
        #[cfg(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_os = "linux", not(miri)))]
        core::arch::global_asm!(
            ".pushsection .tdata,\"awT\",%progbits",
            ".p2align 3",
            concat!(".globl __mallard_", stringify!($name)),
            concat!(".hidden __mallard_", stringify!($name)),
            concat!(".type __mallard_", stringify!($name), ",%object"),
            concat!(".size __mallard_", stringify!($name), ",8"),
            concat!("__mallard_", stringify!($name), ":"),
            ".quad {init}",
            ".popsection",
            init = sym $init,
        );

        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
        mod $name {
            #[allow(unused_imports)] // (for `$ty`, when it is a type of the caller's module)
            use super::*;

            #[inline(always)]
            pub(super) fn get() -> *const $ty {
                let v: *const $ty;
                // SAFETY: reads this thread's 8-byte slot (the `.tdata` above).
                unsafe {
                    core::arch::asm!(
                        concat!("mov {v}, qword ptr [rip + __mallard_", stringify!($name), "@GOTTPOFF]"),
                        "mov {v}, qword ptr fs:[{v}]",
                        v = out(reg) v,
                        options(nostack, readonly, preserves_flags, pure),
                    );
                }
                v
            }

            #[inline(always)]
            pub(super) fn set(v: *const $ty) {
                // SAFETY: writes this thread's 8-byte slot (the `.tdata` above).
                unsafe {
                    core::arch::asm!(
                        concat!("mov {t}, qword ptr [rip + __mallard_", stringify!($name), "@GOTTPOFF]"),
                        "mov qword ptr fs:[{t}], {v}",
                        t = out(reg) _,
                        v = in(reg) v,
                        options(nostack, preserves_flags),
                    );
                }
            }
        }

        #[cfg(all(target_arch = "aarch64", target_os = "linux", not(miri)))]
        mod $name {
            #[allow(unused_imports)] // (for `$ty`, when it is a type of the caller's module)
            use super::*;

            // The thread pointer is `tpidr_el0`; the slot's offset from it is in a GOT entry
            // (`:gottprel:`, an R_AARCH64_TLS_TPREL64 the dynamic linker fills in), reached
            // with `adrp` and `ldr` like any GOT entry. In an executable the linker turns the
            // pair into `movz`/`movk` of the offset.
            #[inline(always)]
            pub(super) fn get() -> *const $ty {
                let v: *const $ty;
                // SAFETY: reads this thread's 8-byte slot (the `.tdata` above).
                unsafe {
                    core::arch::asm!(
                        "mrs {tp}, tpidr_el0",
                        concat!("adrp {v}, :gottprel:__mallard_", stringify!($name)),
                        concat!("ldr {v}, [{v}, #:gottprel_lo12:__mallard_", stringify!($name), "]"),
                        "ldr {v}, [{tp}, {v}]",
                        tp = out(reg) _,
                        v = out(reg) v,
                        options(nostack, readonly, preserves_flags, pure),
                    );
                }
                v
            }

            #[inline(always)]
            pub(super) fn set(v: *const $ty) {
                // SAFETY: writes this thread's 8-byte slot (the `.tdata` above).
                unsafe {
                    core::arch::asm!(
                        "mrs {tp}, tpidr_el0",
                        concat!("adrp {t}, :gottprel:__mallard_", stringify!($name)),
                        concat!("ldr {t}, [{t}, #:gottprel_lo12:__mallard_", stringify!($name), "]"),
                        "str {v}, [{tp}, {t}]",
                        tp = out(reg) _,
                        t = out(reg) _,
                        v = in(reg) v,
                        options(nostack, preserves_flags),
                    );
                }
            }
        }

        #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_os = "linux", not(miri))))]
        mod $name {
            use super::*;
            use core::cell::Cell;

            std::thread_local! {
                static SLOT: Cell<*const $ty> = const { Cell::new(&$init as *const _ as *const $ty) };
            }

            #[inline(always)]
            pub(super) fn get() -> *const $ty {
                SLOT.with(|s| s.get())
            }

            #[inline(always)]
            pub(super) fn set(v: *const $ty) {
                SLOT.with(|s| s.set(v))
            }
        }
    };
}
pub(crate) use thread_slot;

/// A pthread key, made at its first use, whose destructor runs when a thread that set a
/// value exits (with that value).
pub(crate) struct ExitKey {
    key: AtomicUsize, // a pthread_key_t: 32 bits on Linux, 64 on macOS
    destructor: extern "C" fn(*mut core::ffi::c_void),
}

impl ExitKey {
    const UNSET: usize = usize::MAX;

    pub(crate) const fn new(destructor: extern "C" fn(*mut core::ffi::c_void)) -> Self {
        ExitKey { key: AtomicUsize::new(Self::UNSET), destructor }
    }

    /// Sets the calling thread's value, so that the destructor runs at its exit. False if no
    /// key could be made.
    pub(crate) fn set(&self, value: *const ()) -> bool {
        let Some(key) = self.key() else { return false };
        // SAFETY: key is a valid pthread key.
        unsafe { libc::pthread_setspecific(key, value.cast()) == 0 }
    }

    fn key(&self) -> Option<libc::pthread_key_t> {
        let key = self.key.load(Ordering::Acquire);
        if key != Self::UNSET {
            return Some(key as libc::pthread_key_t);
        }
        let mut new: libc::pthread_key_t = 0;
        // SAFETY: `new` is a valid out-pointer; the destructor has the signature pthread wants.
        if unsafe { libc::pthread_key_create(&mut new, Some(self.destructor)) } != 0 {
            return None;
        }
        match self.key.compare_exchange(Self::UNSET, new as usize, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(new),
            Err(existing) => {
                // SAFETY: `new` is our own unused key.
                unsafe { libc::pthread_key_delete(new) };
                Some(existing as libc::pthread_key_t)
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::SEGMENT_SIZE;

    #[test]
    fn the_page_sizes_of_x86_64_and_aarch64_kernels_are_supported_and_no_others() {
        for p in [4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10] {
            assert!(page_size_supported(p), "{p}");
        }
        for p in [0, 512, 2048, 12 << 10, 128 << 10, 256 << 10, usize::MAX] {
            assert!(!page_size_supported(p), "{p}");
        }
        assert!(page_size_supported(page_size()));
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap")]
    fn os_source_returns_aligned_zeroed_memory() {
        let src = OsPageSource;
        for align in [MIN_PAGE_SIZE, SEGMENT_SIZE, 4 * SEGMENT_SIZE] {
            let p = src.reserve(SEGMENT_SIZE, align).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            // SAFETY: freshly reserved region of SEGMENT_SIZE bytes.
            unsafe {
                let s = core::slice::from_raw_parts_mut(p.as_ptr(), SEGMENT_SIZE);
                assert!(s.iter().step_by(4096).all(|&b| b == 0));
                s[100] = 7;
                src.decommit(p, page_size());
                assert_eq!(s[100], 0, "decommitted memory reads as zero");
                src.release(p, SEGMENT_SIZE);
            }
        }
    }

    static FIRST: u64 = 1;
    static SECOND: u64 = 2;
    static THIRD: u64 = 3;
    thread_slot!(test_slot: u64 = FIRST);

    /// The slot (assembly on x86-64 and aarch64 Linux) starts at its static in every thread
    /// and is the thread's own: a wrong TLS offset reads or writes some other thread-local.
    #[test]
    fn thread_slot_is_per_thread_and_starts_at_its_static() {
        assert_eq!(test_slot::get(), &FIRST as *const u64);
        test_slot::set(&SECOND);
        assert_eq!(test_slot::get(), &SECOND as *const u64);
        std::thread::spawn(|| {
            assert_eq!(test_slot::get(), &FIRST as *const u64, "a new thread starts at the static");
            test_slot::set(&THIRD);
            // SAFETY: the slot holds the address of a static.
            assert_eq!(unsafe { *test_slot::get() }, 3);
        })
        .join()
        .unwrap();
        assert_eq!(test_slot::get(), &SECOND as *const u64, "another thread's set leaves this one's");
        test_slot::set(&FIRST);
    }

    #[test]
    fn sim_source_reuses_released_regions() {
        let src = SimPageSource::with_capacity(4 * SEGMENT_SIZE);
        let a = src.reserve(SEGMENT_SIZE, SEGMENT_SIZE).unwrap();
        let b = src.reserve(SEGMENT_SIZE, SEGMENT_SIZE).unwrap();
        assert_ne!(a, b);
        // SAFETY: a is a whole region from this source.
        unsafe { src.release(a, SEGMENT_SIZE) };
        assert_eq!(src.reserve(SEGMENT_SIZE, SEGMENT_SIZE), Some(a));
        assert!(src.reserve(8 * SEGMENT_SIZE, SEGMENT_SIZE).is_none(), "out of memory is None");
        // SAFETY: nothing from the source is used any more.
        unsafe { src.free_buffer() };
    }
}
