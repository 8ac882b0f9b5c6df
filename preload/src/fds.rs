//! Served descriptors of a file this process is about to change.
//!
//! A served descriptor is open on the node-local staged copy. Natively a
//! descriptor follows its inode: a rewrite in place (O_TRUNC + write,
//! truncate) shows it the new bytes, a rename over the path or an unlink
//! leaves it the old inode and bytes, chmod/utime/link show in its fstat.
//! So before this process first changes a cached file (while its entry is
//! still trusted and its inode still at the path), every descriptor it
//! holds on the staged copy is swapped for one on the original: the
//! original is opened read-only and dup3()'d over the same number,
//! keeping close-on-exec, O_NONBLOCK, the offset and which numbers share
//! one open file description (kcmp). Shared mappings (MAP_SHARED) of the
//! staged copy are replaced the same way, at the same address. From then
//! on the kernel answers everything about those descriptors.
//!
//! Not followed: private mappings (MAP_PRIVATE: ld.so's, and any with
//! copied-on-write pages) keep the staged bytes, a copy of the process
//! made before the change (fork, exec) keeps its descriptors on the staged
//! copy, and a change made by another process is not seen.
//!
//! Runs only on a change of a cached file with contents: a few system
//! calls (/proc/self/fd; /proc/self/maps if the process was handed a
//! served descriptor on that file), no allocation, no lock. Not followed
//! either: a shared mapping made from an inherited served descriptor that
//! was closed before the change.

use core::mem::{ManuallyDrop, MaybeUninit};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use fmcache_core::answer::Trust;
use fmcache_core::path::{self, PathBuf};
use rustix::fs::{Mode, OFlags, CWD};

use crate::server::Server;

/// Descriptors handled per scan of /proc/self/fd; more take another scan.
const BATCH: usize = 128;

/// The files this process was handed served descriptors on, as bits of
/// their mirror path's hash (a collision only costs time). Only for those
/// (and files with a descriptor open on the staged copy now) can a shared
/// mapping of the staged copy exist, so only then is /proc/self/maps
/// (about 40 us per hundred mappings) read.
const HANDED_BITS: usize = 1 << 16;
static HANDED: [AtomicU64; HANDED_BITS / 64] = [const { AtomicU64::new(0) }; HANDED_BITS / 64];

fn handed_bit(mirror: &[u8]) -> (usize, u64) {
    let h = fmcache_format::path_hash(mirror) as usize % HANDED_BITS;
    (h / 64, 1 << (h % 64))
}

/// A served descriptor on the staged copy of `mirror` was handed to the
/// program.
pub fn handed_out(mirror: &[u8]) {
    let (w, b) = handed_bit(mirror);
    if HANDED[w].load(Relaxed) & b == 0 {
        HANDED[w].fetch_or(b, Relaxed);
    }
}

fn was_handed_out(mirror: &[u8]) -> bool {
    let (w, b) = handed_bit(mirror);
    HANDED[w].load(Relaxed) & b != 0
}

/// Call before the real call that changes the file at `key` (a cache
/// key: the normalised path the program named).
pub fn before_change(srv: &Server, key: &[u8]) {
    let saved = crate::errno::get();
    let _ = swap(srv, key);
    crate::errno::set(saved);
}

/// What a change at a path takes along: one file (its canonical path, the
/// mirror of its staged copy), or every file under a cached directory
/// (renamed or removed: later changes reach the files by other paths).
#[derive(Clone, Copy)]
enum Scope<'a> {
    File(&'a [u8]),
    Tree(&'a [u8]),
}

impl Scope<'_> {
    fn holds(&self, mirror: &[u8]) -> bool {
        match *self {
            Scope::File(m) => mirror == m,
            Scope::Tree(d) => fmcache_core::path::under(mirror, d),
        }
    }
}

fn swap(srv: &Server, key: &[u8]) -> Option<()> {
    let e = srv.view.lookup(key);
    let is_dir = |e: fmcache_format::EntryRef| matches!(e.lstat(), Some(Ok(st)) if st.mode & libc::S_IFMT == libc::S_IFDIR);
    let scope = match e {
        // Changed before (swapped then, or the recorded inode may be gone
        // from the path, its number free for reuse): nothing to do. Each
        // file is checked again in `original` (a directory's own entry
        // stops being trusted as soon as a name in it changes).
        Some(e) if !srv.trusted(e.index(), key) && !is_dir(e) => return None,
        Some(e) if e.mirror_path().is_some() => Scope::File(e.mirror_path()?),
        Some(e) if is_dir(e) => Scope::Tree(path::trim_trailing_slash(key)),
        // Not an entry itself, but the canonical path of one handed out
        // through another spelling (a symlink).
        _ if was_handed_out(key) => Scope::File(key),
        _ => return None,
    };
    let mut maps = match scope {
        Scope::File(m) => was_handed_out(m),
        Scope::Tree(_) => HANDED.iter().any(|w| w.load(Relaxed) != 0),
    };
    for _ in 0..64 {
        let mut fds = [(0i32, 0u32); BATCH];
        let (n, more) = staged_fds(srv, scope, &mut fds);
        maps |= n > 0;
        swap_fds(srv, &mut fds[..n]);
        if !more {
            break;
        }
    }
    if maps {
        remap_shared(srv, scope);
    }
    Some(())
}

/// The original of staged entry `entry` if it may stand in for the copy:
/// the program has not changed it (trusted) and the path still holds the
/// recorded inode. Returns its path and inode number.
fn original(srv: &Server, entry: u32) -> Option<(PathBuf, u64)> {
    let e = srv.view.entry(entry)?;
    let mirror = e.mirror_path()?;
    let Some(Ok(rec)) = e.follow() else {
        return None;
    };
    if !srv.trusted(e.index(), e.path()) {
        return None;
    }
    if let Some(m) = srv.view.lookup(mirror) {
        if !srv.trusted(m.index(), mirror) {
            return None;
        }
    }
    let mut orig = PathBuf::new();
    if !orig.set(mirror) {
        return None;
    }
    let live = rustix::fs::statat(CWD, orig.as_cstr(), rustix::fs::AtFlags::empty()).ok()?;
    // Not the recorded file any more: descriptors on the staged copy
    // stand for a file that is no longer there, as natively.
    (live.st_ino == rec.ino).then_some((orig, rec.ino))
}

/// Opens the original read-only (with `extra` flags) and checks it is
/// still the recorded inode.
fn open_original(orig: &PathBuf, ino: u64, extra: OFlags) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC | extra;
    let fd = rustix::fs::openat(CWD, orig.as_cstr(), flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (st.st_ino == ino).then_some(fd)
}

/// The staged entry a descriptor or mapping of (dev, ino) is on, if its
/// file lies in `scope`.
fn in_scope(srv: &Server, scope: Scope, dev: u64, ino: u64) -> Option<u32> {
    let e = srv.staged(dev, ino)?;
    scope.holds(e.mirror_path()?).then(|| e.index())
}

/// Fills `out` with (descriptor, staged entry) for the descriptors open on
/// staged copies of files in `scope`; returns how many, and whether more
/// did not fit.
fn staged_fds(srv: &Server, scope: Scope, out: &mut [(i32, u32); BATCH]) -> (usize, bool) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::openat(CWD, c"/proc/self/fd", flags, Mode::empty()) else {
        return (0, false);
    };
    let own = dir.as_raw_fd();
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut iter = rustix::fs::RawDir::new(&dir, &mut buf);
    let mut n = 0;
    while let Some(Ok(ent)) = iter.next() {
        let Some(fd) = number(ent.file_name().to_bytes()) else {
            continue;
        };
        if fd == own {
            continue;
        }
        // SAFETY: only borrowed for one fstat; a number closed meanwhile
        // just fails.
        let Ok(st) = rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) }) else {
            continue;
        };
        let Some(entry) = in_scope(srv, scope, st.st_dev, st.st_ino) else {
            continue;
        };
        if n == BATCH {
            return (n, true);
        }
        out[n] = (fd, entry);
        n += 1;
    }
    (n, false)
}

fn number(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(name.iter().fold(0i32, |a, c| a * 10 + (c - b'0') as i32))
}

/// Whether two of our descriptors share one open file description.
fn same_description(a: i32, b: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = rustix::process::getpid().as_raw_nonzero().get() as libc::c_long;
    // SAFETY: kcmp(2) only compares; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    r == 0
}

/// Replaces each descriptor in `fds` (on staged copies) by one on its
/// original, one new open file description per shared one.
fn swap_fds(srv: &Server, fds: &mut [(i32, u32)]) {
    let mut done = [false; BATCH];
    for i in 0..fds.len() {
        if done[i] {
            continue;
        }
        let (fd, entry) = fds[i];
        // The numbers sharing this one's description, found before any
        // of them is replaced.
        let mut group = [false; BATCH];
        for j in i..fds.len() {
            group[j] = !done[j] && (j == i || same_description(fds[j].0, fd));
            done[j] |= group[j];
        }
        // SAFETY: a descriptor open on our staged copy (checked by the
        // scan), borrowed while it is replaced.
        let old = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(st) = rustix::fs::fstat(old) else {
            continue;
        };
        let target = (st.st_dev, st.st_ino);
        let Some((orig, ino)) = original(srv, entry) else {
            continue;
        };
        let Ok(fl) = rustix::fs::fcntl_getfl(old) else {
            continue;
        };
        let extra = fl & (OFlags::NONBLOCK | OFlags::NOATIME);
        let Ok(pos) = rustix::fs::seek(old, rustix::fs::SeekFrom::Current(0)) else {
            continue;
        };
        let Some(new) = open_original(&orig, ino, extra) else {
            continue;
        };
        if rustix::fs::seek(&new, rustix::fs::SeekFrom::Start(pos)).is_err() {
            continue;
        }
        for (j, &(member, _)) in fds.iter().enumerate() {
            if group[j] {
                replace(&new, member, target);
            }
        }
    }
}

/// dup3(new, number), keeping the number's close-on-exec flag, if the
/// number is still open on the staged copy `target` (another thread may
/// have closed it since the scan, and the number been reused: the check
/// right before dup3 leaves only that instant).
fn replace(new: &OwnedFd, number: i32, target: (u64, u64)) {
    // SAFETY: borrowed for one fstat and one fcntl.
    let old = unsafe { BorrowedFd::borrow_raw(number) };
    match rustix::fs::fstat(old) {
        Ok(st) if (st.st_dev, st.st_ino) == target => {}
        _ => return,
    }
    let cloexec =
        rustix::io::fcntl_getfd(old).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    let flags = if cloexec {
        rustix::io::DupFlags::CLOEXEC
    } else {
        rustix::io::DupFlags::empty()
    };
    // SAFETY: `number` is a served descriptor the program holds; dup3
    // replaces it atomically and we never close it (ManuallyDrop).
    let mut slot = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(number) });
    let _ = rustix::io::dup3(new.as_fd(), &mut slot, flags);
}

/// Replaces every shared mapping of a staged copy of a file in `scope` by
/// the same range of the original, at the same address.
fn remap_shared(srv: &Server, scope: Scope) {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let Ok(maps) = rustix::fs::openat(CWD, c"/proc/self/maps", flags, Mode::empty()) else {
        return;
    };
    // The original last opened, by staged entry.
    let mut open: Option<(u32, OwnedFd)> = None;
    let mut buf = [0u8; 8192];
    let mut have = 0;
    loop {
        let n = match rustix::io::read(&maps, &mut buf[have..]) {
            Ok(n) => n,
            Err(_) => return,
        };
        have += n;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
            if let Some(m) = parse_map(&buf[start..start + nl]) {
                if m.shared {
                    remap(srv, scope, &m, &mut open);
                }
            }
            start += nl + 1;
        }
        if n == 0 {
            return;
        }
        // Keep the partial line; a line longer than the buffer (a very
        // long path) is dropped: a staged copy's line is far shorter.
        if start == 0 && have == buf.len() {
            have = 0;
            continue;
        }
        buf.copy_within(start..have, 0);
        have -= start;
    }
}

/// Maps the original over one shared mapping of a staged copy in `scope`.
fn remap(srv: &Server, scope: Scope, m: &Map, open: &mut Option<(u32, OwnedFd)>) {
    let Some(entry) = in_scope(srv, scope, m.dev, m.ino) else {
        return;
    };
    if open.as_ref().is_none_or(|(e, _)| *e != entry) {
        *open = original(srv, entry)
            .and_then(|(orig, ino)| open_original(&orig, ino, OFlags::empty()))
            .map(|fd| (entry, fd));
    }
    let Some((_, fd)) = open else {
        return;
    };
    // SAFETY: replaces exactly the range the program mapped from the
    // staged copy with the same range of the original, same protection,
    // shared.
    unsafe {
        let _ = rustix::mm::mmap(
            m.start as *mut core::ffi::c_void,
            m.end - m.start,
            m.prot,
            rustix::mm::MapFlags::SHARED | rustix::mm::MapFlags::FIXED,
            &*fd,
            m.offset,
        );
    }
}

struct Map {
    start: usize,
    end: usize,
    prot: rustix::mm::ProtFlags,
    shared: bool,
    offset: u64,
    dev: u64,
    ino: u64,
}

/// One /proc/self/maps line: `start-end perms offset maj:min inode path`.
fn parse_map(line: &[u8]) -> Option<Map> {
    let mut f = line.split(|&b| b == b' ').filter(|s| !s.is_empty());
    let range = f.next()?;
    let perms = f.next()?;
    let offset = hex(f.next()?)?;
    let dev = f.next()?;
    let ino = dec(f.next()?)?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let colon = dev.iter().position(|&b| b == b':')?;
    let (maj, min) = (hex(&dev[..colon])?, hex(&dev[colon + 1..])?);
    let mut prot = rustix::mm::ProtFlags::empty();
    for (c, p) in [
        (b'r', rustix::mm::ProtFlags::READ),
        (b'w', rustix::mm::ProtFlags::WRITE),
        (b'x', rustix::mm::ProtFlags::EXEC),
    ] {
        if perms.contains(&c) {
            prot |= p;
        }
    }
    Some(Map {
        start: hex(&range[..dash])? as usize,
        end: hex(&range[dash + 1..])? as usize,
        prot,
        shared: perms.get(3) == Some(&b's'),
        offset,
        dev: libc::makedev(maj as u32, min as u32) as u64,
        ino,
    })
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |a, &c| {
        Some(a * 16 + (c as char).to_digit(16)? as u64)
    })
}

fn dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |a, &c| {
        a.checked_mul(10)?
            .checked_add((c as char).to_digit(10)? as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_map(b"7f1c2a000000-7f1c2a001000 r--s 00002000 08:01 1234567   /x/y").unwrap();
        assert_eq!((m.start, m.end), (0x7f1c2a000000, 0x7f1c2a001000));
        assert!(m.shared && m.prot == rustix::mm::ProtFlags::READ);
        assert_eq!((m.offset, m.ino), (0x2000, 1234567));
        assert_eq!(m.dev, libc::makedev(8, 1) as u64);
        let p = parse_map(b"55d0c0000000-55d0c0001000 r-xp 00000000 00:00 0 ").unwrap();
        assert!(!p.shared && p.ino == 0);
        assert!(parse_map(b"garbage").is_none());
    }
}
