//! The secrets every build's checks use (free marks, link keys, header checksums, canaries:
//! `secret`, one per purpose) and the secure build's mitigations (cargo feature `secure`;
//! `libmallard_secure.so`), each named here, with what it stops and what it costs. The default
//! build keeps the checks of `misuse` (invalid and double frees, corrupted free lists and
//! chunk metadata), which cost little; these cost more, and are on only in the secure build,
//! the last three only at its full level (`MALLARD_HARDEN=full`, `full`).
//!
//! | mitigation | stops | where |
//! |---|---|---|
//! | `ENCODED_LINKS` | a use-after-free write of a free-list link steering a later `malloc` to an address of the attacker's choice | `encode_link`, `Page::next_of`, `Page::pop` |
//! | `RANDOM_ORDER` | heap grooming: placing a block an overflow will reach right after the overflowing one by allocating in a known order | `Rng`, `Page::link_shuffled` |
//! | `SEALED_HEADERS` | a chunk header overwritten with a size of the attacker's choice (house of force, overlapping chunks) being trusted | `seal_header`, `try_open_header`, `chunk::size_flags` |
//! | `BLOCK_MARKS` | a free mark read from a freed block being copied into a live one, so that a forged link to it passes `malloc`'s check | `block_mark`, `Page::mark_of` |
//! | `ZERO_BLOCKS` | a read or write through a zero-size block reaching another block's bytes | `zero`, `alloc::zero_block` |
//! | `HUGE_GUARD` | an overflow out of a huge block running through its mapping's slack into the next mapping | `huge::guard_huge` |
//! | `HEADER_GUARD` | an underflow out of a segment's first page running into the segment header (the page map and page states) | `segment::header_guard`, `Backend::guard_header` |
//! | `fill_freed` (full level) | a use after free reading what the block held | `alloc::quarantine::fill_and_keep` |
//! | `quarantine` (full level) | a use after free reaching the next object of the block's size; finds writes to a freed block | `alloc::quarantine::fill_and_keep`, `Heap::quarantine_swap` |
//! | `canaries` (full level) | an overflow past a small block's end going unseen | `small_canary`, `alloc::with_canary`, `alloc::check_canary` |
//!
//! SECURITY.md says what each build catches, case by case.

use crate::block::Block;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Whether this is the secure build.
pub const SECURE: bool = cfg!(feature = "secure");

/// **Encoded free-list links.** The link word of a free block (`Block::next`) holds the next
/// block's address encoded with a per-page secret (`Page::key`) and the block's own address:
/// `rotl(next ^ slot ^ key, key >> 58)`. A program that writes a chosen address there after
/// the free (a use after free) has written garbage once decoded, which `Page::pop` refuses
/// (it is not a block of the page's segment carrying its free mark), as do walks along a list
/// (`Page::next_of`: not a block of the page), so `malloc` cannot return the chosen address.
/// The secret is per page start and per process (a mix of a random secret that no block ever
/// holds, the page's address and a count of page starts, `page_salt`), so a link read from
/// one page says nothing of another's, nor of the same page's next use; `Page::pop` clears
/// the link word of a block it hands out.
pub(crate) const ENCODED_LINKS: bool = SECURE;

/// **Random allocation order within a page.** A fresh stretch of a page (`Page::extend`
/// carves up to 4 KiB at a time) is cut into `RANDOM_RUNS` runs, and its blocks are linked by
/// taking the next block of a randomly chosen run each time, so consecutive `malloc`s return
/// neighbours only when two picks fall on the same run (1 in 8), and in no order an attacker
/// can predict. It costs 3 random bits per block to choose, but the order itself costs more:
/// objects a program allocates together no longer share cache lines (json 1.30 ×, threadtest
/// 1.36 × in BENCHMARKS.md; a full shuffle of each stretch cost the same). The generator is
/// seeded from the page's secret and how far the page is carved, so it needs no shared state.
pub const RANDOM_ORDER: bool = SECURE;
pub(crate) const RANDOM_RUNS: usize = 8;

/// **The full level** (`MALLARD_HARDEN=full` in the environment; the secure build only). The
/// default secure level keeps every mitigation whose cost is small; this one adds those that
/// cost more than the rest together: `fill_freed`, `quarantine` and `canaries`. The level is
/// read once, by `init_level`, which every way to a process's first block passes through
/// (`alloc`'s slow paths call it), since a block must be freed at the level it was allocated
/// at; until then `full` says no.
#[inline(always)]
pub(crate) fn full() -> bool {
    SECURE && LEVEL.load(Ordering::Relaxed) == LEVEL_FULL
}

const LEVEL_UNSET: u8 = 0;
const LEVEL_DEFAULT: u8 = 1;
const LEVEL_FULL: u8 = 2;
static LEVEL: AtomicU8 = AtomicU8::new(LEVEL_UNSET);

/// Chooses the level from `MALLARD_HARDEN` (`full`, or `default`/unset) if that is not done
/// yet, and says whether it is the full one. A value it does not know, or `full` outside the
/// secure build, is reported on one line and the default kept.
#[inline]
pub(crate) fn init_level() -> bool {
    if !SECURE {
        return false;
    }
    if LEVEL.load(Ordering::Relaxed) == LEVEL_UNSET {
        choose_level();
    }
    full()
}

#[cold]
#[inline(never)]
fn choose_level() {
    let level = match crate::os::env(c"MALLARD_HARDEN") {
        None | Some(b"") | Some(b"default") => LEVEL_DEFAULT,
        Some(b"full") => LEVEL_FULL,
        Some(_) => {
            crate::misuse::warn("MALLARD_HARDEN is not `default` or `full`; keeping the default");
            LEVEL_DEFAULT
        }
    };
    let _ = LEVEL.compare_exchange(LEVEL_UNSET, level, Ordering::Relaxed, Ordering::Relaxed);
}

/// **Freed blocks filled** (full level). A block of a page class is overwritten with zeros
/// when it is freed (`alloc::quarantine::fill_and_keep`), so a use after free reads zeros instead of what
/// the block held (keys, pointers that would defeat ASLR), and a later allocation never hands
/// out the old contents. Chunks and huge blocks are not filled (their free memory is purged
/// to the OS after the purge delay; filling megabytes on every `free` would cost more than
/// the rest together). With `quarantine` it is most of the full level's cost: a block freed
/// long after its last use is pulled back into the cache to be zeroed.
#[inline(always)]
pub fn fill_freed() -> bool {
    full()
}

/// **A quarantine for freed small blocks** (full level). A freed block of up to
/// `QUARANTINE_MAX` bytes is not reused at once: it waits in its thread's ring of
/// `QUARANTINE_SLOTS` (`Heap::quarantine`), marked freed and filled, until that thread has
/// freed as many blocks again. A dangling pointer then points at a block nobody has been
/// given yet, so a use after free cannot reach the next object of its size, which is what
/// type-confusion exploits need; and when the block leaves the ring all of it is checked for
/// writes made after the free (`write to a freed block`). Blocks a thread frees into other
/// threads' pages wait in the freeing thread's ring. The ring is emptied when the thread
/// exits and by `collect`.
#[inline(always)]
pub fn quarantine() -> bool {
    full()
}
pub(crate) const QUARANTINE_SLOTS: usize = if SECURE { 64 } else { 0 };
pub(crate) const QUARANTINE_MAX: usize = crate::config::SMALL_MAX;

/// **Canaries after small blocks** (full level). A block of a page class is taken 8 bytes
/// larger than asked for, and its last word holds a secret per block (`small_canary`, its
/// first byte zero so a string overflow stops there), which `free` checks: an overflow past
/// the block's usable size is reported (`a block written past its end`). Chunks have a
/// canary in every build (`chunk::set_canary`); huge blocks a guard page (`HUGE_GUARD`).
#[inline(always)]
pub(crate) fn canaries() -> bool {
    full()
}
pub(crate) const CANARY: usize = 8;

/// The canary of page-class block `p` (see `canaries`).
#[inline]
pub(crate) fn small_canary(p: *const u8) -> usize {
    (mix(secret(SMALL_CANARY_SECRET) ^ p.addr()) & !0xff) | 0x100
}

/// **Inaccessible zero-size blocks.** `malloc(0)` (and `calloc` of nothing) returns a unique
/// address in a segment with nothing accessible after its header (`zero`), so a read or
/// write through it faults (SIGSEGV) instead of reaching a neighbour. It costs nothing on
/// other sizes: the direct table's entry for size 0 never has a page, so `malloc(0)` takes
/// the slow path, which looks for 0.
pub(crate) const ZERO_BLOCKS: bool = SECURE;

/// splitmix64: a small, fast generator for the secure build's random choices.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: usize) -> Rng {
        Rng(seed as u64)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0 as usize) as u64
    }
}

/// **Sealed chunk headers.** A chunk header's size word (`chunk`) holds the size and flags in
/// its low 32 bits (chunks are under 4 MiB) and, in the secure build, a checksum of them, the
/// header's address and a per-process secret in its high 32 bits. Every read checks it, so a
/// size or flag written by an overflow is detected (`corrupted chunk header`) instead of
/// steering a split or a coalesce; forging one needs the secret.
pub(crate) const SEALED_HEADERS: bool = SECURE;

/// The checksum of size word `v` (low 32 bits) of the header at `c`.
#[inline]
fn header_check(c: *mut u8, v: usize) -> usize {
    let x = (v ^ c.addr().rotate_left(32) ^ secret(HEADER_SECRET)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x >> 32 << 32
}

/// The word to store as the size word `v` of the header at `c`.
#[inline]
pub(crate) fn seal_header(c: *mut u8, v: usize) -> usize {
    if !SEALED_HEADERS {
        return v;
    }
    debug_assert!(v >> 32 == 0);
    v | header_check(c, v)
}

/// The size word of the header at `c` from its stored `word`: `None` for a word that does not
/// carry its checksum (a corrupted header, or a pointer that is not a block at all, whose
/// "header" is any 16 bytes).
#[inline]
pub(crate) fn try_open_header(c: *mut u8, word: usize) -> Option<usize> {
    if !SEALED_HEADERS {
        return Some(word);
    }
    let v = word & 0xffff_ffff;
    (word == v | header_check(c, v)).then_some(v)
}

/// **A guard page between a segment's header and its data.** The header (page map, page
/// states, registry links) fills the start of the segment's first 64 KiB slice, and no block
/// is ever placed in that slice; its last OS page is made inaccessible when the segment is
/// mapped, so a write running backwards out of the segment's first block faults before it
/// reaches the metadata (the SIGSEGV of `the_header_guard_page_faults_in_the_secure_build`).
/// Huge blocks have one too; `huge` lifts it around an `mremap` (which moves whole mappings).
pub const HEADER_GUARD: bool = SECURE;

/// **A guard page after each huge block.** A huge block's usable size ends at the OS page
/// boundary after the size asked for, and the page there is made inaccessible, so an overflow
/// out of the block faults instead of running through the rest of its mapping (up to a
/// segment of rounding) into whatever is mapped next. `huge` moves the guard when the block
/// grows or shrinks in place, and lifts it around an `mremap`. An overflow smaller than the
/// rounding to the OS page goes unseen (as in hardened_malloc).
pub const HUGE_GUARD: bool = SECURE;

/// A per-process secret for `purpose`, drawn from the kernel on first use. The secrets live
/// in the library's data, never in memory a block can reach, and no two are related, so a
/// free mark read from a freed block tells nothing of the link keys or header checksums.
#[inline(always)]
fn secret(purpose: usize) -> usize {
    match SECRETS[purpose].load(Ordering::Relaxed) {
        0 => draw_secret(purpose),
        s => s,
    }
}

static SECRETS: [AtomicUsize; 7] = [const { AtomicUsize::new(0) }; 7];

#[cold]
#[inline(never)]
fn draw_secret(purpose: usize) -> usize {
    let new = crate::os::random_word() | 1;
    match SECRETS[purpose].compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => new,
        Err(won) => won,
    }
}
const LINK_SECRET: usize = 0;
const MARK_SECRET: usize = 1;
const HEADER_SECRET: usize = 2;
const CHUNK_LINK_SECRET: usize = 3;
const CANARY_SECRET: usize = 4;
const BLOCK_MARK_SECRET: usize = 5;
const SMALL_CANARY_SECRET: usize = 6;

/// A 64-bit mix (the finaliser of splitmix64, which `Rng` uses too).
#[inline]
fn mix(mut z: usize) -> usize {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value that tells apart each start of the page whose header is at `page_addr` (it starts
/// again each time it serves a class): its key and mark come from it, so the encoded links and
/// marks a former use left in the memory (which a new block of another size may show) are
/// worth nothing now.
pub(crate) fn page_salt(page_addr: usize) -> usize {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    page_addr ^ mix(STARTS.fetch_add(1, Ordering::Relaxed))
}

/// The secret of a page started with `salt` (`page_salt`; 0 unless `ENCODED_LINKS`).
pub(crate) fn page_key(salt: usize) -> usize {
    if !ENCODED_LINKS {
        return 0;
    }
    mix(secret(LINK_SECRET) ^ salt) | 1
}

/// The key of the chunk heap's free-list links (0 unless `ENCODED_LINKS`).
#[inline]
pub(crate) fn chunk_key() -> usize {
    if !ENCODED_LINKS {
        return 0;
    }
    secret(CHUNK_LINK_SECRET)
}

/// **A free mark per block.** In the secure build each free block carries its own mark,
/// `mix(block ^ page mark) ^ secret` (`Page::mark_of`), instead of its page's: a mark read
/// from a freed block through a dangling pointer cannot be copied into a live block of the
/// page to make a forged free-list link to it pass `Page::pop`'s check (a block that does
/// not carry its mark is not free). It costs a few multiplies on each `malloc` and `free`.
pub(crate) const BLOCK_MARKS: bool = SECURE;

/// The free mark of block `b` of a page whose mark is `page_mark`: in the secure build a
/// folded multiply (the high and low halves of a 128-bit product, xored) of the address
/// mixed with the page's secret, by a secret multiplier of the process. One multiply on each
/// `malloc` and `free`; recovering the secrets from marks read through dangling pointers is
/// not a matter of undoing a few linear steps.
#[inline(always)]
pub(crate) fn block_mark(page_mark: usize, b: usize) -> usize {
    if !BLOCK_MARKS {
        return page_mark;
    }
    // The secret is drawn before any page has a mark (`page_mark`), so no test for it here.
    let p = ((b ^ page_mark) as u128).wrapping_mul(SECRETS[BLOCK_MARK_SECRET].load(Ordering::Relaxed) as u128);
    (p as usize ^ (p >> 64) as usize) | 1
}

/// The canary after the block of in-use chunk `c` (every build): secret, per chunk, and with
/// no zero byte, so a write of a zero byte (a string's terminator) always changes it, and of any
/// other byte unless it matches the secret one there.
#[inline]
pub(crate) fn chunk_canary(c: *mut u8) -> usize {
    mix(secret(CANARY_SECRET) ^ c.addr()) | 0x0101_0101_0101_0101
}

/// The free mark of a page started with `salt` (`page_salt`), in every build: odd (so never a
/// pointer) and per page, from a secret of its own.
pub(crate) fn page_mark(salt: usize) -> usize {
    if BLOCK_MARKS {
        secret(BLOCK_MARK_SECRET);
    }
    mix(secret(MARK_SECRET) ^ salt.rotate_left(17)) | 1
}

/// The word stored in free block `slot` to link it to `next`.
#[inline(always)]
pub(crate) fn encode_link(key: usize, slot: *mut Block, next: *mut Block) -> *mut Block {
    if !ENCODED_LINKS {
        return next;
    }
    next.map_addr(|a| (a ^ slot.addr() ^ key).rotate_left((key >> 58) as u32))
}

/// The next block's address from the word stored in free block `slot`.
#[inline(always)]
pub(crate) fn decode_link(key: usize, slot: *mut Block, word: *mut Block) -> *mut Block {
    if !ENCODED_LINKS {
        return word;
    }
    word.map_addr(|w| w.rotate_right((key >> 58) as u32) ^ slot.addr() ^ key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_header_opens_to_its_size_and_differs_by_address() {
        let (c1, c2) = (
            core::ptr::without_provenance_mut::<u8>(0x7f00_0001_0000),
            core::ptr::without_provenance_mut::<u8>(0x7f00_0001_0040),
        );
        let v = 0x1_0010 | 1;
        assert_eq!(try_open_header(c1, seal_header(c1, v)), Some(v));
        if SEALED_HEADERS {
            assert_ne!(seal_header(c1, v), v, "the check bits are set");
            assert_ne!(seal_header(c1, v), seal_header(c2, v), "a header copied elsewhere does not check");
            assert_ne!(seal_header(c1, v), seal_header(c1, v + 16), "another size, another check");
        } else {
            assert_eq!(seal_header(c1, v), v);
        }
    }

    #[test]
    fn the_generator_depends_on_its_seed() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(2));
        let (x, y): (Vec<u64>, Vec<u64>) = (0..8).map(|_| (a.next_u64(), b.next_u64())).unzip();
        assert_ne!(x, y);
        assert!(x.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn a_link_decodes_to_what_was_encoded_and_is_hidden_when_secure() {
        let key = page_key(page_salt(0x7f00_1234_5000));
        let slot = core::ptr::without_provenance_mut::<Block>(0x7f00_1234_6040);
        for next in [core::ptr::null_mut(), core::ptr::without_provenance_mut::<Block>(0x7f00_1234_6080)] {
            let word = encode_link(key, slot, next);
            assert_eq!(decode_link(key, slot, word), next);
            assert_eq!(word == next, !ENCODED_LINKS, "the stored word is the address only when links are plain");
        }
    }
}
