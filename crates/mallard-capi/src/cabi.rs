//! The exported C functions: the malloc family with glibc's contract, glibc's aliases and
//! extras, and the entry points `new_delete.c` builds the C++ operators on.
//!
//! errno: every function that fails for lack of memory sets `ENOMEM` (the core does it where
//! the failure happens, so the fast paths carry no extra test); `free` never changes errno.

use crate::options;
use core::ffi::{c_int, c_void};
use core::ptr;
use core_alloc::raw as alloc;
use core_alloc::raw::{page_size, thread_heap, MIN_ALIGN};

#[inline(always)]
fn set_errno(e: c_int) {
    // SAFETY: __errno_location always returns the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// `malloc(n)`: at least `n` bytes aligned to 16; `malloc(0)` is a unique block of its own.
/// NULL with `errno = ENOMEM` when out of memory.
///
/// # Safety
/// Any size is allowed.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: the calling thread's heap.
    let p = unsafe { alloc::malloc(thread_heap(), size).cast() };
    #[cfg(feature = "trace")]
    crate::trace::alloc(p, size, MIN_ALIGN);
    p
}

/// `free(p)`: `free(NULL)` does nothing; errno is kept. A pointer mallard did not hand out, or
/// one already freed, stops the program with a one-line message on stderr.
///
/// # Safety
/// `p` is NULL or a live block of this allocator (anything else is reported).
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // (Recorded before the block can be handed out again, so that a thread that gets it next
    // records its allocation after this free.)
    #[cfg(feature = "trace")]
    crate::trace::free(p);
    // SAFETY: the calling thread's heap; `free` checks what it is given.
    unsafe { alloc::free(thread_heap(), p.cast()) }
}

/// `calloc(n, size)`: zeroed; NULL with `ENOMEM` when `n * size` overflows. Memory fresh
/// from the OS is not touched.
///
/// # Safety
/// Any arguments are allowed.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: the calling thread's heap.
    let p = unsafe { alloc::malloc_zeroed(thread_heap(), total, MIN_ALIGN).cast() };
    #[cfg(feature = "trace")]
    crate::trace::alloc(p, total, MIN_ALIGN);
    p
}

/// `realloc(p, n)`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns
/// NULL, as glibc does; on failure returns NULL with `ENOMEM` and `p` is untouched.
///
/// # Safety
/// `p` is NULL or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: forwarded.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: forwarded.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    #[cfg(feature = "trace")]
    let time = crate::trace::realloc_time();
    // SAFETY: the calling thread's heap; p is a live block (realloc_unsized checks it).
    let q = unsafe { alloc::realloc_unsized(thread_heap(), p.cast(), size).cast() };
    #[cfg(feature = "trace")]
    crate::trace::realloc(p, q, size, time);
    q
}

/// `reallocarray(p, n, size)`: `realloc(p, n * size)`, but NULL with `ENOMEM` on overflow.
///
/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

fn valid_alignment(align: usize) -> bool {
    align.is_power_of_two()
}

/// Aligned allocation with no argument checks left to do: `align` is a power of two.
#[inline]
fn aligned(size: usize, align: usize) -> *mut c_void {
    // SAFETY: the calling thread's heap; align is a power of two.
    let p = unsafe { alloc::malloc_aligned(thread_heap(), size, align.max(MIN_ALIGN)).cast() };
    #[cfg(feature = "trace")]
    crate::trace::alloc(p, size, align.max(MIN_ALIGN));
    p
}

/// `posix_memalign(&p, align, n)`: `EINVAL` unless `align` is a power of two and a multiple
/// of `sizeof(void *)`; `ENOMEM` when out of memory. errno is not changed and `*memptr` is
/// only written on success.
///
/// # Safety
/// `memptr` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !valid_alignment(align) || align < core::mem::size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    // SAFETY: __errno_location is the thread's errno.
    let saved = unsafe { *libc::__errno_location() };
    let p = aligned(size, align);
    if p.is_null() {
        set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable memptr.
    unsafe { *memptr = p };
    0
}

/// `aligned_alloc(align, n)`: NULL with `EINVAL` unless `align` is a power of two (glibc 2.38
/// and C23); `n` need not be a multiple of it.
///
/// # Safety
/// Any arguments are allowed.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !valid_alignment(align) {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(size, align)
}

/// `memalign(align, n)`: as glibc, an alignment that is not a power of two is rounded up to
/// one; NULL with `EINVAL` if that overflows.
///
/// # Safety
/// Any arguments are allowed.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(a) => aligned(size, a),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `valloc(n)`: aligned to the OS page size.
///
/// # Safety
/// Any size is allowed.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(size, page_size())
}

/// `pvalloc(n)`: `n` rounded up to whole OS pages (at least one), page aligned.
///
/// # Safety
/// Any size is allowed.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(n) => aligned(n, page),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(p)`: how many bytes of block `p` may be used (at least what was asked
/// for); 0 for NULL.
///
/// # Safety
/// `p` is NULL or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: a live block (checked).
    unsafe { alloc::usable_size_checked(p.cast()) }
}

/// `free_sized(p, n)` (C23): `free(p)` of a block allocated with `n` bytes (by `malloc`,
/// `calloc` or `realloc`); a size that cannot be the block's is reported (see
/// `alloc::check_size`).
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded.
    unsafe { free_checked(p, size, MIN_ALIGN, false, "free_sized") }
}

/// `free_aligned_sized(p, align, n)` (C23): `free(p)` of a block from `aligned_alloc(align,
/// n)`; a size or alignment that cannot be the block's is reported.
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: forwarded.
    unsafe { free_checked(p, size, align, false, "free_aligned_sized") }
}

/// `free(p)` after checking that `p` can have been allocated with `size` bytes aligned to
/// `align` (`exact`: and not resized by `realloc` since); `op` names the call in a report.
///
/// # Safety
/// As for `free`.
pub(crate) unsafe fn free_checked(p: *mut c_void, size: usize, align: usize, exact: bool, op: &str) {
    if p.is_null() {
        return;
    }
    if !align.is_power_of_two() {
        alloc::report_op(op, "an alignment that is not a power of two", p.cast());
    }
    // (The recorder records the free once the size passed.)
    #[cfg(feature = "trace")]
    // SAFETY: any pointer may be checked; then forwarded.
    unsafe {
        alloc::check_size(p.cast(), size, align, exact, op);
        free(p)
    }
    #[cfg(not(feature = "trace"))]
    // SAFETY: the calling thread's heap; the block is checked, then freed.
    unsafe {
        alloc::free_sized(thread_heap(), p.cast(), size, align, exact, op)
    }
}

/// `cfree(p)`: an old alias of `free` that some programs still call.
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

// ---- glibc's internal names, which some programs and libraries call directly ----

/// # Safety
/// As for `malloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { malloc(size) }
}

/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// # Safety
/// As for `calloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { calloc(n, size) }
}

/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { realloc(p, size) }
}

/// # Safety
/// As for `memalign`.
#[no_mangle]
pub unsafe extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { memalign(align, size) }
}

/// # Safety
/// As for `valloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { valloc(size) }
}

/// # Safety
/// As for `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { pvalloc(size) }
}

/// # Safety
/// As for `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn __posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded.
    unsafe { posix_memalign(memptr, align, size) }
}

// ---- glibc's extras ----

/// `malloc_trim(pad)`: gives all free memory of this thread's heap and of the process-wide
/// caches back to the OS now. Returns 1 (memory may have been released).
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    core_alloc::collect(true);
    1
}

/// `mallopt(param, value)`: glibc's tuning knobs do not apply to mallard and are accepted and
/// ignored (returns 1, success), except `M_PURGE_DELAY` (mallard's own, -200): the purge delay
/// in milliseconds.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    if param == options::M_PURGE_DELAY {
        if value < 0 {
            return 0;
        }
        core_alloc::set_purge_delay_ms(value as u64);
    }
    1
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
pub struct Mallinfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's old `struct mallinfo` (int fields, which wrap above 2 GiB).
#[repr(C)]
pub struct Mallinfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// `mallinfo2()`, from mallard's statistics: `arena` is the bytes mapped for segments and
/// `hblkhd` for huge blocks (`hblks` of them); `uordblks` the bytes in live blocks,
/// `fordblks` what is mapped beyond them; `ordblks` the free chunks of this thread's chunk
/// heap. Does not allocate.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallinfo2() -> Mallinfo2 {
    let s = core_alloc::stats();
    let nn = |v: i64| v.max(0) as usize;
    let live = nn(s.live_bytes());
    let mapped = nn(s.mapped_bytes);
    Mallinfo2 {
        arena: nn(s.mapped_bytes - s.huge_bytes),
        ordblks: nn(s.free_chunks),
        hblks: nn(s.huge_blocks),
        hblkhd: nn(s.huge_bytes),
        uordblks: live,
        fordblks: mapped.saturating_sub(live),
        ..Mallinfo2::default()
    }
}

/// `mallinfo()`: `mallinfo2()` with glibc's int fields.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallinfo() -> Mallinfo {
    // SAFETY: no preconditions.
    let m = unsafe { mallinfo2() };
    let i = |v: usize| v as c_int;
    Mallinfo {
        arena: i(m.arena),
        ordblks: i(m.ordblks),
        smblks: i(m.smblks),
        hblks: i(m.hblks),
        hblkhd: i(m.hblkhd),
        usmblks: i(m.usmblks),
        fsmblks: i(m.fsmblks),
        uordblks: i(m.uordblks),
        fordblks: i(m.fordblks),
        keepcost: i(m.keepcost),
    }
}

/// `malloc_stats()`: mallard's statistics table on stderr.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    core_alloc::print_stats();
}

// ---- mallard's own API (include/mallard.h) ----

/// Usable size of block `p` (0 for NULL).
///
/// # Safety
/// As for `malloc_usable_size`.
#[no_mangle]
pub unsafe extern "C" fn mallard_usable_size(p: *const c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { malloc_usable_size(p.cast_mut()) }
}

/// Collects pending frees and gives free memory back to the OS (all of it with `force`).
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallard_collect(force: bool) {
    core_alloc::collect(force);
}

/// Writes the statistics table to stderr.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallard_stats_print() {
    core_alloc::print_stats();
}

/// Sets the purge delay in milliseconds.
///
/// # Safety
/// No preconditions.
#[no_mangle]
pub unsafe extern "C" fn mallard_set_purge_delay_ms(ms: u64) {
    core_alloc::set_purge_delay_ms(ms);
}

/// The main figures of `mallard_stats` (`include/mallard.h`).
#[repr(C)]
pub struct MallardStats {
    pub live_bytes: i64,
    pub mapped_bytes: i64,
    pub resident_bytes: i64,
    pub segments: i64,
    pub huge_blocks: i64,
    pub huge_bytes: i64,
    pub large_blocks: i64,
    pub large_bytes: i64,
    pub remote_frees: i64,
    pub bytes_purged: i64,
    pub heaps_created: i64,
    pub free_chunks: i64,
    pub largest_free_chunk: i64,
}

/// Fills `out` with a snapshot of the statistics. Does not allocate.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mallard_stats(out: *mut MallardStats) {
    if out.is_null() {
        return;
    }
    let s = core_alloc::stats();
    let m = MallardStats {
        live_bytes: s.live_bytes(),
        mapped_bytes: s.mapped_bytes,
        resident_bytes: s.resident_bytes,
        segments: s.segments_current,
        huge_blocks: s.huge_blocks,
        huge_bytes: s.huge_bytes,
        large_blocks: s.large_blocks,
        large_bytes: s.large_bytes,
        remote_frees: s.remote_frees,
        bytes_purged: s.bytes_purged,
        heaps_created: s.heaps_created,
        free_chunks: s.free_chunks,
        largest_free_chunk: s.largest_free_chunk,
    };
    // SAFETY: the caller passes a writable `out`.
    unsafe { out.write(m) };
}

// ---- entry points of new_delete.c ----

/// `operator new` without the new-handler loop: NULL when out of memory.
///
/// # Safety
/// Any arguments are allowed; `align` is 0 (the default) or a power of two.
#[no_mangle]
pub unsafe extern "C" fn __mallard_new(size: usize, align: usize) -> *mut c_void {
    if align <= MIN_ALIGN {
        // SAFETY: forwarded.
        unsafe { malloc(size) }
    } else {
        aligned(size, align)
    }
}
