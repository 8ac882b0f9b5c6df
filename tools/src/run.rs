//! `fmcache run`: run a command with its probes served from the cache.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::launch;

/// Run a command with its file-system probes served from the cache
///
/// Sets DLFM_OP=read-cache, FMCACHE_FILE and LD_PRELOAD for the command.
/// Exits with the command's exit code (or 128 + signal).
#[derive(clap::Args)]
pub struct Args {
    /// Cache file to serve from [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(long, value_name = "FILE")]
    cache: Option<OsString>,
    /// The command and its arguments (write `--` before it).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.cache.as_deref())?;
    let lib = launch::find_library()?;
    let env = launch::preload_env("read-cache", &cfg, &lib);
    match launch::run_child(&args.command, &env) {
        Ok(o) => Ok(ExitCode::from(o.code)),
        Err(e) => {
            eprintln!("fmcache: {}", e.msg);
            Ok(ExitCode::from(e.code))
        }
    }
}
