//! The passthrough itself: inode numbers are the source's, paths are kept
//! per inode, every metadata request goes through `meta` (count, one lock,
//! latency).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

use super::counts::Counts;
use super::mds_lock::MdsLock;

/// What the kernel may cache, and for how long.
#[derive(Clone, Copy)]
pub struct Caching {
    /// Entries, attributes and (if `negative`) failed lookups.
    ttl: Duration,
    negative: bool,
    /// Directory listings kept in the page cache between opens.
    dirs: bool,
}

impl Caching {
    /// TTL 0: nothing is cached, every probe of every process reaches us.
    pub const NONE: Caching = Caching {
        ttl: Duration::ZERO,
        negative: false,
        dirs: false,
    };
    /// A Lustre or GPFS client holding its locks for the whole job: entries,
    /// attributes, failed lookups and listings cached for an hour (longer
    /// than any start-up), per mount, i.e. per node.
    pub const CLIENT: Caching = Caching {
        ttl: Duration::from_secs(3600),
        negative: true,
        dirs: true,
    };
}

/// What the one lock guards: the inode -> path map.
struct Inodes {
    paths: HashMap<u64, PathBuf>,
}

/// An open client file. A mapped file stays open until it is unmapped, so
/// 64 processes mapping 495 libraries each hold 31,680 handles: beyond
/// `KEEP_OPEN` a handle keeps only the path and each read opens it.
enum Handle {
    File(File),
    Path(PathBuf),
}

const KEEP_OPEN: usize = 4096;

pub struct SlowFs {
    root: PathBuf,
    root_ino: u64,
    latency: Duration,
    read_bytes_per_s: u64,
    open_flags: FopenFlags,
    opendir_flags: FopenFlags,
    caching: Caching,
    counts: Arc<Counts>,
    /// The metadata server shared with other mounts (simulated nodes), if any.
    mds_lock: Option<MdsLock>,
    server: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
}

impl SlowFs {
    /// `cold_reads`: drop a file's cached pages at every open, so each open
    /// reads from the source again.
    pub fn new(
        root: PathBuf,
        latency: Duration,
        read_mibps: u64,
        cold_reads: bool,
        caching: Caching,
        counts: Arc<Counts>,
        mds_lock: Option<MdsLock>,
    ) -> SlowFs {
        let root_ino = std::fs::metadata(&root).map(|m| m.ino()).unwrap_or(0);
        SlowFs {
            root,
            root_ino,
            latency,
            read_bytes_per_s: read_mibps * 1024 * 1024,
            // Kept by default: data is not what a metadata server serves.
            open_flags: if cold_reads {
                FopenFlags::empty()
            } else {
                FopenFlags::FOPEN_KEEP_CACHE
            },
            opendir_flags: if caching.dirs {
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            },
            caching,
            counts,
            mds_lock,
            server: Mutex::new(Inodes {
                paths: HashMap::new(),
            }),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    /// One metadata request: counted, then served under the one lock after
    /// the latency, as a busy metadata server queues and serves them.
    /// `ino` (and `name`, for a lookup) say which top-level entry of the
    /// source the request is about, for the per-tree counts.
    fn meta(&self, op: &str, ino: INodeNo, name: Option<&OsStr>) -> MutexGuard<'_, Inodes> {
        self.counts.add(op);
        let guard = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let top = if ino == INodeNo::ROOT {
            name.unwrap_or(OsStr::new("/"))
        } else {
            guard
                .paths
                .get(&u64::from(ino))
                .and_then(|p| p.strip_prefix(&self.root).ok()?.iter().next())
                .unwrap_or(OsStr::new("?"))
        };
        self.counts.add_top(&top.to_string_lossy());
        if !self.latency.is_zero() {
            // Other mounts' requests queue here too: one server for all nodes.
            let _served = self.mds_lock.as_ref().map(MdsLock::hold);
            std::thread::sleep(self.latency);
        }
        guard
    }

    fn path_of(&self, inodes: &Inodes, ino: INodeNo) -> Option<PathBuf> {
        if ino == INodeNo::ROOT {
            return Some(self.root.clone());
        }
        inodes.paths.get(&u64::from(ino)).cloned()
    }

    /// The FUSE inode number for a source inode: the root is 1.
    fn fuse_ino(&self, ino: u64) -> INodeNo {
        if ino == self.root_ino {
            INodeNo::ROOT
        } else {
            INodeNo(ino)
        }
    }

    fn attr(&self, m: &Metadata) -> FileAttr {
        let time = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
            }
        };
        FileAttr {
            ino: self.fuse_ino(m.ino()),
            size: m.size(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind: kind(m.file_type()),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            flags: 0,
            blksize: m.blksize() as u32,
        }
    }
}

/// The attributes of a negative entry: node id 0, the rest ignored.
const NO_ENTRY: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    flags: 0,
    blksize: 0,
};

fn kind(t: std::fs::FileType) -> FileType {
    FileType::from_std(t).unwrap_or(FileType::RegularFile)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl Filesystem for SlowFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inodes = self.meta("lookup", parent, Some(name));
        let Some(dir) = self.path_of(&inodes, parent) else {
            return reply.error(Errno::ESTALE);
        };
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) => {
                if m.ino() != self.root_ino {
                    inodes.paths.insert(m.ino(), path);
                }
                reply.entry(&self.caching.ttl, &self.attr(&m), Generation(0));
            }
            // Node id 0 with a timeout: the kernel keeps a negative dentry,
            // as a client remembers a failed lookup under its lock.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.caching.negative => {
                reply.entry_with_ttls(&Duration::ZERO, &self.caching.ttl, &NO_ENTRY, Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inodes = self.meta("getattr", ino, None);
        let Some(path) = self.path_of(&inodes, ino) else {
            return reply.error(Errno::ESTALE);
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) => reply.attr(&self.caching.ttl, &self.attr(&m)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let inodes = self.meta("readlink", ino, None);
        let Some(path) = self.path_of(&inodes, ino) else {
            return reply.error(Errno::ESTALE);
        };
        match std::fs::read_link(&path) {
            Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inodes = self.meta("open", ino, None);
        let Some(path) = self.path_of(&inodes, ino) else {
            return reply.error(Errno::ESTALE);
        };
        match File::open(&path) {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
                let h = if files.len() < KEEP_OPEN {
                    Handle::File(f)
                } else {
                    Handle::Path(path)
                };
                files.insert(fh, h);
                reply.opened(FileHandle(fh), self.open_flags);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The data path: counted, not serialised with metadata.
        self.counts.add("read");
        let mut buf = vec![0u8; size as usize];
        let n = {
            let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let read = match files.get(&u64::from(fh)) {
                Some(Handle::File(f)) => f.read_at(&mut buf, offset),
                Some(Handle::Path(p)) => File::open(p).and_then(|f| f.read_at(&mut buf, offset)),
                None => return reply.error(Errno::EBADF),
            };
            match read {
                Ok(n) => n,
                Err(e) => return reply.error(errno(e)),
            }
        };
        self.counts.add_bytes(n as u64);
        if self.read_bytes_per_s > 0 {
            std::thread::sleep(Duration::from_secs_f64(
                n as f64 / self.read_bytes_per_s as f64,
            ));
        }
        reply.data(&buf[..n]);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _inodes = self.meta("release", ino, None);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&u64::from(fh));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inodes = self.meta("opendir", ino, None);
        match self.path_of(&inodes, ino).map(std::fs::read_dir) {
            Some(Ok(_)) => reply.opened(FileHandle(0), self.opendir_flags),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::ESTALE),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inodes = self.meta("readdir", ino, None);
        let Some(path) = self.path_of(&inodes, ino) else {
            return reply.error(Errno::ESTALE);
        };
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries: Vec<(INodeNo, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for e in rd.flatten() {
            let t = e.file_type().map(kind).unwrap_or(FileType::RegularFile);
            entries.push((self.fuse_ino(e.ino()), t, e.file_name()));
        }
        for (i, (ino, t, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, t, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _inodes = self.meta("releasedir", ino, None);
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions); this
        // is only asked for existence.
        let inodes = self.meta("access", ino, None);
        match self.path_of(&inodes, ino).map(std::fs::symlink_metadata) {
            Some(Ok(_)) => reply.ok(),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::ESTALE),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _inodes = self.meta("statfs", ino, None);
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}
