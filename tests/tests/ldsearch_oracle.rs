//! `fmcache_core::ldsearch` (ld.so's search order for a bare library name,
//! as pure decision) against the real ld.so, whose `LD_DEBUG=libs` output
//! says every directory it tried, in order, and where it found the name.
//!
//! Random small trees, built with gcc from a seeded generator (the same
//! trees every run): libraries and executables with DT_RPATH
//! (`--disable-new-dtags`), DT_RUNPATH or neither; entries `$ORIGIN`,
//! `${ORIGIN}/../d`, absolute, with trailing slashes, repeated within a
//! list, missing, now and then `$PLATFORM`/`$LIB`; copies of one library in
//! two directories (the order decides which is loaded); random DT_NEEDED
//! graphs; dlopen by bare name from constructors, also from libraries that
//! were themselves dlopened; LD_LIBRARY_PATH split on `:` and `;`. Each
//! executable runs natively under `LD_DEBUG=libs,files`; for every search
//! ld.so printed, the walk is computed from the same inputs (the
//! requester's loader chain from the `needed by` / `dynamically loaded by`
//! lines, DT_RPATH/DT_RUNPATH read from the files, `$ORIGIN` the directory
//! of the path ld.so loaded each object under) and must name the same
//! directories in the same order and end where ld.so found the library.
//!
//! ld.so remembers directories it found missing and skips them silently
//! afterwards (and tries the hwcaps subdirectories of each directory), so
//! its tries are compared with the walk's with missing directories
//! optional and subdirectories folded into their directory. A walk that
//! stops (`$PLATFORM`, `$LIB`) is compared up to the stop. Run with
//! `--nocapture` for the counts.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fmcache_core::ldsearch::{Loader, Object, Step, Stop, Walk};

const TREES: usize = 100;
const SEED: u64 = 0x5eed_1d50_0c4c_0de5;

/// Each library's constructor dlopens the names `ORACLE_DL` gives its
/// file name (`self=name,...`), printing failures.
const NODE_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void ctor(void) __attribute__((constructor));
static void ctor(void) {
    Dl_info i;
    const char *me = "prog";
    if (dladdr((void *)ctor, &i) && i.dli_fname && i.dli_fname[0]) {
        const char *s = strrchr(i.dli_fname, '/');
        me = s ? s + 1 : i.dli_fname;
    }
    const char *spec = getenv("ORACLE_DL");
    if (!spec) return;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        char *eq = strchr(p, '=');
        if (!eq) continue;
        *eq = 0;
        if (strcmp(p, me) == 0 && !dlopen(eq + 1, RTLD_NOW))
            printf("dlopen %s: %s\n", eq + 1, dlerror());
    }
}
"#;
const MAIN_C: &str = "int main(void) { return 0; }\n";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn gcc(args: &[String]) {
    let out = Command::new("gcc")
        .args(args)
        .output()
        .expect("cannot run gcc");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Directories libraries live in (`bin` holds the executable).
const DIRS: [&str; 6] = ["bin", "d0", "d1", "d2", "lib", "sub/lib"];

/// One search-path entry for an object in `home` of tree `root`.
fn entry(rng: &mut Rng, root: &Path, home: &str, earlier: &[String]) -> String {
    let d = *rng.pick(&DIRS);
    let up = if home.contains('/') { "../.." } else { ".." };
    match rng.below(13) {
        0 => "$ORIGIN".into(),
        1 => "${ORIGIN}/".into(),
        2 => format!("$ORIGIN/{up}/{d}"),
        3 => format!("${{ORIGIN}}/{up}/{d}/"),
        4 => format!("$ORIGIN/{up}/{d}//"),
        5 | 6 => format!("{}/{d}", root.display()),
        7 => format!("{}/{d}/", root.display()),
        8 => format!("{}/nodir", root.display()),
        9 => format!("$ORIGIN/{up}/missing/../{d}"),
        10 if !earlier.is_empty() => rng.pick(earlier).clone(),
        11 if rng.chance(30) => rng
            .pick(&["$ORIGIN/$PLATFORM", "${ORIGIN}/../$LIB"])
            .to_string(),
        _ => format!("{}/{d}", root.display()),
    }
}

/// A search list of 1 to 5 entries, one repeated now and then.
fn list(rng: &mut Rng, root: &Path, home: &str) -> String {
    let mut v: Vec<String> = Vec::new();
    for _ in 0..1 + rng.below(5) {
        let e = entry(rng, root, home, &v);
        v.push(e);
    }
    if v.len() > 1 && rng.chance(40) {
        let e = rng.pick(&v).clone();
        let at = rng.below(v.len() + 1);
        v.insert(at, e);
    }
    v.join(":")
}

/// The link flags for a random DT_RPATH, DT_RUNPATH or none.
fn path_flags(rng: &mut Rng, root: &Path, home: &str) -> Vec<String> {
    match rng.below(10) {
        0 | 1 => vec![],
        2..=6 => vec![
            "-Wl,--disable-new-dtags".into(),
            format!("-Wl,-rpath,{}", list(rng, root, home)),
        ],
        _ => vec![
            "-Wl,--enable-new-dtags".into(),
            format!("-Wl,-rpath,{}", list(rng, root, home)),
        ],
    }
}

struct Tree {
    exe: PathBuf,
    /// LD_LIBRARY_PATH and ORACLE_DL of each run.
    runs: Vec<(Option<String>, String)>,
}

fn build_tree(root: &Path, objs: &Path, seed: u64) -> Tree {
    let mut rng = Rng(seed | 1);
    for _ in 0..4 {
        rng.next();
    }
    for d in DIRS {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let n = 3 + rng.below(5);
    let name = |i: usize| format!("liborc{i}.so");
    let mut home = vec![String::new(); n];
    let rpath_link: Vec<String> = DIRS
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect();
    let rpath_link = format!("-Wl,-rpath-link,{}", rpath_link.join(":"));
    let node_o = objs.join("node.o").display().to_string();
    // Dependencies point to higher numbers: build from the last.
    for i in (0..n).rev() {
        home[i] = rng.pick(&DIRS[1..]).to_string();
        let out = root.join(&home[i]).join(name(i));
        let mut args: Vec<String> = vec![
            "-shared".into(),
            "-o".into(),
            out.display().to_string(),
            format!("-Wl,-soname,{}", name(i)),
            node_o.clone(),
            "-Wl,--no-as-needed".into(),
            rpath_link.clone(),
        ];
        for (j, h) in home.iter().enumerate().skip(i + 1) {
            if rng.chance(35) {
                args.push(root.join(h).join(name(j)).display().to_string());
            }
        }
        args.extend(path_flags(&mut rng, root, &home[i]));
        gcc(&args);
        // A second copy elsewhere: which one loads is the order's call.
        if rng.chance(40) {
            let other = rng.pick(&DIRS[1..]);
            if *other != home[i] {
                fs::copy(&out, root.join(other).join(name(i))).unwrap();
            }
        }
    }
    let exe = root.join("bin/prog");
    let mut args: Vec<String> = vec![
        "-o".into(),
        exe.display().to_string(),
        objs.join("main.o").display().to_string(),
        node_o,
        "-Wl,--no-as-needed".into(),
        rpath_link,
    ];
    for (j, h) in home.iter().enumerate() {
        if j == 0 || rng.chance(25) {
            args.push(root.join(h).join(name(j)).display().to_string());
        }
    }
    args.extend(path_flags(&mut rng, root, "bin"));
    gcc(&args);
    // Runs: without LD_LIBRARY_PATH, with a random one, and twice with
    // every directory in a random order (most searches then succeed,
    // further down the chain), each with its own dlopens.
    let mut runs = vec![
        (None, dlopens(&mut rng, n)),
        (Some(random_path(&mut rng, root, 4)), dlopens(&mut rng, n)),
    ];
    for _ in 0..2 {
        let mut p = random_path(&mut rng, root, 3);
        let mut all: Vec<&str> = DIRS.to_vec();
        for k in (1..all.len()).rev() {
            all.swap(k, rng.below(k + 1));
        }
        for d in all {
            p.push(*rng.pick(&[':', ';']));
            p.push_str(&format!("{}/{d}", root.display()));
        }
        runs.push((Some(p), dlopens(&mut rng, n)));
    }
    Tree { exe, runs }
}

/// dlopens by bare name from constructors (main's too), now and then of
/// a name that is nowhere: `from=name,...`.
fn dlopens(rng: &mut Rng, n: usize) -> String {
    let name = |i: usize| format!("liborc{i}.so");
    let mut dl = Vec::new();
    for _ in 0..rng.below(5) {
        let from = if rng.chance(20) {
            "prog".to_string()
        } else {
            name(rng.below(n))
        };
        let to = if rng.chance(15) {
            "libnowhere.so".to_string()
        } else {
            name(rng.below(n))
        };
        dl.push(format!("{from}={to}"));
    }
    dl.join(",")
}

/// An LD_LIBRARY_PATH of 1 to `max` entries, `:` and `;` between them.
fn random_path(rng: &mut Rng, root: &Path, max: usize) -> String {
    let mut s = String::new();
    for k in 0..1 + rng.below(max) {
        if k > 0 {
            s.push(*rng.pick(&[':', ';']));
        }
        let d = rng.pick(&DIRS);
        s.push_str(&match rng.below(6) {
            0 => format!("{}/{d}/", root.display()),
            1 => format!("{}/nodir", root.display()),
            2 => format!("$ORIGIN/../{d}"),
            _ => format!("{}/{d}", root.display()),
        });
    }
    s
}

/// DT_RPATH and DT_RUNPATH of an ELF64 little-endian file.
fn dyn_paths(file: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let b = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phsz, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let phdrs: Vec<(u32, usize, usize, usize)> = (0..phnum)
        .map(|i| {
            let p = phoff + i * phsz;
            let ty = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
            (ty, u64_at(p + 8), u64_at(p + 16), u64_at(p + 32))
        })
        .collect();
    let Some(&(_, dyn_off, _, dyn_sz)) = phdrs.iter().find(|p| p.0 == 2) else {
        return (None, None);
    };
    let (mut strtab, mut rpath, mut runpath) = (0, None, None);
    for k in 0..dyn_sz / 16 {
        let (tag, val) = (u64_at(dyn_off + 16 * k), u64_at(dyn_off + 16 * k + 8));
        match tag {
            0 => break,
            5 => strtab = val,
            15 => rpath = Some(val),
            29 => runpath = Some(val),
            _ => {}
        }
    }
    let file_off = phdrs
        .iter()
        .find(|p| p.0 == 1 && p.2 <= strtab && strtab < p.2 + p.3)
        .map(|p| strtab - p.2 + p.1)
        .expect("string table in a PT_LOAD");
    let at = |o: usize| {
        let s = &b[file_off + o..];
        s[..s.iter().position(|&c| c == 0).unwrap()].to_vec()
    };
    (rpath.map(at), runpath.map(at))
}

struct TObj {
    rpath: Option<Vec<u8>>,
    runpath: Option<Vec<u8>>,
    origin: Vec<u8>,
    loader: Option<usize>,
}

#[derive(Clone, Copy)]
struct O<'a>(&'a [TObj], usize);
impl PartialEq for O<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.1 == o.1
    }
}
impl<'a> Object<'a> for O<'a> {
    fn rpath(self) -> Option<&'a [u8]> {
        self.0[self.1].rpath.as_deref()
    }
    fn runpath(self) -> Option<&'a [u8]> {
        self.0[self.1].runpath.as_deref()
    }
    fn origin(self) -> Option<&'a [u8]> {
        Some(&self.0[self.1].origin)
    }
    fn loader(self) -> Loader<Self> {
        match self.0[self.1].loader {
            Some(l) => Loader::Is(O(self.0, l)),
            None => Loader::None,
        }
    }
    fn nodeflib(self) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Item {
    Dir(String),
    Cache,
}

/// One search ld.so printed.
struct Search {
    name: String,
    requester: String,
    /// A dlopen's own search: the object gets no loader (glibc drops
    /// `__RTLD_CALLMAP`'s loader once the search is done).
    dlopen: bool,
    tried: Vec<Item>,
    /// The last file it tried: where it found the name if that file
    /// exists (ld.so stops at the first it can open).
    last: Option<String>,
}

/// The hwcaps and legacy subdirectories ld.so tries in each directory.
const SUBDIRS: [&str; 9] = [
    "glibc-hwcaps",
    "x86-64-v2",
    "x86-64-v3",
    "x86-64-v4",
    "tls",
    "x86_64",
    "haswell",
    "avx512_1",
    "xeon_phi",
];

/// The search directory of a file ld.so tried (its hwcaps and legacy
/// subdirectories folded in).
fn base_dir(tried: &str, name: &str) -> String {
    let mut d = tried
        .strip_suffix(name)
        .unwrap_or(tried)
        .trim_end_matches('/');
    while let Some((head, last)) = d.rsplit_once('/') {
        if !SUBDIRS.contains(&last) {
            break;
        }
        d = head;
    }
    d.to_string()
}

/// The searches in `LD_DEBUG=libs,files` output.
fn parse(stderr: &str) -> Vec<Search> {
    let mut out: Vec<Search> = Vec::new();
    let mut requester = String::new();
    let mut dlopen = false;
    // The directory last tried in this printed search-path segment (its
    // subdirectories come one after the other).
    let mut segment_last: Option<String> = None;
    let mut after_cache = false;
    for line in stderr.lines() {
        let Some((_, l)) = line.split_once(":\t") else {
            continue;
        };
        if let Some(r) = l.strip_prefix("file=") {
            let needed = r.split_once("needed by ").map(|(_, by)| (by, false));
            let opened = || {
                r.split_once("dynamically loaded by ")
                    .map(|(_, by)| (by, true))
            };
            if let Some((by, d)) = needed.or_else(opened) {
                requester = by.trim_end_matches(" [0]").to_string();
                dlopen = d;
            }
            continue;
        }
        if let Some(r) = l.strip_prefix("find library=") {
            out.push(Search {
                name: r.split(' ').next().unwrap_or("").to_string(),
                requester: requester.clone(),
                dlopen,
                tried: Vec::new(),
                last: None,
            });
            segment_last = None;
            after_cache = false;
            continue;
        }
        let Some(s) = out.last_mut() else { continue };
        if l.starts_with(" search path=") {
            segment_last = None;
            after_cache = false;
        } else if l.starts_with(" search cache=") {
            s.tried.push(Item::Cache);
            after_cache = true;
        } else if let Some(f) = l.strip_prefix("  trying file=") {
            s.last = Some(f.to_string());
            // The cache's answer is not a search directory.
            if after_cache {
                continue;
            }
            let d = base_dir(f, &s.name);
            if segment_last.as_deref() != Some(&d) {
                s.tried.push(Item::Dir(d.clone()));
                segment_last = Some(d);
            }
        }
    }
    out
}

/// What the walk says for `name` asked for by `req`: the places in order
/// up to where the name is, and the stop if the walk stopped.
fn walk(
    objs: &[TObj],
    req: usize,
    library_path: Option<&str>,
    name: &str,
    ld_cache: &[u8],
) -> (Vec<Item>, Option<Stop>) {
    let mut w = Walk::new(
        O(objs, req),
        Some(O(objs, 0)),
        library_path.map(str::as_bytes),
    );
    let mut items = Vec::new();
    while let Some(step) = w.next() {
        match step {
            Step::Dir(_, d) => {
                let d = String::from_utf8(d.to_vec()).unwrap();
                let here = Path::new(&format!("{d}/{name}")).is_file();
                items.push(Item::Dir(d));
                if here {
                    break;
                }
            }
            Step::Cache => {
                items.push(Item::Cache);
                let flags = fmcache_core::ldcache::FLAGS_X8664_LIBC6;
                if fmcache_core::ldcache::lookup(ld_cache, name.as_bytes(), flags).is_some() {
                    break;
                }
            }
            Step::Stop(s) => return (items, Some(s)),
        }
    }
    (items, None)
}

/// ld.so's tries against the walk: the same places in the same order,
/// except missing directories, which ld.so skips once it knows them; all
/// of it unless the walk stopped.
fn same(ld: &[Item], walk: &[Item], stopped: bool) -> bool {
    let (mut i, mut j) = (0, 0);
    while j < walk.len() {
        if ld.get(i) == Some(&walk[j]) {
            i += 1;
            j += 1;
        } else if matches!(&walk[j], Item::Dir(d) if !Path::new(d).is_dir()) {
            j += 1;
        } else {
            return false;
        }
    }
    stopped || i == ld.len()
}

#[derive(Default)]
struct Counts {
    runs: usize,
    searches: usize,
    differences: usize,
    partial_token: usize,
    partial_other: usize,
    unknown_requester: usize,
    found_in_dir: usize,
    found_in_cache: usize,
    not_found: usize,
    lines: Vec<String>,
}

fn check_run(exe: &Path, library_path: Option<&str>, dl: &str, ld_cache: &[u8], c: &mut Counts) {
    let mut cmd = Command::new(exe);
    cmd.env("LD_DEBUG", "libs,files")
        .env("ORACLE_DL", dl)
        .env_remove("LD_PRELOAD")
        .env_remove("LD_AUDIT")
        .env_remove("LD_LIBRARY_PATH");
    if let Some(l) = library_path {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    let out = cmd.output().expect("run the tree's program");
    c.runs += 1;
    let (rpath, runpath) = dyn_paths(exe);
    let mut objs = vec![TObj {
        rpath,
        runpath,
        origin: exe
            .parent()
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        loader: None,
    }];
    let exe = exe.display().to_string();
    let mut by_name: HashMap<String, usize> = HashMap::from([(exe.clone(), 0)]);
    for s in parse(&String::from_utf8_lossy(&out.stderr)) {
        let Some(&req) = by_name.get(&s.requester) else {
            c.unknown_requester += 1;
            continue;
        };
        c.searches += 1;
        let (items, stop) = walk(&objs, req, library_path, &s.name, ld_cache);
        match stop {
            Some(Stop::Token) => c.partial_token += 1,
            Some(_) => c.partial_other += 1,
            None => {}
        }
        if !same(&s.tried, &items, stop.is_some()) {
            c.differences += 1;
            if c.lines.len() < 5 {
                c.lines.push(format!(
                    "{exe} (ORACLE_DL={} LD_LIBRARY_PATH {library_path:?}): {} asked by {}\n  ld.so: {:?}\n  walk:  {:?} {stop:?}",
                    dl, s.name, s.requester, s.tried, items
                ));
            }
        }
        let found = s.last.filter(|f| Path::new(f).is_file());
        match (found, s.tried.last()) {
            (Some(_), Some(Item::Cache)) => c.found_in_cache += 1,
            (Some(f), _) => {
                c.found_in_dir += 1;
                if let std::collections::hash_map::Entry::Vacant(e) = by_name.entry(f) {
                    let f = e.key();
                    let (rpath, runpath) = dyn_paths(Path::new(f));
                    let origin = f.rsplit_once('/').unwrap().0.as_bytes().to_vec();
                    e.insert(objs.len());
                    objs.push(TObj {
                        rpath,
                        runpath,
                        origin,
                        loader: (!s.dlopen).then_some(req),
                    });
                }
            }
            (None, _) => c.not_found += 1,
        }
    }
}

#[test]
fn search_order_matches_ld_so() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ldsearch_oracle");
    if base.exists() {
        fs::remove_dir_all(&base).unwrap();
    }
    fs::create_dir_all(&base).unwrap();
    let base = base.canonicalize().unwrap();
    fs::write(base.join("node.c"), NODE_C).unwrap();
    fs::write(base.join("main.c"), MAIN_C).unwrap();
    let c = |src: &str, obj: &str, pic: bool| {
        let mut a = vec!["-O1".to_string(), "-c".into()];
        if pic {
            a.push("-fPIC".into());
        }
        a.push(base.join(src).display().to_string());
        a.push("-o".into());
        a.push(base.join(obj).display().to_string());
        gcc(&a)
    };
    c("node.c", "node.o", true);
    c("main.c", "main.o", false);
    let ld_cache = fs::read("/etc/ld.so.cache").unwrap_or_default();
    let started = std::time::Instant::now();
    // Two threads build and run trees; a run's checks hold the counts.
    let counts = std::sync::Mutex::new(Counts::default());
    std::thread::scope(|sc| {
        for t in 0..2 {
            let (base, ld_cache, counts) = (&base, &ld_cache, &counts);
            sc.spawn(move || {
                for k in (t..TREES).step_by(2) {
                    let root = base.join(format!("t{k}"));
                    let seed = SEED ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let tree = build_tree(&root, base, seed);
                    for (lp, dl) in &tree.runs {
                        let mut c = counts.lock().unwrap();
                        check_run(&tree.exe, lp.as_deref(), dl, ld_cache, &mut c);
                    }
                }
            });
        }
    });
    let c = counts.into_inner().unwrap();
    println!(
        "ldsearch oracle: {TREES} trees, {} runs in {:.1} s: {} searches compared, {} differences, \
         {} partial at $PLATFORM/$LIB, {} partial otherwise, {} skipped (requester not ours); \
         ld.so found {} in a directory, {} through ld.so.cache, {} nowhere",
        c.runs,
        started.elapsed().as_secs_f64(),
        c.searches,
        c.differences,
        c.partial_token,
        c.partial_other,
        c.unknown_requester,
        c.found_in_dir,
        c.found_in_cache,
        c.not_found
    );
    assert_eq!(
        c.differences,
        0,
        "walk and ld.so differ:\n{}",
        c.lines.join("\n")
    );
    assert!(
        c.searches >= 400,
        "too few searches compared: {}",
        c.searches
    );
    assert!(c.partial_token > 0 && c.not_found > 0 && c.found_in_cache > 0);
}
