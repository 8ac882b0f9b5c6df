//! Random trees -> journal -> merge -> cache, then every answer the cache
//! gives is checked against the kernel's (libc) answer for the same probe.
//!
//! A cache is built exactly as the recorder builds one: journal records
//! (`journal::encode`) in `<cache>.rec/j.test`, then `merge::merge`. Miss is
//! always allowed, but most probes must be answered, so a lookup that
//! always misses fails.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fmcache_core::answer::{self, Answer, TrustAll};
use fmcache_core::config::Config;
use fmcache_core::journal::{self, Kind};
use fmcache_core::path;
use fmcache_format::{CacheView, StatRec, Verify};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

const NAMES: [&str; 6] = ["a", "b", "c", "dd", "e", "f.py"];

/// Removes a case's directory when the case ends, passed or failed
/// (shrinking runs hundreds of failing cases).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory under CARGO_TARGET_TMPDIR for one case.
fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("roundtrip-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

// ---------------------------------------------------------------- trees

#[derive(Clone, Debug)]
enum Target {
    /// Absolute path of an earlier node.
    Node(usize),
    /// Relative path to an earlier node.
    RelNode(usize),
    Dangling,
    DanglingDeep,
    /// `x -> x_b -> x`.
    Loop,
    SelfLoop,
    /// `../<name>`.
    Up(usize),
}

#[derive(Clone, Debug)]
enum NodeKind {
    Dir { private: bool },
    File { mode: u32, bytes: Vec<u8> },
    Link(Target),
}

#[derive(Clone, Debug)]
struct NodeSpec {
    parent: usize,
    name: usize,
    kind: NodeKind,
}

#[derive(Clone, Debug)]
struct ProbeSpec {
    how: u8,
    i: usize,
    j: usize,
    messy: bool,
}

#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<NodeSpec>,
    probes: Vec<ProbeSpec>,
    /// Probes asked but never journaled: answered only by derivation.
    derived: Vec<ProbeSpec>,
    /// Merge the journal in two halves (the second merge adds to the
    /// cache the first wrote) instead of at once.
    split: bool,
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    let kind = prop_oneof![
        3 => any::<bool>().prop_map(|b| NodeKind::Dir { private: b }),
        4 => (
            prop::sample::select(vec![0o000u32, 0o444, 0o755, 0o644, 0o600]),
            prop::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(mode, bytes)| NodeKind::File { mode, bytes }),
        3 => prop_oneof![
            3 => any::<usize>().prop_map(Target::Node),
            3 => any::<usize>().prop_map(Target::RelNode),
            1 => Just(Target::Dangling),
            1 => Just(Target::DanglingDeep),
            1 => Just(Target::Loop),
            1 => Just(Target::SelfLoop),
            1 => any::<usize>().prop_map(Target::Up),
        ]
        .prop_map(NodeKind::Link),
    ];
    (any::<usize>(), 0..NAMES.len(), kind).prop_map(|(parent, name, kind)| NodeSpec {
        parent,
        name,
        kind,
    })
}

fn probe_strategy() -> impl Strategy<Value = ProbeSpec> {
    (
        0u8..13,
        any::<usize>(),
        any::<usize>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(how, i, j, messy)| ProbeSpec { how, i, j, messy })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(node_strategy(), 1..28),
        prop::collection::vec(probe_strategy(), 1..40),
        prop::collection::vec(probe_strategy(), 0..16),
        any::<bool>(),
    )
        .prop_map(|(nodes, probes, derived, split)| Case {
            nodes,
            probes,
            derived,
            split,
        })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Made {
    Dir,
    File,
    Link,
}

struct Tree {
    root: PathBuf,
    /// Every node created, root first.
    nodes: Vec<(PathBuf, Made)>,
}

fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from_dir.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn build_tree(root: &Path, specs: &[NodeSpec]) -> Tree {
    std::fs::create_dir(root).unwrap();
    let mut tree = Tree {
        root: root.to_path_buf(),
        nodes: vec![(root.to_path_buf(), Made::Dir)],
    };
    let mut dirs = vec![root.to_path_buf()];
    let mut chmods: Vec<(PathBuf, u32)> = Vec::new();
    for s in specs {
        let parent = dirs[s.parent % dirs.len()].clone();
        let p = parent.join(NAMES[s.name]);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        match &s.kind {
            NodeKind::Dir { private } => {
                std::fs::create_dir(&p).unwrap();
                chmods.push((p.clone(), if *private { 0o700 } else { 0o755 }));
                dirs.push(p.clone());
                tree.nodes.push((p, Made::Dir));
            }
            NodeKind::File { mode, bytes } => {
                std::fs::write(&p, bytes).unwrap();
                chmods.push((p.clone(), *mode));
                tree.nodes.push((p, Made::File));
            }
            NodeKind::Link(t) => {
                let n = tree.nodes.len();
                let target: PathBuf = match t {
                    Target::Node(i) => tree.nodes[i % n].0.clone(),
                    Target::RelNode(i) => relative(&parent, &tree.nodes[i % n].0),
                    Target::Dangling => "no-such-target".into(),
                    Target::DanglingDeep => "no-such-dir/x".into(),
                    Target::SelfLoop => NAMES[s.name].into(),
                    Target::Up(i) => Path::new("..").join(NAMES[i % NAMES.len()]),
                    Target::Loop => {
                        let other = parent.join(format!("{}_b", NAMES[s.name]));
                        if other.symlink_metadata().is_err() {
                            symlink(&p, &other).unwrap();
                            tree.nodes.push((other.clone(), Made::Link));
                        }
                        other
                    }
                };
                symlink(&target, &p).unwrap();
                tree.nodes.push((p, Made::Link));
            }
        }
    }
    // Modes last, so that creating children was never refused.
    for (p, m) in chmods {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    tree
}

/// The raw path a program would pass, from a probe spec.
fn probe_path(tree: &Tree, s: &ProbeSpec) -> Vec<u8> {
    let n = tree.nodes.len();
    let node = tree.nodes[s.i % n].0.as_os_str().as_bytes().to_vec();
    let name = NAMES[s.j % NAMES.len()].as_bytes();
    let mut p = node.clone();
    match s.how {
        0..=1 | 10..=12 => {}
        2 => p.extend_from_slice(b"/zz-missing"),
        3 => p.extend_from_slice(b"/zz-missing/y/x"),
        4 => p.push(b'/'),
        5 => p.extend_from_slice(b"/."),
        6 => {
            p.extend_from_slice(b"/../");
            p.extend_from_slice(name);
        }
        7 | 8 => {
            p.push(b'/');
            p.extend_from_slice(name);
        }
        9 => {
            p = tree.root.as_os_str().as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p.push(b'/');
            p.extend_from_slice(NAMES[s.i % NAMES.len()].as_bytes());
        }
        _ => unreachable!(),
    }
    if s.messy {
        // Extra slashes and `.` components: the key normalises them away.
        let root = tree.root.as_os_str().as_bytes();
        if p.starts_with(root) && p.len() > root.len() {
            let mut q = root.to_vec();
            q.extend_from_slice(b"/.//");
            q.extend_from_slice(&p[root.len()..]);
            p = q;
        }
    }
    p
}

// ------------------------------------------------------- the real answers

type Res<T> = Result<T, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn c(p: &[u8]) -> CString {
    CString::new(p).unwrap()
}

/// Stat fields compared with the cache's: all but atime.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: i64,
    blksize: i64,
    blocks: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    btime: (i64, u32),
    stx_mask: u32,
    stx_attributes: u64,
    stx_attributes_mask: u64,
    mnt_id: u64,
}

fn fields_of(st: &StatRec) -> Fields {
    Fields {
        dev: st.dev,
        ino: st.ino,
        nlink: st.nlink,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev,
        size: st.size,
        blksize: st.blksize,
        blocks: st.blocks,
        mtime: (st.mtime, st.mtime_nsec),
        ctime: (st.ctime, st.ctime_nsec),
        btime: (st.btime, st.btime_nsec),
        stx_mask: st.stx_mask,
        stx_attributes: st.stx_attributes,
        stx_attributes_mask: st.stx_attributes_mask,
        mnt_id: st.mnt_id,
    }
}

fn real_stat(p: &[u8], follow: bool) -> Res<Fields> {
    let cp = c(p);
    // SAFETY: plain system calls on a NUL-terminated path and our buffers.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let r = if follow {
            libc::stat(cp.as_ptr(), &mut st)
        } else {
            libc::lstat(cp.as_ptr(), &mut st)
        };
        if r != 0 {
            return Err(errno());
        }
        let mut x: libc::statx = std::mem::zeroed();
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME | libc::STATX_MNT_ID;
        assert_eq!(
            libc::statx(libc::AT_FDCWD, cp.as_ptr(), flags, mask, &mut x),
            0
        );
        Ok(Fields {
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size,
            blksize: st.st_blksize,
            blocks: st.st_blocks,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            btime: (x.stx_btime.tv_sec, x.stx_btime.tv_nsec),
            stx_mask: x.stx_mask,
            stx_attributes: x.stx_attributes,
            stx_attributes_mask: x.stx_attributes_mask,
            mnt_id: x.stx_mnt_id,
        })
    }
}

fn real_access(p: &[u8], mode: i32) -> Res<()> {
    // SAFETY: a NUL-terminated path.
    match unsafe { libc::access(c(p).as_ptr(), mode) } {
        0 => Ok(()),
        _ => Err(errno()),
    }
}

/// open(2) and, for a regular file, its bytes.
fn real_open(p: &[u8], flags: i32) -> Res<(bool, Vec<u8>)> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the descriptor we just opened.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) };
    let reg = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    let mut bytes = Vec::new();
    if reg {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n as usize]);
        }
    }
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    Ok((reg, bytes))
}

fn real_readlink(p: &[u8]) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and our buffer.
    let n = unsafe { libc::readlink(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn real_list(p: &[u8]) -> Res<Vec<(Vec<u8>, u8, u64)>> {
    // SAFETY: opendir/readdir/closedir on our own stream.
    unsafe {
        let d = libc::opendir(c(p).as_ptr());
        if d.is_null() {
            return Err(errno());
        }
        let mut out = Vec::new();
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec();
            out.push((name, (*e).d_type, (*e).d_ino));
        }
        libc::closedir(d);
        Ok(out)
    }
}

fn real_realpath(p: &[u8]) -> Res<Vec<u8>> {
    // SAFETY: realpath allocates the result, which we free.
    unsafe {
        let r = libc::realpath(c(p).as_ptr(), std::ptr::null_mut());
        if r.is_null() {
            return Err(errno());
        }
        let out = CStr::from_ptr(r).to_bytes().to_vec();
        libc::free(r.cast());
        Ok(out)
    }
}

// ------------------------------------------------------------- checking

#[derive(Default, Debug, Clone)]
struct Tally {
    /// (function) -> [hit, errno, miss, by-design miss]
    by_fn: BTreeMap<&'static str, [usize; 4]>,
}

impl Tally {
    fn add(&mut self, f: &'static str, slot: usize) {
        self.by_fn.entry(f).or_default()[slot] += 1;
    }
    fn merge(&mut self, o: &Tally) {
        for (k, v) in &o.by_fn {
            let e = self.by_fn.entry(k).or_default();
            for i in 0..4 {
                e[i] += v[i];
            }
        }
    }
    /// (answered, answerable)
    fn ratio(&self) -> (usize, usize) {
        self.by_fn.values().fold((0, 0), |(a, n), v| {
            (a + v[0] + v[1], n + v[0] + v[1] + v[2])
        })
    }
}

/// Compares one answer with the real result; a wrong answer is added to
/// `bad`. `design_miss` marks a miss the cache is documented to give
/// (nothing to serve).
#[allow(clippy::too_many_arguments)]
fn judge<T: std::fmt::Debug, U: std::fmt::Debug>(
    tally: &mut Tally,
    bad: &mut Vec<String>,
    f: &'static str,
    probe: &[u8],
    got: Answer<T>,
    real: &Res<U>,
    same: impl FnOnce(&T, &U) -> bool,
    design_miss: bool,
) {
    let shown = String::from_utf8_lossy(probe);
    let ok = match (&got, real) {
        (Answer::Miss, _) => {
            tally.add(f, if design_miss { 3 } else { 2 });
            return;
        }
        (Answer::Hit(g), Ok(r)) => same(g, r),
        (Answer::Errno(e), Err(r)) => e == r,
        _ => false,
    };
    if !ok {
        bad.push(format!(
            "{f}({shown}): cache says {got:?}, the kernel {real:?}"
        ));
    }
    tally.add(f, if matches!(got, Answer::Hit(_)) { 0 } else { 1 });
}

/// Bytes as text, for messages.
#[derive(PartialEq, Eq)]
struct Text(Vec<u8>);
impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

fn check_probe(view: &CacheView<'_>, raw: &[u8], tally: &mut Tally, bad: &mut Vec<String>) {
    let mut key = path::PathBuf::new();
    assert!(path::normalize(Some(b"/"), raw, &mut key));
    let k = key.as_bytes();
    let trailing = k.ends_with(b"/") || k.ends_with(b"/.");
    let text = |r: Res<Vec<u8>>| r.map(Text);

    for follow in [true, false] {
        let got = answer::stat(view, &TrustAll, k, follow);
        judge(
            tally,
            bad,
            if follow { "stat" } else { "lstat" },
            raw,
            got.map(fields_of),
            &real_stat(raw, follow),
            |g, r| g == r,
            false,
        );
    }
    for (name, mode) in [
        ("access(F)", libc::F_OK),
        ("access(R)", libc::R_OK),
        ("access(W)", libc::W_OK),
        ("access(X)", libc::X_OK),
        ("access(RX)", libc::R_OK | libc::X_OK),
    ] {
        let got = answer::access(view, &TrustAll, k, mode);
        let real = real_access(raw, mode);
        judge(tally, bad, name, raw, got, &real, |_, _| true, false);
    }
    for (name, flags) in [
        ("open", libc::O_RDONLY),
        ("open(O_DIRECTORY)", libc::O_RDONLY | libc::O_DIRECTORY),
        ("open(O_NOFOLLOW)", libc::O_RDONLY | libc::O_NOFOLLOW),
    ] {
        let real = real_open(raw, flags);
        // Only regular files are served; other descriptors pass through.
        let design = matches!(real, Ok((false, _)));
        let got = answer::open_read(view, &TrustAll, k, flags);
        if let (Answer::Hit(f), Ok((_, want))) = (&got, &real) {
            // The bytes, from the whole cache file.
            let bytes = f.entry.blob().and_then(|b| view.blob_bytes(b));
            let bytes = bytes.as_deref();
            if bytes != Some(&want[..]) {
                bad.push(format!(
                    "{name}({}): cached bytes {:?} differ from the file's {} bytes",
                    String::from_utf8_lossy(raw),
                    bytes.map(<[u8]>::len),
                    want.len()
                ));
            }
            // What fstat on the served descriptor reports.
            let real_st = real_stat(raw, true);
            if real_st.as_ref() != Ok(&fields_of(f.stat)) {
                bad.push(format!(
                    "{name}({}): served stat {:?}, the kernel {real_st:?}",
                    String::from_utf8_lossy(raw),
                    fields_of(f.stat)
                ));
            }
        }
        let got = got.map(|f| f.mirror);
        judge(tally, bad, name, raw, got, &real, |_, r| r.0, design);
    }
    let got = answer::readlink(view, &TrustAll, k).map(|l| Text(l.to_vec()));
    let real = text(real_readlink(raw));
    judge(
        tally,
        bad,
        "readlink",
        raw,
        got,
        &real,
        |g, r| g == r,
        trailing,
    );

    let got = answer::list(view, &TrustAll, k).map(|(_, l)| {
        l.iter()
            .map(|(n, t, i)| (Text(n.to_vec()), t, i))
            .collect::<Vec<_>>()
    });
    let real = real_list(raw).map(|v| {
        v.into_iter()
            .map(|(n, t, i)| (Text(n), t, i))
            .collect::<Vec<_>>()
    });
    judge(tally, bad, "list", raw, got, &real, |g, r| g == r, false);

    let mut out = path::PathBuf::new();
    let got =
        answer::realpath(view, &TrustAll, k, &mut out).map(|()| Text(out.as_bytes().to_vec()));
    let real = text(real_realpath(raw));
    judge(
        tally,
        bad,
        "realpath",
        raw,
        got,
        &real,
        |g, r| g == r,
        false,
    );
}

fn run_case(case: &Case, total: &RefCell<(Tally, Tally)>) -> Result<(), TestCaseError> {
    let dir = fresh_dir("case");
    let _cleanup = Cleanup(dir.clone());
    let cache_dir = dir.join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    let cache = cache_dir.join("fmcache.dat");
    let tree = build_tree(&dir.join("tree"), &case.nodes);

    let mut probes: Vec<Vec<u8>> = Vec::new();
    for s in &case.probes {
        let p = probe_path(&tree, s);
        if !probes.contains(&p) {
            probes.push(p);
        }
    }
    let derived: Vec<Vec<u8>> = case
        .derived
        .iter()
        .map(|s| probe_path(&tree, s))
        .filter(|p| !probes.contains(p))
        .collect();

    // The journal, as the recorder writes it.
    let rec_dir = cache_dir.join("fmcache.dat.rec");
    std::fs::create_dir(&rec_dir).unwrap();
    let jpath = rec_dir.join("j.test");
    let journal_of = |probes: &[Vec<u8>]| {
        let mut j = Vec::new();
        let mut buf = [0u8; journal::MAX_RECORD];
        for raw in probes {
            let mut key = path::PathBuf::new();
            assert!(path::normalize(Some(b"/"), raw, &mut key));
            let mut note = |kind| {
                let n = journal::encode(kind, key.as_bytes(), &mut buf);
                assert!(n > 0);
                j.extend_from_slice(&buf[..n]);
            };
            note(Kind::Stat);
            match std::fs::metadata(std::ffi::OsStr::from_bytes(raw)) {
                Ok(m) if m.is_file() => note(Kind::Open),
                Ok(m) if m.is_dir() => note(Kind::List),
                _ => {}
            }
        }
        j
    };

    let env: BTreeMap<&str, OsString> = [
        ("DLFM_OP", OsString::from("write-cache")),
        ("FMCACHE_FILE", cache.clone().into_os_string()),
        ("FMCACHE_STAGE_DIR", dir.join("stage").into_os_string()),
        // The tree is test data: named as served, as a user would.
        ("FMCACHE_INCLUDE", dir.join("tree").into_os_string()),
    ]
    .into_iter()
    .collect();
    // SAFETY: plain id queries.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let cfg = Config::from_lookup(|k| env.get(k).cloned(), dir.as_os_str().as_bytes(), uid);
    prop_assert_eq!(&cfg.cache[..], cache.as_os_str().as_bytes());
    let jbytes = jpath.as_os_str().as_bytes().to_vec();
    let merge = |probes: &[Vec<u8>]| {
        std::fs::write(&jpath, journal_of(probes)).unwrap();
        let r = fmcache_core::merge::merge(&cfg, Some(&jbytes), uid, gid);
        assert!(!jpath.exists(), "the merged journal is removed");
        r.map_err(|e| TestCaseError::fail(format!("merge: {e}")))
    };
    let halves: Vec<&[Vec<u8>]> = if case.split {
        let (a, b) = probes.split_at(probes.len().div_ceil(2));
        vec![a, b]
    } else {
        vec![&probes[..]]
    };
    for (i, h) in halves.iter().enumerate() {
        let report = merge(h)?;
        if i == 0 {
            prop_assert!(report.rewritten, "a first merge writes the cache");
        }
    }
    // Everything is answered now: merging the same probes again must not
    // rewrite the cache (that is what lets N identical ranks write once).
    let before = std::fs::read(&cache).unwrap();
    let unlisted: Vec<String> = {
        let (w, n) = read_aligned(&cache);
        let view = CacheView::open(as_bytes(&w, n), Verify::Full).unwrap();
        view.entries()
            .filter(|e| path::under(e.path(), dir.as_os_str().as_bytes()))
            .filter(|e| matches!(e.follow(), Some(Ok(st)) if st.is_dir()) && e.listing().is_none())
            .map(|e| String::from_utf8_lossy(e.path()).into_owned())
            .collect()
    };
    let again = merge(&probes)?;
    prop_assert!(
        !again.rewritten,
        "merging probes the cache already holds rewrote it (directories without a listing: {:?})",
        unlisted
    );
    prop_assert!(std::fs::read(&cache).unwrap() == before);

    let bytes = std::fs::read(&cache).unwrap();
    let words: Vec<u64> = bytes
        .chunks(8)
        .map(|ch| {
            let mut w = [0u8; 8];
            w[..ch.len()].copy_from_slice(ch);
            u64::from_le_bytes(w)
        })
        .collect();
    // SAFETY: `words` holds the file's bytes (little-endian host).
    let aligned = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) };
    let view = CacheView::open(aligned, Verify::Full)
        .map_err(|e| TestCaseError::fail(format!("merged cache refused: {e}")))?;

    let mut tally = Tally::default();
    let mut bad = Vec::new();
    for raw in &probes {
        check_probe(&view, raw, &mut tally, &mut bad);
    }
    let mut dtally = Tally::default();
    for raw in &derived {
        check_probe(&view, raw, &mut dtally, &mut bad);
    }
    {
        let mut t = total.borrow_mut();
        t.0.merge(&tally);
        t.1.merge(&dtally);
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.truncate(12);
        return Err(TestCaseError::fail(format!(
            "{n} wrong answers from the cache:\n  {}",
            bad.join("\n  ")
        )));
    }
    Ok(())
}

#[test]
fn cache_answers_match_the_kernel() {
    let started = std::time::Instant::now();
    let total = RefCell::new((Tally::default(), Tally::default()));
    let long = std::env::var_os("FMCACHE_LONG").is_some_and(|v| v == "1");
    let mut runner = TestRunner::new(PropConfig {
        cases: if long { 1024 } else { 64 },
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&case_strategy(), |case| run_case(&case, &total));
    if let Err(e) = result {
        panic!("{e}");
    }
    let (recorded, derived) = total.into_inner();
    let show = |t: &Tally| {
        t.by_fn
            .iter()
            .map(|(k, v)| {
                format!(
                    "  {k:<18} hit {:>5} errno {:>5} miss {:>5} (by design {:>5})",
                    v[0], v[1], v[2], v[3]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (a, n) = recorded.ratio();
    let (da, dn) = derived.ratio();
    eprintln!(
        "recorded probes: {a}/{n} answered\n{}\nunrecorded probes: {da}/{dn} answered\n{}\n{:.1} s",
        show(&recorded),
        show(&derived),
        started.elapsed().as_secs_f64()
    );
    assert!(n > 0);
    assert!(
        a * 100 >= n * 80,
        "only {a} of {n} answers to recorded probes came from the cache (want >= 80%)"
    );
    // Unrecorded probes are answered by derivation from recorded
    // ancestors (missing names in listed directories, walks through files
    // and missing directories): a floor, so derivation cannot silently die.
    assert!(dn > 0);
    assert!(
        da * 100 >= dn * 40,
        "only {da} of {dn} answers to unrecorded probes were derived (want >= 40%)"
    );
}

/// The cache file's bytes, 8-byte aligned for `CacheView`.
fn read_aligned(p: &Path) -> (Vec<u64>, usize) {
    let bytes = std::fs::read(p).unwrap();
    let words = bytes
        .chunks(8)
        .map(|ch| {
            let mut w = [0u8; 8];
            w[..ch.len()].copy_from_slice(ch);
            u64::from_le_bytes(w)
        })
        .collect();
    (words, bytes.len())
}

fn as_bytes(words: &[u64], len: usize) -> &[u8] {
    assert!(len <= words.len() * 8);
    // SAFETY: `len` bytes of `words` (little-endian host).
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

/// A listing recorded by one merge survives a later merge that asks only
/// for the directory's stat. Listing a directory moves its atime
/// (relatime), so a later observation differs from the recorded one in
/// atime alone, and must not count as a changed directory.
#[test]
fn a_later_merge_keeps_listings() {
    let dir = fresh_dir("listing");
    let _cleanup = Cleanup(dir.clone());
    let cache_dir = dir.join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub/deep")).unwrap();
    std::fs::write(tree.join("sub/f"), b"f").unwrap();
    let cache = cache_dir.join("fmcache.dat");
    let rec_dir = cache_dir.join("fmcache.dat.rec");
    std::fs::create_dir(&rec_dir).unwrap();
    let jpath = rec_dir.join("j.test");
    let env: BTreeMap<&str, OsString> = [
        ("DLFM_OP", OsString::from("write-cache")),
        ("FMCACHE_FILE", cache.clone().into_os_string()),
        ("FMCACHE_STAGE_DIR", dir.join("stage").into_os_string()),
        // The tree is test data: named as served, as a user would.
        ("FMCACHE_INCLUDE", dir.join("tree").into_os_string()),
    ]
    .into_iter()
    .collect();
    // SAFETY: plain id queries.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let cfg = Config::from_lookup(|k| env.get(k).cloned(), dir.as_os_str().as_bytes(), uid);
    let merge = |records: &[(Kind, &Path)]| {
        let mut j = Vec::new();
        let mut buf = [0u8; journal::MAX_RECORD];
        for (k, p) in records {
            let n = journal::encode(*k, p.as_os_str().as_bytes(), &mut buf);
            j.extend_from_slice(&buf[..n]);
        }
        std::fs::write(&jpath, j).unwrap();
        fmcache_core::merge::merge(&cfg, Some(jpath.as_os_str().as_bytes()), uid, gid).unwrap()
    };
    let sub = tree.join("sub");
    let missing = sub.join("no-such-file");
    let listed = |what: &str| {
        let (w, n) = read_aligned(&cache);
        let view = CacheView::open(as_bytes(&w, n), Verify::Full).unwrap();
        let e = view.lookup(sub.as_os_str().as_bytes()).unwrap();
        assert!(
            e.listing().is_some(),
            "{what}: {} lost its listing",
            sub.display()
        );
        assert_eq!(
            answer::stat(&view, &TrustAll, missing.as_os_str().as_bytes(), true),
            Answer::Errno(libc::ENOENT),
            "{what}: a missing name in a listed directory"
        );
    };

    assert!(merge(&[(Kind::List, &sub)]).rewritten);
    listed("after the first merge");
    // Something deeper: `sub` is now wanted for its stat only.
    let r = merge(&[(Kind::Stat, &sub.join("deep/x"))]);
    assert!(r.rewritten);
    listed("after a merge that only needed its stat");
    // And nothing new: no rewrite.
    let r = merge(&[(Kind::List, &sub), (Kind::Stat, &sub.join("deep/x"))]);
    assert!(!r.rewritten, "merging what the cache holds rewrote it");
}
