//! Runs one workload once on one allocator, for profiling:
//! `workload <churn|mt-churn|prod-cons|vec-grow|large> <system|mallard|mimalloc>`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(w), Some(a)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: workload <workload> <allocator>");
        std::process::exit(2);
    };
    let ms = mallard_bench::run_named(a, w, false);
    println!("{w} on {a}: {ms:.1} ms");
    if a == "mallard" && std::env::var_os("MALLARD_STATS").is_some() {
        mallard::print_stats();
    }
}
