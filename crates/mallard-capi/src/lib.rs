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

/// Exports C functions under the names a program calls: each `$name` is a one-jump trampoline
/// into `$target`, a function of the crate's C code (symbols of linked C code stay local to a
/// Rust cdylib; a jump leaves no Rust frame, and passes every argument, variadic ones too).
macro_rules! trampolines {
    ($($name:ident => $target:ident;)*) => {
        extern "C" {
            $( fn $target(); )*
        }
        $(
            /// A jump into the C function that does this job (see the module docs).
            #[unsafe(naked)]
            #[no_mangle]
            pub extern "C" fn $name() {
                #[cfg(target_arch = "x86_64")]
                core::arch::naked_asm!("jmp {f}", f = sym $target);
                #[cfg(target_arch = "aarch64")]
                core::arch::naked_asm!("b {f}", f = sym $target);
            }
        )*
    };
}

mod cabi;
mod cxx;
mod exit;
mod options;
mod report;
#[cfg(feature = "trace")]
mod trace;

pub use cabi::*;

#[global_allocator]
static GLOBAL: core_alloc::Mallard = core_alloc::Mallard;
