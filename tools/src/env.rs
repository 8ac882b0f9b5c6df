//! `fmcache env`: the environment variables the library reads, from the
//! one list in `fmcache_core::config`.

use std::process::ExitCode;

use fmcache_core::config::{CONTEXT_VARS, LIBRARY_VARS};

/// List the environment variables the library reads
///
/// Prints the library's own variables with their meaning (and the value
/// each has here, if set), then the variables it reads from the user's
/// environment and the launcher. With --names, only the library's own
/// names, one a line, for scripts:
/// `for v in $(fmcache env --names); do unset $v; done`.
#[derive(clap::Args)]
pub struct Args {
    /// Print only the names of the library's own variables, one a line.
    #[arg(long)]
    names: bool,
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    if args.names {
        for (name, _) in LIBRARY_VARS {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let width = LIBRARY_VARS
        .iter()
        .chain(CONTEXT_VARS)
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    let table = |vars: &[(&str, &str)]| {
        for (name, what) in vars {
            println!("  {name:width$}  {what}");
            if let Some(v) = std::env::var_os(name) {
                println!("  {:width$}  now: {}", "", v.to_string_lossy());
            }
        }
    };
    println!(
        "The library's own (unset them all: for v in $(fmcache env --names); do unset $v; done):"
    );
    table(LIBRARY_VARS);
    println!("Also read, set by your environment or the launcher:");
    table(CONTEXT_VARS);
    Ok(ExitCode::SUCCESS)
}
