//! Builds the body of C++ operator new (`src/new_delete.c`, plain C with unwind tables so
//! that a `bad_alloc` thrown by libstdc++ can pass through it) and names the shared library.

fn main() {
    println!("cargo:rerun-if-changed=src/new_delete.c");
    println!("cargo:rerun-if-changed=src/no_unwinder.c");
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
    cc::Build::new().file("src/no_unwinder.c").warnings(true).extra_warnings(true).compile("mallard_no_unwinder");
    // Programs linked with -lmallard record this name; dlclose must not unmap an allocator
    // whose blocks the program still holds.
    // The secure build is `libmallard_secure.so`, the recording one `libmallard_trace.so`
    // (scripts/build-secure and scripts/build-trace name the files).
    let name = if std::env::var_os("CARGO_FEATURE_SECURE").is_some() {
        "libmallard_secure.so"
    } else if std::env::var_os("CARGO_FEATURE_TRACE").is_some() {
        "libmallard_trace.so"
    } else {
        "libmallard.so"
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{name}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
