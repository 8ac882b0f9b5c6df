//! The pilot's own storage fails: the file system holding the journals
//! and the cache fills up (ENOSPC while journaling, ENOSPC while the merge
//! writes the cache), or the working directory holding the default cache
//! is read-only. The program's output is native, at most one warning line
//! is written, no invalid cache is ever left, and the next run with space
//! records a cache that serves. Needs root (mounts a tmpfs); without it
//! each test says so and returns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fmcache_format::{CacheView, Verify};
use fmcache_tests::{assert_same, fixture, noise, tok, Cache, Out, Run};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (and a message) when mounting is not allowed.
    fn mount(dir: &Path, opts: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The bytes are a valid cache (what a server would accept).
fn assert_valid_cache(what: &str, file: &Path) {
    let bytes = fs::read(file).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (w, ch) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut a = [0u8; 8];
        a[..ch.len()].copy_from_slice(ch);
        *w = u64::from_le_bytes(a);
    }
    // SAFETY: `bytes.len()` bytes were copied into `words`.
    let aligned = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) };
    if let Err(e) = CacheView::open(aligned, Verify::Full) {
        panic!("{what}: {} is not a valid cache: {e:?}", file.display());
    }
}

/// Native stdout and status, at most one `fmcache: ` line on stderr.
fn assert_native_one_line(what: &str, native: &Out, o: &Out) -> String {
    assert_eq!(o.status.code(), native.status.code(), "{what}: status");
    assert_same(what, "native", &native.stdout, what, &o.stdout);
    let err = o.stderr_str();
    assert!(
        err.lines().count() <= 1 && err.lines().all(|l| l.starts_with("fmcache: ")),
        "{what}: at most one fmcache line expected, got:\n{err}"
    );
    err.trim_end().to_string()
}

/// Any cache file in `dir` is valid; returns what is left there.
fn check_dir(what: &str, dir: &Path, cache: &Path) -> Vec<String> {
    if cache.exists() {
        assert_valid_cache(what, cache);
    }
    let mut left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left
}

/// With space again: a pilot records, the cache is valid and serves the
/// native output silently.
fn recovers(what: &str, run: &Run, cache: &Cache, native: &Out) {
    let p = run.clone().record(cache).run().ok("pilot with space");
    assert_same(what, "native", &native.stdout, "pilot", &p.stdout);
    assert_eq!(p.stderr_str(), "", "{what}: pilot with space");
    assert!(
        cache.file.is_file(),
        "{what}: no cache after a pilot with space"
    );
    assert_valid_cache(what, &cache.file);
    let s = run.clone().serve(cache).run().ok("served");
    assert_same(what, "native", &native.stdout, "served", &s.stdout);
    assert_eq!(s.stderr_str(), "", "{what}: served run");
}

/// A tree of `files` files (each `size` bytes) and a batch that stats,
/// reads and lists all of them.
fn tree(fx: &fmcache_tests::Fixture, files: usize, size: usize) -> (PathBuf, String) {
    let probe = fx.c_program("probe");
    let d = fx.tree.join("d");
    fs::create_dir_all(&d).unwrap();
    let mut batch = format!("readdir {}\n", tok(&d));
    for i in 0..files {
        let f = d.join(format!("file-with-a-long-name-{i:04}.dat"));
        fs::write(&f, noise(size, i as u64)).unwrap();
        let f = tok(&f);
        batch.push_str(&format!("stat {f}\nopen {f} RDONLY\naccess {f} R\n"));
    }
    (probe, batch)
}

/// ENOSPC while journaling: the journal directory (next to the cache) is
/// on a tmpfs too small for the journal of 600 probed paths.
#[test]
fn a_full_disk_while_journaling_leaves_no_cache() {
    let fx = fixture!("full_journal");
    let (probe, batch) = tree(&fx, 600, 16);
    // The tree is data: named as served (FMCACHE_INCLUDE), as a user would.
    let run = Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .env("FMCACHE_INCLUDE", &fx.tree);
    run.clone().run().ok("warm-up");
    let native = run.clone().run().ok("native");
    let Some(small) = Tmpfs::mount(&fx.out.join("small"), "size=8k,mode=0700") else {
        return;
    };
    let cache = Cache {
        file: small.0.join("fmcache.dat"),
        stage: fx.out.join("stage"),
    };
    let o = run.clone().record(&cache).run();
    let line = assert_native_one_line("journal ENOSPC", &native, &o);
    eprintln!("journal ENOSPC: {line:?}");
    let left = check_dir("journal ENOSPC", &small.0, &cache.file);
    // The journal really met the full disk (it is kept for the next merge).
    let journaled: u64 = fs::read_dir(small.0.join("fmcache.dat.rec"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    eprintln!("left on the full tmpfs: {left:?}, journals {journaled} bytes");
    assert!(
        journaled >= 4096,
        "the journal did not fill the tmpfs: {journaled} bytes"
    );
    // A served run from whatever is there: native output.
    let s = run.clone().serve(&cache).run();
    let line = assert_native_one_line("served after journal ENOSPC", &native, &s);
    eprintln!("served after journal ENOSPC: {line:?}");
    small.remount("size=64m");
    recovers("after journal ENOSPC", &run, &cache, &native);
}

/// ENOSPC while the merge writes the cache: the journal fits but the
/// cache, holding 4 MiB of file contents, does not.
#[test]
fn a_full_disk_while_merging_leaves_no_invalid_cache() {
    let fx = fixture!("full_merge");
    let (probe, batch) = tree(&fx, 4, 1 << 20);
    // The tree is data: named as served (FMCACHE_INCLUDE), as a user would.
    let run = Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .env("FMCACHE_INCLUDE", &fx.tree);
    run.clone().run().ok("warm-up");
    let native = run.clone().run().ok("native");
    let Some(small) = Tmpfs::mount(&fx.out.join("small"), "size=1m,mode=0700") else {
        return;
    };
    let cache = Cache {
        file: small.0.join("fmcache.dat"),
        stage: fx.out.join("stage"),
    };
    let o = run.clone().record(&cache).run();
    let line = assert_native_one_line("merge ENOSPC", &native, &o);
    eprintln!("merge ENOSPC: {line:?}");
    assert!(
        line.contains("No space left") || line.contains("ENOSPC") || !cache.file.exists(),
        "{line}"
    );
    let left = check_dir("merge ENOSPC", &small.0, &cache.file);
    eprintln!("left on the full tmpfs: {left:?}");
    assert!(
        !left.iter().any(|n| n.contains(".tmp")),
        "a temporary cache was left: {left:?}"
    );
    let s = run.clone().serve(&cache).run();
    let line = assert_native_one_line("served after merge ENOSPC", &native, &s);
    eprintln!("served after merge ENOSPC: {line:?}");
    small.remount("size=64m");
    recovers("after merge ENOSPC", &run, &cache, &native);
}

/// A pilot in a read-only working directory with the default cache path
/// (`fmcache.dat`, relative to the working directory).
#[test]
fn a_read_only_working_directory_with_the_default_cache() {
    let fx = fixture!("ro_cwd");
    let (probe, batch) = tree(&fx, 20, 100);
    let Some(work) = Tmpfs::mount(&fx.out.join("work"), "size=16m,mode=0755") else {
        return;
    };
    let run = Run::probe(&probe, &batch)
        .cwd(&work.0)
        .env("FMCACHE_INCLUDE", &fx.tree);
    run.clone().run().ok("warm-up");
    let native = run.clone().run().ok("native");
    work.remount("ro");
    let cache = Cache {
        file: work.0.join("fmcache.dat"),
        stage: fx.out.join("stage"),
    };
    // An empty FMCACHE_FILE means the default.
    let o = run.clone().record(&cache).env("FMCACHE_FILE", "").run();
    let line = assert_native_one_line("read-only cwd", &native, &o);
    eprintln!("read-only cwd: {line:?}");
    assert!(
        !line.is_empty(),
        "the pilot recorded nothing and said nothing"
    );
    assert!(!cache.file.exists());
    work.remount("rw");
    let default = run.clone().env("FMCACHE_FILE", "");
    recovers("after read-only cwd", &default, &cache, &native);
}
