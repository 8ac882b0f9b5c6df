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

use fmcache_format::layout::{acc, StatRec};
use fmcache_format::{blob_hash, CacheView, EntryRef, Verify};

use crate::inspect::{errno_name, load};
use crate::launch::{self, os, show};

/// Compare a cache with the live file system
///
/// Checks every entry: stat/lstat fields (all but atime; st_dev only
/// with --dev), failed lookups that now succeed, link targets,
/// access results, directory listings and the XXH3-128 of each file's
/// contents. Within a job (SLURM_JOB_ID, ...), also whether the job's
/// stage on this node holds this cache or an older one. Prints one line per difference and a summary; exits 0 when
/// the cache is fresh, 1 when stale, 2 when it cannot be read.
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
}

impl Tally {
    fn report(&mut self, line: String) {
        if self.lines < self.max_lines {
            println!("{line}");
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
    let mut t = Tally {
        max_lines: args.max_lines,
        ..Tally::default()
    };
    for e in view.entries() {
        if e.is_excluded() {
            continue;
        }
        t.checked += 1;
        check_entry(&e, args.dev, &mut t);
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
    let stale = t.stale() || older_stage;
    println!(
        "{name}: {} entries checked: {} changed, {} appeared, {} vanished, {} listings and {} contents differ{}: {}",
        t.checked,
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

fn check_entry(e: &EntryRef<'_>, dev: bool, t: &mut Tally) {
    let path = show(e.path());
    let p = os(e.path());
    let lstat_now = std::fs::symlink_metadata(p);
    let follow_now = std::fs::metadata(p);
    let mut stat_changed = false;
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
                if !diffs.is_empty() && !stat_changed {
                    stat_changed = true;
                    t.changed += 1;
                    t.report(format!("changed {path}: {what} {}", diffs.join(", ")));
                }
            }
        }
    }
    if let Some(target) = e.link_target() {
        match std::fs::read_link(p) {
            Ok(now) if now.as_os_str().as_encoded_bytes() == target => {}
            Ok(now) => {
                t.changed += 1;
                let now = show(now.as_os_str().as_encoded_bytes());
                t.report(format!("changed {path}: link {} -> {now}", show(target)));
            }
            Err(_) => {}
        }
    }
    check_access(e, &path, t);
    check_listing(e, &path, t);
    check_contents(e, &path, t);
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
    cmp(
        "mtime",
        ns(rec.mtime, rec.mtime_nsec),
        ns(m.mtime(), m.mtime_nsec()),
    );
    cmp(
        "ctime",
        ns(rec.ctime, rec.ctime_nsec),
        ns(m.ctime(), m.ctime_nsec()),
    );
    d
}

fn ns(s: i64, n: i64) -> i128 {
    s as i128 * 1_000_000_000 + n as i128
}

fn check_access(e: &EntryRef<'_>, path: &str, t: &mut Tally) {
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
            t.changed += 1;
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

fn check_contents(e: &EntryRef<'_>, path: &str, t: &mut Tally) {
    let Some(blob) = e.blob() else {
        return;
    };
    let Ok(bytes) = std::fs::read(os(e.path())) else {
        return; // unreadable now: reported by the access or stat comparison
    };
    if blob_hash(&bytes) != blob.hash {
        t.contents += 1;
        t.report(format!(
            "contents {path}: {} bytes recorded, {} now, hash differs",
            blob.size,
            bytes.len()
        ));
    }
}
