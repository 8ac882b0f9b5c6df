//! Processes under read-cache: Python's subprocess (plain and shell),
//! os.fork, multiprocessing (fork, spawn, forkserver), os.posix_spawn
//! (with and without LD_AUDIT in the environment it passes), a `#!` script
//! whose interpreter is in the cached tree; C vfork + execve and
//! vfork + _exit loops (`tests/c/spawn.c`); exec of files without read or
//! execute permission, as root and as a real unprivileged user.
//!
//! Every child prints what it sees of the tree and its environment: the
//! served run prints exactly what the native run prints, every child is
//! served (FMCACHE_STATS), and its environment is the native one plus the
//! library's own variables (LD_AUDIT added), nothing else.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use fmcache_tests::user::{self, Ids};
use fmcache_tests::{assert_same, fixture, lib, py_env, Cache, Fixture, Out, Run};

/// What every child reports (Python): the tree's answers, then its
/// environment as `env TAG K=V` lines.
const PY: &str = r#"
import errno, hashlib, multiprocessing as mp, os, subprocess, sys

FILES = ["data/a", "data/b", "data/missing", "data/a/x", "bin/hello"]

def report(tag):
    lines = []
    for p in FILES:
        try:
            st = os.stat(p)
            with open(p, "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()[:16]
            r = f"{oct(st.st_mode)} {st.st_size} {st.st_ino} {st.st_mtime_ns} {h}"
        except OSError as e:
            r = "ERR " + errno.errorcode[e.errno]
        lines.append(f"{tag} {p} {r}")
    lines.append(f"{tag} listdir {sorted(os.listdir('data'))}")
    lines.append(f"{tag} access {os.access('bin/hello', os.X_OK)} {os.access('data/missing', os.F_OK)}")
    for k in sorted(os.environ):
        lines.append(f"env {tag} {k}={os.environ[k]}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()

if __name__ == "__main__":
    if sys.argv[1] == "child":
        report(sys.argv[2])
        sys.exit(0)
    me = [sys.executable, os.path.abspath(__file__)]
    report("main")
    subprocess.run(me + ["child", "subprocess"], check=True)
    subprocess.run(" ".join(me + ["child", "shell"]), shell=True, check=True)
    pid = os.fork()
    if pid == 0:
        report("fork")
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    for m in ["fork", "spawn", "forkserver"]:
        p = mp.get_context(m).Process(target=report, args=("mp-" + m,))
        p.start()
        p.join()
        assert p.exitcode == 0, m
    noaudit = {k: v for k, v in os.environ.items() if k != "LD_AUDIT"}
    for tag, env in [("posix_spawn", dict(os.environ)), ("posix_spawn-noaudit", noaudit)]:
        pid = os.posix_spawn(sys.executable, me + ["child", tag], env)
        assert os.waitpid(pid, 0)[1] == 0, tag
    sys.stdout.flush()
    subprocess.run(["bin/hello"], check=True)
"#;

/// The `#!` script; its interpreter is the tree's own copy of dash.
fn hello_script(t: &Path) -> String {
    format!(
        "#!{}/bin/sh\n\
         read line < data/a\n\
         echo \"hashbang read $line\"\n\
         [ -r data/b ] && echo \"hashbang data/b readable\"\n\
         for f in data/*; do echo \"hashbang glob $f\"; done\n\
         [ -e data/missing ] || echo \"hashbang data/missing absent\"\n\
         env | sort | sed 's/^/env hashbang /'\n",
        t.display()
    )
}

/// Files to exec, each with its permission bits.
const EXECS: &[(&str, u32)] = &[
    ("bin/ok", 0o755),
    ("bin/noexec", 0o644),
    ("bin/noread", 0o111),
    ("bin/noread_script", 0o111),
    ("bin/none", 0o000),
    ("bin/bad_interp", 0o755),
    ("bin/hello", 0o755),
];

fn build_tree(t: &Path) {
    fs::create_dir_all(t.join("data")).unwrap();
    fs::create_dir_all(t.join("bin/dir")).unwrap();
    fs::create_dir_all(t.join("scripts")).unwrap();
    fs::write(t.join("data/a"), b"alpha\n").unwrap();
    fs::write(t.join("data/b"), b"beta\n").unwrap();
    fs::copy("/bin/dash", t.join("bin/sh")).unwrap();
    let elf = fs::read("/usr/bin/true").unwrap();
    for (rel, mode) in EXECS {
        let p = t.join(rel);
        let bytes = match *rel {
            "bin/noread_script" => b"#!/bin/sh\necho noread-script ran\n".to_vec(),
            "bin/bad_interp" => format!("#!{}/bin/nonexistent\n", t.display()).into_bytes(),
            "bin/hello" => hello_script(t).into_bytes(),
            _ => elf.clone(),
        };
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    fs::write(t.join("scripts/procs.py"), PY).unwrap();
}

/// `FMCACHE_ATTACHED` of a process serving `cache` (its stage handed on).
fn attached(cache: &Cache) -> String {
    let bytes = fs::read(&cache.file).unwrap();
    let h = fmcache_format::read_header(&bytes).unwrap();
    let cfg = fmcache_core::config::Config::from_lookup(
        |k| match k {
            "FMCACHE_FILE" => Some(cache.file.clone().into_os_string()),
            "FMCACHE_STAGE_DIR" => Some(cache.stage.clone().into_os_string()),
            _ => None,
        },
        b"/",
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
    );
    fmcache_core::stage::attachment_value(&cfg, h.checksum)
}

/// The library's own variables, as a served child must see them.
fn lib_vars(cache: &Cache, stats: &Path) -> BTreeMap<String, String> {
    let l = lib().to_string_lossy().into_owned();
    [
        ("DLFM_OP", "read-cache".to_string()),
        ("LD_PRELOAD", l.clone()),
        ("LD_AUDIT", l),
        ("FMCACHE_FILE", cache.file.to_string_lossy().into_owned()),
        (
            "FMCACHE_STAGE_DIR",
            cache.stage.to_string_lossy().into_owned(),
        ),
        ("FMCACHE_STATS", stats.to_string_lossy().into_owned()),
        ("FMCACHE_ATTACHED", attached(cache)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

type Envs = BTreeMap<String, BTreeMap<String, String>>;

/// Splits an output into its non-environment lines and, per tag, the
/// environment lines (`env TAG K=V`, or `env K=V` under tag "").
fn split_env(out: &str, tagged: bool) -> (String, Envs) {
    let mut rest = String::new();
    let mut envs = Envs::new();
    for l in out.lines() {
        let Some(e) = l.strip_prefix("env ") else {
            rest.push_str(l);
            rest.push('\n');
            continue;
        };
        let (tag, kv) = if tagged {
            e.split_once(' ').unwrap_or((e, ""))
        } else {
            ("", e)
        };
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        envs.entry(tag.to_string())
            .or_default()
            .insert(k.to_string(), v.to_string());
    }
    (rest, envs)
}

/// Each served child's environment is its native one plus `extra`.
fn check_envs(native: &Envs, served: &Envs, extra: &BTreeMap<String, String>) {
    assert_eq!(
        native.keys().collect::<Vec<_>>(),
        served.keys().collect::<Vec<_>>(),
        "the same children reported their environment"
    );
    for (tag, n) in native {
        for k in extra.keys() {
            assert!(!n.contains_key(k), "sanity: native {tag} has no {k}");
        }
        let mut want = n.clone();
        want.extend(extra.clone());
        let got = &served[tag];
        let diff: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", got.get(k)))
            .chain(
                got.keys()
                    .filter(|k| !want.contains_key(*k))
                    .map(|k| format!("{k}: added")),
            )
            .collect();
        assert!(diff.is_empty(), "child {tag:?}'s environment: {diff:?}");
    }
}

/// One FMCACHE_STATS line.
#[derive(Debug)]
struct ProcStats {
    op: String,
    served: u64,
    exe: String,
}

fn stats_lines(p: &Path) -> Vec<ProcStats> {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.contains(" copy=auditor "))
        .map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_default()
                    .to_string()
            };
            ProcStats {
                op: field("op="),
                served: field("served=").parse().unwrap_or(0),
                exe: l.split_once(" exe=").map_or("", |x| x.1).to_string(),
            }
        })
        .collect()
}

#[test]
fn python_children_are_served_and_keep_their_environment() {
    let py = py_env();
    let fx = fixture!("proc_python");
    build_tree(&fx.tree);
    let cache = fx.cache("c");
    let run = || {
        Run::new(&py.python)
            .arg(fx.tree.join("scripts/procs.py"))
            .arg("main")
            .cwd(&fx.tree)
            .env("MY_OWN_VAR", "kept as is")
    };
    run().run().ok("warm-up");
    let native = run().run().ok("native");
    let pilot = run().record(&cache).run().ok("pilot");
    let stats = fx.out.join("serve.stats");
    let served = run().serve(&cache).stats(&stats).run().ok("served");

    let (n_rest, n_env) = split_env(&native.stdout_str(), true);
    let (p_rest, _) = split_env(&pilot.stdout_str(), true);
    let (s_rest, s_env) = split_env(&served.stdout_str(), true);
    assert_same(
        "pilot",
        "native",
        n_rest.as_bytes(),
        "pilot",
        p_rest.as_bytes(),
    );
    assert_same(
        "served",
        "native",
        n_rest.as_bytes(),
        "served",
        s_rest.as_bytes(),
    );
    assert_same("stderr", "native", &native.stderr, "served", &served.stderr);
    let tags: Vec<&str> = n_env.keys().map(|s| s.as_str()).collect();
    for want in [
        "main",
        "subprocess",
        "shell",
        "fork",
        "mp-fork",
        "mp-spawn",
        "mp-forkserver",
        "posix_spawn",
        "posix_spawn-noaudit",
        "hashbang",
    ] {
        assert!(tags.contains(&want), "{want} reported: {tags:?}");
    }
    for v in n_env.values() {
        assert_eq!(v.get("MY_OWN_VAR").map(|s| s.as_str()), Some("kept as is"));
    }
    check_envs(&n_env, &s_env, &lib_vars(&cache, &stats));

    let lines = stats_lines(&stats);
    eprintln!("served run: {} processes", lines.len());
    for l in &lines {
        eprintln!("  served={} exe={}", l.served, l.exe);
    }
    assert!(lines.iter().all(|l| l.op == "serve"), "{lines:?}");
    let pythons: Vec<&ProcStats> = lines.iter().filter(|l| l.exe.contains("python")).collect();
    // main, subprocess, shell's python, fork, 3 multiprocessing children,
    // the forkserver, 2 posix_spawn (and resource trackers).
    assert!(pythons.len() >= 10, "python processes: {lines:?}");
    assert!(
        pythons.iter().all(|l| l.served > 0),
        "every python process is served: {pythons:?}"
    );
    let sh = format!("{}/bin/sh", fx.tree.display());
    assert!(
        lines.iter().any(|l| l.exe == sh && l.served > 0),
        "the #! interpreter from the tree is served: {lines:?}"
    );
}

/// The C program, relative paths for its probes, and the tree.
fn spawn_run(fx: &Fixture, args: &[String]) -> Run {
    Run::new(fx.c_program("spawn")).args(args).cwd(&fx.tree)
}

#[test]
fn vfork_children_leave_the_parent_intact() {
    let fx = fixture!("proc_vfork");
    build_tree(&fx.tree);
    let cache = fx.cache("c");
    let files = ["data/a", "data/b", "data/missing"].map(|s| s.to_string());
    let args = |n: usize| {
        let mut v = vec!["vfork".to_string(), n.to_string()];
        v.extend(files.iter().cloned());
        v
    };
    spawn_run(&fx, &args(1)).run().ok("warm-up");
    // The pilot records the children too; a few are enough.
    spawn_run(&fx, &args(20)).record(&cache).run().ok("pilot");
    let native = spawn_run(&fx, &args(300)).run().ok("native");
    let stats = fx.out.join("serve.stats");
    let served = spawn_run(&fx, &args(300))
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served");
    let (n_rest, n_env) = split_env(&native.stdout_str(), false);
    let (s_rest, s_env) = split_env(&served.stdout_str(), false);
    assert!(
        n_rest.contains("vfork_execve n=300 parent intact"),
        "{n_rest}"
    );
    assert_same(
        "vfork",
        "native",
        n_rest.as_bytes(),
        "served",
        s_rest.as_bytes(),
    );
    assert_eq!(served.stderr_str(), "");
    assert_eq!(
        n_env[""].get("SPAWN_USER_VAR").map(|s| s.as_str()),
        Some("kept")
    );
    // The explicit envp lacked LD_AUDIT: the exec hook added it.
    check_envs(&n_env, &s_env, &lib_vars(&cache, &stats));
    let lines = stats_lines(&stats);
    assert_eq!(lines.len(), 301, "the parent and 300 children wrote stats");
    // The first child probes 3 paths (stat, open): 5 answers served.
    let served_counts: Vec<u64> = lines.iter().map(|l| l.served).collect();
    assert!(
        served_counts.contains(&5),
        "the probing child is served: {served_counts:?}"
    );
    assert!(
        lines.iter().all(|l| l.op == "serve"),
        "every child attached"
    );

    for mode in ["native", "served"] {
        let r = spawn_run(&fx, &["vfork_exit".into(), "2000".into()]);
        let r = if mode == "served" { r.serve(&cache) } else { r };
        let o = r.run().ok(mode);
        assert_eq!(
            o.stdout_str(),
            "vfork_exit n=2000 parent intact\n",
            "{mode}"
        );
    }
    // The check can fail: a child that writes the parent's heap is seen.
    let o = spawn_run(&fx, &["vfork_corrupt".into(), "1".into()])
        .serve(&cache)
        .run();
    assert!(
        !o.status.success() && o.stdout_str().starts_with("CORRUPT"),
        "{}",
        o.stdout_str()
    );
}

fn exec_paths(t: &Path) -> Vec<String> {
    let mut v: Vec<String> = EXECS
        .iter()
        .map(|(r, _)| t.join(r).to_string_lossy().into_owned())
        .collect();
    for r in ["bin/dir", "bin/missing", "data/a/x"] {
        v.push(t.join(r).to_string_lossy().into_owned());
    }
    v
}

/// exec of each file (fork+execve, vfork+execve, posix_spawn): native,
/// pilot and served print the same errno or exit status, and the same
/// stderr (a script its interpreter cannot read).
fn exec_matrix(fx: &Fixture, cache: &Cache, exec: &dyn Fn(Run) -> Out) -> Out {
    let mut args = vec!["exec".to_string()];
    args.extend(exec_paths(&fx.tree));
    let run = || spawn_run(fx, &args);
    exec(run()).ok("warm-up");
    let native = exec(run()).ok("native");
    let pilot = exec(run().record(cache)).ok("pilot");
    let served = exec(run().serve(cache)).ok("served");
    // bin/hello prints its environment: the library's variables differ.
    let rest = |o: &Out| split_env(&o.stdout_str(), true).0;
    assert_same(
        "pilot",
        "native",
        rest(&native).as_bytes(),
        "pilot",
        rest(&pilot).as_bytes(),
    );
    assert_same(
        "served",
        "native",
        rest(&native).as_bytes(),
        "served",
        rest(&served).as_bytes(),
    );
    assert_same("stderr", "native", &native.stderr, "served", &served.stderr);
    assert_same("stderr", "native", &native.stderr, "pilot", &pilot.stderr);
    native
}

fn line_for<'a>(out: &'a str, call: &str, rel: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(call) && l.contains(&format!("/{rel} -> ")))
        .unwrap_or_else(|| panic!("no {call} line for {rel}:\n{out}"))
}

#[test]
fn exec_errnos_as_root() {
    let fx = fixture!("proc_exec_root");
    build_tree(&fx.tree);
    let native = exec_matrix(&fx, &fx.cache("c"), &|r| r.run());
    let text = native.stdout_str();
    eprintln!("{text}");
    for (rel, want) in [
        ("bin/ok", "exit=0"),
        ("bin/noexec", "ERR EACCES"),
        ("bin/noread", "exit=0"),
        ("bin/noread_script", "exit=0"),
        ("bin/none", "ERR EACCES"),
        ("bin/bad_interp", "ERR ENOENT"),
        ("bin/dir", "ERR EACCES"),
        ("bin/missing", "ERR ENOENT"),
        ("data/a/x", "ERR ENOTDIR"),
    ] {
        for call in ["fork_execve", "vfork_execve", "posix_spawn"] {
            let l = line_for(&text, call, rel);
            assert!(l.ends_with(want), "root: want {want}: {l}");
        }
    }
}

#[test]
fn exec_errnos_as_an_unprivileged_user() {
    let ids: Ids = user::other();
    let fx = fixture!("proc_exec_user");
    chown(&fx.out, Some(ids.uid), Some(ids.gid)).unwrap();
    build_tree(&fx.tree);
    let native = exec_matrix(&fx, &fx.cache("c"), &|r| user::run_as(&r, ids));
    let text = native.stdout_str();
    eprintln!("{text}{}", native.stderr_str());
    for (rel, want) in [
        ("bin/ok", "exit=0"),
        ("bin/noexec", "ERR EACCES"),
        // The kernel maps an ELF it may not read (execute-only works).
        ("bin/noread", "exit=0"),
        // The interpreter cannot open the script: sh's error, status 2.
        ("bin/noread_script", "exit=2"),
        ("bin/none", "ERR EACCES"),
        ("data/a/x", "ERR ENOTDIR"),
    ] {
        for call in ["fork_execve", "vfork_execve", "posix_spawn"] {
            let l = line_for(&text, call, rel);
            assert!(l.ends_with(want), "user: want {want}: {l}");
        }
    }
    assert!(
        native.stderr_str().contains("Permission denied"),
        "sanity: sh cannot read the script: {}",
        native.stderr_str()
    );
}
