//! One workload, once, on whatever C allocator the process has: `mallard-workload WORKLOAD
//! [--smoke]`. The program uses Rust's `System` allocator, which is libc's `malloc`, so the
//! allocator under test is chosen from outside with `LD_PRELOAD` (see `process`). Prints the
//! wall time in milliseconds on stdout.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(workload) = args.first() else {
        eprintln!("usage: mallard-workload WORKLOAD [--smoke]  (workloads: {})", mallard_bench::WORKLOADS.join(", "));
        std::process::exit(2);
    };
    if !mallard_bench::WORKLOADS.contains(&workload.as_str()) {
        eprintln!("mallard-workload: unknown workload {workload:?}; known: {}", mallard_bench::WORKLOADS.join(", "));
        std::process::exit(2);
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let ms = mallard_bench::run_once(&mallard_bench::SYSTEM, workload, smoke);
    println!("{ms:.3}");
}
