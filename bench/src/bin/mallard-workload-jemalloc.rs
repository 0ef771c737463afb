//! `mallard-workload` with the `tikv-jemallocator` crate as `#[global_allocator]`: how a Rust program that
//! links the allocator as a crate fares, next to the same code on a preloaded C library.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    mallard_bench::workload_main()
}
