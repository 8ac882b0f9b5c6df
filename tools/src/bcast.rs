//! `fmcache bcast`: one read of the cache per job, fanned out by MPI.
//! The work is `fmcache-bcast`'s, a separate executable linked against one
//! MPI (so `fmcache` builds and runs without any); this finds it and
//! executes it in this process, which the MPI launcher started as a rank.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::launch::{self, io_reason};

const BCAST_EXE: &str = "fmcache-bcast";

/// Stage the cache on every node of an MPI job, reading it once
///
/// Run as an MPI job with any number of ranks per node, e.g. `mpirun
/// --map-by ppr:1:node fmcache bcast` or `srun --ntasks-per-node=1 fmcache
/// bcast` before the job's step: one rank reads the cache from the shared
/// file system, MPI_Bcast hands it to one rank per node, which stages it
/// and leaves the job's pointer, so the job's processes make no request
/// for the cache. Runs fmcache-bcast from beside this executable (or
/// $FMCACHE_BCAST), built against the job's MPI.
#[derive(clap::Args)]
pub struct Args {
    /// Cache file [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(value_name = "FILE")]
    cache: Option<OsString>,
}

/// `$FMCACHE_BCAST`, else `fmcache-bcast` beside this executable.
fn find() -> Result<PathBuf, String> {
    if let Some(v) = std::env::var_os("FMCACHE_BCAST").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&v);
        return match p.is_file() {
            true => Ok(p),
            false => Err(format!("FMCACHE_BCAST={}: no such file", p.display())),
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate this executable: {}", io_reason(&e)))?;
    let p = exe.parent().unwrap_or(Path::new("/")).join(BCAST_EXE);
    if p.is_file() {
        return Ok(p);
    }
    Err(format!(
        "bcast: {} not found: it is built only where an MPI is installed \
         (`make install MPICC=mpicc`, one build per MPI); set FMCACHE_BCAST to \
         the build for this job's MPI",
        p.display()
    ))
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    // The path the job's processes will key their pointer by: absolute,
    // as the library makes $FMCACHE_FILE.
    let cfg = launch::config(args.cache.as_deref())?;
    let exe = find()?;
    let err = std::process::Command::new(&exe)
        .env("FMCACHE_FILE", launch::os(&cfg.cache))
        .exec();
    Err(format!("{}: {}", exe.display(), io_reason(&err)))
}
