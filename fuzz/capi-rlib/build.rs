//! Builds the C sources of mallard-capi for the rlib with crates/mallard-capi's own
//! `build_c.rs`, as its build.rs does for libmallard.so. Not `no_unwinder.c`: it is there to
//! keep libgcc_s out of the shared library, and linked into a fuzz target its stand-in
//! unwinder would leave the target's crash reports without a backtrace. Nor the shared
//! library's link arguments.

include!("../../crates/mallard-capi/build_c.rs");

fn main() {
    build_c_sources();
    println!("cargo:rerun-if-changed=../../crates/mallard-capi/build_c.rs");
}
