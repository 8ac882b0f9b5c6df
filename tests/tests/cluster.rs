//! The user's lines on a real 4-node Slurm cluster (`tests/cluster/up.sh`:
//! one slurmd per node, each in its own mount and UTS namespace with its
//! own /dev/shm), with Open MPI and MPICH, on a Python program that imports
//! numpy and scipy and does an MPI reduction:
//!
//! ```text
//! DLFM_OP=write-cache LD_PRELOAD=libfmcache.so srun -n 24 app
//! DLFM_OP=read-cache  LD_PRELOAD=libfmcache.so srun -n 96 app
//! ```
//!
//! and the same under `mpirun`. Every rank's output must equal a native
//! run's. Ranks import in a rank-dependent order and subset, shifted
//! between pilot and production, so production is not a replay of the
//! pilot. A traced production run measures, per node, the requests for
//! the cache file itself (at most 3) and the calls on the cached software
//! trees (none).
//!
//! Installed with `make install` and loaded with Lmod's `module load
//! fmcache` in a clean shell, the same lines with the bare
//! `LD_PRELOAD=libfmcache.so`, and the `examples/` scripts as written
//! (`sbatch --wait examples/slurm.sh`, `examples/slurm-sbcast.sh`, `salloc
//! ... bash examples/mpirun.sh`), each compared with native.
//!
//! `fmcache bcast` with Open MPI and with MPICH (two ranks per node) before
//! a traced step: served, and no request for the cache on any node.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use fmcache_tests::bcast::{bcast_exe, Mpi};
use fmcache_tests::install::{make_install, module_shell, sh_quote};
use fmcache_tests::{assert_same, fixture, lib, parse_exports, py_env, strace_count, workspace};

/// The cluster's env.sh, after bringing it up (once per test binary).
fn cluster() -> &'static Vec<(String, String)> {
    static E: OnceLock<Vec<(String, String)>> = OnceLock::new();
    E.get_or_init(|| {
        let state = workspace().join("target/cluster");
        let o = Command::new("bash")
            .arg(workspace().join("tests/cluster/up.sh"))
            .arg(&state)
            .output()
            .expect("running tests/cluster/up.sh");
        assert!(
            o.status.success(),
            "tests/cluster/up.sh failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let p = state.join("env.sh");
        parse_exports(&p, &fs::read_to_string(&p).unwrap())
    })
}

fn var(k: &str) -> String {
    cluster()
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("cluster env.sh lacks {k}"))
}

/// `program` run from `dir` with the cluster's environment and none of
/// fmcache's (nor cargo's LD_LIBRARY_PATH: directories no pilot saw).
fn in_cluster(program: &str, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir);
    for (k, _) in fmcache_core::config::LIBRARY_VARS {
        c.env_remove(k);
    }
    c.env_remove("LD_LIBRARY_PATH");
    for (k, v) in cluster() {
        c.env(k, v);
    }
    c
}

/// One job at a time: each wants every slot of the cluster.
static JOBS: Mutex<()> = Mutex::new(());

/// Ranks import numpy.fft and scipy.interpolate in an order, and a subset,
/// that depend on (rank + SHIFT) % 3; all then reduce over MPI, and rank 0
/// prints every rank's line.
const APP: &str = r#"
import os, sys
from mpi4py import MPI
c = MPI.COMM_WORLD
k = (c.rank + int(os.environ.get("SHIFT", "0"))) % 3
if k == 0:
    import numpy.fft, scipy.interpolate
elif k == 1:
    import scipy.interpolate, numpy.fft
else:
    import numpy.fft
import numpy
total = c.allreduce(c.rank)
line = f"{c.rank} {c.size} {total} {numpy.fft.fft([1, 2, 3]).real.sum()} {k}"
# One writer: launchers may split lines that ranks write at once.
lines = c.gather(line, root=0)
if c.rank == 0:
    print("\n".join(lines), flush=True)
"#;

struct Job {
    dir: PathBuf,
    app: PathBuf,
}

impl Job {
    fn new(name: &str) -> Job {
        let fx = fixture!(name);
        let app = fx.tree.join("app.py");
        fs::write(&app, APP).unwrap();
        Job { dir: fx.out, app }
    }

    /// `env... LAUNCHER... python app.py` from the job's directory (on the
    /// disk every node shares), with the cluster's and nothing else of
    /// fmcache's environment; stdout sorted by rank.
    fn run(&self, env: &[(&str, String)], launcher: &[String]) -> (String, String) {
        let _one = JOBS.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = in_cluster(&launcher[0], &self.dir);
        c.args(&launcher[1..]).arg(&py_env().python).arg(&self.app);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{launcher:?} failed: {err}");
        let mut lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
        lines.sort_by_key(|l| l.split(' ').next().and_then(|r| r.parse::<u32>().ok()));
        (lines.iter().map(|l| format!("{l}\n")).collect(), err)
    }
}

/// The steps of a batch script run by `salloc -N4 --ntasks-per-node=6`
/// from the job's directory, after a pilot wrote ./fmcache.dat; `traced`
/// is the step that runs the ranks each under strace, into `traces/`, so
/// `per_node` counts their requests.
struct Script {
    cache: PathBuf,
    traces: PathBuf,
    l: String,
    tool: String,
    py: String,
    app: String,
}

impl Script {
    fn new(job: &Job) -> Script {
        let traces = job.dir.join("traces");
        fs::create_dir_all(&traces).unwrap();
        Script {
            cache: job.dir.join("fmcache.dat"),
            traces,
            l: lib().display().to_string(),
            tool: fmcache_tests::tool().display().to_string(),
            py: py_env().python.display().to_string(),
            app: job.app.display().to_string(),
        }
    }

    /// 24 ranks (srun `args` first), each served under strace, into
    /// `out`; srun itself and the shell unpreloaded.
    fn traced(&self, args: &str, out: &str) -> String {
        format!(
            "env -u LD_PRELOAD srun {args} -N4 -n 24 sh -c 'exec strace --seccomp-bpf -f -qq -y \
             -e trace=%file,fstat -E DLFM_OP=read-cache -E LD_PRELOAD={l} -E LD_AUDIT={l} \
             -E FMCACHE_FILE={cache} -E SHIFT=1 -o {traces}/t.$SLURMD_NODENAME.$SLURM_PROCID \
             \"$0\" \"$@\"' {py} {app} > {out}\n",
            l = self.l,
            cache = self.cache.display(),
            traces = self.traces.display(),
            py = self.py,
            app = self.app,
        )
    }

    /// `script` in an allocation of the four nodes, from the job's
    /// directory.
    fn run(&self, job: &Job, script: &str) -> std::process::Output {
        let _one = JOBS.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = in_cluster(&var("FMCACHE_SALLOC"), &job.dir);
        c.args(["-N4", "--ntasks-per-node=6", "-Q", "bash", "-c", script]);
        c.output().unwrap()
    }
}

fn srun(n: u32) -> Vec<String> {
    vec![var("FMCACHE_SRUN"), "-n".into(), n.to_string()]
}

fn lines_of(out: &str) -> usize {
    out.lines().count()
}

fn write_cache(shift: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DLFM_OP", "write-cache".into()),
        ("LD_PRELOAD", lib().display().to_string()),
        ("SHIFT", shift.into()),
    ]
}

fn read_cache(shift: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DLFM_OP", "read-cache".into()),
        ("LD_PRELOAD", lib().display().to_string()),
        ("SHIFT", shift.into()),
    ]
}

/// Every stderr line is fmcache's own or Slurm's queueing notice: nothing
/// from the program, no warning about the cache.
fn quiet(what: &str, err: &str) {
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("srun: job ") && !l.starts_with("salloc: "))
        .collect();
    assert!(bad.is_empty(), "{what}: stderr:\n{}", bad.join("\n"));
}

/// Per node: metadata requests for the cache file and calls on the venv
/// and interpreter prefix, from `strace -y` files `<dir>/t.<node>.<rank>`.
fn per_node(dir: &Path, cache: &Path) -> BTreeMap<String, (usize, u64)> {
    let py = py_env();
    let cache = cache.display().to_string();
    let mut nodes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(node) = name.strip_prefix("t.").and_then(|r| r.split('.').next()) else {
            continue;
        };
        let text = fs::read_to_string(e.path()).unwrap();
        let requests = text
            .lines()
            .filter(|l| l.contains(&format!("{cache}\"")) || l.contains(&format!("{cache}>")))
            .filter(|l| {
                let call = l.split_whitespace().nth(1).unwrap_or("");
                !(call.starts_with("read(")
                    || call.starts_with("pread64(")
                    || call.starts_with("mmap("))
            })
            .count();
        nodes.entry(node.to_string()).or_default().0 += requests;
    }
    for (node, slot) in nodes.iter_mut() {
        let prefix = dir.join(format!("t.{node}"));
        slot.1 = strace_count(&prefix, &[py.venv.as_path(), py.prefix.as_path()]).on_roots;
    }
    nodes
}

/// The ranks really were served: `ranks` python processes (the venv's, by
/// path or as `python`) wrote a stats line in serve mode (the auditor
/// copy's line aside) with answers from the cache, none missing more than
/// it served.
fn served_ranks(what: &str, stats: &Path, ranks: usize) {
    let text = fs::read_to_string(stats).unwrap_or_default();
    let py = py_env().python.display().to_string();
    let field = |l: &str, k: &str| -> u64 {
        l.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let served: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("op=serve") && !l.contains(" copy=auditor"))
        // Open MPI's daemons execute a bare `python` found on PATH as named.
        .filter(|l| l.ends_with(&format!("exe={py}")) || l.ends_with(" exe=python"))
        .collect();
    assert_eq!(
        served.len(),
        ranks,
        "{what}: stats lines of served ranks:\n{text}"
    );
    for l in &served {
        assert!(
            field(l, "served") > 500 && field(l, "missed") < field(l, "served"),
            "{what}: {l}"
        );
    }
}

#[test]
fn slurm_pilot_of_24_serves_96_ranks_and_mpirun() {
    let job = Job::new("cluster_slurm");
    let native24 = job.run(&[("SHIFT", "0".into())], &srun(24)).0;
    let native96 = job.run(&[("SHIFT", "1".into())], &srun(96)).0;
    assert_eq!(lines_of(&native24), 24);
    assert_eq!(lines_of(&native96), 96);

    // The pilot, exactly as users write it: ./fmcache.dat, one cache with
    // the union of the 24 ranks' probes.
    let (pilot, err) = job.run(&write_cache("0"), &srun(24));
    quiet("pilot", &err);
    assert_same(
        "pilot",
        "native",
        native24.as_bytes(),
        "pilot",
        pilot.as_bytes(),
    );
    let cache = job.dir.join("fmcache.dat");
    assert!(cache.is_file(), "the pilot wrote ./fmcache.dat");

    // Production, 96 ranks in another import order.
    let stats = job.dir.join("stats.srun");
    let mut env = read_cache("1");
    env.push(("FMCACHE_STATS", stats.display().to_string()));
    let (served, err) = job.run(&env, &srun(96));
    quiet("production", &err);
    assert_same(
        "srun -n 96",
        "native",
        native96.as_bytes(),
        "served",
        served.as_bytes(),
    );
    served_ranks("srun -n 96", &stats, 96);

    // Measured: each rank traced (srun itself unpreloaded so the traced
    // python is the first process of the job on its node to attach).
    let traces = job.dir.join("traces");
    fs::create_dir_all(&traces).unwrap();
    let l = lib().display().to_string();
    let wrapper = format!(
        "exec strace --seccomp-bpf -f -qq -y -e trace=%file,fstat,getdents64 \
         -E DLFM_OP=read-cache -E LD_PRELOAD={l} -E LD_AUDIT={l} -E SHIFT=1 \
         -o {}/t.$SLURMD_NODENAME.$SLURM_PROCID \"$0\" \"$@\"",
        traces.display()
    );
    let mut launcher = srun(96);
    launcher.extend(["sh".into(), "-c".into(), wrapper]);
    let (traced, _) = job.run(&[], &launcher);
    assert_same(
        "traced",
        "native",
        native96.as_bytes(),
        "traced",
        traced.as_bytes(),
    );
    let nodes = per_node(&traces, &cache);
    eprintln!("per node (requests for the cache, calls on venv+prefix): {nodes:?}");
    assert_eq!(nodes.len(), 4, "ranks on all four nodes: {nodes:?}");
    for (node, (requests, calls)) in &nodes {
        assert!(*requests <= 3, "{node}: {requests} requests for the cache");
        assert_eq!(*calls, 0, "{node}: calls on the cached trees");
    }

    // The same under mpirun (Open MPI) inside an allocation.
    let mpirun = vec![
        var("FMCACHE_SALLOC"),
        "-N4".into(),
        "-Q".into(),
        var("FMCACHE_MPIRUN_OPENMPI"),
        "-n".into(),
        "24".into(),
        "--oversubscribe".into(),
        "--allow-run-as-root".into(),
    ];
    let native = job.run(&[("SHIFT", "2".into())], &mpirun).0;
    let stats = job.dir.join("stats.mpirun");
    let mut env = read_cache("2");
    env.push(("FMCACHE_STATS", stats.display().to_string()));
    let (served, err) = job.run(&env, &mpirun);
    quiet("mpirun", &err);
    assert_same(
        "mpirun -n 24",
        "native",
        native.as_bytes(),
        "served",
        served.as_bytes(),
    );
    served_ranks("mpirun -n 24", &stats, 24);
}

#[test]
fn mpich_pilot_and_production_under_srun() {
    let job = Job::new("cluster_mpich");
    let mut mpich = vec![
        ("MPI4PY_LIBMPI", var("FMCACHE_LIBMPI_MPICH")),
        ("LD_LIBRARY_PATH", var("FMCACHE_MPICH_LIBDIR")),
    ];
    let launcher = |n: u32| {
        let mut v = srun(n);
        v.insert(1, "--mpi=pmi2".into());
        v
    };
    mpich.push(("SHIFT", "0".into()));
    let native24 = job.run(&mpich, &launcher(24)).0;
    assert!(native24.lines().count() == 24);
    let with = |mut e: Vec<(&'static str, String)>| {
        e.extend(mpich.iter().filter(|(k, _)| *k != "SHIFT").cloned());
        e
    };
    let (pilot, err) = job.run(&with(write_cache("0")), &launcher(24));
    quiet("pilot", &err);
    assert_same(
        "mpich pilot",
        "native",
        native24.as_bytes(),
        "pilot",
        pilot.as_bytes(),
    );
    let mut native_env = mpich.clone();
    native_env.retain(|(k, _)| *k != "SHIFT");
    native_env.push(("SHIFT", "1".into()));
    let native48 = job.run(&native_env, &launcher(48)).0;
    let (served, err) = job.run(&with(read_cache("1")), &launcher(48));
    quiet("production", &err);
    assert_same(
        "mpich srun -n 48",
        "native",
        native48.as_bytes(),
        "served",
        served.as_bytes(),
    );
}

/// The README's batch-script alternatives to the lazy fetch, inside one
/// allocation: `srun -n "$SLURM_NNODES" --ntasks-per-node=1 fmcache stage`, then the ranks
/// (which then ask nothing of the cache: the stage and its job pointer are
/// there); and `sbcast` of the cache file to node-local storage, served
/// from there.
#[test]
fn prestaged_by_srun_stage_or_sbcast() {
    let job = Job::new("cluster_prestage");
    let native = job.run(&[("SHIFT", "1".into())], &srun(24)).0;
    let (_, err) = job.run(&write_cache("0"), &srun(24));
    quiet("pilot", &err);
    let sc = Script::new(&job);
    let (cache, traces) = (&sc.cache, &sc.traces);
    // Each alternative as a batch script would run it; rank 0 prints.
    let script = format!(
        r#"set -e
export LD_PRELOAD={l} FMCACHE_FILE={cache} SHIFT=1
srun -n "$SLURM_NNODES" --ntasks-per-node=1 {tool} stage >&2
DLFM_OP=read-cache srun -N4 -n 24 {py} {app} > staged.out
{traced}sbcast -f {cache} /dev/shm/app.fmcache
DLFM_OP=read-cache FMCACHE_FILE=/dev/shm/app.fmcache srun -N4 -n 24 {py} {app} > sbcast.out
"#,
        l = sc.l,
        tool = sc.tool,
        py = sc.py,
        app = sc.app,
        cache = cache.display(),
        traced = sc.traced("", "traced.out"),
    );
    let o = sc.run(&job, &script);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "batch script failed: {err}");
    let staged: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" entries, cache "))
        .collect();
    assert_eq!(staged.len(), 4, "fmcache stage once per node: {err}");
    for out in ["staged.out", "traced.out", "sbcast.out"] {
        let text = fs::read_to_string(job.dir.join(out)).unwrap();
        assert_same(out, "native", native.as_bytes(), out, text.as_bytes());
    }
    // `fmcache stage` made the requests; the ranks made none.
    let nodes = per_node(traces, cache);
    eprintln!("pre-staged, per node: {nodes:?}; fmcache stage said:\n{err}");
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    for (node, (requests, calls)) in &nodes {
        assert_eq!(*requests, 0, "{node}: ranks asked for the pre-staged cache");
        assert_eq!(*calls, 0, "{node}: calls on the cached trees");
    }
}

/// `text` cut at the `== NAME` lines the example scripts print: name ->
/// the lines after it. A line before the first header goes under "".
fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut name = String::new();
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("== ") {
            name = n.to_string();
            out.entry(name.clone()).or_default();
        } else {
            out.entry(name.clone())
                .or_default()
                .push_str(&format!("{l}\n"));
        }
    }
    out
}

/// `make install` into a prefix, then, from a clean shell with Lmod's
/// `module load fmcache` (and the venv activated): the README's srun lines
/// with the bare `LD_PRELOAD=libfmcache.so`, and the `examples/` scripts
/// exactly as written: `sbatch --wait examples/slurm.sh` (pilot, then
/// production), `sbatch --wait examples/slurm-sbcast.sh` (the cache
/// broadcast to each node's /dev/shm), `salloc ... bash
/// examples/mpirun.sh` (Open MPI). Every output equals native, the ranks
/// were served, and nothing else is printed (no "cannot be preloaded").
#[test]
fn installed_module_srun_lines_and_examples() {
    let fx = fixture!("cluster_install");
    let prefix = fx.tree.join("prefix");
    make_install(&prefix);
    let mut extra: Vec<(&str, String)> = cluster()
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    // Open MPI's mpirun as root, and which mpirun (the Debian alternative
    // may be MPICH's).
    extra.push(("OMPI_ALLOW_RUN_AS_ROOT", "1".into()));
    extra.push(("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1".into()));
    extra.push(("MPIRUN", var("FMCACHE_MPIRUN_OPENMPI")));
    let dir = |name: &str| {
        let d = fx.out.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::copy(workspace().join("examples/app.py"), d.join("app.py")).unwrap();
        d
    };
    let shell = |script: String| {
        let o = module_shell(&prefix, &extra, &script).output().unwrap();
        assert!(
            o.status.success(),
            "{script}\nfailed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let read =
        |p: PathBuf| fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let _one = JOBS.lock().unwrap_or_else(|e| e.into_inner());

    // The README's lines, as pasted.
    let job = dir("readme");
    shell(format!(
        "cd {}\n\
         srun -n 4 python app.py >native4.out\n\
         srun -n 24 python app.py >native24.out\n\
         DLFM_OP=write-cache LD_PRELOAD=libfmcache.so srun -n 4 python app.py >pilot.out 2>pilot.err\n\
         DLFM_OP=read-cache LD_PRELOAD=libfmcache.so FMCACHE_STATS=$PWD/stats srun -n 24 python app.py >served.out 2>served.err\n",
        sh_quote(&job)
    ));
    let native4 = read(job.join("native4.out"));
    let native24 = read(job.join("native24.out"));
    assert_eq!(lines_of(&native4), 4, "{native4}");
    assert_eq!(lines_of(&native24), 24, "{native24}");
    for (run, native) in [("pilot", &native4), ("served", &native24)] {
        quiet(run, &read(job.join(format!("{run}.err"))));
        let out = read(job.join(format!("{run}.out")));
        assert_same(run, "native", native.as_bytes(), run, out.as_bytes());
    }
    assert!(
        job.join("fmcache.dat").is_file(),
        "the pilot wrote ./fmcache.dat"
    );
    served_ranks("srun -n 24, module", &job.join("stats"), 24);

    // examples/slurm.sh then examples/slurm-sbcast.sh, as batch jobs.
    let ex = dir("slurm");
    let submitted = shell(format!(
        "cd {}\n\
         FMCACHE_STATS=$PWD/stats.slurm sbatch --wait {}\n\
         FMCACHE_STATS=$PWD/stats.sbcast sbatch --wait {}\n",
        sh_quote(&ex),
        sh_quote(workspace().join("examples/slurm.sh")),
        sh_quote(workspace().join("examples/slurm-sbcast.sh")),
    ));
    let ids: Vec<&str> = submitted
        .lines()
        .filter_map(|l| l.strip_prefix("Submitted batch job "))
        .collect();
    assert_eq!(ids.len(), 2, "{submitted}");
    let want = |pilot: bool| {
        let mut w = BTreeMap::new();
        if pilot {
            w.insert("pilot".to_string(), native4.clone());
        }
        w.insert("production".to_string(), native24.clone());
        w
    };
    for (script, id, pilot, stats) in [
        ("examples/slurm.sh", ids[0], true, "stats.slurm"),
        ("examples/slurm-sbcast.sh", ids[1], false, "stats.sbcast"),
    ] {
        let out = sections(&read(ex.join(format!("slurm-{id}.out"))));
        assert_eq!(out, want(pilot), "{script}: job output against native");
        served_ranks(script, &ex.join(stats), 24);
    }

    // examples/mpirun.sh inside an allocation.
    let mp = dir("mpirun");
    let out = shell(format!(
        "cd {}\n\
         FMCACHE_STATS=$PWD/stats salloc -N 4 --ntasks-per-node=6 -Q bash {} 2>&1\n",
        sh_quote(&mp),
        sh_quote(workspace().join("examples/mpirun.sh")),
    ));
    assert_eq!(
        sections(&out),
        want(true),
        "examples/mpirun.sh against native"
    );
    served_ranks("examples/mpirun.sh", &mp.join("stats"), 24);
}

/// `fmcache bcast` before the step, inside one allocation, with each MPI:
/// two ranks per node (only one of them stages), the cache read once and
/// fanned out by MPI_Bcast; then the job's ranks on all four nodes are
/// served (output equal to native) and make no request for the shared
/// cache file (traced), as the bcast left each node's stage and pointer.
fn bcast_then_served(mpi: Mpi, name: &str) {
    let job = Job::new(name);
    // Open MPI's ranks start under srun through PMIx (the default); MPICH's
    // through PMI2, mpi4py pointed at libmpich.
    let (mpi_env, srun_mpi, bcast_launcher) = match mpi {
        Mpi::OpenMpi => (
            vec![],
            "--mpi=pmix",
            format!(
                "{} --map-by ppr:2:node --oversubscribe --allow-run-as-root",
                var("FMCACHE_MPIRUN_OPENMPI")
            ),
        ),
        Mpi::Mpich => (
            vec![
                ("MPI4PY_LIBMPI", var("FMCACHE_LIBMPI_MPICH")),
                ("LD_LIBRARY_PATH", var("FMCACHE_MPICH_LIBDIR")),
            ],
            "--mpi=pmi2",
            format!("{} -n 8 -ppn 2", var("FMCACHE_MPIEXEC_MPICH")),
        ),
    };
    let launcher = {
        let mut v = srun(24);
        v.insert(1, srun_mpi.into());
        v
    };
    let with = |mut e: Vec<(&'static str, String)>| {
        e.extend(mpi_env.iter().cloned());
        e
    };
    let native = job.run(&with(vec![("SHIFT", "1".into())]), &launcher).0;
    assert_eq!(lines_of(&native), 24, "{native}");
    let (_, err) = job.run(&with(write_cache("0")), &launcher);
    quiet("pilot", &err);
    let sc = Script::new(&job);
    let exports: String = mpi_env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect();
    let script = format!(
        "set -e\n{exports}export SHIFT=1\n\
         FMCACHE_BCAST={bcast} {bcast_launcher} {tool} bcast {cache} > bcast.out 2> bcast.err\n\
         {traced}",
        bcast = bcast_exe(mpi).display(),
        tool = sc.tool,
        cache = sc.cache.display(),
        traced = sc.traced(srun_mpi, "traced.out"),
    );
    let o = sc.run(&job, &script);
    let read = |f: &str| fs::read_to_string(job.dir.join(f)).unwrap_or_default();
    assert!(
        o.status.success(),
        "{mpi:?}: batch script failed: {}\nbcast said: {}{}",
        String::from_utf8_lossy(&o.stderr),
        read("bcast.out"),
        read("bcast.err")
    );
    let said = read("bcast.out");
    assert!(
        said.contains(" read once, staged on 4 nodes ") && said.contains("for job SLURM_JOB_ID="),
        "{mpi:?}: fmcache bcast said: {said}{}",
        read("bcast.err")
    );
    let traced = read("traced.out");
    assert_same(
        &format!("{mpi:?} after bcast"),
        "native",
        native.as_bytes(),
        "traced",
        traced.as_bytes(),
    );
    let nodes = per_node(&sc.traces, &sc.cache);
    eprintln!("{mpi:?}: after fmcache bcast, per node: {nodes:?}; it said: {said}");
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    for (node, (requests, calls)) in &nodes {
        assert_eq!(*requests, 0, "{node}: ranks asked for the broadcast cache");
        assert_eq!(*calls, 0, "{node}: calls on the cached trees");
    }
}

#[test]
fn bcast_by_open_mpi_then_no_request_for_the_cache() {
    bcast_then_served(Mpi::OpenMpi, "cluster_bcast_openmpi");
}

#[test]
fn bcast_by_mpich_then_no_request_for_the_cache() {
    bcast_then_served(Mpi::Mpich, "cluster_bcast_mpich");
}
