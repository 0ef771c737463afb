//! The atomics of the lock-free protocol (a page's remote-free list, its tags, its counts and
//! its owner) and of the spin lock: the core's own, or, when the crate is built with
//! `--cfg loom` for the model checker, loom's, so that loom explores the interleavings of the
//! real code (`page/loom_models.rs`, and the lock's model in `lock.rs`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering};

/// One turn of a spin-wait, the `spins`-th: a pause, and after a while the CPU handed over
/// so that a preempted holder can finish (under loom: another thread's turn).
#[inline]
pub(crate) fn spin_wait(spins: u32) {
    #[cfg(not(loom))]
    if spins < 64 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
}
