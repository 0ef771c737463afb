//! Model tests: random programs over an object graph, checked against a model that computes
//! reachability itself. After `collect()` exactly the unreachable objects are gone and each
//! one's `Drop` ran once; at every step no reachable object has been dropped, and every object
//! reached still holds its own bytes. Run with full and with incremental collections that fire
//! in the middle of the program.

mod common;
use common::{take_dropped, Tracker};
use mallard_gc::{Config, Gc, GcCell, Trace};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// A node of `K` extra words: three sizes put objects in different classes and in the large
/// list.
#[derive(Trace)]
struct N<const K: usize> {
    id: u64,
    edges: GcCell<Vec<Edge>>,
    pad: [u64; K],
    tracker: Tracker,
}

#[derive(Trace, Clone)]
enum Edge {
    Small(Gc<N<0>>),
    Mid(Gc<N<40>>),
    Large(Gc<N<700>>),
}

fn pad<const K: usize>(id: u64) -> [u64; K] {
    std::array::from_fn(|i| id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64)
}

fn make(id: u64, kind: u8) -> Edge {
    fn n<const K: usize>(id: u64) -> Gc<N<K>> {
        Gc::new(N { id, edges: GcCell::new(Vec::new()), pad: pad::<K>(id), tracker: Tracker(id) })
    }
    match kind % 8 {
        0..=4 => Edge::Small(n(id)),
        5 | 6 => Edge::Mid(n(id)),
        _ => Edge::Large(n(id)),
    }
}

impl Edge {
    /// The node's id, after checking its bytes are its own.
    fn id(&self) -> u64 {
        fn check<const K: usize>(n: &N<K>) -> u64 {
            assert!(n.pad == pad::<K>(n.id), "node {} corrupted", n.id);
            assert_eq!(n.tracker.0, n.id);
            n.id
        }
        match self {
            Edge::Small(n) => check(n),
            Edge::Mid(n) => check(n),
            Edge::Large(n) => check(n),
        }
    }

    fn edges(&self) -> &GcCell<Vec<Edge>> {
        match self {
            Edge::Small(n) => &n.edges,
            Edge::Mid(n) => &n.edges,
            Edge::Large(n) => &n.edges,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    New(u8),
    Link(usize, usize),
    Unlink(usize, usize),
    Walk(usize, usize),
    DropRoot(usize),
    Garbage(u16),
    Collect,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::New),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Unlink(a, b)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Walk(a, b)),
        2 => any::<usize>().prop_map(Op::DropRoot),
        1 => any::<u16>().prop_map(Op::Garbage),
        1 => Just(Op::Collect),
        1 => Just(Op::Compact),
    ]
}

struct Model {
    edges: HashMap<u64, Vec<u64>>,
    roots: Vec<u64>,
    dropped: HashSet<u64>,
}

impl Model {
    fn reachable(&self) -> HashSet<u64> {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack: Vec<u64> = self.roots.clone();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(&self.edges[&id]);
            }
        }
        seen
    }

    /// Take the drops since the last call: each object once, none reachable.
    fn absorb_drops(&mut self) {
        let reachable = self.reachable();
        for id in take_dropped() {
            assert!(!reachable.contains(&id), "node {id} dropped while reachable");
            assert!(self.dropped.insert(id), "node {id} dropped twice");
            self.edges.remove(&id);
        }
    }
}

fn run(ops: Vec<Op>, config: Config) {
    mallard_gc::configure(config);
    mallard_gc::collect();
    take_dropped();
    let mut next = 1_000_000u64;
    let mut roots: Vec<Edge> = Vec::new();
    let mut m = Model { edges: HashMap::new(), roots: Vec::new(), dropped: HashSet::new() };
    for op in ops {
        match op {
            Op::New(kind) => {
                next += 1;
                roots.push(make(next, kind));
                m.roots.push(next);
                m.edges.insert(next, Vec::new());
            }
            Op::Link(a, b) if !roots.is_empty() => {
                let (a, b) = (a % roots.len(), b % roots.len());
                roots[a].edges().borrow_mut().push(roots[b].clone());
                m.edges.get_mut(&m.roots[a]).unwrap().push(m.roots[b]);
            }
            Op::Unlink(a, k) if !roots.is_empty() => {
                let a = a % roots.len();
                let mut edges = roots[a].edges().borrow_mut();
                if !edges.is_empty() {
                    let k = k % edges.len();
                    let gone = edges.remove(k);
                    drop(edges);
                    let model = m.edges.get_mut(&m.roots[a]).unwrap();
                    assert_eq!(gone.id(), model.remove(k));
                }
            }
            Op::Walk(a, k) if !roots.is_empty() => {
                let a = a % roots.len();
                let edges = roots[a].edges().borrow();
                if !edges.is_empty() {
                    let k = k % edges.len();
                    let to = edges[k].clone();
                    drop(edges);
                    assert_eq!(to.id(), m.edges[&m.roots[a]][k]);
                    roots.push(to);
                    m.roots.push(m.edges[&m.roots[a]][k]);
                }
            }
            Op::DropRoot(a) if !roots.is_empty() => {
                let a = a % roots.len();
                roots.swap_remove(a);
                m.roots.swap_remove(a);
            }
            Op::Garbage(n) => {
                // Allocation that paces the collector (and, in incremental mode, runs slices
                // while the program's own graph is half marked).
                for i in 0..n % if cfg!(miri) { 40 } else { 2000 } {
                    next += 1;
                    m.edges.insert(next, Vec::new());
                    let g = make(next, i as u8);
                    if i % 7 == 0 && !roots.is_empty() {
                        // Store some of it, some into the graph the marker may have passed.
                        let a = (i as usize) % roots.len();
                        roots[a].edges().borrow_mut().push(g);
                        m.edges.get_mut(&m.roots[a]).unwrap().push(next);
                    }
                }
            }
            Op::Collect | Op::Compact => {
                if let Op::Compact = op {
                    // SAFETY: between operations the program holds handles only.
                    unsafe { mallard_gc::compact() };
                } else {
                    mallard_gc::collect();
                }
                m.absorb_drops();
                let reachable = m.reachable();
                for id in m.edges.keys() {
                    assert!(reachable.contains(id), "node {id} unreachable but not dropped");
                }
            }
            _ => {}
        }
        m.absorb_drops();
        mallard_gc::debug_validate();
        for (r, id) in roots.iter().zip(&m.roots) {
            assert_eq!(r.id(), *id);
        }
    }
    drop(roots);
    m.roots.clear();
    mallard_gc::collect();
    m.absorb_drops();
    assert!(m.edges.is_empty(), "{} nodes never dropped", m.edges.len());
    mallard_gc::configure(Config::default());
}

fn cases() -> u32 {
    if cfg!(miri) {
        2
    } else {
        64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn full_collections(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 30 } else { 400 })) {
        run(ops, Config { min_heap: 64 << 10, incremental: false, ..Config::default() });
    }

    #[test]
    fn incremental_collections(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 30 } else { 400 })) {
        run(ops, Config { min_heap: 32 << 10, incremental: true, slice_bytes: 1024, mark_rate: 1, ..Config::default() });
    }
}
