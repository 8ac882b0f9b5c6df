//! `fmcache bcast` on one machine, with Open MPI and MPICH, three ranks
//! on the one node: the cache is staged once and the job's pointer left,
//! so a later process of the job makes no request for the cache; a cache
//! the staging rules refuse fails every rank with one line. The 4-node
//! runs: `tests/tests/cluster.rs`.

use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::{Command, Output};

use fmcache_tests::bcast::{bcast_exe, Mpi};
use fmcache_tests::{cache_calls, fixture, served_cat, tool, Cache, Run};

/// `LAUNCHER -n 3 fmcache bcast CACHE` in job `job`, the bcast built for
/// `mpi`.
fn bcast(mpi: Mpi, cache: &Cache, file: &Path, job: &str) -> Output {
    let mut c = Command::new(mpi.launcher());
    c.args(["-n", "3"]);
    if mpi == Mpi::OpenMpi {
        c.args(["--oversubscribe", "--allow-run-as-root"]);
    }
    c.arg(tool()).arg("bcast").arg(file);
    for k in fmcache_core::config::JOB_VARS {
        c.env_remove(k);
    }
    c.env("SLURM_JOB_ID", job)
        .env("FMCACHE_STAGE_DIR", &cache.stage)
        .env("FMCACHE_BCAST", bcast_exe(mpi))
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap()
}

/// Calls on the cache file (metadata requests and reads) of `cat`
/// served in job `job`.
fn cache_calls_of_served_cat(cache: &Cache, data: &Path, job: &str, trace: &Path) -> usize {
    let out = served_cat(cache, data, &[("SLURM_JOB_ID", job)], trace);
    assert_eq!(out, "served by the job\n");
    let (meta, reads) = cache_calls(cache, trace);
    meta.len() + reads
}

fn one_node(mpi: Mpi, name: &str) {
    let fx = fixture!(name);
    let data = fx.tree.join("data.txt");
    fs::write(&data, "served by the job\n").unwrap();
    let cache = fx.cache("c");
    Run::new("/bin/cat")
        .arg(&data)
        .record(&cache)
        .run()
        .ok("pilot");

    let o = bcast(mpi, &cache, &cache.file, "301");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{mpi:?} bcast: {out}{err}");
    // One summary line, from the reader: one node staged, for this job.
    let said: Vec<&str> = out.lines().collect();
    assert_eq!(said.len(), 1, "{out}");
    assert!(
        said[0].contains(" read once, staged on 1 node ")
            && said[0].ends_with("for job SLURM_JOB_ID=301"),
        "{out}"
    );
    let names: Vec<String> = fs::read_dir(&cache.stage)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let stages = names.iter().filter(|n| n.len() == 16).count();
    let pointers = names
        .iter()
        .filter(|n| n.starts_with("job.") && !n.ends_with(".lock"))
        .count();
    assert_eq!(
        (stages, pointers),
        (1, 1),
        "one stage, one pointer: {names:?}"
    );

    // The job's processes: not one call on the cache file.
    let calls = cache_calls_of_served_cat(&cache, &data, "301", &fx.out.join("t1"));
    assert_eq!(calls, 0, "after bcast, calls of the job on the cache");
    // Another job has no pointer: it asks (the test sees requests).
    let calls = cache_calls_of_served_cat(&cache, &data, "302", &fx.out.join("t2"));
    assert!(calls > 0, "a job without bcast must ask the cache");

    // A cache owned by another user is refused by the reader: every rank
    // exits nonzero, one line says why, nothing is staged.
    let theirs = fx.out.join("theirs.dat");
    fs::copy(&cache.file, &theirs).unwrap();
    chown(&theirs, Some(65534), None).unwrap();
    let fresh = fx.cache("refused");
    let o = bcast(mpi, &fresh, &theirs, "303");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a refused cache succeeded: {err}");
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("fmcache bcast: "))
        .collect();
    assert_eq!(ours.len(), 1, "one line: {err}");
    assert!(
        ours[0].ends_with("owned by uid 65534, not by you or root: refused"),
        "{err}"
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let staged = fs::read_dir(&fresh.stage)
        .map(|d| d.flatten().filter(|e| e.file_name().len() == 16).count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a refused cache was staged");
}

#[test]
fn open_mpi_stages_once_and_the_job_never_asks() {
    one_node(Mpi::OpenMpi, "bcast_openmpi");
}

#[test]
fn mpich_stages_once_and_the_job_never_asks() {
    one_node(Mpi::Mpich, "bcast_mpich");
}

/// `fmcache` without `fmcache-bcast` beside it (a machine without MPI)
/// says so in one line and how to get it, exit 1.
#[test]
fn without_fmcache_bcast_one_line_says_how_to_get_it() {
    let fx = fixture!("bcast_absent");
    let alone = fx.out.join("fmcache");
    fs::copy(tool(), &alone).unwrap();
    let o = Command::new(&alone)
        .arg("bcast")
        .arg(fx.out.join("c.dat"))
        .env_remove("FMCACHE_BCAST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fmcache-bcast not found") && err.contains("make install MPICC="),
        "{err}"
    );
}
