//! Fuzzes libmallard's C ABI the way C and C++ programs use it.
//!
//! Each input decodes (`arbitrary`) into a program of allocator calls on a set of live blocks:
//! `malloc`, `calloc`, `realloc` (also of NULL and to 0), `reallocarray`, `posix_memalign`,
//! `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, C++ `operator new` (plain, array,
//! aligned, nothrow) and every free that matches a block (`free`, `cfree`, `realloc(p, 0)`,
//! `free_sized`, `free_aligned_sized`, plain, nothrow, sized and aligned `operator delete`).
//! Each call runs on this thread, on a second thread that lives as long as the process (so
//! blocks are freed and reallocated across threads; this thread waits for its answer, so a run
//! is deterministic), or on a thread started for the call that exits right after it (so its
//! heap is abandoned with blocks still live, and a thread that has just started frees or
//! reallocates another thread's block). Beside them: `malloc_usable_size`, `malloc_trim`,
//! `mallard_collect`, the purge delay (`mallopt`), and calls that must fail (sizes that
//! overflow or cannot be mapped, invalid alignments).
//!
//! A shadow model of the live blocks checks that:
//! - every block is aligned as asked (16 at least, the page for `valloc` and `pvalloc`), and
//!   `malloc_usable_size` is at least the size asked for and stays the same while it lives;
//! - no two live blocks overlap, over their whole usable size;
//! - every block holds a pattern derived from its id over its whole usable size: written when
//!   it is allocated; checked in full before it is freed or reallocated, when its usable size
//!   is asked and when the input ends, and at every page of every block after `malloc_trim`
//!   and `mallard_collect`;
//! - `realloc` keeps the first `min(old usable size, new size)` bytes (mallard keeps the whole
//!   usable size of a block it moves: `alloc::realloc_unsized`), and one that fails leaves the
//!   block as it was;
//! - `calloc` memory is zero;
//! - a call that must fail returns NULL (or its error code) with glibc's errno, and `free` and
//!   a failed `posix_memalign` leave errno alone.
//!
//! The binary links `mallard-capi` in (as an rlib): its exported malloc family is this
//! process's, as under `LD_PRELOAD`, so libFuzzer, libc and Rust's std allocate from mallard
//! too, and cargo-fuzz's coverage instrumentation reaches the allocator's code, which guides
//! the fuzzer through it. A sanitizer's runtime would bring a malloc of its own: run with
//! `--sanitizer none` (`scripts/fuzz` does); `init` checks that every function called is
//! mallard's and that mallard answers. And build with `--no-trace-compares` (`scripts/fuzz`
//! does): with comparisons traced, libFuzzer learns the secret free mark of a page from the
//! comparisons in `free` and, to make them come out equal, writes it into its own copy of the
//! input, a heap block of that page, whose `delete[]` mallard then takes for a double free (a
//! live block that carries the mark, see `misuse`). Edge coverage still guides the fuzzer.
//!
//! Each input frees all its blocks at its end, but the allocator keeps its state from one input
//! to the next (caches, pages that other inputs dirtied, the second thread's heap): that finds
//! more, but a crash may need the inputs that ran before it, and not come back when its file is
//! run alone.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use core::ffi::{c_int, c_void, CStr};
use libfuzzer_sys::fuzz_target;
use mallard_capi as capi;
use mallard_core::raw::{
    page_size, CHUNK_MAX, CLASS_MAX, DIRECT_MAX, LARGE_MAX, MIN_ALIGN, MIN_PAGE_SIZE, SEGMENT_SIZE, SMALL_MAX,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// The most bytes (usable sizes) an input keeps live at once: a call past it is skipped.
const LIVE_BYTES_MAX: usize = 64 << 20;
/// The most blocks an input keeps live at once.
const LIVE_BLOCKS_MAX: usize = 512;
/// `mallopt`'s parameter for mallard's purge delay (`M_MALLARD_PURGE_DELAY`, include/mallard.h).
const M_MALLARD_PURGE_DELAY: c_int = -200;
/// errno as each call starts: a call that must keep errno leaves this.
const ERRNO_BEFORE: c_int = 12345;
/// `posix_memalign`'s out-pointer as the call starts: one that fails must leave it.
const UNTOUCHED: usize = 0xdead_0000;

// ---- the program an input decodes to ----
//
// `Op` and `Failing` derive `Arbitrary`; the small enums inside them decode from one byte
// each (the derive spends four bytes on every enum), so that a short input is a program of
// many calls.

/// `Arbitrary` for a fieldless enum, from one byte: a choice among the variants listed (a
/// variant listed twice is chosen twice as often).
macro_rules! one_byte_choice {
    ($name:ident: $($variant:ident),+) => {
        impl<'a> Arbitrary<'a> for $name {
            fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(*u.choose(&[$($name::$variant),+])?)
            }
        }
    };
}

/// Which thread makes a call.
#[derive(Debug, Clone, Copy)]
enum Thread {
    /// This thread.
    Main,
    /// The second thread, which lives as long as the process.
    Worker,
    /// A thread started for the call, which exits after it.
    Exiting,
}
one_byte_choice!(Thread: Main, Main, Main, Main, Worker, Worker, Worker, Exiting);

/// A block size, in the ranges that different parts of the allocator serve.
#[derive(Debug, Clone, Copy)]
enum Size {
    /// 0-255 bytes.
    Tiny(u8),
    /// Up to twice `SMALL_MAX` (16 KiB): small and medium classes.
    Small(u16),
    /// Up to 256 KiB by 4 bytes: medium classes and the chunk heap.
    Medium(u16),
    /// `CLASS_MAX` to 4 MiB past it by 64 bytes: the chunk heap up to its largest chunk, and
    /// huge blocks beyond.
    Chunk(u16),
    /// 4-12 MiB by 32 KiB: huge blocks.
    Huge(u8),
    /// A boundary between the allocator's size ranges, give or take 128 bytes.
    Boundary { which: u8, delta: i8 },
}

impl<'a> Arbitrary<'a> for Size {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=5u8)? {
            0 => Size::Tiny(u.arbitrary()?),
            1 => Size::Small(u.arbitrary()?),
            2 => Size::Medium(u.arbitrary()?),
            3 => Size::Chunk(u.arbitrary()?),
            4 => Size::Huge(u.arbitrary()?),
            _ => Size::Boundary { which: u.arbitrary()?, delta: u.arbitrary()? },
        })
    }
}

impl Size {
    const BOUNDARIES: [usize; 10] =
        [0, 16, 256, DIRECT_MAX, SMALL_MAX, CLASS_MAX, LARGE_MAX, CHUNK_MAX, SEGMENT_SIZE, 2 * SEGMENT_SIZE];

    fn bytes(self) -> usize {
        match self {
            Size::Tiny(n) => n as usize,
            Size::Small(n) => n as usize % (2 * SMALL_MAX + 1),
            Size::Medium(n) => n as usize * 4,
            Size::Chunk(n) => CLASS_MAX + n as usize * 64,
            Size::Huge(n) => SEGMENT_SIZE + n as usize * (32 << 10),
            Size::Boundary { which, delta } => {
                Self::BOUNDARIES[which as usize % Self::BOUNDARIES.len()].saturating_add_signed(delta as isize)
            }
        }
    }
}

/// A size no allocation can have: it overflows on the way or asks for more address space
/// than there is (2^48 bytes and up).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Unmappable(u8);

impl Unmappable {
    const SIZES: [usize; 8] = [
        usize::MAX,
        usize::MAX - 15,
        usize::MAX - MIN_PAGE_SIZE + 1,
        usize::MAX - SEGMENT_SIZE + 1,
        isize::MAX as usize,
        isize::MAX as usize + 1,
        1 << 48,
        1 << 62,
    ];

    fn bytes(self) -> usize {
        Self::SIZES[self.0 as usize % Self::SIZES.len()]
    }
}

/// An alignment argument.
#[derive(Debug, Clone, Copy)]
enum Alignment {
    /// 2^(n mod 24): 1 byte to 8 MiB.
    PowerOfTwo(u8),
    /// Any value, mostly not a power of two: the invalid-argument paths, and `memalign`'s
    /// rounding up.
    Raw(u16),
}

impl<'a> Arbitrary<'a> for Alignment {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(if u.arbitrary()? { Alignment::Raw(u.arbitrary()?) } else { Alignment::PowerOfTwo(u.arbitrary()?) })
    }
}

impl Alignment {
    fn bytes(self) -> usize {
        match self {
            Alignment::PowerOfTwo(n) => 1 << (n % 24),
            Alignment::Raw(n) => n as usize,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum AlignedFn {
    PosixMemalign,
    AlignedAlloc,
    Memalign,
    Valloc,
    Pvalloc,
}
one_byte_choice!(AlignedFn: PosixMemalign, AlignedAlloc, Memalign, Valloc, Pvalloc);

/// How a block is freed. For a C block: `free`, `cfree`, `free_sized` (or
/// `free_aligned_sized` for a block of `aligned_alloc` or `posix_memalign`; plain `free` where
/// neither applies), `realloc(p, 0)`. For a C++ block, the `operator delete` that matches its
/// `new`: plain, nothrow, sized, and plain again.
#[derive(Debug, Clone, Copy)]
enum FreeForm {
    Plain,
    Alias,
    Sized,
    ReallocToZero,
}
one_byte_choice!(FreeForm: Plain, Alias, Sized, ReallocToZero);

#[derive(Debug, Clone, Copy)]
enum PurgeDelay {
    Zero,
    OneMillisecond,
    Default,
}
one_byte_choice!(PurgeDelay: Zero, OneMillisecond, Default);

impl PurgeDelay {
    fn ms(self) -> c_int {
        match self {
            PurgeDelay::Zero => 0,
            PurgeDelay::OneMillisecond => 1,
            PurgeDelay::Default => mallard_core::raw::PURGE_DELAY_MS as c_int,
        }
    }
}

/// One step of a program. A `slot` picks a live block (modulo how many there are); `thread`
/// is the thread that makes the call.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Malloc {
        thread: Thread,
        size: Size,
    },
    /// `calloc(count, size / count)`, with `count` from 1 to 16.
    Calloc {
        thread: Thread,
        count: u8,
        size: Size,
    },
    Aligned {
        thread: Thread,
        func: AlignedFn,
        align: Alignment,
        size: Size,
    },
    /// `operator new`; `align` (2^(n mod 24)) makes it the `align_val_t` form.
    New {
        thread: Thread,
        array: bool,
        nothrow: bool,
        align: Option<u8>,
        size: Size,
    },
    /// `realloc` of a block (of NULL without a slot); `reallocarray(p, count, size / count)`
    /// with a count.
    Realloc {
        thread: Thread,
        slot: Option<u8>,
        size: Size,
        count: Option<u8>,
    },
    Free {
        thread: Thread,
        slot: u8,
        form: FreeForm,
    },
    /// `malloc_usable_size` of a block, which is checked in full.
    UsableSize {
        slot: u8,
    },
    /// `mallard_collect` on this thread or the second one.
    Collect {
        force: bool,
        on_worker: bool,
    },
    /// `malloc_trim(0)`.
    Trim,
    /// `mallopt(M_MALLARD_PURGE_DELAY, ms)`.
    SetPurgeDelay(PurgeDelay),
    Fail(Failing),
}

/// A call that must fail.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Failing {
    Malloc(Unmappable),
    Calloc(Unmappable),
    /// `calloc(n, size)` where `n * size` overflows.
    CallocOverflow {
        size: u8,
    },
    Realloc {
        slot: u8,
        size: Unmappable,
    },
    /// `reallocarray(p, n, size)` where `n * size` overflows.
    ReallocArrayOverflow {
        slot: u8,
    },
    Aligned {
        func: AlignedFn,
        align: u8,
        size: Unmappable,
    },
    /// `memalign` with an alignment that has no power of two above it.
    MemalignOverflow {
        size: Size,
    },
    NewNothrow {
        align: Option<u8>,
        size: Unmappable,
    },
}

// ---- the calls, as any thread makes them ----

extern "C" {
    // C++'s operators (Itanium names), which the C library exports.
    #[link_name = "_Znwm"]
    fn operator_new(size: usize) -> *mut c_void;
    #[link_name = "_Znam"]
    fn operator_new_array(size: usize) -> *mut c_void;
    #[link_name = "_ZnwmRKSt9nothrow_t"]
    fn operator_new_nothrow(size: usize, tag: *const c_void) -> *mut c_void;
    #[link_name = "_ZnamRKSt9nothrow_t"]
    fn operator_new_array_nothrow(size: usize, tag: *const c_void) -> *mut c_void;
    #[link_name = "_ZnwmSt11align_val_t"]
    fn operator_new_aligned(size: usize, align: usize) -> *mut c_void;
    #[link_name = "_ZnamSt11align_val_t"]
    fn operator_new_array_aligned(size: usize, align: usize) -> *mut c_void;
    #[link_name = "_ZnwmSt11align_val_tRKSt9nothrow_t"]
    fn operator_new_aligned_nothrow(size: usize, align: usize, tag: *const c_void) -> *mut c_void;
    #[link_name = "_ZnamSt11align_val_tRKSt9nothrow_t"]
    fn operator_new_array_aligned_nothrow(size: usize, align: usize, tag: *const c_void) -> *mut c_void;
    #[link_name = "_ZdlPv"]
    fn operator_delete(p: *mut c_void);
    #[link_name = "_ZdaPv"]
    fn operator_delete_array(p: *mut c_void);
    #[link_name = "_ZdlPvRKSt9nothrow_t"]
    fn operator_delete_nothrow(p: *mut c_void, tag: *const c_void);
    #[link_name = "_ZdaPvRKSt9nothrow_t"]
    fn operator_delete_array_nothrow(p: *mut c_void, tag: *const c_void);
    #[link_name = "_ZdlPvm"]
    fn operator_delete_sized(p: *mut c_void, size: usize);
    #[link_name = "_ZdaPvm"]
    fn operator_delete_array_sized(p: *mut c_void, size: usize);
    #[link_name = "_ZdlPvSt11align_val_t"]
    fn operator_delete_aligned(p: *mut c_void, align: usize);
    #[link_name = "_ZdaPvSt11align_val_t"]
    fn operator_delete_array_aligned(p: *mut c_void, align: usize);
    #[link_name = "_ZdlPvSt11align_val_tRKSt9nothrow_t"]
    fn operator_delete_aligned_nothrow(p: *mut c_void, align: usize, tag: *const c_void);
    #[link_name = "_ZdaPvSt11align_val_tRKSt9nothrow_t"]
    fn operator_delete_array_aligned_nothrow(p: *mut c_void, align: usize, tag: *const c_void);
    #[link_name = "_ZdlPvmSt11align_val_t"]
    fn operator_delete_sized_aligned(p: *mut c_void, size: usize, align: usize);
    #[link_name = "_ZdaPvmSt11align_val_t"]
    fn operator_delete_array_sized_aligned(p: *mut c_void, size: usize, align: usize);
}

/// `std::nothrow` (an empty struct, passed by reference).
static NOTHROW: u8 = 0;

fn nothrow() -> *const c_void {
    ptr::from_ref(&NOTHROW).cast()
}

/// The `operator delete` an `operator new` block is freed with.
#[derive(Debug, Clone, Copy)]
enum DeleteForm {
    Plain,
    Nothrow,
    Sized(usize),
}

/// An allocator call with every argument resolved (pointers as addresses): plain data, so
/// that any thread can make it.
#[derive(Debug, Clone, Copy)]
enum Raw {
    Malloc(usize),
    Calloc(usize, usize),
    Realloc(usize, usize),
    ReallocArray(usize, usize, usize),
    PosixMemalign(usize, usize),
    AlignedAlloc(usize, usize),
    Memalign(usize, usize),
    Valloc(usize),
    Pvalloc(usize),
    New { size: usize, array: bool, nothrow: bool, align: Option<usize> },
    Free(usize),
    Cfree(usize),
    FreeSized(usize, usize),
    FreeAlignedSized(usize, usize, usize),
    Delete { addr: usize, array: bool, align: Option<usize>, form: DeleteForm },
    Collect(bool),
}

/// What a call returned, and errno after it.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    addr: usize,
    ret: c_int,
    errno: c_int,
}

fn errno() -> c_int {
    // SAFETY: __errno_location is the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value }
}

impl Raw {
    /// Makes the call on the calling thread.
    fn call(self) -> Outcome {
        let p = |addr: usize| addr as *mut c_void;
        let mut ret = 0;
        set_errno(ERRNO_BEFORE);
        // SAFETY: the model passes live blocks of the kind each call takes, with the size and
        // alignment they were allocated with where a call takes those.
        let result = unsafe {
            match self {
                Raw::Malloc(n) => capi::malloc(n),
                Raw::Calloc(count, n) => capi::calloc(count, n),
                Raw::Realloc(a, n) => capi::realloc(p(a), n),
                Raw::ReallocArray(a, count, n) => capi::reallocarray(p(a), count, n),
                Raw::PosixMemalign(align, n) => {
                    let mut out = p(UNTOUCHED);
                    ret = capi::posix_memalign(&mut out, align, n);
                    out
                }
                Raw::AlignedAlloc(align, n) => capi::aligned_alloc(align, n),
                Raw::Memalign(align, n) => capi::memalign(align, n),
                Raw::Valloc(n) => capi::valloc(n),
                Raw::Pvalloc(n) => capi::pvalloc(n),
                Raw::New { size, array, nothrow: false, align: None } => {
                    if array {
                        operator_new_array(size)
                    } else {
                        operator_new(size)
                    }
                }
                Raw::New { size, array, nothrow: true, align: None } => {
                    if array {
                        operator_new_array_nothrow(size, nothrow())
                    } else {
                        operator_new_nothrow(size, nothrow())
                    }
                }
                Raw::New { size, array, nothrow: false, align: Some(a) } => {
                    if array {
                        operator_new_array_aligned(size, a)
                    } else {
                        operator_new_aligned(size, a)
                    }
                }
                Raw::New { size, array, nothrow: true, align: Some(a) } => {
                    if array {
                        operator_new_array_aligned_nothrow(size, a, nothrow())
                    } else {
                        operator_new_aligned_nothrow(size, a, nothrow())
                    }
                }
                Raw::Free(a) => {
                    capi::free(p(a));
                    ptr::null_mut()
                }
                Raw::Cfree(a) => {
                    capi::cfree(p(a));
                    ptr::null_mut()
                }
                Raw::FreeSized(a, n) => {
                    capi::free_sized(p(a), n);
                    ptr::null_mut()
                }
                Raw::FreeAlignedSized(a, align, n) => {
                    capi::free_aligned_sized(p(a), align, n);
                    ptr::null_mut()
                }
                Raw::Delete { addr, array, align, form } => {
                    let q = p(addr);
                    match (form, align) {
                        (DeleteForm::Plain, None) if array => operator_delete_array(q),
                        (DeleteForm::Plain, None) => operator_delete(q),
                        (DeleteForm::Nothrow, None) if array => operator_delete_array_nothrow(q, nothrow()),
                        (DeleteForm::Nothrow, None) => operator_delete_nothrow(q, nothrow()),
                        (DeleteForm::Sized(n), None) if array => operator_delete_array_sized(q, n),
                        (DeleteForm::Sized(n), None) => operator_delete_sized(q, n),
                        (DeleteForm::Plain, Some(a)) if array => operator_delete_array_aligned(q, a),
                        (DeleteForm::Plain, Some(a)) => operator_delete_aligned(q, a),
                        (DeleteForm::Nothrow, Some(a)) if array => {
                            operator_delete_array_aligned_nothrow(q, a, nothrow())
                        }
                        (DeleteForm::Nothrow, Some(a)) => operator_delete_aligned_nothrow(q, a, nothrow()),
                        (DeleteForm::Sized(n), Some(a)) if array => operator_delete_array_sized_aligned(q, n, a),
                        (DeleteForm::Sized(n), Some(a)) => operator_delete_sized_aligned(q, n, a),
                    }
                    ptr::null_mut()
                }
                Raw::Collect(force) => {
                    capi::mallard_collect(force);
                    ptr::null_mut()
                }
            }
        };
        // LLVM knows the malloc family by name: it would take `calloc` memory for zero without
        // reading it, and drop a block it sees unused. An opaque pointer keeps every check real.
        let result = black_box(result);
        Outcome { addr: result as usize, ret, errno: errno() }
    }

    /// Makes the call on `thread`, and waits for it.
    fn call_on(self, thread: Thread) -> Outcome {
        match thread {
            Thread::Main => self.call(),
            Thread::Worker => worker().call(self),
            Thread::Exiting => std::thread::spawn(move || self.call()).join().expect("the exiting thread panicked"),
        }
    }
}

/// The second thread: it makes the calls sent to it, one at a time, and answers each.
struct Worker {
    calls: mpsc::Sender<Raw>,
    outcomes: mpsc::Receiver<Outcome>,
}

impl Worker {
    fn call(&self, raw: Raw) -> Outcome {
        self.calls.send(raw).expect("the worker thread is gone");
        self.outcomes.recv().expect("the worker thread is gone")
    }
}

/// The worker, started by the first call that needs it. (Calls come from the fuzzing thread
/// alone; the lock only makes the channel ends shareable.)
fn worker() -> std::sync::MutexGuard<'static, Worker> {
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (calls, calls_in) = mpsc::channel::<Raw>();
            let (outcomes_out, outcomes) = mpsc::channel();
            std::thread::Builder::new()
                .name("mallard-worker".into())
                .spawn(move || {
                    for raw in calls_in {
                        if outcomes_out.send(raw.call()).is_err() {
                            break;
                        }
                    }
                })
                .expect("cannot start the worker thread");
            Mutex::new(Worker { calls, outcomes })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

// ---- the pattern in each block ----
//
// The fill and the checks copy and compare a chunk at a time with `memcpy` and `memcmp`
// (libc's, which the coverage instrumentation does not reach: a loop over words here would
// spend most of the fuzzer's time in the comparison hooks).

/// The pattern repeats every `PATTERN_CHUNK` bytes of a block but for each chunk's first 8 bytes,
/// which depend on the chunk's offset: a chunk copied to the wrong place, or left stale, shows.
const PATTERN_CHUNK: usize = 4096;

/// The 8 bytes at `offset` (a multiple of 8) of block `id`'s pattern.
fn pattern_word(id: u64, offset: usize) -> u64 {
    let within = offset % PATTERN_CHUNK;
    let position = if within == 0 { offset as u64 | 1 << 63 } else { within as u64 };
    let seed = id.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (seed ^ position.wrapping_mul(0xd1b5_4a32_d192_ed03)).rotate_left(29)
}

fn pattern_byte(id: u64, offset: usize) -> u8 {
    pattern_word(id, offset & !7).to_le_bytes()[offset & 7]
}

/// The bytes that a block must hold, a chunk at a time.
enum Expected {
    /// Block `id`'s pattern; `chunk` holds it for the chunk at offset 0 (its words past the
    /// first are the same in every chunk).
    Pattern { id: u64, chunk: Box<[u8; PATTERN_CHUNK]> },
    /// Zero (`calloc`).
    Zero,
}

impl Expected {
    /// Block `id`'s pattern, for blocks of up to `len` bytes.
    fn pattern(id: u64, len: usize) -> Self {
        let mut chunk = Box::new([0; PATTERN_CHUNK]);
        for offset in (8..len.min(PATTERN_CHUNK)).step_by(8) {
            chunk[offset..offset + 8].copy_from_slice(&pattern_word(id, offset).to_le_bytes());
        }
        Expected::Pattern { id, chunk }
    }

    /// The bytes expected in the chunk at offset `start` (a multiple of `PATTERN_CHUNK`).
    fn chunk(&mut self, start: usize) -> &[u8; PATTERN_CHUNK] {
        static ZERO: [u8; PATTERN_CHUNK] = [0; PATTERN_CHUNK];
        match self {
            Expected::Pattern { id, chunk } => {
                chunk[..8].copy_from_slice(&pattern_word(*id, start).to_le_bytes());
                chunk
            }
            Expected::Zero => &ZERO,
        }
    }

    /// Calls `each(offset, expected bytes)` for the pieces of `from..to` that lie in one chunk.
    fn pieces(&mut self, from: usize, to: usize, mut each: impl FnMut(usize, &[u8]) -> bool) -> bool {
        let mut at = from;
        while at < to {
            let start = at - at % PATTERN_CHUNK;
            let end = (start + PATTERN_CHUNK).min(to);
            if !each(at, &self.chunk(start)[at - start..end - start]) {
                return false;
            }
            at = end;
        }
        true
    }

    /// Writes the expected bytes at `addr + from .. addr + to`.
    ///
    /// # Safety
    /// The bytes are the caller's to write.
    unsafe fn fill(&mut self, addr: usize, from: usize, to: usize) {
        self.pieces(from, to, |at, bytes| {
            // SAFETY: within the caller's bytes; `bytes` is the model's own memory.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), (addr + at) as *mut u8, bytes.len()) };
            true
        });
    }

    /// The first offset in `from .. to` where the bytes at `addr` are not the expected ones.
    ///
    /// # Safety
    /// The bytes are the caller's to read.
    unsafe fn first_difference(&mut self, addr: usize, from: usize, to: usize) -> Option<usize> {
        let mut found = None;
        self.pieces(from, to, |at, bytes| {
            // SAFETY: within the caller's bytes.
            let memory = unsafe { std::slice::from_raw_parts((addr + at) as *const u8, bytes.len()) };
            if memory == bytes {
                return true;
            }
            found = memory.iter().zip(bytes).position(|(m, b)| m != b).map(|i| at + i);
            false
        });
        found
    }
}

// ---- the shadow model ----

/// Which calls may free a block (besides `free` and `realloc`, which take any C block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// From `malloc`, `calloc`, `realloc` or `reallocarray`: `free_sized` takes its size.
    Malloc,
    /// From `aligned_alloc` or `posix_memalign`: `free_aligned_sized` takes its alignment and
    /// size.
    AlignedAlloc { align: usize },
    /// From `memalign`, `valloc` or `pvalloc`.
    OtherC,
    /// From `operator new`: only the matching `operator delete` frees it, and it is never
    /// reallocated.
    New { array: bool, align: Option<usize> },
}

#[derive(Debug, Clone, Copy)]
struct Block {
    /// Seeds the block's pattern; kept through `realloc`.
    id: u64,
    addr: usize,
    /// The size asked for.
    size: usize,
    /// `malloc_usable_size` when the block was allocated: the bytes its pattern covers.
    usable: usize,
    kind: Kind,
}

impl Block {
    /// The address range the block may use: at least one byte, as even a 0-byte block is a
    /// block of its own.
    fn end(&self) -> usize {
        self.addr + self.usable.max(1)
    }
}

/// A block that a call must return: `size` bytes aligned to `align`, zero if `zeroed`.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    size: usize,
    align: usize,
    kind: Kind,
    zeroed: bool,
}

impl Wanted {
    /// What `malloc(size)` returns.
    fn malloc(size: usize) -> Self {
        Wanted { size, align: MIN_ALIGN, kind: Kind::Malloc, zeroed: false }
    }
}

/// What `realloc` must have kept of a block: the first `bytes` of block `id`'s pattern.
struct Kept {
    id: u64,
    bytes: usize,
}

/// What an allocation call must do.
enum Expect {
    /// Return a block.
    Block(Wanted),
    /// Return NULL with this errno.
    Null { errno: c_int },
    /// Return NULL (C++ nothrow new; errno unspecified).
    NullAnyErrno,
    /// `posix_memalign`: return this error code, leaving the out-pointer and errno alone.
    Error { code: c_int },
}

/// The live blocks of the input being run.
struct Model {
    blocks: Vec<Block>,
    /// Start to end of every live block, to find overlaps.
    ranges: BTreeMap<usize, usize>,
    live_bytes: usize,
    next_id: u64,
    /// The op being run (for reports).
    step: usize,
}

impl Model {
    fn new() -> Self {
        // (Allocated once: the model's own memory comes from mallard too, and stays put.)
        let blocks = Vec::with_capacity(LIVE_BLOCKS_MAX);
        Model { blocks, ranges: BTreeMap::new(), live_bytes: 0, next_id: 0, step: 0 }
    }

    fn pick(&self, slot: u8) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| slot as usize % self.blocks.len())
    }

    fn has_room(&self, bytes: usize) -> bool {
        self.blocks.len() < LIVE_BLOCKS_MAX && self.live_bytes.saturating_add(bytes) <= LIVE_BYTES_MAX
    }

    /// Checks the whole pattern of `block`.
    fn check(&self, block: &Block, when: &str) {
        // SAFETY: the block is live; its usable bytes are ours.
        let bad = unsafe { Expected::pattern(block.id, block.usable).first_difference(block.addr, 0, block.usable) };
        if let Some(i) = bad {
            self.corrupt(block, i, when);
        }
    }

    /// Checks the pattern of `block` at its first and last 8 bytes and at each page boundary
    /// in it: where memory given back to the OS would show as zero.
    fn spot_check(&self, block: &Block, when: &str) {
        let mut offsets = vec![0, block.usable.saturating_sub(8) & !7];
        let first_page = (block.addr + MIN_PAGE_SIZE - 1) & !(MIN_PAGE_SIZE - 1);
        offsets.extend((first_page..block.addr + block.usable).step_by(MIN_PAGE_SIZE).map(|a| a - block.addr));
        for offset in offsets.into_iter().filter(|offset| offset + 8 <= block.usable) {
            // SAFETY: as in `check`; 8-aligned (blocks are 16-aligned).
            let found = unsafe { *((block.addr + offset) as *const u64) };
            if found != pattern_word(block.id, offset) {
                let i = (offset..offset + 8).find(|&i| pattern_byte(block.id, i) != found.to_le_bytes()[i - offset]);
                self.corrupt(block, i.unwrap_or(offset), when);
            }
        }
    }

    fn corrupt(&self, block: &Block, offset: usize, when: &str) -> ! {
        // SAFETY: the offset is within the block.
        let found = unsafe { *((block.addr + offset) as *const u8) };
        panic!(
            "op {}: block {block:?} is corrupt {when}: byte {offset} is {found:#04x}, not {:#04x}",
            self.step,
            pattern_byte(block.id, offset)
        );
    }

    /// Checks a block that a call returned, takes it into the model and fills it with its
    /// pattern (past what `realloc` kept, which is checked).
    fn admit(&mut self, outcome: Outcome, wanted: Wanted, kept: Option<Kept>) {
        let Wanted { size, align, kind, zeroed } = wanted;
        let addr = outcome.addr;
        let step = self.step;
        assert!(addr != 0, "op {step}: NULL for {size} bytes aligned to {align} (errno {})", outcome.errno);
        assert!(
            addr.is_multiple_of(align.max(MIN_ALIGN)),
            "op {step}: {addr:#x} ({size} bytes) is not aligned to {align}"
        );
        // SAFETY: a live block.
        let usable = unsafe { capi::malloc_usable_size(addr as *mut c_void) };
        assert!(usable >= size, "op {step}: usable size {usable} of {addr:#x} is below the {size} bytes asked for");
        let (id, keep) = kept.map_or_else(
            || {
                self.next_id += 1;
                (self.next_id, 0)
            },
            |kept| (kept.id, kept.bytes),
        );
        let block = Block { id, addr, size, usable, kind };
        if let Some((&start, &end)) = self.ranges.range(..block.end()).next_back() {
            assert!(end <= addr, "op {step}: {block:?} overlaps the live block at {start:#x}..{end:#x}");
        }
        if zeroed {
            // SAFETY: the block's bytes are ours.
            if let Some(i) = unsafe { Expected::Zero.first_difference(addr, 0, size) } {
                panic!("op {step}: calloc block {block:?} is not zero at byte {i}");
            }
        }
        let mut pattern = Expected::pattern(id, usable);
        // SAFETY: as above.
        if let Some(i) = unsafe { pattern.first_difference(addr, 0, keep) } {
            self.corrupt(&block, i, &format!("after realloc kept its first {keep} bytes"));
        }
        // SAFETY: as above.
        unsafe { pattern.fill(addr, keep, usable) };
        self.ranges.insert(addr, block.end());
        self.live_bytes += usable;
        self.blocks.push(block);
    }

    /// Takes block `index` out of the model, after checking it in full.
    fn take(&mut self, index: usize, when: &str) -> Block {
        let block = self.blocks[index];
        self.check(&block, when);
        self.blocks.swap_remove(index);
        self.ranges.remove(&block.addr);
        self.live_bytes -= block.usable;
        block
    }

    /// Puts back a block that a failed call must have left as it was.
    fn restore(&mut self, block: Block) {
        self.check(&block, "after a call that failed");
        // SAFETY: a live block.
        let usable = unsafe { capi::malloc_usable_size(block.addr as *mut c_void) };
        assert_eq!(usable, block.usable, "op {}: a failed call changed the usable size of {block:?}", self.step);
        self.ranges.insert(block.addr, block.end());
        self.live_bytes += block.usable;
        self.blocks.push(block);
    }

    /// Checks what an allocation call did against what it must do.
    fn expect(&mut self, expect: Expect, outcome: Outcome) {
        let step = self.step;
        match expect {
            Expect::Block(wanted) => self.admit(outcome, wanted, None),
            Expect::Null { errno } => {
                assert!(outcome.addr == 0, "op {step}: a call that must fail returned {:#x}", outcome.addr);
                assert_eq!(outcome.errno, errno, "op {step}: errno of a call that failed");
            }
            Expect::NullAnyErrno => {
                assert!(outcome.addr == 0, "op {step}: a call that must fail returned {:#x}", outcome.addr)
            }
            Expect::Error { code } => {
                assert_eq!(outcome.ret, code, "op {step}: posix_memalign's result");
                assert_eq!(outcome.addr, UNTOUCHED, "op {step}: posix_memalign failed and wrote its out-pointer");
                assert_eq!(outcome.errno, ERRNO_BEFORE, "op {step}: posix_memalign changed errno");
            }
        }
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Malloc { thread, size } => {
                let n = size.bytes();
                if self.has_room(n) {
                    let expect = Expect::Block(Wanted::malloc(n));
                    self.expect(expect, Raw::Malloc(n).call_on(thread));
                }
            }
            Op::Calloc { thread, count, size } => {
                let (count, n) = split(size.bytes(), Some(count));
                if self.has_room(n * count) {
                    let expect = Expect::Block(Wanted { zeroed: true, ..Wanted::malloc(n * count) });
                    self.expect(expect, Raw::Calloc(count, n).call_on(thread));
                }
            }
            Op::Aligned { thread, func, align, size } => {
                let (align, n) = (align.bytes(), size.bytes());
                if self.has_room(n.saturating_add(align)) {
                    let (raw, expect) = aligned_call(func, align, n);
                    self.expect(expect, raw.call_on(thread));
                }
            }
            Op::New { thread, array, nothrow, align, size } => {
                let (align, n) = (align.map(|a| 1usize << (a % 24)), size.bytes());
                if self.has_room(n.saturating_add(align.unwrap_or(0))) {
                    let kind = Kind::New { array, align };
                    let expect =
                        Expect::Block(Wanted { size: n, align: align.unwrap_or(MIN_ALIGN), kind, zeroed: false });
                    self.expect(expect, Raw::New { size: n, array, nothrow, align }.call_on(thread));
                }
            }
            Op::Realloc { thread, slot, size, count } => self.realloc(thread, slot, size, count),
            Op::Free { thread, slot, form } => self.free(thread, slot, form),
            Op::UsableSize { slot } => {
                let Some(index) = self.pick(slot) else { return };
                let block = self.blocks[index];
                // SAFETY: a live block.
                let usable = unsafe { capi::malloc_usable_size(block.addr as *mut c_void) };
                assert_eq!(usable, block.usable, "op {}: the usable size of {block:?} changed", self.step);
                self.check(&block, "when its usable size was asked");
            }
            Op::Collect { force, on_worker } => {
                Raw::Collect(force).call_on(if on_worker { Thread::Worker } else { Thread::Main });
                self.spot_check_all("after mallard_collect");
            }
            Op::Trim => {
                // SAFETY: no preconditions.
                assert_eq!(unsafe { capi::malloc_trim(0) }, 1);
                self.spot_check_all("after malloc_trim");
            }
            Op::SetPurgeDelay(delay) => set_purge_delay(delay.ms()),
            Op::Fail(failing) => self.fail(failing),
        }
    }

    fn spot_check_all(&self, when: &str) {
        for block in &self.blocks {
            self.spot_check(block, when);
        }
    }

    fn realloc(&mut self, thread: Thread, slot: Option<u8>, size: Size, count: Option<u8>) {
        let (count, n) = split(size.bytes(), count);
        let new_size = n * count;
        let raw = |addr| if count == 1 { Raw::Realloc(addr, n) } else { Raw::ReallocArray(addr, count, n) };
        let Some(slot) = slot else {
            // realloc(NULL, n) is malloc(n), also for n = 0.
            if self.has_room(new_size) {
                let expect = Expect::Block(Wanted::malloc(new_size));
                self.expect(expect, raw(0).call_on(thread));
            }
            return;
        };
        let Some(index) = self.pick(slot) else { return };
        let old = self.blocks[index];
        if matches!(old.kind, Kind::New { .. }) || !self.has_room(new_size.saturating_sub(old.usable)) {
            return;
        }
        let old = self.take(index, "before realloc");
        let outcome = raw(old.addr).call_on(thread);
        if new_size == 0 {
            // glibc's realloc(p, 0): frees p, returns NULL.
            assert!(outcome.addr == 0, "op {}: realloc({:#x}, 0) returned {:#x}", self.step, old.addr, outcome.addr);
        } else {
            let kept = Kept { id: old.id, bytes: old.usable.min(new_size) };
            self.admit(outcome, Wanted::malloc(new_size), Some(kept));
        }
    }

    fn free(&mut self, thread: Thread, slot: u8, form: FreeForm) {
        let Some(index) = self.pick(slot) else { return };
        let block = self.take(index, "before free");
        let outcome = free_call(&block, form).call_on(thread);
        if !matches!((block.kind, form), (Kind::New { .. }, _) | (_, FreeForm::ReallocToZero)) {
            assert_eq!(outcome.errno, ERRNO_BEFORE, "op {}: freeing {block:?} changed errno", self.step);
        }
    }

    fn fail(&mut self, failing: Failing) {
        match failing {
            Failing::Malloc(size) => {
                self.expect(Expect::Null { errno: libc::ENOMEM }, Raw::Malloc(size.bytes()).call())
            }
            Failing::Calloc(size) => {
                self.expect(Expect::Null { errno: libc::ENOMEM }, Raw::Calloc(1, size.bytes()).call())
            }
            Failing::CallocOverflow { size } => {
                let raw = Raw::Calloc(usize::MAX / 2 + 1, size as usize + 2);
                self.expect(Expect::Null { errno: libc::ENOMEM }, raw.call())
            }
            Failing::Realloc { slot, size } => self.fail_realloc(slot, |addr| Raw::Realloc(addr, size.bytes())),
            Failing::ReallocArrayOverflow { slot } => {
                self.fail_realloc(slot, |addr| Raw::ReallocArray(addr, usize::MAX / 2 + 1, 2))
            }
            Failing::Aligned { func, align, size } => {
                let (raw, expect) = aligned_call(func, 1 << (align % 24), size.bytes());
                assert!(!matches!(expect, Expect::Block(_)));
                self.expect(expect, raw.call());
            }
            Failing::MemalignOverflow { size } => {
                let raw = Raw::Memalign(usize::MAX / 2 + 2, size.bytes());
                self.expect(Expect::Null { errno: libc::EINVAL }, raw.call());
            }
            Failing::NewNothrow { align, size } => {
                let align = align.map(|a| 1usize << (a % 24));
                self.expect(
                    Expect::NullAnyErrno,
                    Raw::New { size: size.bytes(), array: false, nothrow: true, align }.call(),
                );
            }
        }
    }

    /// A `realloc` of a C block that must fail with ENOMEM and leave the block as it was.
    fn fail_realloc(&mut self, slot: u8, raw: impl Fn(usize) -> Raw) {
        let Some(index) = self.pick(slot) else { return };
        if matches!(self.blocks[index].kind, Kind::New { .. }) {
            return;
        }
        let block = self.take(index, "before realloc");
        let outcome = raw(block.addr).call();
        assert!(outcome.addr == 0, "op {}: realloc that must fail returned {:#x}", self.step, outcome.addr);
        assert_eq!(outcome.errno, libc::ENOMEM, "op {}: errno of a realloc that failed", self.step);
        self.restore(block);
    }

    /// Frees every block (checking each): the end of an input.
    fn free_all(&mut self) {
        while !self.blocks.is_empty() {
            let block = self.take(self.blocks.len() - 1, "at the end of the input");
            free_call(&block, FreeForm::Plain).call();
        }
    }
}

/// `(count, size / count)` for `calloc`-style calls: count 1 without one.
fn split(size: usize, count: Option<u8>) -> (usize, usize) {
    let count = count.map_or(1, |c| c as usize % 16 + 1);
    (count, size / count)
}

/// The call `func` makes for `align` and `size`, and what it must do.
fn aligned_call(func: AlignedFn, align: usize, size: usize) -> (Raw, Expect) {
    // A block, unless the size cannot be mapped: then NULL with ENOMEM.
    let outcome = |size: usize, align: usize, kind| {
        if size >= 1 << 48 {
            Expect::Null { errno: libc::ENOMEM }
        } else {
            Expect::Block(Wanted { size, align, kind, zeroed: false })
        }
    };
    match func {
        AlignedFn::PosixMemalign => {
            let expect = if !align.is_power_of_two() || align < size_of::<usize>() {
                Expect::Error { code: libc::EINVAL }
            } else if size >= 1 << 48 {
                Expect::Error { code: libc::ENOMEM }
            } else {
                Expect::Block(Wanted { size, align, kind: Kind::AlignedAlloc { align }, zeroed: false })
            };
            (Raw::PosixMemalign(align, size), expect)
        }
        AlignedFn::AlignedAlloc => {
            let expect = if align.is_power_of_two() {
                outcome(size, align, Kind::AlignedAlloc { align })
            } else {
                Expect::Null { errno: libc::EINVAL }
            };
            (Raw::AlignedAlloc(align, size), expect)
        }
        // memalign rounds the alignment up to a power of two.
        AlignedFn::Memalign => (Raw::Memalign(align, size), outcome(size, align.next_power_of_two(), Kind::OtherC)),
        AlignedFn::Valloc => (Raw::Valloc(size), outcome(size, page_size(), Kind::OtherC)),
        AlignedFn::Pvalloc => {
            // pvalloc rounds the size up to whole pages (at least one).
            let rounded = size.max(1).checked_next_multiple_of(page_size()).unwrap_or(usize::MAX);
            (Raw::Pvalloc(size), outcome(rounded, page_size(), Kind::OtherC))
        }
    }
}

/// The call that frees `block` in `form` (see `FreeForm`).
fn free_call(block: &Block, form: FreeForm) -> Raw {
    let addr = block.addr;
    match (block.kind, form) {
        (Kind::New { array, align }, FreeForm::Alias) => Raw::Delete { addr, array, align, form: DeleteForm::Nothrow },
        (Kind::New { array, align }, FreeForm::Sized) => {
            Raw::Delete { addr, array, align, form: DeleteForm::Sized(block.size) }
        }
        (Kind::New { array, align }, _) => Raw::Delete { addr, array, align, form: DeleteForm::Plain },
        (Kind::Malloc, FreeForm::Sized) => Raw::FreeSized(addr, block.size),
        (Kind::AlignedAlloc { align }, FreeForm::Sized) => Raw::FreeAlignedSized(addr, align, block.size),
        (_, FreeForm::Alias) => Raw::Cfree(addr),
        (_, FreeForm::ReallocToZero) => Raw::Realloc(addr, 0),
        (_, FreeForm::Plain | FreeForm::Sized) => Raw::Free(addr),
    }
}

fn set_purge_delay(ms: c_int) {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { capi::mallopt(M_MALLARD_PURGE_DELAY, ms) }, 1, "mallopt(M_MALLARD_PURGE_DELAY, {ms})");
}

// ---- start-up: is this mallard? ----

/// The shared object (its load address) that holds `addr`.
fn object_of(addr: usize) -> usize {
    // SAFETY: dladdr only reads the loader's tables; `info` is written on success.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        assert!(libc::dladdr(addr as *const c_void, &mut info) != 0, "dladdr({addr:#x}) failed");
        info.dli_fbase as usize
    }
}

/// What the dynamic linker binds `name` to for every module of the process (null if no module
/// exports it).
fn bound(name: &CStr) -> usize {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// Panics unless mallard is this process's allocator: the calls above go to mallard (as Rust
/// items of mallard-capi or as symbols that this executable defines), and libc, libstdc++ and
/// libFuzzer bind to the same functions. A sanitizer's runtime or a libc that took `malloc`
/// (a build with `--sanitizer address`) fails here.
fn assert_mallard_is_the_allocator() {
    let c_functions: [(&CStr, *const ()); 15] = [
        (c"malloc", capi::malloc as *const ()),
        (c"free", capi::free as *const ()),
        (c"calloc", capi::calloc as *const ()),
        (c"realloc", capi::realloc as *const ()),
        (c"reallocarray", capi::reallocarray as *const ()),
        (c"posix_memalign", capi::posix_memalign as *const ()),
        (c"aligned_alloc", capi::aligned_alloc as *const ()),
        (c"memalign", capi::memalign as *const ()),
        (c"valloc", capi::valloc as *const ()),
        (c"pvalloc", capi::pvalloc as *const ()),
        (c"malloc_usable_size", capi::malloc_usable_size as *const ()),
        (c"free_sized", capi::free_sized as *const ()),
        (c"free_aligned_sized", capi::free_aligned_sized as *const ()),
        (c"cfree", capi::cfree as *const ()),
        (c"malloc_trim", capi::malloc_trim as *const ()),
    ];
    for (name, ours) in c_functions {
        // (Null: no module exports the name, as the executable exports only what libraries
        // call; then only this file calls it, through mallard-capi.)
        let found = bound(name);
        assert!(
            found == ours as usize || found == 0,
            "{name:?} of this process is not mallard's: build with `--sanitizer none`"
        );
    }
    let this_executable = object_of(assert_mallard_is_the_allocator as *const () as usize);
    let cxx_operators = [operator_new as *const (), operator_new_aligned as *const (), operator_delete as *const ()]
        .map(|f| f as usize);
    for (name, ours) in [c"_Znwm", c"_ZnwmSt11align_val_t", c"_ZdlPv"].into_iter().zip(cxx_operators) {
        assert_eq!(object_of(ours), this_executable, "{name:?} called here is not mallard's");
        assert_eq!(bound(name), ours, "{name:?} of this process is not mallard's");
    }
    // And mallard answers: a huge block shows in its statistics.
    let huge_blocks = || {
        let mut stats = std::mem::MaybeUninit::<capi::MallardStats>::uninit();
        // SAFETY: a writable struct, filled by the call.
        unsafe {
            capi::mallard_stats(stats.as_mut_ptr());
            stats.assume_init().huge_blocks
        }
    };
    let before = huge_blocks();
    // SAFETY: plain calls; the block is freed.
    unsafe {
        let p = black_box(libc::malloc(2 * SEGMENT_SIZE));
        assert!(!p.is_null());
        assert_eq!(huge_blocks(), before + 1, "malloc did not make a huge block in mallard's statistics");
        assert_eq!(libc::malloc_usable_size(ptr::null_mut()), 0);
        libc::free(p);
    }
}

fuzz_target!(
    init: {
        assert_mallard_is_the_allocator();
    },
    |program: Vec<Op>| {
        set_purge_delay(mallard_core::raw::PURGE_DELAY_MS as c_int);
        let mut model = Model::new();
        for (step, op) in program.into_iter().enumerate() {
            model.step = step;
            model.run(op);
        }
        model.free_all();
    }
);
