//! Calls that change the tree. Passed through always; a serving process
//! stops trusting what it changed, a recording one marks it modified so it
//! is never cached.

use libc::{
    c_char, c_int, c_uint, gid_t, mode_t, off_t, timespec, timeval, uid_t, utimbuf, AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
};

use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::{CPath, InBytes};
use crate::state::{dispatch, mode, Mode, Outcome};

/// One changed path (see `changes::path_changed` for `names`, `follow`).
/// `moves_dirs`: the call may move or remove a directory, so the tracked
/// cwd is read again after it succeeds.
fn changed(
    dirfd: c_int,
    p: CPath<'_>,
    names: bool,
    follow: bool,
    moves_dirs: bool,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let mut dir = false;
    let r = dispatch(
        "change",
        p,
        |srv| {
            // Descriptors the program holds on the staged copy follow the
            // original before it changes (fds.rs).
            let mut k = PathBuf::new();
            if crate::keys::resolve(dirfd, p, &mut k) {
                crate::fds::before_change(srv, k.as_bytes());
            }
            dir = crate::changes::path_changed(srv, dirfd, p, names, follow);
            Outcome::Pass("a change")
        },
        |rec| rec.note(Kind::Modify, dirfd, p),
        -1,
        real,
    );
    if r == 0 && moves_dirs && (dir || matches!(mode(), Mode::Record(_))) {
        crate::changes::cwd_may_have_moved();
    }
    r
}

/// A change through a descriptor. On a served descriptor it is applied to
/// the original file by path (the staged copy is shared by every process
/// on the node and must never change), and the entry is no longer trusted;
/// on any other descriptor every entry naming its file is no longer
/// trusted.
fn changed_fd(
    fd: c_int,
    on_original: impl FnOnce(*const c_char) -> c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if let Mode::Serve(srv) = mode() {
        if let Some(e) = srv.staged_fd(fd) {
            let mut p = PathBuf::new();
            if p.set(e.path()) {
                crate::fds::before_change(srv, p.as_bytes());
                srv.invalidate(p.as_bytes(), false);
                crate::changes::path_changed(srv, AT_FDCWD, CPath::of(p.as_cstr()), false, true);
                return on_original(p.as_cstr().as_ptr());
            }
        }
    }
    dispatch(
        "change",
        CPath::null(),
        |srv| {
            crate::changes::fd_changed(srv, fd, false);
            Outcome::Pass("a change")
        },
        |rec| rec.note(Kind::Modify, fd, CPath::of(c"")),
        -1,
        real,
    )
}

/// utimensat(fd, NULL, ...) changes the descriptor's file.
fn utimens_at(
    d: c_int,
    p: CPath<'_>,
    t: *const timespec,
    f: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    if p.is_null() {
        return changed_fd(
            d,
            |orig| call_hooked_real!(utimensat(AT_FDCWD, orig, t, 0)),
            real,
        );
    }
    changed(d, p, false, f & AT_SYMLINK_NOFOLLOW == 0, false, real)
}

/// rename: both names change; either may be a directory.
fn renamed(
    d1: c_int,
    p1: CPath<'_>,
    d2: c_int,
    p2: CPath<'_>,
    real: impl FnOnce() -> c_int,
) -> c_int {
    changed(d1, p1, true, false, true, || {
        changed(d2, p2, true, false, true, real)
    })
}

/// link: the new name appears; the file's link count changes under every
/// name it has (`follow`: AT_SYMLINK_FOLLOW).
fn linked(
    d1: c_int,
    p1: CPath<'_>,
    d2: c_int,
    p2: CPath<'_>,
    follow: bool,
    real: impl FnOnce() -> c_int,
) -> c_int {
    changed(d1, p1, false, follow, false, || {
        changed(d2, p2, true, false, false, real)
    })
}

/// Whether an *at flag argument asks to follow a final symlink.
fn follows(f: c_int) -> bool {
    f & AT_SYMLINK_NOFOLLOW == 0
}

hook! {
    fn mkdir(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, true, false, false, real);
    fn mkdirat(d: c_int, p: *const c_char, m: mode_t) -> c_int, real => changed(d, p, true, false, false, real);
    fn rmdir(p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, true, false, true, real);
    fn unlink(p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, true, false, false, real);
    fn unlinkat(d: c_int, p: *const c_char, f: c_int) -> c_int, real => changed(d, p, true, false, f & libc::AT_REMOVEDIR != 0, real);
    fn rename(a: *const c_char, b: *const c_char) -> c_int, real => renamed(AT_FDCWD, a, AT_FDCWD, b, real);
    fn renameat(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> c_int, real => renamed(da, a, db, b, real);
    fn renameat2(da: c_int, a: *const c_char, db: c_int, b: *const c_char, f: c_uint) -> c_int, real => renamed(da, a, db, b, real);
    fn link(a: *const c_char, b: *const c_char) -> c_int, real => linked(AT_FDCWD, a, AT_FDCWD, b, false, real);
    fn linkat(da: c_int, a: *const c_char, db: c_int, b: *const c_char, f: c_int) -> c_int, real => linked(da, a, db, b, f & libc::AT_SYMLINK_FOLLOW != 0, real);
    fn symlink(t: *const c_char, p: *const c_char) -> c_int, real => changed(AT_FDCWD, p, true, false, false, real);
    fn symlinkat(t: *const c_char, d: c_int, p: *const c_char) -> c_int, real => changed(d, p, true, false, false, real);
    fn truncate(p: *const c_char, n: off_t) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn truncate64(p: *const c_char, n: off_t) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn chmod(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn fchmodat(d: c_int, p: *const c_char, m: mode_t, f: c_int) -> c_int, real => changed(d, p, false, follows(f), false, real);
    fn chown(p: *const c_char, u: uid_t, g: gid_t) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn lchown(p: *const c_char, u: uid_t, g: gid_t) -> c_int, real => changed(AT_FDCWD, p, false, false, false, real);
    fn fchownat(d: c_int, p: *const c_char, u: uid_t, g: gid_t, f: c_int) -> c_int, real => changed(d, p, false, follows(f), false, real);
    fn utime(p: *const c_char, t: *const utimbuf) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn utimes(p: *const c_char, t: *const timeval) -> c_int, real => changed(AT_FDCWD, p, false, true, false, real);
    fn lutimes(p: *const c_char, t: *const timeval) -> c_int, real => changed(AT_FDCWD, p, false, false, false, real);
    fn futimesat(d: c_int, p: *const c_char, t: *const timeval) -> c_int, real => changed(d, p, false, true, false, real);
    fn utimensat(d: c_int, p: *const c_char, t: *const timespec, f: c_int) -> c_int, real => utimens_at(d, p, t, f, real);
    fn futimens(fd: c_int, t: *const timespec) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(utimensat(AT_FDCWD, o, t, 0)), real);
    fn futimes(fd: c_int, t: *const timeval) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(utimes(o, t)), real);
    fn fchmod(fd: c_int, m: mode_t) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(chmod(o, m)), real);
    fn fchown(fd: c_int, u: uid_t, g: gid_t) -> c_int, real => changed_fd(fd, |o| call_hooked_real!(chown(o, u, g)), real);
    fn mknod(p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int, real => changed(AT_FDCWD, p, true, false, false, real);
    fn mknodat(d: c_int, p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int, real => changed(d, p, true, false, false, real);
    fn mkfifo(p: *const c_char, m: mode_t) -> c_int, real => changed(AT_FDCWD, p, true, false, false, real);
    fn mkfifoat(d: c_int, p: *const c_char, m: mode_t) -> c_int, real => changed(d, p, true, false, false, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkstemp(t: *mut c_char) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkstemp64(t: *mut c_char) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkostemp(t: *mut c_char, f: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkostemp64(t: *mut c_char, f: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkstemps(t: *mut c_char, n: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkstemps64(t: *mut c_char, n: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkostemps(t: *mut c_char, n: c_int, f: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    // SAFETY: the template is a NUL-terminated string the call fills in.
    fn mkostemps64(t: *mut c_char, n: c_int, f: c_int) -> c_int, real => temp_file(unsafe { CPath::new(t) }, real);
    fn mkdtemp(t: *mut c_char) -> *mut c_char, real => temp_dir(real);
    // SAFETY: `a` holds `n` readable bytes whenever bind succeeds with it (its contract).
    fn bind(fd: c_int, a: *const libc::sockaddr, n: libc::socklen_t) -> c_int, real => bound(unsafe { InBytes::new(a.cast(), n as usize) }, real);
}

/// mkstemp and its variants create a file glibc names (no hook sees the
/// open inside): its name is known only after the call.
fn temp_file(t: CPath<'_>, real: impl FnOnce() -> c_int) -> c_int {
    let fd = real();
    if fd >= 0 {
        created(t);
    }
    fd
}

/// mkdtemp: the same for a directory.
fn temp_dir(real: impl FnOnce() -> *mut c_char) -> *mut c_char {
    let r = real();
    // SAFETY: mkdtemp returns null or its template, a NUL-terminated
    // string of the caller's, now naming the directory.
    created(unsafe { CPath::new(r) });
    r
}

/// bind(2) of a Unix socket to a path creates that path.
/// `addr`: the address's bytes as the caller gave them (`addrlen`).
fn bound(addr: InBytes<'_>, real: impl FnOnce() -> c_int) -> c_int {
    let r = real();
    if r != 0 {
        return r;
    }
    let Some(addr) = addr.after_success() else {
        return r;
    };
    let base = core::mem::offset_of!(libc::sockaddr_un, sun_path);
    if addr.len() <= base {
        return r;
    }
    let fam = libc::sa_family_t::from_ne_bytes([addr[0], addr[1]]);
    if fam as c_int != libc::AF_UNIX {
        return r;
    }
    let raw = &addr[base..];
    // An abstract socket (leading NUL) has no path.
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let mut p = PathBuf::new();
    if len > 0 && p.set(&raw[..len]) {
        created(CPath::of(p.as_cstr()));
    }
    r
}

/// A name just created behind our back (relative to the cwd).
fn created(p: CPath<'_>) {
    let saved = crate::errno::get();
    match mode() {
        Mode::Serve(srv) => {
            let _ = std::panic::catch_unwind(|| {
                crate::changes::path_changed(srv, AT_FDCWD, p, true, false)
            });
        }
        Mode::Record(rec) => {
            let _ = std::panic::catch_unwind(|| rec.note(Kind::Modify, AT_FDCWD, p));
        }
        Mode::Off => {}
    }
    crate::errno::set(saved);
}
