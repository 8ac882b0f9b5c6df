//! The loader's own library search under LD_AUDIT (first step of the
//! shared-library work): with the library also named in LD_AUDIT, a pilot
//! records every candidate ld.so tries, and a served run skips known
//! misses and maps found libraries from the stage. Output must equal
//! native (`__file__` of an extension module included); the loader makes
//! no call on the venv or the interpreter prefix.

use fmcache_tests::{assert_same, fixture, lib, py_env, Run};

#[test]
fn numpy_scipy_loader_search_served_under_audit() {
    let py = py_env();
    let fx = fixture!("audit_numpy");
    let roots = [py.venv.as_path(), py.prefix.as_path()];
    let cache = fx.cache("c");
    // `__file__` of an extension module must be its original path.
    let code =
        "import numpy.fft; import scipy.interpolate; import numpy._core._multiarray_umath as m; \
                print(numpy.fft.fft([1, 2, 3]).real.sum(), m.__file__)";
    let run = Run::new(&py.python).args(["-c", code]).cwd(&fx.tree);
    let native = run.clone().native().run().ok("native");

    // Natively (without stacks: with -k the numpy case takes minutes),
    // ld.so and Python call on the venv and the prefix (a direct start
    // with LD_PRELOAD alone is audited too: tests/tests/direct.rs).
    let (_, plain) = run
        .clone()
        .native()
        .run_traced_flat(&fx.trace_dir("native"), &roots);

    run.clone()
        .record(&cache)
        .env("LD_AUDIT", lib())
        .run()
        .ok("pilot (audit)");
    let (served, st) = run
        .clone()
        .serve(&cache)
        .env("LD_AUDIT", lib())
        .run_traced(&fx.trace_dir("audit"), &roots);
    let served = served.ok("served (audit)");
    eprintln!(
        "calls on venv+prefix: native {} (ld.so and Python); with LD_AUDIT: ld.so {}, program {}",
        plain.on_roots, st.loader, st.program
    );
    assert_same("stdout", "native", &native.stdout, "served", &served.stdout);
    assert_same("stderr", "native", &native.stderr, "served", &served.stderr);
    assert_eq!(
        st.program,
        0,
        "program calls under audit:\n{}",
        st.first_calls(20)
    );
    assert!(
        plain.on_roots > 100,
        "sanity: native calls on the venv ({})",
        plain.on_roots
    );
    assert!(
        served
            .stdout_str()
            .contains(&format!("{}/", py.venv.display())),
        "__file__ names the venv: {}",
        served.stdout_str()
    );
    assert_eq!(
        st.loader, 0,
        "ld.so's search (numpy.libs, scipy.libs, hwcaps subdirectories, the auditor's own dependencies) on venv+prefix under LD_AUDIT: {} remain (native: {} calls in all)",
        st.loader, plain.on_roots
    );
}
