//! C++ `operator new` and `operator delete`, every form: plain, array, nothrow, sized, aligned.
//!
//! The `new` forms are one-jump trampolines into `new_delete.c`, which runs the new-handler
//! loop and throws `std::bad_alloc` (a C++ exception must not unwind through a Rust frame,
//! and a trampoline leaves none). They are Rust items so that the library exports them
//! (symbols of linked C code stay local to a Rust cdylib). The sized and aligned `delete`
//! forms check the size and alignment against the block (`alloc::check_size`, exactly:
//! `operator new` blocks never pass through `realloc`), as Scudo does: a mismatch is an
//! object deleted through the wrong type.

use core::ffi::c_void;

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
    ($($name:ident($($arg:ident: $ty:ty),*) => $how:expr;)*) => {
        $(
            /// A C++ `operator delete` form: frees `p` (see the module docs).
            ///
            /// # Safety
            /// As for `free`.
            #[no_mangle]
            pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
                let (size, align): (Option<usize>, usize) = $how;
                // SAFETY: forwarded.
                unsafe {
                    match size {
                        None if align <= 16 => crate::cabi::free(p),
                        None => free_aligned(p, align),
                        Some(size) => crate::cabi::free_checked(p, size, align, true, "sized delete"),
                    }
                }
            }
        )*
    };
}

/// An aligned `operator delete` without a size: the block must be aligned as said.
///
/// # Safety
/// As for `free`.
unsafe fn free_aligned(p: *mut c_void, align: usize) {
    if !p.is_null() && (!align.is_power_of_two() || !p.addr().is_multiple_of(align)) {
        core_alloc::raw::report_op("aligned delete", "a block allocated with another alignment", p.cast());
    }
    // SAFETY: forwarded.
    unsafe { crate::cabi::free(p) }
}

deletes! {
    _ZdlPv() => (None, 0);
    _ZdaPv() => (None, 0);
    _ZdlPvm(size: usize) => (Some(size), 16);
    _ZdaPvm(size: usize) => (Some(size), 16);
    _ZdlPvRKSt9nothrow_t(_nothrow: *const c_void) => (None, 0);
    _ZdaPvRKSt9nothrow_t(_nothrow: *const c_void) => (None, 0);
    _ZdlPvSt11align_val_t(align: usize) => (None, align);
    _ZdaPvSt11align_val_t(align: usize) => (None, align);
    _ZdlPvmSt11align_val_t(size: usize, align: usize) => (Some(size), align);
    _ZdaPvmSt11align_val_t(size: usize, align: usize) => (Some(size), align);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, _nothrow: *const c_void) => (None, align);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, _nothrow: *const c_void) => (None, align);
}
