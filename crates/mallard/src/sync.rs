//! The atomics of the lock-free protocol (a page's remote-free list, its tags, its counts and
//! its owner): the core's own, or, when the crate is built with `--cfg loom` for the model
//! checker, loom's, so that loom explores the interleavings of the real code
//! (`page/loom_models.rs`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering};
