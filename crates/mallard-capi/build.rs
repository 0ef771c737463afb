//! Builds the C sources (`build_c.rs`, shared with the fuzz target's rlib) and the stand-in
//! unwinder, and names the shared library.

include!("build_c.rs");

fn main() {
    build_c_sources();
    println!("cargo:rerun-if-changed=src/no_unwinder.c");
    println!("cargo:rerun-if-changed=build_c.rs");
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
