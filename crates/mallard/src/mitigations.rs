//! The secure build's mitigations (cargo feature `secure`; `libmallard_secure.so`), each
//! named here, with what it stops and what it costs. The default build keeps the checks of
//! `misuse` (double and invalid frees), which cost almost nothing; these cost more, and are
//! on only in the secure build.
//!
//! | mitigation | stops | where |
//! |---|---|---|
//! | `ENCODED_LINKS` | a use-after-free write of a free-list link steering a later `malloc` to an address of the attacker's choice | `encode_link`, `Page::next_of`, `Page::pop` |
//!
//! Planned (issue 7): guard pages, randomized allocation order within a page, checksummed
//! chunk headers, freed blocks filled and kept in a short quarantine, metadata apart from
//! the data. SECURITY.md says what each build catches today.

use crate::page::Block;

/// Whether this is the secure build.
pub const SECURE: bool = cfg!(feature = "secure");

/// **Encoded free-list links.** The link word of a free block (`Block::next`) holds the next
/// block's address encoded with a per-page secret (`Page::key`) and the block's own address:
/// `rotl(next ^ slot ^ key, key >> 58)`. A program that writes a chosen address there after
/// the free (a use after free) has written garbage once decoded, and `Page::pop` refuses a
/// decoded link that is not a block of the page, so the next `malloc` cannot return the
/// chosen address. The secret is per page and per process (derived from the process's random
/// free mark and the page's address), so a link read from one page does not reveal another's.
pub const ENCODED_LINKS: bool = SECURE;

/// The secret of the page whose header is at `page_addr`.
pub fn page_key(page_addr: usize) -> usize {
    if !ENCODED_LINKS {
        return 0;
    }
    let x = (crate::misuse::free_mark() ^ page_addr).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29) | 1
}

/// The word stored in free block `slot` to link it to `next`.
#[inline(always)]
pub fn encode_link(key: usize, slot: *mut Block, next: *mut Block) -> *mut Block {
    if !ENCODED_LINKS {
        return next;
    }
    next.map_addr(|a| (a ^ slot.addr() ^ key).rotate_left((key >> 58) as u32))
}

/// The next block's address from the word stored in free block `slot`.
#[inline(always)]
pub fn decode_link(key: usize, slot: *mut Block, word: *mut Block) -> *mut Block {
    if !ENCODED_LINKS {
        return word;
    }
    word.map_addr(|w| w.rotate_right((key >> 58) as u32) ^ slot.addr() ^ key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_decodes_to_what_was_encoded_and_is_hidden_when_secure() {
        let key = page_key(0x7f00_1234_5000);
        let slot = core::ptr::without_provenance_mut::<Block>(0x7f00_1234_6040);
        for next in [core::ptr::null_mut(), core::ptr::without_provenance_mut::<Block>(0x7f00_1234_6080)] {
            let word = encode_link(key, slot, next);
            assert_eq!(decode_link(key, slot, word), next);
            assert_eq!(word == next, !ENCODED_LINKS, "the stored word is the address only when links are plain");
        }
    }
}
