//! C++ `operator new` and `operator delete`, every form: plain, array, nothrow, sized, aligned.
//!
//! The `new` forms are one-jump trampolines into `new_delete.c`, which runs the new-handler
//! loop and throws `std::bad_alloc` (a C++ exception must not unwind through a Rust frame,
//! and a trampoline leaves none). They are Rust items so that the library exports them
//! (symbols of linked C code stay local to a Rust cdylib). The `delete` forms ignore size and
//! alignment: every block knows its own.

use core::ffi::c_void;

macro_rules! trampolines {
    ($($name:ident => $target:ident;)*) => {
        extern "C" {
            $( fn $target(); )*
        }
        $(
            /// A C++ `operator new` form (see the module docs).
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

trampolines! {
    _Znwm => __mallard_cxx_Znwm;
    _Znam => __mallard_cxx_Znam;
    _ZnwmRKSt9nothrow_t => __mallard_cxx_ZnwmRKSt9nothrow_t;
    _ZnamRKSt9nothrow_t => __mallard_cxx_ZnamRKSt9nothrow_t;
    _ZnwmSt11align_val_t => __mallard_cxx_ZnwmSt11align_val_t;
    _ZnamSt11align_val_t => __mallard_cxx_ZnamSt11align_val_t;
    _ZnwmSt11align_val_tRKSt9nothrow_t => __mallard_cxx_ZnwmSt11align_val_tRKSt9nothrow_t;
    _ZnamSt11align_val_tRKSt9nothrow_t => __mallard_cxx_ZnamSt11align_val_tRKSt9nothrow_t;
}

macro_rules! deletes {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            /// A C++ `operator delete` form: frees `p`.
            ///
            /// # Safety
            /// As for `free`.
            #[no_mangle]
            pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
                $( let _ = $arg; )*
                // SAFETY: forwarded.
                unsafe { crate::cabi::free(p) }
            }
        )*
    };
}

deletes! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvm(size: usize);
    _ZdaPvm(size: usize);
    _ZdlPvRKSt9nothrow_t(nothrow: *const c_void);
    _ZdaPvRKSt9nothrow_t(nothrow: *const c_void);
    _ZdlPvSt11align_val_t(align: usize);
    _ZdaPvSt11align_val_t(align: usize);
    _ZdlPvmSt11align_val_t(size: usize, align: usize);
    _ZdaPvmSt11align_val_t(size: usize, align: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, nothrow: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, nothrow: *const c_void);
}
