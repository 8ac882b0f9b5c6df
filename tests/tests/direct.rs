//! Direct starts (issue 13 item 2): `DLFM_OP=... LD_PRELOAD=libfmcache.so
//! python ...` with no launcher and no `LD_AUDIT`. The preload copy
//! executes the program once more with the auditor; the pilot then
//! records the loader's searches and production serves them. What the
//! first image did before any fmcache code ran (the kernel's exec, ld.so's
//! search for the executable's own libraries) is the only remainder.

use std::fs;
use std::path::Path;

use fmcache_tests::{assert_same, fixture, py_env, Run};

const IMPORTS: &str = "import numpy.fft, scipy.interpolate, sys\n\
                       print(numpy.fft.fft([1.0, 2.0, 3.0]).real.sum(), sys.argv[1:])";

/// The strace lines of the process `pid_file` on `roots`, split at its
/// second `execve` (the re-exec): (before, after).
fn split_at_reexec(pid_file: &Path, roots: &[&Path]) -> (Vec<String>, Vec<String>, usize) {
    let text = fs::read_to_string(pid_file).unwrap();
    let roots: Vec<String> = roots.iter().map(|r| format!("\"{}", r.display())).collect();
    let (mut before, mut after, mut execs) = (Vec::new(), Vec::new(), 0);
    for line in text.lines() {
        let exec = line.starts_with("execve(") && line.ends_with("= 0");
        // The path a call looks up is its first string argument.
        let path = line.find('"').map_or("", |i| &line[i..]);
        if roots.iter().any(|r| path.starts_with(r.as_str())) {
            // The second exec's own path walk belongs to the first image.
            if execs >= 2 {
                after.push(line.to_string());
            } else {
                before.push(line.to_string());
            }
        }
        if exec {
            execs += 1;
        }
    }
    (before, after, execs)
}

/// The strace lines on `roots` of a run of one process (its threads
/// have files of their own, all started after the re-exec): split at the
/// process's second `execve`, and the number of `execve`s.
fn calls(dir: &Path, roots: &[&Path]) -> (Vec<String>, Vec<String>, usize) {
    let (mut before, mut after, mut execs) = (Vec::new(), Vec::new(), 0);
    for f in fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        let (b, a, e) = split_at_reexec(&f, roots);
        if e > 0 {
            assert_eq!(execs, 0, "two processes executed a program");
            (before, execs) = (b, e);
        } else {
            after.extend(b);
        }
        after.extend(a);
    }
    (before, after, execs)
}

/// Pilot and production both started directly: output as native; after
/// the re-exec neither Python nor ld.so makes a call on the venv or the
/// prefix; before it, only the exec and ld.so's search for the
/// interpreter's own libraries (listed in the README).
#[test]
fn direct_pilot_and_production_are_complete() {
    let py = py_env();
    let fx = fixture!("direct_numpy");
    let cache = fx.cache("c");
    let run = Run::new(&py.python)
        .args(["-c", IMPORTS, "x"])
        .env("FMCACHE_INCLUDE", "")
        .cwd(&fx.tree);
    run.clone().record(&cache).run().ok("direct pilot");
    let native = run.clone().native().run().ok("native");
    let roots = [py.venv.as_path(), py.prefix.as_path()];
    let ndir = fx.trace_dir("native");
    run.clone().native().run_traced_flat(&ndir, &roots);
    let (native_calls, native_rest, _) = calls(&ndir, &roots);

    let dir = fx.trace_dir("served");
    let (served, _) = run.serve(&cache).run_traced_flat(&dir, &roots);
    assert_same("stdout", "native", &native.stdout, "served", &served.stdout);
    assert_same("stderr", "native", &native.stderr, "served", &served.stderr);
    let (before, after, execs) = calls(&dir, &roots);
    eprintln!(
        "calls on the venv and prefix: native {}; direct start under read-cache: {} before \
         the re-exec, {} after",
        native_calls.len() + native_rest.len(),
        before.len(),
        after.len()
    );
    assert_eq!(
        execs, 2,
        "the program was not executed again with the auditor"
    );
    assert!(
        after.is_empty(),
        "calls on the trees after the re-exec:\n{}",
        after[..after.len().min(20)].join("\n")
    );
    // Before it: the kernel's exec and ld.so's search for the
    // executable's DT_NEEDED libraries in its RUNPATH (`<prefix>/lib` and
    // its hwcaps subdirectories), nothing by Python.
    let lib_dir = format!("\"{}/", py.prefix.join("lib").display());
    for l in &before {
        assert!(
            l.starts_with("execve(") || l.contains(&lib_dir),
            "a call before the re-exec that is not the exec or ld.so's search: {l}"
        );
    }
}

/// A `#!` script started directly: the re-exec gives the same `argv`,
/// the same process name and the same `AT_EXECFN` as natively.
#[test]
fn direct_script_keeps_argv_and_name() {
    let py = py_env();
    let fx = fixture!("direct_script");
    let cache = fx.cache("c");
    let script = fx.tree.join("app.py");
    fs::write(
        &script,
        format!(
            "#!{}\nimport sys, os, ctypes, json\n\
             libc = ctypes.CDLL(None); libc.getauxval.restype = ctypes.c_char_p\n\
             print(sys.argv, open('/proc/self/comm').read().strip(), libc.getauxval(31))\n",
            py.python.display()
        ),
    )
    .unwrap();
    let mut perm = fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&script, perm).unwrap();
    let run = Run::new("./app.py").args(["a", "b c"]).cwd(&fx.tree);
    run.clone().record(&cache).run().ok("pilot");
    let native = run.clone().native().run().ok("native");
    let dir = fx.trace_dir("served");
    let (served, _) = run.serve(&cache).run_traced_flat(&dir, &[]);
    assert_same("stdout", "native", &native.stdout, "served", &served.stdout);
    assert_eq!(calls(&dir, &[]).2, 2, "not executed again with the auditor");
}

/// `LD_AUDIT` already naming the library (one ld.so could not load
/// here): no second exec, so no loop; the program runs as natively.
#[test]
fn no_reexec_when_ld_audit_names_the_library() {
    let py = py_env();
    let fx = fixture!("direct_noloop");
    let cache = fx.cache("c");
    let run = Run::new(&py.python)
        .args(["-c", "print('ran')"])
        .cwd(&fx.tree);
    run.clone().record(&cache).run().ok("pilot");
    let dir = fx.trace_dir("served");
    let (served, _) = run
        .serve(&cache)
        .env("LD_AUDIT", "/nonexistent/libfmcache.so")
        .run_traced_flat(&dir, &[]);
    assert_eq!(served.stdout_str(), "ran\n");
    assert_eq!(
        calls(&dir, &[]).2,
        1,
        "executed again although LD_AUDIT names the library"
    );
}
