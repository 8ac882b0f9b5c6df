//! `fmcache verify`: a cache compared with the live file system catches a
//! changed `.py` (even of the same size and mtime), a changed `.so`, a new
//! file in a listed directory and a removed one.

use std::fs;
use std::path::Path;
use std::process::Command;

use fmcache_tests::{fixture, lib, py_env, tool, Run};

const PROGRAM: &str = r#"
import ctypes, os, sys
tree = sys.argv[1]
sys.path.insert(0, tree)
import mod
lib = ctypes.CDLL(os.path.join(tree, "libanswer.so"))
print(mod.VALUE, lib.answer(), sorted(os.listdir(tree)))
print(open(os.path.join(tree, "gone.txt")).read())
"#;

fn build_so(src_dir: &Path, out: &Path, value: i32) {
    let c = src_dir.join("answer.c");
    fs::write(&c, format!("int answer(void) {{ return {value}; }}\n")).unwrap();
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&c)
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed");
}

fn verify(cache: &Path) -> (i32, String) {
    let o = Command::new(tool())
        .arg("verify")
        .arg(cache)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn verify_reports_what_changed_after_the_pilot() {
    let f = fixture!("verify");
    let cache = f.cache("c");
    let tree = &f.tree;
    fs::write(tree.join("mod.py"), "VALUE = 1\n").unwrap();
    fs::write(tree.join("gone.txt"), "soon removed\n").unwrap();
    build_so(&f.out, &tree.join("libanswer.so"), 42);
    let run = || {
        Run::new(&py_env().python)
            .args(["-B", "-c", PROGRAM])
            .arg(tree)
    };
    let native = run().native().run().ok("native");
    // The auditor too, so the dlopen of the `.so` is recorded.
    let pilot = run()
        .env("LD_AUDIT", lib())
        .record(&cache)
        .run()
        .ok("pilot");
    assert_eq!(native.stdout, pilot.stdout);

    let (code, text) = verify(&cache.file);
    assert_eq!(code, 0, "fresh cache reported stale:\n{text}");
    assert!(text.contains(": fresh"), "{text}");

    // Same size, same mtime: only the content hash can tell.
    let py = tree.join("mod.py");
    let mtime = fs::metadata(&py).unwrap().modified().unwrap();
    fs::write(&py, "VALUE = 2\n").unwrap();
    let f_py = fs::File::options().write(true).open(&py).unwrap();
    f_py.set_modified(mtime).unwrap();
    drop(f_py);
    build_so(&f.out, &tree.join("libanswer.so.new"), 7);
    fs::rename(tree.join("libanswer.so.new"), tree.join("libanswer.so")).unwrap();
    fs::write(tree.join("added.txt"), "new\n").unwrap();
    fs::remove_file(tree.join("gone.txt")).unwrap();

    let (code, text) = verify(&cache.file);
    assert_eq!(code, 1, "stale cache not reported:\n{text}");
    let t = tree.display();
    for want in [
        format!("contents {t}/mod.py:"),
        format!("changed {t}/libanswer.so:"),
        format!("vanished {t}/gone.txt"),
        format!("listing {t}: +added.txt"),
        "STALE".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(text.contains("-gone.txt"), "{text}");
    // The `.py` kept its size and mtime: no stat difference is reported for it.
    assert!(
        !text.contains(&format!("changed {t}/mod.py: lstat size")),
        "{text}"
    );
}

#[test]
fn verify_exits_2_on_an_unreadable_cache() {
    let f = fixture!("verify-bad");
    let bad = f.out.join("bad.dat");
    fs::write(&bad, b"not a cache at all").unwrap();
    let (code, _) = verify(&bad);
    assert_eq!(code, 2);
    let missing = f.out.join("missing.dat");
    assert_eq!(verify(&missing).0, 2);
}

/// The directories walked through to the software (ancestors of its
/// roots) are in the cache for realpath's walk only, their type: a new
/// file beside the tree changes their times, not the cache's answers, so
/// verify stays fresh; a type change is still reported.
#[test]
fn walked_ancestors_are_checked_by_type_only() {
    let f = fixture!("verify_walk");
    let cache = f.cache("c");
    let sw = f.tree.join("a/sw");
    fs::create_dir_all(&sw).unwrap();
    fs::write(sw.join("x.txt"), "x\n").unwrap();
    Run::new("/bin/cat")
        .arg(sw.join("x.txt"))
        .env("FMCACHE_INCLUDE", &sw)
        .record(&cache)
        .run()
        .ok("pilot");
    let (code, text) = verify(&cache.file);
    assert_eq!(code, 0, "fresh right after the pilot:\n{text}");
    fs::write(f.tree.join("a/beside.txt"), "new\n").unwrap();
    let (code, text) = verify(&cache.file);
    assert_eq!(
        code, 0,
        "a new file beside the software made it stale:\n{text}"
    );
}
