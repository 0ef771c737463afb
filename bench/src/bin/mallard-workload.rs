//! One workload, once, on whatever C allocator the process has: `mallard-workload WORKLOAD
//! [--smoke]`. The binary keeps Rust's default global allocator, which is libc's `malloc`, so
//! the allocator under test is chosen from outside with `LD_PRELOAD` (see `process`). Prints
//! the wall time in milliseconds on stdout.

fn main() -> std::process::ExitCode {
    mallard_bench::workload_main()
}
