//! Memory sharing under read-cache: libraries the loader maps from the
//! stage (LD_AUDIT redirects it there) must be shared by every process on
//! the node, as libraries on the original file system are: one copy in the
//! page cache, not one per process.
//!
//! Three ~8 MiB libraries (6 MiB of .rodata, 2 MiB inside .text, built here
//! from tests/c/mem/lib.c) and tests/c/mem/prog.c, which loads two through
//! DT_NEEDED + RUNPATH `$ORIGIN/../lib` and one by dlopen, reads every page,
//! prints a checksum and waits on stdin. Eight of them are started at once,
//! natively and under read-cache + LD_AUDIT, and measured from
//! /proc/PID/smaps while all eight wait.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fmcache_tests::procs::{self, Mem};
use fmcache_tests::{fixture, lib, noise, Fixture, Mode, Run};

const N: usize = 8;
const LIBS: [&str; 3] = ["libmem1.so", "libmem2.so", "libmem3.so"];
const RO_BYTES: usize = 6 << 20;
const TEXT_BYTES: usize = 2 << 20;
/// What prog.c reads of each library, in kB.
const TOUCHED_KB: u64 = ((RO_BYTES + TEXT_BYTES) / 1024) as u64;
/// How long eight children may take to become ready (staging included).
const READY_WITHIN: Duration = Duration::from_secs(180);

/// Runs gcc with `args`; panics with its stderr if it fails.
fn gcc<S: AsRef<OsStr>>(args: &[S]) {
    let o = Command::new("gcc")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc: {e}"));
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        o.status.success(),
        "gcc {shown:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Builds tree/lib/libmem{1,2,3}.so and tree/bin/memprog; returns memprog.
/// Blobs stay in out/build (not part of the probed tree).
fn build(fx: &Fixture) -> PathBuf {
    let src = fmcache_tests::workspace().join("tests/c/mem");
    let build = fx.out.join("build");
    let (libdir, bindir) = (fx.tree.join("lib"), fx.tree.join("bin"));
    for d in [&build, &libdir, &bindir] {
        fs::create_dir_all(d).unwrap();
    }
    let path = |p: &Path| p.to_str().expect("UTF-8 fixture path").to_string();
    for (i, name) in LIBS.iter().enumerate() {
        let n = i + 1;
        let ro = build.join(format!("ro{n}.bin"));
        let text = build.join(format!("text{n}.bin"));
        // Different bytes per library, so no two could share pages by
        // being the same file contents.
        fs::write(&ro, noise(RO_BYTES, 0x5eed_0000 + ((n as u64) << 8))).unwrap();
        fs::write(&text, noise(TEXT_BYTES, 0x7e47_0000 + ((n as u64) << 8))).unwrap();
        gcc(&[
            "-O1".to_string(),
            "-Wall".into(),
            "-fPIC".into(),
            "-shared".into(),
            format!("-DTOUCH=memlib{n}_touch"),
            format!("-DRO_BLOB=\"{}\"", path(&ro)),
            format!("-DTEXT_BLOB=\"{}\"", path(&text)),
            "-o".into(),
            path(&libdir.join(name)),
            path(&src.join("lib.c")),
        ]);
    }
    let prog = bindir.join("memprog");
    gcc(&[
        "-O1".to_string(),
        "-Wall".into(),
        "-o".into(),
        path(&prog),
        path(&src.join("prog.c")),
        format!("-L{}", path(&libdir)),
        // Debian links --as-needed; both libraries must stay DT_NEEDED.
        "-Wl,--no-as-needed".into(),
        "-lmem1".into(),
        "-lmem2".into(),
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib".into(),
    ]);
    prog
}

/// Children alive at once; killed and reaped if the test panics.
struct Group {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    /// What each child printed after "ready" (read to end of file).
    rest: Vec<Option<JoinHandle<String>>>,
    /// What each child printed up to "ready".
    head: Vec<String>,
    errs: Vec<PathBuf>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Starts `n` copies of `prog` at once and waits until each printed "ready".
fn start(fx: &Fixture, prog: &Path, mode: &Mode, label: &str, n: usize) -> Group {
    let mut g = Group {
        children: Vec::new(),
        stdins: Vec::new(),
        rest: Vec::new(),
        head: vec![String::new(); n],
        errs: Vec::new(),
    };
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let err = fx.out.join(format!("{label}.{i}.stderr"));
        let mut cmd = procs::command(prog, mode);
        if !matches!(mode, Mode::Native) {
            cmd.env("LD_AUDIT", lib());
        }
        cmd.current_dir(&fx.tree)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&err).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prog.display()));
        let stdout = child.stdout.take().unwrap();
        g.stdins.push(child.stdin.take());
        g.children.push(child);
        g.errs.push(err);
        let tx = tx.clone();
        g.rest.push(Some(std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    // Exited (or closed stdout) before "ready".
                    let _ = tx.send((i, head, false));
                    return String::new();
                }
                head.push_str(&line);
                if line == "ready\n" {
                    break;
                }
            }
            let _ = tx.send((i, head, true));
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest);
            rest
        })));
    }
    let deadline = Instant::now() + READY_WITHIN;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, head, ready) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{label}: not all {n} children ready in {READY_WITHIN:?}"));
        assert!(
            ready,
            "{label}: child {i} ended before \"ready\"; stdout {head:?}, stderr {:?}",
            fs::read_to_string(&g.errs[i]).unwrap_or_default()
        );
        g.head[i] = head;
    }
    g
}

/// Lets every child exit (one line on stdin), reaps it, and checks it ended
/// cleanly: status 0, nothing more on stdout, nothing on stderr.
fn finish(mut g: Group, label: &str) -> Vec<String> {
    for s in &mut g.stdins {
        let mut s = s.take().unwrap();
        s.write_all(b"exit\n").unwrap();
    }
    for i in 0..g.children.len() {
        let st = g.children[i].wait().unwrap();
        let rest = g.rest[i].take().unwrap().join().unwrap();
        let err = fs::read_to_string(&g.errs[i]).unwrap();
        assert!(st.success(), "{label}: child {i}: {st}; stderr {err:?}");
        assert_eq!(rest, "", "{label}: child {i} printed after ready");
        assert_eq!(err, "", "{label}: child {i} wrote on stderr");
    }
    std::mem::take(&mut g.head)
}

/// One child's memory: per library (its mappings summed) and the whole
/// process, plus the paths the libraries are mapped from.
struct Sample {
    libs: Vec<Mem>,
    paths: Vec<Vec<String>>,
    all: Mem,
}

fn sample(pid: u32) -> Sample {
    let maps = procs::smaps(pid);
    let mut libs = vec![Mem::default(); LIBS.len()];
    let mut paths = vec![Vec::new(); LIBS.len()];
    for m in &maps {
        for (j, name) in LIBS.iter().enumerate() {
            if m.path.ends_with(&format!("/{name}")) {
                libs[j].add(&m.mem);
                if !paths[j].contains(&m.path) {
                    paths[j].push(m.path.clone());
                }
            }
        }
    }
    Sample {
        libs,
        paths,
        all: procs::smaps_rollup(pid),
    }
}

fn measure(g: &Group) -> Vec<Sample> {
    g.children.iter().map(|c| sample(c.id())).collect()
}

/// The figures of one mode, in kB.
struct Figures {
    /// Sum over processes of the library mappings' Pss, per library.
    lib_pss: Vec<u64>,
    lib_pss_sum: u64,
    /// The first process's Rss of the library mappings.
    lib_rss_1: u64,
    /// Largest Private_Clean + Private_Dirty of one library in one process.
    lib_private_max: u64,
    pss_sum: u64,
    pss_1: u64,
    rss_1: u64,
    private_others: u64,
    /// Pss of one process measured while it ran alone.
    pss_solo: u64,
}

fn figures(s: &[Sample], solo: &Sample) -> Figures {
    let lib_pss: Vec<u64> = (0..LIBS.len())
        .map(|j| s.iter().map(|x| x.libs[j].pss).sum())
        .collect();
    Figures {
        lib_pss_sum: lib_pss.iter().sum(),
        lib_pss,
        lib_rss_1: s[0].libs.iter().map(|m| m.rss).sum(),
        lib_private_max: s
            .iter()
            .flat_map(|x| x.libs.iter().map(|m| m.private()))
            .max()
            .unwrap(),
        pss_sum: s.iter().map(|x| x.all.pss).sum(),
        pss_1: s[0].all.pss,
        rss_1: s[0].all.rss,
        private_others: s[1..].iter().map(|x| x.all.private()).sum(),
        pss_solo: solo.all.pss,
    }
}

fn report(label: &str, f: &Figures) {
    let r = |a: u64, b: u64| a as f64 / b as f64;
    eprintln!(
        "[{label}] {N} processes, kB: libs Pss sum {} (per lib {:?}) vs one process's libs Rss {} \
         -> {:.3}; libs private max {}",
        f.lib_pss_sum,
        f.lib_pss,
        f.lib_rss_1,
        r(f.lib_pss_sum, f.lib_rss_1),
        f.lib_private_max
    );
    eprintln!(
        "[{label}] whole: sum Pss {}; solo Pss {}, first Pss {}, first Rss {}, others' private {}; \
         sum/(solo+priv) {:.3}, sum/(first Pss+priv) {:.3}, sum/(first Rss+priv) {:.3}",
        f.pss_sum,
        f.pss_solo,
        f.pss_1,
        f.rss_1,
        f.private_others,
        r(f.pss_sum, f.pss_solo + f.private_others),
        r(f.pss_sum, f.pss_1 + f.private_others),
        r(f.pss_sum, f.rss_1 + f.private_others),
    );
}

/// The assertions every mode must meet; `want` says where each library is
/// expected to be mapped from.
fn check(label: &str, s: &[Sample], solo: &Sample, want: &dyn Fn(usize, &str) -> bool) -> Figures {
    for (i, x) in s.iter().chain([solo]).enumerate() {
        for (j, name) in LIBS.iter().enumerate() {
            // (a) where the libraries come from.
            assert!(
                !x.paths[j].is_empty(),
                "{label}: process {i} has no mapping of {name}"
            );
            for p in &x.paths[j] {
                assert!(want(j, p), "{label}: process {i} maps {name} from {p}");
            }
            // Not vacuous: every touched page is resident and counted.
            assert!(
                x.libs[j].rss >= TOUCHED_KB,
                "{label}: process {i}: {name} Rss {} kB < {TOUCHED_KB} kB touched",
                x.libs[j].rss
            );
        }
    }
    let f = figures(s, solo);
    report(label, &f);
    // Shared, not copied: almost none of a library's pages are mapped by
    // one process alone (a few relocated pages are).
    assert!(
        f.lib_private_max * 20 <= TOUCHED_KB,
        "{label}: a process holds {} kB of a library privately",
        f.lib_private_max
    );
    // (b) the eight together pay for the libraries about once.
    let diff = f.lib_pss_sum.abs_diff(f.lib_rss_1);
    assert!(
        diff * 10 <= f.lib_rss_1,
        "{label}: libraries' Pss over {N} processes {} kB, one process's Rss {} kB: \
         not shared once",
        f.lib_pss_sum,
        f.lib_rss_1
    );
    // (c) the whole processes: one process's footprint (its Pss measured
    // while alone, so nobody shares its libraries' pages) plus what each
    // other process adds privately. The same bound with the first of the
    // eight's Pss would count the shared libraries only 1/8 times and
    // fail by design; it is reported above.
    let bound = f.pss_solo + f.private_others;
    assert!(
        f.pss_sum * 10 <= bound * 11,
        "{label}: sum Pss {} kB > 1.10 x (solo Pss {} + others' private {}) = {} kB",
        f.pss_sum,
        f.pss_solo,
        f.private_others,
        bound * 11 / 10
    );
    f
}

/// Runs `n` at once in `mode`, measures them, lets them exit; returns the
/// samples and what each printed before "ready".
fn round(
    fx: &Fixture,
    prog: &Path,
    mode: &Mode,
    label: &str,
    n: usize,
) -> (Vec<Sample>, Vec<String>) {
    let g = start(fx, prog, mode, label, n);
    let s = measure(&g);
    let heads = finish(g, label);
    (s, heads)
}

#[test]
fn eight_processes_share_staged_libraries() {
    let fx = fixture!("memory_shared");
    let prog = build(&fx);
    let tree = fs::canonicalize(&fx.tree).unwrap();
    let original = |j: usize| tree.join("lib").join(LIBS[j]);

    // Native: the reference output, and the method checked on the
    // ordinary case (page cache of the original files).
    let native_out = Run::new(&prog)
        .cwd(&fx.tree)
        .stdin(b"exit\n".to_vec())
        .run()
        .ok("native");
    let expect = native_out.stdout_str();
    assert!(
        expect.starts_with("checksum ") && expect.ends_with("\nready\n"),
        "native stdout {expect:?}"
    );
    let sums: Vec<&str> = expect.lines().next().unwrap().split(' ').skip(1).collect();
    assert!(
        sums.len() == 3 && sums[0] != sums[1] && sums[1] != sums[2] && sums[0] != sums[2],
        "three distinct libraries: {sums:?}"
    );
    let (nat, heads) = round(&fx, &prog, &Mode::Native, "native", N);
    let (nat_solo, solo_head) = round(&fx, &prog, &Mode::Native, "native-solo", 1);
    for h in heads.iter().chain(&solo_head) {
        assert_eq!(h, &expect, "native output");
    }
    let native_is = |j: usize, p: &str| Path::new(p) == original(j);
    check("native", &nat, &nat_solo[0], &native_is);

    // Pilot, with the loader audited so its library search is recorded.
    let cache = fx.cache("c");
    let pilot = Run::new(&prog)
        .cwd(&fx.tree)
        .stdin(b"exit\n".to_vec())
        .record(&cache)
        .env("LD_AUDIT", lib())
        .run()
        .ok("pilot");
    assert_eq!(pilot.stdout_str(), expect, "pilot output");
    assert_eq!(pilot.stderr_str(), "", "pilot stderr");

    // Eight served at once (the first stages the cache, the others wait
    // for it), then one alone for its solo footprint.
    let mode = Mode::Serve(cache.clone());
    let (srv, heads) = round(&fx, &prog, &mode, "read-cache", N);
    let (srv_solo, solo_head) = round(&fx, &prog, &mode, "read-cache-solo", 1);
    for h in heads.iter().chain(&solo_head) {
        assert_eq!(h, &expect, "read-cache output");
    }
    let stage = fs::canonicalize(&cache.stage).unwrap();
    let staged = |j: usize, p: &str| {
        let o = original(j);
        Path::new(p).starts_with(&stage)
            && p.ends_with(o.to_str().unwrap())
            && p.len() > o.as_os_str().len()
    };
    check("read-cache", &srv, &srv_solo[0], &staged);
}
