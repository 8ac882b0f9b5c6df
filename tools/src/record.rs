//! `fmcache record`: run a pilot under the library in record mode.

use std::ffi::OsString;
use std::process::ExitCode;

use fmcache_core::config::Config;
use fmcache_core::recdir::RecDir;
use fmcache_format::{CacheView, Verify};

use crate::inspect;
use crate::launch::{self, human_bytes, os, show};

/// Run a pilot command, recording its file-system probes into the cache
///
/// Sets DLFM_OP=write-cache, FMCACHE_FILE and LD_PRELOAD for the command,
/// waits for it, merges journals left by processes that died without
/// merging, and prints a summary. Exits with the command's exit code (or
/// 128 + signal).
#[derive(clap::Args)]
pub struct Args {
    /// Cache file to write [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(long, value_name = "FILE")]
    cache: Option<OsString>,
    /// Also serve this directory, besides the software found by itself
    /// (repeatable). Sets FMCACHE_INCLUDE, replacing the environment's.
    #[arg(long, value_name = "P")]
    include: Vec<OsString>,
    /// Never cache under this directory (repeatable). Sets
    /// FMCACHE_EXCLUDE, replacing the environment's.
    #[arg(long, value_name = "P")]
    exclude: Vec<OsString>,
    /// Add to an existing cache instead of starting a fresh one.
    #[arg(long)]
    append: bool,
    /// The pilot command and its arguments (write `--` before it).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

/// A fresh pilot: the old cache and the journals of recorders that died
/// (their lock is free) go.
fn start_fresh(cfg: &Config) -> Result<(), String> {
    match std::fs::remove_file(os(&cfg.cache)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "{}: cannot remove the old cache: {}",
                show(&cfg.cache),
                launch::io_reason(&e)
            ))
        }
    }
    // Only a record directory of ours, and journals in it that are ours
    // (see fmcache_core::recdir): never through a planted symlink.
    let rec = cfg.record_dir();
    let c = std::ffi::CString::new(rec.clone()).map_err(|_| format!("{}: bad path", show(&rec)))?;
    let dir = match RecDir::open(&c, false) {
        Ok(d) => d,
        Err(e) if e.is_missing() => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", show(&rec))),
    };
    for name in dir.names() {
        if !name.starts_with(fmcache_core::merge::JOURNAL_PREFIX) {
            continue;
        }
        let Ok(n) = std::ffi::CString::new(name) else {
            continue;
        };
        if dir.orphan(&n).is_some() {
            let _ = dir.unlink(&n);
        }
    }
    Ok(())
}

fn check_cache_dir(cfg: &Config) -> Result<(), String> {
    let parent = fmcache_core::path::parent(&cfg.cache).unwrap_or(b"/");
    match std::fs::metadata(os(parent)) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{}: not a directory", show(parent))),
        Err(e) => Err(format!("{}: {}", show(parent), launch::io_reason(&e))),
    }
}

fn summary(cfg: &Config, wall: std::time::Duration) {
    let p = |s: String| eprintln!("fmcache: {s}");
    p(format!("pilot ran for {:.2} s", wall.as_secs_f64()));
    let loaded = match inspect::load(&cfg.cache) {
        Ok(l) => l,
        Err(_) => {
            p(format!(
                "no cache written to {}: nothing was recorded (is {} loadable? static and setuid programs ignore LD_PRELOAD)",
                show(&cfg.cache),
                launch::LIB_NAME
            ));
            return;
        }
    };
    let view = match CacheView::open(loaded.bytes(), Verify::Full) {
        Ok(v) => v,
        Err(e) => {
            p(format!("{}: {e}", show(&cfg.cache)));
            return;
        }
    };
    let s = inspect::summarize(&view, 0);
    let k = &s.kinds;
    p(format!(
        "cache {} ({})",
        show(&cfg.cache),
        human_bytes(s.file_size)
    ));
    p(format!(
        "{} entries: {} files with contents, {} directories with listings, {} symlinks, {} failed lookups, {} excluded",
        s.entries, k.files_with_content, k.dirs_with_listing, k.symlinks, k.failed, k.excluded
    ));
    let rest = k.files_without_content + k.dirs_without_listing + k.other;
    if rest > 0 {
        p(format!(
            "  and {rest} more ({} files without contents, {} directories without listings, {} other)",
            k.files_without_content, k.dirs_without_listing, k.other
        ));
    }
    p(format!(
        "content: {} ({} bytes) in {} blobs",
        human_bytes(s.content_bytes),
        s.content_bytes,
        s.blobs
    ));
    p(format!("serves the software under: {}", s.roots.join(", ")));
    if !s.left_out.is_empty() {
        let groups: Vec<String> = s
            .left_out
            .iter()
            .take(5)
            .map(|(g, n)| format!("{g} ({n})"))
            .collect();
        p(format!(
            "left out (passes through; add with --include): {}",
            groups.join(", ")
        ));
    }
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let mut cfg = launch::config(args.cache.as_deref())?;
    let lib = launch::find_library()?;
    check_cache_dir(&cfg)?;
    let mut env = launch::preload_env("write-cache", &cfg, &lib);
    if !args.include.is_empty() {
        cfg.include = launch::path_list(&args.include, "include")?;
        env.push(("FMCACHE_INCLUDE", launch::join_colon(&cfg.include)));
    }
    if !args.exclude.is_empty() {
        cfg.exclude = launch::path_list(&args.exclude, "exclude")?;
        env.push(("FMCACHE_EXCLUDE", launch::join_colon(&cfg.exclude)));
    }
    // The version replaced, for the trees outside a job that serve it on
    // this node (stage::superseded, once the new cache is written).
    let old = fmcache_core::stage::cache_identity(&cfg)
        .ok()
        .map(|(_, checksum, _)| checksum);
    if !args.append {
        start_fresh(&cfg)?;
    }
    let outcome = match launch::run_child(&args.command, &env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fmcache: {}", e.msg);
            return Ok(ExitCode::from(e.code));
        }
    };
    if !outcome.status.success() {
        eprintln!("fmcache: the pilot {}", launch::describe(outcome.status));
    }
    // Journals of processes that died without merging (killed, _exit).
    let merged = crate::merge::merge_now(&cfg);
    summary(&cfg, outcome.wall);
    if let (Some(old), Ok((_, new, _))) = (old, fmcache_core::stage::cache_identity(&cfg)) {
        if new != old {
            fmcache_core::stage::superseded(&cfg, old);
        }
    }
    match merged {
        Ok(r) if r.journals > 0 => {
            eprintln!(
                "fmcache: merged {} left-over journals ({} probes)",
                r.journals, r.probes
            )
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("fmcache: final merge failed: {e}");
            // Do not report success when the cache may be incomplete.
            if outcome.code == 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::from(outcome.code))
}
