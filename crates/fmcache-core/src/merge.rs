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
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use fmcache_format::layout::{acc, StatRec};
use fmcache_format::writer::{Builder, Content, DirentRec, Record};
use fmcache_format::{CacheView, EntryRef, Verify};
use rustix::fs::{Access, OFlags};

use crate::config::Config;
use crate::journal::{self, Kind};
use crate::path;
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
    pub data_bytes: u64,
    pub file_size: u64,
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
    probes: usize,
}

impl Wants {
    fn add_journal(&mut self, bytes: &[u8], cfg: &Config) {
        for (kind, p) in journal::decode(bytes) {
            self.probes += 1;
            if kind == Kind::Modify {
                if !self_validating(p) {
                    self.modified.insert(p.to_vec());
                }
                continue;
            }
            if !cfg.in_scope(p) {
                continue;
            }
            let want = match kind {
                Kind::Open => WANT_STAT | WANT_OPEN,
                Kind::List => WANT_STAT | WANT_LIST,
                _ => WANT_STAT,
            };
            *self.paths.entry(p.to_vec()).or_default() |= want;
            // Probing inside a directory records its listing, so later
            // probes of absent names are answered; ancestors are recorded
            // so realpath and failing walks can be answered.
            let trimmed = path::trim_trailing_slash(p);
            if trimmed.len() != p.len() {
                *self.paths.entry(trimmed.to_vec()).or_default() |= WANT_STAT;
            }
            let mut child = trimmed;
            let mut first = true;
            while let Some(dir) = path::parent(child) {
                if !cfg.in_scope(dir) {
                    break;
                }
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

    /// Excluded: a modified path, everything under it, and its parent
    /// (whose listing and times it changed).
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
        self.modified.iter().any(|m| path::parent(m) == Some(p))
    }
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
                bytes: Cow::Borrowed(bytes),
            }),
            _ => None,
        },
        excluded: e.is_excluded(),
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

/// Opens the current cache if it is valid for this build; `None` otherwise
/// (a fresh cache is then written).
fn current_cache(cache: &CStr) -> Option<sys::Mapping> {
    let fd = sys::open(cache, OFlags::RDONLY, 0).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let map = sys::Mapping::map(&fd, st.st_size as usize).ok()?;
    CacheView::open(map.bytes(), Verify::Full).ok()?;
    Some(map)
}

/// Journal file names start with this in the record directory.
pub const JOURNAL_PREFIX: &[u8] = b"j.";
/// A cache being written, in the record directory.
pub const TMP_PREFIX: &[u8] = b"cache.tmp.";

/// Merges `own` (this process's journal path, if any) and every orphaned
/// journal into the cache.
pub fn merge(cfg: &Config, own: Option<&[u8]>, uid: u32, gid: u32) -> Result<MergeReport, String> {
    let rec_dir = cfg.record_dir();
    sys::mkdir_p(&rec_dir, 0o700).map_err(|e| format!("{}: {}", show(&rec_dir), strerror(e)))?;
    let mut lock_path = rec_dir.clone();
    lock_path.extend_from_slice(b"/lock");
    let _lock = sys::lock_file(&lock_path)
        .map_err(|e| format!("lock {}: {}", show(&lock_path), strerror(e)))?;

    // Journals: our own, and those whose owner is gone (flock is free).
    let mut journals: Vec<(Vec<u8>, Option<OwnedFd>)> = Vec::new();
    if let Some(o) = own {
        journals.push((o.to_vec(), None));
    }
    let rec_c = sys::cstr(&rec_dir).map_err(strerror)?;
    for d in sys::list_dir(&rec_c).unwrap_or_default() {
        let mut p = rec_dir.clone();
        p.push(b'/');
        p.extend_from_slice(&d.name);
        if d.name.starts_with(TMP_PREFIX) {
            // Only the lock holder writes one: this is a killed merger's.
            if let Ok(c) = sys::cstr(&p) {
                let _ = rustix::fs::unlinkat(rustix::fs::CWD, &*c, rustix::fs::AtFlags::empty());
            }
            continue;
        }
        if !d.name.starts_with(JOURNAL_PREFIX) {
            continue;
        }
        if Some(p.as_slice()) == own {
            continue;
        }
        let Ok(c) = sys::cstr(&p) else { continue };
        let Ok(fd) = sys::open(&c, OFlags::RDONLY, 0) else {
            continue;
        };
        if rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            journals.push((p, Some(fd)));
        }
    }

    // Recording changes the cache's directory (the cache, its .rec, the
    // stats file): treat those as the pilot's own writes.
    let mut wants = Wants::default();
    wants.modified.insert(cfg.cache.clone());
    if let Some(stats) = &cfg.stats {
        wants.modified.insert(stats.clone());
    }
    for (p, _) in &journals {
        if let Ok(c) = sys::cstr(p) {
            if let Ok(fd) = sys::open(&c, OFlags::RDONLY, 0) {
                if let Ok((bytes, _)) = read_fd(&fd, u64::MAX) {
                    wants.add_journal(&bytes, cfg);
                }
            }
        }
    }

    let cache_c = sys::cstr(&cfg.cache).map_err(strerror)?;
    let old_map = current_cache(&cache_c);
    let old: Option<CacheView<'_>> = old_map
        .as_ref()
        .and_then(|m| CacheView::open(m.bytes(), Verify::Header).ok());
    let mut report = MergeReport {
        journals: journals.len(),
        probes: wants.probes,
        paths: wants.paths.len(),
        ..MergeReport::default()
    };

    let newly_excluded = |view: &CacheView<'_>| {
        view.entries()
            .any(|e| !e.is_excluded() && wants.is_excluded(e.path()))
    };
    let up_to_date = match &old {
        Some(view) => {
            wants
                .paths
                .iter()
                .all(|(p, &w)| wants.is_excluded(p) || satisfied(view, p, w, cfg.max_file))
                && wants
                    .modified
                    .iter()
                    .filter(|m| cfg.in_scope(m))
                    .all(|m| view.lookup(m).is_some_and(|e| e.is_excluded()))
                && !newly_excluded(view)
        }
        None => wants.paths.is_empty() && !wants.modified.iter().any(|m| cfg.in_scope(m)),
    };

    if !up_to_date {
        let mut builder = Builder::new(uid, gid);
        if let Some(view) = &old {
            for e in view.entries() {
                let mut r = record_of(view, e);
                if wants.is_excluded(&r.path) {
                    r = Record {
                        path: r.path,
                        excluded: true,
                        ..Record::default()
                    };
                }
                builder.add(r);
            }
        }
        for (p, &w) in &wants.paths {
            if wants.is_excluded(p) {
                builder.add(Record {
                    path: p.clone(),
                    excluded: true,
                    ..Record::default()
                });
                report.excluded += 1;
                continue;
            }
            let mut rec = observe(p, w);
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
            if cfg.in_scope(m) {
                builder.add(Record {
                    path: m.clone(),
                    excluded: true,
                    ..Record::default()
                });
            }
        }
        let written = write_cache(cfg, builder)?;
        report.rewritten = true;
        // Running jobs on this node read the new cache from their next
        // process on (stage.rs, forget_jobs).
        crate::stage::forget_jobs(cfg);
        report.entries = written.entries;
        report.blobs = written.blobs;
        report.data_bytes = written.data_bytes;
        report.file_size = written.file_size;
    } else if let Some(view) = &old {
        report.entries = view.entry_count();
        report.file_size = view.header().file_size;
    }
    drop(old_map);

    for (p, _) in &journals {
        if let Ok(c) = sys::cstr(p) {
            let _ = rustix::fs::unlinkat(rustix::fs::CWD, &*c, rustix::fs::AtFlags::empty());
        }
    }
    Ok(report)
}

/// Writes a cache next to its final name and renames it into place.
fn write_cache(cfg: &Config, builder: Builder<'_>) -> Result<fmcache_format::Written, String> {
    let mut tmp = cfg.cache.clone();
    tmp.extend_from_slice(
        format!(".tmp.{}", rustix::process::getpid().as_raw_nonzero()).as_bytes(),
    );
    let tmp_c = sys::cstr(&tmp).map_err(strerror)?;
    let fd = sys::open(
        &tmp_c,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
        0o644,
    )
    .map_err(|e| format!("create {}: {}", show(&tmp), strerror(e)))?;
    // The cache serves code: writable by its owner alone, whatever the umask.
    let _ = rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o644));
    let result = builder.write(&mut sys::FdWriter(fd.as_fd()));
    let cache_c = sys::cstr(&cfg.cache).map_err(strerror)?;
    match result {
        Ok(w) => {
            drop(fd);
            rustix::fs::renameat(rustix::fs::CWD, &*tmp_c, rustix::fs::CWD, &*cache_c)
                .map_err(|e| format!("rename to {}: {}", show(&cfg.cache), e))?;
            Ok(w)
        }
        Err(e) => {
            let _ = rustix::fs::unlinkat(rustix::fs::CWD, &*tmp_c, rustix::fs::AtFlags::empty());
            Err(format!("write {}: {}", show(&tmp), e))
        }
    }
}

pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

pub fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}
