//! Models of the page's lock-free protocol for the loom model checker, over the page's own
//! code (its atomics are loom's under `--cfg loom`, see `sync`): loom runs each model under
//! every interleaving its threads allow and every value a relaxed or acquire load may see.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p mallard --lib --release loom`
//! (`scripts/test` does).
//!
//! The heap's steps around the page (what `Heap::abandon`, `reclaim`, `find_page` and the hint
//! scan do with it) are played here by the same page calls in the same order; a heap is an
//! owner id and one hint flag.

use super::{Owner, Page};
use crate::block::{write_mark, Block};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr;

const BLOCK: usize = 64;
const REGION: usize = 64 << 10;

/// A page in a region of its own (aligned, so its blocks lie in the page's 4 MiB region, as
/// `pop` checks), with `blocks` blocks carved, handed out and counted in `used`.
struct TestPage {
    region: *mut u8,
    blocks: Vec<*mut Block>,
}

// SAFETY: the page is shared as the allocator shares it: remote threads touch only its
// atomics and the blocks they free; the owner's thread the rest.
unsafe impl Send for TestPage {}
// SAFETY: as above.
unsafe impl Sync for TestPage {}

fn owner(id: usize) -> *mut Owner {
    ptr::without_provenance_mut(id << 12)
}

impl TestPage {
    fn new(owner_id: usize, blocks: usize) -> Arc<TestPage> {
        let layout = Layout::from_size_align(REGION, REGION).unwrap();
        // SAFETY: a non-zero size.
        let region = unsafe { alloc_zeroed(layout) };
        assert!(!region.is_null());
        // SAFETY: the region starts with room for the page, then its blocks.
        let page = unsafe {
            region.cast::<Page>().write(Page::new());
            &*region.cast::<Page>()
        };
        // SAFETY: inside the region.
        let start = unsafe { region.add(4096) };
        page.init(owner(owner_id), 3, BLOCK, start, blocks * BLOCK, true);
        page.extend();
        // SAFETY: this thread owns the page; `extend` carved every block onto `free`.
        let blocks = (0..blocks).map(|_| unsafe { page.pop() }).collect();
        Arc::new(TestPage { region, blocks })
    }

    fn page(&self) -> &Page {
        // SAFETY: written in `new`, dropped in `drop`.
        unsafe { &*self.region.cast::<Page>() }
    }

    /// A remote free of block `k`, as `alloc::free` and `Heap::free_remote` make it: marked,
    /// pushed, and the owner told through its hint if the push cleared `FULL`.
    fn free_remote(&self, k: usize, hints: &[(usize, AtomicBool)], also: impl FnOnce()) {
        let (page, b) = (self.page(), self.blocks[k]);
        // SAFETY: a live block of the page, freed once.
        unsafe {
            write_mark(b, page.mark_of(b as *const u8));
            page.free_remote_list(b, b, 1, |tag, who| {
                also();
                if tag == super::FULL {
                    if let Some((_, hint)) = hints.iter().find(|(id, _)| owner(*id) == who) {
                        hint.store(true, Ordering::Release);
                    }
                }
            });
        }
    }

    /// Blocks waiting on the remote list (owner's view, no push in flight).
    fn pending(&self) -> usize {
        let mut n = 0;
        let mut b = self.page().thread_free.load(Ordering::Acquire).map_addr(|a| a & !super::FULL);
        while !b.is_null() {
            n += 1;
            // SAFETY: a free block of the page.
            b = unsafe { self.page().next_of(b) };
        }
        n
    }
}

impl Drop for TestPage {
    fn drop(&mut self) {
        // SAFETY: the page and region were made in `new`; no thread uses them now.
        unsafe {
            ptr::drop_in_place(self.region.cast::<Page>());
            dealloc(self.region, Layout::from_size_align(REGION, REGION).unwrap());
        }
    }
}

/// Two remote frees race with the owner's collection: each block is collected exactly once
/// and counted out of `used` exactly once, and the page's invariant holds at the end.
#[test]
fn loom_remote_pushes_and_the_owners_collect() {
    loom::model(|| {
        let t = TestPage::new(1, 3);
        let others: Vec<_> = (0..2)
            .map(|k| {
                let t = t.clone();
                thread::spawn(move || t.free_remote(k, &[], || {}))
            })
            .collect();
        let mut collected = t.page().collect_remote();
        for th in others {
            th.join().unwrap();
        }
        collected += t.page().collect_remote();
        assert_eq!(collected, 2, "both remote frees are counted once");
        assert_eq!(t.page().used(), 1, "one block is still live");
        t.page().validate();
    });
}

/// A remote free into a page in its owner's full list tells the owner: the page never stays
/// in the full list with a free block waiting and no hint.
#[test]
fn loom_a_remote_free_into_a_full_page_tells_its_owner() {
    loom::model(|| {
        let t = TestPage::new(1, 2);
        let hints = Arc::new([(1, AtomicBool::new(false))]);
        let freer = {
            let (t, hints) = (t.clone(), hints.clone());
            thread::spawn(move || t.free_remote(0, &*hints, || {}))
        };
        // The owner finds the page without room and moves it to the full list (`page_to_full`),
        // unless a remote free arrived first.
        let mut in_full = t.page().mark_full();
        freer.join().unwrap();
        // Its next slow path: the hint, then the scan of the full list (`process_hints`).
        if in_full && hints[0].1.swap(false, Ordering::Acquire) && t.page().full_cleared() {
            t.page().unmark_full();
            in_full = false;
        }
        assert!(!(in_full && t.pending() > 0), "a freed block waits in a full page whose owner was not told");
        // No block was lost on the way.
        t.page().unmark_full();
        t.page().validate();
    });
}

/// The hint reaches the page's owner even when the page changes hands while a remote free is
/// under way: heap 1 exits (abandon), heap 2 takes the segment over (reclaim), finds the page
/// without room and moves it to its full list. (Hinting the owner read before the push sent
/// the hint to heap 1, and heap 2 kept the page full with a free block: a lost hint.)
#[test]
fn loom_the_hint_reaches_the_owner_across_abandon_and_reclaim() {
    loom::model(|| {
        let t = TestPage::new(1, 2);
        assert!(t.page().mark_full());
        t.page().set_in_full(owner(1), true);
        let hints = Arc::new([(1, AtomicBool::new(false)), (2, AtomicBool::new(false))]);
        let freer = {
            let (t, hints) = (t.clone(), hints.clone());
            thread::spawn(move || t.free_remote(0, &*hints, || {}))
        };
        let page = t.page();
        // Heap 1 exits: `Heap::abandon`.
        page.unmark_full();
        page.owner.store(ptr::null_mut(), Ordering::Relaxed);
        page.collect_remote();
        // Heap 2 reclaims the segment: `Heap::reclaim`, then its `find_page`.
        page.collect_remote();
        page.set_in_full(owner(2), false);
        page.collect();
        let mut in_full = !page.has_room() && page.mark_full();
        if in_full {
            page.set_in_full(owner(2), true);
        }
        freer.join().unwrap();
        if in_full && hints[1].1.swap(false, Ordering::Acquire) && page.full_cleared() {
            page.unmark_full();
            in_full = false;
        }
        assert!(!(in_full && t.pending() > 0), "heap 2 keeps a full page with a free block and no hint");
        page.unmark_full();
        page.validate();
    });
}

/// The page cannot be given back while a remote free is under way: the freer counts its
/// blocks in `remote_freed` only after the push and after it has read the owner, so until
/// then `used` keeps them and the page does not look empty.
#[test]
fn loom_a_page_is_not_retired_under_a_remote_free() {
    loom::model(|| {
        let t = TestPage::new(1, 1);
        let retired = Arc::new(AtomicBool::new(false));
        let freer = {
            let (t, retired) = (t.clone(), retired.clone());
            thread::spawn(move || {
                t.free_remote(0, &[], || assert!(!retired.load(Ordering::Acquire), "the page was retired under a push"))
            })
        };
        // The owner's slow paths: collect, and retire the page once nothing is in use.
        for _ in 0..2 {
            t.page().collect();
            if t.page().used() == 0 {
                retired.store(true, Ordering::Release);
                break;
            }
        }
        freer.join().unwrap();
    });
}
