//! Names the target in the compile error of an unsupported one (see `lib.rs`): a `cfg` cannot
//! be turned into text, the target's name in an environment variable can.
fn main() {
    println!("cargo:rustc-env=MALLARD_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
}
