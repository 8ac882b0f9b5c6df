//! readlink, realpath, getcwd, and chdir (which moves the tracked cwd).

use libc::{c_char, c_int, size_t, ssize_t, AT_FDCWD};

use fmcache_core::answer::{self, Answer};
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::{CPath, OutBytes};
use crate::state::{dispatch, Outcome};
use fmcache_core::path::PATH_MAX;

fn readlink_at(
    dirfd: c_int,
    p: CPath<'_>,
    buf: OutBytes<'_>,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    dispatch(
        "readlink",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if buf.is_empty() || !srv.key(dirfd, p, &mut k) {
                return Outcome::Pass("no buffer or no key");
            }
            if let Some(orig) = served_fd_link(srv, k.as_bytes()) {
                return Outcome::Served(buf.write_prefix(orig) as ssize_t);
            }
            answer::readlink(&srv.view, srv, k.as_bytes())
                .map(|target| buf.write_prefix(target) as ssize_t)
                .into()
        },
        |rec| rec.note(Kind::Stat, dirfd, p),
        -1,
        real,
    )
}

/// `/proc/self/fd/N` or `/dev/fd/N` naming a served descriptor: the
/// original file's canonical path, as the kernel shows natively (not the
/// staged copy's).
fn served_fd_link(srv: &crate::server::Server, key: &[u8]) -> Option<&'static [u8]> {
    let fd = proc_fd_number(key)?;
    srv.staged_fd(fd)?.mirror_path()
}

/// N from `/proc/self/fd/N`, `/dev/fd/N`, `/proc/thread-self/fd/N`, or
/// `/proc/<our pid>/fd/N` and `/proc/<our pid>/task/<tid>/fd/N` (what
/// resolving `/proc/self` gives).
fn proc_fd_number(key: &[u8]) -> Option<i32> {
    let num = |d: &[u8]| -> Option<i32> {
        (!d.is_empty() && d.len() <= 9 && d.iter().all(u8::is_ascii_digit))
            .then(|| d.iter().fold(0i32, |a, c| a * 10 + (c - b'0') as i32))
    };
    for p in [
        &b"/proc/self/fd/"[..],
        b"/dev/fd/",
        b"/proc/thread-self/fd/",
    ] {
        if let Some(n) = key.strip_prefix(p) {
            return num(n);
        }
    }
    let rest = key.strip_prefix(b"/proc/")?;
    let mut parts = rest.split(|&b| b == b'/');
    let pid = num(parts.next()?)?;
    if pid != rustix::process::getpid().as_raw_nonzero().get() {
        return None;
    }
    match (
        parts.next()?,
        parts.next()?,
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (b"fd", n, None, None, None) => num(n),
        (b"task", tid, Some(b"fd"), Some(n), None) => {
            num(tid)?;
            num(n)
        }
        _ => None,
    }
}

/// realpath(3): resolved from recorded entries. A failure with a caller
/// buffer passes through, since glibc leaves the resolved prefix in it.
fn realpath_common(
    p: CPath<'_>,
    resolved: OutBytes<'_>,
    real: impl FnOnce() -> *mut c_char,
) -> *mut c_char {
    dispatch(
        "realpath",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if !srv.key(AT_FDCWD, p, &mut k) {
                return Outcome::Pass("no key");
            }
            let mut out = PathBuf::new();
            match answer::realpath(&srv.view, srv, k.as_bytes(), &mut out) {
                Answer::Hit(()) => {
                    let bytes = out.as_bytes();
                    // realpath(p, NULL) returns malloc'd memory.
                    let dst = if resolved.is_empty() {
                        match OutBytes::malloc(bytes.len() + 1) {
                            Some(m) => m,
                            None => return Outcome::Fail(libc::ENOMEM),
                        }
                    } else {
                        resolved
                    };
                    if !dst.write_cstr(bytes) {
                        return Outcome::Miss;
                    }
                    Outcome::Served(dst.as_ptr())
                }
                Answer::Errno(e) if resolved.is_empty() => Outcome::Fail(e),
                _ => Outcome::Miss,
            }
        },
        |rec| {
            rec.note(Kind::Stat, AT_FDCWD, p);
            // The resolved path's ancestors are what serving walks.
            let mut k = PathBuf::new();
            if crate::keys::resolve(AT_FDCWD, p, &mut k) {
                let mut r = PathBuf::new();
                if real_resolve(k.as_cstr(), &mut r) {
                    rec.note_key(Kind::Stat, r.as_bytes());
                }
            }
        },
        core::ptr::null_mut(),
        real,
    )
}

/// Canonical path of `p` through the kernel (recording only).
fn real_resolve(p: &core::ffi::CStr, out: &mut PathBuf) -> bool {
    use rustix::fs::OFlags;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    match rustix::fs::openat(rustix::fs::CWD, p, flags, rustix::fs::Mode::empty()) {
        Ok(fd) => crate::keys::fd_path(std::os::fd::AsRawFd::as_raw_fd(&fd), out),
        Err(_) => false,
    }
}

/// getcwd(3) from the tracked directory; an allocating call (NULL buffer)
/// passes through.
fn getcwd_common(buf: OutBytes<'_>, real: impl FnOnce() -> *mut c_char) -> *mut c_char {
    dispatch(
        "getcwd",
        CPath::null(),
        |_| {
            let mut cwd = PathBuf::new();
            if buf.is_empty() || !crate::cwd::get(&mut cwd) {
                return Outcome::Pass("no buffer or no tracked cwd");
            }
            if !buf.write_cstr(cwd.as_bytes()) {
                return Outcome::Fail(libc::ERANGE);
            }
            Outcome::Served(buf.as_ptr())
        },
        |_| {},
        core::ptr::null_mut(),
        real,
    )
}

fn chdir_common(p: CPath<'_>, real: impl FnOnce() -> c_int) -> c_int {
    let r = dispatch(
        "chdir",
        p,
        |_| Outcome::Pass("chdir is always real"),
        |rec| rec.note(Kind::Stat, AT_FDCWD, p),
        -1,
        real,
    );
    // A vfork child (or a clone()d one that skipped the fork handlers)
    // shares our memory or a copy of it, but its cwd is its own: it stops
    // using the tracked one; only the owner moves that.
    if r == 0 {
        let saved = crate::errno::get();
        if crate::owner::is_owner() {
            crate::cwd::refresh();
        } else {
            crate::cwd::own_fs();
        }
        crate::errno::set(saved);
    }
    r
}

hook! {
    // SAFETY: `b` holds `n` bytes (readlink's and getcwd's contract).
    fn readlink(p: *const c_char, b: *mut c_char, n: size_t) -> ssize_t, real => readlink_at(AT_FDCWD, p, unsafe { OutBytes::new(b, n) }, real);
    // SAFETY: `b` holds `n` bytes (readlink's and getcwd's contract).
    fn readlinkat(d: c_int, p: *const c_char, b: *mut c_char, n: size_t) -> ssize_t, real => readlink_at(d, p, unsafe { OutBytes::new(b, n) }, real);
    // SAFETY: `r` is null or holds PATH_MAX bytes (realpath's contract).
    fn realpath(p: *const c_char, r: *mut c_char) -> *mut c_char, real => realpath_common(p, unsafe { OutBytes::new(r, PATH_MAX) }, real);
    fn canonicalize_file_name(p: *const c_char) -> *mut c_char, real => realpath_common(p, OutBytes::none(), real);
    // SAFETY: `b` holds `n` bytes (readlink's and getcwd's contract).
    fn getcwd(b: *mut c_char, n: size_t) -> *mut c_char, real => getcwd_common(unsafe { OutBytes::new(b, n) }, real);
    fn chdir(p: *const c_char) -> c_int, real => chdir_common(p, real);
    fn fchdir(fd: c_int) -> c_int, real => { let _ = fd; chdir_common(CPath::null(), real) };
}
