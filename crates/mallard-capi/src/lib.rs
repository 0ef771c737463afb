//! `libmallard.so`: mallard as the C allocator of any program.
//!
//! Preload it (`LD_PRELOAD=libmallard.so`, or `mallard run -- CMD`), link it (`-lmallard`), or
//! dlopen it: it exports the whole C malloc family, the glibc `__libc_*` aliases, the glibc
//! extras (`malloc_trim`, `mallopt`, `mallinfo2`, `malloc_stats`, …) and every C++
//! `operator new`/`delete` (in `new_delete.c`, which needs no libstdc++ of its own), so that no
//! pointer is ever handed out by one allocator and freed by another.
//!
//! The contract is glibc's, function by function (see each one); the extended API for C users
//! is in `include/mallard.h`. Nothing here panics or unwinds across the C ABI, and nothing
//! allocates except through mallard itself.

mod cabi;
mod cxx;
mod options;
mod report;
#[cfg(feature = "trace")]
mod trace;

pub use cabi::*;

#[global_allocator]
static GLOBAL: core_alloc::Mallard = core_alloc::Mallard;
