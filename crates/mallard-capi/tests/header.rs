//! `include/mallard.h`: compiles with warnings as errors in C and C++, and a program that
//! includes it and links with `-lmallard` (no preload) runs every function it declares.

mod support;

use std::process::Command;

fn compile(compiler: &str, extra: &[&str], out: &std::path::Path) {
    let root = support::workspace();
    let lib_dir = support::lib().parent().unwrap().to_path_buf();
    let status = Command::new(compiler)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(extra)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/cases/header.c"))
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lmallard")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler} (install build-essential): {e}"));
    assert!(status.success(), "{compiler} failed on include/mallard.h");
}

#[test]
fn the_header_compiles_links_and_works() {
    let dir = support::scratch("header");
    for (compiler, extra, name) in
        [("cc", &["-std=c11"][..], "header-c"), ("c++", &["-x", "c++", "-std=c++17"][..], "header-cxx")]
    {
        let exe = dir.join(name);
        compile(compiler, extra, &exe);
        let out = Command::new(&exe).env_remove("LD_PRELOAD").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        assert!(stderr.contains("mallard statistics"), "mallard_stats_print wrote nothing: {stderr}");
    }
}

#[test]
fn the_header_readme_and_library_agree_on_the_defaults() {
    // The purge delay: the header's comment, README's option table and the library's
    // constant say the same number of milliseconds.
    let root = support::workspace();
    let header = std::fs::read_to_string(root.join("include/mallard.h")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let config = std::fs::read_to_string(root.join("crates/mallard/src/config.rs")).unwrap();
    let constant = config
        .lines()
        .find_map(|l| l.strip_prefix("pub const PURGE_DELAY_MS: u64 = "))
        .and_then(|v| v.strip_suffix(';'))
        .expect("PURGE_DELAY_MS in config.rs");
    let in_header = header
        .lines()
        .find(|l| l.contains("MALLARD_PURGE_DELAY_MS="))
        .and_then(|l| l.split("(default ").nth(1))
        .and_then(|v| v.split(')').next())
        .expect("the header documents MALLARD_PURGE_DELAY_MS");
    assert_eq!(in_header, constant, "include/mallard.h");
    let row = readme.lines().find(|l| l.starts_with("| `MALLARD_PURGE_DELAY_MS` |")).expect("README's option table");
    assert!(row.contains(&format!("| `{constant}` |")), "README: {row}");
}
