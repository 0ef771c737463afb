//! `_exit` and `_Exit`: they end the process without running `atexit` handlers, and they are
//! how a child made by `fork` usually leaves (and how dash ends every shell). What the library
//! writes at exit, it writes here too: the exit record for `mallard run` (`report.rs`) and, in
//! the recording library, the trace (`trace.rs`). Then the process ends as libc's would.

use core::ffi::c_int;

fn before_exit() {
    crate::report::write_at_exit();
    #[cfg(feature = "trace")]
    crate::trace::mallard_trace_end();
}

/// Ends the process with `status`, after the library's exit records.
#[no_mangle]
pub extern "C" fn _exit(status: c_int) -> ! {
    before_exit();
    loop {
        // SAFETY: exit_group ends every thread of the process; it does not return.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

/// The same as `_exit` (C99's name).
#[no_mangle]
#[allow(non_snake_case)]
pub extern "C" fn _Exit(status: c_int) -> ! {
    _exit(status)
}
