//! Every change a served process makes is seen by it (issue 12, items 2,
//! 3, 8 and 10): by any spelling and interface, in both copies of the
//! library, with no small limit, and with every stream and descriptor
//! already handed out still working. Each test runs the same program
//! natively on tree `a` and served on an identical tree `b` (the pilot ran
//! its `look` part on `b`, with `FMCACHE_INCLUDE` naming `b`), and the
//! outputs must be byte-identical.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use fmcache_tests::{assert_same, fixture, lib, py_env, read_stats, Fixture, Out, Run};

/// Two identical trees `tree/a` (native) and `tree/b` (served).
fn two_trees(fx: &Fixture, make: fn(&Path)) -> (PathBuf, PathBuf) {
    let (a, b) = (fx.tree.join("a"), fx.tree.join("b"));
    make(&a);
    make(&b);
    (a, b)
}

/// Runs `program` with `args(tree)`: the pilot with `look` arguments on
/// `b`, then natively on `a` and served on `b`; returns (native, served,
/// served stats).
fn differential(
    fx: &Fixture,
    make: fn(&Path),
    program: &Path,
    look: &dyn Fn(&Path) -> Vec<String>,
    all: &dyn Fn(&Path) -> Vec<String>,
    audit: bool,
) -> (Out, Out, fmcache_tests::Stats) {
    let (a, b) = two_trees(fx, make);
    let cache = fx.cache("c");
    let with_audit = |r: Run| if audit { r.env("LD_AUDIT", lib()) } else { r };
    with_audit(
        Run::new(program)
            .args(look(&b))
            .cwd(&b)
            .env("FMCACHE_INCLUDE", &b),
    )
    .record(&cache)
    .run()
    .ok("pilot");
    let native = Run::new(program).args(all(&a)).cwd(&a).run();
    let stats = fx.out.join("serve.stats");
    let served = with_audit(Run::new(program).args(all(&b)).cwd(&b))
        .serve(&cache)
        .stats(&stats)
        .run();
    let s = read_stats(&stats);
    (native, served, s)
}

fn same(native: &Out, served: &Out) {
    assert!(
        native.status.success(),
        "native run failed: {}\n{}",
        native.stderr_str(),
        native.stdout_str()
    );
    assert_same(
        "served vs native",
        "native (tree a)",
        &native.stdout,
        "served (tree b)",
        &served.stdout,
    );
    assert_eq!(served.status.code(), native.status.code(), "exit status");
}

/// A Python script run as `python -c CODE look` (pilot) and `... all`.
fn python(name: &str, code: &str, make: fn(&Path)) -> (Out, Out, fmcache_tests::Stats) {
    let py = py_env();
    let fx = fixture!(name);
    let args = |what: &str| {
        let code = code.to_string();
        let what = what.to_string();
        move |_: &Path| vec!["-c".to_string(), code.clone(), what.clone()]
    };
    let r = differential(&fx, make, &py.python, &args("look"), &args("all"), false);
    same(&r.0, &r.1);
    assert_eq!(r.1.stderr_str(), "", "served stderr");
    r
}

/// Python helpers shared by the scripts, after `PY_SHOW`.
const PY_PRELUDE: &str = r#"
def read(p):
    with open(p, "rb") as f:
        return f.read()
def write(p, data, **kw):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, **kw)
    os.write(fd, data)
    os.close(fd)
"#;

fn py(body: &str) -> String {
    format!("{}{PY_PRELUDE}{body}", fmcache_tests::PY_SHOW)
}

/// Item 10: an `os.scandir` loop writing each result atomically
/// (`os.replace`) used to switch serving off after 8 renames and hand the
/// library's stream to libc (NotADirectoryError, crashes).
#[test]
fn scandir_loop_with_atomic_replace_writes() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("src")).unwrap();
        fs::create_dir_all(t.join("out")).unwrap();
        for i in 0..40 {
            fs::write(t.join(format!("src/n{i:02}")), format!("{i}\n")).unwrap();
        }
    }
    let code = py(r#"
show("src", lambda: sorted(os.listdir("src")))
show("out", lambda: sorted(os.listdir("out")))
show("stat src/n01", lambda: os.stat("src/n01").st_size)
if sys.argv[1] == "all":
    n = 0
    with os.scandir("src") as it:
        for e in it:
            tmp = os.path.join("out", ".tmp")
            with open(tmp, "w") as f:
                f.write(e.name * 3)
            os.replace(tmp, os.path.join("out", e.name))
            n += 1
    print("replaced", n)
    for name in sorted(os.listdir("out")):
        print(name, read(os.path.join("out", name)))
    show("src again", lambda: sorted(os.listdir("src")))
    for i in range(50):
        os.stat("src/n01")
"#);
    let (native, _, s) = python("chg_scandir_replace", &code, make);
    assert!(native.stdout_str().contains("replaced 40"), "sanity");
    assert!(s.served >= 50, "still served after 40 renames: {s:?}");
}

/// Item 2: `os.open(..., dir_fd=)` (openat on a real descriptor) used to
/// invalidate nothing.
#[test]
fn os_open_with_dir_fd_is_seen() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("d")).unwrap();
        fs::write(t.join("d/a"), b"original\n").unwrap();
    }
    let code = py(r#"
def look():
    show("read d/a", lambda: read("d/a"))
    show("size d/a", lambda: os.stat("d/a").st_size)
    show("read d/n", lambda: read("d/n"))
    show("list d", lambda: sorted(os.listdir("d")))
look()
if sys.argv[1] == "all":
    dfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
    write("a", b"rewritten through dir_fd\n", dir_fd=dfd)
    write("n", b"created through dir_fd\n", dir_fd=dfd)
    os.close(dfd)
    look()
"#);
    let (native, _, s) = python("chg_dir_fd", &code, make);
    assert!(native.stdout_str().contains("rewritten through dir_fd"));
    assert!(s.served > 0, "{s:?}");
}

/// Item 2: writes through a symlinked directory, a file symlink, a hard
/// link, `d/sub/../f`, and a relative path after chdir; each must show in
/// every spelling the cache holds (and the reverse: a write to the
/// canonical path shows through the symlinked directory).
#[test]
fn writes_by_every_spelling_are_seen() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("d/sub")).unwrap();
        for i in 0..6 {
            fs::write(t.join(format!("d/f{i}")), format!("old {i}\n")).unwrap();
        }
        symlink("d", t.join("ld")).unwrap();
        symlink("d/f1", t.join("fl")).unwrap();
        fs::hard_link(t.join("d/f2"), t.join("h")).unwrap();
    }
    let code = py(r#"
names = ["d/f0", "d/f1", "d/f2", "d/f3", "d/f4", "d/f5", "ld/f0", "ld/f3", "ld/f5",
         "fl", "h", "d/sub/../f3", "d/new", "ld/new"]
def look():
    for p in names:
        show("read " + p, lambda: read(p))
        show("stat " + p, lambda: (os.stat(p).st_size, os.stat(p).st_nlink))
    show("list d", lambda: sorted(os.listdir("d")))
    show("list ld", lambda: sorted(os.listdir("ld")))
look()
if sys.argv[1] == "all":
    print("-- changes")
    write("ld/f0", b"via the symlinked directory\n")
    write("fl", b"via the file symlink\n")
    write("h", b"via the hard link\n")
    write("d/sub/../f3", b"via dot-dot\n")
    os.chdir("d/sub")
    write("../f4", b"relative after chdir\n")
    write("../new", b"created relative\n")
    os.chdir("../..")
    write("d/f5", b"canonical, seen through ld\n")
    look()
"#);
    let (native, _, s) = python("chg_spellings", &code, make);
    assert!(native.stdout_str().contains("via the hard link"));
    assert!(s.served > 0, "{s:?}");
}

/// Item 8: an O_TMPFILE open (`tempfile.TemporaryFile`) in the pilot and
/// in the served process marks nothing changed: the directory it was
/// opened in is still served.
#[test]
fn temporary_file_changes_nothing() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("t")).unwrap();
        fs::write(t.join("t/k"), b"kept\n").unwrap();
    }
    let code = py(r#"
import tempfile
with tempfile.TemporaryFile(dir="t") as f:
    f.write(b"scratch")
    f.seek(0)
    print(f.read())
show("list t", lambda: sorted(os.listdir("t")))
for i in range(50):
    show("missing", lambda: os.stat("t/missing")) if i == 0 else os.path.exists("t/missing")
show("read t/k", lambda: read("t/k"))
"#);
    let (_, _, s) = python("chg_tmpfile", &code, make);
    assert!(s.served >= 50, "t/ still served after TemporaryFile: {s:?}");
}

/// Items 2 and 10: `tempfile.TemporaryDirectory` with 20 files (its
/// cleanup unlinks through a dirfd) used to use up the 8 slots.
#[test]
fn temporary_directory_with_20_files() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("t")).unwrap();
        fs::create_dir_all(t.join("keep")).unwrap();
        fs::write(t.join("keep/k"), b"kept\n").unwrap();
    }
    let code = py(r#"
import tempfile
show("list t", lambda: sorted(os.listdir("t")))
show("keep", lambda: read("keep/k"))
if sys.argv[1] == "all":
    with tempfile.TemporaryDirectory(dir="t") as td:
        for i in range(20):
            with open(os.path.join(td, "f%02d" % i), "w") as f:
                f.write("x" * i)
        names = sorted(os.listdir(td))
        print(names, [os.stat(os.path.join(td, n)).st_size for n in names])
        print("in t", len(os.listdir("t")))
    show("list t after", lambda: sorted(os.listdir("t")))
    show("td after", lambda: os.path.exists(td))
    for i in range(50):
        os.stat("keep/k")
"#);
    let (_, _, s) = python("chg_tempdir", &code, make);
    assert!(s.served >= 50, "still served after the cleanup: {s:?}");
}

/// Item 2: getcwd after the program renames an ancestor of its cwd, and
/// after it removes its cwd.
#[test]
fn getcwd_after_renaming_an_ancestor_and_removing_cwd() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("w/a/b")).unwrap();
    }
    let code = py(r#"
base = os.getcwd()
def cwd():
    return os.path.relpath(os.getcwd(), base)
show("list w", lambda: sorted(os.listdir("w")))
os.chdir("w/a/b")
show("cwd", cwd)
if sys.argv[1] == "all":
    os.rename(base + "/w/a", base + "/w/z")
    show("after renaming an ancestor", cwd)
    show("relative stat", lambda: os.stat(".").st_nlink)
    os.mkdir(base + "/w/gone")
    os.chdir(base + "/w/gone")
    os.rmdir(base + "/w/gone")
    show("after removing cwd", cwd)
"#);
    let (native, _, _) = python("chg_getcwd", &code, make);
    let text = native.stdout_str();
    assert!(text.contains("after renaming an ancestor w/z/b"), "{text}");
    assert!(text.contains("after removing cwd ERR ENOENT"), "{text}");
}

fn c_changes(fx: &Fixture) -> PathBuf {
    fx.c_program("changes")
}

fn strings(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    v.iter()
        .map(|s| s.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Item 2: files glibc creates itself (mkstemp, mkstemps, mkostemp,
/// mkdtemp and a file in it) and a Unix socket bound to a path.
#[test]
fn files_created_inside_glibc_are_seen() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("t")).unwrap();
    }
    let fx = fixture!("chg_temps");
    let exe = c_changes(&fx);
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"look", &t.join("t")]),
        &|t| strings(&[&"temps", &t.join("t")]),
        false,
    );
    same(&native, &served);
    let text = native.stdout_str();
    assert!(text.contains("mkstemp ok stat found"), "{text}");
    assert!(text.contains("sock is socket: 1"), "{text}");
    // Every probe comes after a creation in t/, so none is served; they
    // were looked up (the cache holds t's listing, which lacks the names).
    assert!(s.missed > 0, "{s:?}");
}

/// Item 2: rewinddir on a served stream after the program created a file
/// in that directory shows the file.
#[test]
fn rewinddir_after_create_shows_the_new_file() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("r")).unwrap();
        for i in 0..5 {
            fs::write(t.join(format!("r/x{i}")), b"x").unwrap();
        }
    }
    let fx = fixture!("chg_rewind");
    let exe = c_changes(&fx);
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"look", &t.join("r")]),
        &|t| strings(&[&"rewind", &t.join("r")]),
        false,
    );
    same(&native, &served);
    assert!(native.stdout_str().contains("after rewinddir 8"), "sanity");
    assert!(s.served > 0, "the stream was served: {s:?}");
}

/// Item 10: after many changes (100 renames of files and directories), a
/// stream opened before them is still ours: readdir, seekdir, telldir,
/// rewinddir and dirfd work, and the program's own log descriptor is
/// untouched (glibc used to lseek the program's descriptors).
#[test]
fn served_streams_survive_many_changes() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("d")).unwrap();
        fs::create_dir_all(t.join("scr")).unwrap();
        for i in 0..20 {
            fs::write(t.join(format!("d/x{i:02}")), b"x").unwrap();
        }
    }
    let fx = fixture!("chg_streams");
    let exe = c_changes(&fx);
    let out = fx.out.clone();
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"look", &t.join("d")]),
        &|t| {
            let tag = t.file_name().unwrap().to_string_lossy().into_owned();
            strings(&[
                &"streams",
                &t.join("d"),
                &t.join("scr"),
                &"50",
                &out.join(format!("log-{tag}")),
            ])
        },
        false,
    );
    same(&native, &served);
    assert!(native.stdout_str().contains("log 10: start\nend\n"));
    assert!(s.served > 0, "{s:?}");
}

/// Compiles a one-function library returning `v` (padded by `pad` bytes,
/// so the two versions differ in size too).
fn shared_lib(dir: &Path, name: &str, v: i32, pad: usize) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    fs::write(
        &src,
        format!("int version(void) {{ return {v}; }}\nchar pad_{v}[{pad}] = {{1}};\n"),
    )
    .unwrap();
    let so = dir.join(name);
    let o = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(&src).unwrap();
    so
}

/// Item 3: a library rewritten in place, then dlopen'd again, gives the
/// new version; a library created then dlopen'd is found. The loader's
/// search is answered by the auditor copy, which must share the preload
/// copy's trust state.
#[test]
fn library_rewritten_or_created_then_dlopened() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("lib")).unwrap();
        shared_lib(&t.join("lib"), "libv.so", 1, 10);
        shared_lib(&t.join("lib"), "v2.so", 2, 5000);
    }
    let fx = fixture!("chg_dlopen");
    let exe = c_changes(&fx);
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"dlook", &t.join("lib/libv.so"), &t.join("lib/libnew.so")]),
        &|t| {
            strings(&[
                &"dl",
                &t.join("lib/libv.so"),
                &t.join("lib/v2.so"),
                &t.join("lib/libnew.so"),
            ])
        },
        true,
    );
    same(&native, &served);
    assert_eq!(
        native.stdout_str(),
        "first: version 1\nrewritten in place: version 2\n\
         missing: dlopen fails (No such file)\ncreated: version 2\n"
    );
    assert!(s.served > 0, "{s:?}");
}

/// Item 10: 100,000 renames and 100,000 unlinks (outside the cache) and
/// 1,000 of each inside it, in one served process: correct, still served
/// afterwards, memory bounded. The memory figure is printed.
#[test]
fn hundred_thousand_renames_and_unlinks() {
    fn make(t: &Path) {
        fs::create_dir_all(t.join("keep")).unwrap();
        for i in 1..4 {
            fs::write(t.join(format!("keep/k{i}")), format!("{i}\n")).unwrap();
        }
    }
    let fx = fixture!("chg_stress");
    let exe = c_changes(&fx);
    let out = fx.out.clone();
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"look", &t.join("keep")]),
        &|t| {
            let scratch = out.join(format!(
                "scratch-{}",
                t.file_name().unwrap().to_string_lossy()
            ));
            fs::create_dir_all(&scratch).unwrap();
            strings(&[&"stress", &t, &scratch, &"100000"])
        },
        false,
    );
    same(&native, &served);
    assert!(native.stdout_str().contains("failures 0"), "sanity");
    // The 100 stats of keep/k1 and its listing come after every change.
    assert!(s.served >= 100, "served after the changes: {s:?}");
    let kb = |text: &str, tag: &str, field: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag} in {text}"));
        let at = line.find(field).unwrap() + field.len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let err = served.stderr_str();
    let (hwm0, hwm1) = (
        kb(&err, "memory before", "VmHWM:"),
        kb(&err, "memory after", "VmHWM:"),
    );
    let (rss0, rss1) = (
        kb(&err, "memory before", "VmRSS:"),
        kb(&err, "memory after", "VmRSS:"),
    );
    eprintln!("served process: VmRSS {rss0} -> {rss1} kB, VmHWM {hwm0} -> {hwm1} kB");
    assert!(
        hwm1 < hwm0 + 4096,
        "memory grew by {} kB over 200,000 changes",
        hwm1 - hwm0
    );
}

/// Item 10, inside the cache: 5,000 cached directories renamed one by one
/// (each takes a prefix: entries under it). Every old spelling fails, every
/// new one is found, memory stays bounded.
#[test]
fn five_thousand_cached_directories_renamed() {
    const N: usize = 5000;
    fn make(t: &Path) {
        for i in 0..N {
            fs::create_dir_all(t.join(format!("d{i}"))).unwrap();
            fs::write(t.join(format!("d{i}/f")), b"f").unwrap();
        }
    }
    let fx = fixture!("chg_dir_renames");
    let exe = c_changes(&fx);
    let n = N.to_string();
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"lookdirs", &t, &n]),
        &|t| strings(&[&"renamedirs", &t, &n]),
        false,
    );
    same(&native, &served);
    assert_eq!(
        native.stdout_str(),
        format!("found before {N}, old names gone {N}, new names found {N}\n")
    );
    assert!(s.served >= N as u64, "{s:?}");
    let err = served.stderr_str();
    eprintln!("{}", err.trim());
    let hwm = |tag: &str| -> u64 {
        let line = err.lines().find(|l| l.starts_with(tag)).unwrap();
        let at = line.find("VmHWM:").unwrap() + 6;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        hwm("memory after") < hwm("memory before") + 4096,
        "memory grew over {N} prefixes: {err}"
    );
}

/// Writers in 8 threads at once: each renames its own cached directory
/// back and forth 2,000 times (prefixes added concurrently, the inode
/// index built by whichever thread comes first) while the others probe;
/// after every rename the old spelling fails and the new one is found.
#[test]
fn eight_threads_change_and_probe_at_once() {
    fn make(t: &Path) {
        for i in 0..8 {
            fs::create_dir_all(t.join(format!("t{i}/a"))).unwrap();
            fs::write(t.join(format!("t{i}/a/f")), b"f").unwrap();
        }
    }
    let fx = fixture!("chg_threads");
    let exe = c_changes(&fx);
    let out = fx.out.clone();
    let (native, served, s) = differential(
        &fx,
        make,
        &exe,
        &|t| strings(&[&"threads", &t, &out, &"0"]),
        &|t| {
            let scratch = out.join(format!(
                "scratch-{}",
                t.file_name().unwrap().to_string_lossy()
            ));
            fs::create_dir_all(&scratch).unwrap();
            strings(&[&"threads", &t, &scratch, &"2000"])
        },
        false,
    );
    same(&native, &served);
    assert_eq!(native.stdout_str(), "threads done, failures 0\n");
    assert!(s.served > 0, "{s:?}");
}
