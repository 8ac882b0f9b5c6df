//! A cache or stage directory that cannot be trusted is refused with one
//! line on stderr naming the cache and the reason, and the program runs
//! uncached with exactly its native output and exit status.

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use fmcache_tests::{assert_same, fixture, names, noise, tok, Cache, Fixture, Out, Run};

/// Header offsets (crates/fmcache-format/src/layout.rs, `Header`).
const VERSION: usize = 8;
const BUILD_ID: usize = 16;
const META_SIZE: usize = 40;
const HEADER_SIZE: usize = 256;
const NOBODY: u32 = 65534;

struct Setup {
    fx: Fixture,
    probe: PathBuf,
    batch: String,
    native: Out,
    good: Cache,
}

/// A small tree, a batch over it, its native output and a good cache the
/// pilot recorded (with file contents, so the data part is not empty).
fn setup(name: &str) -> Setup {
    let fx = fixture!(name);
    let t = &fx.tree;
    fs::create_dir(t.join("d")).unwrap();
    fs::write(t.join("d/a"), b"hello\n").unwrap();
    fs::write(t.join("d/big"), noise(50_000, 7)).unwrap();
    symlink("d/a", t.join("link")).unwrap();
    let probe = fx.c_program("probe");
    let d = tok(t.join("d"));
    let l = tok(t.join("link"));
    let batch = format!(
        "stat {d}/a\nlstat {l}\nopen {d}/a RDONLY\nopen {d}/big RDONLY|CLOEXEC\nfopen {l} r\n\
         readdir {d}\nstat {d}/missing\nreadlink {l}\nrealpath {l}\naccess {d}/big R\n"
    );
    Run::probe(&probe, &batch).cwd(&fx.dir).run().ok("warm-up");
    let native = Run::probe(&probe, &batch).cwd(&fx.dir).run().ok("native");
    let good = fx.cache("good");
    Run::probe(&probe, &batch)
        .cwd(&fx.dir)
        .record(&good)
        .run()
        .ok("pilot");
    assert!(good.file.is_file(), "the pilot wrote no cache");
    Setup {
        fx,
        probe,
        batch,
        native,
        good,
    }
}

impl Setup {
    /// Runs the batch served from `cache` and checks it ran uncached:
    /// native stdout and status, one `fmcache: ` line on stderr naming
    /// the cache and containing every one of `reasons`.
    fn refused(&self, what: &str, cache: &Cache, reasons: &[&str]) -> String {
        let o = Run::probe(&self.probe, &self.batch)
            .cwd(&self.fx.dir)
            .serve(cache)
            .run();
        assert_eq!(
            o.status.code(),
            self.native.status.code(),
            "{what}: exit status"
        );
        assert_same(what, "native", &self.native.stdout, "refused", &o.stdout);
        let err = o.stderr_str();
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 1 && err.ends_with('\n'),
            "{what}: expected exactly one line on stderr, got:\n{err}"
        );
        let line = lines[0];
        assert!(line.starts_with("fmcache: "), "{what}: {line}");
        let path = cache.file.to_string_lossy();
        assert!(
            line.contains(&*path),
            "{what}: the line does not name {path}: {line}"
        );
        for r in reasons {
            assert!(
                line.contains(r),
                "{what}: the line does not say {r:?}: {line}"
            );
        }
        line.to_string()
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

fn meta_size(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[META_SIZE..META_SIZE + 8].try_into().unwrap()) as usize
}

/// Every damaged, foreign, unsafe or missing cache is refused with its
/// reason; each run gets a fresh stage directory.
#[test]
fn damaged_or_unsafe_caches_are_refused() {
    let s = setup("faults_cache");
    let good = read(&s.good.file);
    let meta = meta_size(&good);
    assert!(
        HEADER_SIZE < meta && meta < good.len(),
        "sanity: the good cache has an index and a data part (meta {meta}, file {})",
        good.len()
    );

    // Control: the good cache, fresh stage: served, silent.
    let control = s.fx.cache("control");
    fs::copy(&s.good.file, &control.file).unwrap();
    let o = Run::probe(&s.probe, &s.batch)
        .cwd(&s.fx.dir)
        .serve(&control)
        .run()
        .ok("control");
    assert_same("control", "native", &s.native.stdout, "served", &o.stdout);
    assert_eq!(o.stderr_str(), "", "the good cache is accepted silently");

    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x10;
        b
    };
    let mut version = good.clone();
    let other = fmcache_format::layout::FORMAT_VERSION + 1;
    version[VERSION..VERSION + 4].copy_from_slice(&other.to_le_bytes());
    // (label, the file's bytes or None for no file, what the line says)
    type Case = (&'static str, Option<Vec<u8>>, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            "truncated",
            Some(good[..good.len() / 2].to_vec()),
            &["truncated"],
        ),
        ("ten_bytes", Some(good[..10].to_vec()), &["too small"]),
        ("magic", Some(flip(0)), &["magic"]),
        ("version", Some(version), &["version"]),
        (
            "index_flip",
            Some(flip(HEADER_SIZE + (meta - HEADER_SIZE) / 2)),
            &["checksum"],
        ),
        (
            "data_flip",
            Some(flip((meta + good.len()) / 2)),
            &["checksum"],
        ),
        (
            "foreign_build",
            Some(flip(BUILD_ID + 3)),
            &["different fmcache build"],
        ),
        ("group_writable", Some(good.clone()), &["writable"]),
        ("other_owner", Some(good.clone()), &["owned"]),
        ("missing", None, &["not found"]),
    ];
    for (label, bytes, reasons) in cases {
        let c = s.fx.cache(label);
        if let Some(b) = bytes {
            fs::write(&c.file, b).unwrap();
            fs::set_permissions(&c.file, fs::Permissions::from_mode(0o644)).unwrap();
        }
        match label {
            "group_writable" => {
                fs::set_permissions(&c.file, fs::Permissions::from_mode(0o664)).unwrap()
            }
            "other_owner" => chown(&c.file, Some(NOBODY), Some(NOBODY)).unwrap(),
            _ => {}
        }
        let line = s.refused(label, &c, reasons);
        eprintln!("{label}: {line}");
        // Nothing usable may be left staged from a refused cache.
        if c.stage.exists() {
            for n in names(&c.stage) {
                assert!(
                    !c.stage.join(&n).is_dir(),
                    "{label}: a stage was left behind: {}",
                    c.stage.join(&n).display()
                );
            }
        }
    }
}

/// A stage directory that is a symlink, is not private, or belongs to
/// someone else is refused; nothing is created in it or through it.
#[test]
fn unsafe_stage_directories_are_refused() {
    let s = setup("faults_stage");
    let fx = &s.fx;

    // A symlink to another (private, empty) directory.
    let target = fx.out.join("elsewhere");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
    let c = Cache {
        file: s.good.file.clone(),
        stage: fx.out.join("stage-link"),
    };
    symlink(&target, &c.stage).unwrap();
    let line = s.refused("symlink stage", &c, &["symlink"]);
    assert!(line.contains(&*c.stage.to_string_lossy()), "{line}");
    assert!(
        names(&target).is_empty(),
        "files were created through the symlink: {:?}",
        names(&target)
    );
    assert!(fs::symlink_metadata(&c.stage)
        .unwrap()
        .file_type()
        .is_symlink());

    // Mode 0755.
    let c = Cache {
        file: s.good.file.clone(),
        stage: fx.out.join("stage-0755"),
    };
    fs::create_dir(&c.stage).unwrap();
    fs::set_permissions(&c.stage, fs::Permissions::from_mode(0o755)).unwrap();
    let line = s.refused("0755 stage", &c, &["not private"]);
    assert!(line.contains(&*c.stage.to_string_lossy()), "{line}");
    assert!(names(&c.stage).is_empty(), "{:?}", names(&c.stage));
    let mode = fs::metadata(&c.stage).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the refused stage's mode was changed");

    // Owned by another user (mode 0700).
    let c = Cache {
        file: s.good.file.clone(),
        stage: fx.out.join("stage-nobody"),
    };
    fs::create_dir(&c.stage).unwrap();
    fs::set_permissions(&c.stage, fs::Permissions::from_mode(0o700)).unwrap();
    chown(&c.stage, Some(NOBODY), Some(NOBODY)).unwrap();
    let line = s.refused("foreign stage", &c, &["owned by uid 65534"]);
    assert!(line.contains(&*c.stage.to_string_lossy()), "{line}");
    assert!(names(&c.stage).is_empty(), "{:?}", names(&c.stage));
}

/// Files of the corrupt-cache corpus (crates/fmcache-format/tests/corrupt)
/// as the cache of a real run, stamped with this build's identity so the
/// refusal comes from the damage itself: native output, one line. (With
/// recomputed checksums a file is a consistent cache of another tree and
/// is served as such; crates/fmcache-format/tests/corrupt.rs covers that.)
#[test]
fn corrupt_corpus_files_as_caches_run_native() {
    let s = setup("faults_corpus");
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/fmcache-format/tests/corrupt");
    let files = [
        ("buckets-full", "checksum"),
        ("strref-past-end", "checksum"),
        ("dirents-past-end", "checksum"),
        ("symlink-self-loops", "checksum"),
        ("overlap-stats-on-entries", "checksum"),
        ("truncated-in-strings", "truncated"),
        ("header-only", "truncated"),
        ("entry-count-huge", ""),
        ("empty", "too small"),
        ("wrong-magic", "magic"),
    ];
    for (name, reason) in files {
        let mut bytes = read(&corpus.join(format!("{name}.fmc")));
        if bytes.len() >= BUILD_ID + 16 {
            bytes[BUILD_ID..BUILD_ID + 16].copy_from_slice(&fmcache_format::build_id());
        }
        let c = s.fx.cache(name);
        fs::write(&c.file, &bytes).unwrap();
        fs::set_permissions(&c.file, fs::Permissions::from_mode(0o644)).unwrap();
        let reasons: &[&str] = if reason.is_empty() { &[] } else { &[reason] };
        let line = s.refused(name, &c, reasons);
        eprintln!("{name}: {line}");
    }
}

/// A bug of ours (a panic while answering) costs the program nothing:
/// with `FMCACHE_DEBUG=panic` every answer panics inside the library; the
/// program prints exactly its native output, every call passes through,
/// and stderr holds one line (the panic hook's, once per process), even
/// with RUST_BACKTRACE set (std's own hook would read files then). This
/// also checks the statically linked unwinder (preload/build.rs).
#[test]
fn a_panic_inside_the_library_passes_the_call_through() {
    let s = setup("faults_panic");
    let served_stats = s.fx.out.join("served.stats");
    let served = Run::probe(&s.probe, &s.batch)
        .cwd(&s.fx.dir)
        .serve(&s.good)
        .stats(&served_stats)
        .run()
        .ok("served");
    assert_same(
        "served",
        "native",
        &s.native.stdout,
        "served",
        &served.stdout,
    );
    let normal = fmcache_tests::read_stats(&served_stats);
    assert!(normal.served > 0, "sanity: the cache serves: {normal:?}");

    let stats = s.fx.out.join("panic.stats");
    let o = Run::probe(&s.probe, &s.batch)
        .cwd(&s.fx.dir)
        .serve(&s.good)
        .stats(&stats)
        .env("FMCACHE_DEBUG", "panic")
        .env("RUST_BACKTRACE", "1")
        .run()
        .ok("served, panicking");
    assert_same(
        "panicking",
        "native",
        &s.native.stdout,
        "panicking",
        &o.stdout,
    );
    let err = o.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("fmcache: internal error at ")
            && lines[0].ends_with("the call passed through (reported once per process)"),
        "expected one internal-error line, got:\n{err}"
    );
    let st = fmcache_tests::read_stats(&stats);
    // The auditor's library search for the probe's libc is answered
    // outside `dispatch` (it never panics here); every hooked call of the
    // batch passes through.
    assert!(
        st.served < normal.served && st.passthrough >= s.batch.lines().count() as u64,
        "the batch's calls pass through instead of being served: {st:?} vs {normal:?}"
    );
}
