//! A free block and its free mark.
//!
//! A free block's first word links to the next free block of its list; its second holds the
//! free mark from the moment the block is carved or freed until it is handed out again. The
//! mark is the cheap test for a double free and for a rewritten link (`crate::misuse`).

/// A free block: its first word links to the next free block, its second holds its free mark
/// (`Page::mark_of`) from the moment it is carved or freed until it is handed out again.
/// Every size class has room for both (16 bytes at least).
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
    pub(crate) mark: usize,
}

/// The second word of block `b`, for the free-mark test (`crate::misuse`).
///
/// A live block's second word may hold bytes the program never initialized (padding, a
/// moved `MaybeUninit`); reading them as an integer is undefined behaviour in Rust's model,
/// which the optimizer could exploit once the allocator is inlined into its caller. Natively
/// the load is therefore `os::load_any_bits`, whose result is whatever bits are there. Miri can run no assembly and would flag the read: it gets 0, a value that never
/// equals the mark, so double frees go unseen there (the misuse tests run natively).
///
/// # Safety
/// `b` points at a block of at least 16 bytes.
#[inline(always)]
pub(crate) unsafe fn read_mark(b: *const Block) -> usize {
    #[cfg(not(miri))]
    // SAFETY: the block's second word is mapped memory of the block.
    unsafe {
        crate::os::load_any_bits::<8>(b.cast())
    }
    #[cfg(miri)]
    {
        let _ = b;
        0
    }
}

/// Marks block `b` freed: writes the free mark into its second word. Not under Miri: there the
/// pointer a program frees may carry a tag that reaches only the bytes it stored (a `Box` of 8
/// bytes), and a write through the allocator's own pointer would clash with the caller's
/// protected `Box` argument; Miri never reads the mark anyway (see `read_mark`).
///
/// # Safety
/// `b` is a block of at least 16 bytes that the program is freeing.
#[inline(always)]
pub(crate) unsafe fn write_mark(b: *mut Block, mark: usize) {
    #[cfg(not(miri))]
    // SAFETY: per the contract.
    unsafe {
        (*b).mark = mark
    };
    #[cfg(miri)]
    let _ = (b, mark);
}

const _: () = assert!(core::mem::size_of::<Block>() == 16);
