//! Errno and metadata fidelity matrix: every corner case (permission bits
//! r, x, rx, none; symlinks, dangling and to unreadable files; a path
//! through a file; a missing directory; trailing slashes; the empty and
//! the NULL path; over-long names and paths; O_DIRECTORY, O_NOFOLLOW,
//! O_CREAT|O_EXCL; access with every mode) through every symbol family,
//! printed field by field by `tests/c/probe.c`. The pilot run and the
//! served run must print exactly what the native run prints, as root and
//! as a real unprivileged user (for whom the permission bits bite).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fmcache_tests::user::{self, Ids};
use fmcache_tests::{assert_same, fixture, read_stats, tok, Cache, Fixture, Out, Run};

/// Ops by symbol family; `M` means "takes an access mode", `O` "takes
/// open flags", `S` "takes a stdio mode".
const FAMILIES: &[(&str, &[(&str, char)])] = &[
    (
        "plain",
        &[
            ("stat", ' '),
            ("lstat", ' '),
            ("open", 'O'),
            ("access", 'M'),
        ],
    ),
    (
        "64",
        &[
            ("stat64", ' '),
            ("lstat64", ' '),
            ("open64", 'O'),
            ("fopen64", 'S'),
        ],
    ),
    (
        "at",
        &[
            ("fstatat", ' '),
            ("fstatat_nofollow", ' '),
            ("fstatat64", ' '),
            ("fstatat64_nofollow", ' '),
            ("openat", 'O'),
            ("openat64", 'O'),
            ("faccessat", 'M'),
            ("faccessat_eaccess", 'M'),
            ("faccessat_nofollow", 'M'),
            ("readlinkat", ' '),
        ],
    ),
    ("statx", &[("statx", ' '), ("statx_nofollow", ' ')]),
    (
        "xstat",
        &[
            ("__xstat", ' '),
            ("__lxstat", ' '),
            ("__xstat64", ' '),
            ("__lxstat64", ' '),
            ("__fxstatat", ' '),
            ("__fxstatat64", ' '),
            ("__fxstatat64_nofollow", ' '),
        ],
    ),
    ("stdio", &[("fopen", 'S')]),
    (
        "fortify",
        &[("__open_2", 'O'), ("__open64_2", 'O'), ("__openat_2", 'O')],
    ),
    (
        "other",
        &[
            ("readlink", ' '),
            ("realpath", ' '),
            ("canonicalize_file_name", ' '),
            ("readdir", ' '),
            ("euidaccess", 'M'),
        ],
    ),
];

/// access(2) modes: each alone and every combination.
const MODES: &[&str] = &["F", "R", "W", "X", "RW", "RX", "WX", "RWX"];
/// Read-only opens: plain, O_DIRECTORY (on a file: ENOTDIR), O_NOFOLLOW
/// (on a symlink: ELOOP).
const OPEN_FLAGS: &[&str] = &["RDONLY", "RDONLY|DIRECTORY", "RDONLY|NOFOLLOW"];
const STDIO_MODES: &[&str] = &["r", "re"];

/// The tree: files with each permission pattern, directories whose
/// search or read bit is missing, symlinks of every kind, and `excl/` for
/// the O_CREAT|O_EXCL probes (a modifying call takes its directory out of
/// the cache, so it gets one of its own).
fn build_tree(t: &Path) {
    let file = |rel: &str, bytes: &[u8], mode: u32| {
        fs::write(t.join(rel), bytes).unwrap();
        fs::set_permissions(t.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    };
    let dir = |rel: &str| fs::create_dir(t.join(rel)).unwrap();
    file("r", b"read only\n", 0o444);
    file("x", b"#!/bin/sh\necho x\n", 0o111);
    file("rx", b"#!/bin/sh\necho rx\n", 0o555);
    file("none", b"no bits\n", 0o000);
    file("rw", b"read write\n", 0o644);
    dir("d");
    file("d/f", b"in d\n", 0o644);
    dir("d_nox");
    file("d_nox/f", b"behind a directory without x\n", 0o644);
    dir("d_none");
    file("d_none/f", b"behind a directory without bits\n", 0o644);
    dir("excl");
    file("excl/existing", b"must survive O_EXCL\n", 0o644);
    symlink("r", t.join("link")).unwrap();
    symlink("none", t.join("link_none")).unwrap();
    symlink("d", t.join("link_d")).unwrap();
    symlink("nowhere", t.join("dangling")).unwrap();
    fs::write(t.join(long_name(255)), b"255\n").unwrap();
    // Directory modes last: the files inside had to be created first.
    fs::set_permissions(t.join("d_nox"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(t.join("d_none"), fs::Permissions::from_mode(0o000)).unwrap();
}

fn long_name(n: usize) -> String {
    "n".repeat(n)
}

/// Every case: (label, path as a batch token). Relative paths are relative
/// to the fixture directory, the runs' cwd.
fn cases(t: &Path) -> Vec<(String, String)> {
    let at = |rel: &str| tok(t.join(rel));
    let mut v: Vec<(String, String)> = [
        ("file r (0444)", "r"),
        ("file x (0111)", "x"),
        ("file rx (0555)", "rx"),
        ("file none (0000)", "none"),
        ("file rw (0644)", "rw"),
        ("symlink to r", "link"),
        ("symlink to none", "link_none"),
        ("symlink to a directory", "link_d"),
        ("dangling symlink", "dangling"),
        ("through a file (ENOTDIR)", "r/x"),
        ("through a dangling symlink", "dangling/x"),
        ("missing directory", "missing/x"),
        ("missing name in a listed directory", "d/missing"),
        ("trailing slash on a file", "r/"),
        ("trailing slash on a symlink to a file", "link/"),
        ("trailing slash on a dangling symlink", "dangling/"),
        ("trailing slash on a directory", "d/"),
        ("directory", "d"),
        ("file in a directory", "d/f"),
        ("file under a directory without x", "d_nox/f"),
        ("missing under a directory without x", "d_nox/missing"),
        ("directory without x", "d_nox"),
        ("file under a directory without bits", "d_none/f"),
        ("directory without bits", "d_none"),
        ("name of NAME_MAX bytes", &long_name(255)),
        ("name longer than NAME_MAX", &long_name(256)),
    ]
    .iter()
    .map(|(l, r)| (l.to_string(), at(r)))
    .collect();
    // Longer than PATH_MAX (4096 with its NUL) in short components.
    let deep = format!("{}/{}x", t.display(), "d/".repeat(2100));
    v.push(("path longer than PATH_MAX".into(), tok(deep)));
    v.push(("empty path".into(), tok("")));
    v.push(("NULL path".into(), "\\NULL".into()));
    v.push(("relative path".into(), "tree/r".into()));
    v.push(("relative path through a file".into(), "tree/r/x".into()));
    v
}

/// The batch and how many probe lines each family has.
fn batch(t: &Path) -> (String, BTreeMap<&'static str, usize>) {
    let mut b = String::new();
    let mut counts = BTreeMap::new();
    for (label, p) in cases(t) {
        b.push_str(&format!("# {label}\n"));
        for (family, ops) in FAMILIES {
            for (op, arg) in *ops {
                let args: &[&str] = match arg {
                    'M' => MODES,
                    'O' => OPEN_FLAGS,
                    'S' => STDIO_MODES,
                    _ => &[""],
                };
                for a in args {
                    b.push_str(&format!("{op} {p} {a}\n"));
                    *counts.entry(*family).or_insert(0) += 1;
                }
            }
        }
    }
    // O_CREAT|O_EXCL on an existing file through every open name: EEXIST,
    // and the file is left as it was (checked by the caller too).
    let e = tok(t.join("excl/existing"));
    for (family, op, arg) in [
        ("plain", "open", "WRONLY|CREAT|EXCL"),
        ("plain", "open", "RDWR|CREAT|EXCL|TRUNC"),
        ("64", "open64", "WRONLY|CREAT|EXCL"),
        ("at", "openat", "WRONLY|CREAT|EXCL"),
        ("at", "openat64", "WRONLY|CREAT|EXCL"),
        ("stdio", "fopen", "wx"),
        ("64", "fopen64", "wx"),
        ("plain", "stat", ""),
        ("plain", "open", "RDONLY"),
    ] {
        b.push_str(&format!("{op} {e} {arg}\n"));
        *counts.entry(family).or_insert(0) += 1;
    }
    (b, counts)
}

/// What one run of the batch printed, natively, recorded and served.
struct Matrix {
    native: Out,
    pilot: Out,
    served: Out,
    served_stats: fmcache_tests::Stats,
}

/// Warm-up (first reads move atimes), native, pilot and served runs of
/// `batch`, each through `exec` (which picks the user).
fn run_matrix(
    fx: &Fixture,
    probe: &Path,
    batch: &str,
    cache: &Cache,
    exec: &dyn Fn(Run) -> Out,
) -> Matrix {
    let run = || Run::probe(probe, batch).cwd(&fx.dir);
    let ok = |o: Out, what: &str| {
        assert!(
            o.status.success(),
            "{what}: {}\nstderr:\n{}",
            o.status,
            o.stderr_str()
        );
        o
    };
    ok(exec(run()), "warm-up");
    let native = ok(exec(run()), "native");
    let pilot = ok(exec(run().record(cache)), "pilot");
    assert!(cache.file.is_file(), "the pilot wrote no cache");
    let stats = fx.out.join(format!(
        "{}.stats",
        cache.file.file_stem().unwrap().to_string_lossy()
    ));
    let served = ok(exec(run().serve(cache).stats(&stats)), "served");
    let served_stats = read_stats(&stats);
    Matrix {
        native,
        pilot,
        served,
        served_stats,
    }
}

fn check(m: &Matrix, who: &str) {
    assert_same(
        &format!("{who}: pilot vs native"),
        "native",
        &m.native.stdout,
        "pilot",
        &m.pilot.stdout,
    );
    assert_same(
        &format!("{who}: served vs native"),
        "native",
        &m.native.stdout,
        "served",
        &m.served.stdout,
    );
    assert_eq!(m.pilot.stderr_str(), "", "{who}: pilot stderr");
    assert_eq!(m.served.stderr_str(), "", "{who}: served stderr");
    assert!(
        m.served_stats.served > 1000,
        "{who}: sanity, most of the matrix is served: {:?}",
        m.served_stats
    );
}

/// Counts result kinds in an output, for the report and for sanity checks
/// that the cases really produce the errnos they are meant to.
fn tally(out: &Out) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for l in out.stdout_str().lines() {
        let r = l.split_once(" -> ").map_or("?", |(_, r)| r);
        let k = match r.strip_prefix("ERR ") {
            Some(e) => e.split(' ').next().unwrap_or(e).to_string(),
            None if r.starts_with("SKIP") => "SKIP".to_string(),
            None => "ok".to_string(),
        };
        *t.entry(k).or_insert(0) += 1;
    }
    t
}

fn native_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
}

fn excl_intact(fx: &Fixture, before: &fs::Metadata) {
    let p = fx.tree.join("excl/existing");
    assert_eq!(
        fs::read(&p).unwrap(),
        b"must survive O_EXCL\n",
        "O_EXCL probes changed the file"
    );
    let m = fs::metadata(&p).unwrap();
    assert_eq!(
        (m.ino(), m.mtime(), m.mtime_nsec(), m.mode()),
        (
            before.ino(),
            before.mtime(),
            before.mtime_nsec(),
            before.mode()
        ),
        "O_EXCL probes changed the file's metadata"
    );
}

fn report(who: &str, counts: &BTreeMap<&str, usize>, m: &Matrix) {
    let total: usize = counts.values().sum();
    eprintln!("{who}: {total} probes per run, by family {counts:?}");
    eprintln!("{who}: native results {:?}", tally(&m.native));
    eprintln!("{who}: served run {:?}", m.served_stats);
}

#[test]
fn matrix_as_root() {
    let fx = fixture!("matrix_root");
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let (b, counts) = batch(&fx.tree);
    let before = fs::metadata(fx.tree.join("excl/existing")).unwrap();
    let m = run_matrix(&fx, &probe, &b, &fx.cache("c"), &|r| r.run());
    report("root", &counts, &m);
    check(&m, "root");
    excl_intact(&fx, &before);
    let text = m.native.stdout_str();
    let t = tok(&fx.tree);
    // Sanity: the cases give the errnos they are meant to.
    for (prefix, want) in [
        (format!("stat {t}/dangling "), "ERR ENOENT"),
        (format!("stat {t}/r/x "), "ERR ENOTDIR"),
        (format!("stat {t}/r/ "), "ERR ENOTDIR"),
        (format!("stat {t}/missing/x "), "ERR ENOENT"),
        (format!("stat {t}/{} ", long_name(256)), "ERR ENAMETOOLONG"),
        ("stat \"\" ".to_string(), "ERR ENOENT"),
        ("stat \\NULL ".to_string(), "ERR EFAULT"),
        (format!("open {t}/r RDONLY|DIRECTORY"), "ERR ENOTDIR"),
        (format!("open {t}/link RDONLY|NOFOLLOW"), "ERR ELOOP"),
        (
            format!("open {t}/excl/existing WRONLY|CREAT|EXCL"),
            "ERR EEXIST",
        ),
        (format!("access {t}/none X"), "ERR EACCES"),
    ] {
        let l = native_line(&text, &prefix);
        assert!(l.ends_with(want), "expected {want}: {l}");
    }
    assert!(
        native_line(&text, &format!("lstat {t}/dangling ")).contains("mode=120777"),
        "lstat of the dangling symlink succeeds"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("stat ") && l.ends_with("ERR ENAMETOOLONG") && l.len() > 4096),
        "the over-long path fails ENAMETOOLONG"
    );
}

/// A fixture whose `out/` belongs to `ids` (the user writes its cache,
/// stage and stats there); the tree stays root's, as installed software.
fn user_fixture(name: &str, ids: Ids) -> Fixture {
    let fx = fixture!(name);
    chown(&fx.out, Some(ids.uid), Some(ids.gid)).unwrap();
    fx
}

#[test]
fn matrix_as_an_unprivileged_user() {
    let ids = user::other();
    let fx = user_fixture("matrix_user", ids);
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let (b, counts) = batch(&fx.tree);
    let before = fs::metadata(fx.tree.join("excl/existing")).unwrap();
    let m = run_matrix(&fx, &probe, &b, &fx.cache("c"), &|r| user::run_as(&r, ids));
    report(user::NAME, &counts, &m);
    check(&m, user::NAME);
    excl_intact(&fx, &before);
    let text = m.native.stdout_str();
    let t = tok(&fx.tree);
    // Sanity: as a user the bits bite.
    for (prefix, want) in [
        (format!("access {t}/r W"), "ERR EACCES"),
        (format!("access {t}/x R"), "ERR EACCES"),
        (format!("access {t}/none F"), "0"),
        (format!("access {t}/none R"), "ERR EACCES"),
        (format!("open {t}/none RDONLY "), "ERR EACCES"),
        (format!("open {t}/x RDONLY "), "ERR EACCES"),
        (format!("stat {t}/d_nox/f "), "ERR EACCES"),
        (format!("stat {t}/d_none/f "), "ERR EACCES"),
        (format!("fopen {t}/link_none r"), "ERR EACCES"),
    ] {
        let l = native_line(&text, &prefix);
        assert!(l.ends_with(want), "expected {want}: {l}");
    }
    // The user's cache holds none of what the user cannot read.
    let mut staged = Vec::new();
    for e in walk(&fx.out.join("c.stage")) {
        if e.is_file() {
            staged.push(fs::read(&e).unwrap());
        }
    }
    for secret in [&b"no bits\n"[..], b"#!/bin/sh\necho x\n"] {
        assert!(
            !staged.iter().any(|s| s == secret),
            "the user's stage holds a file the user cannot read"
        );
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

/// A cache root recorded holds root's answers (access, contents of files
/// only root may read): served to another user it must not change what
/// that user sees. The user's output equals the user's native output.
#[test]
fn cache_recorded_by_root_is_not_served_to_another_user() {
    let ids = user::other();
    let fx = user_fixture("matrix_root_cache", ids);
    build_tree(&fx.tree);
    let probe = fx.c_program("probe");
    let (b, _) = batch(&fx.tree);
    let run = || Run::probe(&probe, &b).cwd(&fx.dir);
    let root_cache = fx.cache("root");
    run().run().ok("warm-up");
    run().record(&root_cache).run().ok("root pilot");
    // The cache is root's; it holds answers about files others may not
    // read, so it is owner-only. Made readable (as an administrator
    // might), the ownership rule accepts it and the recorder's identity
    // refuses it.
    let meta = fs::metadata(&root_cache.file).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(
        meta.mode() & 0o077,
        0,
        "root's private answers, readable by others"
    );
    fs::set_permissions(&root_cache.file, fs::Permissions::from_mode(0o644)).unwrap();
    let native = user::run_as(&run(), ids).ok("user native");
    // The user's own stage directory, under the user's out/.
    let cache = Cache {
        file: root_cache.file.clone(),
        stage: fx.out.join("user.stage"),
    };
    let served = user::run_as(&run().serve(&cache), ids);
    assert!(served.status.success(), "{}", served.stderr_str());
    assert_same(
        "user served from root's cache vs user native",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    let err = served.stderr_str();
    assert!(
        err.lines().count() == 1 && err.contains("recorded by uid 0"),
        "one line says why the cache is refused: {err:?}"
    );
}
