//! The recorder never writes into a descriptor it does not own (issue 12,
//! item 11). Programs close what they inherited and reuse the numbers
//! (close loops, close_range, dup2 onto high numbers); with a low
//! RLIMIT_NOFILE the journal cannot sit above them. Every record is
//! preceded by an fstat checking the descriptor still is the journal;
//! a lost journal is reopened, or recording stops with one line.
//! Run as `fmcache-other`, a real unprivileged user.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use fmcache_format::{CacheView, Verify};
use fmcache_tests::user::{other, run_as};
use fmcache_tests::{assert_same, fixture, names, Cache, Fixture, Out, Run};

struct Setup {
    fx: Fixture,
    cache: Cache,
    files: Vec<PathBuf>,
}

/// A tree of three files and a cache, all owned by `fmcache-other`.
fn setup(name: &str) -> Setup {
    let fx = fixture!(name);
    let o = other();
    for d in [&fx.dir, &fx.tree, &fx.out] {
        chown(d, Some(o.uid), Some(o.gid)).unwrap();
    }
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            let f = fx.tree.join(format!("in{i}"));
            fs::write(&f, format!("input {i}\n").repeat(i + 1)).unwrap();
            f
        })
        .collect();
    let cache = fx.cache("c");
    Setup { fx, cache, files }
}

/// An output directory of the user's.
fn out_dir(s: &Setup, label: &str) -> PathBuf {
    let d = s.fx.out.join(label);
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&d, Some(other().uid), Some(other().gid)).unwrap();
    d
}

/// The paths the cache holds contents for.
fn with_contents(cache: &Path) -> Vec<String> {
    let bytes = fs::read(cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display()));
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the u64 buffer is at least as long as the bytes.
    let b = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len()) };
    b.copy_from_slice(&bytes);
    let view = CacheView::open(b, Verify::Full).unwrap();
    view.entries()
        .filter(|e| e.blob().is_some())
        .map(|e| String::from_utf8_lossy(e.path()).into_owned())
        .collect()
}

fn same_files(what: &str, a: &Path, b: &Path) {
    assert_eq!(names(a), names(b), "{what}: file names");
    for n in names(a) {
        let (x, y) = (fs::read(a.join(&n)).unwrap(), fs::read(b.join(&n)).unwrap());
        assert_same(&format!("{what}: {n}"), "native", &x, "recorded", &y);
    }
}

fn no_stderr(what: &str, o: &Out) {
    assert!(o.stderr.is_empty(), "{what}: stderr: {}", o.stderr_str());
}

/// `fdreuse` under `ulimit -n 20`: it closes 3..19, opens its files at the
/// low numbers and dup2s three onto 19, 18 and 17, three rounds, probing
/// the tree before every open, dup2 and write. The journal is lost and
/// taken over again and again; the program's files stay byte-identical to
/// native and the cache still holds what it read.
#[test]
fn a_low_descriptor_limit_never_puts_records_in_the_programs_files() {
    let s = setup("journal_fd_low_limit");
    let prog = s.fx.c_program("fdreuse");
    let run = |out: &Path| {
        Run::new("/bin/sh")
            .arg("-c")
            .arg("ulimit -n 20 && exec \"$@\"")
            .arg("sh")
            .arg(&prog)
            .arg(out)
            .args(&s.files)
    };
    let native_dir = out_dir(&s, "native");
    let native = run_as(&run(&native_dir), other()).ok("native");
    assert!(
        native.stdout_str().starts_with("failures 0\n"),
        "{}",
        native.stdout_str()
    );
    let rec_dir = out_dir(&s, "recorded");
    let stats = s.fx.out.join("stats");
    let rec = run_as(
        &run(&rec_dir)
            .record(&s.cache)
            .env("FMCACHE_INCLUDE", &s.fx.tree)
            .stats(&stats),
        other(),
    )
    .ok("recorded");
    no_stderr("recorded", &rec);
    assert_same("stdout", "native", &native.stdout, "recorded", &rec.stdout);
    same_files("low limit", &native_dir, &rec_dir);
    let held = with_contents(&s.cache.file);
    for f in &s.files {
        let f = f.to_str().unwrap();
        assert!(held.iter().any(|h| h == f), "{f} not recorded: {held:?}");
    }
    // And served under the same limit.
    let served_dir = out_dir(&s, "served");
    let served = run_as(&run(&served_dir).serve(&s.cache), other()).ok("served");
    no_stderr("served", &served);
    same_files("low limit served", &native_dir, &served_dir);
    eprintln!(
        "low limit: 6 files x 3 rounds identical; {}",
        fs::read_to_string(&stats).unwrap_or_default().trim()
    );
}

/// `close_range(3, ~0U, 0)` first thing: the journal opened before main is
/// gone; the next probe reopens one, so the cache holds the program's reads.
#[test]
fn close_range_at_start_still_records() {
    let s = setup("journal_fd_close_range");
    let prog = s.fx.c_program("closerange");
    let missing = s.fx.tree.join("missing");
    let run = Run::new(&prog).args(&s.files).arg(&missing);
    let native = run_as(&run, other()).ok("native");
    let rec = run_as(
        &run.clone()
            .record(&s.cache)
            .env("FMCACHE_INCLUDE", &s.fx.tree),
        other(),
    )
    .ok("recorded");
    no_stderr("recorded", &rec);
    assert_same(
        "close_range",
        "native",
        &native.stdout,
        "recorded",
        &rec.stdout,
    );
    let held = with_contents(&s.cache.file);
    for f in &s.files {
        let f = f.to_str().unwrap();
        assert!(held.iter().any(|h| h == f), "{f} not recorded: {held:?}");
    }
    let served = run_as(&run.clone().serve(&s.cache), other()).ok("served");
    no_stderr("served", &served);
    assert_same(
        "close_range",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
}

/// The journal is lost while every descriptor is in use (`closerange
/// -fill` dups stdin until EMFILE before probing): it cannot be
/// reopened, and the pilot says so in one line, output unchanged.
#[test]
fn a_journal_that_cannot_be_reopened_is_said_in_one_line() {
    let s = setup("journal_fd_full");
    let prog = s.fx.c_program("closerange");
    let run = Run::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -n 16 && exec \"$@\"")
        .arg("sh")
        .arg(&prog)
        .arg("-fill")
        .args(&s.files);
    let native = run_as(&run, other()).ok("native");
    let rec = run_as(
        &run.clone()
            .record(&s.cache)
            .env("FMCACHE_INCLUDE", &s.fx.tree),
        other(),
    )
    .ok("recorded");
    assert_same("full", "native", &native.stdout, "recorded", &rec.stdout);
    let err = rec.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("fmcache: ")
            && lines[0].contains("recording stops"),
        "expected one line, got:\n{err}"
    );
    eprintln!("descriptors full: {}", lines[0]);
}
