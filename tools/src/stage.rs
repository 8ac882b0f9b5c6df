//! `fmcache stage`: stage the cache on this node ahead of a job, or remove
//! this user's stages.

use std::ffi::OsString;
use std::process::ExitCode;

use fmcache_core::stage;
use fmcache_format::{CacheView, Verify};

use crate::launch::{self, show};

/// Stage the cache on this node, or remove this user's stages
///
/// Run once per node ahead of a job, e.g. `srun -n "$SLURM_NNODES" --ntasks-per-node=1
/// fmcache stage`; prints the stage directory and its entry count.
#[derive(clap::Args)]
pub struct Args {
    /// Cache file to stage [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(long, value_name = "FILE")]
    cache: Option<OsString>,
    /// Remove every stage of this user on this node instead (under
    /// $FMCACHE_STAGE_DIR, default /dev/shm/fmcache-<euid>).
    #[arg(long)]
    clean: bool,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Complete stages under `base`: directories named by a 16-hex-digit
/// cache checksum.
fn count_stages(base: &[u8]) -> usize {
    let Ok(dir) = std::fs::read_dir(launch::os(base)) else {
        return 0;
    };
    dir.flatten()
        .filter(|d| {
            let name = d.file_name();
            let name = name.as_encoded_bytes();
            name.len() == 16
                && name.iter().all(u8::is_ascii_hexdigit)
                && d.file_type().is_ok_and(|t| t.is_dir())
        })
        .count()
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.cache.as_deref())?;
    let host = hostname();
    if args.clean {
        let stages = count_stages(&cfg.stage_base);
        let removed = stage::clean(&cfg).map_err(|e| e.to_string())?;
        // `clean` counts every name it removed (locks, half-built stages
        // too); report whole stages when they can be told apart.
        let n = if removed >= stages { stages } else { removed };
        println!(
            "{host}: removed {n} stage{} from {}",
            if n == 1 { "" } else { "s" },
            show(&cfg.stage_base)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let attached = stage::attach(&cfg).map_err(|e| format!("{}: {e}", show(&cfg.cache)))?;
    let entries = CacheView::open(attached.index.bytes(), Verify::Header)
        .map(|v| v.entry_count())
        .map_err(|e| format!("stage index: {e}"))?;
    let dir = fmcache_core::path::parent(&attached.root).unwrap_or(&attached.root);
    println!(
        "{host}: {} ({entries} entries, cache {:016x})",
        show(dir),
        attached.checksum
    );
    Ok(ExitCode::SUCCESS)
}
