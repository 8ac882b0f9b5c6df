//! Threads and signals under the library.
//!
//! - 64 threads (`tests/c/threads.c`) do mixed probes for 30 s (set
//!   `FMCACHE_THREADS_SECS` to change): served paths, known-missing ones
//!   (served ENOENT/ENOTDIR) and paths outside the cache (passed through).
//!   Every answer equals the main thread's, which equal the native ones;
//!   a watchdog kills a hung run.
//! - A SIGALRM handler (`tests/c/signals.c`, setitimer every 100 µs) calls
//!   stat/open/fstat/close while the main thread is inside the same calls,
//!   natively, recording and served: more than 1000 handler runs, every
//!   answer as precomputed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use fmcache_tests::{assert_same, fixture, noise, read_stats, Fixture, Out, Run};

/// A watchdog: the run is killed (status 137) if it takes longer.
const WATCHDOG_SECS: u64 = 180;

fn threads_secs() -> u64 {
    std::env::var("FMCACHE_THREADS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// The tree, and the lists: `cached` (served, and known-missing names the
/// cache answers) and `outside` (never seen by the pilot).
fn build(fx: &Fixture) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let t = &fx.tree;
    let mut cached = vec![t.clone()];
    for d in 0..4 {
        let dir = t.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        cached.push(dir.clone());
        for i in 0..12 {
            let p = dir.join(format!("f{i}"));
            fs::write(&p, noise(i * 1000 + d * 77, (d * 100 + i) as u64)).unwrap();
            cached.push(p);
        }
        cached.push(dir.join("missing"));
        cached.push(dir.join("f0/through_a_file"));
    }
    symlink("d1/f3", t.join("link")).unwrap();
    symlink("nowhere", t.join("dangling")).unwrap();
    for r in ["link", "dangling", "nodir/x"] {
        cached.push(t.join(r));
    }
    let o = fx.out.join("outside");
    fs::create_dir(&o).unwrap();
    let mut outside = vec![o.clone()];
    for i in 0..6 {
        let p = o.join(format!("g{i}"));
        fs::write(&p, noise(500 + i * 300, 900 + i as u64)).unwrap();
        outside.push(p);
    }
    outside.push(o.join("absent"));
    (cached, outside)
}

fn list_file(fx: &Fixture, name: &str, paths: &[&PathBuf]) -> PathBuf {
    let p = fx.out.join(name);
    let mut s = String::new();
    for q in paths {
        s.push_str(&q.to_string_lossy());
        s.push('\n');
    }
    fs::write(&p, s).unwrap();
    p
}

fn watched(program: &Path) -> Run {
    Run::new("timeout")
        .args(["-s", "KILL", &WATCHDOG_SECS.to_string()])
        .arg(program)
}

fn finished(o: Out, what: &str) -> Out {
    assert!(
        o.status.code() != Some(137) && o.status.code() != Some(124),
        "{what}: killed by the {WATCHDOG_SECS} s watchdog (deadlock?)\n{}",
        o.stdout_str()
    );
    assert!(
        o.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        o.stdout_str(),
        o.stderr_str()
    );
    o
}

/// The `-p` answers of an output (everything but the final `ok N`).
fn answers(o: &Out) -> (String, u64) {
    let text = o.stdout_str();
    let (head, last) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
    let n = last
        .strip_prefix("ok ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ok line: {last}"));
    (format!("{head}\n"), n)
}

#[test]
fn sixty_four_threads_mixed_probes() {
    let fx = fixture!("conc_threads");
    let (cached, outside) = build(&fx);
    let prog = fx.c_program("threads");
    let pilot_list = list_file(&fx, "pilot.list", &cached.iter().collect::<Vec<_>>());
    let all: Vec<&PathBuf> = cached.iter().chain(outside.iter()).collect();
    let list = list_file(&fx, "all.list", &all);
    let cache = fx.cache("c");

    // Warm-up, then the native answers.
    Run::new(&prog)
        .args(["-p", "0", "0"])
        .arg(&list)
        .run()
        .ok("warm-up");
    let native = Run::new(&prog)
        .args(["-p", "0", "0"])
        .arg(&list)
        .run()
        .ok("native");
    // A concurrent pilot: 16 threads journaling at once.
    let pilot = watched(&prog)
        .args(["-p", "16", "2"])
        .arg(&pilot_list)
        .record(&cache)
        .run();
    let pilot = finished(pilot, "pilot");
    assert!(cache.file.is_file(), "the pilot wrote no cache");
    let pilot_native = Run::new(&prog)
        .args(["-p", "0", "0"])
        .arg(&pilot_list)
        .run();
    assert_same(
        "pilot answers",
        "native",
        answers(&pilot_native).0.as_bytes(),
        "pilot",
        answers(&pilot).0.as_bytes(),
    );
    // The served run: 64 threads, compared with the main thread's answers.
    let secs = threads_secs();
    let stats = fx.out.join("serve.stats");
    let started = std::time::Instant::now();
    let served = watched(&prog)
        .args(["-p", "64", &secs.to_string()])
        .arg(&list)
        .serve(&cache)
        .stats(&stats)
        .run();
    let took = started.elapsed();
    let served = finished(served, "served");
    let (n_ans, _) = answers(&native);
    let (s_ans, probes) = answers(&served);
    assert_same(
        "answers",
        "native",
        n_ans.as_bytes(),
        "served",
        s_ans.as_bytes(),
    );
    assert_eq!(served.stderr_str(), "");
    let s = read_stats(&stats);
    eprintln!(
        "64 threads, {secs} s ({took:?}): {probes} answers equal, {} paths; stats {s:?}",
        all.len()
    );
    assert!(
        probes > 64 * all.len() as u64,
        "every thread did a pass at least"
    );
    assert!(s.served > 0, "served: {s:?}");
    assert!(
        s.missed + s.passthrough > 0,
        "outside paths passed through: {s:?}"
    );
}

/// Parses `handler=N during_call=M mismatches=X main=K main_mismatches=Y`.
fn signal_counts(o: &Out) -> [u64; 5] {
    let text = o.stdout_str();
    let line = text.lines().next().unwrap_or_default();
    let mut v = [0u64; 5];
    for (i, k) in [
        "handler=",
        "during_call=",
        "mismatches=",
        "main=",
        "main_mismatches=",
    ]
    .iter()
    .enumerate()
    {
        v[i] = line
            .split(' ')
            .find_map(|f| f.strip_prefix(k))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"));
    }
    v
}

#[test]
fn signal_handler_calls_the_hooks_while_main_is_inside_them() {
    let fx = fixture!("conc_signals");
    let (cached, outside) = build(&fx);
    let prog = fx.c_program("signals");
    let pilot_list = list_file(&fx, "pilot.list", &cached.iter().collect::<Vec<_>>());
    let all: Vec<&PathBuf> = cached.iter().chain(outside.iter()).collect();
    let list = list_file(&fx, "all.list", &all);
    let cache = fx.cache("c");
    // At least 2000 handler runs, however loaded the machine is.
    let run = |secs: &str, l: &Path| watched(&prog).args([secs, "100"]).arg(l).arg("2000");

    finished(run("1", &list).run(), "warm-up");
    let mut report = Vec::new();
    let native = finished(run("3", &list).run(), "native");
    report.push(("native", signal_counts(&native)));
    let pilot = finished(run("3", &pilot_list).record(&cache).run(), "pilot");
    report.push(("pilot", signal_counts(&pilot)));
    assert!(cache.file.is_file(), "the pilot wrote no cache");
    let stats = fx.out.join("serve.stats");
    let served = finished(run("6", &list).serve(&cache).stats(&stats).run(), "served");
    report.push(("served", signal_counts(&served)));
    assert_eq!(served.stderr_str(), "");
    let s = read_stats(&stats);
    for (what, [handler, during, bad, main, main_bad]) in &report {
        eprintln!(
            "{what}: handler={handler} during_call={during} mismatches={bad} main={main} main_mismatches={main_bad}"
        );
        assert!(*handler > 1000, "{what}: the handler ran {handler} times");
        assert!(
            *during > 1000,
            "{what}: it interrupted a probe {during} times"
        );
        assert_eq!((*bad, *main_bad), (0, 0), "{what}: mismatches");
    }
    eprintln!("served stats {s:?}");
    assert!(s.served > 10_000, "the probes were served: {s:?}");
}
