//! Pilot runs under the real library: concurrent recorders, identical
//! ranks, SIGKILL at random moments, determinism, compiled bytecode,
//! exclusion and scope.
//!
//! Needs what the harness (`fmcache_tests`) finds: the release library and
//! tool, the test venv for the Python cases; and coreutils, strace.
//! Every test works in its own directory under CARGO_TARGET_TMPDIR.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fmcache_core::path::under;
use fmcache_format::{CacheView, Verify};

// ------------------------------------------------------------ locations

fn lib() -> &'static Path {
    fmcache_tests::lib()
}

fn bin() -> &'static Path {
    fmcache_tests::tool()
}

/// The test venv's python (target/env/env.sh, written by setup.sh).
fn python() -> PathBuf {
    fmcache_tests::py_env().python.clone()
}

/// Each test's directory. All are created at once, before any test runs
/// a pilot, so no test changes a directory that is an ancestor of
/// another's tree (ancestors are recorded, with their times).
fn test_dir(name: &str) -> PathBuf {
    const TESTS: [&str; 9] = [
        "union",
        "identical",
        "kill",
        "record-twice",
        "pyc",
        "exclusion",
        "scope",
        "later",
        "progress",
    ];
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // What earlier runs left (their directories stay, emptied).
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("pilot-")
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks whether the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let base = tmp.join(format!("pilot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        for t in TESTS {
            std::fs::create_dir(base.join(t)).unwrap();
        }
        base
    });
    assert!(TESTS.contains(&name), "add {name} to TESTS");
    base.join(name)
}

/// Empties a test's directory (the directory stays: removing it would
/// change its parent, an ancestor of the other tests' trees).
fn clean(d: &Path) {
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn mkdirs(root: &Path, names: &[&str]) {
    for n in names {
        std::fs::create_dir_all(root.join(n)).unwrap();
    }
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

// ------------------------------------------------------------- commands

/// The environment a test controls, without the caller's fmcache settings.
fn scrubbed(prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(prog);
    for v in fmcache_tests::scrubbed().chain(["PYTHONPYCACHEPREFIX"]) {
        c.env_remove(v);
    }
    c.env("FMCACHE_LIB", lib());
    c
}

/// `prog args` under the library in `op` mode with this cache and stage.
fn under_lib(op: &str, prog: impl AsRef<OsStr>, cache: &Path, stage: &Path) -> Command {
    let mut c = scrubbed(prog);
    c.env("DLFM_OP", op)
        .env("LD_PRELOAD", lib())
        .env("FMCACHE_FILE", cache)
        .env("FMCACHE_STAGE_DIR", stage);
    c
}

/// A pilot: the test trees are data, named as served as a user would
/// (FMCACHE_INCLUDE); a test of the scope sets its own.
fn pilot(prog: impl AsRef<OsStr>, cache: &Path, stage: &Path) -> Command {
    let mut c = under_lib("write-cache", prog, cache, stage);
    c.env("FMCACHE_INCLUDE", env!("CARGO_TARGET_TMPDIR"));
    c
}

fn fmcache(stage: &Path) -> Command {
    let mut c = scrubbed(bin());
    c.env("FMCACHE_STAGE_DIR", stage);
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A barrier: children block reading stdin until the write end closes.
struct Gate {
    read: std::io::PipeReader,
    write: Option<std::io::PipeWriter>,
}

impl Gate {
    fn new() -> Gate {
        let (read, write) = std::io::pipe().unwrap();
        Gate {
            read,
            write: Some(write),
        }
    }
    fn stdin(&self) -> Stdio {
        Stdio::from(self.read.try_clone().unwrap())
    }
    fn open(&mut self) {
        self.write = None;
    }
}

/// Spawns all, opens the gate, waits for all; panics on a failure.
fn run_together(cmds: Vec<Command>) {
    let mut gate = Gate::new();
    let mut children: Vec<(String, Child)> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdin(gate.stdin())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            (format!("{c:?}"), c.spawn().unwrap())
        })
        .collect();
    // Let every child reach its read of stdin.
    std::thread::sleep(Duration::from_millis(100));
    gate.open();
    for (what, c) in children.iter_mut() {
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let st = c.wait().unwrap();
        assert!(st.success(), "{what}: {st}\n{err}");
        assert!(
            !err.contains("fmcache"),
            "{what}: the library complained:\n{err}"
        );
    }
}

// ---------------------------------------------------------------- cache

/// A cache file's bytes in an 8-byte aligned buffer.
struct Loaded {
    words: Vec<u64>,
    len: usize,
}

impl Loaded {
    fn read(p: &Path) -> Option<Loaded> {
        Some(Loaded::read_bytes(&std::fs::read(p).ok()?))
    }
    fn read_bytes(b: &[u8]) -> Loaded {
        let mut words = vec![0u64; b.len().div_ceil(8)];
        for (w, ch) in words.iter_mut().zip(b.chunks(8)) {
            let mut a = [0u8; 8];
            a[..ch.len()].copy_from_slice(ch);
            *w = u64::from_le_bytes(a);
        }
        Loaded {
            words,
            len: b.len(),
        }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes written in `read` (little-endian host).
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
    fn view(&self) -> CacheView<'_> {
        CacheView::open(self.bytes(), Verify::Full)
            .unwrap_or_else(|e| panic!("cache does not verify: {e}"))
    }
}

fn load(p: &Path) -> Loaded {
    Loaded::read(p).unwrap_or_else(|| panic!("no cache at {}", p.display()))
}

fn record_dir(cache: &Path) -> PathBuf {
    let mut s = cache.as_os_str().to_os_string();
    s.push(".rec");
    PathBuf::from(s)
}

/// Names in a directory starting with `prefix` (none if it is missing).
fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Journals left in `<cache>.rec/` (`j.*` named, `t.*` not yet named).
fn journals_left(cache: &Path) -> Vec<String> {
    let rec = record_dir(cache);
    let mut v = names_with(&rec, "j.");
    v.extend(names_with(&rec, "t."));
    v
}

/// Temporary cache files next to the cache.
fn temp_caches(cache: &Path) -> Vec<String> {
    let name = format!("{}.tmp.", cache.file_name().unwrap().to_string_lossy());
    names_with(cache.parent().unwrap(), &name)
}

/// Counts renames onto the cache file (each is one rewrite) with inotify.
/// The kernel folds an event into an identical previous one (cookies
/// aside), so consecutive renames onto one name would count once: the
/// watch takes IN_MOVED_FROM too, which separates them.
struct Rewrites {
    fd: i32,
    name: Vec<u8>,
    seen: usize,
}

impl Rewrites {
    fn watch(cache: &Path) -> Rewrites {
        let dir = CString::new(bytes(cache.parent().unwrap())).unwrap();
        // SAFETY: plain system calls; the descriptor is closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let wd = unsafe {
            libc::inotify_add_watch(fd, dir.as_ptr(), libc::IN_MOVED_FROM | libc::IN_MOVED_TO)
        };
        assert!(wd >= 0, "inotify_add_watch");
        Rewrites {
            fd,
            name: bytes(Path::new(cache.file_name().unwrap())).to_vec(),
            seen: 0,
        }
    }
    /// Rewrites so far.
    fn count(&mut self) -> usize {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return self.seen;
            }
            let mut at = 0;
            while at + 16 <= n as usize {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..at + 16 + len];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
                assert!(mask & libc::IN_Q_OVERFLOW == 0, "inotify queue overflow");
                if mask & libc::IN_MOVED_TO != 0 && name == self.name {
                    self.seen += 1;
                }
                at += 16 + len;
            }
        }
    }
}

impl Drop for Rewrites {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// The stat of every ancestor of `dir` (they are recorded in caches, so a
/// change by someone else between two pilots changes the cache).
fn ancestors_state(dir: &Path) -> Vec<(PathBuf, [i64; 7])> {
    dir.ancestors()
        .map(|a| {
            let m = std::fs::symlink_metadata(a).unwrap();
            (
                a.to_path_buf(),
                [
                    m.ino() as i64,
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.nlink() as i64,
                    m.size() as i64,
                ],
            )
        })
        .collect()
}

/// Runs `attempt` until the ancestors of `dir` stay unchanged during it
/// (three tries); returns its result and how many tries it took.
fn undisturbed<T>(dir: &Path, mut attempt: impl FnMut(usize) -> T) -> (T, usize) {
    for i in 0..3 {
        let before = ancestors_state(dir);
        let r = attempt(i);
        let after = ancestors_state(dir);
        if before == after {
            return (r, i + 1);
        }
        let changed: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.display().to_string())
            .collect();
        eprintln!("attempt {i}: ancestors changed by someone else: {changed:?}; again");
    }
    panic!(
        "the ancestors of {} kept changing (other processes are writing there); cannot compare caches",
        dir.display()
    );
}

/// Entries that differ between two caches, for failure messages.
fn cache_diff(a: &[u8], b: &[u8]) -> String {
    let (la, lb) = (Loaded::read_bytes(a), Loaded::read_bytes(b));
    let (va, vb) = (la.view(), lb.view());
    let mut out = Vec::new();
    for e in va.entries() {
        match vb.lookup(e.path()) {
            None => out.push(format!(
                "only in first: {}",
                String::from_utf8_lossy(e.path())
            )),
            Some(f) => {
                let same = e.lstat().map(|r| r.copied()) == f.lstat().map(|r| r.copied())
                    && e.follow().map(|r| r.copied()) == f.follow().map(|r| r.copied())
                    && e.is_excluded() == f.is_excluded()
                    && e.blob().map(|b| b.hash) == f.blob().map(|b| b.hash)
                    && e.listing().map(|l| l.iter().collect::<Vec<_>>())
                        == f.listing().map(|l| l.iter().collect::<Vec<_>>())
                    && e.link_target() == f.link_target()
                    && (0..3).all(|i| e.access_errno(i) == f.access_errno(i));
                if !same {
                    out.push(format!(
                        "differs: {} {:?} vs {:?}",
                        String::from_utf8_lossy(e.path()),
                        e.lstat().map(|r| r.copied()),
                        f.lstat().map(|r| r.copied())
                    ));
                }
            }
        }
    }
    for f in vb.entries() {
        if va.lookup(f.path()).is_none() {
            out.push(format!(
                "only in second: {}",
                String::from_utf8_lossy(f.path())
            ));
        }
    }
    out.truncate(20);
    out.join("\n")
}

/// A small deterministic PRNG; the seed is printed and can be set with
/// FMCACHE_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FMCACHE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("seed {seed} (FMCACHE_SEED to repeat)");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Distinct, recognisable file contents.
fn content(tag: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}\n").into_bytes();
    let mut x = tag
        .bytes()
        .fold(0x9e37_79b9u64, |h, b| h.wrapping_mul(31) ^ b as u64)
        | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

// ----------------------------------------------------------------- tests

/// a. Eight pilots, each probing its own part of a tree, at once: the
/// cache holds the union and is valid, and no journal is left.
#[test]
fn concurrent_pilots_record_the_union() {
    let started = Instant::now();
    let d = test_dir("union");
    mkdirs(&d, &["cache", "work"]);
    let tree = d.join("tree");
    let mut files: Vec<Vec<(PathBuf, Vec<u8>)>> = Vec::new();
    for k in 0..8 {
        let sub = tree.join(format!("part{k}"));
        std::fs::create_dir_all(sub.join("inner")).unwrap();
        let mut fs = Vec::new();
        for i in 0..4 {
            let p = sub.join(format!("f{i}.txt"));
            let c = content(&format!("part {k} file {i}"), 100 + 300 * i);
            std::fs::write(&p, &c).unwrap();
            fs.push((p, c));
        }
        std::fs::write(sub.join("inner/x"), b"x").unwrap();
        files.push(fs);
    }
    let cache = d.join("cache/fmcache.dat");
    let stage = d.join("stage");
    let mut rewrites = Rewrites::watch(&cache);
    let cmds: Vec<Command> = (0..8)
        .map(|k| {
            let sub = tree.join(format!("part{k}"));
            let cats: Vec<String> = files[k]
                .iter()
                .map(|(p, _)| format!("'{}'", p.display()))
                .collect();
            // Each also reads a file two levels into the next pilot's part,
            // so merges overlap: the next part is wanted for its stat alone.
            let next = tree.join(format!("part{}/inner/x", (k + 1) % 8));
            let script = format!(
                "read _; cat {} '{}'; ls -l '{}' '{}'",
                cats.join(" "),
                next.display(),
                sub.display(),
                sub.join("inner").display()
            );
            let mut c = pilot("/bin/sh", &cache, &stage);
            c.arg("-c").arg(script).current_dir(d.join("work"));
            c
        })
        .collect();
    run_together(cmds);
    let n = rewrites.count();

    let out = run(fmcache(&stage).arg("inspect").arg(&cache));
    assert!(!out.stdout.is_empty());
    let loaded = load(&cache);
    let view = loaded.view();
    for (k, fs) in files.iter().enumerate() {
        let x = (tree.join(format!("part{k}/inner/x")), b"x".to_vec());
        for (p, c) in fs.iter().chain([&x]) {
            let e = view
                .lookup(bytes(p))
                .unwrap_or_else(|| panic!("{} (pilot {k}) missing", p.display()));
            assert!(!e.is_excluded());
            let blob = e
                .blob()
                .unwrap_or_else(|| panic!("{} has no contents", p.display()));
            assert_eq!(
                view.blob_bytes(blob).as_deref(),
                Some(&c[..]),
                "{}",
                p.display()
            );
        }
        for dir in [
            tree.join(format!("part{k}")),
            tree.join(format!("part{k}/inner")),
        ] {
            let e = view
                .lookup(bytes(&dir))
                .unwrap_or_else(|| panic!("{} missing", dir.display()));
            let l = e
                .listing()
                .unwrap_or_else(|| panic!("{} (listed by ls) has no listing", dir.display()));
            let got: BTreeSet<Vec<u8>> = l.iter().map(|(n, _, _)| n.to_vec()).collect();
            let mut want: BTreeSet<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|d| d.unwrap().file_name().as_bytes().to_vec())
                .collect();
            want.insert(b".".to_vec());
            want.insert(b"..".to_vec());
            assert_eq!(got, want, "listing of {}", dir.display());
        }
    }
    assert_eq!(journals_left(&cache), Vec::<String>::new(), "journals left");
    assert_eq!(
        temp_caches(&cache),
        Vec::<String>::new(),
        "temporary caches left"
    );
    assert!(n >= 1, "the cache was never renamed into place?");
    eprintln!(
        "8 concurrent pilots (sh + cat + ls each): cache rewritten {n} times, {} entries, {:.2} s",
        view.entry_count(),
        started.elapsed().as_secs_f64()
    );
    clean(&d);
}

/// b. 24 identical ranks at once write the same cache as one pilot, and
/// rewrite it about once.
#[test]
fn identical_ranks_equal_one_pilot() {
    let started = Instant::now();
    let d = test_dir("identical");
    mkdirs(&d, &["warm", "single", "multi", "work", "tree/sub"]);
    let tree = d.join("tree");
    let mut args: Vec<OsString> = vec!["-".into()];
    for i in 0..6 {
        let p = tree.join(format!("sub/m{i}.dat"));
        std::fs::write(&p, content(&format!("rank data {i}"), 50 + 700 * i)).unwrap();
        args.push(p.into_os_string());
    }
    args.push(tree.join("sub/missing.dat").into_os_string());
    let cmd = |cache: &Path| {
        let mut c = pilot("/bin/cat", cache, &d.join("stage"));
        c.args(&args).current_dir(d.join("work"));
        c
    };
    // `cat` fails on the missing file: expected, it only probes it.
    let run_all = |caches: &[&Path]| {
        let mut gate = Gate::new();
        let mut ch: Vec<Child> = caches
            .iter()
            .map(|c| {
                cmd(c)
                    .stdin(gate.stdin())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        gate.open();
        for c in ch.iter_mut() {
            assert_eq!(c.wait().unwrap().code(), Some(1), "cat of a missing file");
        }
    };
    // Warm-up: first reads move atimes, which caches record.
    run_all(&[&d.join("warm/fmcache.dat")]);

    let single = d.join("single/fmcache.dat");
    let multi = d.join("multi/fmcache.dat");
    let ((a, b, n), tries) = undisturbed(&d, |_| {
        let _ = std::fs::remove_file(&single);
        let _ = std::fs::remove_file(&multi);
        run_all(&[&single]);
        let mut rewrites = Rewrites::watch(&multi);
        run_all(&vec![multi.as_path(); 24]);
        let n = rewrites.count();
        (
            std::fs::read(&single).unwrap(),
            std::fs::read(&multi).unwrap(),
            n,
        )
    });
    load(&multi).view();
    assert!(
        a == b,
        "24 identical ranks wrote a different cache than one pilot:\n{}",
        cache_diff(&a, &b)
    );
    assert_eq!(journals_left(&multi), Vec::<String>::new());
    assert!(n >= 1);
    eprintln!(
        "24 identical ranks: cache rewritten {n} times (1 expected), byte-identical to one pilot ({} bytes), {tries} attempt(s), {:.2} s",
        b.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        n <= 2,
        "24 identical ranks rewrote the cache {n} times; every rank after the first should find it up to date"
    );
    clean(&d);
}

/// c. Pilots killed with SIGKILL at random moments never leave a partial
/// cache; `fmcache merge` completes it, and serving from it gives the
/// native output.
#[test]
fn sigkill_never_leaves_a_partial_cache() {
    let started = Instant::now();
    let trials = if std::env::var_os("FMCACHE_LONG").is_some_and(|v| v == "1") {
        200
    } else {
        40
    };
    let d = test_dir("kill");
    mkdirs(&d, &["work", "tree/pkg"]);
    let tree = d.join("tree");
    for i in 0..5 {
        std::fs::write(
            tree.join(format!("pkg/d{i}.json")),
            format!("{{\"item\": {i}, \"tag\": \"{}\"}}", "x".repeat(i * 40)),
        )
        .unwrap();
    }
    let py = python();
    let script = format!(
        "import json, os\n\
         t = {tree:?}\n\
         names = sorted(os.listdir(t + '/pkg'))\n\
         print(names)\n\
         for n in names:\n\
         \x20   print(json.load(open(t + '/pkg/' + n)))\n",
        tree = tree.display().to_string()
    );
    let native = run(scrubbed(&py)
        .arg("-c")
        .arg(&script)
        .current_dir(d.join("work")))
    .stdout;
    assert!(!native.is_empty());
    let stage = d.join("stage");
    let spawn = |cache: &Path| {
        pilot(&py, cache, &stage)
            .arg("-c")
            .arg(&script)
            .current_dir(d.join("work"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Typical run time: four pilots at once into a fresh cache (two
    // rounds, the slower counts), so kills land anywhere up to the merges.
    let mut typical = Duration::ZERO;
    for i in 0..2 {
        let c = d.join(format!("timing{i}/fmcache.dat"));
        std::fs::create_dir_all(c.parent().unwrap()).unwrap();
        let t = Instant::now();
        let mut ch: Vec<Child> = (0..4).map(|_| spawn(&c)).collect();
        for c in ch.iter_mut() {
            assert!(c.wait().unwrap().success());
        }
        typical = typical.max(t.elapsed());
    }
    let mut rng = Rng::new();
    let (mut killed, mut absent_after_kill, mut absent_after_merge) = (0, 0, 0);
    let mut leftovers_before_merge = 0;
    let mut leftovers_after_merge = Vec::new();
    let mut served_runs = 0;
    let mut unnamed_journals = 0;
    for t in 0..trials {
        let dir = d.join(format!("trial{t}"));
        std::fs::create_dir(&dir).unwrap();
        let cache = dir.join("fmcache.dat");
        let mut children: Vec<Child> = (0..4).map(|_| spawn(&cache)).collect();
        // A random non-empty subset dies, each at its own random moment.
        let span = typical.as_micros() as u64 + 1;
        let mut victims: Vec<(Duration, usize)> = Vec::new();
        for i in 0..4 {
            if rng.below(2) == 0 {
                victims.push((Duration::from_micros(rng.below(span)), i));
            }
        }
        if victims.is_empty() {
            let us = rng.below(typical.as_micros() as u64 + 1);
            victims.push((Duration::from_micros(us), rng.below(4) as usize));
        }
        victims.sort();
        let t0 = Instant::now();
        for (at, i) in &victims {
            if let Some(left) = at.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            if children[*i].try_wait().unwrap().is_none() {
                children[*i].kill().unwrap();
                killed += 1;
            }
        }
        for c in children.iter_mut() {
            c.wait().unwrap();
        }
        // Whatever moment they died at: no cache, or a whole one.
        match Loaded::read(&cache) {
            None => absent_after_kill += 1,
            Some(l) => {
                if let Err(e) = CacheView::open(l.bytes(), Verify::Full) {
                    panic!("trial {t}: partial cache after SIGKILL: {e}");
                }
            }
        }
        if !temp_caches(&cache).is_empty() {
            leftovers_before_merge += 1;
        }
        let out = run(fmcache(&stage).arg("merge").arg("--cache").arg(&cache));
        assert!(out.status.success());
        match Loaded::read(&cache) {
            None => absent_after_merge += 1,
            Some(l) => {
                if let Err(e) = CacheView::open(l.bytes(), Verify::Full) {
                    panic!("trial {t}: invalid cache after fmcache merge: {e}");
                }
            }
        }
        let rec = record_dir(&cache);
        assert_eq!(
            names_with(&rec, "j."),
            Vec::<String>::new(),
            "trial {t}: journals left after fmcache merge"
        );
        // A recorder killed while creating its journal leaves an empty,
        // never-named `t.*` file that no merge looks at.
        unnamed_journals += names_with(&rec, "t.").len();
        let left = temp_caches(&cache);
        if !left.is_empty() {
            leftovers_after_merge.push((t, left));
        }
        if cache.exists() {
            let out = run(fmcache(&stage)
                .arg("run")
                .arg("--cache")
                .arg(&cache)
                .arg("--")
                .arg(&py)
                .arg("-c")
                .arg(&script)
                .current_dir(d.join("work")));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&native),
                "trial {t}: served output differs from the native one"
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("fmcache"),
                "trial {t}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            served_runs += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "SIGKILL: {trials} trials, {killed} pilots killed (typical run {:.0} ms); cache absent after the kills in {absent_after_kill} trials, after fmcache merge in {absent_after_merge}; \
         temp caches left by killed mergers in {leftovers_before_merge} trials, still there after a successful merge in {} trials {:?}; {unnamed_journals} unnamed journals (t.*) left; {served_runs} served runs matched native; {:.1} s",
        typical.as_secs_f64() * 1000.0,
        leftovers_after_merge.len(),
        leftovers_after_merge.iter().take(5).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    clean(&d);
}

/// d. The same pilot, recorded twice after a warm-up, writes byte-identical
/// caches.
#[test]
fn recording_twice_gives_identical_bytes() {
    let started = Instant::now();
    let d = test_dir("record-twice");
    mkdirs(&d, &["cache", "work"]);
    let py = python();
    let cache = d.join("cache/fmcache.dat");
    let record = || {
        run(fmcache(&d.join("stage"))
            .arg("record")
            .arg("--cache")
            .arg(&cache)
            .arg("--")
            .arg(&py)
            .arg("-c")
            .arg("import json")
            .current_dir(d.join("work")));
        std::fs::read(&cache).unwrap()
    };
    record(); // warm-up
    let ((a, b), tries) = undisturbed(&d, |_| (record(), record()));
    load(&cache).view();
    assert!(
        a == b,
        "two recordings of the same pilot differ:\n{}",
        cache_diff(&a, &b)
    );
    eprintln!(
        "python -c 'import json' recorded twice: identical {} bytes, {tries} attempt(s), {:.2} s",
        a.len(),
        started.elapsed().as_secs_f64()
    );
    clean(&d);
}

/// e. A .pyc the pilot compiled is cached with its contents, and a served
/// run writes nothing and reads the staged copy.
#[test]
fn compiled_bytecode_is_cached_and_served() {
    let d = test_dir("pyc");
    mkdirs(&d, &["cache", "app"]);
    let app = d.join("app");
    std::fs::write(
        app.join("mod_x.py"),
        "VALUE = sum(range(10))\nprint('mod_x says', VALUE)\n",
    )
    .unwrap();
    let py = python();
    let cache = d.join("cache/fmcache.dat");
    let stage = d.join("stage");
    let out = run(pilot(&py, &cache, &stage)
        .arg("-c")
        .arg("import mod_x")
        .current_dir(&app));
    assert_eq!(out.stdout, b"mod_x says 45\n");
    let pyc = app.join("__pycache__/mod_x.cpython-311.pyc");
    let on_disk = std::fs::read(&pyc).expect("the pilot compiled mod_x");
    let loaded = load(&cache);
    let view = loaded.view();
    let e = view
        .lookup(bytes(&pyc))
        .expect("the compiled .pyc is in the cache");
    assert!(!e.is_excluded(), "a .pyc is self-validating, not excluded");
    assert!(
        matches!(e.lstat(), Some(Ok(st)) if st.is_reg()),
        "the .pyc is recorded as present: {:?}",
        e.lstat()
    );
    let blob = e.blob().expect("the .pyc has contents in the cache");
    assert_eq!(view.blob_bytes(blob).as_deref(), Some(&on_disk[..]));
    for p in [app.clone(), app.join("__pycache__")] {
        let e = view.lookup(bytes(&p)).unwrap();
        assert!(!e.is_excluded(), "{} excluded", p.display());
    }

    let trace = d.join("trace.txt");
    let out = run(scrubbed("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg("env")
        .arg("DLFM_OP=read-cache")
        .arg(format!("LD_PRELOAD={}", lib().display()))
        .arg(format!("FMCACHE_FILE={}", cache.display()))
        .arg(format!("FMCACHE_STAGE_DIR={}", stage.display()))
        .arg(&py)
        .arg("-c")
        .arg("import mod_x")
        .current_dir(&app));
    assert_eq!(out.stdout, b"mod_x says 45\n");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("fmcache"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let app_s = app.display().to_string();
    let writes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&app_s) && !l.contains(&stage.display().to_string()))
        .filter(|l| {
            l.contains("O_WRONLY")
                || l.contains("O_RDWR")
                || l.contains("O_CREAT")
                || l.contains("mkdir")
                || l.contains("rename")
                || l.contains("creat(")
        })
        .collect();
    assert!(
        writes.is_empty(),
        "the served run wrote under {app_s}:\n{}",
        writes.join("\n")
    );
    let pyc_s = pyc.display().to_string();
    let real_opens: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("\"{pyc_s}\"")))
        .collect();
    assert!(
        real_opens.is_empty(),
        "the .pyc was read from the tree, not served:\n{}",
        real_opens.join("\n")
    );
    // Served: opened read-only at `<stage>/<id>/root<pyc>`.
    let stage_s = stage.display().to_string();
    let staged_suffix = format!("/root{pyc_s}\"");
    assert!(
        text.lines().any(|l| l.contains("openat(")
            && l.contains(&stage_s)
            && l.contains(&staged_suffix)
            && l.contains("O_RDONLY")),
        "the served run never opened the staged .pyc under {stage_s}"
    );
    clean(&d);
}

/// f. A file the pilot writes is excluded, its directory walk-only; a
/// file it only reads in that directory keeps its contents.
#[test]
fn written_paths_are_excluded() {
    let d = test_dir("exclusion");
    mkdirs(&d, &["cache", "w"]);
    let w = d.join("w");
    let input = content("input file", 500);
    std::fs::write(w.join("in.txt"), &input).unwrap();
    let cache = d.join("cache/fmcache.dat");
    let out = run(pilot("/bin/sh", &cache, &d.join("stage"))
        .arg("-c")
        .arg("cat in.txt && ls -l . >/dev/null && echo done > out.txt")
        .current_dir(&w));
    assert_eq!(out.stdout, input);
    assert_eq!(std::fs::read(w.join("out.txt")).unwrap(), b"done\n");
    let loaded = load(&cache);
    let view = loaded.view();
    let out_e = view
        .lookup(bytes(&w.join("out.txt")))
        .expect("out.txt is in the cache, marked");
    assert!(out_e.is_excluded(), "out.txt (written) is not excluded");
    let dir_e = view
        .lookup(bytes(&w))
        .expect("the directory is in the cache");
    // Its listing and times changed: kept for realpath's walk only, so
    // its stat and listing pass through.
    assert!(
        dir_e.is_walk() && !dir_e.is_excluded(),
        "the directory of a written file is not walk-only"
    );
    let in_e = view.lookup(bytes(&w.join("in.txt"))).expect("in.txt");
    assert!(!in_e.is_excluded(), "in.txt was only read");
    let blob = in_e.blob().expect("in.txt keeps its contents");
    assert_eq!(view.blob_bytes(blob).as_deref(), Some(&input[..]));
    clean(&d);
}

/// g. FMCACHE_EXCLUDE, FMCACHE_INCLUDE and FMCACHE_MAX_FILE.
#[test]
fn scope_settings_are_honoured() {
    let d = test_dir("scope");
    mkdirs(&d, &["c1", "c2", "c3", "tree/x/deep", "tree/y/deep"]);
    let tree = d.join("tree");
    let (x, y) = (tree.join("x"), tree.join("y"));
    for dir in [&x, &y] {
        std::fs::write(dir.join("a.txt"), content("a", 300)).unwrap();
        std::fs::write(dir.join("deep/b.txt"), content("b", 200)).unwrap();
    }
    let big = content("big", 4096);
    let small = content("small", 100);
    std::fs::write(y.join("big.bin"), &big).unwrap();
    std::fs::write(y.join("small.txt"), &small).unwrap();
    let script = format!(
        "cat '{x}/a.txt' '{x}/deep/b.txt' '{y}/a.txt' '{y}/deep/b.txt' '{y}/big.bin' '{y}/small.txt' >/dev/null && ls -l '{x}' '{y}' '{x}/deep' '{y}/deep' >/dev/null",
        x = x.display(),
        y = y.display()
    );
    let go = |cache: &Path, var: &str, val: &OsStr| {
        run(pilot("/bin/sh", cache, &d.join("stage"))
            .arg("-c")
            .arg(&script)
            .env(var, val)
            .current_dir(&tree));
        load(cache)
    };

    // Exclude x: nothing under it; y is there.
    let c1 = d.join("c1/fmcache.dat");
    let l = go(&c1, "FMCACHE_EXCLUDE", x.as_os_str());
    let v = l.view();
    let inside: Vec<String> = v
        .entries()
        .filter(|e| under(e.path(), bytes(&x)))
        .map(|e| String::from_utf8_lossy(e.path()).into_owned())
        .collect();
    assert!(inside.is_empty(), "excluded, yet cached: {inside:?}");
    assert!(v
        .lookup(bytes(&y.join("deep/b.txt")))
        .is_some_and(|e| e.blob().is_some()));
    assert!(v.lookup(bytes(&tree)).is_some());

    // Include y alone: y and below are served, nothing else of the test's
    // directory (not x, not the ancestors: they are data).
    let c2 = d.join("c2/fmcache.dat");
    let l = go(&c2, "FMCACHE_INCLUDE", y.as_os_str());
    let v = l.view();
    let outside: Vec<String> = v
        .entries()
        .filter(|e| under(e.path(), bytes(&d)) && !under(e.path(), bytes(&y)) && !e.is_walk())
        .map(|e| String::from_utf8_lossy(e.path()).into_owned())
        .collect();
    assert!(
        outside.is_empty(),
        "outside the include list, yet cached: {outside:?}"
    );
    assert!(v
        .lookup(bytes(&y.join("a.txt")))
        .is_some_and(|e| e.blob().is_some()));
    assert!(v.lookup(bytes(&y)).is_some_and(|e| e.listing().is_some()));
    assert!(v.lookup(bytes(&x.join("a.txt"))).is_none());
    // Its ancestors are kept for realpath's walk only.
    assert!(v.lookup(bytes(&tree)).is_some_and(|e| e.is_walk()));

    // 1K limit: the big file has its stat, not its bytes.
    let c3 = d.join("c3/fmcache.dat");
    let l = go(&c3, "FMCACHE_MAX_FILE", OsStr::new("1K"));
    let v = l.view();
    let e = v
        .lookup(bytes(&y.join("big.bin")))
        .expect("big.bin recorded");
    match e.follow() {
        Some(Ok(st)) => assert_eq!(st.size, big.len() as i64),
        other => panic!("big.bin stat: {other:?}"),
    }
    assert!(
        e.blob().is_none(),
        "a file over FMCACHE_MAX_FILE has contents cached"
    );
    let e = v.lookup(bytes(&y.join("small.txt"))).unwrap();
    assert_eq!(
        e.blob().and_then(|b| v.blob_bytes(b)).as_deref(),
        Some(&small[..])
    );
    clean(&d);
}

/// h. A later pilot process that needs only the stat of a directory an
/// earlier one listed (here: the merge listed it, as the parent of a file
/// the pilot read) keeps that listing: the listing moved the directory's
/// atime, which is no change of the directory.
#[test]
fn later_pilots_keep_earlier_listings() {
    let d = test_dir("later");
    mkdirs(&d, &["cache", "tree/dir/sub"]);
    let dir = d.join("tree/dir");
    std::fs::write(dir.join("f.txt"), b"first\n").unwrap();
    std::fs::write(dir.join("sub/g.txt"), b"second\n").unwrap();
    let cache = d.join("cache/fmcache.dat");
    let stage = d.join("stage");
    let listed = |what: &str| {
        let l = load(&cache);
        let v = l.view();
        let e = v.lookup(bytes(&dir)).expect("dir is in the cache");
        let names: Option<BTreeSet<String>> = e.listing().map(|l| {
            l.iter()
                .map(|(n, _, _)| String::from_utf8_lossy(n).into_owned())
                .collect()
        });
        let want: BTreeSet<String> = [".", "..", "f.txt", "sub"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, Some(want), "{what}: listing of {}", dir.display());
    };
    run(pilot("/bin/cat", &cache, &stage).arg(dir.join("f.txt")));
    listed("after the first pilot");
    run(pilot("/bin/cat", &cache, &stage).arg(dir.join("sub/g.txt")));
    listed("after a second pilot that needed only its stat");
    clean(&d);
}

/// `fmcache record`'s final merge (of the journal a killed pilot left)
/// draws a progress bar under a pseudo-terminal (util-linux `script`),
/// and writes nothing of it when stderr is not a terminal.
#[test]
fn record_merge_shows_progress_on_a_terminal() {
    let d = test_dir("progress");
    clean(&d);
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..300 {
        std::fs::write(tree.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let stage = d.join("stage");
    // The shell stats every file (`[ -e ]` is a builtin: its own journal),
    // then is killed: the journal is left for record's final merge.
    let record = |cache: &Path| {
        format!(
            "{} record --cache {} --include {} -- sh -c 'for f in {}/*; do [ -e \"$f\" ]; done; kill -9 $$'",
            bin().display(),
            cache.display(),
            tree.display(),
            tree.display()
        )
    };

    let plain = d.join("plain.dat");
    let o = fmcache(&stage)
        .args(["record", "--cache"])
        .arg(&plain)
        .arg("--include")
        .arg(&tree)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "for f in {}/*; do [ -e \"$f\" ]; done; kill -9 $$",
            tree.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(128 + 9), "{err}");
    assert!(err.contains("left-over journals"), "{err}");
    assert!(!err.contains("merge [") && !err.contains('\x1b'), "{err}");

    let shown = d.join("shown.dat");
    let o = scrubbed("script")
        .env("FMCACHE_STAGE_DIR", &stage)
        .env("TERM", "xterm")
        .args(["-qec", &record(&shown), "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(128 + 9), "{out}");
    assert!(out.contains("left-over journals"), "{out}");
    assert!(out.contains("merge ["), "no bar in {out:?}");
    assert!(out.contains(" paths ("), "no count in {out:?}");
    // The same cache either way.
    let a = load(&plain);
    let b = load(&shown);
    let count = |l: &Loaded| {
        CacheView::open(l.bytes(), Verify::Full)
            .unwrap()
            .entries()
            .filter(|e| under(e.path(), tree.as_os_str().as_bytes()))
            .count()
    };
    assert_eq!(count(&a), count(&b));
    assert!(count(&a) > 300, "{}", count(&a));
}
