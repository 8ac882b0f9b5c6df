//! Turning journals into the cache.
//!
//! Each exiting pilot process (and `fmcache record` at the end) merges its
//! own journal and any orphaned ones (their owner died: their flock is
//! free) into the cache, under one lock. The final state of every probed
//! path is observed from the live file system at merge time, so a `.pyc`
//! the pilot compiled is recorded as present. The new cache is written to
//! a temporary file and renamed over the old one: a reader or a killed
//! merger never sees a half-written cache. When every probe is already
//! answered by the cache, nothing is written, so N identical ranks rewrite
//! the cache about once.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use fmcache_format::layout::{acc, StatRec};
use fmcache_format::writer::{Builder, Content, DirentRec, Record};
use fmcache_format::{CacheView, EntryRef, Verify};
use rustix::fs::{Access, OFlags};

use crate::config::Config;
use crate::error::{MergeError, WriteStep};
use crate::journal::{self, Kind};
use crate::path;
use crate::path::show;
use crate::privacy;
use crate::recdir::RecDir;
use crate::scope::{self, Hints, Scope};
use crate::sys::{self, SysResult};

/// Listings longer than this are not recorded (their names pass through).
pub const MAX_LISTING: usize = 100_000;

const WANT_STAT: u8 = 1;
const WANT_LIST: u8 = 2;
const WANT_OPEN: u8 = 4;

#[derive(Clone, Debug, Default)]
pub struct MergeReport {
    pub journals: usize,
    pub probes: usize,
    pub paths: usize,
    pub excluded: usize,
    pub rewritten: bool,
    pub entries: usize,
    pub blobs: usize,
    /// Contents before compression.
    pub data_bytes: u64,
    /// Contents as stored in the cache (compressed).
    pub stored_bytes: u64,
    pub file_size: u64,
    /// The roots of the software the cache serves.
    pub roots: Vec<Vec<u8>>,
    /// Probed paths left out (not software), by group, largest first.
    pub left_out: Vec<(Vec<u8>, usize)>,
}

/// Paths whose writes do not exclude them: CPython's bytecode caches,
/// which CPython validates against the (cached) source's mtime and size,
/// so their final state is safe to serve.
pub fn self_validating(p: &[u8]) -> bool {
    path::file_name(p) == b"__pycache__"
        || path::parent(p).is_some_and(|d| path::file_name(d) == b"__pycache__")
}

/// What the journals ask for.
#[derive(Default)]
struct Wants {
    paths: BTreeMap<Vec<u8>, u8>,
    modified: BTreeSet<Vec<u8>>,
    /// Served directories whose listing and times the pilot changed (a
    /// name in them was created, removed or renamed, by the program or by
    /// recording itself), while they themselves stayed: kept for
    /// realpath's walk only, so their stat and listing pass through.
    changed_dirs: BTreeSet<Vec<u8>>,
    hints: Hints,
    probes: usize,
    /// Calls per probed path, repeats included (for `fmcache report`).
    calls: BTreeMap<Vec<u8>, u64>,
    /// Processes that ended (their `Process` records): those counted in
    /// `calls`. The two copies of an audited process write one.
    processes: u64,
    /// Probe identities seen, to match `Repeats` records to their path.
    by_hash: HashMap<u64, Vec<u8>>,
    repeats: Vec<(u64, u32)>,
}

impl Wants {
    fn add_journal(&mut self, bytes: &[u8]) {
        for (kind, p) in journal::decode(bytes) {
            self.probes += 1;
            let want = match kind {
                Kind::Process => {
                    self.probes -= 1;
                    self.processes += 1;
                    continue;
                }
                Kind::Repeats => {
                    self.probes -= 1;
                    self.repeats.extend(journal::parse_repeats(p));
                    continue;
                }
                Kind::Modify => {
                    if !self_validating(p) {
                        self.modified.insert(p.to_vec());
                    }
                    continue;
                }
                Kind::Prefix | Kind::Tree | Kind::UserArea | Kind::Include => {
                    self.probes -= 1;
                    let set = match kind {
                        Kind::Prefix => &mut self.hints.prefixes,
                        Kind::Tree => &mut self.hints.trees,
                        Kind::UserArea => &mut self.hints.user_areas,
                        _ => &mut self.hints.includes,
                    };
                    set.insert(path::trim_trailing_slash(p).to_vec());
                    continue;
                }
                Kind::Open => WANT_STAT | WANT_OPEN,
                Kind::List => WANT_STAT | WANT_LIST,
                Kind::Stat => WANT_STAT,
            };
            if p.first() != Some(&b'/') {
                continue;
            }
            *self.calls.entry(p.to_vec()).or_default() += 1;
            self.by_hash
                .insert(journal::probe_hash(kind, p), p.to_vec());
            *self.paths.entry(p.to_vec()).or_default() |= want;
            // Probing inside a directory records its listing, so later
            // probes of absent names are answered; ancestors are recorded
            // so realpath and failing walks can be answered (the scope
            // keeps those inside the software).
            let trimmed = path::trim_trailing_slash(p);
            if trimmed.len() != p.len() {
                *self.paths.entry(trimmed.to_vec()).or_default() |= WANT_STAT;
            }
            let mut child = trimmed;
            let mut first = true;
            while let Some(dir) = path::parent(child) {
                let w = if first && !path::has_dot_components(dir) {
                    WANT_STAT | WANT_LIST
                } else {
                    WANT_STAT
                };
                *self.paths.entry(dir.to_vec()).or_default() |= w;
                first = false;
                child = dir;
            }
        }
    }

    /// Adds the repeats to the calls of their paths (a repeat whose first
    /// record is in no journal of this merge is dropped).
    fn count_repeats(&mut self) {
        for (h, n) in std::mem::take(&mut self.repeats) {
            if let Some(p) = self.by_hash.get(&h) {
                *self.calls.entry(p.clone()).or_default() += u64::from(n);
            }
        }
        self.by_hash = HashMap::new();
    }

    /// Hints the probes themselves give: every shared object opened (the
    /// loader's and dlopen's, found by the recorder as opens) names a
    /// prefix, and a `site-packages` directory Python read from is
    /// software.
    fn probe_hints(&mut self) {
        for (p, &w) in &self.paths {
            if w & (WANT_OPEN | WANT_LIST) == 0 {
                continue;
            }
            if let Some(d) = scope::packages_dir(p) {
                self.hints.trees.insert(d.to_vec());
            }
            if w & WANT_OPEN != 0 && scope::is_shared_object_name(p) && is_regular_file(p) {
                self.hints.prefixes.insert(p.clone());
                // Also where it really lives (a symlinked lib directory).
                if let Some(real) = canonical(p) {
                    self.hints.prefixes.insert(real);
                }
            }
        }
    }

    /// Excluded: a modified path and everything under it.
    fn is_excluded(&self, p: &[u8]) -> bool {
        if self.modified.is_empty() {
            return false;
        }
        let mut cur = Some(p);
        while let Some(c) = cur {
            if self.modified.contains(c) {
                return true;
            }
            cur = path::parent(c);
        }
        false
    }

    /// A served directory kept for the walk only (`changed_dirs`).
    fn is_changed_dir(&self, p: &[u8]) -> bool {
        !self.is_excluded(p) && self.changed_dirs.contains(path::trim_trailing_slash(p))
    }
}

const LEFT_OUT: &[u8] = b"left-out\t";

/// The notes line format: `left-out<TAB>count<TAB>group`, largest first.
fn left_out_text(groups: &[(Vec<u8>, usize)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (g, n) in groups.iter().take(MAX_GROUPS) {
        t.extend_from_slice(LEFT_OUT);
        t.extend_from_slice(n.to_string().as_bytes());
        t.push(b'\t');
        t.extend_from_slice(g);
        t.push(b'\n');
    }
    t
}

const CALLS: &[u8] = b"calls\t";
const PROCESSES: &[u8] = b"processes\t";

/// What the pilot's processes asked of the served paths, repeats
/// included: `processes<TAB>n`, then `calls<TAB>count<TAB>path` lines.
/// Counted over the processes whose merge wrote the cache (a later merge
/// that finds the cache up to date leaves it, and its counts, alone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub processes: u64,
    pub by_path: BTreeMap<Vec<u8>, u64>,
}

impl Calls {
    fn text(&self) -> Vec<u8> {
        let mut t = Vec::new();
        if self.by_path.is_empty() {
            return t;
        }
        t.extend_from_slice(PROCESSES);
        t.extend_from_slice(self.processes.to_string().as_bytes());
        t.push(b'\n');
        for (p, n) in &self.by_path {
            t.extend_from_slice(CALLS);
            t.extend_from_slice(n.to_string().as_bytes());
            t.push(b'\t');
            t.extend_from_slice(p);
            t.push(b'\n');
        }
        t
    }
}

/// The pilot's call counts, read back from a cache's notes.
pub fn calls_notes(notes: &[u8]) -> Calls {
    let mut c = Calls::default();
    for l in notes.split(|&b| b == b'\n') {
        if let Some(n) = l.strip_prefix(PROCESSES) {
            c.processes = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = l.strip_prefix(CALLS) {
            let Some(tab) = rest.iter().position(|&b| b == b'\t') else {
                continue;
            };
            let Some(n) = std::str::from_utf8(&rest[..tab])
                .ok()
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            c.by_path.insert(rest[tab + 1..].to_vec(), n);
        }
    }
    c
}

/// Groups of probed paths the scope left out, read back from a cache's
/// notes.
pub fn left_out_notes(notes: &[u8]) -> Vec<(Vec<u8>, usize)> {
    notes
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let rest = l.strip_prefix(LEFT_OUT)?;
            let tab = rest.iter().position(|&b| b == b'\t')?;
            let n = std::str::from_utf8(&rest[..tab]).ok()?.parse().ok()?;
            Some((rest[tab + 1..].to_vec(), n))
        })
        .collect()
}

/// Groups kept in the notes.
const MAX_GROUPS: usize = 20;

/// Whether `p` is an ancestor of a root: walked through on the way to the
/// software, not data the pilot read.
fn is_ancestor_of_root(scope: &Scope, p: &[u8]) -> bool {
    scope.roots.iter().any(|r| path::under(r, p))
}

/// The canonical path of `p`, through the kernel (O_PATH, /proc/self/fd).
fn canonical(p: &[u8]) -> Option<Vec<u8>> {
    let c = sys::cstr(p).ok()?;
    let fd = sys::open(&c, OFlags::PATH, 0).ok()?;
    sys::fd_path(&fd).ok()
}

/// Whether `p` resolves into the kernel's trees (`/etc/mtab` is a symlink
/// to `/proc/self/mounts`, `/var/run` one to `/run`): those are never
/// served, whatever the spelling. Directories are resolved once each.
fn canonical_excluded(p: &[u8], dirs: &mut BTreeMap<Vec<u8>, bool>) -> bool {
    let Ok(c) = sys::cstr(p) else { return false };
    if sys::stat_rec(&c, false).is_ok_and(|st| st.is_symlink())
        && canonical(p).is_some_and(|r| scope::in_kernel_tree(&r))
    {
        return true;
    }
    let Some(dir) = path::parent(p) else {
        return false;
    };
    if let Some(&v) = dirs.get(dir) {
        return v;
    }
    let v = canonical(dir).is_some_and(|r| scope::in_kernel_tree(&r));
    dirs.insert(dir.to_vec(), v);
    v
}

fn is_regular_file(p: &[u8]) -> bool {
    sys::cstr(p)
        .ok()
        .and_then(|c| sys::stat_rec(&c, true).ok())
        .is_some_and(|st| st.is_reg())
}

/// The live state of a path (everything but file contents).
pub fn observe(p: &[u8], want: u8) -> Record<'static> {
    let mut rec = Record {
        path: p.to_vec(),
        ..Record::default()
    };
    let Ok(c) = sys::cstr(p) else {
        rec.lstat = Some(Err(libc::EINVAL));
        return rec;
    };
    rec.lstat = Some(sys::stat_rec(&c, false));
    if let Some(Ok(st)) = &rec.lstat {
        if st.is_symlink() {
            rec.link = sys::readlink(&c).ok();
            rec.follow = Some(sys::stat_rec(&c, true));
        }
    }
    let follow = rec.follow.as_ref().or(rec.lstat.as_ref());
    if let Some(Ok(st)) = follow {
        let st = *st;
        let a = [Access::READ_OK, Access::WRITE_OK, Access::EXEC_OK]
            .map(|m| sys::access(&c, m).clamp(0, 255) as u8);
        rec.access = Some(a);
        if want & WANT_LIST != 0 && st.is_dir() && a[acc::R] == 0 {
            rec.listing = sys::list_dir(&c).ok().filter(|l| l.len() <= MAX_LISTING);
        }
    }
    rec
}

fn wants_content(rec: &Record<'_>, max_file: u64) -> Option<StatRec> {
    let follow = rec.follow.as_ref().or(rec.lstat.as_ref())?;
    let st = *follow.as_ref().ok()?;
    let readable = rec.access.is_some_and(|a| a[acc::R] == 0);
    (st.is_reg() && readable && st.size as u64 <= max_file).then_some(st)
}

/// Reads the bytes of `p` if they still belong to the observed inode.
fn read_content(p: &[u8], expect: &StatRec, max_file: u64) -> Option<Content<'static>> {
    let c = sys::cstr(p).ok()?;
    let fd = sys::open(&c, OFlags::RDONLY | OFlags::NOCTTY, 0).ok()?;
    let mirror = sys::fd_path(&fd).ok()?;
    let (bytes, st) = read_fd(&fd, max_file).ok()?;
    let same = st.ino == expect.ino
        && st.dev == expect.dev
        && st.size == expect.size
        && st.mtime == expect.mtime
        && st.mtime_nsec == expect.mtime_nsec;
    (same && mirror.first() == Some(&b'/')).then_some(Content {
        mirror,
        bytes: Cow::Owned(bytes),
    })
}

fn read_fd(fd: &OwnedFd, limit: u64) -> SysResult<(Vec<u8>, StatRec)> {
    let st = sys::fstat_rec(fd)?;
    if st.size as u64 > limit {
        return Err(libc::EFBIG);
    }
    let mut buf = vec![0u8; st.size as usize];
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd.as_fd(), &mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(sys::errno(e)),
        }
    }
    buf.truncate(done);
    Ok((buf, st))
}

/// The record an existing entry holds, borrowing its bytes from `view`.
pub fn record_of<'a>(view: &CacheView<'a>, e: EntryRef<'a>) -> Record<'a> {
    let copy = |r: Option<Result<&StatRec, i32>>| r.map(|r| r.copied());
    let lstat = copy(e.lstat());
    let follow = copy(e.follow());
    Record {
        path: e.path().to_vec(),
        follow: if follow != lstat { follow } else { None },
        lstat,
        link: e.link_target().map(<[u8]>::to_vec),
        access: (0..3)
            .map(|i| e.access_errno(i).map(|v| v as u8))
            .collect::<Option<Vec<u8>>>()
            .map(|v| [v[0], v[1], v[2]]),
        listing: e.listing().map(|l| {
            l.iter()
                .map(|(n, t, i)| DirentRec {
                    name: n.to_vec(),
                    d_type: t,
                    ino: i,
                })
                .collect()
        }),
        content: match (e.blob(), e.mirror_path()) {
            (Some(b), Some(m)) => view.blob_bytes(b).map(|bytes| Content {
                mirror: m.to_vec(),
                bytes,
            }),
            _ => None,
        },
        excluded: e.is_excluded(),
        root: e.is_root(),
        walk: e.is_walk(),
    }
}

/// Equal stat answers, atime aside (reading a file or listing a directory
/// moves it, and the merge itself does both).
fn same_but_atime(a: &Option<Result<StatRec, i32>>, b: &Option<Result<StatRec, i32>>) -> bool {
    let strip = |r: &Option<Result<StatRec, i32>>| {
        r.map(|r| {
            r.map(|mut st| {
                st.atime = 0;
                st.atime_nsec = 0;
                st
            })
        })
    };
    strip(a) == strip(b)
}

/// Whether the cache already answers what `want` asks of `p`.
fn satisfied(view: &CacheView<'_>, p: &[u8], want: u8, max_file: u64) -> bool {
    let Some(e) = view.lookup(p) else {
        return false;
    };
    if e.is_excluded() {
        return true;
    }
    if e.lstat().is_none() {
        return false;
    }
    let rec = record_of(view, e);
    let follow_dir =
        matches!(rec.follow.as_ref().or(rec.lstat.as_ref()), Some(Ok(st)) if st.is_dir());
    let readable = rec.access.is_some_and(|a| a[acc::R] == 0);
    if want & WANT_LIST != 0 && follow_dir && readable && rec.listing.is_none() {
        return false;
    }
    if want & WANT_OPEN != 0 && wants_content(&rec, max_file).is_some() && rec.content.is_none() {
        return false;
    }
    true
}

/// Opens the current cache if it is valid for this build and ours (a
/// regular file, not a symlink, owned by us and writable by us alone: its
/// entries are carried into the new cache, which we will be served);
/// `None` otherwise (a fresh cache is then written).
fn current_cache(cache: &CStr) -> Option<sys::Mapping> {
    let fd = sys::open(
        cache,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        0,
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let ours = st.st_mode as u32 & libc::S_IFMT == libc::S_IFREG
        && st.st_uid == rustix::process::geteuid().as_raw()
        && st.st_mode as u32 & 0o022 == 0;
    if !ours {
        return None;
    }
    let map = sys::Mapping::map(&fd, st.st_size as usize).ok()?;
    CacheView::open(map.bytes(), Verify::Full).ok()?;
    Some(map)
}

/// Journal file names start with this in the record directory.
pub const JOURNAL_PREFIX: &[u8] = b"j.";
/// A cache being written, in the record directory.
pub const TMP_PREFIX: &[u8] = b"cache.tmp.";

/// The record directory of `cfg`, created if missing and checked (see
/// `recdir`); the error is one line naming it.
pub fn record_dir(cfg: &Config) -> Result<RecDir, MergeError> {
    let path = cfg.record_dir();
    RecDir::open_creating(&path).map_err(|why| MergeError::RecordDir { path, why })
}

/// Merges `own` (this process's journal path, if any: a name in the
/// record directory) and every orphaned journal into the cache.
pub fn merge(
    cfg: &Config,
    own: Option<&[u8]>,
    uid: u32,
    gid: u32,
) -> Result<MergeReport, MergeError> {
    merge_with(cfg, own, uid, gid, &mut |_, _| {})
}

/// [`merge`], telling `progress` (paths observed, paths to observe) as it
/// goes: once when the paths are known, then after each one (the tool
/// draws a bar from it; the library passes nothing).
pub fn merge_with(
    cfg: &Config,
    own: Option<&[u8]>,
    uid: u32,
    gid: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MergeReport, MergeError> {
    let rec = record_dir(cfg)?;
    let _lock = rec.lock().map_err(|why| MergeError::Lock {
        dir: cfg.record_dir(),
        why,
    })?;

    // Journals: our own, and those whose owner is gone (flock is free);
    // only regular files of ours, read through the descriptor checked.
    let own_name = own.map(path::file_name);
    let mut journals: Vec<(CString, OwnedFd)> = Vec::new();
    for name in rec.names() {
        let Ok(c) = CString::new(name.clone()) else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            // Only the lock holder writes one: this is a killed merger's.
            let _ = rec.unlink(&c);
            continue;
        }
        if !name.starts_with(JOURNAL_PREFIX) {
            continue;
        }
        let fd = if Some(name.as_slice()) == own_name {
            rec.open_own(&c, OFlags::RDONLY).ok()
        } else {
            rec.orphan(&c)
        };
        if let Some(fd) = fd {
            journals.push((c, fd));
        }
    }

    // Recording changes the cache's directory (the cache, its .rec, the
    // stats file): treat those as the pilot's own writes.
    let mut wants = Wants::default();
    wants.modified.insert(cfg.cache.clone());
    if let Some(stats) = &cfg.stats {
        wants.modified.insert(stats.clone());
    }
    for (_, fd) in &journals {
        if let Ok((bytes, _)) = read_fd(fd, u64::MAX) {
            wants.add_journal(&bytes);
        }
    }
    wants.probe_hints();
    wants.count_repeats();

    let cache_c = sys::cstr(&cfg.cache).map_err(|errno| MergeError::Sys {
        what: show(&cfg.cache),
        errno,
    })?;
    let old_map = current_cache(&cache_c);
    let old: Option<CacheView<'_>> = old_map
        .as_ref()
        .and_then(|m| CacheView::open(m.bytes(), Verify::Header).ok());
    let old_roots: Vec<Vec<u8>> = old
        .as_ref()
        .map(|v| {
            v.entries()
                .filter(|e| e.is_root())
                .map(|e| e.path().to_vec())
                .collect()
        })
        .unwrap_or_default();

    // The software this cache serves; everything else passes through.
    let scope = Scope::settle(cfg, &wants.hints, &old_roots);
    let mut left_out: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let all = std::mem::take(&mut wants.paths);
    // Ancestors of the roots: realpath walks through them (type only).
    let mut walks: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut resolved_dirs = BTreeMap::new();
    for (p, w) in all {
        if scope.serves(&p) && !canonical_excluded(&p, &mut resolved_dirs) {
            wants.paths.insert(p, w);
        } else if is_ancestor_of_root(&scope, &p) {
            if !path::has_dot_components(&p) {
                walks.insert(path::trim_trailing_slash(&p).to_vec());
            }
        } else if !wants
            .hints
            .user_areas
            .iter()
            .any(|a| path::under(a, &p) && *a != p)
            && !scope::in_kernel_tree(&p)
        {
            // Left out, for the report (directories walked through to the
            // user's areas, and the kernel's trees, are not what the pilot
            // read).
            *left_out
                .entry(scope.group_of(&wants.hints, &p))
                .or_default() += 1;
        }
    }
    // A change's directory changed too, whether or not the scope serves
    // the changed name (a directory the program made under a served one
    // that FMCACHE_EXCLUDE leaves out, the cache written into an included
    // job directory); once changed, a directory stays walk-only in this
    // cache (earlier merges' walk entries inside the scope).
    // What an earlier merge excluded stays excluded (another rank's
    // journal that only read it must not make it served again).
    if let Some(view) = &old {
        for e in view.entries() {
            if e.is_walk() && scope.serves(e.path()) {
                wants.changed_dirs.insert(e.path().to_vec());
            } else if e.is_excluded() && scope.serves(e.path()) {
                wants.modified.insert(e.path().to_vec());
            }
        }
    }
    // Only directories the cache would otherwise answer for (probed now,
    // or recorded before): every merge counts its own files again, so a
    // directory probed later still meets its change.
    for m in &wants.modified {
        if let Some(d) = path::parent(m) {
            let known =
                wants.paths.contains_key(d) || old.as_ref().is_some_and(|v| v.lookup(d).is_some());
            if known && scope.serves(d) && !canonical_excluded(d, &mut resolved_dirs) {
                wants.changed_dirs.insert(d.to_vec());
            }
        }
    }
    wants.modified.retain(|m| scope.serves(m));
    let changed_dirs: Vec<Vec<u8>> = wants
        .changed_dirs
        .iter()
        .filter(|d| !wants.is_excluded(d))
        .cloned()
        .collect();
    // Roots that hold something served are marked in the cache.
    let roots: Vec<Vec<u8>> = scope
        .roots
        .iter()
        .filter(|r| {
            wants
                .paths
                .range(r.to_vec()..)
                .take_while(|(p, _)| p.starts_with(r))
                .any(|(p, _)| path::under(p, r))
                || old_roots.contains(r)
        })
        .cloned()
        .collect();
    // The groups earlier merges left out stay in the notes (largest count).
    for (g, n) in old
        .as_ref()
        .map(|v| left_out_notes(v.notes()))
        .unwrap_or_default()
    {
        let e = left_out.entry(g).or_default();
        *e = (*e).max(n);
    }
    let mut groups: Vec<(Vec<u8>, usize)> = left_out.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    // Call counts of the served paths only (the rest is the user's, and
    // passes through), added to those the cache holds.
    let old_calls = old
        .as_ref()
        .map(|v| calls_notes(v.notes()))
        .unwrap_or_default();
    let mut calls = old_calls.clone();
    calls.processes += wants.processes;
    for (p, n) in std::mem::take(&mut wants.calls) {
        if wants.paths.contains_key(&p) && !p.contains(&b'\n') {
            *calls.by_path.entry(p).or_default() += n;
        }
    }

    let mut report = MergeReport {
        journals: journals.len(),
        probes: wants.probes,
        paths: wants.paths.len(),
        roots: roots.clone(),
        left_out: groups,
        ..MergeReport::default()
    };

    let newly_excluded = |view: &CacheView<'_>| {
        view.entries()
            .any(|e| !e.is_excluded() && wants.is_excluded(e.path()))
    };
    let changed_dirs_kept = |view: &CacheView<'_>| {
        changed_dirs
            .iter()
            .all(|d| view.lookup(d).is_some_and(|e| e.is_walk()))
    };
    // No journal: nothing new was asked for; the cache stays as it is.
    // The first counts are worth a rewrite; later ones are not.
    let first_counts = old_calls.by_path.is_empty() && !calls.by_path.is_empty();
    let up_to_date = !first_counts
        && (journals.is_empty()
            || match &old {
                Some(view) => {
                    wants.paths.iter().all(|(p, &w)| {
                        wants.is_excluded(p)
                            || wants.is_changed_dir(p)
                            || satisfied(view, p, w, cfg.max_file)
                    }) && wants
                        .modified
                        .iter()
                        .all(|m| view.lookup(m).is_some_and(|e| e.is_excluded()))
                        && !newly_excluded(view)
                        && changed_dirs_kept(view)
                        && roots.iter().all(|r| old_roots.contains(r))
                        && walks
                            .iter()
                            .all(|w| view.lookup(w).is_some_and(|e| e.is_walk()))
                        && view.entries().all(|e| {
                            scope.serves(e.path())
                                || (e.is_walk() && is_ancestor_of_root(&scope, e.path()))
                        })
                }
                None => {
                    wants.paths.is_empty() && wants.modified.is_empty() && changed_dirs.is_empty()
                }
            });

    if !up_to_date {
        let mut builder = Builder::new(uid, gid);
        let mut notes = left_out_text(&report.left_out);
        notes.extend(calls.text());
        builder.notes(notes);
        let mut rooted: BTreeSet<Vec<u8>> = BTreeSet::new();
        if let Some(view) = &old {
            for e in view.entries() {
                if e.is_walk() {
                    if is_ancestor_of_root(&scope, e.path()) {
                        builder.add(record_of(view, e));
                    }
                    continue;
                }
                if !scope.serves(e.path()) {
                    continue;
                }
                let mut r = record_of(view, e);
                if wants.is_excluded(&r.path) {
                    r = Record {
                        path: r.path,
                        excluded: true,
                        ..Record::default()
                    };
                }
                r.root = roots.contains(&r.path);
                if r.root {
                    rooted.insert(r.path.clone());
                }
                builder.add(r);
            }
        }
        let total = (wants.paths.len() + walks.len() + changed_dirs.len()) as u64;
        let mut done = 0u64;
        progress(done, total);
        for (p, &w) in &wants.paths {
            done += 1;
            progress(done, total);
            let root = roots.contains(p);
            if root {
                rooted.insert(p.clone());
            }
            if wants.is_excluded(p) {
                builder.add(Record {
                    path: p.clone(),
                    excluded: true,
                    root,
                    ..Record::default()
                });
                report.excluded += 1;
                continue;
            }
            let mut rec = observe(p, w);
            rec.root = root;
            let prior = old
                .as_ref()
                .and_then(|v| v.lookup(p).map(|e| record_of(v, e)));
            if let Some(prior) = &prior {
                // Keep a listing another process recorded.
                if rec.listing.is_none()
                    && same_but_atime(&prior.lstat, &rec.lstat)
                    && same_but_atime(&prior.follow, &rec.follow)
                {
                    rec.listing = prior.listing.clone();
                }
            }
            if let Some(st) = wants_content(&rec, cfg.max_file) {
                let reuse = prior.as_ref().and_then(|pr| {
                    match (&pr.content, pr.follow.as_ref().or(pr.lstat.as_ref())) {
                        (Some(c), Some(Ok(pst)))
                            if same_but_atime(&Some(Ok(*pst)), &Some(Ok(st))) =>
                        {
                            Some(c.clone())
                        }
                        _ => None,
                    }
                });
                let prior_had = prior.as_ref().is_some_and(|pr| pr.content.is_some());
                if w & WANT_OPEN != 0 || prior_had {
                    rec.content = reuse.or_else(|| read_content(p, &st, cfg.max_file));
                }
            }
            builder.add(rec);
        }
        for m in &wants.modified {
            builder.add(Record {
                path: m.clone(),
                excluded: true,
                root: roots.contains(m),
                ..Record::default()
            });
        }
        for w in walks.iter().chain(&changed_dirs) {
            done += 1;
            progress(done, total);
            let o = observe(w, WANT_STAT);
            let root = roots.contains(w);
            if root {
                rooted.insert(w.clone());
            }
            builder.add(Record {
                path: o.path,
                lstat: o.lstat,
                follow: o.follow,
                link: o.link,
                walk: true,
                root,
                ..Record::default()
            });
        }
        // A root nobody probed exactly (its contents were) gets its stat.
        for r in roots.iter().filter(|r| !rooted.contains(*r)) {
            if !wants.modified.contains(r) {
                let mut rec = observe(r, WANT_STAT);
                rec.root = true;
                builder.add(rec);
            }
        }
        let written = write_cache(cfg, &rec, builder)?;
        report.rewritten = true;
        // Running jobs on this node read the new cache from their next
        // process on (stage.rs, forget_jobs).
        crate::stage::forget_jobs(cfg);
        // And trees outside a job that inherited the old version's stage.
        if let Some(v) = &old {
            if v.header().checksum != written.checksum {
                crate::stage::superseded(cfg, v.header().checksum);
            }
        }
        report.entries = written.entries;
        report.blobs = written.blobs;
        report.data_bytes = written.content_bytes;
        report.stored_bytes = written.data_bytes;
        report.file_size = written.file_size;
    } else if let Some(view) = &old {
        report.entries = view.entry_count();
        report.file_size = view.header().file_size;
    }
    drop(old_map);

    for (name, _) in &journals {
        let _ = rec.unlink(name);
    }
    Ok(report)
}

/// Writes the cache as `<cache>.rec/cache.tmp.<pid>` (created exclusively,
/// owner-only while written), gives it its mode (`privacy`) and renames it
/// into place.
fn write_cache(
    cfg: &Config,
    rec: &RecDir,
    builder: Builder<'_>,
) -> Result<fmcache_format::Written, MergeError> {
    let name = format!(
        "{}{}",
        String::from_utf8_lossy(TMP_PREFIX),
        rustix::process::getpid().as_raw_nonzero()
    );
    let tmp_path = [&cfg.record_dir()[..], b"/", name.as_bytes()].concat();
    let failed = |step, path: &[u8], err| MergeError::Write {
        step,
        path: path.to_vec(),
        err,
    };
    let io = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
    let name = CString::new(name).map_err(|_| MergeError::Sys {
        what: show(&tmp_path),
        errno: libc::EINVAL,
    })?;
    let cache_c = sys::cstr(&cfg.cache).map_err(|errno| MergeError::Sys {
        what: show(&cfg.cache),
        errno,
    })?;
    let fd = rec
        .create(&name, OFlags::WRONLY, 0o600)
        .map_err(|e| failed(WriteStep::Create, &tmp_path, io(e)))?;
    let mode = privacy::cache_mode(builder.records(), privacy::umask().unwrap_or(0o077));
    let result = builder
        .write(&mut sys::FdWriter(fd.as_fd()))
        .map_err(|e| failed(WriteStep::Write, &tmp_path, e))
        .and_then(|w| {
            rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(|e| failed(WriteStep::Chmod, &tmp_path, io(e)))?;
            drop(fd);
            rustix::fs::renameat(rec.fd(), &*name, rustix::fs::CWD, &*cache_c)
                .map_err(|e| failed(WriteStep::Rename, &cfg.cache, io(e)))?;
            Ok(w)
        });
    if result.is_err() {
        let _ = rec.unlink(&name);
    }
    result
}
