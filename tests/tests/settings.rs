//! Settings as a user meets them (issue 12, items 14, 16, 17): a mistyped
//! `DLFM_OP` is said once and changes nothing; a warning is printed once
//! per process tree; `FMCACHE_FILE` (and the stats file) are resolved once,
//! so a child in another directory records into, and is served from, the
//! same cache; every pool worker leaves its statistics line; within a job,
//! `fmcache verify` and the job's stage agree on which cache is served.

use std::fs;
use std::path::Path;
use std::process::Command;

use fmcache_core::config::JOB_VARS;
use fmcache_tests::{assert_same, fixture, lib, py_env, tool, Cache, Run};

/// `run` with the library loaded and `DLFM_OP=op`, and no other setting
/// (the harness's record/serve modes set absolute paths; these tests are
/// about what happens without them). Outside any job.
fn with_lib(run: Run, op: &str) -> Run {
    no_job(run.env("LD_PRELOAD", lib()).env("DLFM_OP", op))
}

fn no_job(mut run: Run) -> Run {
    for k in JOB_VARS {
        run = run.env(k, "");
    }
    run
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// A shell with children in two directories: dash builds each child's
/// environment from its own variables, not from `environ`, so this covers
/// the exec hooks' explicit `envp`.
const SCRIPT: &str = r#"
set -e
cat "$1/a.txt"
for i in 1 2 3 4 5; do /bin/cat "$1/b.txt"; done
(cd "$1/sub" && /bin/ls)
/bin/ls "$1"
"#;

fn tree(t: &Path) {
    fs::create_dir_all(t.join("sub")).unwrap();
    fs::write(t.join("a.txt"), "alpha\n").unwrap();
    fs::write(t.join("b.txt"), "beta\n").unwrap();
    fs::write(t.join("sub/c.txt"), "gamma\n").unwrap();
}

/// Unknown values (near misses included: no guessing) give exactly one
/// line naming the valid values, in a tree of 8 processes, and the output
/// is the native one; nothing is recorded anywhere.
#[test]
fn an_unknown_dlfm_op_is_said_once_and_changes_nothing() {
    let fx = fixture!("settings_bad_op");
    tree(&fx.tree);
    let work = fx.out.join("work");
    fs::create_dir_all(&work).unwrap();
    let run = || {
        Run::new("/bin/sh")
            .args(["-c", SCRIPT, "sh"])
            .arg(&fx.tree)
            .cwd(&work)
    };
    let native = no_job(run()).run().ok("native");
    assert!(native.stderr.is_empty());
    for bad in [
        "read_cache",
        "write_cache",
        "READ-CACHE",
        "Read-Cache",
        "on",
        "1",
    ] {
        let out = with_lib(run(), bad).run().ok(bad);
        assert_same(bad, "native", &native.stdout, bad, &out.stdout);
        let err = out.stderr_str();
        assert_eq!(
            lines(&err),
            [format!(
                "fmcache: DLFM_OP={bad}: not a valid value (valid: off (or unset), \
                 write-cache, read-cache); running without fmcache"
            )],
            "exactly one line for {bad}"
        );
        assert_eq!(
            fs::read_dir(&work).unwrap().count(),
            0,
            "{bad}: nothing recorded"
        );
    }
    // The valid "off" is silent.
    let off = with_lib(run(), "off").run().ok("off");
    assert_same("off", "native", &native.stdout, "off", &off.stdout);
    assert!(off.stderr.is_empty(), "{}", off.stderr_str());
}

/// A shell script starting 24 children (11 `cat`, 10 in another directory,
/// an `sh`, a Python that starts its own `cat`) under read-cache with no
/// cache (counted: every process leaves a stats line): one
/// "not found" line in total, not 25, and native output. The cache path is
/// relative, so each child would name (and warn about) another file if it
/// resolved the path itself.
#[test]
fn a_missing_cache_is_reported_once_for_a_tree_of_24_children() {
    let fx = fixture!("settings_missing_once");
    tree(&fx.tree);
    let work = fx.out.join("work");
    fs::create_dir_all(&work).unwrap();
    let py = py_env().python.display().to_string();
    let script = format!(
        r#"
for i in {{1..11}}; do /bin/cat "$1/a.txt"; done
for i in {{1..10}}; do (cd "$1/sub" && /bin/cat c.txt); done
/bin/sh -c 'exec /bin/ls "$1"' sh "$1"
{py} -c 'import subprocess, sys; subprocess.run(["/bin/cat", sys.argv[1] + "/b.txt"], check=True)' "$1"
echo done
"#
    );
    let run = || {
        Run::new("/bin/bash")
            .args(["-c", &script, "bash"])
            .arg(&fx.tree)
            .cwd(&work)
            .env("FMCACHE_FILE", "missing.dat")
            .env("FMCACHE_STAGE_DIR", fx.out.join("stage"))
    };
    let native = no_job(run()).run().ok("native");
    let stats = fx.out.join("serve.stats");
    let served = with_lib(run(), "read-cache")
        .env("FMCACHE_STATS", &stats)
        .run()
        .ok("served");
    let text = fs::read_to_string(&stats).unwrap();
    let procs = text.lines().filter(|l| !l.contains("copy=auditor")).count();
    assert_eq!(procs, 25, "the script and its 24 children:\n{text}");
    assert_same("output", "native", &native.stdout, "served", &served.stdout);
    let err = served.stderr_str();
    assert_eq!(
        lines(&err),
        [format!(
            "fmcache: {}: not found; running uncached",
            work.join("missing.dat").display()
        )],
        "one line for the whole tree"
    );
}

/// The default `./fmcache.dat`, a relative `FMCACHE_STATS` and
/// `FMCACHE_STAGE_DIR`, with a child that changes directory: the pilot records one cache (none in the
/// child's directory), and in production that child is served from it.
#[test]
fn a_child_in_another_directory_uses_the_same_cache() {
    let fx = fixture!("settings_cd_child");
    tree(&fx.tree);
    let work = fx.out.join("work");
    fs::create_dir_all(work.join("elsewhere")).unwrap();
    // The child is `head`, so its stats line is told from the others.
    let script = r#"
cat "$1/a.txt"
cd elsewhere && /usr/bin/head -n 1 "$1/sub/c.txt" "$1/b.txt"
"#;
    let run = |op: &str, stats: &str| {
        let r = Run::new("/bin/bash")
            .args(["-c", script, "bash"])
            .arg(&fx.tree)
            .cwd(&work)
            .env("FMCACHE_STAGE_DIR", "stage")
            .env("FMCACHE_INCLUDE", &fx.tree);
        if op.is_empty() {
            no_job(r)
        } else {
            with_lib(r, op).env("FMCACHE_STATS", stats)
        }
    };
    let native = run("", "").run().ok("native");
    let pilot = run("write-cache", "record.stats").run().ok("pilot");
    assert!(pilot.stderr.is_empty(), "{}", pilot.stderr_str());
    assert!(work.join("fmcache.dat").is_file(), "the cache");
    let mut strays: Vec<String> = fs::read_dir(work.join("elsewhere"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    strays.sort();
    assert_eq!(strays, Vec::<String>::new(), "nothing in the child's cwd");
    let served = run("read-cache", "serve.stats").run().ok("served");
    assert!(served.stderr.is_empty(), "{}", served.stderr_str());
    assert_same("output", "native", &native.stdout, "served", &served.stdout);
    let stats = fs::read_to_string(work.join("serve.stats")).unwrap();
    let head: Vec<&str> = stats
        .lines()
        .filter(|l| l.ends_with(" exe=/usr/bin/head") && !l.contains("copy=auditor"))
        .collect();
    assert_eq!(head.len(), 1, "{stats}");
    let served_n: u64 = head[0]
        .split(' ')
        .find_map(|f| f.strip_prefix("served="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(served_n > 0, "the child in elsewhere/ is served: {stats}");
    assert!(work.join("stage").is_dir(), "the relative stage, once");
    assert_eq!(
        fs::read_dir(work.join("elsewhere")).unwrap().count(),
        0,
        "no stats file or stage in the child's cwd"
    );
}

/// Pool workers (fork start method) leave through `os._exit`, which skips
/// atexit and destructors; so do bare `os.fork` children. Each leaves its
/// line, recording and serving.
#[test]
fn processes_leaving_through_os_exit_leave_their_stats_line() {
    let fx = fixture!("settings_os_exit");
    let program = r#"
import multiprocessing as mp, os, sys
def square(x):
    return x * x
if __name__ == "__main__":
    mp.set_start_method("fork")
    pool = mp.Pool(4)
    print(sum(pool.map(square, range(100), chunksize=1)))
    pool.close()
    pool.join()
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            import json
            os._exit(0)
        os.waitpid(pid, 0)
"#;
    let script = fx.out.join("pool.py");
    fs::write(&script, program).unwrap();
    let cache = fx.cache("c");
    let run = || Run::new(&py_env().python).arg("-B").arg(&script);
    let native = run().native().run().ok("native");
    for (label, r) in [
        ("record", run().record(&cache)),
        ("serve", run().serve(&cache)),
    ] {
        let stats = fx.out.join(format!("{label}.stats"));
        let out = r.stats(&stats).run().ok(label);
        assert_same(label, "native", &native.stdout, label, &out.stdout);
        let text = fs::read_to_string(&stats).unwrap();
        let procs: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("copy=auditor"))
            .collect();
        assert_eq!(
            procs.len(),
            1 + 4 + 3,
            "{label}: the parent, 4 workers and 3 forks:\n{text}"
        );
        assert!(procs.iter().all(|l| l.contains(&format!("op={label} "))));
    }
}

fn verify_in(cache: &Cache, job: Option<&str>) -> (i32, String) {
    let mut c = Command::new(tool());
    c.arg("verify")
        .arg(&cache.file)
        .env("FMCACHE_STAGE_DIR", &cache.stage);
    for k in JOB_VARS {
        c.env_remove(k);
    }
    if let Some(j) = job {
        c.env("SLURM_JOB_ID", j);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Within a job a node reads the cache once (the job pointer), so a cache
/// replaced behind the job's back (recorded elsewhere, copied in) is not
/// served there until the next job or `fmcache stage --clean`, and
/// `fmcache verify` says so (STALE) instead of "fresh". A pilot that
/// re-records the cache on the node drops the pointer: the job's next
/// process is served the new cache, and verify agrees.
#[test]
fn verify_and_the_job_stage_agree_on_a_replaced_cache() {
    let fx = fixture!("settings_replaced");
    let file = fx.tree.join("data.txt");
    let cache = fx.cache("c");
    let cat = |c: &Cache| {
        no_job(Run::new("/bin/cat").arg(&file))
            .env("FMCACHE_INCLUDE", &fx.tree)
            .record(c)
    };
    let served = |job: Option<&str>| -> String {
        let mut r = no_job(Run::new("/bin/cat").arg(&file)).serve(&cache);
        if let Some(j) = job {
            r = r.env("SLURM_JOB_ID", j);
        }
        let o = r.run().ok("served");
        assert!(o.stderr.is_empty(), "{}", o.stderr_str());
        o.stdout_str()
    };
    fs::write(&file, "version 1\n").unwrap();
    cat(&cache).run().ok("pilot 1");
    assert_eq!(served(Some("9")), "version 1\n");
    let (code, text) = verify_in(&cache, Some("9"));
    assert_eq!(code, 0, "{text}");
    assert!(text.ends_with(": fresh\n"), "{text}");

    // Recorded "on another node" (another path), then moved over the cache.
    fs::write(&file, "version 2, longer\n").unwrap();
    let other = Cache {
        file: fx.out.join("other.dat"),
        stage: cache.stage.clone(),
    };
    cat(&other).run().ok("pilot 2");
    fs::rename(&other.file, &cache.file).unwrap();
    // The job keeps its stage.
    assert_eq!(served(Some("9")), "version 1\n");
    let (code, text) = verify_in(&cache, Some("9"));
    assert_eq!(code, 1, "{text}");
    let text_lines = lines(&text);
    assert_eq!(text_lines.len(), 2, "{text}");
    assert!(
        text_lines[0].starts_with(
            "stage: job SLURM_JOB_ID=9 on this node serves another version of this cache"
        ),
        "{text}"
    );
    assert!(
        text_lines[1].ends_with(
            "0 changed, 0 appeared, 0 vanished, 0 listings and 0 contents differ, \
             the job's stage holds another version: STALE"
        ),
        "{text}"
    );
    // Another job, or none, is served this cache: fresh.
    assert_eq!(verify_in(&cache, Some("10")).0, 0);
    assert_eq!(verify_in(&cache, None).0, 0);
    // `fmcache stage --clean` drops the pointer: the job reads the cache.
    let o = Command::new(tool())
        .args(["stage", "--clean"])
        .env("FMCACHE_STAGE_DIR", &cache.stage)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(served(Some("9")), "version 2, longer\n");
    assert_eq!(verify_in(&cache, Some("9")).0, 0);
    assert_eq!(served(None), "version 2, longer\n");

    // A pilot re-recording the cache on this node: picked up at once.
    fs::write(&file, "version 3\n").unwrap();
    fs::remove_file(&cache.file).unwrap();
    cat(&cache).run().ok("pilot 3");
    assert_eq!(served(Some("9")), "version 3\n");
    let (code, text) = verify_in(&cache, Some("9"));
    assert_eq!(code, 0, "{text}");
}

/// `fmcache stats --json` of one statistics file (its live files beside).
fn stats_json(stats: &Path) -> serde_json::Value {
    let o = Command::new(tool())
        .arg("stats")
        .arg("--json")
        .arg(stats)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every process that recorded or served is counted, also when killed by
/// a signal (issue 12 point 8): `with Pool(4)` ends with `terminate()`,
/// which SIGTERMs the workers still idle; a process killed with SIGKILL
/// mid-run. Their counters were in the node's live file from the start.
#[test]
fn processes_killed_by_a_signal_are_counted() {
    let fx = fixture!("settings_killed");
    let program = r#"
import multiprocessing as mp, json, sys
def square(x):
    return x * x
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(4) as pool:
        print(sum(pool.map(square, range(100), chunksize=1)))
"#;
    let script = fx.out.join("pool.py");
    fs::write(&script, program).unwrap();
    let cache = fx.cache("c");
    let run = || Run::new(&py_env().python).arg("-B").arg(&script);
    for (label, r) in [
        ("record", run().record(&cache)),
        ("serve", run().serve(&cache)),
    ] {
        let stats = fx.out.join(format!("{label}.stats"));
        r.stats(&stats).run().ok(label);
        let v = stats_json(&stats);
        let lines = fs::read_to_string(&stats)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("copy=auditor"))
            .count() as u64;
        let not_ended = v["not_ended"].as_array().unwrap().len() as u64;
        eprintln!("{label}: {lines} lines, {not_ended} killed workers counted from the live file");
        assert_eq!(v["processes"], 5, "{label}: the parent and 4 workers: {v}");
        assert_eq!(
            lines + not_ended,
            5,
            "{label}: a process counted twice: {v}"
        );
    }

    // SIGKILL mid-run: no code runs, the counts are there all the same.
    let stats = fx.out.join("kill.stats");
    let mut child = Command::new(&py_env().python);
    for k in JOB_VARS
        .iter()
        .chain(&["LD_AUDIT", "FMCACHE_INCLUDE", "FMCACHE_EXCLUDE"])
    {
        child.env_remove(k);
    }
    child
        .args([
            "-B",
            "-c",
            "import json, csv, time; print('ready', flush=True); time.sleep(60)",
        ])
        .env("LD_PRELOAD", lib())
        .env("DLFM_OP", "read-cache")
        .env("FMCACHE_FILE", &cache.file)
        .env("FMCACHE_STAGE_DIR", &cache.stage)
        .env("FMCACHE_STATS", &stats)
        .stdout(std::process::Stdio::piped());
    let mut child = child.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        fs::read_to_string(&stats).unwrap_or_default().is_empty(),
        "a SIGKILLed process wrote a line"
    );
    let v = stats_json(&stats);
    assert_eq!(v["processes"], 1, "{v}");
    assert_eq!(v["not_ended"][0]["pid"], child.id(), "{v}");
    assert!(v["served"].as_u64().unwrap() > 0, "its counts: {v}");
}

/// Slots of processes that ended are used again: 60 processes one after
/// another leave the live file's table at a few slots.
#[test]
fn live_slots_are_reused() {
    let fx = fixture!("settings_live_reuse");
    fs::write(fx.tree.join("f"), "x\n").unwrap();
    let cache = fx.cache("c");
    let cat = Run::new("/bin/cat").arg(fx.tree.join("f"));
    cat.clone().record(&cache).run().ok("pilot");
    let stats = fx.out.join("s.stats");
    for _ in 0..60 {
        cat.clone().serve(&cache).stats(&stats).run().ok("served");
    }
    let v = stats_json(&stats);
    assert_eq!(v["processes"], 60, "{v}");
    assert_eq!(v["not_ended"].as_array().unwrap().len(), 0, "{v}");
    let live: Vec<_> = fs::read_dir(&fx.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("s.stats.live."))
        .collect();
    assert_eq!(live.len(), 1, "one live file per node: {live:?}");
    let bytes = fs::read(&live[0]).unwrap();
    let used = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    assert!(used <= 4, "{used} slots used by 60 sequential processes");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&live[0]).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the live file is the owner's only");
}

/// A live file planted as a symlink (to a file of the victim's) is never
/// opened through, and one owned by another user is never used: one line,
/// the program runs, its statistics line is written, the target and the
/// other user's file are unchanged.
#[test]
fn a_planted_live_file_is_refused() {
    let fx = fixture!("settings_live_planted");
    fs::write(fx.tree.join("f"), "x\n").unwrap();
    let victim = fx.out.join("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    let cache = fx.cache("c");
    let cat = Run::new("/bin/cat").arg(fx.tree.join("f"));
    cat.clone().record(&cache).run().ok("pilot");
    let stats = fx.out.join("p.stats");
    let node = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let node = node.trim();
    std::os::unix::fs::symlink(&victim, fx.out.join(format!("p.stats.live.{node}"))).unwrap();
    let out = cat.clone().serve(&cache).stats(&stats).run().ok("served");
    assert_eq!(out.stdout_str(), "x\n");
    let err = out.stderr_str();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("p.stats.live."), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    let text = fs::read_to_string(&stats).unwrap();
    assert_eq!(
        text.lines().filter(|l| !l.contains("copy=auditor")).count(),
        1,
        "{text}"
    );

    // A live file of another user's (uid 4242), 0600: refused the same way,
    // never mapped, left as it was.
    let stats2 = fx.out.join("q.stats");
    let foreign = fx.out.join(format!("q.stats.live.{node}"));
    fs::write(&foreign, "not ours\n").unwrap();
    std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
    let out = cat.clone().serve(&cache).stats(&stats2).run().ok("served");
    assert_eq!(out.stdout_str(), "x\n");
    let err = out.stderr_str();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("owned by uid 4242"), "{err}");
    assert_eq!(fs::read_to_string(&foreign).unwrap(), "not ours\n");
}

/// FMCACHE_DEBUG=pass says, for a call served by the real function, the
/// hook, the reason and the path: here `cat` opening a file outside the
/// cache's tree. Nothing is said unasked; served output stays native.
#[test]
fn debug_pass_says_why_a_call_went_to_the_real_function() {
    let fx = fixture!("settings_debug_pass");
    fs::create_dir_all(&fx.tree).unwrap();
    let (inside, outside) = (fx.tree.join("in.txt"), fx.out.join("outside.txt"));
    fs::write(&inside, "inside\n").unwrap();
    fs::write(&outside, "outside\n").unwrap();
    let cat = || Run::new("/bin/cat").arg(&inside).arg(&outside).cwd(&fx.out);
    let native = no_job(cat()).run().ok("native");
    let lib_run = |op: &str| {
        with_lib(cat(), op)
            .env("FMCACHE_STAGE_DIR", "stage")
            .env("FMCACHE_INCLUDE", &fx.tree)
    };
    let pilot = lib_run("write-cache").run().ok("pilot");
    assert!(pilot.stderr.is_empty(), "{}", pilot.stderr_str());
    let quiet = lib_run("read-cache").run().ok("served");
    assert!(
        quiet.stderr.is_empty(),
        "nothing unasked: {}",
        quiet.stderr_str()
    );
    let served = lib_run("read-cache")
        .env("FMCACHE_DEBUG", "pass")
        .run()
        .ok("served, debug");
    assert_same("output", "native", &native.stdout, "served", &served.stdout);
    let err = served.stderr_str();
    let want = format!(": {}", outside.display());
    assert!(
        lines(&err)
            .iter()
            .any(|l| l.starts_with("fmcache: pass open: ") && l.ends_with(&want)),
        "a reason line for {}:\n{err}",
        outside.display()
    );
}
