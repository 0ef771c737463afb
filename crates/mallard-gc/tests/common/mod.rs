//! A node type whose drops are recorded, for the tests.
#![allow(dead_code)]

use mallard_gc::{Gc, GcCell, Trace};
use std::cell::RefCell;

thread_local! {
    /// Ids of the nodes dropped on this thread, in order.
    pub static DROPPED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Records its id in `DROPPED` when dropped. A leaf: it may implement `Drop`.
#[derive(Trace)]
#[trace(leaf)]
pub struct Tracker(pub u64);

impl Drop for Tracker {
    fn drop(&mut self) {
        // `try_with`: at thread exit the list may be gone before the heap's last collection.
        let _ = DROPPED.try_with(|d| d.borrow_mut().push(self.0));
    }
}

#[derive(Trace)]
pub struct Node {
    pub id: u64,
    pub edges: GcCell<Vec<Gc<Node>>>,
    /// Bytes derived from the id, checked on every visit (a freed and reused slot would show).
    pub payload: Vec<u8>,
    pub tracker: Tracker,
}

pub fn pattern(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

pub fn node(id: u64, payload: usize) -> Gc<Node> {
    Gc::new(Node { id, edges: GcCell::new(Vec::new()), payload: pattern(id, payload), tracker: Tracker(id) })
}

/// Panics unless the node's payload is still the one it was made with.
pub fn check(n: &Node) {
    assert!(n.payload == pattern(n.id, n.payload.len()), "node {} corrupted", n.id);
}

pub fn take_dropped() -> Vec<u64> {
    DROPPED.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Collect, then take the ids dropped since the last call, sorted.
pub fn collect_dropped() -> Vec<u64> {
    mallard_gc::collect();
    let mut d = take_dropped();
    d.sort();
    d
}
