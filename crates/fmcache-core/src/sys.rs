//! File-system primitives on raw system calls (rustix, linux_raw backend).
//!
//! Nothing here goes through libc's file functions, so the preload library
//! can use it without re-entering its own hooks. Functions taking `&CStr`
//! do not allocate; the others may (they run at record, merge and stage
//! time, never on the serving path).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use fmcache_format::writer::DirentRec;
use fmcache_format::StatRec;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, CWD};
use rustix::io::Errno;

pub type SysResult<T> = Result<T, i32>;

/// The message of errno `e`, for messages (allocates: never on the
/// serving path).
pub fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

pub fn errno(e: Errno) -> i32 {
    e.raw_os_error()
}

/// `path` as a C string (allocates; not for hooks).
pub fn cstr(path: &[u8]) -> SysResult<CString> {
    CString::new(path).map_err(|_| libc::EINVAL)
}

/// stat(2) or lstat(2) fields plus the statx(2) extras, as one record.
pub fn stat_rec(path: &CStr, follow: bool) -> SysResult<StatRec> {
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let st = rustix::fs::statat(CWD, path, flags).map_err(errno)?;
    let mut rec = from_stat(&st);
    let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID;
    if let Ok(x) = rustix::fs::statx(CWD, path, flags, mask) {
        // Only extras from the same inode: the path may change in between.
        if x.stx_ino == rec.ino {
            add_statx(&mut rec, &x);
        }
    }
    Ok(rec)
}

/// fstat(2) of an open descriptor, with statx extras.
pub fn fstat_rec<Fd: AsFd>(fd: Fd) -> SysResult<StatRec> {
    let st = rustix::fs::fstat(&fd).map_err(errno)?;
    let mut rec = from_stat(&st);
    let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID;
    if let Ok(x) = rustix::fs::statx(&fd, c"", AtFlags::EMPTY_PATH, mask) {
        add_statx(&mut rec, &x);
    }
    Ok(rec)
}

pub fn from_stat(st: &rustix::fs::Stat) -> StatRec {
    StatRec {
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size,
        blksize: st.st_blksize,
        blocks: st.st_blocks,
        atime: st.st_atime,
        atime_nsec: st.st_atime_nsec as i64,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as i64,
        ctime: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec as i64,
        ..StatRec::default()
    }
}

fn add_statx(rec: &mut StatRec, x: &rustix::fs::Statx) {
    rec.stx_mask = x.stx_mask;
    rec.btime = x.stx_btime.tv_sec;
    rec.btime_nsec = x.stx_btime.tv_nsec;
    rec.stx_attributes = x.stx_attributes.bits();
    rec.stx_attributes_mask = x.stx_attributes_mask.bits();
    rec.mnt_id = x.stx_mnt_id;
}

pub fn readlink(path: &CStr) -> SysResult<Vec<u8>> {
    rustix::fs::readlinkat(CWD, path, Vec::new())
        .map(|c| c.into_bytes())
        .map_err(errno)
}

/// access(2) errno (0 = allowed) for one mode.
pub fn access(path: &CStr, mode: rustix::fs::Access) -> i32 {
    match rustix::fs::accessat(CWD, path, mode, AtFlags::empty()) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

pub fn open(path: &CStr, flags: OFlags, mode: u32) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        CWD,
        path,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(errno)
}

/// A directory's full listing in kernel order, "." and ".." included.
pub fn list_dir(path: &CStr) -> SysResult<Vec<DirentRec>> {
    let fd = open(path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    let mut dir = rustix::fs::Dir::new(fd).map_err(errno)?;
    let mut out = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent.map_err(errno)?;
        out.push(DirentRec {
            name: ent.file_name().to_bytes().to_vec(),
            d_type: d_type(ent.file_type()),
            ino: ent.ino(),
        });
    }
    Ok(out)
}

/// The dirent d_type (DT_*) of a file type: DT_x == S_IFx >> 12.
fn d_type(ft: rustix::fs::FileType) -> u8 {
    match ft {
        rustix::fs::FileType::Unknown => 0,
        t => (t.as_raw_mode() >> 12) as u8,
    }
}

/// Reads a whole file; returns its bytes and the fstat taken on the same
/// descriptor, so bytes and metadata belong to one inode.
pub fn read_file(path: &CStr, limit: u64) -> SysResult<(Vec<u8>, StatRec)> {
    let fd = open(path, OFlags::RDONLY | OFlags::NOCTTY, 0)?;
    let st = fstat_rec(&fd)?;
    if st.size as u64 > limit {
        return Err(libc::EFBIG);
    }
    let mut buf = vec![0u8; st.size as usize];
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::read(&fd, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    buf.truncate(done);
    Ok((buf, st))
}

pub fn write_all<Fd: AsFd>(fd: Fd, mut bytes: &[u8]) -> SysResult<()> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

/// A `std::io::Write` over a raw descriptor (no libc file functions).
pub struct FdWriter<'a>(pub std::os::fd::BorrowedFd<'a>);

impl std::io::Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match rustix::io::write(self.0, buf) {
                Err(Errno::INTR) => continue,
                r => return r.map_err(|e| std::io::Error::from_raw_os_error(errno(e))),
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The canonical path of an open descriptor (via /proc/self/fd).
pub fn fd_path<Fd: AsFd>(fd: Fd) -> SysResult<Vec<u8>> {
    let link = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd())
    );
    readlink(&cstr(link.as_bytes())?)
}

/// A read-only private mapping of a whole file.
pub struct Mapping {
    ptr: *mut core::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and never remapped.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn map<Fd: AsFd>(fd: Fd, len: usize) -> SysResult<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: core::ptr::null_mut(),
                len: 0,
            });
        }
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh private read-only mapping; nothing aliases it.
        let ptr = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                fd,
                0,
            )
        }
        .map_err(errno)?;
        Ok(Mapping { ptr, len })
    }
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { core::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
    /// Keeps the mapping for the life of the process.
    pub fn leak(self) -> &'static [u8] {
        let len = self.len;
        let ptr = self.ptr;
        core::mem::forget(self);
        if len == 0 {
            return &[];
        }
        // SAFETY: never unmapped once leaked.
        unsafe { core::slice::from_raw_parts(ptr.cast::<u8>(), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping exactly what `map` mapped.
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }
}

/// Creates `path` and missing parents with `mode`.
pub fn mkdir_p(path: &[u8], mode: u32) -> SysResult<()> {
    let c = cstr(path)?;
    match rustix::fs::mkdirat(CWD, &*c, Mode::from_raw_mode(mode)) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Ok(()),
        Err(Errno::NOENT) => {
            let parent = crate::path::parent(path).ok_or(libc::ENOENT)?;
            mkdir_p(parent, mode)?;
            match rustix::fs::mkdirat(CWD, &*c, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                Err(e) => Err(errno(e)),
            }
        }
        Err(e) => Err(errno(e)),
    }
}

/// Takes an exclusive flock, blocking.
pub fn lock_file(path: &[u8]) -> SysResult<OwnedFd> {
    let fd = open(&cstr(path)?, OFlags::RDWR | OFlags::CREATE, 0o600)?;
    loop {
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Removes a tree (used for stage clean-up).
pub fn remove_tree(path: &[u8]) -> SysResult<()> {
    let c = cstr(path)?;
    match rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno(e)),
        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
            return rustix::fs::unlinkat(CWD, &*c, AtFlags::empty()).map_err(errno)
        }
        Ok(_) => {}
    }
    for d in list_dir(&c)? {
        if d.name == b"." || d.name == b".." {
            continue;
        }
        let mut child = path.to_vec();
        child.push(b'/');
        child.extend_from_slice(&d.name);
        remove_tree(&child)?;
    }
    rustix::fs::unlinkat(CWD, &*c, AtFlags::REMOVEDIR).map_err(errno)
}

/// Where descriptors the library keeps for a process's lifetime go: far
/// from the numbers programs use (they take the lowest free one), so the
/// program's descriptors are numbered as without fmcache.
pub const FAR_FD_MIN: i32 = 900;

/// Moves `fd` to `FAR_FD_MIN` or above, else (RLIMIT_NOFILE lower than
/// that) to the highest free number under the limit, which a program that
/// takes the lowest free one reaches last. Close-on-exec. A lock on the
/// open file description moves with it.
pub fn out_of_the_way(fd: OwnedFd) -> OwnedFd {
    if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(&fd, FAR_FD_MIN) {
        return high;
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(FAR_FD_MIN as u64) as i32;
    let here = std::os::fd::AsRawFd::as_raw_fd(&fd);
    for min in (here + 1..limit).rev().take(64) {
        if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(&fd, min) {
            return high;
        }
    }
    fd
}
