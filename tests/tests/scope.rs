//! The default scope: the software is served, the user's data passes
//! through (issue "Never wrong, never unsafe", cases 1, 5, 8, 9). Every
//! pilot here runs with the default scope (`FMCACHE_INCLUDE` empty, unlike
//! the fixtures' usual pilots, which name their tree); production runs
//! must print what native runs print after the user changed their data,
//! while the interpreter and the loader make no call on the venv or the
//! Python prefix.

use std::fs;
use std::path::Path;

use fmcache_tests::{assert_same, fixture, lib, py_env, tool, Run};

/// A run under the default scope, audited (the loader served too).
fn default_scope(run: Run) -> Run {
    run.env("FMCACHE_INCLUDE", "").env("LD_AUDIT", lib())
}

/// Runs `run` served under strace and checks: output as `native`, no
/// call on the venv or the prefix.
fn served_like_native(what: &str, run: &Run, native: &fmcache_tests::Out, trace: &Path) {
    let py = py_env();
    let roots = [py.venv.as_path(), py.prefix.as_path()];
    let (served, t) = run.run_traced_flat(trace, &roots);
    assert_same(
        &format!("{what}: stdout"),
        "native",
        &native.stdout,
        "served",
        &served.stdout,
    );
    assert_same(
        &format!("{what}: stderr"),
        "native",
        &native.stderr,
        "served",
        &served.stderr,
    );
    assert_eq!(served.status.code(), native.status.code(), "{what}: status");
    assert_eq!(
        t.on_roots,
        0,
        "{what}: {} calls on the venv/prefix under read-cache:\n{}",
        t.on_roots,
        t.first_calls(20)
    );
}

#[test]
fn users_data_passes_through_and_software_is_served() {
    let py = py_env();
    let fx = fixture!("scope_data");
    let cache = fx.cache("c");
    let job = &fx.tree;
    fs::write(job.join("params.txt"), "x=1\n").unwrap();
    fs::write(
        job.join("app.py"),
        "import json, csv, numpy.fft\n\
         import os\n\
         print(open('params.txt').read().strip())\n\
         print(sorted(os.listdir('.')))\n\
         print(os.stat('params.txt').st_size)\n",
    )
    .unwrap();
    let run = Run::new(&py.python).arg("app.py").cwd(job);
    default_scope(run.clone()).record(&cache).run().ok("pilot");

    // The user edits the input, adds a file, removes the script's
    // neighbour: the next run must see all of it.
    fs::write(job.join("params.txt"), "x=22\n").unwrap();
    fs::write(job.join("new.txt"), "new\n").unwrap();
    let native = run.clone().native().run().ok("native");
    assert!(native.stdout_str().contains("x=22"), "sanity");
    served_like_native(
        "edited input",
        &default_scope(run).serve(&cache),
        &native,
        &fx.trace_dir("served"),
    );

    // What `fmcache inspect` says: the venv and the prefix are roots, the
    // job directory is listed as left out.
    let o = Run::new(tool())
        .args(["inspect", "--json"])
        .arg(&cache.file)
        .run()
        .ok("inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let roots: Vec<&str> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    let has = |p: &Path| roots.iter().any(|r| Path::new(r) == p);
    assert!(
        has(&py.venv) && has(&py.prefix),
        "roots {roots:?} lack the venv or prefix"
    );
    assert!(
        !roots.iter().any(|r| job.starts_with(r)),
        "the job directory is served: {roots:?}"
    );
    let left: Vec<&str> = v["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["dir"].as_str())
        .collect();
    assert!(
        left.iter().any(|g| Path::new(g) == job.as_path()),
        "the job directory is not reported as left out: {left:?}"
    );
}

/// A shell script running Python steps that write files the next step
/// reads; the input is edited between the pilot and production.
#[test]
fn three_step_workflow() {
    let py = py_env();
    let fx = fixture!("scope_workflow");
    let cache = fx.cache("c");
    let job = &fx.tree;
    let python = py.python.display();
    fs::write(job.join("input.txt"), "3 4 5\n").unwrap();
    fs::write(
        job.join("step1.py"),
        "import json\nnums=[int(x) for x in open('input.txt').read().split()]\n\
         json.dump(nums, open('a.json','w'))\n",
    )
    .unwrap();
    fs::write(
        job.join("step2.py"),
        "import json, numpy\nnums=json.load(open('a.json'))\n\
         open('b.txt','w').write(str(int(numpy.sum(numpy.square(nums)))))\n",
    )
    .unwrap();
    fs::write(
        job.join("step3.py"),
        "import os, scipy.interpolate\nprint('sum of squares', open('b.txt').read())\n\
         print(sorted(os.listdir('.')))\n",
    )
    .unwrap();
    fs::write(
        job.join("run.sh"),
        format!(
            "set -e\nrm -f a.json b.txt\n{python} step1.py\n{python} step2.py\n{python} step3.py\n"
        ),
    )
    .unwrap();
    let run = Run::new("/bin/sh").arg("run.sh").cwd(job);
    default_scope(run.clone()).record(&cache).run().ok("pilot");
    fs::write(job.join("input.txt"), "6 7 8 9\n").unwrap();
    let native = run.clone().native().run().ok("native");
    assert!(native.stdout_str().contains("230"), "sanity: {native:?}");
    served_like_native(
        "workflow",
        &default_scope(run).serve(&cache),
        &native,
        &fx.trace_dir("served"),
    );
}

/// A script in a directory of the home created after the pilot (the
/// listing of the home is not served, case 9).
#[test]
fn script_in_a_directory_created_after_the_pilot() {
    let py = py_env();
    let fx = fixture!("scope_new_dir");
    let cache = fx.cache("c");
    let home = fx.tree.join("home");
    fs::create_dir_all(&home).unwrap();
    let pilot = Run::new(&py.python)
        .args([
            "-c",
            "import json, os; print(os.listdir(os.environ['HOME']))",
        ])
        .env("HOME", &home)
        .cwd(&home);
    default_scope(pilot).record(&cache).run().ok("pilot");
    fs::create_dir_all(home.join("proj")).unwrap();
    fs::write(
        home.join("proj/app.py"),
        "import json\nprint('hello from proj')\n",
    )
    .unwrap();
    let run = Run::new(&py.python)
        .arg(home.join("proj/app.py"))
        .env("HOME", &home)
        .cwd(&home);
    let native = run.clone().native().run().ok("native");
    served_like_native(
        "new directory",
        &default_scope(run).serve(&cache),
        &native,
        &fx.trace_dir("served"),
    );
}

/// `tempfile.TemporaryFile()` (O_TMPFILE) and a named temporary in the
/// directory that holds the venv (TMPDIR=$SCRATCH with the venv in it):
/// the venv is still served whole (case 8).
#[test]
fn temporary_files_beside_the_venv() {
    let py = py_env();
    let fx = fixture!("scope_tmpfile");
    let cache = fx.cache("c");
    let scratch = py.venv.parent().unwrap();
    let run = Run::new(&py.python)
        .args([
            "-c",
            "import tempfile, json\n\
             f = tempfile.TemporaryFile(); f.write(b'x'); f.seek(0); print(f.read())\n\
             with tempfile.NamedTemporaryFile() as g: g.write(b'y')\n\
             import email.parser, csv\nprint('ok')",
        ])
        .env("TMPDIR", scratch)
        .cwd(&fx.tree);
    default_scope(run.clone()).record(&cache).run().ok("pilot");
    let native = run.clone().native().run().ok("native");
    served_like_native(
        "TemporaryFile beside the venv",
        &default_scope(run).serve(&cache),
        &native,
        &fx.trace_dir("served"),
    );
}

/// Directories of the software that the pilot changed stay live (point
/// 6): the cache written into a `PYTHONPATH` directory (its listing and
/// times change with every recording), and a directory the program made
/// there that `FMCACHE_EXCLUDE` leaves out (the change is not served, its
/// directory's listing changed all the same). Removed before production,
/// as a user cleaning outputs would: the served listing must not show it.
/// The modules in that directory are still served.
#[test]
fn changed_directories_of_the_software_pass_through() {
    let py = py_env();
    let fx = fixture!("scope_changed_dirs");
    let sw = fx.tree.join("sw");
    fs::create_dir_all(&sw).unwrap();
    fs::write(sw.join("mod.py"), "VALUE = 7\n").unwrap();
    let cache = fmcache_tests::Cache {
        file: sw.join("fmcache.dat"),
        stage: fx.out.join("c.stage"),
    };
    let out = sw.join("out");
    let run = Run::new(&py.python)
        .args([
            "-c",
            "import os, sys, json\n\
             sw = sys.argv[1]\n\
             print(sorted(os.listdir(sw)))\n\
             print(os.path.isdir(os.path.join(sw, 'out')))\n\
             os.makedirs(os.path.join(sw, 'out'))\n\
             open(os.path.join(sw, 'out', 'r.txt'), 'w').write('r')\n\
             print(sorted(os.listdir(sw)))\n\
             import mod\n\
             print(mod.VALUE)",
        ])
        .arg(&sw)
        .env("PYTHONPATH", &sw)
        .env("FMCACHE_EXCLUDE", &out)
        .cwd(&fx.tree);
    for _ in 0..2 {
        let _ = fs::remove_dir_all(&out);
        default_scope(run.clone()).record(&cache).run().ok("pilot");
    }
    let _ = fs::remove_dir_all(&out);
    let native = run.clone().native().run().ok("native");
    assert!(
        native.stdout_str().contains("fmcache.dat") && native.stdout_str().contains("False"),
        "sanity: {native:?}"
    );
    let _ = fs::remove_dir_all(&out);
    let served = default_scope(run).serve(&cache);
    let (o, t) = served.run_traced_flat(&fx.trace_dir("served"), &[&sw.join("mod.py")]);
    assert_same(
        "changed directory: stdout",
        "native",
        &native.stdout,
        "served",
        &o.stdout,
    );
    assert_eq!(
        t.on_roots,
        0,
        "mod.py in the changed directory is not served:\n{}",
        t.first_calls(10)
    );
}

/// Kernel trees are excluded by their canonical path: `/etc/mtab` is a
/// symlink to `/proc/self/mounts`, `/var/run` one to `/run` (case 5), even
/// when the user names `/etc` and `/var` as software.
#[test]
fn kernel_trees_by_any_spelling() {
    let fx = fixture!("scope_proc");
    let cache = fx.cache("c");
    let pid_file = Path::new("/run").join(format!("fmcache-scope-{}.pid", std::process::id()));
    fs::write(&pid_file, "1\n").unwrap();
    let via_var = Path::new("/var/run").join(pid_file.file_name().unwrap());
    let script = format!(
        "cmp /etc/mtab /proc/self/mounts && echo mtab-live; cat {}",
        via_var.display()
    );
    let run = Run::new("/bin/sh")
        .args(["-c", &script])
        .env("FMCACHE_INCLUDE", "/etc:/var")
        .cwd(&fx.tree);
    run.clone().record(&cache).run().ok("pilot");
    fs::write(&pid_file, "2\n").unwrap();
    let served = run.clone().serve(&cache).run();
    let _ = fs::remove_file(&pid_file);
    let served = served.ok("served");
    assert_eq!(served.stdout_str(), "mtab-live\n2\n", "{served:?}");
}

/// pandas, matplotlib (which writes its font cache into the user's
/// MPLCONFIGDIR) and scikit-learn under the default scope: served whole.
#[test]
fn pandas_matplotlib_sklearn_are_served() {
    let py = py_env();
    let fx = fixture!("scope_libraries");
    let cache = fx.cache("c");
    let run = Run::new(&py.python)
        .args([
            "-c",
            "import pandas, matplotlib\nmatplotlib.use('Agg')\n\
             import matplotlib.pyplot as plt, sklearn.linear_model\n\
             df = pandas.DataFrame({'x': [1.0, 2.0, 3.0], 'y': [2.0, 4.0, 6.0]})\n\
             m = sklearn.linear_model.LinearRegression().fit(df[['x']], df.y)\n\
             fig = plt.figure(); plt.plot(df.x, df.y); fig.savefig('plot.png')\n\
             print(round(float(m.coef_[0]), 6), df.y.sum())",
        ])
        .env("MPLCONFIGDIR", fx.tree.join("mpl"))
        .cwd(&fx.tree);
    default_scope(run.clone()).record(&cache).run().ok("pilot");
    let native = run.clone().native().run().ok("native");
    assert_eq!(native.stdout_str(), "2.0 12.0\n", "sanity");
    served_like_native(
        "pandas, matplotlib, scikit-learn",
        &default_scope(run).serve(&cache),
        &native,
        &fx.trace_dir("served"),
    );
}
