//! mallard's own algorithm as a strategy: the real allocator (`crates/mallard`), one heap per
//! thread of the trace, over a page source of the lab's (`LabPages`), whose memory is real but
//! private to the replay. mallard maps whole 4 MiB segments, touches only what it uses and
//! gives free pages back inside them (`decommit`), so its footprint is not the extent of its
//! address space but the pages it has committed: `LabPages` counts an OS page committed from
//! the moment a block handed out covers it, or the source hands out the region around it
//! (a segment's header; a heap's metadata), until mallard decommits or releases it. (Free
//! lists written into a page's carved blocks before any is handed out are not counted: at most
//! a few KiB per size class.) Its purge delay is 0 here (the library waits 100 ms), so that a
//! replay does not depend on how fast it runs.

use crate::{Span, Strategy, HEAP_BASE, PAGE};
use mallard::raw::{header_keep, Backend, Heap, PageSource};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// How much address space a replay's mallard may use.
const SPACE: usize = 64 << 30;

/// The committed pages of a `LabPages`: a bit each, and their count.
#[derive(Default)]
struct Committed {
    bits: Vec<u64>,
    pages: u64,
}

impl Committed {
    /// Marks pages `[first, end)` committed (`on`) or not.
    fn set(&mut self, first: usize, end: usize, on: bool) {
        if self.bits.len() * 64 < end {
            self.bits.resize(end.div_ceil(64), 0);
        }
        for k in first..end {
            let (w, b) = (k / 64, 1u64 << (k % 64));
            if (self.bits[w] & b != 0) != on {
                self.bits[w] ^= b;
                if on {
                    self.pages += 1;
                } else {
                    self.pages -= 1;
                }
            }
        }
    }

    fn get(&self, k: usize) -> bool {
        self.bits.get(k / 64).is_some_and(|w| w & (1 << (k % 64)) != 0)
    }
}

/// Memory for one replay's mallard: a private reservation, handed out in aligned pieces
/// (never reused: address space is plentiful), with its committed pages counted.
pub struct LabPages {
    base: *mut u8,
    state: Mutex<(usize, Committed)>,
}

// SAFETY: `base` is only read; the rest is behind a mutex.
unsafe impl Sync for LabPages {}
// SAFETY: as above.
unsafe impl Send for LabPages {}

impl LabPages {
    fn new() -> Option<LabPages> {
        // SAFETY: a fresh private reservation; pages are materialized only when touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SPACE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| LabPages { base: p.cast(), state: Mutex::new((0, Committed::default())) })
    }

    fn used(&self) -> usize {
        self.state.lock().unwrap().0
    }

    /// Marks `[p, p + len)` committed or not (whole pages it touches).
    fn mark(&self, p: *const u8, len: usize, on: bool) {
        let off = p as usize - self.base as usize;
        let (first, end) = if on {
            (off / PAGE as usize, (off + len).div_ceil(PAGE as usize))
        } else {
            // Only whole pages are decommitted.
            (off.div_ceil(PAGE as usize), (off + len) / PAGE as usize)
        };
        self.state.lock().unwrap().1.set(first, end, on);
    }

    fn committed_bytes(&self) -> u64 {
        self.state.lock().unwrap().1.pages * PAGE
    }
}

// SAFETY: every region is a fresh, disjoint, aligned part of a private anonymous mapping
// (zero-filled until written); released and decommitted ranges read as zero again.
unsafe impl PageSource for LabPages {
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let start = {
            let mut st = self.state.lock().unwrap();
            let start = (self.base as usize + st.0).next_multiple_of(align) - self.base as usize;
            if start + size > SPACE {
                return None;
            }
            st.0 = start + size;
            start
        };
        // SAFETY: inside the mapping, not null.
        let p = unsafe { self.base.add(start) };
        // What mallard writes at once: a segment's header, or all of a small region.
        self.mark(p, if size <= 64 << 10 { size } else { header_keep(self.page_size()) }, true);
        // SAFETY: as above.
        Some(unsafe { NonNull::new_unchecked(p) })
    }

    unsafe fn decommit(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: the caller's range, inside our mapping.
        unsafe { libc::madvise(p.as_ptr().cast(), size, libc::MADV_DONTNEED) };
        self.mark(p.as_ptr(), size, false);
    }

    unsafe fn release(&self, p: NonNull<u8>, size: usize) {
        // SAFETY: as above (the range is not handed out again).
        unsafe { libc::madvise(p.as_ptr().cast(), size, libc::MADV_DONTNEED) };
        self.mark(p.as_ptr(), size, false);
    }
}

/// The strategy: mallard over `LabPages`.
pub struct Mallard {
    pages: &'static LabPages,
    backend: &'static Backend,
    heaps: HashMap<u32, &'static Heap>,
    thread: u32,
}

impl Mallard {
    /// `None` if the address space cannot be reserved.
    pub fn new() -> Option<Mallard> {
        let pages: &'static LabPages = Box::leak(Box::new(LabPages::new()?));
        let backend = Backend::leaked(pages);
        backend.set_purge_delay_ms(0);
        Some(Mallard { pages, backend, heaps: HashMap::new(), thread: 0 })
    }

    fn heap(&mut self) -> &'static Heap {
        let backend = self.backend;
        self.heaps.entry(self.thread).or_insert_with(|| backend.heap_alloc().expect("a heap"))
    }

    fn to_lab(&self, p: *mut u8) -> u64 {
        HEAP_BASE + (p as u64 - self.pages.base as u64)
    }

    fn to_real(&self, addr: u64) -> *mut u8 {
        self.pages.base.wrapping_add((addr - HEAP_BASE) as usize)
    }
}

impl Drop for Mallard {
    fn drop(&mut self) {
        // The backend is leaked (heaps point into it); give its memory back to the OS.
        let used = self.pages.used();
        // SAFETY: our own mapping; nothing uses it after the replay.
        unsafe { libc::madvise(self.pages.base.cast(), used, libc::MADV_DONTNEED) };
    }
}

impl Strategy for Mallard {
    fn name(&self) -> &'static str {
        "mallard"
    }

    fn set_thread(&mut self, thread: u32) {
        self.thread = thread;
    }

    fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let heap = self.heap();
        // SAFETY: the heap plays the trace thread's; a non-zero alignment power of two.
        let p = unsafe { mallard::raw::malloc_aligned(heap, size as usize, align.max(1) as usize) };
        assert!(!p.is_null(), "mallard ran out of the lab's address space");
        // The program writes its block: its pages are committed.
        // SAFETY: p is a live block.
        self.pages.mark(p, unsafe { mallard::raw::usable_size(p) }.max(1), true);
        self.to_lab(p)
    }

    fn free(&mut self, addr: u64) {
        let heap = self.heap();
        // SAFETY: `addr` is a live block this strategy handed out.
        unsafe { mallard::raw::free(heap, self.to_real(addr)) };
    }

    fn footprint(&self) -> u64 {
        self.pages.committed_bytes()
    }

    fn extent(&self) -> u64 {
        (self.pages.used() as u64).next_multiple_of(PAGE)
    }

    fn block_size(&self, addr: u64) -> u64 {
        // SAFETY: a live block of this strategy.
        unsafe { mallard::raw::usable_size(self.to_real(addr)) as u64 }
    }

    fn largest_free(&self) -> u64 {
        // The longest run of pages not committed inside the address space used.
        let st = self.pages.state.lock().unwrap();
        let (mut best, mut run) = (0u64, 0u64);
        for k in 0..st.0.div_ceil(PAGE as usize) {
            run = if st.1.get(k) { 0 } else { run + 1 };
            best = best.max(run);
        }
        best * PAGE
    }

    fn spans(&self) -> Vec<Span> {
        // Pages, committed or not (mallard's blocks are not listed one by one).
        let st = self.pages.state.lock().unwrap();
        (0..st.0.div_ceil(PAGE as usize))
            .map(|k| Span { start: HEAP_BASE + k as u64 * PAGE, len: PAGE, free: !st.1.get(k) })
            .collect()
    }

    fn trim(&mut self) {
        for heap in self.heaps.values() {
            mallard::raw::collect(heap, true);
            heap.purge(u64::MAX, true);
        }
        self.backend.purge(u64::MAX, true);
    }

    fn validate(&self) {
        for heap in self.heaps.values() {
            heap.validate();
        }
    }
}
