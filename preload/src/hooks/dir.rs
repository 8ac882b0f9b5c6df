//! opendir and friends. A listed directory is served as a stream over its
//! recorded listing; fdopendir and unknown directories go to libc.

use libc::{c_char, c_int, c_long, dirent as Dirent, dirent64 as Dirent64, DIR};

use fmcache_core::answer::{self, Answer};
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::{CPath, Out};
use crate::dirs;
use crate::state::{dispatch, Outcome};

pub fn opendir_common(p: CPath<'_>, real: impl FnOnce() -> *mut DIR) -> *mut DIR {
    dispatch(
        "opendir",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if !srv.serving_key(libc::AT_FDCWD, p, &mut k) {
                return Outcome::Pass("outside the cached trees, or no key");
            }
            Outcome::from(answer::list(&srv.view, srv, k.as_bytes()))
                .and_then(|(e, _)| dirs::open(e.index()).map_or(Outcome::Miss, Outcome::Served))
        },
        |rec| rec.note(Kind::List, libc::AT_FDCWD, p),
        core::ptr::null_mut(),
        real,
    )
}

/// Runs `served` on one of our streams, or `real` on libc's. A stream is
/// ours by its address (our pool), whatever the mode is now: libc must
/// never see our struct.
fn with_dir<T>(
    dirp: *mut DIR,
    served: impl FnOnce(&'static dirs::FakeDir, &'static crate::server::Server) -> T,
    real: impl FnOnce() -> T,
) -> T {
    if let (Some(d), Some(srv)) = (dirs::ours(dirp), crate::state::server()) {
        return served(d, srv);
    }
    real()
}

fn readdir_common(dirp: *mut DIR, real: impl FnOnce() -> *mut Dirent64) -> *mut Dirent64 {
    with_dir(
        dirp,
        |d, srv| d.next(&srv.view).unwrap_or(core::ptr::null_mut()),
        real,
    )
}

fn readdir_r_common(
    dirp: *mut DIR,
    entry: Out<'_, Dirent64>,
    result: Out<'_, *mut Dirent64>,
    real: impl FnOnce() -> c_int,
) -> c_int {
    with_dir(
        dirp,
        |d, srv| {
            match d.next_record(&srv.view) {
                Some(rec) => {
                    entry.write_bytes(rec);
                    result.write(entry.as_ptr());
                }
                None => {
                    result.write(core::ptr::null_mut());
                }
            }
            0
        },
        real,
    )
}

fn closedir_common(dirp: *mut DIR, real: impl FnOnce() -> c_int) -> c_int {
    // Our streams are closed even if serving stopped since they were opened.
    match dirs::ours(dirp) {
        Some(d) => {
            d.close();
            0
        }
        None => real(),
    }
}

fn dirfd_common(dirp: *mut DIR, real: impl FnOnce() -> c_int) -> c_int {
    with_dir(
        dirp,
        |d, srv| {
            let mut p = PathBuf::new();
            if dir_path(d, srv, &mut p) {
                d.fd(p.as_cstr())
            } else {
                -1
            }
        },
        real,
    )
}

/// The original path of a served stream's directory.
fn dir_path(d: &dirs::FakeDir, srv: &crate::server::Server, out: &mut PathBuf) -> bool {
    srv.view.entry(d.entry()).is_some_and(|e| out.set(e.path()))
}

/// rewinddir on a served stream: the live directory if the process
/// changed it since the listing was recorded.
fn rewind_served(d: &dirs::FakeDir, srv: &crate::server::Server) {
    use fmcache_core::answer::Trust;
    let mut p = PathBuf::new();
    if dir_path(d, srv, &mut p) {
        let saved = crate::errno::get();
        d.rewind(p.as_cstr(), !srv.trusted(d.entry(), p.as_bytes()));
        crate::errno::set(saved);
    } else {
        d.seek(0);
    }
}

/// scandir: the listing, filtered and sorted as libc does, in memory the
/// caller frees with free(3).
fn scandir_common(
    p: CPath<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: dirs::Filter,
    compar: dirs::Compar,
    real: impl FnOnce() -> c_int,
) -> c_int {
    dispatch(
        "scandir",
        p,
        |srv| {
            let mut k = PathBuf::new();
            if list.is_null() || !srv.serving_key(libc::AT_FDCWD, p, &mut k) {
                return Outcome::Pass("no list, outside the cached trees, or no key");
            }
            let listing = match answer::list(&srv.view, srv, k.as_bytes()) {
                Answer::Hit((_, l)) => l,
                Answer::Errno(e) => return Outcome::Fail(e),
                Answer::Miss => return Outcome::Miss,
            };
            match dirs::scandir_array(listing, filter, compar) {
                Ok((array, n)) => {
                    list.write(array);
                    Outcome::Served(n as c_int)
                }
                Err(e) => Outcome::Fail(e),
            }
        },
        |rec| rec.note(Kind::List, libc::AT_FDCWD, p),
        -1,
        real,
    )
}

hook! {
    fn opendir(p: *const c_char) -> *mut DIR, real => opendir_common(p, real);
    fn readdir(d: *mut DIR) -> *mut Dirent, real => readdir_common(d, || real().cast()).cast();
    fn readdir64(d: *mut DIR) -> *mut Dirent64, real => readdir_common(d, real);
    fn readdir_r(d: *mut DIR, e: *mut Dirent, r: *mut *mut Dirent) -> c_int, real => readdir_r_common(d, e.cast(), r.cast(), real);
    fn readdir64_r(d: *mut DIR, e: *mut Dirent64, r: *mut *mut Dirent64) -> c_int, real => readdir_r_common(d, e, r, real);
    fn closedir(d: *mut DIR) -> c_int, real => closedir_common(d, real);
    fn dirfd(d: *mut DIR) -> c_int, real => dirfd_common(d, real);
    fn telldir(d: *mut DIR) -> c_long, real => with_dir(d, |fd, _| fd.tell() as c_long, real);
    // SAFETY: `l` is writable for one array pointer (scandir's contract; dirent and dirent64 agree on x86-64 and aarch64).
    fn scandir(p: *const c_char, l: *mut *mut *mut Dirent, f: dirs::Filter, c: dirs::Compar) -> c_int, real => scandir_common(p, unsafe { Out::new(l.cast()) }, f, c, real);
    // SAFETY: `l` is writable for one array pointer (scandir's contract).
    fn scandir64(p: *const c_char, l: *mut *mut *mut Dirent64, f: dirs::Filter, c: dirs::Compar) -> c_int, real => scandir_common(p, unsafe { Out::new(l) }, f, c, real);
    fn fdopendir(fd: c_int) -> *mut DIR, real => fdopendir_common(fd, real);
    fn rewinddir(d: *mut DIR) -> (), real => with_dir(d, rewind_served, real);
    fn seekdir(d: *mut DIR, pos: c_long) -> (), real => with_dir(d, |fd, _| fd.seek(pos), real);
}

/// fdopendir: libc's stream on the real descriptor; recorded as a listing
/// of the directory the descriptor names.
fn fdopendir_common(fd: c_int, real: impl FnOnce() -> *mut DIR) -> *mut DIR {
    dispatch(
        "fdopendir",
        CPath::null(),
        |_| Outcome::Pass("a real descriptor"),
        |rec| rec.note(Kind::List, fd, CPath::of(c"")),
        core::ptr::null_mut(),
        real,
    )
}
