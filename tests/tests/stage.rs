//! One node, one job: the first process reads the shared cache (its
//! identity: open, fstat, header) and stages it; every later process of
//! the same job finds the stage without a single request for the cache.
//! A new job asks the cache again (a cache replaced between jobs is staged
//! anew); outside a job every process tree asks once (tests/tests/attach.rs).

use std::fs;
use std::path::Path;
use std::process::Command;

use fmcache_tests::{cache_calls, fixture, served_cat, Cache, Run};

#[test]
fn a_job_asks_the_shared_cache_once_per_node() {
    let fx = fixture!("stage_job");
    let file = fx.tree.join("data.txt");
    fs::write(&file, "version 1\n").unwrap();
    let cache = fx.cache("c");
    let cat = Run::new("/bin/cat").arg(&file);
    cat.clone().record(&cache).run().ok("pilot");
    let stages = || {
        fs::read_dir(&cache.stage)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().len() == 16 && e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    };

    let mut n = 0;
    let mut run = |env: &[(&str, &str)]| {
        n += 1;
        let trace = fx.out.join(format!("t{n}"));
        let out = served_cat(&cache, &file, env, &trace);
        (out, cache_calls(&cache, &trace))
    };
    // The first process of job 1: open, fstat and the header, then the
    // stage is built from a mapping of the cache.
    let (out, (meta, _)) = run(&[("SLURM_JOB_ID", "101")]);
    assert_eq!(out, "version 1\n");
    eprintln!("first process of the job, requests for the cache: {meta:#?}");
    assert!(
        !meta.is_empty() && meta.len() <= 3,
        "first process: {meta:#?}"
    );
    assert_eq!(stages(), 1);
    // Every later process of job 1: nothing at all on the cache.
    for _ in 0..4 {
        let (out, (meta, reads)) = run(&[("SLURM_JOB_ID", "101")]);
        assert_eq!(out, "version 1\n");
        assert!(
            meta.is_empty() && reads == 0,
            "later process: {meta:#?}, {reads} reads"
        );
    }
    // Another launcher's job variable is another job.
    let (_, (meta, _)) = run(&[("PMIX_NAMESPACE", "101")]);
    assert!(!meta.is_empty(), "a PMIx job asks the cache itself");
    // Outside a job, every process tree asks: the auditor copy (which a
    // direct start executes itself with) reads the header, open and fstat,
    // and hands the stage to the preload copy.
    for _ in 0..2 {
        let (_, (meta, _)) = run(&[]);
        assert!(!meta.is_empty() && meta.len() <= 2, "no job: {meta:#?}");
    }

    // Between jobs the software changes and the pilot runs again: job 2
    // reads the new cache and stages it; the old stage, mapped by nobody
    // now, stays (within the stage budget) but job 1's pointer is gone.
    fs::write(&file, "version 2, longer\n").unwrap();
    let _ = fs::remove_file(&cache.file);
    cat.clone().record(&cache).run().ok("second pilot");
    let (out, (meta, _)) = run(&[("SLURM_JOB_ID", "102")]);
    assert_eq!(out, "version 2, longer\n");
    assert!(!meta.is_empty() && meta.len() <= 3, "{meta:#?}");
    assert_eq!(stages(), 2, "the unused old stage stays, within the budget");
    let (out, (meta, reads)) = run(&[("SLURM_JOB_ID", "102")]);
    assert_eq!(out, "version 2, longer\n");
    assert!(meta.is_empty() && reads == 0);
    // A later step of job 1 finds its stage gone and asks the cache again.
    let (out, (meta, _)) = run(&[("SLURM_JOB_ID", "101")]);
    assert_eq!(out, "version 2, longer\n");
    assert!(!meta.is_empty() && meta.len() <= 3, "{meta:#?}");
}

/// Three caches recorded by `cat FILE`, FILE holding `cache <i>`, all
/// staged under `stage`.
fn three_caches(out: &Path, file: &Path, stage: &Path) -> Vec<Cache> {
    (0..3)
        .map(|i| {
            fs::write(file, format!("cache {i}\n")).unwrap();
            let c = Cache {
                file: out.join(format!("c{i}.dat")),
                stage: stage.to_path_buf(),
            };
            Run::new("/bin/cat").arg(file).record(&c).run().ok("pilot");
            c
        })
        .collect()
}

/// The sizes of the files under `p`: what a stage holds.
fn tree_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                tree_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// A served `cat FILE -` that keeps its stage in use until its stdin
/// closes.
fn hold(cache: &Cache, file: &Path) -> std::process::Child {
    fmcache_tests::procs::command(
        Path::new("/bin/cat"),
        &fmcache_tests::Mode::Serve(cache.clone()),
    )
    .arg(file)
    .arg("-")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// Stages do not pile up: with a budget of 0, building a new one removes
/// those no process maps, never one in use (a served process holds a
/// shared lock on its stage); `fmcache stage --clean` removes the rest
/// once unused.
#[test]
fn unused_stages_are_pruned_and_used_ones_kept() {
    let fx = fixture!("stage_prune");
    let file = fx.tree.join("data.txt");
    let stage = fx.out.join("stage");
    let caches = three_caches(&fx.out, &file, &stage);
    let stages = || -> Vec<String> {
        let Ok(dir) = fs::read_dir(&stage) else {
            return Vec::new();
        };
        let mut v: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 16)
            .collect();
        v.sort();
        v
    };
    // Cache 0 stays in use: a served process that waits on its stdin.
    let mut holder = hold(&caches[0], &file);
    // Wait until it has attached (its stage exists and is locked).
    let t0 = std::time::Instant::now();
    while stages().is_empty() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(stages().len(), 1);
    let used = stages()[0].clone();
    // Cache 1 staged and left; then cache 2: cache 1's stage goes, the
    // used one stays.
    for c in &caches[1..] {
        Run::new("/bin/cat")
            .arg(&file)
            .env("FMCACHE_STAGE_BUDGET", "0")
            .serve(c)
            .run()
            .ok("served");
    }
    let left = stages();
    assert_eq!(left.len(), 2, "in use + newest: {left:?}");
    assert!(left.contains(&used), "the stage in use was kept: {left:?}");
    // Clean while in use keeps it; after the holder exits, all goes.
    let clean = || {
        Command::new(fmcache_tests::tool())
            .args(["stage", "--clean"])
            .env("FMCACHE_STAGE_DIR", &stage)
            .output()
            .unwrap()
    };
    assert!(clean().status.success());
    assert_eq!(stages(), vec![used.clone()]);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(clean().status.success());
    assert!(stages().is_empty(), "{:?}", stages());
}

/// The stage budget: alternating between two caches finds both staged
/// (no re-staging), a third over the budget removes the least recently
/// used unused stage, and a stage in use is never removed, even over it.
#[test]
fn recently_used_stages_stay_within_the_budget() {
    let fx = fixture!("stage_budget");
    let file = fx.tree.join("data.txt");
    let stage = fx.out.join("stage");
    let caches: Vec<(Cache, String)> = three_caches(&fx.out, &file, &stage)
        .into_iter()
        .map(|c| {
            let o = Command::new(fmcache_tests::tool())
                .args(["inspect", "--json"])
                .arg(&c.file)
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let id = v["checksum"].as_str().unwrap().to_string();
            (c, id)
        })
        .collect();
    let serve = |i: usize, budget: &str| {
        // A stage's last use is its directory's mtime, which the kernel
        // takes from a coarse clock (it advances by timer ticks): two uses
        // within one tick tie, and which is least recently used is then
        // the tie-break's. The budget assertion below failed once in
        // seven runs here, most likely so; uses are kept a tick apart.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let out = Run::new("/bin/cat")
            .arg(&file)
            .env("FMCACHE_STAGE_BUDGET", budget)
            .serve(&caches[i].0)
            .run()
            .ok("served");
        assert_eq!(out.stdout, format!("cache {i}\n").into_bytes());
    };
    let staged = |i: usize| stage.join(&caches[i].1);
    let index_inode = |i: usize| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(staged(i).join("index")).map(|m| m.ino()).ok()
    };
    let stage_size = |i: usize| tree_size(&staged(i));
    // Alternating: each cache staged once, found staged every other time.
    serve(0, "1G");
    serve(1, "1G");
    let first = (index_inode(0), index_inode(1));
    assert!(first.0.is_some() && first.1.is_some());
    for _ in 0..2 {
        serve(0, "1G");
        serve(1, "1G");
    }
    assert_eq!((index_inode(0), index_inode(1)), first, "not staged again");
    // A budget for two stages: staging the third removes cache 0's, the
    // least recently used.
    let budget = (stage_size(0).max(stage_size(1)) * 5 / 2).to_string();
    serve(2, &budget);
    assert!(!staged(0).exists(), "the least recently used went");
    assert!(staged(1).exists() && staged(2).exists());
    // Cache 1 in use (a served process waiting on its stdin); a budget of
    // 0 while cache 0 is staged again: cache 2's stage goes, cache 1's
    // stays.
    let mut holder = hold(&caches[1].0, &file);
    let held = || {
        // The holder has attached once its stage's index is share-locked:
        // an exclusive non-blocking lock then fails.
        let f = fs::File::open(staged(1).join("index")).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        r != 0
    };
    let t0 = std::time::Instant::now();
    while !held() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(held(), "the holder attached");
    serve(0, "0");
    assert!(
        staged(0).exists() && staged(1).exists(),
        "new and in use kept"
    );
    assert!(!staged(2).exists(), "the unused one went");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

/// Node-local storage full (a 256 KiB tmpfs for a 1 MiB file): the run is
/// uncached with exactly one warning line, its output unchanged, and no
/// half-built stage is left behind.
#[test]
fn a_full_node_runs_uncached_with_one_warning() {
    let fx = fixture!("stage_enospc");
    let file = fx.tree.join("big.bin");
    fs::write(&file, fmcache_tests::noise(1 << 20, 7)).unwrap();
    let small = fx.out.join("small");
    fs::create_dir_all(&small).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(
        mount.status.success(),
        "mounting a small tmpfs (needs root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let cache = Cache {
        file: fx.out.join("c.dat"),
        stage: small.join("stage"),
    };
    let sum = Run::new("/usr/bin/cksum").arg(&file);
    let native = sum.clone().native().run().ok("native");
    sum.clone().record(&cache).run().ok("pilot");
    let served = sum.clone().serve(&cache).run().ok("served");
    assert_eq!(served.stdout, native.stdout);
    let err = served.stderr_str();
    assert_eq!(err.lines().count(), 1, "one warning line: {err}");
    assert!(
        err.starts_with("fmcache: ")
            && err.contains("No space left on device")
            && err.contains("running uncached"),
        "{err}"
    );
    let left: Vec<String> = fs::read_dir(&cache.stage)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "nothing half-built is left: {left:?}");
}

/// A stager killed at random points of the copy (SIGKILL; 40 trials, 200
/// with FMCACHE_LONG=1): no half-built stage is ever used, the next
/// process stages again, its output is right, and no leftovers pile up.
#[test]
fn a_stage_killed_half_way_is_redone() {
    let fx = fixture!("stage_killed");
    let files: Vec<_> = (0..8)
        .map(|i| {
            let f = fx.tree.join(format!("f{i}.bin"));
            fs::write(&f, fmcache_tests::noise(8 << 20, i)).unwrap();
            f
        })
        .collect();
    let cache = fx.cache("c");
    let sum = Run::new("/usr/bin/cksum").args(&files);
    let native = sum.clone().native().run().ok("native");
    sum.clone().record(&cache).run().ok("pilot");
    let leftovers = || -> Vec<String> {
        fs::read_dir(&cache.stage)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp."))
                    .collect()
            })
            .unwrap_or_default()
    };
    let stager = || {
        Command::new(fmcache_tests::tool())
            .args(["stage", "--cache"])
            .arg(&cache.file)
            .env("FMCACHE_STAGE_DIR", &cache.stage)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a whole stage takes here, so kills land anywhere in it.
    let _ = fs::remove_dir_all(&cache.stage);
    let t = std::time::Instant::now();
    assert!(stager().wait().unwrap().success(), "a whole stage");
    let whole = t.elapsed().as_micros() as u64 + 1;
    let trials = if std::env::var_os("FMCACHE_LONG").is_some_and(|v| v == "1") {
        200
    } else {
        40
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut killed_mid_copy = 0;
    for trial in 0..trials {
        let _ = fs::remove_dir_all(&cache.stage);
        let mut stager = stager();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Up to 1.2 times a whole stage: a few kills land after it ended.
        let delay = rng % (whole + whole / 5);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        let _ = stager.kill();
        let _ = stager.wait();
        if !leftovers().is_empty() {
            killed_mid_copy += 1;
        }
        let served = sum
            .clone()
            .serve(&cache)
            .run()
            .ok("served after a killed stager");
        assert_eq!(served.stdout, native.stdout, "trial {trial}");
        assert!(
            served.stderr.is_empty(),
            "trial {trial}: {}",
            served.stderr_str()
        );
        assert!(leftovers().is_empty(), "trial {trial}: {:?}", leftovers());
    }
    eprintln!(
        "{trials} stager kills (a whole stage takes {whole} us): {killed_mid_copy} mid-copy, every next run staged anew and served"
    );
    assert!(
        killed_mid_copy > 0,
        "no trial killed the stager during its copy"
    );
}

/// A stage left by another build of fmcache (after an upgrade this build
/// cannot read its index) still counts toward the budget, and goes first
/// when unused: old builds' stages do not pile up in node memory.
#[test]
fn stages_of_another_build_count_toward_the_budget() {
    let fx = fixture!("stage_foreign");
    let file = fx.tree.join("data.txt");
    let stage = fx.out.join("stage");
    let caches = three_caches(&fx.out, &file, &stage);
    let serve = |i: usize, budget: &str| {
        Run::new("/bin/cat")
            .arg(&file)
            .env("FMCACHE_STAGE_BUDGET", budget)
            .serve(&caches[i])
            .run()
            .ok("served");
    };
    serve(0, "1G");
    let own: Vec<_> = fs::read_dir(&stage)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 16)
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    let own = &own[0];
    let s = tree_size(own);
    // Another build's stage, four times as big and used long ago: cache
    // 0's index with another build id, and no `bytes` file (as stages
    // built before it had none).
    let foreign = stage.join("00000000deadbeef");
    fs::create_dir_all(foreign.join("root")).unwrap();
    let mut index = fs::read(own.join("index")).unwrap();
    index[16] ^= 0xff;
    fs::write(foreign.join("index"), index).unwrap();
    fs::write(foreign.join("root/big"), vec![0u8; (4 * s) as usize]).unwrap();
    let touched = Command::new("touch")
        .args(["-d", "2000-01-01"])
        .arg(&foreign)
        .status()
        .unwrap();
    assert!(touched.success());
    // A budget for about two stages: staging cache 1 must remove the
    // other build's stage (the least recently used), and keep cache 0's.
    serve(1, &(s * 5 / 2).to_string());
    assert!(!foreign.exists(), "the other build's stage was not pruned");
    assert!(own.exists(), "cache 0's stage is within the budget");
}
