//! Directory streams served from a recorded listing. A served `DIR *`
//! points into a fixed pool (no allocation; a full pool makes opendir pass
//! through); every dir hook first asks whether a pointer is ours, by
//! address alone (whatever the mode is now), and hands anything else to
//! libc. A stream rewound after the process changed its directory goes
//! live: it reads the real directory with getdents64 from then on.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicUsize, Ordering::*};

use fmcache_format::{CacheView, Listing};

const SLOTS: usize = 128;
/// getdents64 buffer of a live stream (any record fits: at most 280 bytes).
const LIVE_BUF: usize = 8192;

#[repr(C, align(8))]
struct Buf([u8; LIVE_BUF]);

pub struct FakeDir {
    used: AtomicBool,
    entry: AtomicU32,
    pos: AtomicUsize,
    /// A real descriptor, opened if the program asks for dirfd() or the
    /// stream goes live.
    fd: AtomicI32,
    ent: UnsafeCell<libc::dirent64>,
    /// Reading the real directory through `fd` (after a rewind that
    /// followed a change).
    live: AtomicBool,
    buf: UnsafeCell<Buf>,
    buf_len: AtomicUsize,
    buf_pos: AtomicUsize,
    /// telldir of a live stream: d_off of the last record returned.
    live_off: AtomicI64,
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
    live: AtomicBool::new(false),
    buf: UnsafeCell::new(Buf([0; LIVE_BUF])),
    buf_len: AtomicUsize::new(0),
    buf_pos: AtomicUsize::new(0),
    live_off: AtomicI64::new(0),
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
            d.live.store(false, Relaxed);
            d.buf_len.store(0, Relaxed);
            d.buf_pos.store(0, Relaxed);
            d.live_off.store(0, Relaxed);
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

/// scandir's filter and comparator, as the caller passed them.
pub type Filter = Option<unsafe extern "C" fn(*const libc::dirent64) -> libc::c_int>;
pub type Compar = Option<
    unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> libc::c_int,
>;

/// scandir's result for a cached listing: the entries `filter` keeps, as
/// malloc'd dirent64 records in a malloc'd array the caller frees with
/// free(3), sorted with `compar` as glibc does. `Err(ENOMEM)` when out
/// of memory (nothing left allocated).
pub fn scandir_array(
    listing: Listing<'_>,
    filter: Filter,
    compar: Compar,
) -> Result<(*mut *mut libc::dirent64, usize), i32> {
    let mut out: *mut *mut libc::dirent64 = core::ptr::null_mut();
    let mut n = 0usize;
    for (i, (name, d_type, ino)) in listing.iter().enumerate() {
        let len = reclen(name) as usize;
        // SAFETY: malloc'd records and array, as scandir returns; each
        // record is at least a whole dirent64 and `name` is cut to fit;
        // `filter` is the caller's, called as glibc's scandir calls it.
        unsafe {
            let ent = libc::calloc(1, len.max(core::mem::size_of::<libc::dirent64>()))
                as *mut libc::dirent64;
            if ent.is_null() {
                free_list(out, n);
                return Err(libc::ENOMEM);
            }
            (*ent).d_ino = ino;
            (*ent).d_off = (i + 1) as i64;
            (*ent).d_reclen = len as u16;
            (*ent).d_type = d_type;
            core::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (*ent).d_name.as_mut_ptr().cast(),
                name.len().min(255),
            );
            if let Some(f) = filter {
                if f(ent) == 0 {
                    libc::free(ent.cast());
                    continue;
                }
            }
            let grown = libc::realloc(
                out.cast(),
                (n + 1) * core::mem::size_of::<*mut libc::dirent64>(),
            ) as *mut *mut libc::dirent64;
            if grown.is_null() {
                libc::free(ent.cast());
                free_list(out, n);
                return Err(libc::ENOMEM);
            }
            out = grown;
            *out.add(n) = ent;
            n += 1;
        }
    }
    if let (Some(c), true) = (compar, n > 1) {
        // SAFETY: qsort over our array with the caller's comparator, which
        // glibc's scandir also passes to qsort (same argument types, as
        // untyped pointers).
        unsafe {
            libc::qsort(
                out.cast(),
                n,
                core::mem::size_of::<*mut libc::dirent64>(),
                Some(core::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut *const libc::dirent64,
                        *mut *const libc::dirent64,
                    ) -> libc::c_int,
                    unsafe extern "C" fn(*const libc::c_void, *const libc::c_void) -> libc::c_int,
                >(c)),
            );
        }
    }
    Ok((out, n))
}

/// # Safety
/// `list` is a malloc'd array of `n` malloc'd entries.
unsafe fn free_list(list: *mut *mut libc::dirent64, n: usize) {
    for i in 0..n {
        // SAFETY: i < n, each entry malloc'd and freed once.
        unsafe { libc::free((*list.add(i)).cast()) };
    }
    // SAFETY: the array itself, malloc'd, freed once.
    unsafe { libc::free(list.cast()) };
}

impl FakeDir {
    fn listing(&self, view: &CacheView<'static>) -> Option<Listing<'static>> {
        view.entry(self.entry.load(Relaxed))?.listing()
    }

    /// `next`, as the record's bytes (what readdir_r copies into the
    /// caller's entry: a live record may end near its buffer's end, so
    /// the record, not a whole struct), borrowed until the stream's next
    /// call.
    pub fn next_record(&self, view: &CacheView<'static>) -> Option<&[u8]> {
        let ent = self.next(view)?;
        // SAFETY: `next` returns this stream's record, or a live one inside
        // its buffer, each `d_reclen` bytes long and left alone until the
        // stream's next call.
        unsafe {
            let len = (*ent).d_reclen as usize;
            Some(core::slice::from_raw_parts(ent.cast::<u8>(), len))
        }
    }

    /// The next entry, in kernel order; `None` at the end (errno set on
    /// a failed read of a live stream, as readdir does).
    pub fn next(&self, view: &CacheView<'static>) -> Option<*mut libc::dirent64> {
        if self.live.load(Relaxed) {
            return self.next_live();
        }
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
        if self.live.load(Relaxed) {
            return self.live_off.load(Relaxed);
        }
        self.pos.load(Relaxed) as i64
    }

    pub fn seek(&self, pos: i64) {
        if self.live.load(Relaxed) {
            self.seek_live(pos);
            return;
        }
        self.pos.store(pos.max(0) as usize, Relaxed);
    }

    /// rewinddir. `changed`: the process changed this directory, so the
    /// stream reads the real one from now on (as rewinddir does natively);
    /// if it cannot be opened, the recorded listing is read again.
    pub fn rewind(&self, path: &core::ffi::CStr, changed: bool) {
        if !self.live.load(Relaxed) && changed && self.fd(path) >= 0 {
            self.live.store(true, Relaxed);
        }
        self.seek(0);
    }

    fn seek_live(&self, pos: i64) {
        let fd = self.fd.load(Acquire);
        // SAFETY: the descriptor this stream owns.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = rustix::fs::seek(b, rustix::fs::SeekFrom::Start(pos.max(0) as u64));
        self.buf_len.store(0, Relaxed);
        self.buf_pos.store(0, Relaxed);
        self.live_off.store(pos, Relaxed);
    }

    fn next_live(&self) -> Option<*mut libc::dirent64> {
        let buf = self.buf.get().cast::<u8>();
        let off_name = core::mem::offset_of!(libc::dirent64, d_name);
        if self.buf_pos.load(Relaxed) >= self.buf_len.load(Relaxed) {
            let fd = self.fd.load(Acquire);
            // SAFETY: getdents64(2) into this stream's own buffer.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf, LIVE_BUF) };
            if n <= 0 {
                return None;
            }
            self.buf_len.store(n as usize, Relaxed);
            self.buf_pos.store(0, Relaxed);
        }
        let at = self.buf_pos.load(Relaxed);
        let len = self.buf_len.load(Relaxed);
        if at + off_name > len {
            return None;
        }
        // SAFETY: the kernel wrote whole, 8-aligned records within `len`.
        let ent = unsafe { buf.add(at) }.cast::<libc::dirent64>();
        // SAFETY: `ent` is a whole record within `len` (above).
        let (reclen, off) = unsafe { ((*ent).d_reclen as usize, (*ent).d_off) };
        if reclen == 0 || at + reclen > len {
            return None;
        }
        self.buf_pos.store(at + reclen, Relaxed);
        self.live_off.store(off, Relaxed);
        Some(ent)
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
        self.live.store(false, Relaxed);
        let fd = self.fd.swap(-1, AcqRel);
        if fd >= 0 {
            // SAFETY: the descriptor this stream opened.
            unsafe { libc::close(fd) };
        }
        self.used.store(false, Release);
    }
}
