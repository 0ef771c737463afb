//! The background purger: a thread that gives free memory back to the OS once its purge delay
//! has passed, while the program makes no allocator calls (a server that freed a burst and
//! waits for requests). Without it, purging happens only on the allocation slow paths, so
//! whatever was free at a thread's last call stayed committed for good. jemalloc's
//! `background_thread` does the same job.
//!
//! Designed for a library that is preloaded into programs that know nothing of it:
//! - **Started only where a thread may be made.** An allocation's slow path and a thread's
//!   exit start it, once the heaps hold `START_MIN_BYTES` or something is due; a free never
//!   does. glibc frees thread stacks' TLS with its stack-cache lock held (in `pthread_join`,
//!   `pthread_create` and a detached thread's exit), and `pthread_create` takes that lock: a
//!   purger started from such a free deadlocks. Never from a constructor either, before the
//!   program's own threads and signal set-up exist.
//! - **Lingers, then leaves.** With nothing to purge it looks again every purge delay (at
//!   least every 10 ms) for as long as heaps reach purge points (`LINGER_MS` after the last),
//!   so the frees that follow an allocation burst are purged without a new thread. Then it
//!   exits, so an idle process has no thread waking it. Once no heap is live (`main` called
//!   `pthread_exit` and the other threads are gone) it gives the caches back and exits at
//!   once, whatever the delay (it sleeps at most `LINGER_MS` at a time to notice), so the
//!   process ends and gets its signals. Memory freed after a whole `LINGER_MS` without any
//!   slow path waits for the next allocation slow path. Turned off and on, the old thread
//!   leaves at its next wake-up (`generation`).
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
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

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

/// How long a purger with nothing to purge stays after the last purge point of any heap (ms).
const LINGER_MS: u64 = 1000;

/// How often a lingering purger looks for work, at the shortest (ms; the purge delay may be 0).
const POLL_MIN_MS: u64 = 10;

/// An allocation slow path starts the purger once the heaps hold this many bytes (or something
/// is due): a small program never gets the thread.
const START_MIN_BYTES: i64 = 16 << 20;

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
    /// Heaps that have an owner (counted by the heap pool): with none, nothing but a new
    /// thread can bring work, and that thread starts a purger of its own.
    pub(crate) live_heaps: AtomicUsize,
    /// Bumped for each thread started: a thread from before an off-and-on exits, instead of
    /// running beside the new one.
    generation: AtomicU64,
}

impl Purger {
    pub(crate) const fn new() -> Self {
        Purger {
            state: AtomicU8::new(OFF),
            round: SpinLock::new(0),
            last_active: AtomicU64::new(0),
            abandoned_activity: AtomicU64::new(0),
            seen_activity: AtomicU64::new(0),
            live_heaps: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
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

    /// The running thread's exit: RUNNING becomes IDLE, so that the next start makes a new
    /// thread, unless `work_arrived` (asked after the change: whoever brought work before it
    /// saw RUNNING and started no thread) and the thread can take RUNNING back. True: exit.
    fn leaves(&self, work_arrived: impl FnOnce() -> bool) -> bool {
        self.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Relaxed).is_err()
            || !work_arrived()
            || self.state.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_err()
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
    /// Starts the purger thread if it is on, not running, and worth having: something is due
    /// (abandoned segments with new frees count), or the heaps hold `START_MIN_BYTES` (a small
    /// program never gets the thread).
    ///
    /// Call only from an allocation's slow path or a thread's exit, where the caller's heap is
    /// consistent and no lock is held, and **never from a free**: starting a thread allocates
    /// (which re-enters the allocator on this thread) and takes glibc's stack-cache lock, which
    /// glibc holds while it frees thread stacks' TLS (see the module doc).
    #[inline]
    pub fn start_purger(&self) {
        if self.purger.state.load(Ordering::Relaxed) == IDLE
            && (self.shared.in_use().0 >= START_MIN_BYTES || self.purge_pending())
        {
            // SAFETY: backends live as long as the process (statics, or leaked).
            unsafe { &*(self as *const Backend) }.spawn_purger();
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
    fn spawn_purger(&'static self) {
        if self.purger.state.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        self.purger.generation.fetch_add(1, Ordering::AcqRel);
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

/// The purger thread: sleeps until something is due, purges it, lingers while heaps are busy,
/// and exits when nothing is left (see the module doc).
extern "C" fn purger_main(arg: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    // SAFETY: `spawn_purger` passes a `&'static Backend`.
    let backend: &'static Backend = unsafe { &*(arg as *const Backend) };
    let purger = &backend.purger;
    let generation = purger.generation.load(Ordering::Acquire);
    crate::os::name_thread(c"mallard-purge");
    let poll = || backend.purge_delay_ms().clamp(POLL_MIN_MS, LINGER_MS);
    // The first round comes after a poll: what a slow path or an exiting thread is about to
    // free is due a delay later, which that round finds.
    let mut next = crate::os::now_ms().saturating_add(poll());
    let mut abandoned_rounds = ABANDONED_ROUNDS;
    loop {
        // In steps of at most `LINGER_MS`: once no heap is live, nothing will use what is
        // cached, and this thread (it blocks every signal) must not keep a process whose `main`
        // called `pthread_exit` alive, nor deaf to signals, until a long delay has passed.
        loop {
            let now = crate::os::now_ms();
            if now >= next || purger.live_heaps.load(Ordering::Relaxed) == 0 {
                break;
            }
            crate::os::sleep_until_ms(next.min(now.saturating_add(LINGER_MS)));
        }
        if purger.state.load(Ordering::Acquire) != RUNNING || purger.generation.load(Ordering::Acquire) != generation {
            return core::ptr::null_mut(); // turned off (or off and on: a newer thread runs)
        }
        if purger.live_heaps.load(Ordering::Relaxed) == 0 {
            // Give the caches back now, and leave: a new heap starts a new purger.
            {
                let _round = purger.round.lock();
                backend.purge(crate::os::now_ms(), true);
            }
            if purger.leaves(|| purger.live_heaps.load(Ordering::Relaxed) != 0) {
                return core::ptr::null_mut();
            }
            // A heap appeared meanwhile, and nobody started another thread: go on.
        }
        if let Some(at) = backend.purger_round(&mut abandoned_rounds) {
            next = at;
            continue;
        }
        let now = crate::os::now_ms();
        let busy = now < purger.last_active.load(Ordering::Relaxed).saturating_add(LINGER_MS);
        if busy && purger.live_heaps.load(Ordering::Relaxed) != 0 {
            // Frees may follow; they cannot start a thread.
            next = now.saturating_add(poll());
            continue;
        }
        if purger.leaves(|| backend.purge_pending()) {
            return core::ptr::null_mut();
        }
        next = now.saturating_add(poll());
        abandoned_rounds = ABANDONED_ROUNDS;
    }
}
