//! Misuse the allocator catches, and how it says so.
//!
//! A program that frees a pointer mallard did not hand out (on the stack, in a global, inside a
//! block, from another allocator) or frees a block twice would otherwise corrupt the heap
//! silently, to crash far away or be exploited. `free` checks, at a few instructions a call:
//! - the pointer's 4 MiB region holds a segment (`segment_map`);
//! - it starts a block of its page (a multiply, `Page::starts_block`);
//! - the block does not carry the *free mark*: freeing writes a per-process random word,
//!   `free_mark()`, into a block's second word and handing it out again clears it, so a
//!   block that has it was freed already. (A live block carries the mark only if the program
//!   wrote that secret word there, which it can learn only by reading freed memory. The
//!   page's lists cannot confirm it: a freed block may wait in another thread's batch of
//!   remote frees, on no list yet.)
//!
//! Found misuse is reported by `report`: one line `mallard: <what> at <address>` on stderr,
//! written without allocating, then `abort`.

use crate::stats::FdWriter;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The mark until `init_free_mark` has run (odd, so never a pointer; replaced at once).
const FIRST_MARK: usize = 0x6d61_6c6c_6172_6421; // "mallard!"

static FREE_MARK: AtomicUsize = AtomicUsize::new(FIRST_MARK);

/// The word a free block carries in its second word.
#[inline(always)]
pub fn free_mark() -> usize {
    FREE_MARK.load(Ordering::Relaxed)
}

/// Draws the process's random free mark (once; later calls do nothing). Blocks freed before
/// keep the first mark, which only means a double free of one of them goes unseen.
pub fn init_free_mark() {
    if FREE_MARK.load(Ordering::Relaxed) != FIRST_MARK {
        return;
    }
    let mut r = random_word();
    if r == 0 || r == FIRST_MARK {
        r = FIRST_MARK.rotate_left(17);
    }
    let _ = FREE_MARK.compare_exchange(FIRST_MARK, r | 1, Ordering::Relaxed, Ordering::Relaxed);
}

/// A random word from the kernel, or from the clock and an address if it has none to give.
pub(crate) fn random_word() -> usize {
    let mut r: usize = 0;
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: writes at most size_of::<usize>() bytes into `r`.
        let n = unsafe {
            libc::getrandom(
                &mut r as *mut usize as *mut libc::c_void,
                core::mem::size_of::<usize>(),
                libc::GRND_NONBLOCK,
            )
        };
        if n == core::mem::size_of::<usize>() as isize {
            return r;
        }
    }
    r = crate::os::now_ms() as usize ^ (&r as *const usize as usize).rotate_left(29);
    r.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Reports misuse of the allocator at `p` and aborts: `mallard: <what> at <p>`.
#[cold]
#[inline(never)]
pub fn report(what: &str, p: *const u8) -> ! {
    report_op("", what, p)
}

/// Reports misuse by operation `op` (`realloc`, …) at `p` and aborts:
/// `mallard: <op> of <what> at <p>` (or `mallard: <what> at <p>` without `op`).
#[cold]
#[inline(never)]
pub fn report_op(op: &str, what: &str, p: *const u8) -> ! {
    let mut w = FdWriter::new(2);
    let _ = if op.is_empty() {
        writeln!(w, "mallard: {what} at {:#x}", p.addr())
    } else {
        writeln!(w, "mallard: {op} of {what} at {:#x}", p.addr())
    };
    w.flush();
    std::process::abort()
}
