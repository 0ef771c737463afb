//! Builds the preload libraries that `mallard` carries inside it (src/embedded.rs):
//! libmallard.so, for `run` and `bench --process`, and libmallard_trace.so (feature `trace`,
//! with frame pointers, as scripts/build-trace builds it), for `record`.
//!
//! Their sources are embed/: links to the core's and the C library's sources and manifests,
//! so that they travel in this crate's package too (a cdylib cannot be a dependency). They are
//! copied into a workspace of their own in the target directory (embed/workspace.toml is its
//! Cargo.toml) and built there by a cargo of their own, one target directory per library (the
//! feature `trace` must not reach libmallard.so; the outer build holds the lock on its target
//! directory), with our flags whatever the outer build's: the libraries are the same from
//! `cargo build`, `cargo clippy` or `cargo install`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The file, its cargo features and its rustflags.
const LIBS: [(&str, &str, &str); 2] = [
    ("libmallard.so", "", ""),
    // Frame pointers: the recorder walks them to find call sites (mallard-capi's src/trace.rs).
    ("libmallard_trace.so", "trace", "-Cforce-frame-pointers=yes"),
];

fn main() {
    if let Err(e) = build() {
        eprintln!("error: building the libraries mallard embeds: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(var("OUT_DIR")?);
    let embed = manifest.join("embed");
    let work = shared_dir(&out);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // Two outer builds on one target directory (a build and a clippy run) take turns here.
    let lock_path = work.join("lock");
    let lock = fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;

    let tree = work.join("src");
    for krate in ["mallard", "mallard-capi"] {
        let from = embed.join(krate);
        copy_tree(&from, &tree.join(krate))?;
        // The real directories behind the links: cargo scans a directory for changes.
        for entry in read_dir(&from)? {
            let real = entry.canonicalize().map_err(|e| format!("{}: {e}", entry.display()))?;
            println!("cargo:rerun-if-changed={}", real.display());
        }
    }
    // (embed/ itself too: a link added or removed.)
    println!("cargo:rerun-if-changed={}", embed.display());
    let template = embed.join("workspace.toml");
    let root = read(&template)?
        .replace("@VERSION@", &var("CARGO_PKG_VERSION")?)
        .replace("@LICENSE@", &var("CARGO_PKG_LICENSE")?)
        .replace("@RUST_VERSION@", &var("CARGO_PKG_RUST_VERSION")?);
    write_if_changed(&tree.join("Cargo.toml"), root.as_bytes())?;
    // The versions of libc and cc this crate was locked with: the Cargo.lock in this crate's
    // package, or the repository's. The nested cargo keeps what it needs of it.
    if let Some(lock) =
        [manifest.join("Cargo.lock"), manifest.join("../../Cargo.lock")].into_iter().find(|p| p.is_file())
    {
        println!("cargo:rerun-if-changed={}", lock.display());
        write_if_changed(&tree.join("Cargo.lock"), &fs::read(&lock).map_err(|e| format!("{}: {e}", lock.display()))?)?;
    }

    let target = var("TARGET")?;
    let mut id = 0xcbf2_9ce4_8422_2325_u64; // FNV-1a over both libraries: the cache's name
    for (file, features, rustflags) in LIBS {
        let dir = work.join(if features.is_empty() { "default" } else { features });
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // (Not --offline: when the outer build resolved newer versions than the lock file, as a
        // `cargo install` without --locked does, the locked ones may still need a download.)
        cmd.args(["build", "--release", "-p", "mallard-capi", "--target", &target, "--manifest-path"])
            .arg(tree.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&dir);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        clean_env(&mut cmd);
        // (Set, even empty, it overrides RUSTFLAGS and the user's build.rustflags.)
        cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
        // Our stdout is for cargo's directives; what the nested cargo says goes to stderr.
        cmd.stdout(Stdio::from(std::io::stderr()));
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build of {file} in {} failed ({status})", tree.display()));
        }
        let built = dir.join(&target).join("release/libmallard.so");
        let bytes = fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))?;
        id = bytes.iter().fold(id, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        write_if_changed(&out.join(file), &bytes)?;
    }
    println!("cargo:rustc-env=MALLARD_EMBED_ID={}-{id:016x}", var("CARGO_PKG_VERSION")?);
    Ok(())
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("${name} is not set (this script is run by cargo)"))
}

/// Where the nested builds live: beside the outer build's profile directories
/// (`<target>/mallard-embed`, from OUT_DIR = `<target>/<profile>/build/<package>/out`), so that
/// the dev, test and release builds of the CLI share one warm build of each library; in OUT_DIR
/// itself if its layout is another.
fn shared_dir(out: &Path) -> PathBuf {
    match out.ancestors().nth(4) {
        Some(target) if out.ancestors().nth(2).and_then(Path::file_name) == Some("build".as_ref()) => {
            target.join("mallard-embed")
        }
        _ => out.join("embed"),
    }
}

/// Removes what cargo tells its build scripts and what would change the libraries: the nested
/// cargo is to build them as the repository's scripts do. (CARGO_HOME, the network and registry
/// settings and the jobserver, CARGO_MAKEFLAGS, are kept.)
fn clean_env(cmd: &mut Command) {
    const KEEP: [&str; 5] = ["CARGO_HOME", "CARGO_MAKEFLAGS", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTR"];
    const DROP: [&str; 11] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "RUSTC_LINKER",
    ];
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if (k.starts_with("CARGO_") && !KEEP.iter().any(|p| k.starts_with(p))) || DROP.contains(&k) {
            cmd.env_remove(&key);
        }
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", dir.display());
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(fail)? {
        v.push(entry.map_err(fail)?.path());
    }
    v.sort();
    Ok(v)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Copies `from` (following links) to `to`, writing only files that changed, so that the nested
/// cargo sees the rest as fresh, and removing what `from` does not have (a build from the
/// package must not use a file that a build from the repository left). `Cargo.toml.in` becomes
/// `Cargo.toml`, without its dev-dependencies (nothing here builds tests; they would have to be
/// in the lock file).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let sources = read_dir(from)?;
    for old in read_dir(to)? {
        let name = old.file_name().unwrap_or_default();
        let source = if name == "Cargo.toml" { from.join("Cargo.toml.in") } else { from.join(name) };
        if !sources.contains(&source) || source.is_dir() != old.is_dir() {
            let gone = if old.is_dir() { fs::remove_dir_all(&old) } else { fs::remove_file(&old) };
            gone.map_err(|e| format!("{}: {e}", old.display()))?;
        }
    }
    for path in sources {
        let name = path.file_name().unwrap_or_default();
        if path.is_dir() {
            copy_tree(&path, &to.join(name))?;
        } else if name == "Cargo.toml.in" {
            let mut keep = true;
            let mut text = String::new();
            for line in read(&path)?.lines() {
                if line.starts_with('[') {
                    keep = !line.contains("dev-dependencies");
                }
                if keep {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            write_if_changed(&to.join("Cargo.toml"), text.as_bytes())?;
        } else {
            write_if_changed(&to.join(name), &fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)?;
        }
    }
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
