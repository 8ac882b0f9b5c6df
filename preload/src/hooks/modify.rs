//! Calls that change the tree. Passed through always; a serving process
//! stops trusting what it changed, a recording one marks it modified so it
//! is never cached.

use libc::{
    c_char, c_int, c_uint, gid_t, mode_t, off_t, timespec, timeval, uid_t, utimbuf, AT_FDCWD,
};

use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::state::{dispatch, Outcome};

/// One changed path (`tree`: a directory that may take children along).
fn changed(dirfd: c_int, p: *const c_char, tree: bool, real: impl FnOnce() -> c_int) -> c_int {
    dispatch(
        |srv| {
            // A change relative to a real dirfd is placed through
            // /proc/self/fd; one we cannot place at all leaves nothing in
            // the cache trustworthy.
            let mut k = PathBuf::new();
            if crate::recorder::resolve(dirfd, p, &mut k) {
                crate::fds::before_change(srv, k.as_bytes());
                srv.invalidate(k.as_bytes(), tree);
            } else if !p.is_null() {
                crate::state::turn_off();
            }
            Outcome::Pass
        },
        |rec| rec.note(Kind::Modify, dirfd, p),
        -1,
        real,
    )
}

/// A change through a descriptor. On a served descriptor it is applied to
/// the original file by path (the staged copy is shared by every process
/// on the node and must never change), and the entry is no longer trusted.
fn changed_fd(
    fd: c_int,
    on_original: impl FnOnce(*const c_char) -> c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if let crate::state::Mode::Serve(srv) = crate::state::mode() {
        if let Some(e) = srv.staged_fd(fd) {
            let mut p = PathBuf::new();
            if p.set(e.path()) {
                crate::fds::before_change(srv, p.as_bytes());
                srv.invalidate(p.as_bytes(), false);
                return on_original(p.as_cstr().as_ptr());
            }
        }
    }
    dispatch(
        |_| Outcome::Pass,
        |rec| rec.note(Kind::Modify, fd, c"".as_ptr()),
        -1,
        real,
    )
}

/// utimensat(fd, NULL, ...) changes the descriptor's file.
fn utimens_at(
    d: c_int,
    p: *const c_char,
    t: *const timespec,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if p.is_null() {
        return changed_fd(
            d,
            |orig| call_hooked_real!(utimensat(AT_FDCWD, orig, t, 0)),
            real,
        );
    }
    changed(d, p, false, real)
}

/// Two changed paths (rename, link).
fn changed2(
    d1: c_int,
    p1: *const c_char,
    d2: c_int,
    p2: *const c_char,
    real: impl FnOnce() -> c_int,
) -> c_int {
    changed(d1, p1, true, || changed(d2, p2, true, real))
}

hook! {
    fn mkdir(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn mkdirat(d: c_int, p: *const c_char, m: mode_t) -> c_int, real => changed(d, p, false, real);
    fn rmdir(p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, true, real);
    fn unlink(p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn unlinkat(d: c_int, p: *const c_char, f: c_int) -> c_int, real => changed(d, p, true, real);
    fn rename(a: *const c_char, b: *const c_char) -> c_int, real => changed2(AT_FDCWD, a, AT_FDCWD, b, real);
    fn renameat(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> c_int, real => changed2(da, a, db, b, real);
    fn renameat2(da: c_int, a: *const c_char, db: c_int, b: *const c_char, f: c_uint) -> c_int, real => changed2(da, a, db, b, real);
    fn link(a: *const c_char, b: *const c_char) -> c_int, real => changed2(AT_FDCWD, a, AT_FDCWD, b, real);
    fn linkat(da: c_int, a: *const c_char, db: c_int, b: *const c_char, f: c_int) -> c_int, real => changed2(da, a, db, b, real);
    fn symlink(t: *const c_char, p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn symlinkat(t: *const c_char, d: c_int, p: *const c_char) -> c_int, real => changed(d, p, false, real);
    fn truncate(p: *const c_char, n: off_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn truncate64(p: *const c_char, n: off_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn chmod(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn fchmodat(d: c_int, p: *const c_char, m: mode_t, f: c_int) -> c_int, real => changed(d, p, false, real);
    fn chown(p: *const c_char, u: uid_t, g: gid_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn lchown(p: *const c_char, u: uid_t, g: gid_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn fchownat(d: c_int, p: *const c_char, u: uid_t, g: gid_t, f: c_int) -> c_int, real => changed(d, p, false, real);
    fn utime(p: *const c_char, t: *const utimbuf) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn utimes(p: *const c_char, t: *const timeval) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn lutimes(p: *const c_char, t: *const timeval) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn futimesat(d: c_int, p: *const c_char, t: *const timeval) -> c_int, real => changed(d, p, false, real);
    fn utimensat(d: c_int, p: *const c_char, t: *const timespec, f: c_int) -> c_int, real => { let _ = f; utimens_at(d, p, t, real) };
    fn futimens(fd: c_int, t: *const timespec) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(utimensat(AT_FDCWD, o, t, 0)), real);
    fn futimes(fd: c_int, t: *const timeval) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(utimes(o, t)), real);
    fn fchmod(fd: c_int, m: mode_t) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(chmod(o, m)), real);
    fn fchown(fd: c_int, u: uid_t, g: gid_t) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(chown(o, u, g)), real);
    fn mknod(p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
    fn mknodat(d: c_int, p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int, real => changed(d, p, false, real);
    fn mkfifo(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, false, real);
}
