//! The exported symbols. Each is one line in a `hook!` table that forwards
//! to a family handler (stat, access, open, dir, link, modify, process);
//! the handler decides "served", "fail with errno" or "pass through" and
//! `state::dispatch` acts on it.

use fmcache_format::StatRec;

use crate::cargs::Out;

/// What a failed call returns.
pub trait FailValue {
    fn fail() -> Self;
}
impl FailValue for libc::c_int {
    fn fail() -> Self {
        -1
    }
}
impl FailValue for libc::ssize_t {
    fn fail() -> Self {
        -1
    }
}
impl FailValue for i64 {
    fn fail() -> Self {
        -1
    }
}
/// `rewinddir`, `seekdir`: nothing to return (errno says ENOSYS).
impl FailValue for () {
    fn fail() -> Self {}
}
impl<T> FailValue for *mut T {
    fn fail() -> Self {
        core::ptr::null_mut()
    }
}

/// `hook! { fn name(args) -> Ret, real => handler(.., real); ... }` defines
/// the exported `name`, binding `real` to a closure that calls libc's, and
/// `resolve()`, which looks every real function up at once (one `hook!`
/// per module).
macro_rules! hook {
    ($(fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty, $real:ident => $body:expr;)*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
                let $real = move || match $name::real() {
                    // SAFETY: forwarding the caller's own arguments unchanged.
                    Some(f) => unsafe { f($($a),*) },
                    None => {
                        crate::errno::set(libc::ENOSYS);
                        <$r as crate::hooks::FailValue>::fail()
                    }
                };
                // The boundary: from here on the handler sees `CPath`,
                // `Out` and plain values, never a pointer to dereference.
                $(
                    // SAFETY: each argument is as the C contract of
                    // `$name` says (a string NUL-terminated, an out
                    // pointer writable), for the duration of the call.
                    #[allow(unused_variables)]
                    let $a = unsafe { crate::cargs::FromC::convert($a) };
                )*
                $body
            }

            /// The real function (a module beside the function of the
            /// same name, so `resolve` shares its one resolution).
            #[allow(non_snake_case)]
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                pub fn real() -> Option<unsafe extern "C" fn($($t),*) -> $r> {
                    real!($name: fn($($t),*) -> $r)
                }
            }
        )*

        /// Resolves the real functions in the constructor: dlsym takes the
        /// loader's lock, which a hook first called from a signal handler
        /// must not need (stat, open, access are async-signal-safe).
        pub fn resolve() {
            $( let _ = $name::real(); )*
        }
    };
}

/// Calls the real function of a hook defined in this module (resolved in
/// the constructor with the rest), or fails with ENOSYS.
macro_rules! call_hooked_real {
    ($name:ident($($val:expr),*)) => {
        match $name::real() {
            // SAFETY: the real function, with the arguments its hook got.
            Some(f) => unsafe { f($($val),*) },
            None => {
                crate::errno::set(libc::ENOSYS);
                -1
            }
        }
    };
}

pub mod access;
pub mod dir;
pub mod dl;
pub mod exec;
pub mod link;
pub mod modify;
pub mod open;
pub mod process;
pub mod stat;

/// Fills a `struct stat` (== `struct stat64` on x86-64 and aarch64) as the
/// kernel would: every field, padding zeroed.
pub fn fill_stat(st: &StatRec, buf: Out<'_, libc::stat>) {
    // SAFETY: all-zero is a valid `struct stat`.
    let mut s: libc::stat = unsafe { core::mem::zeroed() };
    s.st_dev = st.dev as _;
    s.st_ino = st.ino as _;
    s.st_nlink = st.nlink as _;
    s.st_mode = st.mode as _;
    s.st_uid = st.uid as _;
    s.st_gid = st.gid as _;
    s.st_rdev = st.rdev as _;
    s.st_size = st.size as _;
    s.st_blksize = st.blksize as _;
    s.st_blocks = st.blocks as _;
    s.st_atime = st.atime as _;
    s.st_atime_nsec = st.atime_nsec as _;
    s.st_mtime = st.mtime as _;
    s.st_mtime_nsec = st.mtime_nsec as _;
    s.st_ctime = st.ctime as _;
    s.st_ctime_nsec = st.ctime_nsec as _;
    buf.write(s);
}

/// Fills a `struct statx` for a request the recorded mask covers.
pub fn fill_statx(st: &StatRec, mask: u32, buf: Out<'_, libc::statx>) {
    let ts = |sec: i64, nsec: u32| {
        // SAFETY: all-zero is a valid timestamp (padding included).
        let mut t: libc::statx_timestamp = unsafe { core::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec;
        t
    };
    // SAFETY: all-zero is a valid `struct statx`.
    let mut x: libc::statx = unsafe { core::mem::zeroed() };
    x.stx_mask = mask;
    x.stx_blksize = st.blksize as u32;
    x.stx_attributes = st.stx_attributes;
    x.stx_nlink = st.nlink as u32;
    x.stx_uid = st.uid;
    x.stx_gid = st.gid;
    x.stx_mode = st.mode as u16;
    x.stx_ino = st.ino;
    x.stx_size = st.size as u64;
    x.stx_blocks = st.blocks as u64;
    x.stx_attributes_mask = st.stx_attributes_mask;
    x.stx_atime = ts(st.atime, st.atime_nsec as u32);
    x.stx_btime = ts(st.btime, st.btime_nsec);
    x.stx_ctime = ts(st.ctime, st.ctime_nsec as u32);
    x.stx_mtime = ts(st.mtime, st.mtime_nsec as u32);
    x.stx_rdev_major = libc::major(st.rdev as libc::dev_t);
    x.stx_rdev_minor = libc::minor(st.rdev as libc::dev_t);
    x.stx_dev_major = libc::major(st.dev as libc::dev_t);
    x.stx_dev_minor = libc::minor(st.dev as libc::dev_t);
    x.stx_mnt_id = st.mnt_id;
    buf.write(x);
}
