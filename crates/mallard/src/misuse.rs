//! Misuse the allocator catches, and how it says so.
//!
//! A program that frees a pointer mallard did not hand out (on the stack, in a global, inside a
//! block, from another allocator) or frees a block twice would otherwise corrupt the heap
//! silently, to crash far away or be exploited. `free` checks, at a few instructions a call:
//! - the pointer's 4 MiB region holds a segment (`segment_map`);
//! - it starts a block of its page that was carved (a multiply and a compare,
//!   `Page::is_carved_block`), of a page that is in use;
//! - the block does not carry the *free mark*: carving and freeing write the page's random
//!   word, `Page::mark`, into a block's second word and handing it out again clears it, so a
//!   block that has it is free. (A live block carries the mark only if the program wrote
//!   that secret word there, which it can learn only by reading freed memory of that page.
//!   The page's lists cannot confirm it: a freed block may wait in another thread's batch of
//!   remote frees, on no list yet.)
//!
//! `malloc` checks the mark too: the block it pops must carry it, so a free-list link that
//! a use after free or an overflow rewrote is reported (`free list corrupted`) instead of
//! handing out a live block or an address of the attacker's choice.
//!
//! Found misuse is reported by `report`: one line `mallard: <what> at <address>` on stderr,
//! written without allocating, then `abort`.

use crate::os::FdWriter;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// Writes one line `mallard: <what>` to stderr, without allocating (a warning: no abort).
#[cold]
pub(crate) fn warn(what: &str) {
    let mut w = FdWriter::new(2);
    let _ = writeln!(w, "mallard: {what}");
    w.flush();
}

/// Reports misuse of the allocator at `p` and aborts: `mallard: <what> at <p>`.
#[cold]
#[inline(never)]
pub(crate) fn report(what: &str, p: *const u8) -> ! {
    report_op("", what, p)
}

/// Reports misuse by operation `op` (`realloc`, …) at `p` and aborts:
/// `mallard: <op> of <what> at <p>` (or `mallard: <what> at <p>` without `op`).
#[cold]
#[inline(never)]
pub fn report_op(op: &str, what: &str, p: *const u8) -> ! {
    // One report per process: threads that find misuse at the same moment (two frees of one
    // block racing) wait for the first one's abort instead of printing a second line.
    static REPORTING: AtomicBool = AtomicBool::new(false);
    if REPORTING.swap(true, Ordering::AcqRel) {
        loop {
            std::thread::yield_now();
        }
    }
    let mut w = FdWriter::new(2);
    let _ = if op.is_empty() {
        writeln!(w, "mallard: {what} at {:#x}", p.addr())
    } else {
        writeln!(w, "mallard: {op} of {what} at {:#x}", p.addr())
    };
    w.flush();
    std::process::abort()
}
