//! stat, lstat, fstatat, statx, their *64 names, the __xstat family of
//! binaries built against glibc < 2.33, and fstat (which reports the
//! original file's stat on a served descriptor).

use libc::{
    c_char, c_int, stat as Stat, statx as Statx, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW,
};

use fmcache_core::answer;
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use super::{fill_stat, fill_statx};
use crate::cargs::CPath;
use crate::cargs::Out;
use crate::server::Server;
use crate::state::{dispatch, mode, Mode, Outcome};
use fmcache_format::StatRec;

const AT_NO_AUTOMOUNT: c_int = 0x800;
/// _STAT_VER_KERNEL and _STAT_VER_LINUX on x86-64: both mean `struct stat`.
const STAT_VERS: [c_int; 2] = [0, 1];

/// stat-family call on a path.
pub fn stat_at(
    dirfd: c_int,
    p: CPath<'_>,
    buf: Out<'_, Stat>,
    flags: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if flags & AT_EMPTY_PATH != 0 && p.bytes() == Some(b"") {
        return fstat_fd(buf, real);
    }
    dispatch(
        "stat",
        p,
        |srv| {
            if buf.is_null()
                || flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH) != 0
            {
                return Outcome::Pass("flags not served");
            }
            cached_stat(srv, dirfd, p, flags).map(|st| {
                fill_stat(st, buf);
                0
            })
        },
        |rec| rec.note(Kind::Stat, dirfd, p),
        -1,
        real,
    )
}

/// The cached stat(2)/lstat(2) answer for a path (AT_SYMLINK_NOFOLLOW in
/// `flags` chooses lstat).
fn cached_stat(
    srv: &'static Server,
    dirfd: c_int,
    p: CPath<'_>,
    flags: c_int,
) -> Outcome<&'static StatRec> {
    let mut k = PathBuf::new();
    if !srv.serving_key(dirfd, p, &mut k) {
        return Outcome::Pass("outside the cached trees, or no key");
    }
    answer::stat(
        &srv.view,
        srv,
        k.as_bytes(),
        flags & AT_SYMLINK_NOFOLLOW == 0,
    )
    .into()
}

/// fstat-like call: the real answer, with a staged copy's stat replaced
/// by the original file's.
pub fn fstat_fd(buf: Out<'_, Stat>, real: impl FnOnce() -> c_int) -> c_int {
    let r = real();
    if r == 0 {
        if let Mode::Serve(srv) = mode() {
            // SAFETY: the real call succeeded: it filled `buf`.
            if let Some(real_st) = unsafe { buf.filled() } {
                if let Some(st) = srv.descriptor_stat(real_st.st_dev, real_st.st_ino) {
                    fill_stat(&st, buf);
                }
            }
        }
    }
    r
}

const STATX_BASIC_STATS: u32 = 0x7ff;
const STATX_BTIME: u32 = 0x800;
const STATX_MNT_ID: u32 = 0x1000;
const AT_STATX_FORCE_SYNC: c_int = 0x2000;

/// statx(2). Served only for requests whose answer the recorded one
/// determines: basic stats with the birth time (what Rust's std asks).
pub fn statx_at(
    dirfd: c_int,
    p: CPath<'_>,
    flags: c_int,
    mask: u32,
    buf: Out<'_, Statx>,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let servable =
        mask & STATX_BTIME != 0 && mask & !(STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID) == 0;
    if flags & AT_EMPTY_PATH != 0 && p.bytes() == Some(b"") {
        let r = real();
        if r == 0 && servable {
            if let Mode::Serve(srv) = mode() {
                // SAFETY: the real call succeeded: it filled `buf`.
                if let Some(x) = unsafe { buf.filled() } {
                    let dev = libc::makedev(x.stx_dev_major, x.stx_dev_minor) as u64;
                    if let Some(st) = srv.descriptor_stat(dev, x.stx_ino) {
                        fill_statx(&st, st.stx_mask, buf);
                    }
                }
            }
        }
        return r;
    }
    dispatch(
        "statx",
        p,
        |srv| {
            if buf.is_null()
                || !servable
                || flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) != 0
                || flags & AT_STATX_FORCE_SYNC != 0
            {
                return Outcome::Pass("flags not served");
            }
            match cached_stat(srv, dirfd, p, flags) {
                Outcome::Served(st) if st.stx_mask != 0 => {
                    fill_statx(st, st.stx_mask, buf);
                    Outcome::Served(0)
                }
                // Recorded without statx: the kernel must answer.
                Outcome::Served(_) => Outcome::Miss,
                other => other.map(|_| 0),
            }
        },
        |rec| rec.note(Kind::Stat, dirfd, p),
        -1,
        real,
    )
}

/// __xstat family: served like the modern call when `ver` is one x86-64
/// libc accepts; anything else is libc's to reject.
fn xstat(
    ver: c_int,
    dirfd: c_int,
    p: CPath<'_>,
    buf: Out<'_, Stat>,
    flags: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if !STAT_VERS.contains(&ver) {
        return real();
    }
    stat_at(dirfd, p, buf, flags, real)
}

fn fxstat(ver: c_int, buf: Out<'_, Stat>, real: impl FnOnce() -> c_int) -> c_int {
    if !STAT_VERS.contains(&ver) {
        return real();
    }
    fstat_fd(buf, real)
}

hook! {
    fn stat(p: *const c_char, b: *mut Stat) -> c_int, real => stat_at(AT_FDCWD, p, b, 0, real);
    fn stat64(p: *const c_char, b: *mut Stat) -> c_int, real => stat_at(AT_FDCWD, p, b, 0, real);
    fn lstat(p: *const c_char, b: *mut Stat) -> c_int, real => stat_at(AT_FDCWD, p, b, AT_SYMLINK_NOFOLLOW, real);
    fn lstat64(p: *const c_char, b: *mut Stat) -> c_int, real => stat_at(AT_FDCWD, p, b, AT_SYMLINK_NOFOLLOW, real);
    fn fstatat(d: c_int, p: *const c_char, b: *mut Stat, f: c_int) -> c_int, real => stat_at(d, p, b, f, real);
    fn fstatat64(d: c_int, p: *const c_char, b: *mut Stat, f: c_int) -> c_int, real => stat_at(d, p, b, f, real);
    fn fstat(fd: c_int, b: *mut Stat) -> c_int, real => { let _ = fd; fstat_fd(b, real) };
    fn fstat64(fd: c_int, b: *mut Stat) -> c_int, real => { let _ = fd; fstat_fd(b, real) };
    fn statx(d: c_int, p: *const c_char, f: c_int, m: u32, b: *mut Statx) -> c_int, real => statx_at(d, p, f, m, b, real);
    fn __xstat(v: c_int, p: *const c_char, b: *mut Stat) -> c_int, real => xstat(v, AT_FDCWD, p, b, 0, real);
    fn __xstat64(v: c_int, p: *const c_char, b: *mut Stat) -> c_int, real => xstat(v, AT_FDCWD, p, b, 0, real);
    fn __lxstat(v: c_int, p: *const c_char, b: *mut Stat) -> c_int, real => xstat(v, AT_FDCWD, p, b, AT_SYMLINK_NOFOLLOW, real);
    fn __lxstat64(v: c_int, p: *const c_char, b: *mut Stat) -> c_int, real => xstat(v, AT_FDCWD, p, b, AT_SYMLINK_NOFOLLOW, real);
    fn __fxstatat(v: c_int, d: c_int, p: *const c_char, b: *mut Stat, f: c_int) -> c_int, real => xstat(v, d, p, b, f, real);
    fn __fxstatat64(v: c_int, d: c_int, p: *const c_char, b: *mut Stat, f: c_int) -> c_int, real => xstat(v, d, p, b, f, real);
    fn __fxstat(v: c_int, fd: c_int, b: *mut Stat) -> c_int, real => { let _ = fd; fxstat(v, b, real) };
    fn __fxstat64(v: c_int, fd: c_int, b: *mut Stat) -> c_int, real => { let _ = fd; fxstat(v, b, real) };
}
