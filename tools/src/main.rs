//! `fmcache`: record a pilot run's file-system probes into a cache, serve
//! later runs from it, and look inside caches, stages and statistics.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod bcast;
mod env;
mod estimate;
mod inspect;
mod install_docs;
mod launch;
mod merge;
mod progress;
mod record;
mod report;
mod run;
mod stage;
mod stats;
mod verify;

/// Record a program's file-system probes into a cache, serve later runs from it
///
/// `fmcache record` runs a pilot under libfmcache.so and writes the cache;
/// `fmcache run` serves later runs from it, staged per node.
#[derive(Parser)]
#[command(name = "fmcache", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Record(record::Args),
    Run(run::Args),
    Inspect(inspect::Args),
    Stats(stats::Args),
    Stage(stage::Args),
    Bcast(bcast::Args),
    Merge(merge::Args),
    Estimate(estimate::Args),
    Verify(verify::Args),
    Report(report::Args),
    Env(env::Args),
}

fn main() -> ExitCode {
    // `fmcache inspect | head` ends quietly, as other tools do, instead of
    // a panic on EPIPE (Rust ignores SIGPIPE by default).
    // SAFETY: setting a signal's disposition to its default, before any
    // thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // `fmcache install-docs --out DIR` (`make install`): man pages and
    // completions of the command line below, which does not hold it (so
    // neither lists it).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "install-docs")
    {
        return install_docs::main(Cli::command());
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Record(a) => record::main(a),
        Cmd::Run(a) => run::main(a),
        Cmd::Inspect(a) => inspect::main(a),
        Cmd::Stats(a) => stats::main(a),
        Cmd::Stage(a) => stage::main(a),
        Cmd::Bcast(a) => bcast::main(a),
        Cmd::Merge(a) => merge::main(a),
        Cmd::Estimate(a) => estimate::main(a),
        Cmd::Verify(a) => verify::main(a),
        Cmd::Report(a) => report::main(a),
        Cmd::Env(a) => env::main(a),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("fmcache: {msg}");
            ExitCode::FAILURE
        }
    }
}
