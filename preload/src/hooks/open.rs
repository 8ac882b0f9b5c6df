//! The open family and stdio's fopen/freopen. A read-only open of a cached
//! regular file returns a real descriptor on its staged copy; an open that
//! may write is passed through and the path is no longer trusted.

use libc::{c_char, c_int, mode_t, AT_FDCWD, FILE, O_ACCMODE, O_CREAT, O_RDONLY, O_TRUNC};

use fmcache_core::answer::{self, Answer};
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::CPath;
use crate::server::Server;
use crate::state::{dispatch, Outcome};

/// Flags a served open may carry; anything else passes through.
const SERVABLE: c_int = libc::O_CLOEXEC
    | libc::O_NOCTTY
    | libc::O_LARGEFILE
    | libc::O_NONBLOCK
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW;

fn writes(flags: c_int) -> bool {
    flags & O_ACCMODE != O_RDONLY || flags & (O_CREAT | O_TRUNC) != 0
}

/// An unnamed file in a directory: nothing anyone can see by name changes
/// (linkat gives it a name later, and that is a change of its own).
fn tmpfile(flags: c_int) -> bool {
    flags & libc::O_TMPFILE == libc::O_TMPFILE
}

/// An open that may write. Before the call the key as spelled is no longer
/// trusted; after it, every entry naming the opened file (its inode: hard
/// links, symlinks, any spelling) and, if it may have been created, its
/// canonical name (the kernel's path of the new descriptor) in every
/// spelling of its directory.
fn write_open(dirfd: c_int, p: CPath<'_>, flags: c_int, real: impl FnOnce() -> c_int) -> c_int {
    if tmpfile(flags) {
        return dispatch("open", p, |_| Outcome::Pass("O_TMPFILE"), |_| {}, -1, real);
    }
    let create = flags & O_CREAT != 0;
    dispatch(
        "open",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if crate::keys::resolve(dirfd, p, &mut k) {
                // Descriptors the program holds on the staged copy follow
                // the original before it changes (fds.rs).
                crate::fds::before_change(srv, k.as_bytes());
                srv.invalidate(k.as_bytes(), create);
            } else if !p.is_null() {
                srv.trust().distrust_all();
            }
            Outcome::Pass("opened for writing")
        },
        |rec| rec.note(Kind::Modify, dirfd, p),
        -1,
        || {
            let fd = real();
            after_write(fd, create);
            fd
        },
    )
}

/// After a write-open returned `fd` (serving only; errno kept).
fn after_write(fd: c_int, create: bool) {
    if fd < 0 {
        return;
    }
    if let crate::state::Mode::Serve(srv) = crate::state::mode() {
        let saved = crate::errno::get();
        let _ = std::panic::catch_unwind(|| crate::changes::fd_changed(srv, fd, create));
        crate::errno::set(saved);
    }
}

/// Decides an open for reading: a descriptor on the staged copy, a known
/// failure, or pass through.
fn serve_open(srv: &Server, dirfd: c_int, p: CPath<'_>, flags: c_int) -> Outcome<c_int> {
    let mut k = PathBuf::new();
    // Write-opens go through `write_open`, fopen's through its own path.
    if writes(flags) {
        return Outcome::Pass("opened for writing");
    }
    if !srv.serving_key(dirfd, p, &mut k) {
        return Outcome::Pass("outside the cached trees, or no key");
    }
    if flags & !SERVABLE != 0 {
        return Outcome::Pass("flags not served");
    }
    Outcome::from(answer::open_read(&srv.view, srv, k.as_bytes(), flags)).and_then(|f| {
        match srv.open_mirror(
            f.mirror,
            f.stat,
            flags & (libc::O_CLOEXEC | libc::O_NONBLOCK),
        ) {
            Some(fd) => {
                crate::fds::handed_out(f.mirror);
                Outcome::Served(fd)
            }
            None => Outcome::Miss,
        }
    })
}

pub fn open_at(dirfd: c_int, p: CPath<'_>, flags: c_int, real: impl FnOnce() -> c_int) -> c_int {
    if writes(flags) {
        return write_open(dirfd, p, flags, real);
    }
    dispatch(
        "open",
        p,
        |srv| serve_open(srv, dirfd, p, flags),
        |rec| rec.note(Kind::Open, dirfd, p),
        -1,
        real,
    )
}

/// After fopen/freopen for writing returned `f`.
fn after_write_stream(f: *mut FILE) {
    if !f.is_null() {
        // SAFETY: a stream libc just returned.
        after_write(unsafe { libc::fileno(f) }, true);
    }
}

/// Records an fopen/freopen: an open for reading, or a change.
fn note_stdio(rec: &crate::recorder::Recorder, read_only: bool, p: CPath<'_>) {
    rec.note(
        if read_only { Kind::Open } else { Kind::Modify },
        AT_FDCWD,
        p,
    );
}

/// stdio mode string -> (read-only, open flags).
fn fopen_flags(mode: CPath<'_>) -> Option<(bool, c_int)> {
    let m = mode.bytes()?;
    let read_only = m.first() == Some(&b'r') && !m.contains(&b'+') && !m.contains(&b',');
    let mut flags = if read_only {
        O_RDONLY
    } else {
        libc::O_WRONLY | O_CREAT
    };
    if m.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    Some((read_only, flags))
}

pub fn fopen_common(p: CPath<'_>, mode: CPath<'_>, real: impl FnOnce() -> *mut FILE) -> *mut FILE {
    let Some((read_only, flags)) = fopen_flags(mode) else {
        return real();
    };
    if !read_only {
        return dispatch(
            "fopen",
            p,
            |srv| {
                let mut k = PathBuf::new();
                if srv.key(AT_FDCWD, p, &mut k) {
                    crate::fds::before_change(srv, k.as_bytes());
                    srv.invalidate(k.as_bytes(), true);
                }
                Outcome::Pass("opened for writing")
            },
            |rec| note_stdio(rec, false, p),
            core::ptr::null_mut(),
            || {
                let f = real();
                after_write_stream(f);
                f
            },
        );
    }
    dispatch(
        "fopen",
        p,
        |srv| match serve_open(srv, AT_FDCWD, p, flags) {
            Outcome::Served(fd) => {
                let f = call_real!(fdopen: fn(c_int, *const c_char) -> *mut FILE, core::ptr::null_mut(), (fd, c"r".as_ptr()));
                if f.is_null() {
                    let e = crate::errno::get();
                    // SAFETY: the descriptor we just opened.
                    unsafe { libc::close(fd) };
                    return Outcome::Fail(e);
                }
                Outcome::Served(f)
            }
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Miss => Outcome::Miss,
            Outcome::Pass(why) => Outcome::Pass(why),
        },
        |rec| note_stdio(rec, read_only, p),
        core::ptr::null_mut(),
        real,
    )
}

/// freopen: served by reopening the stream on the staged copy (failures
/// pass through, since libc closes the stream on failure).
pub fn freopen_common(
    p: CPath<'_>,
    mode: CPath<'_>,
    stream: *mut FILE,
    real: impl FnOnce() -> *mut FILE,
) -> *mut FILE {
    let Some((read_only, flags)) = fopen_flags(mode) else {
        return real();
    };
    if p.is_null() {
        return real();
    }
    dispatch(
        "freopen",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if !srv.key(AT_FDCWD, p, &mut k) {
                return Outcome::Pass("no key");
            }
            if !read_only {
                crate::fds::before_change(srv, k.as_bytes());
                srv.invalidate(k.as_bytes(), true);
                return Outcome::Pass("opened for writing");
            }
            let Answer::Hit(f) = answer::open_read(&srv.view, srv, k.as_bytes(), flags) else {
                return Outcome::Miss;
            };
            // Check the staged copy, then let libc reopen the stream on it.
            let Some(fd) = srv.open_mirror(f.mirror, f.stat, libc::O_CLOEXEC) else {
                return Outcome::Miss;
            };
            // SAFETY: the descriptor we just opened.
            unsafe { libc::close(fd) };
            let mut staged = PathBuf::new();
            if !srv.staged_path(f.mirror, &mut staged) {
                return Outcome::Miss;
            }
            crate::fds::handed_out(f.mirror);
            let r = call_real!(freopen64: fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE, core::ptr::null_mut(), (staged.as_cstr().as_ptr(), mode.as_ptr(), stream));
            if r.is_null() {
                Outcome::Fail(crate::errno::get())
            } else {
                Outcome::Served(r)
            }
        },
        |rec| note_stdio(rec, read_only, p),
        core::ptr::null_mut(),
        || {
            let f = real();
            if !read_only {
                after_write_stream(f);
            }
            f
        },
    )
}

hook! {
    fn open(p: *const c_char, f: c_int, m: mode_t) -> c_int, real => open_at(AT_FDCWD, p, f, real);
    fn open64(p: *const c_char, f: c_int, m: mode_t) -> c_int, real => open_at(AT_FDCWD, p, f, real);
    fn openat(d: c_int, p: *const c_char, f: c_int, m: mode_t) -> c_int, real => open_at(d, p, f, real);
    fn openat64(d: c_int, p: *const c_char, f: c_int, m: mode_t) -> c_int, real => open_at(d, p, f, real);
    fn __open_2(p: *const c_char, f: c_int) -> c_int, real => open_at(AT_FDCWD, p, f, real);
    fn __open64_2(p: *const c_char, f: c_int) -> c_int, real => open_at(AT_FDCWD, p, f, real);
    fn __openat_2(d: c_int, p: *const c_char, f: c_int) -> c_int, real => open_at(d, p, f, real);
    fn __openat64_2(d: c_int, p: *const c_char, f: c_int) -> c_int, real => open_at(d, p, f, real);
    fn creat(p: *const c_char, m: mode_t) -> c_int, real => open_at(AT_FDCWD, p, libc::O_WRONLY | O_CREAT | O_TRUNC, real);
    fn creat64(p: *const c_char, m: mode_t) -> c_int, real => open_at(AT_FDCWD, p, libc::O_WRONLY | O_CREAT | O_TRUNC, real);
    fn fopen(p: *const c_char, m: *const c_char) -> *mut FILE, real => fopen_common(p, m, real);
    fn fopen64(p: *const c_char, m: *const c_char) -> *mut FILE, real => fopen_common(p, m, real);
    fn freopen(p: *const c_char, m: *const c_char, s: *mut FILE) -> *mut FILE, real => freopen_common(p, m, s, real);
    fn freopen64(p: *const c_char, m: *const c_char, s: *mut FILE) -> *mut FILE, real => freopen_common(p, m, s, real);
}
