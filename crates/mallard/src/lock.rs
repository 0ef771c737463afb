//! A minimal spin lock for the rare paths (segment cache, abandoned segments, heap pool).
//! It never allocates, so it is safe inside the allocator; after a short spin it yields the
//! CPU so that a preempted holder can finish.

use crate::sync::{spin_wait, AtomicBool, Ordering};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to the value.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new(value: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// `new`, for the model checker (whose atomics are not `const`).
    #[cfg(loom)]
    pub(crate) fn new(value: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                spin_wait(spins);
            }
        }
        SpinGuard { lock: self }
    }

    /// Takes the lock without a guard (for `pthread_atfork`'s prepare handler).
    pub(crate) fn raw_lock(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by `raw_lock`.
    ///
    /// # Safety
    /// The calling thread (or, after fork, its only copy) holds the lock through `raw_lock`.
    pub(crate) unsafe fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// The lock's model for loom (see `sync`): two threads add to a counter under the lock with a
/// plain load and store, which only mutual exclusion and the lock's acquire and release
/// orderings keep from losing an addition. The heap pool, the segment cache and the abandoned
/// list are lists under this lock.
#[cfg(all(test, loom))]
mod loom_models {
    use super::SpinLock;
    use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use loom::sync::Arc;

    #[test]
    fn loom_the_spin_lock_excludes_and_orders() {
        loom::model(|| {
            let lock = Arc::new(SpinLock::new(AtomicUsize::new(0)));
            let add = |lock: &SpinLock<AtomicUsize>| {
                let n = lock.lock();
                n.store(n.load(Relaxed) + 1, Relaxed);
            };
            let other = {
                let lock = lock.clone();
                loom::thread::spawn(move || add(&lock))
            };
            add(&lock);
            other.join().unwrap();
            assert_eq!(lock.lock().load(Relaxed), 2, "an addition under the lock was lost");
        });
    }
}
