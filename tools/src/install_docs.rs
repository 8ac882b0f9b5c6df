//! `fmcache install-docs --out SHARE` (`make install` runs it; not part of
//! the command line it documents, so no page or completion lists it):
//! man pages and shell completions generated from the real CLI definition,
//! laid out as under `<prefix>/share`:
//!
//! - `man/man1/fmcache.1` and one page per subcommand (`fmcache-record.1`, ...);
//! - `bash-completion/completions/fmcache`, `zsh/site-functions/_fmcache`,
//!   `fish/vendor_completions.d/fmcache.fish` (where bash-completion, zsh
//!   and fish look under a prefix's `share`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// Write fmcache's man pages and shell completions under DIR (a prefix's share)
#[derive(clap::Parser)]
struct Args {
    /// The `share` directory to write into (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `cmd`: the `fmcache` command line.
pub fn main(cmd: clap::Command) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command()
        .bin_name("fmcache install-docs")
        .get_matches_from(std::env::args_os().skip(1));
    let a = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match write(&a.out, cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fmcache install-docs: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn write(share: &Path, cmd: clap::Command) -> Result<(), String> {
    let mkdir = |d: &Path| {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok::<_, String>(d.to_path_buf())
    };
    let man1 = mkdir(&share.join("man/man1"))?;
    clap_mangen::generate_to(cmd.clone(), &man1)
        .map_err(|e| format!("{}: man pages: {e}", man1.display()))?;
    for (shell, dir, file) in [
        (Shell::Bash, "bash-completion/completions", "fmcache"),
        (Shell::Zsh, "zsh/site-functions", "_fmcache"),
        (Shell::Fish, "fish/vendor_completions.d", "fmcache.fish"),
    ] {
        let dir = mkdir(&share.join(dir))?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "fmcache", &mut text);
        let path = dir.join(file);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
