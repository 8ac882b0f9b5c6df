//! The LD_AUDIT interface: the dynamic loader's own library search, which
//! LD_PRELOAD cannot see. ld.so asks `la_objsearch` about every candidate
//! path before opening it: recording notes each one; serving skips a
//! candidate the cache knows is missing (NULL: no system call) and sends a
//! found one to its staged copy, whose directory then anchors `$ORIGIN`,
//! so dependencies are searched inside the stage. Candidates under the
//! stage are mapped back to their original paths for the lookup.
//!
//! This copy of the library lives in the auditor's own link namespace,
//! with its own statics: its constructor set up its own recorder or server.

use core::ffi::{c_char, c_uint, CStr};

use fmcache_core::answer::{self, Answer};
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::state::{mode, Mode};

/// la_version: accept the loader's interface version as given.
#[no_mangle]
pub extern "C" fn la_version(version: c_uint) -> c_uint {
    version
}

const LA_SER_ORIG: c_uint = 0x01;

/// The path ld.so should try instead of `name`, or NULL to skip it.
#[no_mangle]
pub unsafe extern "C" fn la_objsearch(
    name: *const c_char,
    _cookie: *mut usize,
    flag: c_uint,
) -> *mut c_char {
    let keep = name as *mut c_char;
    let Ok(out) = std::panic::catch_unwind(|| search(name, flag)) else {
        return keep;
    };
    out.unwrap_or(keep)
}

/// Staged copies' paths handed to ld.so must outlive the call: one slot
/// per candidate in a ring (ld.so copies the name it opens).
static mut RING: [[u8; fmcache_core::path::PATH_MAX]; 8] = [[0; fmcache_core::path::PATH_MAX]; 8];
static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn search(name: *const c_char, flag: c_uint) -> Option<*mut c_char> {
    if name.is_null() {
        return None;
    }
    // SAFETY: ld.so passes a NUL-terminated name.
    let given = unsafe { CStr::from_ptr(name) }.to_bytes();
    // A bare name (no '/') is not a path yet: the search follows.
    if !given.contains(&b'/') || flag & LA_SER_ORIG != 0 && given.first() != Some(&b'/') {
        return None;
    }
    match mode() {
        Mode::Record(rec) => {
            rec.note(Kind::Open, libc::AT_FDCWD, name);
            None
        }
        Mode::Serve(srv) => {
            let mut k = PathBuf::new();
            if !srv.key(libc::AT_FDCWD, name, &mut k) {
                return None;
            }
            let mut orig = PathBuf::new();
            let key = match srv.original_of_staged(k.as_bytes(), &mut orig) {
                true => orig.as_bytes(),
                false => k.as_bytes(),
            };
            match answer::open_read(&srv.view, srv, key, 0) {
                Answer::Errno(_) => Some(core::ptr::null_mut()),
                Answer::Hit(f) => {
                    let mut staged = PathBuf::new();
                    if !srv.staged_path(f.mirror, &mut staged) {
                        return None;
                    }
                    let slot = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % 8;
                    let bytes = staged.as_cstr().to_bytes_with_nul();
                    // SAFETY: the loader lock serialises la_objsearch calls.
                    unsafe {
                        let dst = &mut *core::ptr::addr_of_mut!(RING[slot]);
                        dst[..bytes.len()].copy_from_slice(bytes);
                        Some(dst.as_mut_ptr().cast())
                    }
                }
                // Unknown here, or under the stage without a copy: the
                // original path (never a stage path ld.so would miss).
                Answer::Miss if key.len() != k.as_bytes().len() => {
                    let slot = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % 8;
                    // SAFETY: as above.
                    unsafe {
                        let dst = &mut *core::ptr::addr_of_mut!(RING[slot]);
                        dst[..key.len()].copy_from_slice(key);
                        dst[key.len()] = 0;
                        Some(dst.as_mut_ptr().cast())
                    }
                }
                Answer::Miss => None,
            }
        }
        Mode::Off => None,
    }
}
