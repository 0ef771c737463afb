//! The background purger: a thread that gives free memory back to the OS once its purge delay
//! has passed, while the program makes no allocator calls (a server that freed a burst and
//! waits for requests). Without it, purging happens only on the allocation slow paths, so
//! whatever was free at a thread's last call stayed committed for good. jemalloc's
//! `background_thread` does the same job.
//!
//! Designed for a library that is preloaded into programs that know nothing of it:
//! - **Lazy.** The thread is started from an allocation slow path, a huge free or a thread's
//!   exit, once there is something to purge: never from a constructor, before the program's
//!   own threads and signal set-up exist.
//! - **Short-lived.** It exits as soon as nothing is left to purge (and is started again when
//!   there is), so an idle process has no thread waking it, and after `main` calls
//!   `pthread_exit` the process ends within a few purge delays (the rounds over what the last
//!   threads left: about 0.3 s at the default delay).
//! - **Quiet.** It blocks every signal (a program that `sigwait`s or counts on its signal
//!   handlers running in its own threads is unaffected), uses a small stack, never calls
//!   `malloc`, and is named `mallard-purge`. It is still a thread: while it runs, a program
//!   that needs to be single-threaded (`unshare(CLONE_NEWUSER)` fails with EINVAL otherwise,
//!   and a check of `Threads:` in /proc sees two) must run with it off.
//! - **Fork-safe.** `fork` waits for a round in progress (`lock_for_fork`); the child has no
//!   purger and starts its own when it needs one.
//! - **Off** with `set_enabled(false)` (the C library's `MALLARD_PURGE_THREAD=0`); the Rust
//!   `Mallard` leaves it off unless the program turns it on (`mallard::set_background_purge`).
//!   If a thread cannot be made (a sandbox, a thread limit), it stays off for the process.
//!
//! Each round purges the backend's cached segments and huge mappings whose delay has passed
//! (`Backend::purge`), and, when the process looks idle (no heap reached a purge point for a
//! purge delay), takes over the segments that exited threads left (their blocks freed by
//! others since), gives back what is empty, and leaves the rest abandoned again. Memory that a
//! live but idle thread's own heap holds waits for that thread's next allocation, as before:
//! only its owner may touch it.

use super::Backend;
use crate::lock::SpinLock;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Off: no thread is started.
const OFF: u8 = 0;
/// On, no thread running.
const IDLE: u8 = 1;
/// On, a thread running (or being started).
const RUNNING: u8 = 2;

/// Rounds over the abandoned segments after each sign of activity there: the first takes
/// over and empties pages (due a delay later), the second purges those pages and frees empty
/// segments, the third purges the segments cached by the second.
const ABANDONED_ROUNDS: u32 = 3;

/// The purger's state, one per backend.
pub(crate) struct Purger {
    state: AtomicU8,
    /// Held for a whole round, and by `fork` (so that no round is half done in the child).
    round: SpinLock<u32>,
    /// When a heap last reached a purge point (ms), to tell an idle process.
    pub(crate) last_active: AtomicU64,
    /// Bumped when a thread abandons its segments and when blocks are freed into abandoned
    /// pages: something may have become free there.
    pub(crate) abandoned_activity: AtomicU64,
    seen_activity: AtomicU64,
}

impl Purger {
    pub(crate) const fn new() -> Self {
        Purger {
            state: AtomicU8::new(OFF),
            round: SpinLock::new(0),
            last_active: AtomicU64::new(0),
            abandoned_activity: AtomicU64::new(0),
            seen_activity: AtomicU64::new(0),
        }
    }

    /// Turns the purger on or off (a running thread finishes its round and exits).
    pub(crate) fn set_enabled(&self, on: bool) {
        if on {
            let _ = self.state.compare_exchange(OFF, IDLE, Ordering::AcqRel, Ordering::Relaxed);
        } else {
            self.state.store(OFF, Ordering::Release);
        }
    }

    /// Before `fork`: waits for a round in progress and keeps the next from starting.
    pub(crate) fn lock_for_fork(&self) {
        self.round.raw_lock();
    }

    /// After `fork`, in the parent (`child` false) or the child: releases the lock; the child
    /// has no purger thread.
    ///
    /// # Safety
    /// `lock_for_fork` was called by this thread (or the forked child's copy of it).
    pub(crate) unsafe fn unlock_after_fork(&self, child: bool) {
        if child && self.state.load(Ordering::Relaxed) == RUNNING {
            self.state.store(IDLE, Ordering::Relaxed);
        }
        // SAFETY: per the contract.
        unsafe { self.round.raw_unlock() };
    }
}

impl Backend {
    /// Starts the purger thread if it is on, not running, and there is something to purge
    /// (or `exiting`: a thread is about to abandon its heap). Call only where the caller's heap
    /// is consistent and no lock is held: starting a thread allocates (glibc's
    /// `pthread_create` does), which re-enters the allocator on this thread.
    #[inline]
    pub fn poke_purger(&self, exiting: bool) {
        if self.purger.state.load(Ordering::Relaxed) == IDLE && (exiting || self.purge_pending()) {
            // SAFETY: backends live as long as the process (statics, or leaked).
            unsafe { &*(self as *const Backend) }.start_purger();
        }
    }

    /// Whether a round would have anything to do: cached memory due for purging, or new
    /// activity in abandoned segments.
    fn purge_pending(&self) -> bool {
        self.next_purge() != u64::MAX
            || self.shared.next_owned_due() != u64::MAX
            || (self.abandoned_len() != 0
                && self.purger.abandoned_activity.load(Ordering::Relaxed)
                    != self.purger.seen_activity.load(Ordering::Relaxed))
    }

    #[cold]
    #[inline(never)]
    fn start_purger(&'static self) {
        if self.purger.state.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        // SAFETY: the thread gets a `&'static Backend`.
        if !unsafe { crate::os::spawn_detached(purger_main, self as *const Backend as *mut core::ffi::c_void) } {
            // No thread (a sandbox, a thread limit): purging stays on the slow paths.
            self.purger.state.store(OFF, Ordering::Release);
            return;
        }
        self.counters.purger_threads.fetch_add(1, Ordering::Relaxed);
    }

    /// One round (see the module doc). Returns when the next is due (ms), or `None` when
    /// nothing is left to purge.
    fn purger_round(&'static self, abandoned_rounds: &mut u32) -> Option<u64> {
        let _round = self.purger.round.lock();
        let now = crate::os::now_ms();
        let delay = self.purge_delay_ms();
        self.counters.purger_rounds.fetch_add(1, Ordering::Relaxed);
        let purged_before = self.counters.bytes_purged.load(Ordering::Relaxed);
        let activity = self.purger.abandoned_activity.load(Ordering::Relaxed);
        if self.purger.seen_activity.swap(activity, Ordering::Relaxed) != activity {
            *abandoned_rounds = ABANDONED_ROUNDS;
        }
        let idle = now >= self.purger.last_active.load(Ordering::Relaxed).saturating_add(delay);
        let mut heap_bytes = 0;
        if *abandoned_rounds > 0 && idle && self.abandoned_len() != 0 {
            *abandoned_rounds -= 1;
            if let Some(reclaim) = self.reclaim {
                heap_bytes = reclaim(self, now);
                // (Its own abandon is no news.)
                let seen = self.purger.abandoned_activity.load(Ordering::Relaxed);
                self.purger.seen_activity.store(seen, Ordering::Relaxed);
            }
        } else {
            self.purge(now, false);
        }
        // Free pages in live heaps' segments, once they are overdue (their owners are idle).
        if self.shared.next_owned_due().saturating_add(delay) <= now {
            self.shared.clear_owned_due();
            let (_, overdue) = self.purge_owned(now, delay);
            // (`owned_due` holds due times: a delay before they are overdue.)
            if overdue != u64::MAX {
                self.shared.owned_due(overdue.saturating_sub(delay));
            }
        }
        let bytes = self.counters.bytes_purged.load(Ordering::Relaxed) - purged_before + heap_bytes;
        self.counters.purger_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut next = self.next_purge().min(self.shared.next_owned_due().saturating_add(delay));
        if *abandoned_rounds > 0 && self.abandoned_len() != 0 {
            next = next.min(now.saturating_add(delay));
        }
        (next != u64::MAX).then(|| next.max(now + 1))
    }
}

/// The purger thread: sleeps until something is due, purges it, and exits when nothing is
/// left (see the module doc).
extern "C" fn purger_main(arg: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    // SAFETY: `start_purger` passes a `&'static Backend`.
    let backend: &'static Backend = unsafe { &*(arg as *const Backend) };
    let purger = &backend.purger;
    crate::os::name_thread(c"mallard-purge");
    // The first round waits a delay: what a slow path or an exiting thread is about to free
    // is due then.
    let mut next = crate::os::now_ms().saturating_add(backend.purge_delay_ms());
    let mut abandoned_rounds = ABANDONED_ROUNDS;
    loop {
        crate::os::sleep_until_ms(next);
        if purger.state.load(Ordering::Acquire) != RUNNING {
            return core::ptr::null_mut(); // turned off (or, in a forked child, never here)
        }
        match backend.purger_round(&mut abandoned_rounds) {
            Some(at) => next = at,
            None => {
                // Nothing left: exit, unless work arrived between the round and the state
                // change (whoever brought it saw RUNNING and started no thread).
                if purger.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    return core::ptr::null_mut();
                }
                if !backend.purge_pending()
                    || purger.state.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_err()
                {
                    return core::ptr::null_mut();
                }
                next = crate::os::now_ms().saturating_add(backend.purge_delay_ms());
                abandoned_rounds = ABANDONED_ROUNDS;
            }
        }
    }
}
