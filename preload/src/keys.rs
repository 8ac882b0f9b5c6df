//! Path keys: the absolute, normalized path a call is cached under, and
//! the stage's layout constant for names not found. A leaf below the
//! server, the recorder and the hooks; it uses only `cwd` and core.

use core::ffi::c_int;

use crate::cargs::CPath;

use fmcache_core::path::{self, PathBuf};

/// The stage subdirectory (never created) that missing names point into.
pub const MISSING: &[u8] = b"/.fmcache-missing";

/// Builds the cache key of `p` relative to `dirfd` (AT_FDCWD or ignored
/// for absolute paths). No allocation, no system call.
pub fn key(dirfd: c_int, p: CPath<'_>, out: &mut PathBuf) -> bool {
    p.bytes().is_some_and(|input| key_of(dirfd, input, out))
}

/// `key` of a path already measured (the serving hooks look at its bytes
/// first).
pub fn key_of(dirfd: c_int, input: &[u8], out: &mut PathBuf) -> bool {
    if input.first() == Some(&b'/') {
        return path::normalize(None, input, out);
    }
    if dirfd != libc::AT_FDCWD || input.is_empty() {
        return false;
    }
    let mut cwd = PathBuf::new();
    crate::cwd::get(&mut cwd) && path::normalize(Some(cwd.as_bytes()), input, out)
}

/// The absolute key of `p`; relative to a real `dirfd`, found through
/// /proc/self/fd (recording only: this costs a system call).
pub fn resolve(dirfd: c_int, p: CPath<'_>, out: &mut PathBuf) -> bool {
    if key(dirfd, p, out) {
        return true;
    }
    let Some(input) = p.bytes() else {
        return false;
    };
    if dirfd < 0 {
        return false;
    }
    let mut dir = PathBuf::new();
    if !fd_path(dirfd, &mut dir) {
        return false;
    }
    let dir = dir.as_bytes();
    if input.is_empty() {
        return path::normalize(None, dir, out);
    }
    path::normalize(Some(dir), input, out)
}

/// The path the kernel has for descriptor `fd` (/proc/self/fd/N), with no
/// allocation. Recording and fd-placed changes only: a system call.
pub fn fd_path(fd: c_int, out: &mut PathBuf) -> bool {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = fd as u32;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut link = PathBuf::new();
    let mut buf = [0u8; fmcache_core::path::PATH_MAX];
    if fd < 0 || !link.push(b"/proc/self/fd/") || !link.push(&digits[i..]) {
        return false;
    }
    match rustix::fs::readlinkat_raw(rustix::fs::CWD, link.as_cstr(), &mut buf[..]) {
        Ok(n) if n < buf.len() => out.set(&buf[..n]),
        _ => false,
    }
}
