//! The stacks HPC users run (issue 13): an interpreter built the way Spack
//! builds it (a DT_RPATH naming every dependency's lib directory, 30 of
//! them), ten module directories on `LD_LIBRARY_PATH`, and a conda-like
//! environment (`$ORIGIN/../lib` DT_RPATH); numpy's and scipy's extension
//! modules carry auditwheel's DT_RPATH (`$ORIGIN/../numpy.libs`). For
//! `import numpy.fft, scipy.interpolate`: output as native, and under
//! read-cache (`fmcache run`) no call on the interpreter copy, the module
//! directories or the venv, by Python or ld.so, whether the pilot was
//! `fmcache record` or started directly.
//!
//! The interpreter copy is the pyenv prefix hard-linked (`cp -al`, its
//! base site-packages left out) with the binary copied and given its
//! DT_RPATH by `patchelf --force-rpath`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fmcache_tests::{assert_same, fixture, lib, py_env, tool, Fixture, Run};

const CODE: &str = "import numpy.fft, scipy.interpolate\n\
                    print(numpy.fft.fft([1.0, 2.0, 3.0]).real.sum(), scipy.interpolate.__name__)";

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `prefix`: a copy of the interpreter prefix whose binary has `rpath` as
/// its DT_RPATH (and no RUNPATH).
fn interpreter_copy(prefix: &Path, rpath: &str) -> PathBuf {
    let py = py_env();
    let lib = prefix.join("lib/python3.11");
    fs::create_dir_all(&lib).unwrap();
    fs::create_dir_all(prefix.join("bin")).unwrap();
    let src = py.prefix.join("lib/python3.11");
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "site-packages" {
            continue;
        }
        sh(Command::new("cp").arg("-al").arg(e.path()).arg(&lib));
    }
    for e in fs::read_dir(py.prefix.join("lib")).unwrap() {
        let e = e.unwrap();
        if e.file_name()
            .to_string_lossy()
            .starts_with("libpython3.11.so")
        {
            sh(Command::new("cp")
                .arg("-a")
                .arg(e.path())
                .arg(prefix.join("lib")));
        }
    }
    let bin = prefix.join("bin/python3.11");
    fs::copy(py.prefix.join("bin/python3.11"), &bin).unwrap();
    sh(Command::new("patchelf").args(["--remove-rpath"]).arg(&bin));
    sh(Command::new("patchelf")
        .args(["--force-rpath", "--set-rpath", rpath])
        .arg(&bin));
    let o = Command::new("readelf")
        .arg("-d")
        .arg(&bin)
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&o.stdout);
    assert!(
        d.contains("(RPATH)") && !d.contains("(RUNPATH)"),
        "sanity: {} has a DT_RPATH only:\n{d}",
        bin.display()
    );
    bin
}

fn site_packages() -> PathBuf {
    py_env().venv.join("lib/python3.11/site-packages")
}

/// Records with `fmcache record` and with a direct start, serves each
/// with `fmcache run` under strace: output as native, no call on `roots`.
fn check_stack(fx: &Fixture, what: &str, python: &Path, env: &[(&str, String)], roots: &[&Path]) {
    let base = || {
        let mut r = Run::new(python)
            .args(["-c", CODE])
            .env("PYTHONPATH", site_packages())
            .cwd(&fx.out);
        for (k, v) in env {
            r = r.env(k, v);
        }
        r
    };
    let native_dir = fx.trace_dir(&format!("{what}-native"));
    let (native, nt) = base().native().run_traced_flat(&native_dir, roots);
    let native = native.ok("native");
    let stage = fx.out.join(format!("{what}.stage"));
    for pilot in ["record", "direct"] {
        let cache = fx.out.join(format!("{what}-{pilot}.dat"));
        let _ = fs::remove_file(&cache);
        let tool_run = |verb: &str| {
            let mut r = Run::new(tool())
                .arg(verb)
                .arg("--cache")
                .arg(&cache)
                .arg("--")
                .arg(python)
                .args(["-c", CODE])
                .env("PYTHONPATH", site_packages())
                .env("FMCACHE_STAGE_DIR", &stage)
                .cwd(&fx.out);
            for (k, v) in env {
                r = r.env(k, v);
            }
            r
        };
        if pilot == "record" {
            tool_run("record").run().ok("fmcache record");
        } else {
            base()
                .env("LD_PRELOAD", lib())
                .env("DLFM_OP", "write-cache")
                .env("FMCACHE_FILE", &cache)
                .env("FMCACHE_STAGE_DIR", &stage)
                .run()
                .ok("direct pilot");
        }
        let dir = fx.trace_dir(&format!("{what}-{pilot}"));
        let (served, st) = tool_run("run").run_traced_flat(&dir, roots);
        let served = served.ok("fmcache run");
        eprintln!(
            "{what}, pilot by {pilot}: calls on the trees: native {}, fmcache run {}",
            nt.on_roots, st.on_roots
        );
        assert_same(what, "native", &native.stdout, "served", &served.stdout);
        assert_eq!(
            st.on_roots,
            0,
            "{what}, pilot by {pilot}: calls on the trees under fmcache run:\n{}",
            st.first_calls(30)
        );
    }
}

/// Spack's shape: 30 DT_RPATH directories on the interpreter, ten module
/// directories on `LD_LIBRARY_PATH`.
#[test]
fn spack_like_interpreter_with_30_rpath_directories() {
    let fx = fixture!("stack_spack");
    let root = fx.tree.join("spack/opt");
    let mut dirs: Vec<String> = (0..29)
        .map(|i| {
            let d = root.join(format!("dep{i:02}-abcdef/lib"));
            fs::create_dir_all(&d).unwrap();
            d.display().to_string()
        })
        .collect();
    let prefix = root.join("python-3.11.7-xyz");
    dirs.push(prefix.join("lib").display().to_string());
    let python = interpreter_copy(&prefix, &dirs.join(":"));
    let modules: Vec<String> = (0..10)
        .map(|i| {
            let d = fx.tree.join(format!("modules/m{i}/lib"));
            fs::create_dir_all(&d).unwrap();
            d.display().to_string()
        })
        .collect();
    let env = [("LD_LIBRARY_PATH", modules.join(":"))];
    let py = py_env();
    let trees: Vec<PathBuf> = std::iter::once(prefix.clone())
        .chain((0..29).map(|i| root.join(format!("dep{i:02}-abcdef"))))
        .chain((0..10).map(|i| fx.tree.join(format!("modules/m{i}"))))
        .chain([py.venv.clone()])
        .collect();
    let roots: Vec<&Path> = trees.iter().map(|p| p.as_path()).collect();
    check_stack(&fx, "spack", &python, &env, &roots);
}

/// conda's shape: `$ORIGIN/../lib` DT_RPATH on the interpreter.
#[test]
fn conda_like_environment_with_origin_rpath() {
    let fx = fixture!("stack_conda");
    let prefix = fx.tree.join("envs/work");
    let python = interpreter_copy(&prefix, "$ORIGIN/../lib");
    let py = py_env();
    let roots = [prefix.as_path(), py.venv.as_path()];
    check_stack(&fx, "conda", &python, &[], &roots);
}
