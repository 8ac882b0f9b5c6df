//! The dynamic loader's library search served under LD_AUDIT, on C and
//! C++ programs built here (`tests/c/libs/`) into the fixture's tree:
//! DT_NEEDED chains through RUNPATH, `$ORIGIN` dlopen of a bare name,
//! symlinked sonames, missing libraries, C++ exceptions across libraries,
//! one constructor run per library, an LD_LIBRARY_PATH probe storm, the
//! paths a program can see, and caches the auditor must refuse.
//!
//! Each case runs natively, records a pilot (write-cache + LD_AUDIT) and is
//! served (read-cache + LD_AUDIT) under `strace -k`: output and exit status
//! must equal native, and neither ld.so (searching for the program's
//! libraries) nor the program may look up a single path on the tree. The
//! native run is traced too, so each case shows that ld.so really searches
//! the tree without the cache. ld.so's search for the auditor's own
//! dependencies, which happens before any auditing, is asserted apart.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use fmcache_tests::{assert_same, fixture, lib, tool, workspace, Cache, Fixture, Out, Run};

/// Every executable's RUNPATH: a missing directory first, so the search
/// has misses to skip.
const EXE_RUNPATH: &str = "-Wl,-rpath,$ORIGIN/../nolib:$ORIGIN/../lib";

/// The second build of the tree: every `-rpath` becomes a DT_RPATH
/// (Spack's, conda-build's and auditwheel's default), searched through
/// ld.so's loader chain, instead of a DT_RUNPATH.
const RPATH_TREE: &str = "libs_rpath_tree";

/// Runs gcc/g++ in `tree` (so relative -L and -o name tree paths).
fn cc(tree: &Path, compiler: &str, args: &[&str]) {
    let src = workspace().join("tests/c/libs");
    let dtags = if tree.parent().and_then(|p| p.file_name()) == Some(RPATH_TREE.as_ref()) {
        "-Wl,--disable-new-dtags"
    } else {
        "-Wl,--enable-new-dtags"
    };
    let out = Command::new(compiler)
        .current_dir(tree)
        .args(["-O1", "-Wall", "-D_GNU_SOURCE", dtags])
        .arg(format!("-I{}", src.display()))
        .args(args.iter().map(|a| match a.strip_prefix("src:") {
            Some(f) => src.join(f).into_os_string(),
            None => OsString::from(a),
        }))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One library from `node.c` named `name` (prints "ctor NAME TAG").
fn node(tree: &Path, out: &str, name: &str, extra: &[&str]) {
    let n = format!("-DNAME={name}");
    let mut a = vec!["-fPIC", "-shared", "-o", out, "src:node.c", &n];
    a.extend_from_slice(extra);
    cc(tree, "gcc", &a);
}

/// Builds every library and program into `tree` (layout in tests/c/README.md).
fn build(tree: &Path) {
    for d in ["bin", "lib/chain", "lib/c2", "lib/sub"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    for i in 0..10 {
        fs::create_dir_all(tree.join(format!("empty/e{i}"))).unwrap();
    }
    let c2 = tree.join("lib/c2");
    let c2_rpath = format!("-Wl,-rpath,{}", c2.display());
    let nas = "-Wl,--no-as-needed";
    node(tree, "lib/c2/libc_chain.so", "c_chain", &[]);
    node(
        tree,
        "lib/chain/libb.so",
        "b",
        &["-DNEXT=c_chain", nas, "-Llib/c2", "-lc_chain", &c2_rpath],
    );
    node(
        tree,
        "lib/liba.so",
        "a",
        &[
            "-DNEXT=b",
            nas,
            "-Llib/chain",
            "-lb",
            "-Wl,-rpath,$ORIGIN/chain",
        ],
    );
    node(tree, "lib/sub/libplugin.so", "plugin", &[]);
    cc(
        tree,
        "gcc",
        &[
            "-fPIC",
            "-shared",
            "-o",
            "lib/libhost.so",
            "src:host.c",
            "-Wl,-rpath,$ORIGIN/sub",
        ],
    );
    node(tree, "lib/libx.so.1.2.3", "x", &["-Wl,-soname,libx.so.1"]);
    symlink("libx.so.1.2.3", tree.join("lib/libx.so.1")).unwrap();
    symlink("libx.so.1", tree.join("lib/libx.so")).unwrap();
    node(tree, "lib/libgone.so", "gone", &[]);
    node(
        tree,
        "lib/libneedsgone.so",
        "needsgone",
        &["-DNEXT=gone", nas, "-Llib", "-lgone", "-Wl,-rpath,$ORIGIN"],
    );
    node(tree, "lib/libonce.so", "once", &[]);
    cc(
        tree,
        "gcc",
        &["-fPIC", "-shared", "-o", "lib/libunres.so", "src:unres.c"],
    );
    cc(
        tree,
        "g++",
        &["-fPIC", "-shared", "-o", "lib/libthrow.so", "src:throw.cpp"],
    );
    cc(
        tree,
        "g++",
        &[
            "-fPIC",
            "-shared",
            "-o",
            "lib/libcatch.so",
            "src:catch.cpp",
            nas,
            "-Llib",
            "-lthrow",
            "-Wl,-rpath,$ORIGIN",
        ],
    );
    let link = "-Wl,-rpath-link,lib/chain:lib/c2";
    for (exe, compiler, libs) in [
        ("chain", "gcc", &["-la"][..]),
        ("dlhost", "gcc", &["-lhost"]),
        ("symlinks", "gcc", &["-lx"]),
        ("missing", "gcc", &[]),
        ("needsgone", "gcc", &["-lgone"]),
        ("once", "gcc", &[]),
        ("paths", "gcc", &["-la"]),
        ("cxx", "g++", &["-lthrow", "-lcatch"]),
    ] {
        let o = format!("bin/{exe}");
        let s = format!("src:{exe}.{}", if compiler == "g++" { "cpp" } else { "c" });
        let mut a = vec!["-o", &o, &s, nas, "-Llib", link, EXE_RUNPATH];
        a.extend_from_slice(libs);
        cc(tree, compiler, &a);
    }
    // No RUNPATH at all: its libraries come from LD_LIBRARY_PATH alone.
    cc(
        tree,
        "gcc",
        &[
            "-o",
            "bin/chain_nr",
            "src:chain.c",
            nas,
            "-Llib",
            link,
            "-la",
        ],
    );
    // needsgone and libneedsgone.so were linked against it; now it is gone.
    fs::remove_file(tree.join("lib/libgone.so")).unwrap();
}

/// The tree every case shares, built once per test binary.
fn shared() -> &'static Fixture {
    static T: OnceLock<Fixture> = OnceLock::new();
    T.get_or_init(|| {
        let fx = fixture!("libs_tree");
        build(&fx.tree);
        fx
    })
}

/// The same tree built with DT_RPATH everywhere.
fn shared_rpath() -> &'static Fixture {
    static T: OnceLock<Fixture> = OnceLock::new();
    T.get_or_init(|| {
        let fx = fixture!(RPATH_TREE);
        build(&fx.tree);
        fx
    })
}

/// Runs `exe` (a program in `tree/bin`) with `args` from the directory
/// holding `tree` (a job directory beside the software: the tree is served
/// because its programs and libraries run from it, not because it is named).
fn program(tree: &Path, exe: &str, args: &[OsString], env: &[(&str, OsString)]) -> Run {
    let job = tree.parent().unwrap_or(tree);
    let mut r = Run::new(tree.join("bin").join(exe)).args(args).cwd(job);
    for (k, v) in env {
        r = r.env(k, v);
    }
    r
}

/// The pilot and the served run also load the library as an auditor.
fn audited(r: Run) -> Run {
    r.env("LD_AUDIT", lib())
}

struct Case {
    name: &'static str,
    exe: &'static str,
    /// Arguments; `@` is replaced by the tree's path.
    args: &'static [&'static str],
    /// Colon-separated LD_LIBRARY_PATH entries (`@` = the tree), if any.
    ld_library_path: Option<&'static str>,
    /// The native exit code.
    status: i32,
    /// Lines the native stdout+stderr must hold (sanity of the build).
    must: &'static [&'static str],
}

const STORM: &str = "@/empty/e0:@/empty/e1:@/empty/e2:@/empty/e3:@/empty/e4:\
                     @/empty/e5:@/empty/e6:@/empty/e7:@/empty/e8:@/empty/e9:@/lib";

const CASES: &[Case] = &[
    Case {
        name: "chain",
        exe: "chain",
        args: &[],
        ld_library_path: None,
        status: 0,
        must: &[
            "ctor c_chain v1",
            "ctor b v1",
            "ctor a v1",
            "a_fn v1",
            "b_fn v1",
            "c_chain_fn v1",
        ],
    },
    Case {
        name: "origin_dlopen",
        exe: "dlhost",
        args: &[],
        ld_library_path: None,
        status: 0,
        must: &["ctor plugin v1", "plugin_fn v1"],
    },
    Case {
        name: "symlinks",
        exe: "symlinks",
        args: &[],
        ld_library_path: None,
        status: 0,
        must: &[
            "x_fn v1",
            "dlopen libx.so: same object as DT_NEEDED: yes",
            "x ctor runs: 1",
        ],
    },
    Case {
        name: "missing_dlopen",
        exe: "missing",
        args: &["@/lib/libnothere_abs.so", "@/nodir/libnothere.so"],
        ld_library_path: None,
        status: 0,
        must: &[
            "dlopen libnothere.so: libnothere.so: cannot open shared object file: No such file or directory",
            "dlopen libneedsgone.so: libgone.so: cannot open shared object file: No such file or directory",
        ],
    },
    Case {
        name: "missing_needed",
        exe: "needsgone",
        args: &[],
        ld_library_path: None,
        status: 127,
        must: &["error while loading shared libraries: libgone.so: cannot open shared object file: No such file or directory"],
    },
    Case {
        name: "cxx_exceptions",
        exe: "cxx",
        args: &[],
        ld_library_path: None,
        status: 0,
        must: &[
            "main caught MyErr code=7 what=thrown in libthrow",
            "main caught std::exception typeid=5MyErr what=thrown in libthrow",
            "libcatch caught MyErr code=9 what=thrown in libthrow",
            "libcatch returned MyErr",
        ],
    },
    Case {
        name: "ctor_once",
        exe: "once",
        args: &["@/lib/libonce.so", "@/lib/sub/../libonce.so", "@//lib/./libonce.so"],
        ld_library_path: None,
        status: 0,
        must: &[
            "spelling 1: same handle",
            "spelling 2: same handle",
            "spelling 3: same handle",
            "once ctor runs: 1",
        ],
    },
    Case {
        name: "ld_library_path_storm",
        exe: "chain",
        args: &[],
        ld_library_path: Some(STORM),
        status: 0,
        must: &["c_chain_fn v1"],
    },
    Case {
        name: "no_runpath",
        exe: "chain_nr",
        args: &[],
        ld_library_path: Some(STORM),
        status: 0,
        must: &["a_fn v1", "c_chain_fn v1"],
    },
    Case {
        name: "visible_paths",
        exe: "paths",
        args: &[],
        ld_library_path: None,
        status: 0,
        must: &[
            "dladdr a_fn: @/bin/../lib/liba.so",
            "dl_iterate_phdr: @/bin/../lib/chain/libb.so",
            "/proc/self/exe: @/bin/paths",
            "dlsym no_such_symbol: @/bin/../lib/liba.so: undefined symbol: no_such_symbol",
            "dlopen libunres.so: @/bin/../lib/libunres.so: undefined symbol: nowhere_fn",
        ],
    },
];

fn at(s: &str, tree: &Path) -> String {
    s.replace('@', &tree.display().to_string())
}

/// Every "ctor X" line appears exactly once: no library initialised twice.
fn ctors_once(what: &str, text: &str) {
    let ctors: Vec<&str> = text.lines().filter(|l| l.starts_with("ctor ")).collect();
    for c in &ctors {
        let n = ctors.iter().filter(|d| *d == c).count();
        assert_eq!(n, 1, "{what}: {c:?} printed {n} times:\n{text}");
    }
}

fn assert_same_out(what: &str, native: &Out, other_name: &str, other: &Out) {
    assert_eq!(
        native.status.code(),
        other.status.code(),
        "{what}: exit status, native vs {other_name}; stderr:\n{}",
        other.stderr_str()
    );
    assert_same(
        &format!("{what} stdout"),
        "native",
        &native.stdout,
        other_name,
        &other.stdout,
    );
    assert_same(
        &format!("{what} stderr"),
        "native",
        &native.stderr,
        other_name,
        &other.stderr,
    );
}

/// System calls that look a path up (getcwd, which the library's
/// constructor calls, walks no path and is left out).
const LOOKUPS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents64",
    "execve",
    "chdir",
];

/// The lookups on the tree in one `strace -ff -k` run, split by who made
/// them: ld.so searching for the program's libraries, ld.so searching for
/// the auditor's own dependencies (its DT_NEEDED names, and the directory
/// probes that follow a failed candidate of theirs), and the program.
#[derive(Default, Debug)]
struct Lookups {
    loader: Vec<String>,
    auditor_deps: Vec<String>,
    program: Vec<String>,
}

/// The DT_NEEDED names of libfmcache.so (ld.so searches them, unaudited,
/// when it loads the auditor).
fn auditor_needed() -> &'static Vec<String> {
    static N: OnceLock<Vec<String>> = OnceLock::new();
    N.get_or_init(|| {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(lib())
            .output()
            .expect("readelf");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
            .collect()
    })
}

/// `audited`: whether the run loaded the auditor (else every ld.so lookup
/// is for the program).
fn lookups(dir: &Path, tree: &Path, audited: bool) -> Lookups {
    let root = tree.display().to_string();
    let deps = auditor_needed();
    let mut out = Lookups::default();
    for f in fs::read_dir(dir).unwrap() {
        let text = fs::read_to_string(f.unwrap().path()).unwrap();
        // (call line, innermost frame) per call.
        let mut recs: Vec<(&str, &str)> = Vec::new();
        for line in text.lines() {
            match line.strip_prefix(" > ") {
                Some(frame) => {
                    if let Some(r) = recs.last_mut() {
                        if r.1.is_empty() {
                            r.1 = frame;
                        }
                    }
                }
                None => recs.push((line, "")),
            }
        }
        let mut first_exec = true;
        // ld.so loads the auditor and its dependencies before anything
        // else: its lookups are those of the auditor's DT_NEEDED names
        // until ld.so first looks for another name.
        let mut auditor_phase = audited;
        let mut for_auditor = false;
        for (line, top) in recs {
            let name = line.split('(').next().unwrap_or("");
            if name == "execve" && std::mem::take(&mut first_exec) {
                continue; // strace starting the program
            }
            if !LOOKUPS.contains(&name) {
                continue;
            }
            let Some(path) = line.split('"').nth(1) else {
                continue;
            };
            if !(path == root || path.starts_with(&format!("{root}/"))) {
                continue;
            }
            let call = line.chars().take(240).collect::<String>();
            if !top.contains("/ld-linux") {
                out.program.push(call);
                continue;
            }
            // A directory probe belongs to the candidate before it.
            if auditor_phase && (name == "openat" || name == "open") {
                let base = path.rsplit('/').next().unwrap_or("");
                for_auditor = deps.iter().any(|d| d == base);
                auditor_phase = for_auditor;
            }
            if for_auditor {
                out.auditor_deps.push(call);
            } else {
                out.loader.push(call);
            }
        }
    }
    out
}

fn first(calls: &[String], n: usize) -> String {
    let mut s: String = calls.iter().take(n).map(|c| format!("    {c}\n")).collect();
    if calls.len() > n {
        s.push_str(&format!("    ... {} more\n", calls.len() - n));
    }
    s
}

/// Native and served runs of one case, with their lookups on the tree.
struct Served {
    native: Out,
    native_lookups: Lookups,
    served: Out,
    served_lookups: Lookups,
}

/// Runs one case natively (checking the build did what the case is
/// about), as a pilot and served, the native and served runs under strace.
fn serve_case(name: &str, label: &str) -> Served {
    serve_case_in(&shared().tree, name, label)
}

fn serve_case_in(tree: &Path, name: &str, label: &str) -> Served {
    let case = CASES.iter().find(|c| c.name == name).unwrap();
    let fx = fixture!(&format!("libs_{label}"));
    let args: Vec<OsString> = case.args.iter().map(|a| at(a, tree).into()).collect();
    let env: Vec<(&str, OsString)> = case
        .ld_library_path
        .map(|p| ("LD_LIBRARY_PATH", at(p, tree).into()))
        .into_iter()
        .collect();
    let run = program(tree, case.exe, &args, &env);
    let roots = [tree];

    let native = run.clone().native().run();
    assert_eq!(
        native.status.code(),
        Some(case.status),
        "{name}: native status; stderr:\n{}",
        native.stderr_str()
    );
    let all = format!("{}{}", native.stdout_str(), native.stderr_str());
    for m in case.must {
        let m = at(m, tree);
        assert!(
            all.lines().any(|l| l.contains(&m)),
            "{name}: native output lacks {m:?}:\n{all}"
        );
    }
    ctors_once(name, &all);
    let dir = fx.trace_dir("native");
    run.clone().native().run_traced(&dir, &roots);
    let native_lookups = lookups(&dir, tree, false);

    let cache = fx.cache("c");
    let pilot = audited(run.clone().record(&cache)).run();
    assert_same_out(name, &native, "pilot", &pilot);
    if case.status == 127 {
        // ld.so gave up before the library's exit-time merge could run:
        // fold the pilot's journal in, as `fmcache record` does.
        let o = Command::new(tool())
            .arg("merge")
            .arg("--cache")
            .arg(&cache.file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fmcache merge: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(cache.file.is_file(), "{name}: the pilot wrote no cache");

    let dir = fx.trace_dir("served");
    let (served, _) = audited(run.serve(&cache)).run_traced(&dir, &roots);
    let served_lookups = lookups(&dir, tree, true);
    eprintln!(
        "{name}: lookups on the tree: native: ld.so {}, program {}; served: ld.so {} \
         (+ {} for the auditor's own dependencies), program {}",
        native_lookups.loader.len(),
        native_lookups.program.len(),
        served_lookups.loader.len(),
        served_lookups.auditor_deps.len(),
        served_lookups.program.len(),
    );
    Served {
        native,
        native_lookups,
        served,
        served_lookups,
    }
}

/// One case: served output equals native, and neither ld.so (searching for
/// the program's libraries) nor the program looks anything up on the tree.
/// ld.so's search for the auditor's own dependencies is asserted apart, in
/// `auditor_dependencies_not_searched_on_tree`.
fn run_case(name: &str) {
    check_case(name, serve_case(name, name));
}

fn check_case(name: &str, s: Served) {
    assert_same_out(name, &s.native, "served", &s.served);
    assert!(
        !s.native_lookups.loader.is_empty(),
        "{name}: sanity: ld.so searches the tree natively"
    );
    // A DT_NEEDED missing at start-up is the one search left to ld.so: it
    // prints the name it searched for itself (exit 127), so no answer may
    // stand in for it. Its candidates are still answered locally; what is
    // left are ld.so's own existence checks of the search directories, at
    // most what it makes natively.
    let loader: Vec<&String> = if s.native.status.code() == Some(127) {
        let (dir_checks, other): (Vec<&String>, Vec<&String>) =
            s.served_lookups.loader.iter().partition(|c| {
                c.starts_with("newfstatat(")
                    && (c.ends_with(", 0) = -1 ENOENT (No such file or directory)")
                        || c.contains("{st_mode=S_IFDIR"))
            });
        assert!(
            dir_checks.len() <= s.native_lookups.loader.len(),
            "{name}: more directory checks served than native"
        );
        other
    } else {
        s.served_lookups.loader.iter().collect()
    };
    let loader: Vec<String> = loader.into_iter().cloned().collect();
    assert!(
        loader.is_empty() && s.served_lookups.program.is_empty(),
        "{name}: lookups on the tree under read-cache + LD_AUDIT: by ld.so {}:\n{}by the program {}:\n{}",
        loader.len(),
        first(&loader, 20),
        s.served_lookups.program.len(),
        first(&s.served_lookups.program, 20),
    );
}

/// Before auditing starts, ld.so loads the auditor itself and searches for
/// its DT_NEEDED libraries (libgcc_s, libc, ld.so in a namespace of their
/// own) through the executable's RUNPATH and LD_LIBRARY_PATH: lookups on
/// the tree that no la_objsearch sees. Served runs must make none.
#[test]
fn auditor_dependencies_not_searched_on_tree() {
    for name in ["chain", "ld_library_path_storm"] {
        let s = serve_case(name, &format!("auditor_{name}"));
        assert_same_out(name, &s.native, "served", &s.served);
        assert!(
            s.served_lookups.auditor_deps.is_empty(),
            "{name}: ld.so looked up the auditor's dependencies {:?} on the tree {} times:\n{}",
            auditor_needed(),
            s.served_lookups.auditor_deps.len(),
            first(&s.served_lookups.auditor_deps, 12),
        );
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run_case(stringify!($name)); })*
    };
}

cases!(
    chain,
    origin_dlopen,
    symlinks,
    missing_dlopen,
    missing_needed,
    cxx_exceptions,
    ctor_once,
    ld_library_path_storm,
    no_runpath,
    visible_paths,
);

/// Runs `paths` served from `cache` (an unusable one) and checks it ran
/// from the original libraries: stdout (dladdr, maps, dlerror texts) and
/// status as native, ld.so opening the originals on the tree, and stderr
/// native plus one `fmcache: ` line naming the cache (the auditor copy
/// stays quiet beside the preload copy).
fn refused(what: &str, tree: &Path, dir: &Path, native: &Out, cache: &Cache, env: &[(&str, &str)]) {
    let maps = [OsString::from("maps")];
    let mut run = audited(program(tree, "paths", &maps, &[]).serve(cache));
    for (k, v) in env {
        run = run.env(k, v);
    }
    let (o, _) = run.run_traced(dir, &[tree]);
    let l = lookups(dir, tree, true);
    let err = o.stderr_str();
    let (warn, rest): (Vec<&str>, Vec<&str>) = err
        .split_inclusive('\n')
        .partition(|l| l.starts_with("fmcache: "));
    eprintln!(
        "{what}: {} warning line(s), ld.so lookups on the tree {}:\n{}",
        warn.len(),
        l.loader.len(),
        warn.concat()
    );
    assert_eq!(native.status.code(), o.status.code(), "{what}: status");
    assert_same(what, "native", &native.stdout, "refused", &o.stdout);
    assert_same(
        &format!("{what} stderr without warnings"),
        "native",
        &native.stderr,
        "refused",
        rest.concat().as_bytes(),
    );
    // The auditor copy stays quiet when the preload copy is there: one
    // line per process.
    assert_eq!(
        warn.len(),
        1,
        "{what}: expected one warning line per process, got:\n{err}"
    );
    let file = cache.file.display().to_string();
    for w in &warn {
        assert!(
            w.contains(&file),
            "{what}: warning does not name {file}: {w}"
        );
    }
    let opened = |lib: &str| {
        l.loader.iter().any(|c| {
            c.starts_with("openat(") && c.contains(&format!("/{lib}\"")) && !c.contains("= -1")
        })
    };
    for lib in ["liba.so", "libb.so", "libc_chain.so"] {
        assert!(
            opened(lib),
            "{what}: ld.so did not open the original {lib}:\n{}",
            first(&l.loader, 40)
        );
    }
}

/// Flipped bytes and a truncated cache: refused by both copies, the
/// program runs from the original libraries with native output.
#[test]
fn corrupt_cache_under_audit() {
    let tree = &shared().tree;
    let fx = fixture!("libs_corrupt");
    let run = program(tree, "paths", &[OsString::from("maps")], &[]);
    let native = run.clone().native().run().ok("native");
    let good = fx.cache("good");
    audited(run.record(&good)).run().ok("pilot");
    let bytes = fs::read(&good.file).unwrap();
    assert!(
        bytes.len() > 4096,
        "the cache holds the libraries' contents"
    );

    let mut flipped = bytes.clone();
    for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 100] {
        flipped[at] ^= 0x5a;
    }
    let truncated = bytes[..bytes.len() / 2].to_vec();
    for (label, content) in [("flipped", flipped), ("truncated", truncated)] {
        let c = fx.cache(label);
        fs::write(&c.file, content).unwrap();
        refused(label, tree, &fx.trace_dir(label), &native, &c, &[]);
    }
}

/// A library replaced by another build after the pilot. By default the
/// cache is a snapshot and serves the pilot's build (pinned here, so a
/// change of that behaviour is seen); with `FMCACHE_VERIFY=stat` the
/// stager finds the change and the run is refused: the new build loads
/// from its original path, output as native, one warning naming the cache.
#[test]
fn stale_library_under_audit() {
    let fx = fixture!("libs_stale");
    let tree = &fx.tree;
    build(tree);
    let run = program(tree, "paths", &[OsString::from("maps")], &[]);
    let cache = fx.cache("c");
    audited(run.clone().record(&cache)).run().ok("pilot");
    // Unchanged: verification passes and the run is served (a stage of
    // its own, since the verdict is kept per stage).
    let before = run.clone().native().run().ok("native before");
    let fresh = Cache {
        file: cache.file.clone(),
        stage: fx.out.join("fresh.stage"),
    };
    let verified = audited(run.clone().serve(&fresh).env("FMCACHE_VERIFY", "stat"))
        .run()
        .ok("verified");
    // All but /proc/self/maps, which shows the staged files when served.
    let no_maps = |o: &Out| -> String {
        o.stdout_str()
            .lines()
            .filter(|l| !l.starts_with("maps: "))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_same(
        "fresh stdout",
        "native",
        no_maps(&before).as_bytes(),
        "verified",
        no_maps(&verified).as_bytes(),
    );
    assert!(
        verified.stdout_str().contains("/fresh.stage/"),
        "served from the stage"
    );
    assert_eq!(
        verified.stderr_str(),
        before.stderr_str(),
        "no warning when fresh"
    );
    assert!(
        fs::read_dir(&fresh.stage)
            .unwrap()
            .flatten()
            .any(|d| d.path().join("fresh").is_file()),
        "the verdict is kept in the stage"
    );

    // Reinstalled: a new file (other inode, other content) renamed over it.
    node(
        tree,
        "lib/c2/libc_chain.so.new",
        "c_chain",
        &["-DTAG=\"v2\""],
    );
    fs::rename(
        tree.join("lib/c2/libc_chain.so.new"),
        tree.join("lib/c2/libc_chain.so"),
    )
    .unwrap();
    let native = run.clone().native().run().ok("native");
    assert!(native.stdout_str().contains("ctor c_chain v2\n"));

    let snapshot = audited(run.serve(&cache)).run().ok("served (snapshot)");
    assert!(
        snapshot.stdout_str().contains("ctor c_chain v1\n"),
        "without FMCACHE_VERIFY the pilot's build is served:\n{}",
        snapshot.stdout_str()
    );
    // The stage built above has no verdict yet: the first verifying
    // process takes it.
    refused(
        "stale",
        tree,
        &fx.trace_dir("stale"),
        &native,
        &cache,
        &[("FMCACHE_VERIFY", "stat")],
    );
    let dir = fx.trace_dir("stale-again");
    refused(
        "stale (verdict kept)",
        tree,
        &dir,
        &native,
        &cache,
        &[("FMCACHE_VERIFY", "stat")],
    );
}

/// `LD_PRELOAD` alone: the launcher (not audited itself, since ld.so reads
/// LD_AUDIT only at exec) hands the library to what it starts, through
/// `environ` (sh), an explicit environment without LD_AUDIT given to
/// execve in a vfork child (Python's subprocess) and to posix_spawn. The
/// program it starts is then served from its first library load.
#[test]
fn ld_preload_alone_audits_what_it_starts() {
    let tree = &shared().tree;
    let exe = tree.join("bin/chain");
    let exe_s = exe.display().to_string();
    let py = &fmcache_tests::py_env().python;
    let strip = "env = {k: v for k, v in os.environ.items() if k != 'LD_AUDIT'}; \
                 assert 'LD_PRELOAD' in env";
    let launchers: [(&str, Run); 3] = [
        ("sh", Run::new("/bin/sh").args(["-c", &exe_s])),
        (
            "subprocess",
            Run::new(py).args([
                "-c",
                &format!("import os, subprocess; {strip}; subprocess.run([{exe_s:?}], env=env, check=True)"),
            ]),
        ),
        (
            "posix_spawn",
            Run::new(py).args([
                "-c",
                &format!(
                    "import os; {strip}; p = os.posix_spawn({exe_s:?}, [{exe_s:?}], env); \
                     os.waitpid(p, 0)"
                ),
            ]),
        ),
    ];
    let job = tree.parent().unwrap_or(tree);
    let native = Run::new(&exe).cwd(job).run().ok("native");
    for (label, launcher) in launchers {
        let fx = fixture!(&format!("libs_alone_{label}"));
        let run = launcher.cwd(job);
        let cache = fx.cache("c");
        run.clone()
            .record(&cache)
            .run()
            .ok(&format!("{label}: pilot"));
        let dir = fx.trace_dir("served");
        let (served, _) = run.clone().serve(&cache).run_traced(&dir, &[tree]);
        let served = served.ok(&format!("{label}: served"));
        assert_same(label, "native", &native.stdout, "served", &served.stdout);
        let l = lookups(&dir, tree, false);
        let program: Vec<&String> = l
            .program
            .iter()
            .filter(|c| !c.starts_with("execve("))
            .collect();
        assert!(
            l.loader.is_empty() && l.auditor_deps.is_empty() && program.is_empty(),
            "{label}: lookups on the tree: ld.so {} (auditor deps {}), program {}:\n{}{:?}",
            l.loader.len(),
            l.auditor_deps.len(),
            program.len(),
            first(&l.loader, 12),
            program
        );
    }
}

/// ld.so's list of the tree's loaded objects, as `LD_TRACE_LOADED_OBJECTS`
/// prints it (`name => path`), without the load addresses (the system's
/// libraries are left out: the served run preloads fmcache, which brings
/// its own dependencies first).
fn loaded_names(out: &Out, tree: &Path) -> Vec<String> {
    let tree = tree.display().to_string();
    out.stdout_str()
        .lines()
        .filter(|l| l.contains(&tree) || l.contains("/dev/shm") || l.contains(".stage"))
        .map(|l| match l.rfind(" (0x") {
            Some(i) => l[..i].trim().to_string(),
            None => l.trim().to_string(),
        })
        .collect()
}

/// A served library carries the names it carries natively in ld.so's
/// list, not the staged path as well (issue 13 item 4: each extra name is
/// compared by every later "already loaded?" check), and the trace ld.so
/// prints from that list is the native one.
#[test]
fn loaded_objects_keep_their_native_names() {
    let tree = &shared().tree;
    let fx = fixture!("libs_names");
    let run = program(tree, "chain", &[], &[]);
    let cache = fx.cache("c");
    audited(run.clone().record(&cache)).run().ok("pilot");
    let trace = |r: Run| r.env("LD_TRACE_LOADED_OBJECTS", "1").run().ok("trace");
    let native = loaded_names(&trace(run.clone().native()), tree);
    assert!(
        native.iter().any(|l| l.contains("liba.so =>")),
        "sanity: {native:?}"
    );
    let served = loaded_names(&trace(audited(run.serve(&cache))), tree);
    assert_eq!(served, native, "ld.so's names under read-cache differ");
}

/// `fmcache record` and `fmcache run` with ten module directories on
/// `LD_LIBRARY_PATH` in the tree (issue 13 item 3): under `fmcache run`
/// neither the `fmcache` binary (its own libgcc_s and libc: found through
/// its DT_RPATH first), nor the auditor's dependencies, nor the program's
/// search (served) probes them.
#[test]
fn fmcache_run_never_searches_the_library_path() {
    let tree = &shared().tree;
    let fx = fixture!("libs_tool_storm");
    let storm = at(STORM, tree);
    let empty = tree.join("empty");
    let cache = fx.cache("c");
    let exe = tree.join("bin/chain");
    let native = Run::new(&exe)
        .env("LD_LIBRARY_PATH", &storm)
        .cwd(&fx.out)
        .run_traced_flat(&fx.trace_dir("native"), &[&empty])
        .1;
    assert!(
        native.on_roots > 0,
        "sanity: no search of the empty directories natively"
    );
    let tool_run = |verb: &str| {
        Run::new(tool())
            .arg(verb)
            .arg("--cache")
            .arg(&cache.file)
            .arg("--")
            .arg(&exe)
            .env("LD_LIBRARY_PATH", &storm)
            .env("FMCACHE_STAGE_DIR", &cache.stage)
            .cwd(&fx.out)
    };
    tool_run("record").run().ok("fmcache record");
    let (out, t) = tool_run("run").run_traced_flat(&fx.trace_dir("run"), &[&empty]);
    let out = out.ok("fmcache run");
    assert!(out.stdout_str().contains("c_chain_fn v1"), "{out:?}");
    eprintln!(
        "calls on the ten LD_LIBRARY_PATH directories: native {}, fmcache run {}",
        native.on_roots, t.on_roots
    );
    assert_eq!(
        t.on_roots,
        0,
        "fmcache run searched the LD_LIBRARY_PATH directories:\n{}",
        t.first_calls(20)
    );
}

/// The auditor's `FMCACHE_STATS` line (issue 13 item 5): what it answered
/// from the cache (`served`) and what it left to ld.so (`missed`). A run
/// the pilot saw is all served; a program the pilot never ran leaves its
/// searches to ld.so, and says so.
#[test]
fn auditor_counts_what_it_served_and_left() {
    let tree = &shared().tree;
    let fx = fixture!("libs_counters");
    let cache = fx.cache("c");
    let chain = program(tree, "chain", &[], &[]);
    audited(chain.clone().record(&cache)).run().ok("pilot");
    let auditor_line = |stats: &Path| -> (u64, u64) {
        let text = std::fs::read_to_string(stats).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(" copy=auditor "))
            .unwrap_or_else(|| panic!("no auditor line in:\n{text}"));
        let field = |k: &str| -> u64 {
            line.split(' ')
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {line}"))
        };
        (field("served="), field("missed="))
    };
    let seen = fx.out.join("seen.stats");
    audited(chain.serve(&cache).stats(&seen)).run().ok("served");
    let (served, missed) = auditor_line(&seen);
    assert!(
        served > 0 && missed == 0,
        "a run the pilot saw: served {served}, missed {missed}"
    );
    let unseen = fx.out.join("unseen.stats");
    let dlhost = program(tree, "dlhost", &[], &[]);
    audited(dlhost.serve(&cache).stats(&unseen))
        .run()
        .ok("served");
    let (_, missed) = auditor_line(&unseen);
    assert!(
        missed > 0,
        "searches the pilot never saw are not counted as missed"
    );
}

/// Every loader case again on the tree built with DT_RPATH (issue 13 item
/// 1): the searches follow ld.so's loader chain (the requester's DT_RPATH,
/// its loader's, up to the executable's), which the auditor rebuilds from
/// its callbacks (preload/src/loaders.rs). Same assertions as on the
/// RUNPATH tree: output as native, no lookup on the tree by ld.so or the
/// program.
#[test]
fn dt_rpath_tree_cases() {
    let tree = &shared_rpath().tree;
    let o = Command::new("readelf")
        .arg("-d")
        .arg(tree.join("lib/liba.so"))
        .output()
        .unwrap();
    let dyn_text = String::from_utf8_lossy(&o.stdout);
    assert!(
        dyn_text.contains("(RPATH)") && !dyn_text.contains("(RUNPATH)"),
        "sanity: liba.so has a DT_RPATH:\n{dyn_text}"
    );
    for case in CASES {
        let label = format!("rpath_{}", case.name);
        check_case(case.name, serve_case_in(tree, case.name, &label));
    }
}
