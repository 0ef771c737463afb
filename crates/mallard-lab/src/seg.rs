//! Segregated free lists with size classes (simple segregated storage, the talk's bins taken
//! as far as mallard and its peers take them): sizes up to `SMALL_MAX` are rounded up to a size
//! class (every 16 bytes to 128, then four classes per power of two), and each class carves its
//! blocks from runs of pages that hold that class only, with no headers and no coalescing
//! between blocks. A run whose blocks are all free goes back to the page heap, which also
//! serves larger requests as whole pages: address-ordered first fit over page runs, coalesced,
//! grown at the top by at least `GROW_MIN` and trimmed past `TRIM`.
//!
//! The trade is the talk's: a request is served in a few steps and freed blocks are reused by
//! their own size at once, but a page that keeps one live block keeps its whole run, whatever
//! size is asked for next.

use crate::fit::{GROW_MIN, TRIM};
use crate::{align_up, Span, Strategy, HEAP_BASE, PAGE};
use std::collections::{BTreeMap, BTreeSet};

/// The largest size served from a class; above it, whole pages.
pub const SMALL_MAX: u64 = 4096;

/// The size classes: 16 to 128 by 16, then four per power of two up to `SMALL_MAX`.
pub fn classes() -> Vec<u64> {
    let mut c: Vec<u64> = (1..=8).map(|k| k * 16).collect();
    let mut base = 128;
    while base < SMALL_MAX {
        c.extend((1..=4).map(|k| base + k * base / 4));
        base *= 2;
    }
    c
}

/// A run of pages: blocks of one class, or one large block.
#[derive(Clone, Debug)]
enum Run {
    Class { class: usize, free: Vec<u64>, carved: u64, used: u64 },
    Large,
}

pub struct Segregated {
    sizes: Vec<u64>,
    top: u64,
    /// Free page runs: start -> bytes.
    free_runs: BTreeMap<u64, u64>,
    /// Runs in use: start -> (bytes, what they hold).
    runs: BTreeMap<u64, (u64, Run)>,
    /// Per class: runs with a free or uncarved block.
    open: Vec<BTreeSet<u64>>,
}

impl Default for Segregated {
    fn default() -> Self {
        Self::new()
    }
}

impl Segregated {
    pub fn new() -> Segregated {
        let sizes = classes();
        let open = vec![BTreeSet::new(); sizes.len()];
        Segregated { sizes, top: HEAP_BASE, free_runs: BTreeMap::new(), runs: BTreeMap::new(), open }
    }

    /// The run length for `class`: enough whole pages for 8 blocks (a page up to 512 bytes).
    fn run_len(&self, class: usize) -> u64 {
        align_up(8 * self.sizes[class], PAGE)
    }

    /// A run of `len` bytes aligned to `align` (both multiples of a page): first fit, growing
    /// the heap when none fits.
    fn take_run(&mut self, len: u64, align: u64) -> u64 {
        let fits = |(&s, &z): (&u64, &u64)| {
            let a = align_up(s, align);
            (a + len <= s + z).then_some((s, a))
        };
        let (start, at) = match self.free_runs.iter().find_map(fits) {
            Some(f) => f,
            None => {
                let want = align_up(len + align - PAGE, PAGE).max(GROW_MIN);
                let old_top = self.top;
                self.top += want;
                self.give_run(old_top, want, false);
                let last = self.free_runs.range(..self.top).next_back().map(|(&s, &z)| (s, z)).unwrap();
                fits((&last.0, &last.1)).expect("the grown top run fits")
            }
        };
        let size = self.free_runs.remove(&start).unwrap();
        if at > start {
            self.free_runs.insert(start, at - start);
        }
        if start + size > at + len {
            self.free_runs.insert(at + len, start + size - at - len);
        }
        at
    }

    /// Returns run `[start, start + len)` to the free runs, coalesced; with `trim`, gives back
    /// a free top run past `TRIM`.
    fn give_run(&mut self, mut start: u64, len: u64, trim: bool) {
        let mut end = start + len;
        if let Some((&s, &z)) = self.free_runs.range(..start).next_back() {
            if s + z == start {
                self.free_runs.remove(&s);
                start = s;
            }
        }
        if let Some(z) = self.free_runs.remove(&end) {
            end += z;
        }
        if trim && end == self.top && end - start > TRIM {
            let keep = start + PAGE;
            self.top = keep;
            end = keep;
        }
        self.free_runs.insert(start, end - start);
    }

    /// The class for `size` bytes aligned to `align`, if a class serves it.
    fn class_of(&self, size: u64, align: u64) -> Option<usize> {
        if size.max(align) > SMALL_MAX || align > PAGE {
            return None;
        }
        self.sizes.iter().position(|&c| c >= size && c % align.max(16) == 0)
    }
}

impl Strategy for Segregated {
    fn name(&self) -> &'static str {
        "segregated"
    }

    fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let size = size.max(1);
        let Some(class) = self.class_of(size, align) else {
            let len = align_up(size, PAGE);
            let at = self.take_run(len, align.max(PAGE));
            self.runs.insert(at, (len, Run::Large));
            return at;
        };
        let block = self.sizes[class];
        let run_start = match self.open[class].first() {
            Some(&r) => r,
            None => {
                let len = self.run_len(class);
                let r = self.take_run(len, PAGE);
                self.runs.insert(r, (len, Run::Class { class, free: Vec::new(), carved: 0, used: 0 }));
                self.open[class].insert(r);
                r
            }
        };
        let (len, run) = self.runs.get_mut(&run_start).unwrap();
        let Run::Class { free, carved, used, .. } = run else { unreachable!("an open run holds a class") };
        let p = match free.pop() {
            Some(p) => p,
            None => {
                *carved += 1;
                run_start + (*carved - 1) * block
            }
        };
        *used += 1;
        if free.is_empty() && (*carved + 1) * block > *len {
            self.open[class].remove(&run_start);
        }
        p
    }

    fn free(&mut self, addr: u64) {
        let (&start, _) = self.runs.range(..=addr).next_back().unwrap_or_else(|| panic!("free of {addr:#x}"));
        let (len, run) = self.runs.get_mut(&start).unwrap();
        let len = *len;
        match run {
            Run::Large => {
                assert_eq!(addr, start, "free of {addr:#x}, inside a large block");
                self.runs.remove(&start);
                self.give_run(start, len, true);
            }
            Run::Class { class, free, used, .. } => {
                let class = *class;
                assert!(addr < start + len && (addr - start).is_multiple_of(self.sizes[class]), "free of {addr:#x}");
                free.push(addr);
                *used -= 1;
                if *used == 0 {
                    self.runs.remove(&start);
                    self.open[class].remove(&start);
                    self.give_run(start, len, true);
                } else {
                    self.open[class].insert(start);
                }
            }
        }
    }

    fn footprint(&self) -> u64 {
        self.top - HEAP_BASE
    }

    fn block_size(&self, addr: u64) -> u64 {
        let (&start, (len, run)) = self.runs.range(..=addr).next_back().expect("a live block");
        match run {
            Run::Large => *len,
            Run::Class { class, .. } => {
                let _ = start;
                self.sizes[*class]
            }
        }
    }

    fn largest_free(&self) -> u64 {
        self.free_runs.values().copied().max().unwrap_or(0)
    }

    fn spans(&self) -> Vec<Span> {
        let mut v: Vec<Span> = self.free_runs.iter().map(|(&start, &len)| Span { start, len, free: true }).collect();
        for (&start, (len, run)) in &self.runs {
            match run {
                Run::Large => v.push(Span { start, len: *len, free: false }),
                Run::Class { class, free, carved, .. } => {
                    let b = self.sizes[*class];
                    let free: BTreeSet<u64> = free.iter().copied().collect();
                    v.extend((0..*carved).map(|i| start + i * b).map(|p| Span {
                        start: p,
                        len: b,
                        free: free.contains(&p),
                    }));
                    let end = start + carved * b;
                    if end < start + len {
                        v.push(Span { start: end, len: start + len - end, free: true });
                    }
                }
            }
        }
        v.sort_unstable_by_key(|s| s.start);
        v
    }

    fn validate(&self) {
        let mut spans: Vec<(u64, u64, bool)> = self.free_runs.iter().map(|(&s, &z)| (s, z, true)).collect();
        spans.extend(self.runs.iter().map(|(&s, (z, _))| (s, *z, false)));
        spans.sort_unstable();
        let (mut at, mut last_free) = (HEAP_BASE, false);
        for &(s, z, is_free) in &spans {
            assert_eq!(s, at, "runs tile the heap: a gap or an overlap at {at:#x}");
            assert!(s.is_multiple_of(PAGE) && z.is_multiple_of(PAGE) && z > 0, "runs are whole pages");
            assert!(!(is_free && last_free), "free runs at {s:#x} not coalesced");
            at += z;
            last_free = is_free;
        }
        assert_eq!(at, self.top, "runs end at the top");
        for (&s, (z, run)) in &self.runs {
            if let Run::Class { class, free, carved, used } = run {
                let b = self.sizes[*class];
                assert!(carved * b <= *z && *used + free.len() as u64 == *carved, "run {s:#x}: counts");
                assert!(*used > 0, "an empty run at {s:#x} was not given back");
                let distinct: BTreeSet<&u64> = free.iter().collect();
                assert_eq!(distinct.len(), free.len(), "a block twice in run {s:#x}'s free list");
                assert!(free.iter().all(|&p| p >= s && p < s + carved * b && (p - s) % b == 0));
                let has_room = !free.is_empty() || (carved + 1) * b <= *z;
                assert_eq!(self.open[*class].contains(&s), has_room, "run {s:#x}: open list");
            }
        }
    }
}
