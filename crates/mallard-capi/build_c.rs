// The C sources that every build of mallard-capi's code links in: `new_delete.c` (the body of
// C++ `operator new`, plain C with unwind tables so that a `bad_alloc` thrown by libstdc++ can
// pass through it) and, with the `trace` feature, `trace_hooks.c`. Included by this crate's
// build.rs and by the fuzz target's rlib (fuzz/capi-rlib/build.rs), whose `src` is this
// crate's.

fn build_c_sources() {
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
