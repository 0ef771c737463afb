//! The preload libraries built with this program (build.rs) and carried inside it, so that an
//! installed `mallard` needs no checkout. A library must be a file to be preloaded: on first use
//! each is written to a cache directory, `$XDG_CACHE_HOME/mallard/ID/` (else
//! `~/.cache/mallard/ID/`, else a private directory in the temporary directory), ID naming the
//! build, and used from there as long as the file holds exactly the embedded bytes: a
//! truncated or damaged file is written again.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// A library embedded in this program.
pub struct Library {
    name: &'static str,
    bytes: &'static [u8],
    /// The environment variable that names another file instead (for the error message).
    env: &'static str,
}

/// `libmallard.so`, for `run` and `bench --process`.
pub const MALLARD: Library = Library {
    name: "libmallard.so",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/libmallard.so")),
    env: "MALLARD_LIB",
};

/// `libmallard_trace.so`, for `record`.
pub const TRACE: Library = Library {
    name: "libmallard_trace.so",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/libmallard_trace.so")),
    env: "MALLARD_TRACE_LIB",
};

/// The version and a hash of both libraries: builds do not share (and overwrite) files.
const ID: &str = env!("MALLARD_EMBED_ID");

impl Library {
    /// The library's file in the cache, written first if it is missing or is not the
    /// embedded library byte for byte.
    pub fn path(&self) -> Result<PathBuf, String> {
        let mut errors = Vec::new();
        for (dir, private) in cache_dirs() {
            match self.install(&dir, private).and_then(|p| {
                crate::run::preloadable(&p).map_err(std::io::Error::other)?;
                Ok(p)
            }) {
                Ok(path) => return Ok(path),
                Err(e) => errors.push(format!("{}: {e}", dir.display())),
            }
        }
        Err(format!(
            "cannot write {} to a cache directory ({}); pass --lib or set {}",
            self.name,
            errors.join("; "),
            self.env
        ))
    }

    fn install(&self, dir: &Path, private: bool) -> std::io::Result<PathBuf> {
        if private {
            // In a directory anyone can write to, only one that is ours alone will do: another
            // user could otherwise swap the file between our check and the program's start.
            let base = dir.parent().unwrap_or(dir);
            std::fs::DirBuilder::new().mode(0o700).create(base).or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })?;
            let meta = base.symlink_metadata()?;
            // SAFETY: geteuid has no preconditions.
            if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
                return Err(std::io::Error::other("not a directory of ours alone"));
            }
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // From here on the real path (no links, absolute), and only if no one else can change
        // what it holds: otherwise another user could swap the library between our check and
        // the program's start (with root running on another user's HOME, say).
        let dir = &dir.canonicalize()?;
        trusted(dir)?;
        let path = dir.join(self.name);
        if self.is_at(&path) {
            return Ok(path);
        }
        // A file of our own, then renamed over: first runs at the same time each write a whole
        // file, and a program still running on a replaced file keeps its mapping. (A new file:
        // never through a link someone left under that name.)
        let tmp = dir.join(format!(".{}.{}", self.name, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, self.bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        if self.is_at(&path) {
            Ok(path)
        } else {
            Err(std::io::Error::other(format!("{} does not read back as written", self.name)))
        }
    }

    /// Whether `path` holds exactly the embedded bytes (a few MiB: the comparison costs about
    /// a millisecond, less than hashing them would).
    fn is_at(&self, path: &Path) -> bool {
        // A regular file only (opening a FIFO would wait for a writer).
        if !path.symlink_metadata().is_ok_and(|m| m.file_type().is_file()) {
            return false;
        }
        let Ok(file) = std::fs::File::open(path) else { return false };
        let mut held = Vec::with_capacity(self.bytes.len() + 1);
        file.take(self.bytes.len() as u64 + 1).read_to_end(&mut held).is_ok() && held == self.bytes
    }
}

/// Whether only we (and root) can change what `dir` (a real, absolute path) holds: it and every
/// directory above it belong to us or to root, and none is writable by others unless it is
/// sticky (like /tmp, where others cannot rename what is ours).
fn trusted(dir: &Path) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for d in dir.ancestors() {
        let m = d.symlink_metadata()?;
        let owner_ok = m.uid() == me || m.uid() == 0;
        let others_write = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
        if !m.is_dir() || !owner_ok || others_write {
            return Err(std::io::Error::other(format!(
                "{} is not safe to run a library from (owned by uid {}, mode {:o})",
                d.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Where the libraries may go, in order; `true` for the shared temporary directory, where the
/// directory must be private.
fn cache_dirs() -> Vec<(PathBuf, bool)> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let mut dirs = Vec::new();
    if let Some(cache) = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache"))) {
        dirs.push((cache.join("mallard").join(ID), false));
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    dirs.push((std::env::temp_dir().join(format!("mallard-{uid}")).join(ID), true));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_missing_short_long_or_changed_file_is_written_again() {
        let dir = std::env::temp_dir().join(format!("mallard-embedded-test-{}", std::process::id()));
        let lib = Library { name: "libx.so", bytes: b"0123456789", env: "X" };
        let path = lib.install(&dir, false).unwrap();
        assert_eq!(path, dir.join("libx.so"));
        for damaged in [&b"01234"[..], b"0123456789X", b"0123456780", b""] {
            std::fs::write(&path, damaged).unwrap();
            assert_eq!(lib.install(&dir, false).unwrap(), path);
            assert_eq!(std::fs::read(&path).unwrap(), lib.bytes, "after {damaged:?}");
        }
        // In the shared temporary directory, only a directory of ours alone will do.
        let private = dir.join("mallard-uid");
        let path = lib.install(&private.join("id"), true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), lib.bytes);
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = lib.install(&private.join("id"), true).unwrap_err();
        assert!(err.to_string().contains("not a directory of ours alone"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cache_others_can_write_to_or_a_fifo_is_never_used() {
        let dir = std::env::temp_dir().join(format!("mallard-embedded-trust-{}", std::process::id()));
        let lib = Library { name: "libx.so", bytes: b"0123456789", env: "X" };
        // Writable by others (not sticky) at any level: refused, however it got there.
        let shared = dir.join("shared");
        let path = lib.install(&shared.join("id"), false).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = lib.install(&shared.join("id"), false).unwrap_err();
        assert!(err.to_string().contains("is not safe to run a library from"), "{err}");
        // Sticky, like /tmp: others cannot rename what is ours there.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(lib.install(&shared.join("id"), false).unwrap(), path);
        // A FIFO where the library goes is replaced, not opened (that would wait for a writer).
        std::fs::remove_file(&path).unwrap();
        let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(lib.install(&shared.join("id"), false).unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), lib.bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ld_preload_can_name_only_absolute_paths_without_spaces_or_colons() {
        assert!(crate::run::preloadable(Path::new("/home/a/.cache/mallard/x/libmallard.so")).is_ok());
        for bad in ["/home/John Smith/libmallard.so", "/tmp/a:b/libmallard.so", "rel/libmallard.so", "/a\tb.so"] {
            let err = crate::run::preloadable(Path::new(bad)).unwrap_err();
            assert!(err.contains("LD_PRELOAD cannot name"), "{bad}: {err}");
        }
    }
}
