//! One-line warnings on stderr through a fixed buffer and a raw write(2):
//! no allocation, no stdio lock, safe in any hook.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Set in the auditor copy when the preload copy is there too: it reads
/// the same settings and cache, so one line per process is enough.
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn quiet() {
    QUIET.store(true, Relaxed);
}

pub fn warn(args: fmt::Arguments<'_>) {
    if QUIET.load(Relaxed) {
        return;
    }
    debug(args);
}

/// A line whichever copy writes it (for opt-in diagnostics).
pub fn debug(args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; 1024],
        len: 0,
    };
    let _ = line.write_str("fmcache: ");
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    // SAFETY: fd 2 is borrowed only for this call.
    let stderr = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let _ = rustix::io::write(stderr, &line.buf[..=line.len]);
}

macro_rules! warn {
    ($($t:tt)*) => { crate::log::warn(format_args!($($t)*)) };
}
