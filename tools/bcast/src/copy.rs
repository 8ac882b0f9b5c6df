//! A node's private copy of the broadcast cache: an anonymous memory file
//! (memfd), never a path another user could open or replace, gone when
//! the process exits; the stage is built from it.

use std::os::fd::{AsFd, OwnedFd};

pub struct Copy {
    pub fd: OwnedFd,
    written: u64,
}

impl Copy {
    pub fn new() -> Result<Copy, String> {
        let fd = rustix::fs::memfd_create("fmcache-bcast", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
        Ok(Copy { fd, written: 0 })
    }

    /// Appends the next chunk.
    pub fn append(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match rustix::io::pwrite(self.fd.as_fd(), bytes, self.written) {
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.written += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("copy in memory: {e}")),
            }
        }
        Ok(())
    }
}
