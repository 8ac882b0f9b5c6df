//! `fmcache-bcast`, run by `fmcache bcast` as one MPI job (any number of
//! ranks per node): one rank reads the cache from the shared file system,
//! `MPI_Bcast` hands it to one rank per node, and each of those stages it
//! and leaves the job's pointer, as the job's first serving process on the
//! node would have. The job's processes then find the stage through the
//! pointer and make no request for the cache.
//!
//! A separate executable linked against one MPI, so that `fmcache` itself
//! needs none (ARCHITECTURE.md, "Staging").

use std::process::ExitCode;

use fmcache_core::config::Config;
use fmcache_core::path::show;
use mpi::collective::SystemOperation;
use mpi::topology::{Color, Communicator};
use mpi::traits::*;

mod copy;
mod fanout;

/// What this rank did: its node leaders' result, or the error it prints.
enum Outcome {
    /// A node leader that staged the cache: (checksum, entries).
    Staged(u64, usize),
    /// A rank with nothing to do (another rank of its node stages).
    Idle,
    /// This rank's error, printed by it as one line.
    Failed(String),
    /// Another rank failed and said so; this one stops quietly.
    Aborted,
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn main() -> ExitCode {
    let cfg = Config::from_env();
    if cfg.cache.first() != Some(&b'/') {
        eprintln!(
            "fmcache bcast: {}: cannot make the cache path absolute",
            show(&cfg.cache)
        );
        return ExitCode::FAILURE;
    }
    let Some(universe) = mpi::initialize() else {
        eprintln!("fmcache bcast: MPI was initialised already");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    // One communicator per node (ranks that share memory), keyed by the
    // world rank so world rank 0 is its node's rank 0, hence a leader and
    // the leaders' rank 0: the one reader.
    let node = world.split_shared(world.rank());
    let color = if node.rank() == 0 {
        Color::with_value(0)
    } else {
        Color::undefined()
    };
    let leaders = world.split_by_color(color);
    let outcome = match &leaders {
        Some(l) => fanout::run(&cfg, l),
        None => Outcome::Idle,
    };
    // Every rank learns whether any failed: nonzero exit everywhere, but
    // only the failing rank (or the reader, for the read) says why.
    let failed = i32::from(matches!(outcome, Outcome::Failed(_) | Outcome::Aborted));
    let mut any_failed = 0i32;
    world.all_reduce_into(&failed, &mut any_failed, SystemOperation::max());
    let staged = i32::from(matches!(outcome, Outcome::Staged(..)));
    let mut nodes = 0i32;
    world.all_reduce_into(&staged, &mut nodes, SystemOperation::sum());
    let rank = world.rank();
    match outcome {
        Outcome::Failed(msg) => eprintln!("fmcache bcast: {}: {msg}", hostname()),
        Outcome::Staged(checksum, entries) if rank == 0 && any_failed == 0 => {
            let job = cfg.job.as_deref().map(String::from_utf8_lossy);
            println!(
                "fmcache bcast: {} read once, staged on {nodes} node{} in {} (cache {checksum:016x}, {entries} entries){}",
                show(&cfg.cache),
                if nodes == 1 { "" } else { "s" },
                show(&cfg.stage_base),
                match job {
                    Some(j) => format!(", for job {j}"),
                    None => ", outside a job: each process reads the cache header".into(),
                }
            );
        }
        _ => {}
    }
    // MPI_Finalize before the exit status is returned.
    drop(leaders);
    drop(node);
    drop(universe);
    if any_failed != 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
