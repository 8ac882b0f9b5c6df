//! `fmcache verify`: is the cache still what the file system holds?
//!
//! Every entry is compared with the live file system: stat and lstat
//! fields, recorded failures, link targets, access results, listings and
//! content hashes. A tool, not the interposer: std is fine here.

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use fmcache_core::path;
use fmcache_format::layout::{acc, StatRec};
use fmcache_format::{blob_hash, CacheView, EntryRef, Verify};

use crate::inspect::{errno_name, load};
use crate::launch::{self, os, show};
use crate::progress::Progress;

/// Compare a cache with the live file system
///
/// Checks every entry: stat/lstat fields (all but atime; st_dev only
/// with --dev), failed lookups that now succeed, link targets,
/// access results, directory listings and the XXH3-128 of each file's
/// contents. Within a job (SLURM_JOB_ID, ...), also whether the job's
/// stage on this node holds this cache or an older one. Prints one line
/// per difference (times as UTC dates) and a summary, where a file whose
/// size or contents differ counts as a content change, other metadata
/// as changed; a progress bar on stderr when it is a terminal. Exits 0
/// when the cache is fresh, 1 when stale, 2 when it cannot be read.
#[derive(clap::Args)]
pub struct Args {
    /// Cache file [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(value_name = "FILE")]
    file: Option<OsString>,
    /// Compare st_dev too. Left out by default, as FMCACHE_VERIFY=stat
    /// does: clients of one parallel file system may number it differently.
    #[arg(long)]
    dev: bool,
    /// Print at most N difference lines (the summary counts all).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_lines: usize,
    /// Check only the entries at or under P, a root the cache serves or
    /// a directory under one (repeatable; `fmcache inspect` lists the
    /// roots). The ancestors walked through to the roots are left out.
    #[arg(long, value_name = "P")]
    root: Vec<OsString>,
}

/// What one comparison found.
#[derive(Default)]
struct Tally {
    checked: u64,
    changed: u64,
    appeared: u64,
    vanished: u64,
    listings: u64,
    contents: u64,
    lines: usize,
    max_lines: usize,
    progress: Option<Progress>,
}

impl Tally {
    fn report(&mut self, line: String) {
        if self.lines < self.max_lines {
            match &self.progress {
                Some(p) => p.println(&line),
                None => println!("{line}"),
            }
        }
        self.lines += 1;
    }
    fn stale(&self) -> bool {
        self.changed + self.appeared + self.vanished + self.listings + self.contents > 0
    }
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.file.as_deref())?;
    let name = show(&cfg.cache);
    let loaded = match load(&cfg.cache) {
        Ok(l) => l,
        Err(e) => return error(format!("{name}: {e}")),
    };
    let view = match CacheView::open(loaded.bytes(), Verify::Full) {
        Ok(v) => v,
        Err(e) => return error(format!("{name}: {e}")),
    };
    let only = match limits(&view, &args.root) {
        Ok(l) => l,
        Err(e) => return error(format!("{name}: {e}")),
    };
    let wanted = |e: &EntryRef<'_>| {
        !e.is_excluded() && (only.is_empty() || only.iter().any(|r| path::under(e.path(), r)))
    };
    let total = view.entries().filter(wanted).count() as u64;
    let mut t = Tally {
        max_lines: args.max_lines,
        progress: Some(Progress::new("verify", "entries", total)),
        ..Tally::default()
    };
    for e in view.entries().filter(wanted) {
        t.checked += 1;
        check_entry(&e, args.dev, &mut t);
        if let Some(p) = &t.progress {
            p.inc();
        }
    }
    if let Some(p) = t.progress.take() {
        p.finish();
    }
    // Within a job, this node's processes serve the stage the job's
    // pointer names, read once per job and node: a cache replaced since
    // (other than by a merge on this node, which drops the pointer) is
    // not what they serve.
    let older_stage = match fmcache_core::stage::job_checksum(&cfg) {
        Some((job, served)) if served != view.header().checksum => {
            t.report(format!(
                "stage: job {} on this node serves another version of this cache (checksum {served:016x}, \
                 the file now {:016x}); its later processes read the file after `fmcache stage --clean` \
                 on this node, or in the next job",
                show(&job),
                view.header().checksum
            ));
            true
        }
        _ => false,
    };
    // Outside a job, a process tree keeps the version its first process
    // attached (FMCACHE_ATTACHED): run inside such a tree, say so when it
    // is not the file's.
    let older_tree = match fmcache_core::stage::tree_checksum(&cfg) {
        Some(served) if served != view.header().checksum => {
            t.report(format!(
                "stage: this process tree serves another version of this cache (checksum {served:016x}, \
                 the file now {:016x}); processes started outside it read the file",
                view.header().checksum
            ));
            true
        }
        _ => false,
    };
    let stale = t.stale() || older_stage || older_tree;
    println!(
        "{name}: {} entries checked{}: {} changed, {} appeared, {} vanished, {} listings and {} contents differ{}: {}",
        t.checked,
        if only.is_empty() {
            String::new()
        } else {
            format!(" under {}", only.iter().map(|r| show(r)).collect::<Vec<_>>().join(", "))
        },
        t.changed,
        t.appeared,
        t.vanished,
        t.listings,
        t.contents,
        if older_stage {
            ", the job's stage holds another version"
        } else {
            ""
        },
        if stale { "STALE" } else { "fresh" }
    );
    Ok(ExitCode::from(if stale { 1 } else { 0 }))
}

fn error(msg: String) -> Result<ExitCode, String> {
    eprintln!("fmcache: {msg}");
    Ok(ExitCode::from(2))
}

/// What one entry's comparison found: it is counted once in the summary,
/// as a content change if its size or contents differ, else as changed.
#[derive(Default)]
struct Found {
    meta: bool,
    content: bool,
}

fn check_entry(e: &EntryRef<'_>, dev: bool, t: &mut Tally) {
    let path = show(e.path());
    let p = os(e.path());
    let lstat_now = std::fs::symlink_metadata(p);
    let follow_now = std::fs::metadata(p);
    let mut f = Found::default();
    let mut stat_reported = false;
    for (what, rec, now) in [
        ("lstat", e.lstat(), &lstat_now),
        ("stat", e.follow(), &follow_now),
    ] {
        match (rec, now) {
            (None, _) => {}
            (Some(Err(_)), Ok(_)) => {
                t.appeared += 1;
                t.report(format!("appeared {path} ({what} now succeeds)"));
                return;
            }
            (Some(Ok(_)), Err(err)) => {
                t.vanished += 1;
                let e = errno_name(err.raw_os_error().unwrap_or(0));
                t.report(format!("vanished {path} ({what}: {e})"));
                return;
            }
            (Some(Err(was)), Err(err)) => {
                let is = err.raw_os_error().unwrap_or(0);
                if is != was {
                    t.changed += 1;
                    let (a, b) = (errno_name(was), errno_name(is));
                    t.report(format!("changed {path}: {what} {a} -> {b}"));
                    return;
                }
            }
            (Some(Ok(rec)), Ok(m)) => {
                // A walk entry (an ancestor of the software, or a directory
                // the pilot changed) serves realpath its type alone.
                let diffs = if e.is_walk() {
                    type_diff(rec, m)
                } else {
                    stat_diffs(rec, m, dev)
                };
                if !diffs.is_empty() && !stat_reported {
                    stat_reported = true;
                    // A regular file of another size holds other bytes.
                    let resized = !e.is_walk()
                        && rec.mode & libc::S_IFMT == libc::S_IFREG
                        && m.mode() & libc::S_IFMT == libc::S_IFREG
                        && rec.size != m.size() as i64;
                    let kind = if resized {
                        f.content = true;
                        "contents"
                    } else {
                        f.meta = true;
                        "changed"
                    };
                    t.report(format!("{kind} {path}: {what} {}", diffs.join(", ")));
                }
            }
        }
    }
    if let Some(target) = e.link_target() {
        match std::fs::read_link(p) {
            Ok(now) if now.as_os_str().as_encoded_bytes() == target => {}
            Ok(now) => {
                f.meta = true;
                let now = show(now.as_os_str().as_encoded_bytes());
                t.report(format!("changed {path}: link {} -> {now}", show(target)));
            }
            Err(_) => {}
        }
    }
    check_access(e, &path, t, &mut f);
    check_listing(e, &path, t);
    // A new size already said the contents differ.
    if !f.content {
        check_contents(e, &path, t, &mut f);
    }
    if f.content {
        t.contents += 1;
    } else if f.meta {
        t.changed += 1;
    }
}

/// The roots `--root` names, checked: each at or under a root the cache
/// serves; the error lists the roots.
fn limits(view: &CacheView<'_>, asked: &[OsString]) -> Result<Vec<Vec<u8>>, String> {
    let roots: Vec<&[u8]> = view
        .entries()
        .filter(|e| e.is_root())
        .map(|e| e.path())
        .collect();
    asked
        .iter()
        .map(|a| {
            let mut b = path::PathBuf::new();
            let a = a.as_encoded_bytes();
            if !a.starts_with(b"/") || !path::normalize(None, a, &mut b) {
                return Err(format!("--root {}: not an absolute path", show(a)));
            }
            let p = b.as_bytes().to_vec();
            if roots.iter().any(|r| path::under(&p, r)) {
                Ok(p)
            } else {
                Err(format!(
                    "--root {}: not at or under a root this cache serves ({})",
                    show(&p),
                    roots.iter().map(|r| show(r)).collect::<Vec<_>>().join(", ")
                ))
            }
        })
        .collect()
}

/// The file type, if it differs, as "type a -> b" (octal S_IFMT bits).
fn type_diff(rec: &StatRec, m: &Metadata) -> Vec<String> {
    let (a, b) = (rec.mode & libc::S_IFMT, m.mode() & libc::S_IFMT);
    if a == b {
        Vec::new()
    } else {
        vec![format!("type {a:o} -> {b:o}")]
    }
}

/// The recorded fields that differ from the live metadata, as "field a -> b".
fn stat_diffs(rec: &StatRec, m: &Metadata, dev: bool) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, a: i128, b: i128| {
        if a != b {
            d.push(format!("{name} {a} -> {b}"));
        }
    };
    if dev {
        cmp("dev", rec.dev as i128, m.dev() as i128);
    }
    cmp("ino", rec.ino as i128, m.ino() as i128);
    cmp("mode", rec.mode as i128, m.mode() as i128);
    cmp("nlink", rec.nlink as i128, m.nlink() as i128);
    cmp("uid", rec.uid as i128, m.uid() as i128);
    cmp("gid", rec.gid as i128, m.gid() as i128);
    cmp("size", rec.size as i128, m.size() as i128);
    for (name, a, b) in [
        (
            "mtime",
            (rec.mtime, rec.mtime_nsec),
            (m.mtime(), m.mtime_nsec()),
        ),
        (
            "ctime",
            (rec.ctime, rec.ctime_nsec),
            (m.ctime(), m.ctime_nsec()),
        ),
    ] {
        if a != b {
            // Nanoseconds only when the seconds agree.
            let fine = a.0 == b.0;
            d.push(format!("{name} {} -> {}", utc(a, fine), utc(b, fine)));
        }
    }
    d
}

/// A time as a UTC date, "2026-12-05 19:30:02 UTC" (with `.nnnnnnnnn`
/// after the seconds when `fine`).
pub fn utc((secs, nsec): (i64, i64), fine: bool) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, mi, s) = (rest / 3_600, rest / 60 % 60, rest % 60);
    let frac = if fine {
        format!(".{nsec:09}")
    } else {
        String::new()
    };
    format!("{year:04}-{month:02}-{day:02} {h:02}:{mi:02}:{s:02}{frac} UTC")
}

fn check_access(e: &EntryRef<'_>, path: &str, t: &mut Tally, f: &mut Found) {
    let Ok(c) = CString::new(e.path()) else {
        return;
    };
    for (which, mode, name) in [
        (acc::R, libc::R_OK, "R"),
        (acc::W, libc::W_OK, "W"),
        (acc::X, libc::X_OK, "X"),
    ] {
        let Some(was) = e.access_errno(which) else {
            continue;
        };
        // SAFETY: `c` is a valid C string.
        let rc = unsafe { libc::access(c.as_ptr(), mode) };
        let is = if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        };
        if is != was {
            f.meta = true;
            let show_e = |e: i32| {
                if e == 0 {
                    "ok".to_string()
                } else {
                    errno_name(e)
                }
            };
            t.report(format!(
                "changed {path}: access {name} {} -> {}",
                show_e(was),
                show_e(is)
            ));
        }
    }
}

fn check_listing(e: &EntryRef<'_>, path: &str, t: &mut Tally) {
    let Some(listing) = e.listing() else {
        return;
    };
    let was: BTreeSet<Vec<u8>> = listing
        .iter()
        .map(|(n, _, _)| n.to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    let Ok(rd) = std::fs::read_dir(os(e.path())) else {
        return; // the stat comparison already reported it
    };
    let now: BTreeSet<Vec<u8>> = rd
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().as_encoded_bytes().to_vec())
        .collect();
    if was == now {
        return;
    }
    let added: Vec<String> = now
        .difference(&was)
        .map(|n| format!("+{}", show(n)))
        .collect();
    let removed: Vec<String> = was
        .difference(&now)
        .map(|n| format!("-{}", show(n)))
        .collect();
    t.listings += 1;
    t.report(format!(
        "listing {path}: {}",
        [added, removed].concat().join(" ")
    ));
}

fn check_contents(e: &EntryRef<'_>, path: &str, t: &mut Tally, f: &mut Found) {
    let Some(blob) = e.blob() else {
        return;
    };
    let Ok(bytes) = std::fs::read(os(e.path())) else {
        return; // unreadable now: reported by the access or stat comparison
    };
    if blob_hash(&bytes) != blob.hash {
        f.content = true;
        t.report(format!(
            "contents {path}: {} bytes recorded, {} now, hash differs",
            blob.size,
            bytes.len()
        ));
    }
}
