//! Real programs run on each allocator: a CPython script (`PYTHONMALLOC=malloc`, so every
//! object goes through `malloc`), an sqlite3 workload and git repacking a generated
//! repository. Their inputs are made once per bench run, outside the timed part.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The real programs, in table order.
pub const REAL_PROGRAMS: &[&str] = &["python", "sqlite3", "git"];

/// A command line to time, with the environment it needs.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

/// dicts, lists, strings and json: the kind of code CPython spends its allocations on (the file
/// that bench/record-overhead.sh also runs, to measure what recording costs).
const PYTHON_SCRIPT: &str = include_str!("../record/suite.py");

/// An in-memory database: bulk insert, two indexes, a grouping, updates that grow rows,
/// deletes, a self-join and a sort.
fn sqlite_script(rows: usize) -> String {
    format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, payload TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
           INSERT INTO t SELECT x, printf('%08x', (x * 2654435761) % 4294967296), x % 1000,
                                substr(printf('%.300c', 'p'), 1, x % 300) FROM c;
         CREATE INDEX t_name ON t(name);
         CREATE INDEX t_grp ON t(grp);
         SELECT grp, count(*), sum(length(payload)) FROM t GROUP BY grp ORDER BY 3 DESC LIMIT 3;
         UPDATE t SET payload = payload || name WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 5 = 0;
         SELECT count(*) FROM t a JOIN t b ON a.grp = b.grp AND a.id < b.id AND a.id % 97 = 0;
         SELECT name FROM t ORDER BY payload, name LIMIT 3 OFFSET 1000;"
    )
}

/// A `git fast-import` stream: `commits` commits over 64 files of generated text, each commit
/// rewriting a few lines of a few files, so repacking has deltas to find.
fn fast_import_stream(commits: usize) -> Vec<u8> {
    let mut rng = crate::workloads::Rng::new(17);
    let mut files: Vec<Vec<String>> =
        (0..64).map(|f| (0..200).map(|l| format!("file {f} line {l} {:016x}", rng.next_u64())).collect()).collect();
    let mut out = Vec::new();
    for c in 0..commits {
        let _ = write!(
            out,
            "commit refs/heads/main\ncommitter Bench <bench@example.com> {} +0000\ndata 10\ncommit {c:03}\n",
            1_700_000_000 + c
        );
        let touched: Vec<usize> = if c == 0 { (0..64).collect() } else { (0..3).map(|_| rng.below(64)).collect() };
        for f in touched {
            for _ in 0..5 {
                let l = rng.below(200);
                files[f][l] = format!("file {f} line {l} changed in {c} {:016x}", rng.next_u64());
            }
            let body = files[f].join("\n") + "\n";
            let _ = write!(out, "M 644 inline f{f:02}.txt\ndata {}\n{body}\n", body.len());
        }
    }
    out
}

fn found(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The programs ready to run, and those skipped with the reason (a tool not installed).
#[derive(Debug, Default)]
pub struct Prepared {
    pub ready: Vec<Program>,
    pub skipped: Vec<String>,
}

/// Makes each program's input in `dir` (a git repository) and returns the programs to run.
pub fn prepare(dir: &Path, smoke: bool) -> Result<Prepared, String> {
    let mut ready = Vec::new();
    let mut skipped = Vec::new();
    let n = |normal: usize, tiny: usize| if smoke { tiny } else { normal };
    if found("python3") {
        ready.push(Program {
            name: "python".into(),
            argv: ["python3", "-c", PYTHON_SCRIPT, &n(50_000, 1_000).to_string()].map(OsString::from).to_vec(),
            env: vec![("PYTHONMALLOC".into(), "malloc".into())],
        });
    } else {
        skipped.push("python (python3 not installed)".to_string());
    }
    if found("sqlite3") {
        ready.push(Program {
            name: "sqlite3".into(),
            argv: ["sqlite3", ":memory:", &sqlite_script(n(200_000, 1_000))].map(OsString::from).to_vec(),
            env: vec![],
        });
    } else {
        skipped.push("sqlite3 (not installed)".to_string());
    }
    if found("git") {
        let repo = make_repo(dir, n(400, 10))?;
        let mut argv: Vec<OsString> = vec!["git".into(), "-C".into(), repo.into_os_string()];
        argv.extend(["-c", "pack.threads=1", "repack", "-a", "-d", "-f", "-q", "--window=50"].map(OsString::from));
        ready.push(Program { name: "git".into(), argv, env: vec![] });
    } else {
        skipped.push("git (not installed)".to_string());
    }
    Ok(Prepared { ready, skipped })
}

/// A bare repository of `commits` generated commits, made with glibc's malloc.
fn make_repo(dir: &Path, commits: usize) -> Result<PathBuf, String> {
    let repo = dir.join("repo.git");
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.args(args).env_remove("LD_PRELOAD").env("GIT_CONFIG_NOSYSTEM", "1").env("HOME", dir);
        c
    };
    let status = git(&["init", "-q", "--bare"]).arg(&repo).status().map_err(|e| format!("git init: {e}"))?;
    if !status.success() {
        return Err(format!("git init --bare {} failed", repo.display()));
    }
    let mut child = git(&["-C"])
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("git fast-import: {e}"))?;
    let stream = fast_import_stream(commits);
    child.stdin.take().expect("piped").write_all(&stream).map_err(|e| format!("feeding git fast-import: {e}"))?;
    let status = child.wait().map_err(|e| format!("git fast-import: {e}"))?;
    if !status.success() {
        return Err("git fast-import failed".into());
    }
    Ok(repo)
}
