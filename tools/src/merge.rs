//! `fmcache merge`: fold left-over journals into the cache.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use fmcache_core::config::Config;
use fmcache_core::merge::MergeReport;

use crate::launch::{self, os, show};

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
    let report = fmcache_core::merge::merge(cfg, None, uid, gid);
    tidy_record_dir(&rec);
    report
}

/// Removes `<cache>.rec/` if it holds nothing but `lock`; errors ignored
/// (another recorder may be using it).
fn tidy_record_dir(rec: &[u8]) {
    let Ok(dir) = std::fs::read_dir(os(rec)) else {
        return;
    };
    let mut lock = false;
    for d in dir {
        match d {
            Ok(d) if d.file_name() == "lock" => lock = true,
            _ => return,
        }
    }
    if lock {
        let mut l = rec.to_vec();
        l.extend_from_slice(b"/lock");
        // Only when no straggling recorder holds it.
        let Ok(f) = std::fs::File::open(os(&l)) else {
            return;
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return;
        }
        let _ = std::fs::remove_file(os(&l));
    }
    let _ = std::fs::remove_dir(os(rec));
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
        }
        println!(
            "file size      {} ({})",
            r.file_size,
            launch::human_bytes(r.file_size)
        );
    }
    Ok(ExitCode::SUCCESS)
}
