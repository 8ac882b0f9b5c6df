//! Differential tests: the C probe program prints every answer it gets
//! (stat fields and raw struct hash, errno names, file bytes' hashes,
//! listings, link targets) and a run served from the cache must print
//! exactly what a native run prints. Python scripts (venv) cover the
//! calls the probe cannot make (rename, unlink, fchmod, ...), comparing a
//! served tree with an identical native one.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fmcache_tests::{
    assert_same, fixture, noise, read_stats, tok, Cache, Fixture, Out, Run, Trace,
};

const STAT_OPS: &[&str] = &[
    "stat",
    "lstat",
    "stat64",
    "lstat64",
    "fstatat",
    "fstatat_nofollow",
    "fstatat64",
    "fstatat64_nofollow",
    "statx",
    "statx_nofollow",
    "__xstat",
    "__lxstat",
    "__xstat64",
    "__lxstat64",
    "__fxstatat",
    "__fxstatat64",
    "__fxstatat64_nofollow",
];
const ACCESS_OPS: &[&str] = &["access", "faccessat", "euidaccess"];
const ACCESS_MODES: &[&str] = &["F", "R", "W", "X", "RX"];
const OPEN_OPS: &[&str] = &[
    "open",
    "open64",
    "openat",
    "openat64",
    "__open_2",
    "__open64_2",
    "__openat_2",
];
const OPEN_FLAGS: &[&str] = &[
    "RDONLY",
    "RDONLY|CLOEXEC",
    "RDONLY|DIRECTORY",
    "RDONLY|NOFOLLOW",
];
/// Listing ops served from a recorded listing. Not `readdir_full` and
/// `telldir_full`: they print d_off / telldir cookies, which are opaque
/// per-file-system values (ext4 hashes) a served stream need not copy.
const LIST_OPS: &[&str] = &[
    "readdir",
    "readdir32",
    "readdir_r",
    "readdir64_r",
    "scandir",
    "scandir64",
    "telldir",
    "rewinddir",
];
/// Listing ops that need a real descriptor on the directory.
const LIST_FD_OPS: &[&str] = &["fdopendir", "dirfd"];
const LINK_OPS: &[&str] = &["readlink", "readlinkat", "readlink_small"];
const NULL_OPS: &[&str] = &[
    "stat_null",
    "lstat_null",
    "stat64_null",
    "fstatat_null",
    "statx_null",
    "open_null",
    "openat_null",
    "access_null",
    "faccessat_null",
    "readlink_null",
    "realpath_null",
    "chdir_null",
    "__xstat_null",
];

/// The longest name a component may have (NAME_MAX).
const LONG_OK: usize = 255;

fn long_name(n: usize) -> String {
    "n".repeat(n)
}

/// The tree every differential test probes: file sizes 0 .. 1 MiB,
/// permission corner cases, every kind of symlink, odd names.
fn build_tree(t: &Path) {
    let w = |rel: &str, bytes: &[u8]| fs::write(t.join(rel), bytes).unwrap();
    let mode = |rel: &str, m: u32| {
        fs::set_permissions(t.join(rel), fs::Permissions::from_mode(m)).unwrap()
    };
    w("zero", b"");
    w("small", b"hello world\n");
    w("k100", &noise(100 << 10, 1));
    w("m1", &noise(1 << 20, 2));
    w("m000", b"secret");
    mode("m000", 0o000);
    w("x0111", b"#!/bin/sh\necho hi\n");
    mode("x0111", 0o111);
    w("with space", b"spaced\n");
    w("caf\u{e9}", b"utf-8 name\n");
    w(&long_name(100), b"100\n");
    w(&long_name(LONG_OK), b"255\n");
    fs::create_dir(t.join("sub")).unwrap();
    for i in 0..20 {
        w(&format!("sub/f{i:02}"), &noise(i * 37, i as u64 + 10));
    }
    fs::create_dir(t.join("sub/deep")).unwrap();
    w("sub/deep/leaf", b"leaf\n");
    fs::create_dir(t.join("empty")).unwrap();
    symlink("small", t.join("link_file")).unwrap();
    symlink(t.join("k100"), t.join("abs_link")).unwrap();
    symlink("sub/f07", t.join("rel_into_sub")).unwrap();
    symlink("sub", t.join("link_dir")).unwrap();
    symlink("link_file", t.join("link_link")).unwrap();
    symlink("../small", t.join("sub/up")).unwrap();
    symlink("nowhere", t.join("dangling")).unwrap();
    symlink("loop2", t.join("loop1")).unwrap();
    symlink("loop1", t.join("loop2")).unwrap();
}

/// Paths of existing things, relative to the tree.
fn existing() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "zero",
        "small",
        "k100",
        "m1",
        "m000",
        "x0111",
        "with space",
        "caf\u{e9}",
        "sub",
        "sub/f00",
        "sub/f19",
        "sub/deep",
        "sub/deep/leaf",
        "sub/up",
        "empty",
        "link_file",
        "abs_link",
        "rel_into_sub",
        "link_dir",
        "link_link",
        "dangling",
        "loop1",
        "loop2",
        "link_dir/f05",
        "sub/../small",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(long_name(100));
    v.push(long_name(LONG_OK));
    v
}

/// Paths that fail, relative to the tree.
fn missing() -> Vec<String> {
    vec![
        "sub/missing".into(),      // absent from a listed directory
        "nodir/x".into(),          // under a missing directory
        "small/x".into(),          // through a regular file: ENOTDIR
        "small/".into(),           // trailing slash on a file
        "link_file/".into(),       // ... on a symlink to a file
        "link_dir/".into(),        // ... on a symlink to a directory
        "sub/".into(),             // trailing slash on a directory
        long_name(LONG_OK + 1),    // ENAMETOOLONG
        "link_dir/missing".into(), // through a symlinked directory
        "dangling/x".into(),       // through a dangling link
        "loop1/x".into(),          // through a loop
        "empty/missing".into(),    // absent from an empty directory
    ]
}

/// Joins `rel` to the tree (`""` is the tree itself).
fn at(t: &Path, rel: &str) -> String {
    let mut s = t.to_string_lossy().into_owned();
    if !rel.is_empty() {
        s.push('/');
        s.push_str(rel);
    }
    s
}

/// Whether opening `p` (natively) would give a descriptor on a directory,
/// which no cache can hand out: such opens always reach the kernel.
fn opens_a_directory(p: &Path, nofollow: bool) -> bool {
    let is_link = fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if nofollow && is_link && !p.to_string_lossy().ends_with('/') {
        return false;
    }
    fs::metadata(p).is_ok_and(|m| m.is_dir())
}

/// A probe batch, split by what the library is meant to do with it.
struct Batch {
    /// Answered from the cache without touching the tree.
    served: String,
    /// Needs the kernel by design: descriptors on directories (open,
    /// fopen, fdopendir, dirfd), chdir/fchdir and what follows them,
    /// realpath(p, buf) failures (glibc leaves a partial path in `buf`),
    /// failing freopen (libc closes the stream), readlink with a trailing
    /// slash.
    kernel: String,
}

impl Batch {
    fn all(&self) -> String {
        format!("{}{}", self.served, self.kernel)
    }
}

/// The batch of test (a): every op on every path. Relative lines are
/// relative to the fixture directory (the runs' cwd), then to `tree/sub`
/// after a chdir.
fn full_batch(fx: &Fixture) -> Batch {
    let t = &fx.tree;
    let mut served = String::new();
    let mut kernel = String::new();
    let mut abs: Vec<String> = existing().iter().map(|r| at(t, r)).collect();
    abs.extend(missing().iter().map(|r| at(t, r)));
    // Relative to the cwd (the fixture directory).
    let rel: Vec<String> = [
        "tree/small",
        "tree/sub/f03",
        "tree/link_dir/f01",
        "./tree/sub",
        "tree/nope",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut line = |to_kernel: bool, op: &str, p: &str, arg: Option<&str>| {
        let dst = if to_kernel { &mut kernel } else { &mut served };
        dst.push_str(op);
        dst.push(' ');
        dst.push_str(&tok(p));
        if let Some(a) = arg {
            dst.push(' ');
            dst.push_str(a);
        }
        dst.push('\n');
    };
    for p in abs.iter().chain(rel.iter()) {
        let native = if p.starts_with('/') {
            PathBuf::from(p)
        } else {
            fx.dir.join(p)
        };
        let is_dir = fs::metadata(&native).is_ok_and(|m| m.is_dir());
        for op in STAT_OPS {
            line(false, op, p, None);
        }
        for op in ACCESS_OPS {
            for m in ACCESS_MODES {
                line(false, op, p, Some(m));
            }
        }
        for op in OPEN_OPS {
            for f in OPEN_FLAGS {
                let dir = opens_a_directory(&native, f.contains("NOFOLLOW"));
                line(dir, op, p, Some(f));
            }
        }
        for op in ["fopen", "fopen64"] {
            for m in ["r", "re"] {
                line(is_dir, op, p, Some(m));
            }
        }
        // A failing freopen passes through: libc must close the stream.
        let is_file = fs::metadata(&native).is_ok_and(|m| m.is_file());
        line(!is_file, "freopen", p, Some("r"));
        for op in LIST_OPS {
            line(false, op, p, None);
        }
        for op in LIST_FD_OPS {
            line(is_dir, op, p, None);
        }
        for op in LINK_OPS {
            line(p.ends_with('/'), op, p, None);
        }
        let resolves = fs::canonicalize(&native).is_ok();
        line(!resolves, "realpath", p, None);
        line(false, "canonicalize_file_name", p, None);
    }
    line(false, "fdnum", &at(t, "small"), None);
    line(false, "fdnum", &at(t, "m1"), Some("RDONLY|CLOEXEC"));
    line(false, "getcwd", "-", None);
    line(false, "getcwd_small", "-", Some("4"));
    for op in NULL_OPS {
        line(false, op, "-", None);
    }
    // chdir into the tree, then relative paths from there.
    kernel.push_str(&format!("chdir {}\n", tok(at(t, "sub"))));
    for l in [
        "getcwd -",
        "stat f01",
        "lstat up",
        "stat up",
        "stat ../small",
        "statx deep/leaf",
        "access f02 R",
        "open f02 RDONLY",
        "open up RDONLY|NOFOLLOW",
        "fopen deep/leaf r",
        "readdir .",
        "readdir deep",
        "scandir ..",
        "readlink up",
        "realpath ../link_dir/up",
        "canonicalize_file_name ./deep/../f04",
        "stat missing",
        "stat ../nodir/x",
        "rel_fstatat deep leaf",
        "rel_openat .. small",
        "chdir deep",
        "getcwd -",
        "stat leaf",
        "fchdir ../..",
        "getcwd -",
        "stat sub/f05",
        "open link_dir/f06 RDONLY",
        "readdir sub",
    ] {
        kernel.push_str(l);
        kernel.push('\n');
    }
    Batch { served, kernel }
}

/// Builds the tree, compiles the probe, and does the native warm-up run
/// (first reads move atimes; every later native run prints the same).
fn prepare(name: &str) -> (Fixture, PathBuf, Batch) {
    let fx = fixture!(name);
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let batch = full_batch(&fx);
    Run::probe(&probe, &batch.all())
        .cwd(&fx.dir)
        .run()
        .ok("native warm-up");
    (fx, probe, batch)
}

fn check_ok(o: &Out, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\nstderr: {}",
        o.status,
        o.stderr_str()
    );
}

/// What [`native_pilot_served`] ran.
struct ThreeRuns {
    native: Out,
    pilot: Out,
    stats: fmcache_tests::Stats,
}

/// The sequence most tests here share, in `fx.dir`: a native warm-up
/// (first reads move atimes), the native run, the pilot, the served run
/// with its statistics; the cache is `fx.cache("c")`. Asserts that each
/// run succeeds, and that the served run prints exactly what the native
/// run prints and nothing on stderr.
fn native_pilot_served(fx: &Fixture, probe: &Path, batch: &str) -> ThreeRuns {
    let run = || Run::probe(probe, batch).cwd(&fx.dir);
    run().run().ok("native warm-up");
    let native = run().run().ok("native");
    let cache = fx.cache("c");
    let pilot = run().record(&cache).run().ok("pilot");
    assert!(cache.file.is_file(), "the pilot wrote no cache");
    let stats = fx.out.join("serve.stats");
    let served = run().serve(&cache).stats(&stats).run().ok("served");
    assert_same(
        "served vs native",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_eq!(served.stderr_str(), "", "the served run wrote to stderr");
    let stats = read_stats(&stats);
    ThreeRuns {
        native,
        pilot,
        stats,
    }
}

/// (a) Every op on every path: the served run prints exactly what the
/// native run prints.
#[test]
fn served_batch_equals_native() {
    let (fx, probe, batch) = prepare("diff_full");
    let runs = native_pilot_served(&fx, &probe, &batch.all());
    eprintln!("served run: {:?}", runs.stats);
    assert!(
        runs.stats.served > 0,
        "nothing was served: {:?}",
        runs.stats
    );
}

/// Recording must not change what the program sees either: the pilot run
/// of the whole batch prints exactly what a native run prints (this
/// includes `fdnum`, the descriptor numbers the program gets).
#[test]
fn pilot_run_equals_native() {
    let (fx, probe, batch) = prepare("diff_pilot");
    let runs = native_pilot_served(&fx, &probe, &batch.all());
    assert_eq!(runs.pilot.stderr_str(), "", "pilot stderr");
    assert_same(
        "pilot vs native",
        "native",
        &runs.native.stdout,
        "pilot",
        &runs.pilot.stdout,
    );
}

fn trace_batch(
    fx: &Fixture,
    probe: &Path,
    batch: &str,
    mode: Option<&Cache>,
    label: &str,
) -> (Out, Trace) {
    let dir = fx.trace_dir(label);
    let run = Run::probe(probe, batch).cwd(&fx.dir);
    let run = match mode {
        Some(c) => run.serve(c),
        None => run.native(),
    };
    run.run_traced(&dir, &[fx.tree.as_path()])
}

/// (b) The served part of the batch makes no file-system call at all on
/// the tree (strace, attributed to the program rather than ld.so).
#[test]
fn served_batch_makes_no_calls_on_the_tree() {
    let (fx, probe, batch) = prepare("diff_strace");
    let cache = fx.cache("c");
    Run::probe(&probe, &batch.all())
        .cwd(&fx.dir)
        .record(&cache)
        .run()
        .ok("pilot");

    let (native, nt) = trace_batch(&fx, &probe, &batch.served, None, "native");
    check_ok(&native, "native traced");
    eprintln!(
        "native: total={} on_tree={} program={} loader={}",
        nt.total, nt.on_roots, nt.program, nt.loader
    );
    assert!(
        nt.program > 100,
        "sanity: natively the batch makes calls on the tree, got {}",
        nt.program
    );

    let (served, st) = trace_batch(&fx, &probe, &batch.served, Some(&cache), "served");
    check_ok(&served, "served traced");
    eprintln!(
        "served: total={} on_tree={} program={} loader={}",
        st.total, st.on_roots, st.program, st.loader
    );
    assert_eq!(
        st.program,
        0,
        "the served run made {} calls on the tree:\n{}",
        st.program,
        st.first_calls(20)
    );
    assert_same(
        "served vs native (traced)",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
}

/// (c) A directory created after the pilot, in a directory the pilot
/// never probed inside (so never listed), is unknown to the cache: its probes pass through and see
/// the live tree.
#[test]
fn unknown_paths_pass_through() {
    let fx = fixture!("diff_unknown");
    let t = &fx.tree;
    // Probing top/known/.. lists top/known and top (the directories probes
    // happened in) but leaves the tree itself unlisted.
    fs::create_dir_all(t.join("top/known")).unwrap();
    fs::write(t.join("top/known/a"), b"aaa\n").unwrap();
    let probe = fx.c_program("probe");
    let pilot_batch = format!(
        "stat {k}/a\nopen {k}/a RDONLY\nreaddir {k}\nstat {k}/nope\n",
        k = tok(t.join("top/known"))
    );
    let cache = fx.cache("c");
    Run::probe(&probe, &pilot_batch)
        .cwd(&fx.dir)
        .run()
        .ok("warm-up");
    Run::probe(&probe, &pilot_batch)
        .cwd(&fx.dir)
        .record(&cache)
        .run()
        .ok("pilot");

    fs::create_dir(t.join("fresh")).unwrap();
    fs::write(t.join("fresh/new.txt"), b"created after the pilot\n").unwrap();
    let f = tok(t.join("fresh"));
    let batch = format!(
        "{pilot_batch}stat {f}\nstat {f}/new.txt\nlstat {f}/new.txt\nstatx {f}/new.txt\n\
         access {f}/new.txt R\nopen {f}/new.txt RDONLY\nfopen {f}/new.txt r\nreaddir {f}\n\
         scandir {f}\nrealpath {f}/new.txt\nstat {f}/other\n"
    );
    Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .run()
        .ok("warm-up 2");
    let native = Run::probe(&probe, &batch).cwd(&fx.dir).run().ok("native");
    let stats = fx.out.join("serve.stats");
    let served = Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    assert_same(
        "served vs native",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_eq!(served.stderr_str(), "");
    assert!(
        native.stdout_str().contains("fread=24:"),
        "sanity: the new file is readable natively:\n{}",
        native.stdout_str()
    );
    let s = read_stats(&stats);
    assert!(s.served > 0, "the recorded probes are served: {s:?}");
    assert!(
        s.missed + s.passthrough > 0,
        "the new paths reach the kernel: {s:?}"
    );
}

/// (c) The cache is a snapshot: a name created after the pilot in a
/// directory the pilot listed is answered ENOENT from the listing, without
/// asking the kernel, and the served listing is the recorded one.
#[test]
fn snapshot_new_name_in_a_listed_directory_is_served_enoent() {
    let fx = fixture!("diff_snapshot");
    let t = &fx.tree;
    fs::create_dir(t.join("listed")).unwrap();
    fs::write(t.join("listed/a"), b"a\n").unwrap();
    let probe = fx.c_program("probe");
    let l = tok(t.join("listed"));
    let pilot_batch = format!("stat {l}/a\nreaddir {l}\n");
    let cache = fx.cache("c");
    Run::probe(&probe, &pilot_batch)
        .cwd(&fx.dir)
        .run()
        .ok("warm-up");
    let pilot = Run::probe(&probe, &pilot_batch)
        .cwd(&fx.dir)
        .record(&cache)
        .run()
        .ok("pilot");

    fs::write(t.join("listed/late.txt"), b"late\n").unwrap();
    let late = format!("stat {l}/late.txt\n");
    let native = Run::probe(&probe, &late).cwd(&fx.dir).run().ok("native");
    assert!(
        !native.stdout_str().contains("ERR"),
        "sanity: the late file exists natively: {}",
        native.stdout_str()
    );
    let stats = fx.out.join("serve.stats");
    let served = Run::probe(&probe, &format!("{late}{pilot_batch}"))
        .cwd(&fx.dir)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    let out = served.stdout_str();
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("stat {l}/late.txt -> ERR ENOENT"),
        "the snapshot answers ENOENT for a name its listing lacks"
    );
    let rest: String = out.lines().skip(1).map(|s| format!("{s}\n")).collect();
    assert_same(
        "served vs pilot",
        "pilot",
        &pilot.stdout,
        "served",
        rest.as_bytes(),
    );
    let s = read_stats(&stats);
    assert_eq!(
        s.missed + s.passthrough,
        0,
        "all three probes served: {s:?}"
    );
    assert!(s.served >= 3, "all three probes served: {s:?}");
}

/// Sets the access time of `p` one day ahead: with relatime, reading it
/// then never moves its atime, even after its mtime changes.
fn atime_ahead(p: &Path) {
    let ahead = SystemTime::now() + Duration::from_secs(86_400);
    let f = fs::File::open(p).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(ahead))
        .unwrap();
}

/// (d) A process that changes cached paths stops trusting them: after it
/// creates a file in a listed directory and truncates a cached file, its
/// answers equal what the kernel says, while a new process still gets
/// the snapshot.
#[test]
fn process_stops_trusting_what_it_changed() {
    let fx = fixture!("diff_invalidate");
    let t = &fx.tree;
    fs::create_dir(t.join("d")).unwrap();
    fs::write(t.join("d/a"), b"hello world\n").unwrap();
    fs::write(t.join("d/b"), b"bee\n").unwrap();
    for p in [t.clone(), t.join("d"), t.join("d/a"), t.join("d/b")] {
        atime_ahead(&p);
    }
    let probe = fx.c_program("probe");
    let d = tok(t.join("d"));
    // Never reads d/new: reading a fresh file would move its atime.
    let look = format!(
        "stat {d}\nreaddir {d}\nscandir {d}\nrewinddir {d}\nstat {d}/new\nlstat {d}/new\n\
         statx {d}/new\naccess {d}/new F\nfaccessat {d}/new R\ncanonicalize_file_name {d}/new\n\
         stat {d}/a\nstatx {d}/a\naccess {d}/a R\nopen {d}/a RDONLY\nfopen {d}/a r\n\
         open {d}/b RDONLY\n"
    );
    let change = format!("open {d}/new WRONLY|CREAT\nopen {d}/a WRONLY|TRUNC\n");
    let cache = fx.cache("c");
    Run::probe(&probe, &look).cwd(&fx.dir).run().ok("warm-up");
    let before = Run::probe(&probe, &look)
        .cwd(&fx.dir)
        .run()
        .ok("native before");
    Run::probe(&probe, &look)
        .cwd(&fx.dir)
        .record(&cache)
        .run()
        .ok("pilot");

    let served = Run::probe(&probe, &format!("{look}{change}{look}"))
        .cwd(&fx.dir)
        .serve(&cache)
        .run()
        .ok("served");
    assert_eq!(served.stderr_str(), "");
    let after = Run::probe(&probe, &look)
        .cwd(&fx.dir)
        .run()
        .ok("native after");

    let text = served.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    let n = look.lines().count();
    assert_eq!(
        lines.len(),
        2 * n + 2,
        "served output:\n{}",
        served.stdout_str()
    );
    let join = |l: &[&str]| l.iter().map(|s| format!("{s}\n")).collect::<String>();
    assert_same(
        "before the change",
        "native",
        &before.stdout,
        "served",
        join(&lines[..n]).as_bytes(),
    );
    for l in &lines[n..n + 2] {
        assert!(!l.contains("-> ERR"), "the change failed: {l}");
    }
    assert_same(
        "after the change, same process",
        "native",
        &after.stdout,
        "served",
        join(&lines[n + 2..]).as_bytes(),
    );
    assert_ne!(
        before.stdout, after.stdout,
        "sanity: the change is visible natively"
    );

    // A new process is served the snapshot again (the documented design:
    // the pilot's tree must not change under a cache).
    let again = Run::probe(&probe, &look)
        .cwd(&fx.dir)
        .serve(&cache)
        .run()
        .ok("served again");
    assert_same(
        "new process",
        "snapshot",
        &before.stdout,
        "served",
        &again.stdout,
    );
}

/// (e) Paths relative to a directory descriptor and to a cwd changed by
/// chdir/fchdir are answered as natively; after a chdir into the tree,
/// relative probes are served.
#[test]
fn relative_and_dirfd_relative_paths() {
    let fx = fixture!("diff_relative");
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let t = &fx.tree;
    let s = tok(t.join("sub"));
    let mut batch = String::new();
    for op in [
        "rel_openat",
        "rel_fstatat",
        "rel_fstatat_nofollow",
        "rel_statx",
        "rel_readlinkat",
        "rel_faccessat",
        "rel_fdopendir",
    ] {
        for (dir, name) in [
            (s.clone(), "f01"),
            (s.clone(), "up"),
            (s.clone(), "deep"),
            (s.clone(), "missing"),
            (s.clone(), "../small"),
            (tok(t.join("link_dir")), "f02"),
            (tok(t.join("small")), "x"),
            (tok(t.join("nodir")), "x"),
        ] {
            batch.push_str(&format!("{op} {dir} {name}\n"));
        }
    }
    let relative = format!(
        "chdir {s}\ngetcwd -\nstat f01\nlstat up\nstat up\nstat ../small\nopen f03 RDONLY\n\
         readdir deep\nrealpath up\nstat missing\nfchdir deep\ngetcwd -\nstat leaf\n\
         stat ../f04\nchdir ../../link_dir\ngetcwd -\nstat f05\nreaddir .\n"
    );
    batch.push_str(&relative);
    let cache = fx.cache("c");
    native_pilot_served(&fx, &probe, &batch);

    // After a chdir, relative probes are served, not passed through.
    let stats = fx.out.join("rel.stats");
    let only = format!("chdir {s}\nstat f01\nlstat up\nstat ../small\nstat missing\n");
    let o = Run::probe(&probe, &only)
        .cwd(&fx.dir)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served relative");
    let st = read_stats(&stats);
    assert!(
        st.served >= 4 && st.missed == 0,
        "the four relative stats after chdir must be served: {st:?}\n{}",
        o.stdout_str()
    );
}

/// A 256-byte component fails ENAMETOOLONG; realpath/canonicalize_file_name
/// of such a path can be answered from the cache like stat is (the walk
/// reaches a recorded directory, then an over-long name).
#[test]
fn realpath_of_an_over_long_name_is_served() {
    let fx = fixture!("diff_longname");
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let p = tok(fx.tree.join(long_name(LONG_OK + 1)));
    let batch = format!("stat {p}\ncanonicalize_file_name {p}\n");
    let native = Run::probe(&probe, &batch).cwd(&fx.dir).run().ok("native");
    assert!(
        native.stdout_str().contains("canonicalize_file_name")
            && native.stdout_str().ends_with("ERR ENAMETOOLONG\n"),
        "sanity: {}",
        native.stdout_str()
    );
    let cache = fx.cache("c");
    Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .record(&cache)
        .run()
        .ok("pilot");
    let (served, st) = Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .serve(&cache)
        .run_traced(&fx.trace_dir("served"), &[fx.tree.as_path()]);
    assert_same(
        "served vs native",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_eq!(
        st.program,
        0,
        "the served run made calls on the tree:\n{}",
        st.first_calls(10)
    );
}

/// What a Python process sees of a tree, printed relative to its cwd and
/// without times or inode numbers, so that two identical trees print the
/// same. `all` also changes the tree half-way (mkdir, create, unlink,
/// rename of a file and of a directory, symlink, truncate, chmod, rmdir).
const PY_CHANGES: &str = r#"
def st(p):
    s = os.stat(p)
    return oct(s.st_mode), s.st_size
def lst(p):
    s = os.lstat(p)
    return oct(s.st_mode), s.st_size
def read(p):
    with open(p, "rb") as f:
        return f.read()
def look():
    for d in ["d", "d/sub", "d/sub2", "d/newdir", "d/empty", "e"]:
        show("listdir " + d, lambda: sorted(os.listdir(d)))
        show("scandir " + d, lambda: sorted((x.name, x.is_dir(), x.is_symlink()) for x in os.scandir(d)))
    for p in ["d", "d/a", "d/b", "e/b", "d/c", "d/sub/f", "d/sub2/f", "d/newdir/f", "d/ln", "d/empty", "d/sub/deep/g", "d/sub2/deep/g"]:
        show("stat " + p, lambda: st(p))
        show("lstat " + p, lambda: lst(p))
        show("access " + p, lambda: os.access(p, os.R_OK))
        show("read " + p, lambda: read(p))
        show("realpath " + p, lambda: os.path.relpath(os.path.realpath(p)))
    show("readlink d/ln", lambda: os.readlink("d/ln"))
look()
if sys.argv[1] == "all":
    print("-- changes")
    os.mkdir("d/newdir")
    with open("d/newdir/f", "w") as f:
        f.write("new file\n")
    os.unlink("d/a")
    os.rename("d/sub", "d/sub2")
    os.rename("d/b", "e/b")
    os.symlink("c", "d/ln")
    os.truncate("d/c", 3)
    os.chmod("d/c", 0o600)
    os.rmdir("d/empty")
    look()
"#;

fn py_tree(t: &Path) {
    fs::create_dir_all(t.join("d/sub/deep")).unwrap();
    fs::create_dir_all(t.join("d/empty")).unwrap();
    fs::create_dir_all(t.join("e")).unwrap();
    fs::write(t.join("d/a"), b"aaa\n").unwrap();
    fs::write(t.join("d/b"), b"bbbb\n").unwrap();
    fs::write(t.join("d/c"), b"ccccc\n").unwrap();
    fs::write(t.join("d/sub/f"), b"fff\n").unwrap();
    fs::write(t.join("d/sub/deep/g"), b"g\n").unwrap();
}

/// (d) The same with the calls that change a tree but that the probe
/// program cannot make: a Python process served from a cache of tree B
/// changes B and must see exactly what the same script sees natively on
/// an identical, never cached tree A.
#[test]
fn python_process_stops_trusting_renames_and_unlinks() {
    let py = fmcache_tests::py_env();
    let fx = fixture!("diff_py_changes");
    let (a, b) = (fx.tree.join("a"), fx.tree.join("b"));
    py_tree(&a);
    py_tree(&b);
    let code = format!("{}{PY_CHANGES}", fmcache_tests::PY_SHOW);
    let script = |dir: &Path, what: &str| Run::new(&py.python).args(["-c", &code, what]).cwd(dir);
    let cache = fx.cache("c");
    script(&b, "look").record(&cache).run().ok("pilot");
    let native = script(&a, "all").run().ok("native");
    let stats = fx.out.join("serve.stats");
    let served = script(&b, "all")
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    assert_same(
        "served vs native",
        "native (tree a)",
        &native.stdout,
        "served (tree b)",
        &served.stdout,
    );
    assert_eq!(served.stderr_str(), "");
    let text = native.stdout_str();
    let (before, after) = text.split_once("-- changes").expect("changes ran");
    assert_ne!(
        before.trim(),
        after.trim(),
        "sanity: the changes are visible"
    );
    let s = fmcache_tests::read_stats(&stats);
    assert!(s.served > 100, "sanity: the script was served: {s:?}");
}

/// Runs `code` (given its tree directory as cwd) natively on tree `a` and
/// served on tree `b` (identical trees; the pilot ran `code` with argument
/// `look` on `b`); returns (native, served) stdout.
fn py_two_trees(name: &str, code: &str, make: fn(&Path)) -> (String, String) {
    let py = fmcache_tests::py_env();
    let fx = fixture!(name);
    let (a, b) = (fx.tree.join("a"), fx.tree.join("b"));
    make(&a);
    make(&b);
    let script = |dir: &Path, what: &str| Run::new(&py.python).args(["-c", code, what]).cwd(dir);
    let cache = fx.cache("c");
    script(&b, "look").record(&cache).run().ok("pilot");
    let native = script(&a, "all").run().ok("native");
    let served = script(&b, "all").serve(&cache).run().ok("served");
    assert_eq!(served.stderr_str(), "");
    (native.stdout_str(), served.stdout_str())
}

/// Metadata changes made through a descriptor the cache served (fchmod,
/// futimens on a read-only descriptor) must reach the original file, as
/// they do natively, and later answers must show them.
#[test]
fn changes_through_a_served_descriptor_reach_the_original() {
    let code = r#"
import os, sys
def show():
    s = os.stat("d/c")
    print("stat", oct(s.st_mode), s.st_size, s.st_mtime_ns)
fd = os.open("d/c", os.O_RDONLY)
show()
if sys.argv[1] == "all":
    os.fchmod(fd, 0o600)
    os.utime(fd, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    f = os.fstat(fd)
    print("fstat", oct(f.st_mode), f.st_size, f.st_mtime_ns)
    show()
"#;
    let (native, served) = py_two_trees("diff_fd_changes", code, py_tree);
    // Both trees were made a moment apart: compare what the change set.
    let tail = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(native.contains("0o100600"), "sanity: {native}");
    assert_eq!(
        tail(&served),
        tail(&native),
        "after fchmod/futimens on a served descriptor:\nnative:\n{native}\nserved:\n{served}"
    );
}

/// The path of a served descriptor, as /proc/self/fd shows it, is the
/// original file's (not the staged copy's).
#[test]
fn served_descriptor_paths_are_the_originals() {
    let code = r#"
import os, sys
fd = os.open("d/c", os.O_RDONLY)
print(os.path.relpath(os.readlink("/proc/self/fd/%d" % fd)))
print(os.path.relpath(os.path.realpath("/dev/fd/%d" % fd)))
"#;
    let (native, served) = py_two_trees("diff_fd_paths", code, py_tree);
    assert_eq!(native, "d/c\nd/c\n", "sanity");
    assert_eq!(
        served, native,
        "readlink(/proc/self/fd/N) of a served descriptor"
    );
}
