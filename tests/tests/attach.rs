//! Outside a job, one read of the cache per node while it stays the same
//! file: the two copies of the library in a process attach once between
//! them (the auditor reads the cache's identity and hands the stage to the
//! preload copy); every process the attached one starts (shell pipelines,
//! Python subprocesses, posix_spawn) inherits the attachment through
//! `FMCACHE_ATTACHED` and maps the stage with no request for the cache;
//! a later process tree stats the cache, and when it is the very file an
//! earlier tree read (the `seen` pointer) maps that stage without opening
//! it. A stage gone or not matching, or a cache changed in any way, sends
//! a process back to the cache; an inherited value for another cache or
//! stage base is not used.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use fmcache_tests::{fixture, lib, py_env, Cache, Run};

/// Calls naming the cache file in one traced run, by process id: the
/// metadata requests (open, stat; a close asks no server) and the reads
/// of it.
#[derive(Debug, Default)]
struct Calls {
    meta: BTreeMap<u32, Vec<String>>,
    reads: usize,
}

impl Calls {
    fn meta_total(&self) -> usize {
        self.meta.values().map(Vec::len).sum()
    }
    fn opens(&self) -> usize {
        self.meta
            .values()
            .flatten()
            .filter(|l| l.contains("open"))
            .count()
    }
}

fn cache_calls(cache: &Cache, trace: &Path) -> Calls {
    let text = fs::read_to_string(trace).unwrap();
    let name = cache.file.display().to_string();
    let mut c = Calls::default();
    for line in text
        .lines()
        .filter(|l| l.contains(&name) && !l.contains(".rec"))
    {
        let mut w = line.split_whitespace();
        let pid: u32 = w.next().unwrap_or("0").parse().unwrap_or(0);
        let call = w.next().unwrap_or("").split('(').next().unwrap_or("");
        if matches!(call, "read" | "pread64" | "mmap") {
            c.reads += 1;
        } else if call != "close" {
            c.meta.entry(pid).or_default().push(line.to_string());
        }
    }
    c
}

/// `argv` under read-cache (a direct start: LD_PRELOAD alone), outside
/// any job, with `env` added, traced with `strace -f -y`: its stdout and
/// the calls naming the cache.
fn served(cache: &Cache, argv: &[&str], env: &[(&str, &str)], trace: &Path) -> (String, Calls) {
    let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    let out = fmcache_tests::served_output(cache, "%file,%desc,mmap", &argv, env, trace);
    (out, cache_calls(cache, trace))
}

/// The value a served process hands its children.
fn handed_value(cache: &Cache, trace: &Path) -> String {
    let (v, _) = served(
        cache,
        &["/bin/sh", "-c", "printf %s \"$FMCACHE_ATTACHED\""],
        &[],
        trace,
    );
    assert_eq!(v.len(), 33, "FMCACHE_ATTACHED={v:?}");
    v
}

fn stage_dirs(cache: &Cache) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&cache.stage)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().len() == 16 && e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Setup {
    fx: fmcache_tests::Fixture,
    cache: Cache,
    file: std::path::PathBuf,
    python: String,
}

fn setup(name: &str) -> Setup {
    let fx = fixture!(name);
    let file = fx.tree.join("data.txt");
    fs::write(&file, "version 1\n").unwrap();
    let cache = fx.cache("c");
    let python = py_env().python.display().to_string();
    let f = file.display().to_string();
    Run::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "/bin/cat {f} | /bin/cat; {python} -c 'import subprocess; subprocess.run([\"/bin/cat\", \"{f}\"])'"
        ))
        .record(&cache)
        .run()
        .ok("pilot");
    Setup {
        fx,
        cache,
        file,
        python,
    }
}

#[test]
fn a_process_outside_a_job_reads_the_cache_once_for_both_copies() {
    let s = setup("attach_once");
    let f = s.file.display().to_string();
    // The first process stages; then every root process outside a job.
    for n in 0..3 {
        let (out, calls) = served(
            &s.cache,
            &["/bin/cat", &f],
            &[],
            &s.fx.out.join(format!("t{n}")),
        );
        assert_eq!(out, "version 1\n");
        eprintln!("root process {n}: {:#?}", calls.meta);
        assert_eq!(calls.meta.len(), 1, "one process: {:#?}", calls.meta);
        if n == 0 {
            // One open and one fstat of the cache, one header read: by
            // the auditor copy; the preload copy takes its stage (before:
            // two of each, one per copy).
            assert_eq!(calls.opens(), 1, "{:#?}", calls.meta);
            assert!(calls.meta_total() <= 2, "{:#?}", calls.meta);
        } else {
            // Later trees: one stat, which shows the file the first read.
            assert_eq!(calls.opens(), 0, "{:#?}", calls.meta);
            assert_eq!(calls.meta_total(), 1, "{:#?}", calls.meta);
            assert_eq!(calls.reads, 0, "{:#?}", calls.meta);
        }
    }
    // Any change to the cache file sends the next tree back to it: its
    // ctime moves even when nothing else does (touch with the same times).
    let st = fs::metadata(&s.cache.file).unwrap();
    let same = fs::FileTimes::new()
        .set_accessed(st.accessed().unwrap())
        .set_modified(st.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(&s.cache.file)
        .unwrap()
        .set_times(same)
        .unwrap();
    let (out, calls) = served(&s.cache, &["/bin/cat", &f], &[], &s.fx.out.join("touched"));
    assert_eq!(out, "version 1\n");
    assert_eq!(calls.opens(), 1, "after a change: {:#?}", calls.meta);
}

#[test]
fn children_of_an_attached_process_make_no_request_for_the_cache() {
    let s = setup("attach_children");
    let f = s.file.display().to_string();
    let py = &s.python;
    let trees: [(&str, Vec<String>); 4] = [
        (
            "shell pipeline",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("/bin/cat {f} | /bin/cat; /bin/cat {f}"),
            ],
        ),
        (
            "python subprocess",
            vec![
                py.clone(),
                "-c".into(),
                format!("import subprocess; subprocess.run(['/bin/cat', '{f}'], check=True)"),
            ],
        ),
        (
            // An explicit environment without the variable: the exec hook
            // puts it in.
            "python subprocess, explicit env",
            vec![
                py.clone(),
                "-c".into(),
                format!(
                    "import os, subprocess; e = dict(os.environ); e.pop('FMCACHE_ATTACHED', None); \
                     subprocess.run(['/bin/cat', '{f}'], env=e, check=True)"
                ),
            ],
        ),
        (
            "posix_spawn",
            vec![
                py.clone(),
                "-c".into(),
                format!(
                    "import os; e = dict(os.environ); e.pop('FMCACHE_ATTACHED', None); \
                     os.waitpid(os.posix_spawn('/bin/cat', ['cat', '{f}'], e), 0)"
                ),
            ],
        ),
    ];
    // Staged by a first process.
    served(&s.cache, &["/bin/true"], &[], &s.fx.out.join("first"));
    for (i, (what, argv)) in trees.iter().enumerate() {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (out, calls) = served(&s.cache, &argv, &[], &s.fx.out.join(format!("tree{i}")));
        let native = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        assert_eq!(out.as_bytes(), native.stdout, "{what}");
        eprintln!("{what}: {:#?}", calls.meta);
        // The root alone asks about the cache (a stat: the first process
        // read it); its children and grandchildren nothing at all.
        assert_eq!(calls.meta.len(), 1, "{what}: {:#?}", calls.meta);
        assert_eq!(calls.meta_total(), 1, "{what}: {:#?}", calls.meta);
        assert_eq!(calls.opens(), 0, "{what}: {:#?}", calls.meta);
    }
    // A child given the attachment asks nothing either.
    let v = handed_value(&s.cache, &s.fx.out.join("value"));
    let (out, calls) = served(
        &s.cache,
        &["/bin/cat", &f],
        &[("FMCACHE_ATTACHED", &v)],
        &s.fx.out.join("child"),
    );
    assert_eq!(out, "version 1\n");
    assert!(
        calls.meta.is_empty() && calls.reads == 0,
        "{:#?}",
        calls.meta
    );
}

#[test]
fn a_stage_gone_or_replaced_sends_the_child_to_the_cache() {
    let s = setup("attach_fallback");
    let f = s.file.display().to_string();
    let cat = ["/bin/cat", f.as_str()];
    let v1 = handed_value(&s.cache, &s.fx.out.join("v1"));
    let mut n = 0;
    let mut run = |env: &[(&str, &str)]| {
        n += 1;
        served(&s.cache, &cat, env, &s.fx.out.join(format!("t{n}")))
    };
    let pilot = |content: &str, cache: &Cache| {
        fs::write(&s.file, content).unwrap();
        let _ = fs::remove_file(&cache.file);
        Run::new("/bin/cat")
            .arg(&s.file)
            .record(cache)
            .run()
            .ok("pilot");
    };

    // Re-recorded by a pilot on this node while the tree runs (`fmcache
    // record`, or a merge that rewrites the cache): the old stage is
    // marked replaced, and the tree's next process reads the new cache
    // (as a job's does once the merge dropped its pointer).
    fs::write(&s.file, "version 2, longer\n").unwrap();
    let mut rec = Command::new(fmcache_tests::tool());
    for k in fmcache_tests::scrubbed() {
        rec.env_remove(k);
    }
    let o = rec
        .env("FMCACHE_LIB", lib())
        .env("FMCACHE_STAGE_DIR", &s.cache.stage)
        .arg("record")
        .arg("--cache")
        .arg(&s.cache.file)
        .arg("--include")
        .arg(&s.fx.tree)
        .args(["--", "/bin/cat"])
        .arg(&s.file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        s.cache.stage.join(&v1[..16]).join("replaced").exists(),
        "the old stage is marked"
    );
    let (out, calls) = run(&[("FMCACHE_ATTACHED", &v1)]);
    assert_eq!(out, "version 2, longer\n");
    assert_eq!(calls.opens(), 1, "{:#?}", calls.meta);
    let v2 = handed_value(&s.cache, &s.fx.out.join("v2"));
    assert_ne!(v1, v2);

    // Replaced any other way (recorded elsewhere, moved in): the tree
    // keeps the version its root attached, with no request for the cache.
    let elsewhere = s.fx.cache("elsewhere");
    pilot("version 3, longer still\n", &elsewhere);
    fs::rename(&elsewhere.file, &s.cache.file).unwrap();
    let (out, calls) = run(&[("FMCACHE_ATTACHED", &v2)]);
    assert_eq!(out, "version 2, longer\n", "the tree keeps its version");
    assert!(calls.meta.is_empty(), "{:#?}", calls.meta);
    // `fmcache verify` run inside that tree says so.
    let verify = |attached: Option<&str>| {
        let mut c = Command::new(fmcache_tests::tool());
        for k in fmcache_tests::scrubbed().chain(fmcache_core::config::JOB_VARS) {
            c.env_remove(k);
        }
        c.env("FMCACHE_STAGE_DIR", &s.cache.stage);
        if let Some(v) = attached {
            c.env("FMCACHE_ATTACHED", v);
        }
        c.arg("verify").arg(&s.cache.file).output().unwrap()
    };
    let o = verify(Some(&v2));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("this process tree serves another version"),
        "{text}"
    );
    let o = verify(None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Its stage removed (`fmcache stage --clean`, a prune): the child
    // reads the cache, as natively.
    let old = stage_dirs(&s.cache);
    assert!(old.contains(&v2[..16].to_string()), "{old:?}");
    for d in &old {
        fs::remove_dir_all(s.cache.stage.join(d)).unwrap();
    }
    let (out, calls) = run(&[("FMCACHE_ATTACHED", &v2)]);
    assert_eq!(out, "version 3, longer still\n");
    assert_eq!(calls.opens(), 1, "{:#?}", calls.meta);

    // A stage under the old name that holds another version (its index
    // carries the other checksum): not used.
    let now = stage_dirs(&s.cache);
    assert_eq!(now.len(), 1);
    let copy = Command::new("cp")
        .arg("-a")
        .arg(s.cache.stage.join(&now[0]))
        .arg(s.cache.stage.join(&v2[..16]))
        .status()
        .unwrap();
    assert!(copy.success());
    let (out, calls) = run(&[("FMCACHE_ATTACHED", &v2)]);
    assert_eq!(out, "version 3, longer still\n");
    // Refused: it asked about the cache itself (a stat: the previous
    // tree read this very file).
    assert!(!calls.meta.is_empty(), "{:#?}", calls.meta);

    // Within a job, the job's pointer decides: the inherited value is not
    // used (the first process of the job reads the cache).
    let v3 = handed_value(&s.cache, &s.fx.out.join("v3"));
    let (out, calls) = run(&[("FMCACHE_ATTACHED", &v3), ("SLURM_JOB_ID", "77")]);
    assert_eq!(out, "version 3, longer still\n");
    assert!(calls.opens() >= 1, "{:#?}", calls.meta);
}

#[test]
fn a_forged_inherited_value_is_refused() {
    let s = setup("attach_forged");
    let f = s.file.display().to_string();
    let cat = ["/bin/cat", f.as_str()];
    let v = handed_value(&s.cache, &s.fx.out.join("v"));
    let checksum = &v[..16];

    // Another stage base, private and ours, holding a copy of the stage:
    // a value made for it is not for this process's stage base.
    let other = s.fx.out.join("other");
    fs::create_dir(&other).unwrap();
    fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(s.cache.stage.join(checksum))
        .arg(other.join(checksum))
        .status()
        .unwrap()
        .success());
    let here = std::env::current_dir().unwrap();
    let lookup = |k: &str| -> Option<OsString> {
        match k {
            "FMCACHE_FILE" => Some(s.cache.file.clone().into_os_string()),
            "FMCACHE_STAGE_DIR" => Some(other.clone().into_os_string()),
            "DLFM_OP" => Some("read-cache".into()),
            _ => None,
        }
    };
    let cfg = fmcache_core::config::Config::from_lookup(
        lookup,
        here.as_os_str().as_bytes(),
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
    );
    let for_other =
        fmcache_core::stage::attachment_value(&cfg, u64::from_str_radix(checksum, 16).unwrap());
    assert_ne!(for_other, v);

    for (what, forged) in [
        ("for another stage base", for_other),
        ("a path", format!("{}/{checksum}", other.display())),
        ("climbing out", format!("../../../tmp/x:{}", &v[17..])),
        ("not hex", format!("{checksum}:zzzzzzzzzzzzzzzz")),
        (
            "a checksum with no stage",
            format!("0000000000000001:{}", &v[17..]),
        ),
    ] {
        let (out, calls) = served(
            &s.cache,
            &cat,
            &[("FMCACHE_ATTACHED", &forged)],
            &s.fx.out.join(format!("forged-{}", what.replace(' ', "-"))),
        );
        assert_eq!(out, "version 1\n", "{what}");
        // Refused: the process asked about the cache itself (a stat: an
        // earlier tree read this very file, `seen`).
        assert!(!calls.meta.is_empty(), "{what}: {:#?}", calls.meta);
    }
}

/// A pilot's merge that rewrites the cache in place (`DLFM_OP=write-cache`
/// meeting a path the cache lacks) marks the old version's stage too.
#[test]
fn a_merge_that_rewrites_the_cache_marks_the_old_stage() {
    let s = setup("attach_merge");
    let f = s.file.display().to_string();
    let v1 = handed_value(&s.cache, &s.fx.out.join("v1"));
    let more = s.fx.tree.join("more.txt");
    fs::write(&more, "more\n").unwrap();
    Run::new("/bin/cat")
        .arg(&more)
        .record(&s.cache)
        .run()
        .ok("pilot merging into the cache");
    assert!(
        s.cache.stage.join(&v1[..16]).join("replaced").exists(),
        "the old stage is marked"
    );
    let (out, calls) = served(
        &s.cache,
        &["/bin/cat", &f],
        &[("FMCACHE_ATTACHED", &v1)],
        &s.fx.out.join("child"),
    );
    assert_eq!(out, "version 1\n");
    assert_eq!(calls.opens(), 1, "{:#?}", calls.meta);
    assert_ne!(handed_value(&s.cache, &s.fx.out.join("v2")), v1);
}

/// Process trees started together outside a job (a workflow engine's
/// burst, the lab's N at once): one of them reads the cache, the others
/// wait for it on the node (`seen.<key>.lock`) and follow its pointer.
#[test]
fn trees_started_together_read_the_cache_once() {
    let s = setup("attach_together");
    let f = s.file.display().to_string();
    for round in 0..2 {
        // A fresh stage base each round: nobody has read the cache yet.
        for d in fs::read_dir(&s.cache.stage).into_iter().flatten().flatten() {
            let _ = fs::remove_dir_all(d.path()).or_else(|_| fs::remove_file(d.path()));
        }
        let calls: Vec<Calls> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (cache, f, out) = (&s.cache, &f, &s.fx.out);
                    sc.spawn(move || {
                        let (o, c) = served(
                            cache,
                            &["/bin/cat", f],
                            &[],
                            &out.join(format!("together-{round}-{i}")),
                        );
                        assert_eq!(o, "version 1\n");
                        c
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let opens: usize = calls.iter().map(Calls::opens).sum();
        eprintln!("round {round}: {calls:#?}");
        assert_eq!(opens, 1, "one reader among four trees: {calls:#?}");
    }
}
