//! The names ld.so keeps for a served library. An object mapped from the
//! stage enters ld.so's private name list (`l_libname`) under the staged
//! path ld.so opened, beside the name the program asked for: one name more
//! than natively on every served object, and every "already loaded?" check
//! of every later DT_NEEDED name and dlopen compares it (about 500
//! libraries: ld.so's `strcmp` +60 %, 1.25x native start-up). The staged
//! name is also what `LD_TRACE_LOADED_OBJECTS` prints. So `la_objopen`
//! unlinks it when another name remains, else rewrites it in place with
//! the original path (never longer), as `l_name`.
//!
//! `struct link_map` past its public part and `struct libname_list` are
//! glibc-internal; the layout below is glibc 2.26 to 2.40's on 64-bit
//! Linux, and is checked on each map before any write: `l_real` must point
//! at the map itself and `l_ns` equal the namespace ld.so passed.

use core::ffi::{c_char, c_int, c_long, CStr};

use fmcache_core::path::PathBuf;

use crate::carry::LinkMap;
use crate::server::Server;

/// The start of glibc's `struct link_map` (include/link.h).
#[repr(C)]
struct MapHead {
    l_addr: usize,
    l_name: *mut c_char,
    l_ld: *mut core::ffi::c_void,
    l_next: *mut LinkMap,
    l_prev: *mut LinkMap,
    l_real: *mut LinkMap,
    l_ns: c_long,
    l_libname: *mut LibName,
}

/// glibc's `struct libname_list` (elf/dl-object.c, include/link.h).
#[repr(C)]
struct LibName {
    name: *const c_char,
    next: *mut LibName,
    dont_free: c_int,
}

/// Longest name list walked; ld.so's lists hold a few names.
const MAX_NAMES: usize = 64;

/// Removes (or rewrites) the staged name of `map` from ld.so's name list.
///
/// # Safety
/// `map` is the link map ld.so passed to `la_objopen` for namespace
/// `lmid`, and the caller runs inside that callback (ld.so holds its
/// loader lock, so no other thread walks the list).
pub unsafe fn drop_staged(srv: &Server, map: *mut LinkMap, lmid: c_long) {
    let head = map.cast::<MapHead>();
    // SAFETY: ld.so's link maps start with these fields (checked below
    // through l_real and l_ns before anything is written).
    let h = unsafe { &mut *head };
    if h.l_real != map || h.l_ns != lmid || h.l_libname.is_null() {
        return;
    }
    let mut orig = PathBuf::new();
    let mut link: *mut *mut LibName = &mut h.l_libname;
    let mut count = 0;
    // SAFETY: every node is ld.so's, alive while the map is; the walk is
    // bounded and each pointer checked for null before use.
    unsafe {
        let mut n = h.l_libname;
        let mut total = 0;
        while !n.is_null() && total < MAX_NAMES {
            total += 1;
            n = (*n).next;
        }
        if !n.is_null() {
            return;
        }
        while !(*link).is_null() && count < MAX_NAMES {
            count += 1;
            let node = *link;
            if (*node).name.is_null() {
                link = &mut (*node).next;
                continue;
            }
            let name = CStr::from_ptr((*node).name).to_bytes();
            if !srv.original_of_staged(name, &mut orig) {
                link = &mut (*node).next;
                continue;
            }
            if total > 1 {
                // Unlinked, never freed: the first node lives inside the
                // link map's own allocation (dont_free), and a later one
                // is at most a few bytes left to the process's end.
                *link = (*node).next;
                total -= 1;
                continue;
            }
            let o = orig.as_bytes();
            if o.len() <= name.len() {
                let buf = (*node).name.cast_mut().cast::<u8>();
                core::ptr::copy(o.as_ptr(), buf, o.len());
                *buf.add(o.len()) = 0;
            }
            link = &mut (*node).next;
        }
    }
}
