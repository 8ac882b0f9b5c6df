//! The per-process attach of a staged index (what `Server::attach` does
//! once the stage exists): open, fstat, mmap, header check, one lookup.

use std::ffi::CString;
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fmcache_format::{CacheView, Verify};

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// open + fstat + mmap (read-only, private): the descriptor, the mapping
/// and its length.
///
/// # Safety
/// The caller unmaps and closes (or keeps both for the process's life).
unsafe fn map_file(path: &CString) -> (i32, *mut libc::c_void, usize) {
    // SAFETY: plain system calls on a descriptor owned here.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "open failed");
        let mut st: libc::stat = core::mem::zeroed();
        assert_eq!(libc::fstat(fd, &mut st), 0);
        let len = st.st_size as usize;
        let p = libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        (fd, p, len)
    }
}

/// One attach, then munmap and close (a new mapping each time, so its page
/// faults are paid each time, as in a new process). `lookup` false: the
/// system calls alone.
#[inline(never)]
pub fn attach_once(path: &CString, probe: &[u8], lookup: bool) -> bool {
    // SAFETY: the mapping and descriptor are ours; the slice does not
    // outlive the mapping.
    unsafe {
        let (fd, p, len) = map_file(path);
        let found = if lookup {
            let bytes = core::slice::from_raw_parts(p as *const u8, len);
            match CacheView::open(bytes, Verify::Header) {
                Ok(v) => v.lookup(black_box(probe)).is_some(),
                Err(e) => panic!("open: {e}"),
            }
        } else {
            true
        };
        libc::munmap(p, len);
        libc::close(fd);
        found
    }
}

/// A mapping kept for the life of the process (lookup benchmarks).
pub fn map_forever(path: &Path) -> &'static [u8] {
    // SAFETY: never unmapped, so 'static holds; the descriptor is not needed.
    unsafe {
        let (fd, p, len) = map_file(&cstr(path));
        libc::close(fd);
        core::slice::from_raw_parts(p as *const u8, len)
    }
}
