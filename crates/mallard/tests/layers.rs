//! The core's modules are layered as DESIGN.md draws them: a module names (`crate::x`) only
//! modules of lower layers, so the modules form a DAG and a change to a lower layer cannot
//! depend on one above it. The layer list is read from DESIGN.md's "Layers" section, so the
//! document and the code cannot drift apart: every module of `src/` is listed there exactly
//! once, and every list entry is a module. (It reads files: not under Miri, whose isolation
//! forbids that, and which would find nothing here anyway.)
#![cfg(not(miri))]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers of DESIGN.md, bottom up: the numbered lines of its "## Layers" section, each
/// naming its modules in backticks before the first dash.
fn layers() -> Vec<Vec<String>> {
    let design = fs::read_to_string(Path::new(ROOT).join("../../DESIGN.md")).expect("DESIGN.md");
    let section = design.split("\n## Layers").nth(1).expect("DESIGN.md has a Layers section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut layers = Vec::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else { continue };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        assert_eq!(number.parse::<usize>().unwrap(), layers.len() + 1, "layers are numbered in order: {line}");
        let names = rest.split(" — ").next().unwrap_or(rest);
        let modules: Vec<String> = names.split('`').skip(1).step_by(2).map(str::to_owned).collect();
        assert!(!modules.is_empty(), "a layer line names its modules in backticks: {line}");
        layers.push(modules);
    }
    assert!(layers.len() >= 2, "DESIGN.md lists the layers");
    layers
}

/// Every module of `src/` (a file `x.rs`, and a directory `x/` whose files are all part of
/// module `x`) with the source of its files, comments removed.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(ROOT).join("src");
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("src/") {
        let path = entry.expect("an entry of src/").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 name").to_owned();
        if name == "lib" {
            continue; // the crate root: above every layer
        }
        let files = if path.is_dir() {
            let mut files: Vec<_> = walk(&path);
            files.sort();
            files
        } else {
            vec![path]
        };
        let code: String =
            files.iter().map(|f| strip_comments(&fs::read_to_string(f).expect("a source file"))).collect();
        // (`page.rs` and `page/` are one module.)
        modules.entry(name).or_insert_with(String::new).push_str(&code);
    }
    modules
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("a module directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The source without `//` comments (doc comments included: they may name any module).
fn strip_comments(source: &str) -> String {
    source.lines().map(|line| format!("{}\n", line.split("//").next().unwrap_or(""))).collect()
}

/// The modules that `code` names as `crate::x`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // (`$crate::`, `my_crate::`)
        }
        let rest = &code[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "`crate::{{` groups are not used (one `use` per module keeps the edges plain)");
        found.insert(name);
    }
    found
}

#[test]
fn every_module_uses_only_lower_layers() {
    let layers = layers();
    let modules = modules();
    let mut layer_of = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        for m in layer {
            assert!(layer_of.insert(m.clone(), i).is_none(), "`{m}` is listed twice in DESIGN.md");
            assert!(modules.contains_key(m), "DESIGN.md lists `{m}`, which is not a module of src/");
        }
    }
    let mut wrong = Vec::new();
    for (m, code) in &modules {
        let Some(&mine) = layer_of.get(m) else {
            wrong.push(format!("`{m}` is not in DESIGN.md's layer list"));
            continue;
        };
        for used in uses(code) {
            if used == *m {
                continue;
            }
            match layer_of.get(&used) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => wrong.push(format!(
                    "`{m}` (layer {}) uses `{used}` (layer {}): a module uses only lower layers",
                    mine + 1,
                    theirs + 1
                )),
                None => wrong.push(format!("`{m}` uses `crate::{used}`, which is not in the layer list")),
            }
        }
    }
    assert!(wrong.is_empty(), "the layers of DESIGN.md do not hold:\n{}", wrong.join("\n"));
}

#[test]
fn the_edge_reader_sees_paths_and_skips_comments() {
    let code = strip_comments(
        "use crate::page::Page; // crate::heap\n/// crate::alloc\nlet x = crate::os::now_ms();\n$crate::stats",
    );
    assert_eq!(uses(&code).into_iter().collect::<Vec<_>>(), ["os", "page"]);
}

#[test]
fn platform_code_is_in_os_only() {
    let mut found = Vec::new();
    for (m, code) in modules() {
        if m == "os" {
            continue;
        }
        for what in ["libc::", "asm!"] {
            if code.contains(what) {
                found.push(format!("`{m}` has `{what}`"));
            }
        }
    }
    assert!(found.is_empty(), "system calls and assembly belong in `os`:\n{}", found.join("\n"));
}
