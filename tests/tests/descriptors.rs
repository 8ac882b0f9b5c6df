//! Descriptors, per-thread cwd and over-long paths, native vs served
//! (issue 12, items 4, 6, 7). `tests/c/fds.c` prints only facts that do
//! not depend on inode numbers or times, so a native run on tree `a` and
//! a served run on an identical tree `b` (recorded beforehand) compare
//! byte-for-byte.

use std::fs;

use fmcache_tests::{assert_same, fixture, read_stats, tok, Run};

const OLD: &[u8] = b"old contents\n";

/// Holds descriptors (one dup'd, one close-on-exec) and a MAP_SHARED
/// mapping of a served file, makes `how` change to it, and prints what
/// they show; native on `a/f`, served on `b/f`.
fn after_change(how: &str) -> (String, String) {
    let fx = fixture!(&format!("fds_{how}"));
    let (a, b) = (fx.tree.join("a"), fx.tree.join("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), OLD).unwrap();
    }
    let fds = fx.c_program("fds");
    let cache = fx.cache("c");
    Run::new(&fds)
        .args(["look".as_ref(), b.join("f").as_os_str()])
        .env("FMCACHE_INCLUDE", &b)
        .cwd(&fx.out)
        .record(&cache)
        .run()
        .ok("pilot");
    let native = Run::new(&fds)
        .args([how.as_ref(), a.join("f").as_os_str()])
        .cwd(&fx.out)
        .run()
        .ok("native");
    let stats = fx.out.join("serve.stats");
    let served = Run::new(&fds)
        .args([how.as_ref(), b.join("f").as_os_str()])
        .cwd(&fx.out)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    assert_eq!(served.stderr_str(), "", "{how}");
    assert_same(
        &format!("descriptors after {how}"),
        "native (tree a)",
        &native.stdout,
        "served (tree b)",
        &served.stdout,
    );
    let s = read_stats(&stats);
    assert!(
        s.served >= 2,
        "{how}: the two opens before the change must be served: {s:?}"
    );
    (native.stdout_str(), served.stdout_str())
}

/// In place (O_TRUNC + write): old descriptors see the new bytes and size,
/// dup'd ones keep sharing their offset, close-on-exec is kept.
#[test]
fn old_descriptor_after_rewrite_in_place() {
    let (native, _) = after_change("rewrite");
    assert!(
        native.contains("fd1 size=37 nlink=1 mode=100644 same_inode=yes")
            && native.contains("pread=37:\"the new contents")
            && native.contains("fd3 ")
            && native.contains("cloexec=1")
            && native.contains("map len=13 \"the new conte\""),
        "sanity: {native}"
    );
}

/// truncate(path): old descriptors and the shared mapping see it.
#[test]
fn old_descriptor_after_truncate() {
    let (native, _) = after_change("truncate");
    assert!(
        native.contains("size=3 ") && native.contains("pread=3:\"old\""),
        "sanity: {native}"
    );
}

/// Atomic replace (rename over the path): the old descriptor keeps the old
/// inode and bytes, and its fstat differs from stat(path) in inode, which
/// is what `tail -F` and config reloaders look at.
#[test]
fn old_descriptor_after_rename_over_detects_the_replace() {
    let (native, _) = after_change("replace");
    assert!(
        native.contains("fd1 size=13 nlink=0 mode=100644 same_inode=REPLACED path_size=37")
            && native.contains("pread=13:\"old contents|\""),
        "sanity: {native}"
    );
}

#[test]
fn old_descriptor_after_unlink() {
    let (native, _) = after_change("unlink");
    assert!(
        native.contains("nlink=0") && native.contains("path=ERR 2"),
        "sanity: {native}"
    );
}

#[test]
fn old_descriptor_after_chmod() {
    let (native, _) = after_change("chmod");
    assert!(native.contains("mode=100600"), "sanity: {native}");
}

/// A MAP_SHARED mapping whose descriptor was closed before the rewrite.
#[test]
fn shared_mapping_after_rewrite_in_place() {
    let (native, _) = after_change("maponly");
    assert!(
        native.contains("map len=13 \"the new conte\""),
        "sanity: {native}"
    );
}

/// A served file reached by a path other than the one it was opened by:
/// `viasymlink` opens `ln` (a symlink to `f`) and rewrites `f`; `dirmove`
/// opens `d/f`, renames `d` to `d2` and rewrites `d2/f`. Native on tree
/// `a`, served on tree `b`.
fn other_path(how: &str) -> String {
    let fx = fixture!(&format!("fds_{how}"));
    let (a, b) = (fx.tree.join("a"), fx.tree.join("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d.join("d")).unwrap();
        fs::write(d.join("f"), OLD).unwrap();
        fs::write(d.join("d/f"), OLD).unwrap();
        std::os::unix::fs::symlink("f", d.join("ln")).unwrap();
    }
    let fds = fx.c_program("fds");
    let cache = fx.cache("c");
    Run::new(&fds)
        .args(["lookall".as_ref(), b.as_os_str()])
        .env("FMCACHE_INCLUDE", &b)
        .cwd(&fx.out)
        .record(&cache)
        .run()
        .ok("pilot");
    let native = Run::new(&fds)
        .args([how.as_ref(), a.as_os_str()])
        .cwd(&fx.out)
        .run()
        .ok("native");
    let stats = fx.out.join("serve.stats");
    let served = Run::new(&fds)
        .args([how.as_ref(), b.as_os_str()])
        .cwd(&fx.out)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    assert_eq!(served.stderr_str(), "", "{how}");
    assert_same(
        &format!("descriptor after {how}"),
        "native (tree a)",
        &native.stdout,
        "served (tree b)",
        &served.stdout,
    );
    let s = read_stats(&stats);
    assert!(s.served >= 1, "{how}: the open must be served: {s:?}");
    native.stdout_str()
}

#[test]
fn descriptor_opened_through_a_symlink_sees_a_rewrite_of_its_target() {
    let native = other_path("viasymlink");
    assert!(
        native.contains("pread=37:\"the new contents"),
        "sanity: {native}"
    );
}

#[test]
fn descriptor_in_a_renamed_directory_sees_a_later_rewrite() {
    let native = other_path("dirmove");
    assert!(
        native.contains("same_inode=yes") && native.contains("pread=37:\"the new contents"),
        "sanity: {native}"
    );
}

/// A thread that unshares its fs state and chdirs, a thread it creates, a
/// clone(CLONE_VM) child without CLONE_FS that chdirs, and the main
/// thread's relative paths (stat, access, open, realpath, getcwd) in
/// between: every answer as natively.
#[test]
fn threads_with_a_cwd_of_their_own() {
    let fx = fixture!("fds_thread_cwd");
    let t = &fx.tree;
    fs::create_dir_all(t.join("d1/sub")).unwrap();
    fs::create_dir_all(t.join("d2")).unwrap();
    fs::write(t.join("d1/f"), b"one\n").unwrap();
    fs::write(t.join("d1/only1"), b"x\n").unwrap();
    fs::write(t.join("d1/sub/f"), b"subdir\n").unwrap();
    fs::write(t.join("d2/f"), b"two-two\n").unwrap();
    let fds = fx.c_program("fds");
    let run = || {
        Run::new(&fds)
            .arg("cwd")
            .args([t, &t.join("d1"), &t.join("d2")])
            .cwd(&fx.out)
    };
    run().run().ok("warm-up");
    let native = run().run().ok("native");
    let cache = fx.cache("c");
    let pilot = run()
        .env("FMCACHE_INCLUDE", t)
        .record(&cache)
        .run()
        .ok("pilot");
    let stats = fx.out.join("serve.stats");
    let served = run().serve(&cache).stats(&stats).run().ok("served");
    let text = native.stdout_str();
    assert!(
        text.contains("A after chdir d2: cwd=/d2 stat=8")
            && text.contains("main after A chdir: cwd=/d1 stat=4")
            && text.contains("C child of unshared thread: cwd=/d2")
            && text.contains("fork child of A: cwd=/d2 stat=8")
            && text.contains("clone child after chdir d2: cwd=/d2")
            && text.contains("main after clone child: cwd=/d1/sub stat=7")
            && text.contains("main after CLONE_FS child chdir d2: cwd=/d2 stat=8"),
        "sanity: {text}"
    );
    assert_same(
        "pilot vs native",
        "native",
        &native.stdout,
        "pilot",
        &pilot.stdout,
    );
    assert_same(
        "served vs native",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_eq!(served.stderr_str(), "");
    let s = read_stats(&stats);
    assert!(
        s.served >= 10,
        "the main thread's relative probes are served: {s:?}"
    );
}

/// `p` padded with `//` or `/./` after `head` to exactly `n` bytes.
fn padded(head: &str, rest: &str, n: usize, dots: bool) -> String {
    let k = n - head.len() - rest.len() - 1;
    let pad = if dots {
        format!(
            "{}{}",
            "/.".repeat(k / 2),
            if k % 2 == 1 { "/" } else { "" }
        )
    } else {
        "/".repeat(k)
    };
    let p = format!("{head}{pad}/{rest}");
    assert_eq!(p.len(), n);
    p
}

/// Paths of PATH_MAX bytes or more fail ENAMETOOLONG however they are
/// padded, absolute or relative, in every family (stat, statx, __xstat,
/// access, open, fopen, readlink, opendir, scandir); realpath, which is
/// glibc's own walk, answers as glibc does; a short relative path whose
/// joined form is longer than PATH_MAX works, as natively.
#[test]
fn padded_paths_over_path_max_fail_as_natively() {
    let fx = fixture!("fds_path_max");
    let t = &fx.tree;
    fs::create_dir_all(t.join("d")).unwrap();
    fs::write(t.join("f"), b"eff\n").unwrap();
    std::os::unix::fs::symlink("f", t.join("ln")).unwrap();
    // A directory about 3,100 bytes deep, for the joined relative case.
    let comp = "c".repeat(200);
    let mut deep = t.clone();
    for _ in 0..15 {
        deep = deep.join(&comp);
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), b"deep\n").unwrap();
    let head = t.to_str().unwrap();
    const OPS: &[&str] = &[
        "stat",
        "lstat",
        "statx",
        "__xstat",
        "access F",
        "faccessat R",
        "open RDONLY",
        "openat RDONLY",
        "fopen r",
        "readlink",
        "readdir",
        "scandir",
        "realpath",
        "canonicalize_file_name",
    ];
    let mut batch = String::new();
    let mut line = |op: &str, p: &str| {
        let mut w = op.split(' ');
        let name = w.next().unwrap();
        let arg = w.next().map(|a| format!(" {a}")).unwrap_or_default();
        batch.push_str(&format!("{name} {}{arg}\n", tok(p)));
    };
    for n in [4094, 4095, 4096, 4097, 5000] {
        for dots in [false, true] {
            for rest in ["f", "ln", "d", "missing"] {
                let p = padded(head, rest, n, dots);
                for op in OPS {
                    line(op, &p);
                }
            }
        }
    }
    line("chdir", head);
    for n in [4094, 4095, 4096, 4097] {
        for rest in ["f", "d", "missing"] {
            let k = n - rest.len();
            let p = format!(
                "{}{}{rest}",
                "./".repeat(k / 2),
                if k % 2 == 1 { "/" } else { "" }
            );
            assert_eq!(p.len(), n);
            for op in OPS {
                line(op, &p);
            }
        }
    }
    line("chdir", deep.to_str().unwrap());
    let rel = format!("{}f", "./".repeat(600));
    assert!(deep.as_os_str().len() + rel.len() > 4096);
    for op in OPS {
        line(op, &rel);
    }
    let probe = fx.c_program("probe");
    let run = || Run::probe(&probe, &batch).cwd(&fx.out);
    run().run().ok("warm-up");
    let native = run().run().ok("native");
    let text = native.stdout_str();
    let too_long = text.matches("ERR ENAMETOOLONG").count();
    assert!(too_long >= 300, "sanity: {too_long} ENAMETOOLONG");
    assert!(
        text.lines()
            .rfind(|l| l.starts_with("stat ./././"))
            .is_some_and(|l| l.contains(" -> dev=")),
        "sanity: the joined relative path works natively"
    );
    let cache = fx.cache("c");
    run()
        .env("FMCACHE_INCLUDE", t)
        .record(&cache)
        .run()
        .ok("pilot");
    let stats = fx.out.join("serve.stats");
    let served = run().serve(&cache).stats(&stats).run().ok("served");
    assert_same(
        "padded paths",
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_eq!(served.stderr_str(), "");
    let s = read_stats(&stats);
    assert!(s.served > 100, "the 4094/4095-byte paths are served: {s:?}");
}

/// Python's subprocess with `cwd=` chdirs in a vfork child (our memory,
/// another process): each such child is noted as having a cwd of its own,
/// and the note must not pile up. After 200 of them the parent's relative
/// paths are still served.
#[test]
fn vfork_children_that_chdir_leave_relative_paths_served() {
    let py = fmcache_tests::py_env();
    let fx = fixture!("fds_vfork_chdir");
    fs::write(fx.tree.join("f"), b"x\n").unwrap();
    let code = r#"
import os, subprocess
for i in range(200):
    subprocess.run(["/bin/true"], cwd="/")
print([os.stat("f").st_size for i in range(50)] == [2] * 50, os.getcwd() == os.environ["T"])
"#;
    let run = || {
        Run::new(&py.python)
            .args(["-c", code])
            .env("T", &fx.tree)
            .cwd(&fx.tree)
    };
    let native = run().run().ok("native");
    assert_eq!(native.stdout_str(), "True True\n", "sanity");
    let cache = fx.cache("c");
    run()
        .env("FMCACHE_INCLUDE", &fx.tree)
        .record(&cache)
        .run()
        .ok("pilot");
    let stats = fx.out.join("serve.stats");
    let served = run().serve(&cache).stats(&stats).run().ok("served");
    assert_eq!(served.stdout_str(), native.stdout_str());
    assert_eq!(served.stderr_str(), "");
    let text = fs::read_to_string(&stats).unwrap();
    let parent = text
        .lines()
        .find(|l| l.contains("python") && !l.contains("copy=auditor"))
        .unwrap_or_else(|| panic!("no python stats line:\n{text}"));
    let n: u64 = parent
        .split(' ')
        .find_map(|f| f.strip_prefix("served="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        n >= 50,
        "the 50 relative stats after 200 vfork+chdir children are served: {parent}"
    );
}
