//! `fmcache merge` killed (SIGKILL) at random points of a long merge of
//! many journals (40 trials, 200 with FMCACHE_LONG=1). The cache it was
//! replacing stays in place and valid, or the new one is complete: a
//! corrupt or half-written cache is never there to be served. The next
//! merge finishes the work and its cache serves the native output, and
//! removes the killed merger's temporary (`<cache>.rec/cache.tmp.<pid>`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fmcache_core::journal::{self, Kind};
use fmcache_format::{CacheView, Verify};
use fmcache_tests::{fixture, noise, Cache, Run};

const JOURNALS: usize = 60;
const FILES: usize = 240;

/// The bytes in an 8-byte aligned buffer, opened as a server would.
fn entries_if_valid(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (w, ch) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut a = [0u8; 8];
        a[..ch.len()].copy_from_slice(ch);
        *w = u64::from_le_bytes(a);
    }
    // SAFETY: `bytes.len()` bytes were copied into `words`.
    let b = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) };
    let v = CacheView::open(b, Verify::Full).map_err(|e| format!("{e:?}"))?;
    Ok(v.entries().map(|e| e.path().to_vec()).collect())
}

/// Journals as dead recorders leave them: `files` spread over `JOURNALS`
/// journals, each file opened (so the merge reads its bytes).
fn write_journals(rec: &Path, files: &[PathBuf]) {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(rec)
        .unwrap();
    let mut buf = [0u8; journal::MAX_RECORD];
    for j in 0..JOURNALS {
        let mut bytes = Vec::new();
        for f in files.iter().skip(j).step_by(JOURNALS) {
            use std::os::unix::ffi::OsStrExt;
            let p = f.as_os_str().as_bytes();
            // The pilot named the tree as served (FMCACHE_INCLUDE).
            if let Some(tree) = f.parent() {
                let n = journal::encode(Kind::Include, tree.as_os_str().as_bytes(), &mut buf);
                bytes.extend_from_slice(&buf[..n]);
            }
            for kind in [Kind::Stat, Kind::Open] {
                let n = journal::encode(kind, p, &mut buf);
                bytes.extend_from_slice(&buf[..n]);
            }
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(rec.join(format!("j.test.{j}")))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .unwrap();
    }
}

fn merge(cache: &Path) -> std::process::Child {
    Command::new(fmcache_tests::tool())
        .args(["merge", "--cache"])
        .arg(cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_merge_killed_at_random_never_leaves_a_bad_cache() {
    let trials = if std::env::var_os("FMCACHE_LONG").is_some_and(|v| v == "1") {
        200
    } else {
        40
    };
    let fx = fixture!("merge_killed");
    let files: Vec<PathBuf> = (0..FILES)
        .map(|i| {
            let f = fx.tree.join(format!("f{i:03}.bin"));
            fs::write(&f, noise(64 << 10, i as u64)).unwrap();
            f
        })
        .collect();
    let (old_files, new_files) = files.split_at(FILES / 4);
    let cache = fx.cache("c");
    let rec = PathBuf::from(format!("{}.rec", cache.file.display()));
    let sum = Run::new("/usr/bin/cksum").args(&files);
    let native = sum.clone().native().run().ok("native");
    let served_ok = |what: &str, c: &Cache| {
        let o = sum.clone().serve(c).run().ok(what);
        assert_eq!(o.stdout, native.stdout, "{what}: output");
        assert!(o.stderr.is_empty(), "{what}: {}", o.stderr_str());
    };

    // The cache in place before each killed merge: a quarter of the files.
    write_journals(&rec, old_files);
    assert!(merge(&cache.file).wait().unwrap().success(), "first merge");
    let old = fs::read(&cache.file).unwrap();
    let old_entries = entries_if_valid(&old).unwrap();
    // How long the merge of the rest takes, so kills land anywhere in it.
    write_journals(&rec, new_files);
    let t = Instant::now();
    assert!(merge(&cache.file).wait().unwrap().success(), "timing merge");
    let whole = t.elapsed().as_micros() as u64 + 1;
    let full = entries_if_valid(&fs::read(&cache.file).unwrap()).unwrap();
    assert!(
        full.len() >= FILES,
        "the full cache has {} entries",
        full.len()
    );

    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut old_left, mut new_left, mut absent) = (0, 0, 0);
    for trial in 0..trials {
        let _ = fs::remove_dir_all(&rec);
        let _ = fs::remove_dir_all(&cache.stage);
        fs::write(&cache.file, &old).unwrap();
        write_journals(&rec, new_files);
        let mut m = merge(&cache.file);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Up to 1.2 times a whole merge: a few kills land after it ended.
        std::thread::sleep(Duration::from_micros(rng % (whole + whole / 5)));
        let _ = m.kill();
        let _ = m.wait();
        match fs::read(&cache.file) {
            Err(_) => absent += 1,
            Ok(bytes) => {
                let entries = entries_if_valid(&bytes)
                    .unwrap_or_else(|e| panic!("trial {trial}: a killed merge left {e}"));
                if entries == old_entries {
                    old_left += 1;
                } else {
                    assert_eq!(
                        entries, full,
                        "trial {trial}: neither the old cache nor the new"
                    );
                    new_left += 1;
                }
                served_ok(&format!("trial {trial}: served after the kill"), &cache);
            }
        }
        // The next merge finds what the killed one left and completes it.
        assert!(
            merge(&cache.file).wait().unwrap().success(),
            "trial {trial}: merge"
        );
        let entries = entries_if_valid(&fs::read(&cache.file).unwrap()).unwrap();
        assert_eq!(entries, full, "trial {trial}: the merge after the kill");
        let left: Vec<String> = fs::read_dir(&rec)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "trial {trial}: left in {}: {left:?}",
            rec.display()
        );
        // Nor next to the cache: the temporary lives in `<cache>.rec`.
        let beside: Vec<String> = fs::read_dir(cache.file.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(
            beside.is_empty(),
            "trial {trial}: left beside the cache: {beside:?}"
        );
        let _ = fs::remove_dir_all(&cache.stage);
        served_ok(&format!("trial {trial}: served after recovery"), &cache);
    }
    eprintln!(
        "{trials} merges killed (a whole merge of {JOURNALS} journals takes {whole} us): \
         old cache left {old_left}, new cache left {new_left}, no cache {absent}; \
         every next merge completed the cache and it served"
    );
    assert_eq!(
        absent, 0,
        "a killed merge removed the cache it was replacing"
    );
    assert!(old_left > 0, "no kill landed before the rename");
}
