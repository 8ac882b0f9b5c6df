//! The `fmcache` command, without the preload library: caches are built
//! with `fmcache_format::Builder`, and a dummy file stands in for the
//! library where a command is launched (the dynamic loader ignores it).

use std::borrow::Cow;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use fmcache_format::layout::{StatRec, S_IFDIR, S_IFLNK, S_IFREG};
use fmcache_format::{Builder, Content, DirentRec, Record};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fmcache");

/// A private directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("fmcache-cli-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn st(mode: u32, ino: u64, size: i64) -> StatRec {
    StatRec {
        dev: 42,
        ino,
        nlink: 1,
        mode,
        uid: 1000,
        gid: 1000,
        size,
        blksize: 4096,
        mtime: 1_700_000_000,
        ..StatRec::default()
    }
}

fn dirent(name: &str, d_type: u8, ino: u64) -> DirentRec {
    DirentRec {
        name: name.as_bytes().to_vec(),
        d_type,
        ino,
    }
}

/// A cache with one of each kind:
///
/// - `/data` directory with its listing
/// - `/data/file.txt` and `/data/copy.txt`, same contents (one blob)
/// - `/data/link` symlink to `file.txt`
/// - `/data/missing` ENOENT, `/data/file.txt/x` ENOTDIR
/// - `/data/out` excluded
fn build_cache(path: &Path) -> u64 {
    let hello: &[u8] = b"hello";
    let file = |p: &str, ino: u64| Record {
        path: p.as_bytes().to_vec(),
        lstat: Some(Ok(st(S_IFREG | 0o644, ino, 5))),
        access: Some([0, 0, libc::EACCES as u8]),
        content: Some(Content {
            mirror: p.as_bytes().to_vec(),
            bytes: Cow::Borrowed(hello),
        }),
        ..Record::default()
    };
    // Recorded by whoever runs the test: `stage` refuses another uid's cache.
    // SAFETY: geteuid/getegid have no preconditions.
    let mut b = Builder::new(unsafe { libc::geteuid() }, unsafe { libc::getegid() });
    b.add(Record {
        path: b"/data".to_vec(),
        lstat: Some(Ok(st(S_IFDIR | 0o755, 2, 4096))),
        access: Some([0, 0, 0]),
        listing: Some(vec![
            dirent(".", libc::DT_DIR, 2),
            dirent("..", libc::DT_DIR, 1),
            dirent("file.txt", libc::DT_REG, 3),
            dirent("copy.txt", libc::DT_REG, 4),
            dirent("link", libc::DT_LNK, 5),
            dirent("out", libc::DT_DIR, 6),
        ]),
        ..Record::default()
    });
    b.add(file("/data/file.txt", 3));
    b.add(file("/data/copy.txt", 4));
    b.add(Record {
        path: b"/data/link".to_vec(),
        lstat: Some(Ok(st(S_IFLNK | 0o777, 5, 8))),
        follow: Some(Ok(st(S_IFREG | 0o644, 3, 5))),
        link: Some(b"file.txt".to_vec()),
        ..Record::default()
    });
    b.add(Record {
        path: b"/data/missing".to_vec(),
        lstat: Some(Err(libc::ENOENT)),
        ..Record::default()
    });
    b.add(Record {
        path: b"/data/file.txt/x".to_vec(),
        lstat: Some(Err(libc::ENOTDIR)),
        ..Record::default()
    });
    b.add(Record {
        path: b"/data/out".to_vec(),
        excluded: true,
        ..Record::default()
    });
    let mut bytes = Vec::new();
    let written = b.write(&mut bytes).unwrap();
    std::fs::write(path, &bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    written.file_size
}

/// Runs `fmcache` with a clean fmcache environment.
fn fmcache(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    let library = fmcache_core::config::LIBRARY_VARS.iter().map(|(n, _)| *n);
    for k in library.chain(["FMCACHE_LIB"]) {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_counts_entries_by_kind() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    let size = build_cache(&cache);
    let o = fmcache(&["inspect", s(&cache)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // SAFETY: geteuid/getegid have no preconditions.
    let who = unsafe {
        format!(
            "recorded as     uid {} gid {}",
            libc::geteuid(),
            libc::getegid()
        )
    };
    for want in [
        "format version  6",
        who.as_str(),
        "entries         7",
        "(2 with contents, 0 without)",
        "(1 with listing, 0 without)",
        "(ENOENT 1, ENOTDIR 1)",
        "contents        5 (5 B) in 1 blobs",
        fmcache_format::build_name(),
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(out.contains(&format!("file size       {size} ")), "{out}");
    let symlinks = out
        .lines()
        .find(|l| l.trim_start().starts_with("symlinks"))
        .unwrap();
    assert_eq!(symlinks.split_whitespace().nth(1), Some("1"));
    let excluded = out
        .lines()
        .find(|l| l.trim_start().starts_with("excluded"))
        .unwrap();
    assert_eq!(excluded.split_whitespace().nth(1), Some("1"));
}

#[test]
fn inspect_json_has_stable_keys() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    let size = build_cache(&cache);
    // The cache path from the environment, as the library reads it.
    let o = fmcache(
        &["inspect", "--json", "--top", "2"],
        &[("FMCACHE_FILE", &cache)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["format_version"], 6);
    assert_eq!(v["file_size"], size);
    assert_eq!(v["entries"], 7);
    assert_eq!(v["build_id"].as_str().map(str::len), Some(32));
    assert_eq!(v["checksum"].as_str().map(str::len), Some(16));
    let k = &v["kinds"];
    assert_eq!(k["files_with_content"], 2);
    assert_eq!(k["files_without_content"], 0);
    assert_eq!(k["dirs_with_listing"], 1);
    assert_eq!(k["dirs_without_listing"], 0);
    assert_eq!(k["symlinks"], 1);
    assert_eq!(k["other"], 0);
    assert_eq!(k["failed"], 2);
    assert_eq!(k["excluded"], 1);
    assert_eq!(v["errnos"]["ENOENT"], 1);
    assert_eq!(v["errnos"]["ENOTDIR"], 1);
    assert_eq!(v["content_bytes"], 5);
    assert_eq!(v["blobs"], 1);
    // /data holds copy.txt, file.txt, link, missing (out is excluded).
    assert_eq!(v["top_probed"][0]["dir"], "/data");
    assert_eq!(v["top_probed"][0]["count"], 4);
    assert_eq!(v["top_probed"][1]["dir"], "/");
    assert_eq!(v["top_probed"].as_array().map(Vec::len), Some(2));
    // One failure each: sorted by count, then by name.
    assert_eq!(v["top_failed"][0]["dir"], "/data");
    assert_eq!(v["top_failed"][1]["dir"], "/data/file.txt");
    assert_eq!(v["top_failed"][1]["count"], 1);
}

fn assert_refused(path: &Path, reason: &str) {
    let o = fmcache(&["inspect", s(path)], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("fmcache: {}: ", s(path))), "{err}");
    assert!(err.contains(reason), "{reason:?} not in {err}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn inspect_refuses_damaged_caches() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    let good = std::fs::read(&cache).unwrap();

    let truncated = dir.path().join("truncated.dat");
    std::fs::write(&truncated, &good[..good.len() - 3]).unwrap();
    assert_refused(&truncated, "truncated");

    let tiny = dir.path().join("tiny.dat");
    std::fs::write(&tiny, &good[..100]).unwrap();
    assert_refused(&tiny, "too small");

    // A flipped bit in the contents, in the index, and in the magic.
    for (name, at, reason) in [
        ("data.dat", good.len() - 4, "checksum"),
        ("index.dat", 300, "checksum"),
        ("magic.dat", 0, "bad magic"),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let p = dir.path().join(name);
        std::fs::write(&p, &bad).unwrap();
        assert_refused(&p, reason);
    }

    assert_refused(&dir.path().join("absent.dat"), "No such file");
}

#[test]
fn stats_sums_files() {
    let dir = TempDir::new();
    let a = dir.path().join("a.stats");
    let b = dir.path().join("b.stats");
    std::fs::write(
        &a,
        "pid=10 op=serve served=90 missed=10 passthrough=5 recorded=0 exe=/usr/bin/python3 -c x\n\
         pid=11 op=serve served=10 missed=0 passthrough=1 recorded=0 future=1 exe=sh\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "pid=20 op=record served=0 missed=0 passthrough=0 recorded=40 exe=./pilot\n\
         pid=21 op=serve served=bad\n\
         \n\
         pid=22 op=off served=0 missed=0 passthrough=7 recorded=0 exe=\n",
    )
    .unwrap();

    let o = fmcache(&["stats", "--json", s(&a), s(&b)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["processes"], 4);
    assert_eq!(v["served"], 100);
    assert_eq!(v["missed"], 10);
    assert_eq!(v["passthrough"], 13);
    assert_eq!(v["recorded"], 40);
    assert_eq!(v["malformed"], 1);
    assert_eq!(v["ops"]["serve"], 2);
    assert_eq!(v["ops"]["record"], 1);
    assert_eq!(v["ops"]["off"], 1);
    let f = v["served_fraction"].as_f64().unwrap();
    assert!((f - 100.0 / 110.0).abs() < 1e-9, "{f}");
    // The malformed line is named by file and line number.
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}:2: malformed line", s(&b))),
        "{err}"
    );

    // Text, with the file from FMCACHE_STATS.
    let o = fmcache(&["stats"], &[("FMCACHE_STATS", &a)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("processes        2  (serve 2)"), "{out}");
    assert!(out.contains("served           100"), "{out}");
    assert!(out.contains("served fraction  0.9091 (90.9%)"), "{out}");
    assert!(!out.contains("malformed"), "{out}");

    let o = fmcache(&["stats"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("fmcache: "), "{}", stderr(&o));
    let o = fmcache(&["stats", s(&dir.path().join("absent"))], &[]);
    assert_eq!(o.status.code(), Some(1));
}

/// A file in place of libfmcache.so: ld.so warns and ignores it, so the
/// command runs with the environment `record` and `run` give it.
fn dummy_lib(dir: &TempDir) -> PathBuf {
    let lib = dir.path().join("libfmcache.so");
    std::fs::write(&lib, b"not a library").unwrap();
    lib
}

#[test]
fn record_sets_the_environment_and_passes_the_exit_code() {
    let dir = TempDir::new();
    let lib = dummy_lib(&dir);
    let cache = dir.path().join("c.dat");
    std::fs::write(&cache, b"an old cache").unwrap();
    let env_out = dir.path().join("env.txt");
    let script = format!(
        "echo \"$DLFM_OP|$FMCACHE_FILE|$LD_PRELOAD|$FMCACHE_INCLUDE|$FMCACHE_EXCLUDE|$LD_AUDIT\" > '{}'; exit 7",
        s(&env_out)
    );
    let mut c = Command::new(BIN);
    c.current_dir(dir.path())
        .args([
            "record",
            "--cache",
            "c.dat",
            "--include",
            "/opt/sw",
            "--include",
            "inc",
            "--exclude",
            "/opt/sw/tmp",
            "--",
        ])
        .args(["sh", "-c", &script])
        .env("FMCACHE_LIB", &lib)
        .env("LD_PRELOAD", format!("/x.so:{}", s(&lib)))
        .env("LD_AUDIT", "/y.so")
        .env_remove("FMCACHE_FILE");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let seen = std::fs::read_to_string(&env_out).unwrap();
    let lib = std::fs::canonicalize(&lib).unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    // Relative paths are resolved against the (canonical) working directory.
    // The auditor goes last in LD_AUDIT, after the one already there.
    let want = format!(
        "write-cache|{}/c.dat|{}:/x.so|/opt/sw:{}/inc|/opt/sw/tmp|/y.so:{}\n",
        s(&base),
        s(&lib),
        s(&base),
        s(&lib)
    );
    assert_eq!(seen, want);
    // A fresh pilot removed the old cache; nothing was recorded, so there
    // is no new one, and the record directory is tidied away.
    assert!(!cache.exists());
    assert!(!dir.path().join("c.dat.rec").exists());
    let err = stderr(&o);
    assert!(
        err.contains("fmcache: the pilot exited with code 7"),
        "{err}"
    );
    assert!(err.contains("fmcache: no cache written"), "{err}");
    assert!(
        err.lines()
            .filter(|l| !l.contains("ld.so"))
            .all(|l| l.starts_with("fmcache: ")),
        "{err}"
    );
}

#[test]
fn record_append_keeps_the_cache_and_signals_map_to_128_plus() {
    let dir = TempDir::new();
    let lib = dummy_lib(&dir);
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    let o = fmcache(
        &[
            "record",
            "--append",
            "--cache",
            s(&cache),
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        &[("FMCACHE_LIB", &lib)],
    );
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("killed by signal 15"), "{err}");
    // The summary describes the kept cache.
    assert!(err.contains("7 entries: 2 files with contents, 1 directories with listings, 1 symlinks, 2 failed lookups, 1 excluded"), "{err}");
    assert!(cache.exists());
}

#[test]
fn run_serves_and_reports_missing_commands() {
    let dir = TempDir::new();
    let lib = dummy_lib(&dir);
    let cache = dir.path().join("c.dat");
    let out = dir.path().join("env.txt");
    let script = format!("echo \"$DLFM_OP|$FMCACHE_FILE|$LD_AUDIT\" > '{}'", s(&out));
    let o = fmcache(
        &["run", "--cache", s(&cache), "--", "sh", "-c", &script],
        &[("FMCACHE_LIB", &lib)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!(
            "read-cache|{}|{}\n",
            s(&cache),
            s(&std::fs::canonicalize(&lib).unwrap())
        )
    );

    let o = fmcache(
        &["run", "--", "/nonexistent/program"],
        &[("FMCACHE_LIB", &lib)],
    );
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).starts_with("fmcache: /nonexistent/program: "),
        "{}",
        stderr(&o)
    );

    // No library: one line, non-zero.
    let o = fmcache(
        &["run", "--", "true"],
        &[("FMCACHE_LIB", &dir.path().join("absent.so"))],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("FMCACHE_LIB="), "{err}");
}

#[test]
fn stage_attaches_and_cleans() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    let stage = dir.path().join("stage");
    let env = [
        ("FMCACHE_FILE", cache.as_path()),
        ("FMCACHE_STAGE_DIR", stage.as_path()),
    ];
    let o = fmcache(&["stage"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(s(&stage)) && out.contains("(7 entries"),
        "{out}"
    );
    let staged: Vec<_> = std::fs::read_dir(&stage)
        .unwrap()
        .flatten()
        .filter(|d| d.path().is_dir())
        .collect();
    assert_eq!(staged.len(), 1);
    assert_eq!(
        std::fs::read(staged[0].path().join("root/data/file.txt")).unwrap(),
        b"hello"
    );

    let o = fmcache(&["stage", "--clean"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("removed 1 stage from"),
        "{}",
        stdout(&o)
    );
    assert!(std::fs::read_dir(&stage).unwrap().next().is_none());

    // A damaged cache is refused with one line.
    std::fs::write(&cache, b"FMCACHE\0 but nothing more").unwrap();
    let o = fmcache(&["stage"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn merge_without_journals_keeps_the_cache() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    let before = std::fs::read(&cache).unwrap();
    let o = fmcache(&["merge", "--json", "--cache", s(&cache)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["journals"], 0);
    assert_eq!(v["rewritten"], false);
    assert_eq!(v["entries"], 7);
    assert_eq!(std::fs::read(&cache).unwrap(), before);
    assert!(!dir.path().join("c.dat.rec").exists());
}

#[test]
fn stats_refuses_a_file_that_is_not_statistics() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello world\nsome random text\n").unwrap();
    for f in [&cache, &text] {
        for json in [false, true] {
            let mut args = vec!["stats"];
            if json {
                args.push("--json");
            }
            args.push(s(f));
            let o = fmcache(&args, &[]);
            assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
            assert_eq!(stdout(&o), "", "nothing summed");
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with(&format!("fmcache: {}: not a statistics file", s(f))),
                "{err}"
            );
        }
    }
    // An empty file (nothing ran yet) is not refused: zero processes.
    let empty = dir.path().join("empty.stats");
    std::fs::write(&empty, "").unwrap();
    let o = fmcache(&["stats", "--json", s(&empty)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["processes"], 0);
    // `fmcache stats stats.*` names a statistics file and the live file
    // beside it: the live file is read through its statistics file, not
    // refused as one.
    let st = dir.path().join("stats.1");
    std::fs::write(
        &st,
        "pid=7 op=serve served=3 missed=0 passthrough=1 recorded=0 exe=x\n",
    )
    .unwrap();
    let live = dir.path().join("stats.1.live.node1");
    std::fs::write(&live, "not a table").unwrap();
    let o = fmcache(&["stats", "--json", s(&st), s(&live)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["processes"].as_u64(), v["served"].as_u64()),
        (Some(1), Some(3))
    );
}

/// The lstat of a live file as the recorder keeps it.
fn live_stat(p: &Path) -> StatRec {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    StatRec {
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size() as i64,
        blksize: m.blksize() as i64,
        blocks: m.blocks() as i64,
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
        ..StatRec::default()
    }
}

/// A cache of two software roots that match the live files:
/// `<dir>/sw1` (`a.txt`, `b.txt`, `n.txt`) and `<dir>/sw2` (`c.txt`), every
/// file with its contents.
fn live_cache(dir: &Path, cache: &Path) {
    let mut b = Builder::new(unsafe { libc::geteuid() }, unsafe { libc::getegid() });
    let mut contents = Vec::new();
    for (root, files) in [
        ("sw1", &["a.txt", "b.txt", "n.txt"][..]),
        ("sw2", &["c.txt"]),
    ] {
        let r = dir.join(root);
        std::fs::create_dir_all(&r).unwrap();
        for f in files {
            std::fs::write(r.join(f), format!("{f} v1\n")).unwrap();
        }
        b.add(Record {
            path: s(&r).as_bytes().to_vec(),
            lstat: Some(Ok(live_stat(&r))),
            root: true,
            ..Record::default()
        });
        for f in files {
            contents.push(r.join(f));
        }
    }
    let bytes: Vec<Vec<u8>> = contents.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (p, bytes) in contents.iter().zip(&bytes) {
        b.add(Record {
            path: s(p).as_bytes().to_vec(),
            lstat: Some(Ok(live_stat(p))),
            content: Some(Content {
                mirror: s(p).as_bytes().to_vec(),
                bytes: Cow::Borrowed(bytes),
            }),
            ..Record::default()
        });
    }
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    std::fs::write(cache, &out).unwrap();
}

/// `YYYY-MM-DD hh:mm:ss` followed by `.nnnnnnnnn` or nothing, then ` UTC`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 23
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s[19..].starts_with(" UTC")
            || (b[19] == b'.' && digits(20..29) && s[29..].starts_with(" UTC")))
}

#[test]
fn verify_counts_a_new_size_as_contents_and_prints_dates() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    live_cache(dir.path(), &cache);
    let o = fmcache(&["verify", s(&cache)], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("6 entries checked: 0 changed"),
        "{}",
        stdout(&o)
    );
    // Not a terminal: nothing on stderr (no bar, no escape codes).
    assert_eq!(stderr(&o), "");

    let sw1 = dir.path().join("sw1");
    // a.txt: other bytes, another size; b.txt: same size, other bytes;
    // n.txt: same bytes, other mode (metadata only).
    std::fs::write(sw1.join("a.txt"), "a.txt v22\n").unwrap();
    std::fs::write(sw1.join("b.txt"), "b.txt v2\n").unwrap();
    std::fs::set_permissions(sw1.join("n.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = fmcache(&["verify", s(&cache)], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
            .to_string()
    };
    let a = line(&format!("contents {}/a.txt: lstat ", s(&sw1)));
    assert!(a.contains("size 9 -> 10"), "{a}");
    // The times are dates, not seconds.
    let (_, mtime) = a.split_once("mtime ").unwrap_or_else(|| panic!("{a}"));
    let (was, now) = mtime.split_once(" -> ").unwrap();
    assert!(is_date(was) && is_date(now), "{a}");
    // One line for a.txt: its new size already says the contents differ.
    assert_eq!(out.matches("/a.txt").count(), 1, "{out}");
    line(&format!(
        "contents {}/b.txt: 9 bytes recorded, 9 now",
        s(&sw1)
    ));
    line(&format!("changed {}/n.txt: lstat mode", s(&sw1)));
    // Each entry is counted once: a.txt and b.txt as contents, n.txt as
    // changed; sw1 (its ctime/mtime unchanged by rewrites) not at all.
    assert!(
        out.contains("6 entries checked: 1 changed, 0 appeared, 0 vanished, 0 listings and 2 contents differ: STALE"),
        "{out}"
    );
}

#[test]
fn verify_root_limits_the_checks() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    live_cache(dir.path(), &cache);
    let (sw1, sw2) = (dir.path().join("sw1"), dir.path().join("sw2"));
    std::fs::write(sw1.join("a.txt"), "changed\n").unwrap();
    let o = fmcache(&["verify", "--root", s(&sw2), s(&cache)], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("2 entries checked under {}: 0 changed", s(&sw2))),
        "{}",
        stdout(&o)
    );
    let o = fmcache(
        &["verify", "--root", &format!("{}/", s(&sw1)), s(&cache)],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("4 entries checked under"),
        "{}",
        stdout(&o)
    );
    // A path under no root is refused, the roots named.
    let o = fmcache(&["verify", "--root", s(dir.path()), s(&cache)], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not at or under a root this cache serves"),
        "{err}"
    );
    assert!(err.contains(s(&sw1)) && err.contains(s(&sw2)), "{err}");
}

/// Under a pseudo-terminal (util-linux `script`) `fmcache verify` draws
/// its progress bar on stderr; the report is the same as without one.
#[test]
fn verify_shows_progress_on_a_terminal() {
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    live_cache(dir.path(), &cache);
    let cmd = format!("{BIN} verify {}", s(&cache));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("verify ["), "no bar in {out:?}");
    assert!(out.contains("/6 entries"), "no count in {out:?}");
    assert!(out.contains("6 entries checked: 0 changed"), "{out:?}");
}

#[test]
fn env_lists_the_library_variables() {
    use fmcache_core::config::{CONTEXT_VARS, LIBRARY_VARS};
    let o = fmcache(&["env", "--names"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<&str> = LIBRARY_VARS.iter().map(|(n, _)| *n).collect();
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), names);
    for must in ["DLFM_OP", "FMCACHE_VERIFY", "FMCACHE_DEBUG", "LD_PRELOAD"] {
        assert!(names.contains(&must), "{must}");
    }

    // The table: every variable with its meaning; the value when set.
    let dir = TempDir::new();
    let cache = dir.path().join("here.dat");
    let o = fmcache(&["env"], &[("FMCACHE_FILE", &cache)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (name, what) in LIBRARY_VARS.iter().chain(CONTEXT_VARS) {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(name) && l.ends_with(what)),
            "{name} missing in:\n{out}"
        );
    }
    assert!(out.contains(&format!("now: {}", s(&cache))), "{out}");

    // As scripts use it: unset every one, then nothing of fmcache is left.
    let script = "export DLFM_OP=read-cache FMCACHE_DEBUG=search LD_PRELOAD=x.so; \
                  for v in $(\"$BIN\" env --names); do unset $v; done; \
                  echo \"[$DLFM_OP$FMCACHE_DEBUG$LD_PRELOAD]\"";
    let o = Command::new("sh")
        .args(["-c", script])
        .env("BIN", BIN)
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "[]\n", "{}", stderr(&o));
}

/// The report names what the cache holds: it is never written through a
/// symlink (someone else's, in a shared directory) and is no more readable
/// than the cache.
#[test]
fn report_is_not_written_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let cache = dir.path().join("c.dat");
    build_cache(&cache);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = dir.path().join("victim");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.path().join("report.html");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = fmcache(&["report", s(&cache), "-o", s(&link)], &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let page = dir.path().join("page.html");
    let o = fmcache(&["report", s(&cache), "-o", s(&page)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
