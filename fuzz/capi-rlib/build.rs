//! Builds the C sources of mallard-capi for the rlib, as crates/mallard-capi/build.rs does
//! for libmallard.so: `new_delete.c` (the body of C++ `operator new`) and, with the `trace`
//! feature, `trace_hooks.c`. Not `no_unwinder.c`: it is there to keep libgcc_s out of the
//! shared library, and linked into a fuzz target its stand-in unwinder would leave the target's
//! crash reports without a backtrace. Nor the shared library's link arguments.

fn main() {
    println!("cargo:rerun-if-changed=src/new_delete.c");
    println!("cargo:rerun-if-changed=src/trace_hooks.c");
    cc::Build::new()
        .file("src/new_delete.c")
        .flag("-fexceptions")
        .warnings(true)
        .extra_warnings(true)
        .compile("mallard_new_delete");
    if std::env::var_os("CARGO_FEATURE_TRACE").is_some() {
        cc::Build::new().file("src/trace_hooks.c").warnings(true).extra_warnings(true).compile("mallard_trace_hooks");
    }
}
