//! CPython in the venv from `tests/env/setup.sh`: a pilot run records,
//! then a served run prints exactly what a native run prints while the
//! interpreter itself makes no file-system call on the venv or on the
//! Python prefix (strace, calls attributed to the program; the dynamic
//! loader's own library search is counted apart and only reported).

use fmcache_tests::{assert_same, fixture, py_env, read_stats, Run};

/// Pilot, then native and served runs under strace. Returns the native
/// run's calls on the roots made by the interpreter (not ld.so).
fn check(name: &str, code: &str) -> u64 {
    let py = py_env();
    let fx = fixture!(name);
    let roots = [py.venv.as_path(), py.prefix.as_path()];
    let cache = fx.cache("c");
    let run = Run::new(&py.python).args(["-c", code]).cwd(&fx.tree);

    // Natively without stacks (with -k the numpy case takes minutes).
    let (native, nt) = run
        .clone()
        .native()
        .run_traced_flat(&fx.trace_dir("native"), &roots);
    let native = native.ok("native");
    run.clone().record(&cache).run().ok("pilot");
    assert!(cache.file.is_file(), "the pilot wrote no cache");
    let (served, st) = run
        .clone()
        .serve(&cache)
        .run_traced(&fx.trace_dir("served"), &roots);
    let served = served.ok("served");
    // A direct start: the served run's loader calls are ld.so's search for
    // the interpreter's own libraries before the re-exec (the rest is
    // served by the auditor), so this is an upper bound of the native
    // interpreter's share.
    let native_program = nt.on_roots.saturating_sub(st.loader);
    eprintln!(
        "{name}: native on_roots={} (program <= {native_program}) | served program={} loader={} \
         re-exec={} (total {})",
        nt.on_roots, st.program, st.loader, st.reexec, st.total
    );

    assert_same("stdout", "native", &native.stdout, "served", &served.stdout);
    assert_same("stderr", "native", &native.stderr, "served", &served.stderr);
    assert_eq!(
        st.program,
        0,
        "{name}: the served interpreter made {} calls on the venv/prefix:\n{}",
        st.program,
        st.first_calls(20)
    );
    native_program
}

#[test]
fn python_empty() {
    let n = check("py_empty", "");
    assert!(n > 0, "sanity: native python makes calls on its prefix");
}

#[test]
fn python_stdlib_imports() {
    let n = check("py_stdlib", "import json, email, asyncio");
    assert!(n > 0, "sanity: native imports make calls on the prefix");
}

#[test]
fn python_numpy_scipy() {
    let n = check(
        "py_numpy",
        "import numpy.fft; import scipy.interpolate; print(numpy.fft.fft([1,2,3]).real.sum())",
    );
    assert!(
        n > 100,
        "sanity: native numpy/scipy import makes > 100 calls, got {n}"
    );
}

/// `unstaged_libs` (the auditor's count of libraries ld.so loaded from
/// outside the stage and the system library directories while serving):
/// 0 when numpy and scipy are served from a cache their pilot recorded;
/// above 0 when the cache comes from a pilot that never imported them, so
/// ld.so loads their extension modules and libraries from the venv.
#[test]
fn python_unstaged_libs() {
    let py = py_env();
    let fx = fixture!("py_unstaged");
    let code = "import numpy.fft; import scipy.interpolate";
    let run = Run::new(&py.python).args(["-c", code]).cwd(&fx.tree);
    let (full, bare) = (fx.cache("full"), fx.cache("bare"));
    run.clone().record(&full).run().ok("pilot");
    Run::new(&py.python)
        .args(["-c", "pass"])
        .cwd(&fx.tree)
        .record(&bare)
        .run()
        .ok("pilot without numpy");
    let count = |cache, label: &str| {
        let stats = fx.out.join(format!("{label}.stats"));
        run.clone().serve(cache).stats(&stats).run().ok(label);
        read_stats(&stats)
    };
    let (served, unrecorded) = (count(&full, "served"), count(&bare, "unrecorded"));
    eprintln!(
        "unstaged_libs: served {} (served={} missed={}), from a cache without numpy {} \
         (served={} missed={})",
        served.unstaged_libs,
        served.served,
        served.missed,
        unrecorded.unstaged_libs,
        unrecorded.served,
        unrecorded.missed
    );
    assert_eq!(
        served.unstaged_libs, 0,
        "a served run loaded libraries from the venv"
    );
    assert!(
        unrecorded.unstaged_libs > 0,
        "libraries the cache never saw were loaded from the venv, yet none was counted"
    );
}
