//! `fmcache merge`: fold left-over journals into the cache.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use fmcache_core::config::Config;
use fmcache_core::merge::MergeReport;
use fmcache_core::recdir::{RecDir, LOCK};

use crate::launch::{self, os, show};
use crate::progress::Progress;

/// Merge journals left by recording processes that died into the cache
#[derive(clap::Args)]
pub struct Args {
    /// Cache file [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(long, value_name = "FILE")]
    cache: Option<OsString>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs a merge as this user, creating the record directory for its lock
/// if needed, and removes that directory again when nothing but the lock
/// is left in it.
pub fn merge_now(cfg: &Config) -> Result<MergeReport, String> {
    let rec = cfg.record_dir();
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(os(&rec)) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("{}: {}", show(&rec), launch::io_reason(&e)));
        }
    }
    let (uid, gid) = launch::euid_egid();
    // A bar on a terminal once the paths to observe are known (none when
    // the cache already answers everything).
    let mut bar: Option<Progress> = None;
    let report = fmcache_core::merge::merge_with(cfg, None, uid, gid, &mut |done, total| {
        bar.get_or_insert_with(|| Progress::new("merge", "paths", total))
            .set(done);
    });
    drop(bar);
    tidy_record_dir(&rec);
    report.map_err(|e| e.to_string())
}

/// Removes `<cache>.rec/` if it holds nothing but `lock`; errors ignored
/// (another recorder may be using it). Only a record directory of ours,
/// reached without following a symlink.
fn tidy_record_dir(rec: &[u8]) {
    let Ok(c) = std::ffi::CString::new(rec) else {
        return;
    };
    let Ok(dir) = RecDir::open(&c, false) else {
        return;
    };
    let names = dir.names();
    if names.iter().any(|n| n != b"lock") {
        return;
    }
    if !names.is_empty() {
        // Only when no straggling recorder holds it.
        let Some(_held) = dir.orphan(LOCK) else {
            return;
        };
        let _ = dir.unlink(LOCK);
    }
    let _ = RecDir::remove(&c);
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.cache.as_deref())?;
    let r = merge_now(&cfg)?;
    if args.json {
        let v = serde_json::json!({
            "cache": show(&cfg.cache),
            "journals": r.journals,
            "probes": r.probes,
            "paths": r.paths,
            "excluded": r.excluded,
            "rewritten": r.rewritten,
            "entries": r.entries,
            "blobs": r.blobs,
            "content_bytes": r.data_bytes,
            "stored_bytes": r.stored_bytes,
            "file_size": r.file_size,
        });
        println!("{v}");
    } else {
        println!("cache          {}", show(&cfg.cache));
        println!("journals       {}", r.journals);
        println!("probes         {}", r.probes);
        println!("paths          {}", r.paths);
        println!("excluded       {}", r.excluded);
        println!(
            "cache file     {}",
            if r.rewritten {
                "rewritten"
            } else {
                "unchanged"
            }
        );
        println!("entries        {}", r.entries);
        if r.rewritten {
            println!("blobs          {}", r.blobs);
            println!(
                "content bytes  {} ({})",
                r.data_bytes,
                launch::human_bytes(r.data_bytes)
            );
            println!(
                "stored bytes   {} ({}, compressed)",
                r.stored_bytes,
                launch::human_bytes(r.stored_bytes)
            );
        }
        println!(
            "file size      {} ({})",
            r.file_size,
            launch::human_bytes(r.file_size)
        );
    }
    Ok(ExitCode::SUCCESS)
}
