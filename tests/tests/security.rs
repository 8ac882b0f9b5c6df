//! The trust model with real users: `fmcache-other` plays the attacker
//! (and the unprivileged pilot), `fmcache-victim` the user being attacked;
//! neither is root, so permissions bite. What faults.rs already covers
//! (symlinked, 0755 and nobody-owned stages, group-writable and
//! nobody-owned caches) is not repeated.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
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
    // Nothing of it staged. Outside a job the one reader on the node
    // takes `seen.<key>.lock` before reading the cache's identity: an
    // empty 0600 file in the private stage base, naming no content.
    let staged: Vec<String> = names(&stage)
        .into_iter()
        .filter(|n| !(n.starts_with("seen.") && n.ends_with(".lock")))
        .collect();
    assert!(staged.is_empty(), "a refused cache was staged: {staged:?}");
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

// ---- Side files of the recorder in shared directories (issue 12, item 13)

/// A pilot of the victim's recording into `cache` (probing its tree).
fn victim_pilot(s: &Victim, cache: &Path, stats: Option<&Path>) -> Run {
    let c = Cache {
        file: cache.to_path_buf(),
        stage: s.fx.out.join("victim/pilot.stage"),
    };
    let mut r = Run::probe(&s.probe, &s.batch)
        .record(&c)
        .env("FMCACHE_INCLUDE", &s.fx.tree);
    if let Some(st) = stats {
        r = r.stats(st);
    }
    r
}

/// A private file of the victim's, and its bytes.
fn victim_secret(s: &Victim) -> (PathBuf, &'static [u8]) {
    let secret = s.fx.out.join("victim/secret");
    let bytes: &[u8] = b"VICTIM-SECRET-91c4\n";
    fs::write(&secret, bytes).unwrap();
    chown(&secret, Some(victim().uid), Some(victim().gid)).unwrap();
    chmod(&secret, 0o600);
    (secret, bytes)
}

/// No file under `dir` (recursively, symlinks not followed) holds `needle`.
fn nowhere_in(dir: &Path, needle: &[u8]) -> Result<(), String> {
    for e in fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            nowhere_in(&e.path(), needle)?;
        } else if m.is_file() {
            let b = fs::read(e.path()).unwrap_or_default();
            if b.windows(needle.len()).any(|w| w == needle) {
                return Err(format!("{} holds it", e.path().display()));
            }
        }
    }
    Ok(())
}

/// Runs `fmcache merge --cache <cache>` as `ids`: it must fail with one
/// `fmcache:` line naming every one of `reasons`.
fn merge_refused(what: &str, cache: &Path, ids: Ids, reasons: &[&str]) {
    let o = run_as(
        &Run::new(tool()).arg("merge").arg("--cache").arg(cache),
        ids,
    );
    assert!(!o.status.success(), "{what}: fmcache merge succeeded");
    let err = o.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("fmcache: "),
        "{what}: expected one fmcache line, got:\n{err}"
    );
    for r in reasons {
        assert!(lines[0].contains(r), "{what}: no {r:?} in: {}", lines[0]);
    }
}

#[test]
fn a_record_directory_planted_by_another_user_is_refused() {
    let s = victim_setup("security_planted_rec");
    let (v, attacker) = (victim(), other());
    let (secret, secret_bytes) = victim_secret(&s);
    for (label, mode) in [("open", 0o777), ("private", 0o700)] {
        let cache = s.shared.join(format!("{label}.dat"));
        let rec = s.shared.join(format!("{label}.dat.rec"));
        // The attacker's .rec, holding a journal that names the victim's
        // secret as opened, and a lock.
        fs::create_dir(&rec).unwrap();
        let mut j = Vec::new();
        let mut buf = [0u8; fmcache_core::journal::MAX_RECORD];
        for kind in [
            fmcache_core::journal::Kind::Stat,
            fmcache_core::journal::Kind::Open,
        ] {
            let n =
                fmcache_core::journal::encode(kind, secret.to_str().unwrap().as_bytes(), &mut buf);
            j.extend_from_slice(&buf[..n]);
        }
        let planted = rec.join("j.evil.1.2.3");
        fs::write(&planted, &j).unwrap();
        fs::write(rec.join("lock"), b"").unwrap();
        for p in [&planted, &rec.join("lock")] {
            chown(p, Some(attacker.uid), Some(attacker.gid)).unwrap();
            chmod(p, 0o666);
        }
        chown(&rec, Some(attacker.uid), Some(attacker.gid)).unwrap();
        chmod(&rec, mode);
        let what = format!("attacker's {mode:o} {}", rec.display());
        let line = refused(
            &what,
            &victim_pilot(&s, &cache, None),
            v,
            &s.native,
            &[
                &format!("owned by uid {}, not by you", attacker.uid),
                "running unrecorded",
            ],
        );
        eprintln!("{what}: {line}");
        merge_refused(
            &what,
            &cache,
            v,
            &[&format!("owned by uid {}", attacker.uid)],
        );
        assert!(
            fs::symlink_metadata(&cache).is_err(),
            "{what}: a cache was written"
        );
        assert_eq!(fs::read(&planted).unwrap(), j, "{what}: journal changed");
        assert_eq!(
            names(&rec),
            vec!["j.evil.1.2.3".to_string(), "lock".to_string()],
            "{what}: files added to the attacker's directory"
        );
        nowhere_in(&s.shared, secret_bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // The victim's own .rec, but writable by others: refused, left as is.
    let cache = s.shared.join("own.dat");
    let rec = s.shared.join("own.dat.rec");
    owned_dir(&rec, v, 0o777);
    refused(
        "0777 .rec of the victim's",
        &victim_pilot(&s, &cache, None),
        v,
        &s.native,
        &["writable by group or others", "running unrecorded"],
    );
    assert!(names(&rec).is_empty(), "files created in a refused .rec");
    assert_eq!(
        fs::metadata(&rec).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    assert_eq!(fs::read(&secret).unwrap(), secret_bytes);
}

#[test]
fn a_record_directory_symlink_is_never_followed() {
    let s = victim_setup("security_rec_symlink");
    let (v, attacker) = (victim(), other());
    // The victim's own directory, holding names the recorder and merger
    // would read, lock, overwrite or delete in its record directory.
    let work = s.fx.out.join("victim/work");
    owned_dir(&work, v, 0o700);
    let plant = ["j.orphan.1.2.3", "cache.tmp.1", "lock", "t.x"];
    for n in plant {
        fs::write(work.join(n), format!("victim's {n}\n")).unwrap();
        chown(work.join(n), Some(v.uid), Some(v.gid)).unwrap();
    }
    let before = names(&work);
    let cache = s.shared.join("c.dat");
    let rec = s.shared.join("c.dat.rec");
    plant_symlink(&work, &rec, attacker);
    let line = refused(
        ".rec symlink",
        &victim_pilot(&s, &cache, None),
        v,
        &s.native,
        &["symlink", "running unrecorded"],
    );
    eprintln!(".rec symlink: {line}");
    merge_refused(".rec symlink", &cache, v, &["symlink"]);
    assert_eq!(
        names(&work),
        before,
        "files in the symlink's target changed"
    );
    for n in plant {
        assert_eq!(
            fs::read_to_string(work.join(n)).unwrap(),
            format!("victim's {n}\n"),
            "{n} changed"
        );
    }
    assert!(fs::symlink_metadata(&rec).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(&cache).is_err(), "a cache was written");
    // Dangling: nothing is created where it points.
    let cache2 = s.shared.join("d.dat");
    let target = s.mine.join("made");
    plant_symlink(&target, &s.shared.join("d.dat.rec"), attacker);
    refused(
        "dangling .rec symlink",
        &victim_pilot(&s, &cache2, None),
        v,
        &s.native,
        &["symlink"],
    );
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "the dangling symlink was followed"
    );
    s.assert_mine_untouched("dangling .rec symlink");
}

/// `<cache>.tmp.<pid>` symlinks planted for the next pids: the victim's
/// merge never writes through them (its temporary lives in its own checked
/// record directory, created with O_EXCL|O_NOFOLLOW). `ns_last_pid` aims
/// the pilot's pid into the planted window, in a 1777 and a 0777 directory.
#[test]
fn planted_temporary_cache_names_are_never_written_through() {
    let s = victim_setup("security_tmp_symlink");
    let (v, attacker) = (victim(), other());
    let open_dir = s.fx.out.join("open");
    fs::create_dir(&open_dir).unwrap();
    chmod(&open_dir, 0o777);
    const WINDOW: u32 = 300;
    for dir in [&s.shared, &open_dir] {
        let cache = dir.join("c.dat");
        let mut aimed = false;
        for attempt in 0..3 {
            let last: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let base = if last + 2 * WINDOW < max {
                last + 50
            } else {
                1000
            };
            for pid in base + 1..=base + WINDOW {
                let link = dir.join(format!("c.dat.tmp.{pid}"));
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(s.mine.join("keep"), &link).unwrap();
                std::os::unix::fs::lchown(&link, Some(attacker.uid), Some(attacker.gid)).unwrap();
            }
            let stats = s.fx.out.join(format!("victim/stats.{attempt}"));
            let _ = fs::remove_file(&stats);
            fs::write("/proc/sys/kernel/ns_last_pid", base.to_string()).unwrap();
            let o = run_as(&victim_pilot(&s, &cache, Some(&stats)), v).ok("pilot");
            let text = fs::read_to_string(&stats).unwrap_or_default();
            let pid: u32 = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            s.assert_mine_untouched(&format!("{}: pilot pid {pid}", dir.display()));
            assert!(o.stderr.is_empty(), "{}", o.stderr_str());
            assert_same("pilot", "native", &s.native.stdout, "recorded", &o.stdout);
            let m = fs::symlink_metadata(&cache).unwrap();
            assert!(m.is_file(), "the cache is not a regular file");
            assert_eq!(m.uid(), v.uid);
            if (base + 1..=base + WINDOW).contains(&pid) {
                aimed = true;
                break;
            }
        }
        assert!(
            aimed,
            "{}: the pilot's pid never fell in the window",
            dir.display()
        );
        for n in names(dir).iter().filter(|n| n.starts_with("c.dat.tmp.")) {
            let target =
                fs::read_link(dir.join(n)).unwrap_or_else(|e| panic!("planted {n} replaced: {e}"));
            assert_eq!(target, s.mine.join("keep"), "planted {n} changed");
        }
    }
}

// ---- Who may read the cache (issue 12, item 12)

/// The cache's mode after a pilot by `fmcache-other` under `umask` that
/// opens `files`; checks the victim can read the cache exactly when the
/// mode lets others read.
fn pilot_mode(fx: &Fixture, label: &str, umask: &str, files: &[&Path]) -> u32 {
    let attacker = other();
    let home = fx.out.join("other");
    let cache = Cache {
        file: home.join(format!("{label}.dat")),
        stage: home.join(format!("{label}.stage")),
    };
    let probe = fx.c_program("probe");
    let batch: String = files
        .iter()
        .map(|f| format!("open {} RDONLY\n", tok(f)))
        .collect();
    let run = Run::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" -f -"))
        .arg(&probe)
        .stdin(batch.into_bytes())
        .record(&cache)
        .env("FMCACHE_INCLUDE", &fx.tree);
    let o = run_as(&run, attacker).ok(label);
    assert!(o.stderr.is_empty(), "{label}: {}", o.stderr_str());
    let m = fs::metadata(&cache.file).unwrap();
    let mode = m.permissions().mode() & 0o7777;
    let rec = fs::metadata(format!("{}.rec", cache.file.display())).unwrap();
    assert_eq!(
        rec.permissions().mode() & 0o7777,
        0o700,
        "{label}: .rec mode"
    );
    let cat = run_as(&Run::new("/bin/cat").arg(&cache.file), victim());
    assert_eq!(
        cat.status.success(),
        mode & 0o004 != 0,
        "{label}: mode {mode:o} but the victim's cat: {}",
        cat.stderr_str()
    );
    eprintln!("{label}: umask {umask}: cache mode {mode:o}");
    mode
}

#[test]
fn the_cache_is_never_more_readable_than_what_it_holds() {
    let fx = fixture!("security_cache_mode");
    let attacker = other();
    chmod(&fx.out, 0o755);
    owned_dir(&fx.out.join("other"), attacker, 0o755);
    let public = fx.tree.join("public");
    fs::write(&public, b"public\n").unwrap();
    chmod(&public, 0o644);
    let secret = fx.tree.join("secret");
    fs::write(&secret, b"OTHER-SECRET-5d2e\n").unwrap();
    chown(&secret, Some(attacker.uid), Some(attacker.gid)).unwrap();
    chmod(&secret, 0o600);
    let group = fx.tree.join("group");
    fs::write(&group, b"group\n").unwrap();
    chown(&group, Some(attacker.uid), Some(attacker.gid)).unwrap();
    chmod(&group, 0o640);
    let closed = fx.tree.join("closed");
    owned_dir(&closed, attacker, 0o700);
    let inside = closed.join("f");
    fs::write(&inside, b"inside\n").unwrap();
    chmod(&inside, 0o644);
    let cases: [(&str, &str, Vec<&Path>, u32); 6] = [
        ("public-022", "022", vec![&public], 0o644),
        ("public-027", "027", vec![&public], 0o640),
        ("secret-077", "077", vec![&public, &secret], 0o600),
        ("secret-022", "022", vec![&public, &secret], 0o600),
        ("group-022", "022", vec![&group], 0o600),
        ("closed-dir-022", "022", vec![&inside], 0o600),
    ];
    for (label, umask, files, want) in &cases {
        let got = pilot_mode(&fx, label, umask, files);
        assert_eq!(got, *want, "{label}: cache mode {got:o}, want {want:o}");
    }
}
