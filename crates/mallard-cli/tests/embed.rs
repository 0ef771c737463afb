//! The libraries `mallard` embeds are built (build.rs) in a workspace of their own, whose
//! Cargo.toml is embed/workspace.toml: it must build them as the repository builds
//! libmallard.so.

use std::path::Path;

/// The lines of `section` (`[profile.release]`) in a manifest, up to the next section.
fn section(manifest: &str, name: &str) -> Vec<String> {
    manifest
        .lines()
        .skip_while(|l| l.trim() != name)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_embedded_libraries_are_built_with_the_repository_s_release_profile_and_edition() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read_to_string(dir.join("embed/workspace.toml")).unwrap();
    let Ok(repo) = std::fs::read_to_string(dir.join("../../Cargo.toml")) else {
        return; // built from the package, outside the repository: nothing to compare with
    };
    let profile = section(&repo, "[profile.release]");
    assert!(!profile.is_empty(), "the repository's Cargo.toml has no [profile.release]");
    assert_eq!(section(&ours, "[profile.release]"), profile);
    let edition = |m: &str| section(m, "[workspace.package]").into_iter().find(|l| l.starts_with("edition"));
    assert_eq!(edition(&ours), edition(&repo));
}
