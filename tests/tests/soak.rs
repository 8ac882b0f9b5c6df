//! Soak: many sequential process starts under read-cache, and one long
//! process probing served paths, leak no descriptors, no memory and no
//! files in the stage directory.
//!
//! `FMCACHE_SOAK_STARTS` sets the number of starts (default 10,000).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use fmcache_tests::{fixture, Out, Run};

fn soak_lines(o: &Out, served: bool) -> (String, u64, u64) {
    let text = o.stdout_str();
    let mut first = 0;
    let mut end = 0;
    let mut keep = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("fds ") {
            // A served process holds two descriptors more (at 900 and
            // up): each copy of the library (the preload and, a direct
            // start executing itself with it, the auditor) its shared lock
            // on the stage's index, which keeps the stage from being
            // pruned.
            let n: i64 = n.parse().unwrap();
            keep.push_str(&format!("fds {}\n", n - 2 * served as i64));
        } else if let Some(rest) = line.strip_prefix("rss_first ") {
            let v: Vec<&str> = rest.split(' ').collect();
            first = v[0].parse().unwrap();
            end = v[2].parse().unwrap();
        } else {
            keep.push_str(line);
            keep.push('\n');
        }
    }
    (keep, first, end)
}

/// Every name under `dir`, recursively, with file sizes: what the stage holds.
fn tree_listing(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.insert((rel, if m.is_file() { m.len() } else { 0 }));
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

fn setup(
    name: &str,
) -> (
    fmcache_tests::Fixture,
    fmcache_tests::Cache,
    std::path::PathBuf,
) {
    let f = fixture!(name);
    for i in 0..8 {
        fs::write(
            f.tree.join(format!("f{i}")),
            fmcache_tests::noise(3000 + i * 100, i as u64),
        )
        .unwrap();
    }
    fs::create_dir(f.tree.join("sub")).unwrap();
    let soak = f.c_program("soak");
    let cache = f.cache("c");
    Run::new(&soak)
        .arg(&f.tree)
        .arg("1")
        .record(&cache)
        .run()
        .ok("pilot");
    (f, cache, soak)
}

#[test]
fn sequential_starts_leak_nothing() {
    let (f, cache, soak) = setup("soak-starts");
    let starts: usize = std::env::var("FMCACHE_SOAK_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let native = Run::new(&soak)
        .arg(&f.tree)
        .arg("1")
        .native()
        .run()
        .ok("native");
    let (want, _, _) = soak_lines(&native, false);
    let stats = f.out.join("stats");
    let one = |i: usize, job: bool| {
        let mut r = Run::new(&soak).arg(&f.tree).arg("1").serve(&cache);
        if job {
            r = r.env("SLURM_JOB_ID", "4242");
        }
        if i == 0 {
            r = r.stats(&stats);
        }
        r.run().ok("served")
    };
    // Outside a job, then inside one (its job pointer is made once).
    let first = one(0, false);
    assert_eq!(soak_lines(&first, true).0, want, "served output differs");
    let st = fmcache_tests::read_stats(&stats);
    assert!(st.served > 0, "not served: {st:?}");
    one(1, true);
    let stage_before = tree_listing(&cache.stage);
    for i in 1..starts {
        let o = one(i, i % 2 == 0);
        let (got, _, _) = soak_lines(&o, true);
        assert_eq!(
            got, want,
            "start {i}: output (or descriptor count) differs from native"
        );
        assert!(o.stderr.is_empty(), "start {i}: {}", o.stderr_str());
    }
    let stage_after = tree_listing(&cache.stage);
    assert_eq!(
        stage_before, stage_after,
        "the stage directory changed over {starts} starts"
    );
    eprintln!(
        "soak: {starts} starts, stage unchanged ({} names)",
        stage_after.len()
    );
}

#[test]
fn a_long_process_keeps_descriptors_and_memory_flat() {
    let (f, cache, soak) = setup("soak-long");
    let iters = "50000";
    let native = Run::new(&soak)
        .arg(&f.tree)
        .arg(iters)
        .native()
        .run()
        .ok("native");
    let stats = f.out.join("stats");
    let served = Run::new(&soak)
        .arg(&f.tree)
        .arg(iters)
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    let (n_text, n_first, n_end) = soak_lines(&native, false);
    let (s_text, s_first, s_end) = soak_lines(&served, true);
    assert_eq!(s_text, n_text, "sums or descriptor counts differ");
    let st = fmcache_tests::read_stats(&stats);
    assert!(st.served >= 50_000 * 10, "not served: {st:?}");
    // Resident pages may grow as libc's own caches warm up; not more than
    // natively, give or take 64 pages.
    let n_growth = n_end.saturating_sub(n_first);
    let s_growth = s_end.saturating_sub(s_first);
    assert!(
        s_growth <= n_growth + 64,
        "served process grew by {s_growth} pages, native by {n_growth}"
    );
    eprintln!("soak: rss growth native {n_growth} pages, served {s_growth} pages");
}
