//! The one metadata server behind several mounts: an exclusive `flock` on a
//! shared lock file, held while a request's latency is slept. Each
//! simulated node runs its own slowfs process (its mount must be made
//! inside that node's mount namespace), and all of them queue on this lock
//! as their clients' requests queue at one server.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub struct MdsLock {
    /// One open file description: flock excludes other processes; within
    /// this process the mutex serialises the threads.
    file: Mutex<File>,
}

/// The lock, held until dropped.
pub struct Held<'a> {
    file: MutexGuard<'a, File>,
}

impl MdsLock {
    pub fn open(path: &Path) -> std::io::Result<MdsLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok(MdsLock {
            file: Mutex::new(file),
        })
    }

    pub fn hold(&self) -> Held<'_> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: flock on a descriptor this guard keeps open. EINTR is
        // retried; any other failure leaves the request unserialised
        // across mounts, which cannot happen on a local file system.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        Held { file }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `hold`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}
