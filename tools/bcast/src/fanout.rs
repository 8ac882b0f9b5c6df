//! The broadcast among node leaders: the reader (leaders' rank 0) opens
//! the cache with the staging checks, then sends its size and its bytes
//! in chunks; every leader appends them to its private copy and stages it.

use std::os::fd::OwnedFd;

use fmcache_core::config::Config;
use fmcache_core::path::show;
use fmcache_core::stage;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::copy::Copy;
use crate::Outcome;

/// Bytes per `MPI_Bcast`: a count fits an `int` whatever the cache size,
/// and a leader holds one chunk besides its copy.
const CHUNK: usize = 8 << 20;

/// The reader's side: the cache opened with the ownership, header and
/// recorder checks of staging, and its size.
fn open(cfg: &Config) -> Result<(OwnedFd, u64), String> {
    let (fd, _checksum, size) =
        stage::cache_identity(cfg).map_err(|e| format!("{}: {e}", show(&cfg.cache)))?;
    Ok((fd, size))
}

/// Fills `buf` from `fd` at `offset` (a short file is an error: the size
/// was announced already).
fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => return Err("the cache shrank while read".into()),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Runs on every node leader; `leaders` has one rank per node.
pub fn run(cfg: &Config, leaders: &SimpleCommunicator) -> Outcome {
    let root = leaders.process_at_rank(0);
    let reader = leaders.rank() == 0;
    // [ok, size]: a reader that cannot open the cache says so once, and
    // the others stop without waiting for bytes.
    let opened = if reader { Some(open(cfg)) } else { None };
    let mut head = match &opened {
        Some(Ok((_, size))) => [1u64, *size],
        _ => [0u64, 0],
    };
    root.broadcast_into(&mut head[..]);
    let (fd, size) = match opened {
        Some(Err(e)) => return Outcome::Failed(e),
        Some(Ok((fd, size))) => (Some(fd), size),
        None if head[0] == 0 => return Outcome::Aborted,
        None => (None, head[1]),
    };
    let mut copy = Copy::new();
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut offset = 0u64;
    // The reader's failure to read a chunk is its own line; the chunks
    // still go out (the leaders' copies then fail the checksum), and the
    // flag after the loop stops everyone before staging.
    let mut read_err = None;
    while offset < size {
        let n = CHUNK.min((size - offset) as usize);
        let chunk = &mut buf[..n];
        if let (Some(fd), None) = (&fd, &read_err) {
            if let Err(e) = read_at(fd, chunk, offset) {
                read_err = Some(format!("{}: reading: {e}", show(&cfg.cache)));
            }
        }
        root.broadcast_into(chunk);
        if let Ok(c) = &mut copy {
            if let Err(e) = c.append(chunk) {
                copy = Err(e);
            }
        }
        offset += n as u64;
    }
    let mut read_ok = u8::from(read_err.is_none());
    root.broadcast_into(&mut read_ok);
    if let Some(e) = read_err {
        return Outcome::Failed(e);
    }
    if read_ok == 0 {
        return Outcome::Aborted;
    }
    drop(buf);
    let staged = copy.and_then(|c| {
        stage::install_copy(cfg, &c.fd).map_err(|e| format!("{}: {e}", show(&cfg.cache)))
    });
    match staged {
        Ok((checksum, entries)) => Outcome::Staged(checksum, entries),
        Err(e) => Outcome::Failed(e),
    }
}
