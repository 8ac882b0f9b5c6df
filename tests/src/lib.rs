//! Harness for fmcache's integration tests (`tests/tests/*.rs`).
//!
//! - [`lib`], [`tool`], [`py_env`]: the artefacts under test and the Python
//!   environment, located once; a missing one panics and says how to get it
//!   (`bash tests/run.sh`). Nothing is ever skipped.
//! - [`fixture!`]: a fresh directory per test under `CARGO_TARGET_TMPDIR`
//!   (never /tmp: the library does not record /tmp, /proc, /dev, ...), with
//!   `tree/` (what the test probes) and `out/` (caches, stages, traces).
//! - [`c_program`]: `tests/c/*.c` compiled once, keyed by content.
//! - [`Run`]: one command, natively, under `write-cache` or `read-cache`,
//!   optionally under `strace -ff -k` with the trace classified by
//!   `tests/scripts/stracecount.py`.

use std::collections::hash_map::DefaultHasher;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

const HOW: &str = "run `bash tests/run.sh` (it builds the library and the tool, \
                   prepares target/env, and exports FMCACHE_LIB and FMCACHE_BIN)";

/// The workspace root (the parent of `tests/`).
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

fn artefact(var: &str, default: &str, what: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    assert!(
        p.is_file(),
        "{what} not found at {} (${var} or the default {default}): {HOW}",
        p.display()
    );
    p
}

/// libfmcache.so: `$FMCACHE_LIB`, else `target/release/libfmcache.so`.
pub fn lib() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        artefact(
            "FMCACHE_LIB",
            "target/release/libfmcache.so",
            "the preload library",
        )
    })
}

/// The `fmcache` tool: `$FMCACHE_BIN`, else `target/release/fmcache`.
pub fn tool() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| artefact("FMCACHE_BIN", "target/release/fmcache", "the fmcache tool"))
}

/// The values `tests/env/setup.sh` writes to `target/env/env.sh`.
#[derive(Debug)]
pub struct PyEnv {
    pub venv: PathBuf,
    pub python: PathBuf,
    /// The real prefix of the interpreter the venv was made from.
    pub prefix: PathBuf,
}

/// The `export NAME=VALUE` lines of `target/env/env.sh` (values quoted by
/// bash's `printf %q`: backslash escapes only).
pub fn env_sh() -> &'static Vec<(String, String)> {
    static V: OnceLock<Vec<(String, String)>> = OnceLock::new();
    V.get_or_init(|| {
        let p = workspace().join("target/env/env.sh");
        let text = fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: the test environment is missing; {HOW}",
                p.display()
            )
        });
        parse_exports(&p, &text)
    })
}

/// The `export NAME=VALUE` lines of a script our setup scripts wrote
/// (values quoted by bash's `printf %q`: backslash escapes only).
pub fn parse_exports(p: &Path, text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            assert!(
                !v.starts_with("$'"),
                "{}: cannot parse {k}={v}",
                p.display()
            );
            let mut out = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            (k.to_string(), out)
        })
        .collect()
}

fn env_sh_var(name: &str) -> Option<&'static str> {
    env_sh()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The venv the Python tests use; panics (with the fix) if it is missing.
pub fn py_env() -> &'static PyEnv {
    static E: OnceLock<PyEnv> = OnceLock::new();
    E.get_or_init(|| {
        let get = |k: &str| {
            PathBuf::from(
                env_sh_var(k).unwrap_or_else(|| panic!("target/env/env.sh lacks {k}; {HOW}")),
            )
        };
        let e = PyEnv {
            venv: get("FMCACHE_VENV"),
            python: get("FMCACHE_VENV_PYTHON"),
            prefix: get("FMCACHE_PY_PREFIX"),
        };
        assert!(
            e.python.is_file() && e.prefix.is_dir(),
            "venv python {} or prefix {} missing; {HOW}",
            e.python.display(),
            e.prefix.display()
        );
        e
    })
}

/// A python3 for helper scripts: the real interpreter setup.sh found (the
/// pyenv shim on PATH forks a dozen processes), else /usr/bin/python3.
fn script_python() -> PathBuf {
    let from_env = std::fs::read_to_string(workspace().join("target/env/env.sh"))
        .ok()
        .and_then(|_| env_sh_var("FMCACHE_PYTHON").map(PathBuf::from))
        .filter(|p| p.is_file());
    from_env.unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// A fresh per-test directory: `<CARGO_TARGET_TMPDIR>/<name>/{tree,out}`.
#[macro_export]
macro_rules! fixture {
    ($name:expr) => {
        $crate::Fixture::new(::std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), $name)
    };
}

pub struct Fixture {
    /// `CARGO_TARGET_TMPDIR`.
    pub tmp: PathBuf,
    /// This test's directory.
    pub dir: PathBuf,
    /// The probed tree.
    pub tree: PathBuf,
    /// Everything else: caches, stages, traces, stats.
    pub out: PathBuf,
}

impl Fixture {
    /// Removes whatever an earlier run left and creates the directories.
    pub fn new(tmp: &Path, name: &str) -> Fixture {
        let dir = tmp.join(name);
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
        }
        let f = Fixture {
            tmp: tmp.to_path_buf(),
            tree: dir.join("tree"),
            out: dir.join("out"),
            dir,
        };
        fs::create_dir_all(&f.tree).unwrap();
        fs::create_dir_all(&f.out).unwrap();
        f
    }

    /// A cache file and a stage directory (not created: the library
    /// creates the stage) of their own, under `out/`.
    pub fn cache(&self, label: &str) -> Cache {
        Cache {
            file: self.out.join(format!("{label}.dat")),
            stage: self.out.join(format!("{label}.stage")),
        }
    }

    /// The compiled `tests/c/<name>.c`.
    pub fn c_program(&self, name: &str) -> PathBuf {
        c_program(&self.tmp, name)
    }

    /// A fresh, empty directory under `out/` for one strace run.
    pub fn trace_dir(&self, label: &str) -> PathBuf {
        let d = self.out.join(format!("strace-{label}"));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}

/// The cache and stage one run uses.
#[derive(Clone, Debug)]
pub struct Cache {
    pub file: PathBuf,
    pub stage: PathBuf,
}

impl Cache {
    /// `<fixture>/tree` for a cache made by `Fixture::cache` (under
    /// `<fixture>/out/`).
    pub fn fixture_tree(&self) -> Option<PathBuf> {
        let out = self.file.parent()?;
        if out.file_name()? != "out" {
            return None;
        }
        let tree = out.parent()?.join("tree");
        tree.is_dir().then_some(tree)
    }
}

const CFLAGS: &[&str] = &["-O1", "-D_GNU_SOURCE", "-Wall"];

/// Spawns `cmd`, retrying while exec fails with ETXTBSY: a script or
/// program a test has just written can still be open for writing in a child
/// another test thread forked at that moment (until that child execs), and
/// exec of a file open for writing fails. CI met this once.
pub fn spawn_when_not_busy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Compiles `tests/c/<name>.c` into `<tmp>/cbin/<name>-<hash of source,
/// the shared headers and flags>`, once: later calls (and later test
/// binaries) reuse it.
pub fn c_program(tmp: &Path, name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = workspace().join("tests/c").join(format!("{name}.c"));
    let code = fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut h = DefaultHasher::new();
    code.hash(&mut h);
    // The probes' shared headers (errname.h): a change recompiles them all.
    let mut headers: Vec<PathBuf> = fs::read_dir(workspace().join("tests/c"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    for p in headers {
        fs::read(&p).unwrap().hash(&mut h);
    }
    CFLAGS.hash(&mut h);
    let dir = tmp.join("cbin");
    let exe = dir.join(format!("{name}-{:016x}", h.finish()));
    if exe.is_file() {
        return exe;
    }
    fs::create_dir_all(&dir).unwrap();
    let part = dir.join(format!(".{name}.{}", std::process::id()));
    let out = Command::new("gcc")
        .args(CFLAGS)
        .arg("-o")
        .arg(&part)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc: {e}; {HOW}"));
    assert!(
        out.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&part, &exe).unwrap();
    exe
}

/// `strace -f -qq -y -e trace=<set> -o <trace>` set up for a direct start
/// under read-cache of `cache` (LD_PRELOAD alone, outside any job, the
/// library's variables scrubbed): add `-E NAME=VALUE` arguments, then
/// `--` and the command.
pub fn strace_served(cache: &Cache, set: &str, trace: &Path) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-y", "-e", &format!("trace={set}"), "-o"])
        .arg(trace);
    for k in scrubbed().chain(fmcache_core::config::JOB_VARS) {
        c.env_remove(k);
    }
    for (k, v) in [
        ("LD_PRELOAD", lib().display().to_string()),
        ("DLFM_OP", "read-cache".into()),
        ("FMCACHE_FILE", cache.file.display().to_string()),
        ("FMCACHE_STAGE_DIR", cache.stage.display().to_string()),
    ] {
        c.arg("-E").arg(format!("{k}={v}"));
    }
    c
}

/// What the library does in a run.
#[derive(Clone, Debug)]
pub enum Mode {
    Native,
    Record(Cache),
    Serve(Cache),
}

/// One command to run; see the module documentation.
#[derive(Clone, Debug)]
pub struct Run {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdin: Vec<u8>,
    env: Vec<(OsString, OsString)>,
    mode: Mode,
    stats: Option<PathBuf>,
}

/// Variables a test must not inherit from whoever started `cargo test`:
/// the library's own (the one list, `fmcache_core::config::LIBRARY_VARS`)
/// and the ones that change what the software under test loads.
pub fn scrubbed() -> impl Iterator<Item = &'static str> {
    fmcache_core::config::LIBRARY_VARS
        .iter()
        .map(|(name, _)| *name)
        .chain([
            "LD_LIBRARY_PATH",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "PYTHONDONTWRITEBYTECODE",
        ])
}

impl Run {
    pub fn new(program: impl AsRef<OsStr>) -> Run {
        Run {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            cwd: None,
            stdin: Vec::new(),
            env: Vec::new(),
            mode: Mode::Native,
            stats: None,
        }
    }

    /// `probe -f -`, reading the batch from stdin (so the batch file is
    /// never itself a probed, cached file).
    pub fn probe(probe: &Path, batch: &str) -> Run {
        Run::new(probe)
            .args(["-f", "-"])
            .stdin(batch.as_bytes().to_vec())
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Run {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Run {
        self.args
            .extend(a.into_iter().map(|s| s.as_ref().to_os_string()));
        self
    }

    pub fn cwd(mut self, d: impl AsRef<Path>) -> Run {
        self.cwd = Some(d.as_ref().to_path_buf());
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Run {
        self.stdin = bytes;
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Run {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    pub fn native(mut self) -> Run {
        self.mode = Mode::Native;
        self
    }

    /// `DLFM_OP=write-cache` into `cache`.
    pub fn record(mut self, cache: &Cache) -> Run {
        self.mode = Mode::Record(cache.clone());
        self
    }

    /// `DLFM_OP=read-cache` from `cache`.
    pub fn serve(mut self, cache: &Cache) -> Run {
        self.mode = Mode::Serve(cache.clone());
        self
    }

    /// `FMCACHE_STATS=path`.
    pub fn stats(mut self, path: impl AsRef<Path>) -> Run {
        self.stats = Some(path.as_ref().to_path_buf());
        self
    }

    /// The variables the library reads, for the mode.
    fn lib_env(&self) -> Vec<(OsString, OsString)> {
        let mut v: Vec<(OsString, OsString)> = Vec::new();
        let (op, cache) = match &self.mode {
            Mode::Native => return v,
            Mode::Record(c) => ("write-cache", c),
            Mode::Serve(c) => ("read-cache", c),
        };
        v.push(("LD_PRELOAD".into(), lib().into()));
        v.push(("DLFM_OP".into(), op.into()));
        v.push(("FMCACHE_FILE".into(), cache.file.clone().into()));
        v.push(("FMCACHE_STAGE_DIR".into(), cache.stage.clone().into()));
        if let Some(s) = &self.stats {
            v.push(("FMCACHE_STATS".into(), s.clone().into()));
        }
        // A fixture's probed tree is test data, not software: its pilots
        // name it with FMCACHE_INCLUDE, as a user would. A test of the
        // default scope overrides it with `.env("FMCACHE_INCLUDE", "")`.
        if let (Mode::Record(_), Some(tree)) = (&self.mode, cache.fixture_tree()) {
            v.push(("FMCACHE_INCLUDE".into(), tree.into()));
        }
        v
    }

    /// A command for `program` with the inherited environment scrubbed.
    fn command(program: &OsStr) -> Command {
        let mut cmd = Command::new(program);
        for k in scrubbed() {
            cmd.env_remove(k);
        }
        cmd
    }

    fn execute(&self, mut cmd: Command) -> Out {
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_when_not_busy(&mut cmd)
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.program));
        let mut input = child.stdin.take().unwrap();
        let bytes = self.stdin.clone();
        let feeder = std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
        let o = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        Out {
            stdout: o.stdout,
            stderr: o.stderr,
            status: o.status,
        }
    }

    /// Runs the command.
    pub fn run(&self) -> Out {
        let mut cmd = Run::command(&self.program);
        cmd.args(&self.args);
        for (k, v) in self.lib_env() {
            cmd.env(k, v);
        }
        self.execute(cmd)
    }

    /// Runs the command under `strace -ff -k -qq -e trace=%file,getdents64`
    /// (the library's variables go to the traced program only, via `-E`),
    /// writing `<dir>/t.<pid>`, and classifies the calls on `roots`.
    pub fn run_traced(&self, dir: &Path, roots: &[&Path]) -> (Out, Trace) {
        self.strace(dir, roots, true)
    }

    /// The same without `-k`: much faster (unwinding deep CPython stacks
    /// costs strace ~60 ms a call), but with no stacks every call counts as
    /// the program's, the loader's included.
    pub fn run_traced_flat(&self, dir: &Path, roots: &[&Path]) -> (Out, Trace) {
        self.strace(dir, roots, false)
    }

    fn strace(&self, dir: &Path, roots: &[&Path], stacks: bool) -> (Out, Trace) {
        let prefix = dir.join("t");
        let mut cmd = Run::command(OsStr::new("strace"));
        cmd.arg("-ff");
        if stacks {
            cmd.arg("-k");
        }
        cmd.args(["-qq", "-e", "trace=%file,getdents64", "-o"])
            .arg(&prefix);
        for (k, v) in self.lib_env() {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cmd.arg("-E").arg(kv);
        }
        cmd.arg("--").arg(&self.program).args(&self.args);
        let out = self.execute(cmd);
        let trace = strace_count(&prefix, roots);
        (out, trace)
    }
}

/// What a run printed and how it ended.
#[derive(Clone, Debug)]
pub struct Out {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics (showing stderr) unless the run exited 0.
    pub fn ok(self, what: &str) -> Out {
        assert!(
            self.status.success(),
            "{what}: {}\nstderr:\n{}",
            self.status,
            self.stderr_str()
        );
        self
    }
}

/// `stracecount.py`'s verdict on a trace.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Every traced call.
    pub total: u64,
    /// Calls whose path lies under one of the roots.
    pub on_roots: u64,
    /// ... issued by the dynamic loader itself.
    pub loader: u64,
    /// ... the exec of a direct start executing itself with the auditor.
    pub reexec: u64,
    /// ... issued by the program (through libc): what the library serves.
    pub program: u64,
    /// The program's calls on the roots (strace lines).
    pub program_calls: Vec<String>,
}

impl Trace {
    /// The first `n` of the program's calls, one per line, for messages.
    pub fn first_calls(&self, n: usize) -> String {
        let mut s = String::new();
        for c in self.program_calls.iter().take(n) {
            let _ = writeln!(s, "    {c}");
        }
        if self.program_calls.len() > n {
            let _ = writeln!(s, "    ... {} more", self.program_calls.len() - n);
        }
        s
    }
}

/// Runs `tests/scripts/stracecount.py PREFIX ROOT...`.
pub fn strace_count(prefix: &Path, roots: &[&Path]) -> Trace {
    let script = workspace().join("tests/scripts/stracecount.py");
    let o = Command::new(script_python())
        .arg(&script)
        .arg(prefix)
        .args(roots)
        .output()
        .expect("running stracecount.py");
    assert!(
        o.status.success(),
        "stracecount.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stracecount.py JSON");
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("stracecount: no {k}"))
    };
    Trace {
        total: n("total"),
        on_roots: n("on_roots"),
        loader: n("loader"),
        reexec: n("reexec"),
        program: n("program"),
        program_calls: v["program_calls"]
            .as_array()
            .expect("program_calls")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_string())
            .collect(),
    }
}

/// The sum of the `FMCACHE_STATS` lines in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub processes: u64,
    pub served: u64,
    pub missed: u64,
    pub passthrough: u64,
    pub recorded: u64,
    /// Libraries ld.so loaded from outside the stage and the system
    /// library directories while serving.
    pub unstaged_libs: u64,
}

/// Reads a `FMCACHE_STATS` file (one `pid=.. op=.. served=N ..` line per
/// process); panics if it is missing or holds no line.
pub fn read_stats(path: &Path) -> Stats {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("FMCACHE_STATS file {}: {e}", path.display()));
    let mut s = Stats::default();
    for line in text.lines() {
        // An audited process's auditor copy adds its own line.
        if !line.contains(" copy=auditor ") {
            s.processes += 1;
        }
        for field in line.split(' ') {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let slot = match k {
                "served" => &mut s.served,
                "missed" => &mut s.missed,
                "passthrough" => &mut s.passthrough,
                "recorded" => &mut s.recorded,
                "unstaged_libs" => &mut s.unstaged_libs,
                _ => continue,
            };
            *slot += v
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("bad stats line {line:?}"));
        }
    }
    assert!(s.processes > 0, "{}: no stats line", path.display());
    s
}

/// Asserts two outputs are byte-identical; on failure shows the first
/// differing lines, numbered, of both.
#[track_caller]
pub fn assert_same(what: &str, a_name: &str, a: &[u8], b_name: &str, b: &[u8]) {
    if a == b {
        return;
    }
    let al: Vec<&[u8]> = a.split(|&c| c == b'\n').collect();
    let bl: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
    let mut msg = format!(
        "{what}: {a_name} ({} lines) and {b_name} ({} lines) differ\n",
        al.len(),
        bl.len()
    );
    let mut shown = 0;
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (al.get(i), bl.get(i));
        if x == y {
            continue;
        }
        let show = |l: Option<&&[u8]>| {
            l.map_or("<none>".to_string(), |l| {
                let s = String::from_utf8_lossy(l);
                if s.chars().count() > 600 {
                    format!("{}...", s.chars().take(600).collect::<String>())
                } else {
                    s.into_owned()
                }
            })
        };
        let _ = writeln!(
            msg,
            "line {}:\n  {a_name}: {}\n  {b_name}: {}",
            i + 1,
            show(x),
            show(y)
        );
        shown += 1;
        if shown == 8 {
            msg.push_str("  (more differences not shown)\n");
            break;
        }
    }
    panic!("{msg}");
}

/// A batch token for `probe -f`: bytes outside printable ASCII, blanks and
/// `#` become `\xHH`, a backslash `\\`; the empty path is `""`.
pub fn tok(p: impl AsRef<OsStr>) -> String {
    let b = p.as_ref().as_bytes();
    if b.is_empty() {
        return "\"\"".into();
    }
    let mut s = String::new();
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'!'..=b'~' if c != b'#' => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

/// Deterministic pseudo-random bytes (xorshift), for file contents.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Lists a directory's names (sorted), for "left untouched" checks.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Calls naming the cache file (by path, or by a descriptor on it, with
/// `strace -y`) in one run, split into metadata requests and reads.
pub fn cache_calls(cache: &Cache, trace: &Path) -> (Vec<String>, usize) {
    let text = fs::read_to_string(trace).unwrap();
    let name = cache.file.display().to_string();
    let mut meta = Vec::new();
    let mut reads = 0;
    for line in text
        .lines()
        .filter(|l| l.contains(&name) && !l.contains(".rec"))
    {
        let call = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("");
        if matches!(call, "read" | "pread64" | "mmap") {
            reads += 1;
        } else {
            meta.push(line.to_string());
        }
    }
    (meta, reads)
}

/// `argv` under read-cache (LD_PRELOAD alone, outside any job) with `env`
/// added, traced with `strace -f -y` for the calls in `set`: its stdout;
/// it must succeed with nothing on stderr.
pub fn served_output(
    cache: &Cache,
    set: &str,
    argv: &[&OsStr],
    env: &[(&str, &str)],
    trace: &Path,
) -> String {
    let mut c = strace_served(cache, set, trace);
    for (k, v) in env {
        c.arg("-E").arg(format!("{k}={v}"));
    }
    let o = c.arg("--").args(argv).output().unwrap();
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `cat FILE` under read-cache with `env`, traced with `strace -f -y`.
pub fn served_cat(cache: &Cache, file: &Path, env: &[(&str, &str)], trace: &Path) -> String {
    let argv = [OsStr::new("/bin/cat"), file.as_os_str()];
    served_output(cache, "%file,fstat,read,pread64,mmap", &argv, env, trace)
}

pub mod bcast;
pub mod install;
pub mod procs;
pub mod user;

/// Python for differential scripts: `show(tag, f)` prints `tag` and what
/// `f()` returns, or `ERR <errno name>`. Scripts put their own code after.
pub const PY_SHOW: &str = r#"
import errno, os, sys
def show(tag, f):
    try:
        r = f()
    except OSError as e:
        r = "ERR " + errno.errorcode[e.errno]
    print(tag, r)
"#;
