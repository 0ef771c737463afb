//! The misuse suite (`tests/misuse/`): C programs that misuse the heap the way buggy or hostile
//! programs do, each run in a child process under glibc's malloc, under `libmallard.so`, and
//! under the secure build (`libmallard_secure.so`, feature `secure`) at its default level and
//! at its full level (`MALLARD_HARDEN=full`). The first lines of each program state the
//! outcome per allocator (see `tests/misuse/misuse.h`); this test holds every allocator to
//! them, and holds SECURITY.md's table to the programs.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The glibc release whose outcomes the programs state (messages and checks change between
/// releases; on another one the glibc column is not checked).
const GLIBC: &str = "2.36";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Killed by SIGABRT; with text, the text is on stderr.
    Abort(Option<String>),
    Segv,
    /// Killed by SIGABRT or SIGSEGV: which one depends on where ASLR put things.
    Crash,
    Exploited,
    Harmless,
}

impl Outcome {
    fn parse(s: &str) -> Result<Outcome, String> {
        let s = s.trim();
        match s {
            "abort" => Ok(Outcome::Abort(None)),
            "segv" => Ok(Outcome::Segv),
            "crash" => Ok(Outcome::Crash),
            "exploited" => Ok(Outcome::Exploited),
            "harmless" => Ok(Outcome::Harmless),
            _ => match s.strip_prefix("abort \"").and_then(|r| r.strip_suffix('"')) {
                Some(text) => Ok(Outcome::Abort(Some(text.to_string()))),
                None => Err(format!("unknown outcome `{s}`")),
            },
        }
    }

    /// As SECURITY.md shows it.
    fn cell(&self) -> String {
        match self {
            Outcome::Abort(None) => "abort".into(),
            Outcome::Abort(Some(t)) => format!("abort: `{t}`"),
            Outcome::Segv => "SIGSEGV".into(),
            Outcome::Crash => "SIGABRT or SIGSEGV".into(),
            Outcome::Exploited => "**exploited**".into(),
            Outcome::Harmless => "harmless".into(),
        }
    }
}

struct Case {
    name: String,
    source: PathBuf,
    /// The comment's first sentence: what the program does.
    what: String,
    glibc: Outcome,
    mallard: Outcome,
    secure: Outcome,
    /// The secure build at its full level (as `secure` unless the program says).
    full: Outcome,
}

fn cases() -> Vec<Case> {
    let dir = support::workspace().join("tests/misuse");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/misuse")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|source| {
            let text = std::fs::read_to_string(&source).expect("read a misuse program");
            let name = source.file_stem().unwrap().to_string_lossy().into_owned();
            let stated = |who: &str| {
                let prefix = format!("// outcome {who}:");
                let line = text.lines().find_map(|l| l.strip_prefix(&prefix))?;
                Some(Outcome::parse(line).unwrap_or_else(|e| panic!("{name}.c: {e}")))
            };
            let outcome = |who: &str| stated(who).unwrap_or_else(|| panic!("{name}.c: no `// outcome {who}:` line"));
            let comment = text.split("/*").nth(1).and_then(|c| c.split("*/").next()).unwrap_or("");
            let comment = comment
                .lines()
                .map(|l| l.trim().trim_start_matches('*'))
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ");
            let what = comment.split_inclusive(". ").next().unwrap_or(&comment).trim().to_string();
            Case {
                glibc: outcome("glibc"),
                mallard: outcome("mallard"),
                secure: outcome("mallard-secure"),
                full: stated("mallard-secure-full").unwrap_or_else(|| outcome("mallard-secure")),
                name,
                source,
                what,
            }
        })
        .collect()
}

fn compile(case: &Case, dir: &Path) -> PathBuf {
    let exe = dir.join(&case.name);
    let out = support::output(
        Command::new("gcc")
            .args(["-O1", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror"])
            .arg(&case.source)
            .arg("-o")
            .arg(&exe),
    );
    assert!(out.status.success(), "compiling {}.c failed:\n{}", case.name, String::from_utf8_lossy(&out.stderr));
    exe
}

struct Ran {
    signal: Option<i32>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `exe` with `preload` (none: glibc) and `full` (`MALLARD_HARDEN=full`), core dumps
/// off, killed after 20 s.
fn run(exe: &Path, preload: Option<&Path>, full: bool) -> Ran {
    let dir = exe.parent().unwrap();
    let tag = preload.map_or("glibc".to_string(), |p| p.file_stem().unwrap().to_string_lossy().into_owned())
        + if full { "-full" } else { "" };
    let (out, err) = (dir.join(format!("{tag}.stdout")), dir.join(format!("{tag}.stderr")));
    let mut cmd = Command::new(exe);
    cmd.env_remove("LD_PRELOAD")
        .env_remove("MALLARD_HARDEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    if full {
        cmd.env("MALLARD_HARDEN", "full");
    }
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{} under {tag} ran for 20 s", exe.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ran { signal: status.signal(), code: status.code(), stdout: read(&out), stderr: read(&err) }
}

/// Whether `ran` is `want`; for mallard, an abort must be one line `mallard: … at 0x…` that
/// says TEXT.
fn check(case: &str, who: &str, want: &Outcome, ran: &Ran, mallard: bool) -> Result<(), String> {
    let ok = match want {
        Outcome::Abort(text) => {
            ran.signal == Some(libc::SIGABRT)
                && match text {
                    None => true,
                    Some(t) if mallard => {
                        let lines: Vec<&str> = ran.stderr.lines().collect();
                        lines.len() == 1
                            && lines[0].starts_with("mallard: ")
                            && lines[0].contains(t.as_str())
                            && lines[0].contains(" at 0x")
                    }
                    Some(t) => ran.stderr.contains(t.as_str()),
                }
        }
        Outcome::Segv => ran.signal == Some(libc::SIGSEGV),
        Outcome::Crash => ran.signal == Some(libc::SIGABRT) || ran.signal == Some(libc::SIGSEGV),
        Outcome::Exploited => ran.code == Some(66),
        Outcome::Harmless => ran.code == Some(0),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{case} under {who}: want {want:?}, got signal {:?} exit {:?}\nstdout: {}\nstderr: {}",
            ran.signal, ran.code, ran.stdout, ran.stderr
        ))
    }
}

fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy().into_owned()
}

extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

#[test]
fn every_misuse_program_has_its_stated_outcome() {
    let cases = cases();
    assert!(cases.len() >= 12, "the suite lost programs: {}", cases.len());
    let secure = support::secure_lib();
    let check_glibc = glibc_version() == GLIBC;
    if !check_glibc {
        eprintln!("glibc {} here: its outcomes (stated for {GLIBC}) are not checked", glibc_version());
    }
    let mut failures = Vec::new();
    for case in &cases {
        let dir = support::scratch(&format!("misuse-{}", case.name));
        let exe = compile(case, &dir);
        let mut runs: Vec<(&str, Option<&Path>, bool, &Outcome, bool)> =
            vec![("mallard", Some(support::lib()), false, &case.mallard, true)];
        if check_glibc {
            runs.push(("glibc", None, false, &case.glibc, false));
        }
        runs.push(("mallard-secure", Some(secure), false, &case.secure, true));
        runs.push(("mallard-secure-full", Some(secure), true, &case.full, true));
        for (who, preload, full, want, mallard) in runs {
            if let Err(e) = check(&case.name, who, want, &run(&exe, preload, full), mallard) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{} outcome(s) differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// The table SECURITY.md shows, from the programs' stated outcomes.
fn table(cases: &[Case]) -> String {
    let mut t = format!("| program | what it does | glibc {GLIBC} | mallard | mallard secure | secure, full level |\n");
    t += "|---|---|---|---|---|---|\n";
    for c in cases {
        t += &format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            c.name,
            c.what,
            c.glibc.cell(),
            c.mallard.cell(),
            c.secure.cell(),
            c.full.cell()
        );
    }
    t
}

#[test]
fn security_md_tabulates_the_suite() {
    let doc = std::fs::read_to_string(support::workspace().join("SECURITY.md")).expect("SECURITY.md");
    let (start, end) = ("<!-- misuse table: generated from tests/misuse -->\n", "<!-- end of misuse table -->");
    let from = doc.find(start).expect("SECURITY.md has the table's start marker") + start.len();
    let to = doc[from..].find(end).expect("SECURITY.md has the table's end marker") + from;
    let want = table(&cases());
    assert!(doc[from..to] == want, "SECURITY.md's table is not the suite's; it should read:\n\n{want}");
}
