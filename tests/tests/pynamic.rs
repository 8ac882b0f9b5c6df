//! Pynamic-style workloads (`bench/pynamic/pynamic.py`): many CPython
//! extension modules, each linked against every utility library through
//! RUNPATH `$ORIGIN/../lib`. For each named configuration: the driver's
//! stdout under read-cache (pilot and production both audited, LD_AUDIT)
//! equals the native one, and not one file-system call reaches the
//! generated tree, the loader's own library search included.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use fmcache_tests::{assert_same, fixture, lib, py_env, workspace, Run};

/// Builds `config` once into `<CARGO_TARGET_TMPDIR>/pynamic-<config>-<key>`,
/// keyed by the generator's source (which holds the configurations) and the
/// interpreter; the generator's own stamp makes a rerun a no-op. Returns
/// the build directory and (modules, utilities) as the stamp records them.
fn build(config: &str) -> (PathBuf, u64, u64) {
    // One build at a time: each already runs 2 compilers on 2 cores.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let py = py_env();
    let script = workspace().join("bench/pynamic/pynamic.py");
    let code = fs::read(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let mut h = DefaultHasher::new();
    code.hash(&mut h);
    py.python.hash(&mut h);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pynamic-{config}-{:016x}", h.finish()));
    // The generator is standard-library Python; the venv's interpreter is
    // also the target whose headers and suffix it asks for.
    let out = Command::new(&py.python)
        .arg(&script)
        .args(["build", "--config", config, "--jobs", "2", "--out"])
        .arg(&dir)
        .arg("--python")
        .arg(&py.python)
        .output()
        .expect("running pynamic.py");
    assert!(
        out.status.success(),
        "pynamic.py build --config {config}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim_end());
    let stamp: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("build.json")).expect("build.json"))
            .expect("build.json is JSON");
    let n = |k: &str| {
        stamp["params"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("build.json: params.{k}"))
    };
    (dir, n("modules"), n("utils"))
}

fn pynamic(config: &str) {
    let (tree, modules, utils) = build(config);
    let py = py_env();
    let fx = fixture!(&format!("pynamic_{config}"));
    let cache = fx.cache("c");
    let roots = [tree.as_path()];
    let run = Run::new(&py.python)
        .arg(tree.join("driver.py"))
        .cwd(&fx.out);

    // Warm-up: the first read after a build moves atime (relatime); later
    // runs, the pilot's recording among them, then see settled stats.
    run.clone().native().run().ok("native warm-up");
    let native = run.clone().native().run().ok("native");
    let (_, nt) = run
        .clone()
        .native()
        .run_traced_flat(&fx.trace_dir("native"), &roots);

    run.clone()
        .record(&cache)
        .env("LD_AUDIT", lib())
        .run()
        .ok("pilot (write-cache, LD_AUDIT)");
    let served = run
        .clone()
        .serve(&cache)
        .env("LD_AUDIT", lib())
        .run()
        .ok("read-cache, LD_AUDIT");
    let (traced, st) = run
        .clone()
        .serve(&cache)
        .env("LD_AUDIT", lib())
        .run_traced_flat(&fx.trace_dir("served"), &roots);
    let traced = traced.ok("read-cache under strace");

    eprintln!(
        "pynamic {config}: file-system calls on the tree (loader's included): \
         native {}, read-cache {}",
        nt.on_roots, st.on_roots
    );
    assert_same(
        "stdout",
        "native",
        &native.stdout,
        "read-cache",
        &served.stdout,
    );
    assert_same(
        "stdout",
        "native",
        &native.stdout,
        "read-cache (strace)",
        &traced.stdout,
    );
    // Sanity, so the zero below means something: natively Python stats
    // and opens each module and ld.so opens it and every utility.
    assert!(
        nt.on_roots >= 2 * modules + utils,
        "sanity: natively only {} calls on {} ({modules} modules, {utils} utilities)",
        nt.on_roots,
        tree.display()
    );
    assert_eq!(
        st.on_roots,
        0,
        "calls on the generated tree under read-cache:\n{}",
        st.first_calls(40)
    );
}

#[test]
fn pynamic_dlfm() {
    pynamic("dlfm");
}

#[test]
fn pynamic_spindle() {
    pynamic("spindle");
}
