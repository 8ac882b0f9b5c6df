//! The trust model with real users: `fmcache-other` plays the attacker
//! (and the unprivileged pilot), `fmcache-victim` the user being attacked;
//! neither is root, so permissions bite. What faults.rs already covers
//! (symlinked, 0755 and nobody-owned stages, group-writable and
//! nobody-owned caches) is not repeated.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fmcache_tests::user::{other, run_as, victim, Ids};
use fmcache_tests::{assert_same, fixture, lib, names, tok, tool, Cache, Fixture, Out, Run};

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory owned by `ids` with `mode`.
fn owned_dir(p: &Path, ids: Ids, mode: u32) {
    fs::create_dir_all(p).unwrap();
    chown(p, Some(ids.uid), Some(ids.gid)).unwrap();
    chmod(p, mode);
}

/// Runs `run` as `ids` and checks it ran uncached: `native`'s stdout and
/// status, one `fmcache: ` line on stderr containing every one of `reasons`.
fn refused(what: &str, run: &Run, ids: Ids, native: &Out, reasons: &[&str]) -> String {
    let o = run_as(run, ids);
    assert_eq!(o.status.code(), native.status.code(), "{what}: exit status");
    assert_same(what, "native", &native.stdout, "refused", &o.stdout);
    let err = o.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("fmcache: "),
        "{what}: expected one fmcache line on stderr, got:\n{err}"
    );
    for r in reasons {
        assert!(lines[0].contains(r), "{what}: no {r:?} in: {}", lines[0]);
    }
    lines[0].to_string()
}

struct Victim {
    fx: Fixture,
    probe: PathBuf,
    batch: String,
    native: Out,
    /// A cache the victim recorded itself, in a directory of its own.
    cache: Cache,
    /// The victim's own directory an attacker would like it to write into.
    mine: PathBuf,
    /// A 1777 directory both users share, like /tmp or /dev/shm.
    shared: PathBuf,
}

fn victim_setup(name: &str) -> Victim {
    let fx = fixture!(name);
    let v = victim();
    chmod(&fx.out, 0o755);
    fs::create_dir(fx.tree.join("d")).unwrap();
    fs::write(fx.tree.join("d/a"), b"hello\n").unwrap();
    let probe = fx.c_program("probe");
    let d = tok(fx.tree.join("d"));
    let batch = format!("stat {d}/a\nopen {d}/a RDONLY\nreaddir {d}\nstat {d}/missing\n");
    let home = fx.out.join("victim");
    owned_dir(&home, v, 0o700);
    let mine = home.join("mine");
    owned_dir(&mine, v, 0o700);
    fs::write(mine.join("keep"), b"keep\n").unwrap();
    chown(mine.join("keep"), Some(v.uid), Some(v.gid)).unwrap();
    let cache = Cache {
        file: home.join("c.dat"),
        stage: home.join("rec.stage"),
    };
    // The warm-up settles atime (relatime) before the native reference.
    run_as(&Run::probe(&probe, &batch), v).ok("victim warm-up");
    let native = run_as(&Run::probe(&probe, &batch), v).ok("victim native");
    // The tree is data, named as served (FMCACHE_INCLUDE) as a user would.
    let pilot = Run::probe(&probe, &batch).env("FMCACHE_INCLUDE", &fx.tree);
    run_as(&pilot.record(&cache), v).ok("victim pilot");
    assert!(cache.file.is_file(), "the victim's pilot wrote no cache");
    let shared = fx.out.join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    Victim {
        fx,
        probe,
        batch,
        native,
        cache,
        mine,
        shared,
    }
}

impl Victim {
    fn serve(&self, stage: &Path) -> Run {
        let c = Cache {
            file: self.cache.file.clone(),
            stage: stage.to_path_buf(),
        };
        Run::probe(&self.probe, &self.batch).serve(&c)
    }

    fn assert_mine_untouched(&self, what: &str) {
        assert_eq!(
            names(&self.mine),
            vec!["keep".to_string()],
            "{what}: files appeared in the target"
        );
        let m = fs::metadata(&self.mine).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o700,
            "{what}: target mode changed"
        );
        assert_eq!(
            fs::read(self.mine.join("keep")).unwrap(),
            b"keep\n",
            "{what}"
        );
    }

    fn checksum(&self) -> String {
        let o = Command::new(tool())
            .args(["inspect", "--json", "--top", "0"])
            .arg(&self.cache.file)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["checksum"].as_str().unwrap().to_string()
    }
}

/// Creates `link -> target` as `ids` (the attacker plants it itself: a
/// symlink's owner is what protected_symlinks and our checks look at).
fn plant_symlink(target: &Path, link: &Path, ids: Ids) {
    let o = run_as(&Run::new("/bin/ln").arg("-s").arg(target).arg(link), ids);
    assert!(o.status.success(), "ln -s as attacker: {}", o.stderr_str());
}

#[test]
fn a_symlink_planted_at_the_stage_path_by_another_user_is_never_followed() {
    let s = victim_setup("security_symlink");
    let (v, attacker) = (victim(), other());
    // Sanity: a private stage of the victim's own is served.
    let own = s.fx.out.join("victim/own.stage");
    let o = run_as(&s.serve(&own), v).ok("own stage");
    assert_same("own stage", "native", &s.native.stdout, "served", &o.stdout);
    assert!(o.stderr.is_empty(), "own stage: {}", o.stderr_str());

    // 1. The stage base itself is the attacker's symlink to the victim's dir.
    let link = s.shared.join("stage-link");
    plant_symlink(&s.mine, &link, attacker);
    refused(
        "planted base symlink",
        &s.serve(&link),
        v,
        &s.native,
        &["symlink"],
    );
    s.assert_mine_untouched("planted base symlink");
    // The same with a dangling symlink: nothing is created at its target.
    let dangling = s.shared.join("stage-dangling");
    let would_be = s.mine.join("created");
    plant_symlink(&would_be, &dangling, attacker);
    refused(
        "dangling base symlink",
        &s.serve(&dangling),
        v,
        &s.native,
        &["symlink"],
    );
    assert!(
        fs::symlink_metadata(&would_be).is_err(),
        "the dangling symlink was followed"
    );
    s.assert_mine_untouched("dangling base symlink");

    // 2. The base is a directory the attacker made (0777, and 0700), with
    //    symlinks at the names the stage would use inside it.
    let id = s.checksum();
    for (label, mode) in [("open", 0o777), ("private", 0o700)] {
        let base = s.shared.join(format!("stage-{label}"));
        let o = run_as(
            &Run::new("/bin/mkdir")
                .arg("-m")
                .arg(format!("{mode:o}"))
                .arg(&base),
            attacker,
        );
        assert!(o.status.success(), "{}", o.stderr_str());
        for n in [
            id.clone(),
            format!("{id}.tmp.1"),
            "job-1".into(),
            "job-1.tmp".into(),
        ] {
            plant_symlink(&s.mine, &base.join(n), attacker);
        }
        let what = format!("attacker's {mode:o} base with planted names");
        refused(
            &what,
            &s.serve(&base),
            v,
            &s.native,
            &[&format!("owned by uid {}", attacker.uid)],
        );
        s.assert_mine_untouched(&what);
        for n in names(&base) {
            let m = fs::symlink_metadata(base.join(&n)).unwrap();
            assert!(m.file_type().is_symlink(), "{what}: {n} replaced");
        }
    }

    // 3. The victim's own base, but group-writable: refused, left as it was.
    let gw = s.fx.out.join("victim/gw.stage");
    owned_dir(&gw, v, 0o770);
    refused("0770 stage", &s.serve(&gw), v, &s.native, &["not private"]);
    assert_eq!(
        fs::metadata(&gw).unwrap().permissions().mode() & 0o7777,
        0o770
    );
    assert!(names(&gw).is_empty(), "a refused stage was filled");
}

#[test]
fn caches_writable_by_others_or_owned_by_another_user_are_refused() {
    let s = victim_setup("security_cache");
    let (v, attacker) = (victim(), other());
    let stage = s.fx.out.join("victim/st");
    // Writable by others alone (faults.rs covers group).
    chmod(&s.cache.file, 0o602);
    refused(
        "0602 cache",
        &s.serve(&stage),
        v,
        &s.native,
        &["writable by group or others"],
    );
    chmod(&s.cache.file, 0o600);
    // The very same bytes, owned by the other user.
    let theirs = s.shared.join("c.dat");
    fs::copy(&s.cache.file, &theirs).unwrap();
    chown(&theirs, Some(attacker.uid), Some(attacker.gid)).unwrap();
    chmod(&theirs, 0o644);
    let c = Cache {
        file: theirs.clone(),
        stage: stage.clone(),
    };
    let run = Run::probe(&s.probe, &s.batch).serve(&c);
    refused(
        "cache owned by another user",
        &run,
        v,
        &s.native,
        &[&format!("owned by uid {}", attacker.uid)],
    );
    assert!(
        names(&stage).is_empty(),
        "a refused cache was staged: {:?}",
        names(&stage)
    );
    // And the victim's good cache is still served.
    let o = run_as(&s.serve(&stage), v).ok("good cache");
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    assert_same(
        "good cache",
        "native",
        &s.native.stdout,
        "served",
        &o.stdout,
    );
}

const SETUID_C: &str = r#"#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    for (int i = 1; i < argc; i++) {
        int s = stat(argv[i], &st);
        int fd = open(argv[i], O_RDONLY);
        printf("%s stat=%d size=%lld open=%s\n", argv[i], s, s ? -1LL : (long long)st.st_size, fd >= 0 ? "ok" : "fail");
        if (fd >= 0) close(fd);
    }
    printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid());
    return 0;
}
"#;

fn cc(src: &str, out: &Path) {
    let c = out.with_extension("c");
    fs::write(&c, src).unwrap();
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(out)
        .arg(&c)
        .status()
        .unwrap();
    assert!(st.success(), "cc {}", c.display());
}

#[test]
fn setuid_programs_are_never_served() {
    let fx = fixture!("security_setuid");
    let attacker = other();
    chmod(&fx.out, 0o755);
    fs::write(fx.tree.join("f"), b"0123456789").unwrap();
    let plain = fx.tree.join("plain");
    cc(SETUID_C, &plain);
    let suid = fx.tree.join("suid");
    fs::copy(&plain, &suid).unwrap();
    chown(&suid, Some(0), Some(0)).unwrap();
    chmod(&suid, 0o4755);
    let home = fx.out.join("other");
    owned_dir(&home, attacker, 0o700);
    let cache = Cache {
        file: home.join("c.dat"),
        stage: home.join("st"),
    };
    let f = fx.tree.join("f");
    // The attacker's own pilot over the same paths, with the plain copy.
    run_as(&Run::new(&plain).arg(&f).record(&cache), attacker).ok("pilot");
    assert!(cache.file.is_file());
    let native = run_as(&Run::new(&suid).arg(&f), attacker).ok("setuid native");
    assert!(
        native.stdout_str().contains("euid=0 uid="),
        "not setuid: {}",
        native.stdout_str()
    );
    // Served: LD_PRELOAD with a slash is ignored for AT_SECURE programs,
    // and so is LD_AUDIT; FMCACHE_STATS proves the library never ran.
    for (label, extra) in [("preload", false), ("preload+audit", true)] {
        let stats = home.join(format!("stats-{label}"));
        let mut r = Run::new(&suid).arg(&f).serve(&cache).stats(&stats);
        if extra {
            r = r.env("LD_AUDIT", lib());
        }
        let o = run_as(&r, attacker);
        assert_eq!(o.status.code(), Some(0), "{label}: {}", o.stderr_str());
        assert_same(label, "native", &native.stdout, "served", &o.stdout);
        assert!(
            fs::symlink_metadata(&stats).is_err(),
            "{label}: the library ran in a setuid program (stats written)"
        );
    }
    // The served plain copy for contrast does run the library.
    let stats = home.join("stats-plain");
    run_as(
        &Run::new(&plain).arg(&f).serve(&cache).stats(&stats),
        attacker,
    )
    .ok("plain served");
    assert!(
        stats.exists(),
        "FMCACHE_STATS is not written by a served run: the check above proves nothing"
    );
}

#[test]
fn the_cache_never_holds_a_file_its_pilot_could_not_read() {
    let fx = fixture!("security_unreadable");
    let attacker = other();
    chmod(&fx.out, 0o755);
    let secret = fx.tree.join("secret");
    fs::write(&secret, b"TOPSECRET-7f3a\n").unwrap();
    chmod(&secret, 0o600);
    fs::write(fx.tree.join("open"), b"public\n").unwrap();
    let probe = fx.c_program("probe");
    let s = tok(&secret);
    let p = tok(fx.tree.join("open"));
    let batch = format!("stat {s}\nopen {s} RDONLY\nfopen {s} r\naccess {s} R\nopen {p} RDONLY\n");
    let home = fx.out.join("other");
    owned_dir(&home, attacker, 0o700);
    let cache = Cache {
        file: home.join("c.dat"),
        stage: home.join("st"),
    };
    run_as(&Run::probe(&probe, &batch), attacker).ok("warm-up");
    let native = run_as(&Run::probe(&probe, &batch), attacker).ok("native");
    assert!(
        native.stdout_str().contains("EACCES"),
        "the secret was readable: {}",
        native.stdout_str()
    );
    let pilot = Run::probe(&probe, &batch).env("FMCACHE_INCLUDE", &fx.tree);
    run_as(&pilot.record(&cache), attacker).ok("pilot");
    let bytes = fs::read(&cache.file).unwrap();
    assert!(
        !bytes.windows(9).any(|w| w == b"TOPSECRET"),
        "the cache holds the secret's bytes"
    );
    // The reader's view: the secret's entry has a stat but no contents.
    let buf = aligned(&bytes);
    let view = fmcache_format::CacheView::open(&buf, fmcache_format::Verify::Full).unwrap();
    let e = view
        .lookup(secret.to_str().unwrap().as_bytes())
        .expect("secret was probed");
    assert!(
        e.blob().is_none(),
        "contents recorded for an unreadable file"
    );
    // Served, its open still fails with EACCES, as natively.
    let o = run_as(&Run::probe(&probe, &batch).serve(&cache), attacker).ok("served");
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    assert_same(
        "unreadable served",
        "native",
        &native.stdout,
        "served",
        &o.stdout,
    );
}

/// The bytes in an 8-byte aligned buffer, as `CacheView` wants (glibc's
/// malloc aligns to 16; asserted rather than assumed).
fn aligned(b: &[u8]) -> Vec<u8> {
    let v = b.to_vec();
    assert_eq!(v.as_ptr().align_offset(8), 0, "buffer not 8-aligned");
    v
}
