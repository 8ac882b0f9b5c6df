//! The LD_AUDIT interface: the dynamic loader's own library search, which
//! LD_PRELOAD cannot see. ld.so asks `la_objsearch` first about the name
//! asked for (LA_SER_ORIG: a bare name may be answered at once, see
//! `libsearch.rs`) and then about every candidate path before opening it.
//! Recording notes each one; serving sends a candidate the cache knows is
//! missing to a non-existent path under the stage (a local ENOENT) and a
//! found one to its staged copy, whose directory then anchors `$ORIGIN`,
//! so dependencies are searched inside the stage. Candidates under the
//! stage are mapped back to their original paths for the lookup.
//!
//! This copy of the library lives in the auditor's own link namespace,
//! with its own statics: its constructor set up its own recorder or server.
//! What the program changed is known to the preload copy only (its hooks
//! see the calls), so `la_objopen` finds the preload copy of this file and
//! the server here uses that copy's trust state (`trust::note_peer`).

use core::ffi::{c_char, c_uint, CStr};

use fmcache_core::answer::{self, Answer};
use fmcache_core::journal::Kind;
use fmcache_core::path::PathBuf;

use crate::cargs::CPath;
use crate::carry::{LinkMap, MapRef};
use crate::cell::Static;
use crate::counters::counters;
use crate::state::{mode, Mode};

/// la_version: accept the loader's interface version as given.
#[no_mangle]
pub extern "C" fn la_version(version: c_uint) -> c_uint {
    version
}

const LA_SER_ORIG: c_uint = 0x01;

/// la_objopen: an object ld.so mapped from the stage gets its original
/// path back in `l_name`, which is what dlerror(), dladdr() and
/// dl_iterate_phdr() show and what later dlopen() calls match by name.
/// The original is never longer than the staged path, so it is written in
/// place: ld.so owns (and frees) that buffer.
#[no_mangle]
pub unsafe extern "C" fn la_objopen(
    map: *mut LinkMap,
    lmid: libc::c_long,
    _cookie: *mut usize,
) -> c_uint {
    // SAFETY: ld.so passes the new object's link map, live until its
    // la_objclose.
    let Some(new) = (unsafe { MapRef::new(map) }) else {
        return 0;
    };
    let _ = std::panic::catch_unwind(|| {
        crate::loaders::note_open(new, lmid);
        crate::libsearch::note_object(new);
        crate::trust::note_peer(new.get(), lmid, crate::hooks::process::own_hooks());
        if let Mode::Serve(srv) = mode() {
            note_unstaged(srv, new.get());
            // SAFETY: ld.so passes the new object's link map, for `lmid`,
            // inside la_objopen.
            unsafe { crate::libnames::drop_staged(srv, map, lmid) };
            // SAFETY: as above.
            unsafe { restore_name(srv, &mut *map) };
        }
    });
    0
}

/// Counts (`unstaged_libs`) a library ld.so mapped from neither the stage
/// nor a system library directory: from the shared file system, each
/// process of the job reading it there. A cache recorded by a pilot that
/// loaded it serves it; a count above 0 says re-record.
fn note_unstaged(srv: &crate::server::Server, map: &LinkMap) {
    if map.l_name.is_null() {
        return;
    }
    // SAFETY: l_name is a NUL-terminated string ld.so allocated; before
    // restore_name, so a staged object still carries its stage path.
    let name = unsafe { CStr::from_ptr(map.l_name) }.to_bytes();
    // The executable (""), the vDSO, this library itself.
    if name.first() != Some(&b'/')
        || fmcache_core::path::file_name(name) == fmcache_core::carry::LIB_FILE
    {
        return;
    }
    let mut orig = PathBuf::new();
    if srv.original_of_staged(name, &mut orig) || is_system_library(name) {
        return;
    }
    crate::stats::count_unstaged();
}

/// Under the system's library directories (node-local on every system).
fn is_system_library(path: &[u8]) -> bool {
    const DIRS: [&[u8]; 8] = [
        b"/lib/",
        b"/lib64/",
        b"/lib32/",
        b"/libx32/",
        b"/usr/lib/",
        b"/usr/lib64/",
        b"/usr/lib32/",
        b"/usr/libx32/",
    ];
    DIRS.iter().any(|d| path.starts_with(d))
}

unsafe fn restore_name(srv: &crate::server::Server, map: &mut LinkMap) {
    if map.l_name.is_null() {
        return;
    }
    // SAFETY: l_name is a NUL-terminated string ld.so allocated.
    let name = unsafe { CStr::from_ptr(map.l_name) }.to_bytes();
    let mut orig = PathBuf::new();
    // The name the program asked for, if this is the object just
    // redirected from an absolute path (a symlink's own name, say).
    // SAFETY: the loader lock serialises la_* calls.
    let asked = unsafe { &*LAST_ASKED.get() };
    let chosen = if asked.staged.as_bytes() == name && !asked.orig.as_bytes().is_empty() {
        asked.orig.as_bytes()
    } else if srv.original_of_staged(name, &mut orig) {
        orig.as_bytes()
    } else {
        return;
    };
    if chosen.len() <= name.len() {
        // SAFETY: within the buffer holding `name` and its NUL.
        unsafe {
            core::ptr::copy(chosen.as_ptr(), map.l_name.cast::<u8>(), chosen.len());
            *map.l_name.add(chosen.len()) = 0;
        }
    }
}

/// The last absolute name redirected at LA_SER_ORIG and where it went.
struct Asked {
    orig: PathBuf,
    staged: PathBuf,
}
static LAST_ASKED: Static<Asked> = Static::new(Asked {
    orig: PathBuf::new(),
    staged: PathBuf::new(),
});

/// The path ld.so should try instead of `name` (`name` itself to go on).
#[no_mangle]
pub unsafe extern "C" fn la_objsearch(
    name: *const c_char,
    cookie: *mut usize,
    flag: c_uint,
) -> *mut c_char {
    let keep = name as *mut c_char;
    // ld.so initialises each object's cookie to its link map (rtld-audit(7))
    // and we leave it so: it names the object whose search this is.
    let loader = if cookie.is_null() {
        None
    } else {
        // SAFETY: ld.so's cookie slot for the searching object, not null,
        // holding its link map (live: it is searching).
        unsafe { MapRef::new(*cookie as *const LinkMap) }
    };
    if flag & LA_SER_ORIG != 0 {
        crate::loaders::note_search(loader);
    }
    // SAFETY: ld.so passes null or a NUL-terminated name, valid for
    // the call.
    let name = unsafe { CPath::new(name) };
    let Ok(out) = std::panic::catch_unwind(|| search(name, flag, loader)) else {
        return keep;
    };
    out.unwrap_or(keep)
}

/// Staged copies' paths handed to ld.so must outlive the call: one slot
/// per candidate in a ring (ld.so copies the name it opens).
static RING: Static<[[u8; fmcache_core::path::PATH_MAX]; 8]> =
    Static::new([[0; fmcache_core::path::PATH_MAX]; 8]);
static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn search(name: CPath<'_>, flag: c_uint, loader: Option<MapRef>) -> Option<*mut c_char> {
    let given = name.bytes()?;
    // The library itself (as preload or auditor) stays where it is: its
    // path is what it hands on in LD_AUDIT.
    if fmcache_core::path::file_name(given) == fmcache_core::carry::LIB_FILE {
        return None;
    }
    // A bare name (no '/') is not a path yet: answered at once when the
    // cache settles the whole search, else the search follows.
    if !given.contains(&b'/') {
        return match (mode(), flag & LA_SER_ORIG != 0) {
            (Mode::Record(rec), true) => {
                // Each directory of the search, as a listing and as
                // software (a scope root unless it is a user area): the
                // dependencies' lib directories of a DT_RPATH hold nothing
                // the process loads, yet every search walks them.
                crate::libsearch::search_dirs(loader, |d| {
                    rec.note(Kind::List, libc::AT_FDCWD, CPath::of(d.as_cstr()));
                    rec.note(Kind::Tree, libc::AT_FDCWD, CPath::of(d.as_cstr()));
                });
                None
            }
            (Mode::Serve(srv), true) => {
                let Some(r) = crate::libsearch::resolve(srv, loader, given) else {
                    // Left to ld.so, candidate by candidate.
                    count(&counters().missed);
                    return None;
                };
                remember(r.name.as_bytes(), r.staged.as_bytes());
                count(&counters().served);
                Some(hand_over(r.staged.as_bytes()))
            }
            _ => None,
        };
    }
    if flag & LA_SER_ORIG != 0 && given.first() != Some(&b'/') {
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
                // A known-missing candidate: its place under the stage,
                // which holds no such file, so ld.so's open fails with
                // ENOENT locally and ld.so goes on exactly as it would
                // (NULL would skip the open but leave ld.so's errno stale,
                // which ends the search of that path list early).
                Answer::Errno(libc::ENOENT)
                    if flag & LA_SER_ORIG == 0
                        || crate::libsearch::AFTER_STARTUP
                            .load(core::sync::atomic::Ordering::Relaxed) =>
                {
                    let mut staged = PathBuf::new();
                    if !srv.staged_path(key, &mut staged) {
                        count(&counters().missed);
                        return None;
                    }
                    count(&counters().served);
                    Some(hand_over(staged.as_bytes()))
                }
                Answer::Errno(_) => {
                    count(&counters().missed);
                    None
                }
                Answer::Hit(f) => {
                    let mut staged = PathBuf::new();
                    if !srv.staged_path(f.mirror, &mut staged) {
                        count(&counters().missed);
                        return None;
                    }
                    count(&counters().served);
                    if flag & LA_SER_ORIG != 0 {
                        remember(given, staged.as_bytes());
                    }
                    Some(hand_over(staged.as_bytes()))
                }
                // Unknown here, or under the stage without a copy: the
                // original path (never a stage path ld.so would miss).
                Answer::Miss if key.len() != k.as_bytes().len() => {
                    count(&counters().missed);
                    Some(hand_over(key))
                }
                Answer::Miss => {
                    count(&counters().missed);
                    None
                }
            }
        }
        Mode::Off => None,
    }
}

const LA_ACT_ADD: c_uint = 1;

/// la_activity: objects are being added; after start-up, the first of
/// them is a dlopen's own, which has no loader (loaders.rs).
#[no_mangle]
pub extern "C" fn la_activity(_cookie: *mut usize, flag: c_uint) {
    if flag == LA_ACT_ADD {
        crate::loaders::note_dlopen();
    }
}

/// la_objclose: an object is unloaded.
#[no_mangle]
pub extern "C" fn la_objclose(cookie: *mut usize) -> c_uint {
    if !cookie.is_null() {
        // SAFETY: ld.so's cookie slot, which holds the object's link map
        // (we never change it).
        crate::loaders::note_close(unsafe { *cookie });
    }
    0
}

/// la_preinit: the program's start-up objects are loaded; from here on a
/// failed load is reported through dlerror().
#[no_mangle]
pub extern "C" fn la_preinit(_cookie: *mut usize) {
    crate::libsearch::AFTER_STARTUP.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// The auditor's line in FMCACHE_STATS: `served` counts searches and
/// candidates answered from the cache, `missed` those left to ld.so.
fn count(c: &core::sync::atomic::AtomicU64) {
    c.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Notes the name an object was asked for under, for la_objopen.
fn remember(asked: &[u8], staged: &[u8]) {
    // SAFETY: the loader lock serialises la_* calls.
    let a = unsafe { &mut *LAST_ASKED.get() };
    if !(a.orig.set(asked) && a.staged.set(staged)) {
        a.orig.clear();
    }
}

/// A path for ld.so to open instead, in a ring slot that outlives the call
/// (ld.so copies the name it opens).
fn hand_over(path: &[u8]) -> *mut c_char {
    let slot = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % 8;
    // SAFETY: the loader lock serialises la_objsearch calls; callers pass
    // paths shorter than PATH_MAX (PathBuf contents).
    unsafe {
        let dst = &mut (*RING.get())[slot];
        let n = path.len().min(dst.len() - 1);
        dst[..n].copy_from_slice(&path[..n]);
        dst[n] = 0;
        dst.as_mut_ptr().cast()
    }
}
