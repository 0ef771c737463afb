//! The one-process-per-run runner: every workload, Rust program and real program runs as its
//! own process under each allocator and yields a time and a peak RSS.

use mallard_bench::process::{self, Allocator, Figure, Job, ProcessReport, Sample};
use mallard_bench::{programs, RUST_PROGRAMS, WORKLOADS};
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

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mallard-workload"))
}

#[test]
fn every_job_runs_in_its_own_process_under_each_allocator_that_can_run_it() {
    let allocators = vec![
        Allocator::c("glibc", None),
        Allocator::c("mallard", Some(mallard_lib())),
        Allocator {
            name: "mimalloc-crate".into(),
            preload: None,
            exe: Some(env!("CARGO_BIN_EXE_mallard-workload-mimalloc").into()),
            env: Vec::new(),
        },
    ];
    let scratch = std::env::temp_dir().join(format!("mallard-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let prepared = programs::prepare(&scratch, true).unwrap();
    assert!(prepared.skipped.is_empty(), "python3, sqlite3 and git are test dependencies: {:?}", prepared.skipped);
    let mut jobs: Vec<Job> = [WORKLOADS, RUST_PROGRAMS].concat().iter().map(|w| Job::Workload(w.to_string())).collect();
    jobs.extend(prepared.ready.into_iter().map(Job::Program));
    let mut seen = Vec::new();
    let report = process::run(exe(), &jobs, &allocators, 5, true, &mut |p| seen.push((p.done, p.total))).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();

    assert_eq!(report.rounds, 1, "smoke runs once");
    let cells = jobs.len() * 3 - programs::REAL_PROGRAMS.len(); // the crate skips the programs
    assert_eq!(seen.len(), cells, "one progress report per run");
    assert_eq!(seen.last(), Some(&(cells, cells)));
    for (w, per_alloc) in report.samples.iter().enumerate() {
        for (a, s) in per_alloc.iter().enumerate() {
            let program = programs::REAL_PROGRAMS.contains(&report.workloads[w].as_str());
            if program && a == 2 {
                assert!(s.is_empty(), "a crate allocator cannot run {}", report.workloads[w]);
                continue;
            }
            assert_eq!(s.len(), 1);
            assert!(
                s[0].ms > 0.0 && s[0].peak_rss_kib > 1000,
                "{} on {}: {:?}",
                report.workloads[w],
                allocators[a].name,
                s
            );
        }
    }
    let md = report.to_markdown();
    for name in ["| churn |", "| json |", "| python |", "| sqlite3 |", "| git |", "peak RSS", "geomean ratio to glibc"]
    {
        assert!(md.contains(name), "{name} missing from\n{md}");
    }
    assert!(md.contains("(15 rows)"), "the crate's geomean says it covers fewer rows:\n{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["workloads"].as_array().map(Vec::len), Some(jobs.len()));
    let svg = report.to_svg();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<title>").count(), 2 * cells, "one bar per run and figure");
}

#[test]
fn a_failing_run_is_an_error_naming_it() {
    let glibc = Allocator::c("glibc", None);
    let err = process::run_one(exe(), &Job::Workload("no-such-workload".into()), true, &glibc).unwrap_err();
    assert!(err.contains("no-such-workload") && err.contains("unknown workload"), "{err}");
    let missing = programs::Program { name: "tool".into(), argv: vec!["/nonexistent/tool".into()], env: vec![] };
    let err = process::run_one(exe(), &Job::Program(missing), true, &glibc).unwrap_err();
    assert!(err.contains("tool") && err.contains("cannot run"), "{err}");
}

#[test]
fn the_allocators_found_include_glibc_mallard_and_the_crates() {
    let found = process::detect(Path::new("/x/libmallard.so"));
    assert_eq!(found[0].name, "glibc");
    assert!(found[0].preload.is_none());
    assert_eq!(found[1].preload.as_deref(), Some(Path::new("/x/libmallard.so")));
    let crates: Vec<String> = process::crates(exe()).into_iter().map(|a| a.name).collect();
    assert_eq!(crates, ["mallard-crate", "mimalloc-crate", "jemalloc-crate"]);
}

/// A report with made-up medians: glibc, mallard, mimalloc on three workloads.
fn report(times: [[f64; 3]; 3], rss_mib: [[f64; 3]; 3]) -> ProcessReport {
    let samples = (0..3)
        .map(|w| {
            (0..3).map(|a| vec![Sample { ms: times[w][a], peak_rss_kib: (rss_mib[w][a] * 1024.0) as i64 }]).collect()
        })
        .collect();
    ProcessReport {
        meta: mallard_bench::report::Meta::collect(),
        rounds: 1,
        smoke: false,
        allocators: ["glibc", "mallard", "mimalloc"].map(|n| Allocator::c(n, None)).to_vec(),
        workloads: ["a", "b", "c"].map(String::from).to_vec(),
        samples,
    }
}

#[test]
fn the_targets_are_judged_from_the_medians() {
    let rss = [[10.0, 10.0, 10.0]; 3];
    // mallard at 0.9 × mimalloc everywhere and faster than glibc: every target met.
    let good = report([[100.0, 45.0, 50.0], [100.0, 90.0, 100.0], [100.0, 9.0, 10.0]], rss);
    let (g, n) = good.geomean_ratio(1, 2, Figure::Time);
    assert!((g - 0.9).abs() < 1e-9 && n == 3);
    let md = good.to_markdown();
    assert!(md.contains("geomean time ÷ mimalloc: 0.90 (target ≤ 0.95: met)"), "{md}");
    assert!(md.contains("geomean peak RSS ÷ mimalloc: 1.00 (target ≤ 1.00: met)"), "{md}");
    assert!(md.contains("no workload slower than glibc or more than 1.5 × the best: met"), "{md}");

    // Workload b slower than glibc, workload c at 2 × the best, RSS above mimalloc's.
    let bad = report(
        [[100.0, 45.0, 50.0], [100.0, 110.0, 100.0], [100.0, 20.0, 10.0]],
        [[10.0, 12.0, 10.0], [10.0, 12.0, 10.0], [10.0, 12.0, 10.0]],
    );
    let md = bad.to_markdown();
    assert!(md.contains("(target ≤ 0.95: missed)") && md.contains("peak RSS ÷ mimalloc: 1.20"), "{md}");
    assert!(md.contains("b: 1.10 × glibc") && md.contains("c: 2.00 × mimalloc (the best)"), "{md}");
    assert!(md.contains("| c | 100.0 (1.00) | 20.0 (0.20) | **10.0 (0.10)** |"), "{md}");
}

#[test]
fn a_childs_peak_rss_is_its_own_not_the_runners() {
    // The runner once used 64 MiB (a big Vec is its own mapping, so dropping it unmaps it).
    let big = vec![1u8; 64 << 20];
    assert_eq!(std::hint::black_box(&big)[12345], 1);
    drop(big);
    let s = process::run_one(exe(), &Job::Workload("churn".into()), true, &Allocator::c("glibc", None)).unwrap();
    assert!(s.peak_rss_kib < 32 << 10, "a small workload reported {} KiB: the runner's peak leaked in", s.peak_rss_kib);
}

#[test]
fn an_allocators_environment_reaches_its_runs() {
    let job = Job::Program(mallard_bench::programs::Program {
        name: "env-probe".into(),
        argv: ["sh", "-c", "test \"$MALLARD_BENCH_PROBE\" = yes"].map(Into::into).to_vec(),
        env: Vec::new(),
    });
    let mut with = Allocator::c("glibc", None);
    with.env.push(("MALLARD_BENCH_PROBE".into(), "yes".into()));
    assert!(process::run_one(exe(), &job, true, &with).is_ok(), "the variable is set for the run");
    assert!(process::run_one(exe(), &job, true, &Allocator::c("glibc", None)).is_err(), "and only for that allocator");
}
