//! access, faccessat, euidaccess/eaccess. Served only in processes whose
//! real and effective ids match the recorder's (checked at attach), so the
//! recorded answers are this process's answers.

use libc::{c_char, c_int, AT_FDCWD};

use fmcache_core::answer;
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::CPath;
use crate::state::{dispatch, Outcome};

pub fn access_at(
    dirfd: c_int,
    p: CPath<'_>,
    mode: c_int,
    flags: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    dispatch(
        "access",
        p,
        |srv| {
            if flags & !libc::AT_EACCESS != 0 {
                return Outcome::Pass("flags not served");
            }
            let mut k = PathBuf::new();
            if !srv.serving_key(dirfd, p, &mut k) {
                return Outcome::Pass("outside the cached trees, or no key");
            }
            answer::access(&srv.view, srv, k.as_bytes(), mode)
                .map(|()| 0)
                .into()
        },
        |rec| rec.note(Kind::Stat, dirfd, p),
        -1,
        real,
    )
}

hook! {
    fn access(p: *const c_char, m: c_int) -> c_int, real => access_at(AT_FDCWD, p, m, 0, real);
    fn faccessat(d: c_int, p: *const c_char, m: c_int, f: c_int) -> c_int, real => access_at(d, p, m, f, real);
    fn euidaccess(p: *const c_char, m: c_int) -> c_int, real => access_at(AT_FDCWD, p, m, libc::AT_EACCESS, real);
    fn eaccess(p: *const c_char, m: c_int) -> c_int, real => access_at(AT_FDCWD, p, m, libc::AT_EACCESS, real);
}
