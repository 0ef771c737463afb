//! The one-process-per-run runner: every workload runs as its own process under each
//! allocator (glibc and libmallard.so here) and yields a time and a peak RSS.

use mallard_bench::process::{self, Allocator};
use mallard_bench::WORKLOADS;
use std::path::{Path, PathBuf};
use std::process::Command;

/// libmallard.so, built into a target directory of its own (a nested cargo on the outer
/// build's directory would wait for its lock).
fn mallard_lib() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let target = root.join("target/capi-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "mallard-capi", "--target-dir"])
        .arg(&target)
        .current_dir(&root)
        .status()
        .expect("run cargo")
        .success();
    assert!(ok, "building libmallard.so failed");
    target.join("release/libmallard.so")
}

#[test]
fn every_workload_runs_in_its_own_process_under_each_allocator() {
    let exe = Path::new(env!("CARGO_BIN_EXE_mallard-workload"));
    let allocators = vec![
        Allocator { name: "glibc".into(), preload: None },
        Allocator { name: "mallard".into(), preload: Some(mallard_lib()) },
    ];
    let mut lines = 0;
    let report = process::run(exe, WORKLOADS, &allocators, 5, true, &mut |_| lines += 1).unwrap();
    assert_eq!(report.rounds, 1, "smoke runs once");
    assert_eq!(lines, WORKLOADS.len() * 2, "one progress line per run");
    for (w, per_alloc) in report.samples.iter().enumerate() {
        for (a, s) in per_alloc.iter().enumerate() {
            assert_eq!(s.len(), 1);
            assert!(s[0].ms > 0.0 && s[0].peak_rss_kib > 1000, "{} on {}: {:?}", WORKLOADS[w], allocators[a].name, s);
        }
    }
    let md = report.to_markdown();
    assert!(md.contains("| churn |") && md.contains("peak RSS") && md.contains("geomean ratio to glibc"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["workloads"].as_array().map(Vec::len), Some(WORKLOADS.len()));
}

#[test]
fn a_failing_run_is_an_error_naming_it() {
    let exe = Path::new(env!("CARGO_BIN_EXE_mallard-workload"));
    let glibc = Allocator { name: "glibc".into(), preload: None };
    let err = process::run_one(exe, "no-such-workload", true, &glibc).unwrap_err();
    assert!(err.contains("no-such-workload") && err.contains("unknown workload"), "{err}");
}

#[test]
fn the_c_allocators_found_include_glibc_and_mallard() {
    let found = process::detect(Path::new("/x/libmallard.so"));
    assert_eq!(found[0].name, "glibc");
    assert!(found[0].preload.is_none());
    assert_eq!(found[1].preload.as_deref(), Some(Path::new("/x/libmallard.so")));
}
