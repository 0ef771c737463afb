//! `mallard lab gen` and `mallard replay` as a user runs them.

use std::path::PathBuf;
use std::process::Command;

fn mallard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mallard")).args(args).output().expect("runs mallard");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mallard-cli-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_generated_trace_replays_through_every_strategy() {
    let t = scratch("ramp.trace");
    let (ok, _, err) = mallard(&["lab", "gen", "--shape", "ramp", "--events", "5000", "-o", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = mallard(&["replay", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    for s in ["first-fit", "next-fit", "best-fit", "buddy"] {
        assert!(out.contains(&format!("| {s} |")), "{out}");
    }
    assert!(out.contains("5000 events"), "{out}");
    let (ok, out, _) = mallard(&["replay", "--strategies", "buddy", t.to_str().unwrap()]);
    assert!(ok && out.contains("| buddy |") && !out.contains("| first-fit |"), "{out}");
}

#[test]
fn a_truncated_or_foreign_trace_is_a_clear_error() {
    let t = scratch("cut.trace");
    let (ok, _, err) = mallard(&["lab", "gen", "--events", "1000", "-o", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = mallard(&["replay", t.to_str().unwrap()]);
    assert!(!ok && err.contains("cut.trace: at byte") && err.contains("ends inside"), "{err}");
    let (ok, _, err) = mallard(&["replay", "Cargo.toml"]);
    assert!(!ok && err.contains("Cargo.toml: at byte 0: not a mallard trace"), "{err}");
    let (ok, _, err) = mallard(&["replay", "--strategies", "worst-fit", t.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown strategy \"worst-fit\""), "{err}");
    let (ok, _, err) = mallard(&["lab", "gen", "--shape", "square", "-o", t.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown shape \"square\""), "{err}");
}
