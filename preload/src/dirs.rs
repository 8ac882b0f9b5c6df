//! Directory streams served from a recorded listing. A served `DIR *`
//! points into a fixed pool (no allocation); every dir hook first asks
//! whether a pointer is ours and hands anything else to libc.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering::*};

use fmcache_format::{CacheView, Listing};

const SLOTS: usize = 128;

pub struct FakeDir {
    used: AtomicBool,
    entry: AtomicU32,
    pos: AtomicUsize,
    /// A real descriptor, opened only if the program asks for dirfd().
    fd: AtomicI32,
    ent: UnsafeCell<libc::dirent64>,
}

struct Pool([FakeDir; SLOTS]);

// SAFETY: a slot's `ent` is written only by the thread using that stream,
// as with libc's own DIR (concurrent readdir on one stream is undefined
// behaviour in C too).
unsafe impl Sync for Pool {}

#[allow(clippy::declare_interior_mutable_const)] // only used to build POOL
const EMPTY: FakeDir = FakeDir {
    used: AtomicBool::new(false),
    entry: AtomicU32::new(0),
    pos: AtomicUsize::new(0),
    fd: AtomicI32::new(-1),
    ent: UnsafeCell::new(libc::dirent64 {
        d_ino: 0,
        d_off: 0,
        d_reclen: 0,
        d_type: 0,
        d_name: [0; 256],
    }),
};

static POOL: Pool = Pool([EMPTY; SLOTS]);

/// A new stream over the listing of entry `entry`; `None` if the pool is
/// exhausted (the caller passes through).
pub fn open(entry: u32) -> Option<*mut libc::DIR> {
    for d in POOL.0.iter() {
        if d.used
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
        {
            d.entry.store(entry, Relaxed);
            d.pos.store(0, Relaxed);
            d.fd.store(-1, Relaxed);
            return Some(d as *const FakeDir as *mut libc::DIR);
        }
    }
    None
}

/// The pool slot behind `dirp`, if it is one of ours.
pub fn ours(dirp: *mut libc::DIR) -> Option<&'static FakeDir> {
    let base = POOL.0.as_ptr() as usize;
    let at = dirp as usize;
    let size = core::mem::size_of::<FakeDir>();
    if at < base || at >= base + SLOTS * size || !(at - base).is_multiple_of(size) {
        return None;
    }
    let d = &POOL.0[(at - base) / size];
    d.used.load(Acquire).then_some(d)
}

/// Size of a dirent64 record holding `name`, as the kernel computes it.
pub fn reclen(name: &[u8]) -> u16 {
    let base = core::mem::offset_of!(libc::dirent64, d_name);
    ((base + name.len() + 1 + 7) & !7) as u16
}

impl FakeDir {
    fn listing(&self, view: &CacheView<'static>) -> Option<Listing<'static>> {
        view.entry(self.entry.load(Relaxed))?.listing()
    }

    /// The next entry, in kernel order; `None` at the end.
    pub fn next(&self, view: &CacheView<'static>) -> Option<*mut libc::dirent64> {
        let listing = self.listing(view)?;
        let i = self.pos.fetch_add(1, Relaxed);
        let (name, d_type, ino) = listing.get(i).or_else(|| {
            self.pos.store(listing.len(), Relaxed);
            None
        })?;
        let ent = self.ent.get();
        // SAFETY: this stream's own record; names are at most NAME_MAX.
        unsafe {
            let n = name.len().min(255);
            (*ent).d_ino = ino;
            (*ent).d_off = (i + 1) as i64;
            (*ent).d_reclen = reclen(name);
            (*ent).d_type = d_type;
            for (dst, src) in (*ent).d_name.iter_mut().zip(name[..n].iter()) {
                *dst = *src as libc::c_char;
            }
            (*ent).d_name[n] = 0;
        }
        Some(ent)
    }

    pub fn tell(&self) -> i64 {
        self.pos.load(Relaxed) as i64
    }

    pub fn seek(&self, pos: i64) {
        self.pos.store(pos.max(0) as usize, Relaxed);
    }

    pub fn entry(&self) -> u32 {
        self.entry.load(Relaxed)
    }

    /// A real descriptor on the original directory, for dirfd().
    pub fn fd(&self, path: &core::ffi::CStr) -> i32 {
        let cur = self.fd.load(Acquire);
        if cur >= 0 {
            return cur;
        }
        use rustix::fs::OFlags;
        let Ok(fd) = rustix::fs::openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            return -1;
        };
        let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
        match self.fd.compare_exchange(-1, fd, AcqRel, Acquire) {
            Ok(_) => fd,
            Err(other) => {
                // SAFETY: our own descriptor, never published.
                unsafe { libc::close(fd) };
                other
            }
        }
    }

    pub fn close(&self) {
        let fd = self.fd.swap(-1, AcqRel);
        if fd >= 0 {
            // SAFETY: the descriptor this stream opened.
            unsafe { libc::close(fd) };
        }
        self.used.store(false, Release);
    }
}
