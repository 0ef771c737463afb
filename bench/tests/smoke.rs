//! The smoke run CI relies on: every workload runs on every allocator and yields a time.

use mallard_bench::{run, Options, ALLOCATORS, WORKLOADS};

#[test]
fn smoke_run_times_every_workload_on_every_allocator() {
    let report = run(&Options { smoke: true, ..Options::default() });
    let names: Vec<&str> = report.rows.iter().map(|r| r.workload.as_str()).collect();
    assert_eq!(names, WORKLOADS);
    for row in &report.rows {
        for allocator in ALLOCATORS {
            let ms = row.median(allocator).unwrap_or(f64::NAN);
            assert!(ms.is_finite() && ms > 0.0, "{} on {allocator}: {ms}", row.workload);
        }
    }
    let md = report.to_markdown();
    assert!(md.contains("| churn |") && md.contains("**geomean**"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(WORKLOADS.len()));
}
