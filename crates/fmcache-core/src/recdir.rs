//! The record directory `<cache>.rec/`: journals, the merge lock and the
//! cache being written.
//!
//! It often sits where other users can write (a 1777 /tmp, a shared
//! project directory), so it is used only when it is a real directory
//! (never a symlink) owned by the effective uid that neither group nor
//! others can write, and everything in it is then reached relative to the
//! descriptor that check was made on: a name swapped for a symlink
//! afterwards cannot redirect a create, a read or an unlink. Files in it
//! are created with `O_EXCL|O_NOFOLLOW` and opened with `O_NOFOLLOW`, and
//! a file read or deleted as a journal must be a regular file owned by us.
//!
//! Opening and creating do not allocate: the recorder reopens its journal
//! from inside a hook when the program closed it.

use core::ffi::CStr;
use core::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;

/// Why a record directory or a file in it is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The system call failed.
    Sys(Errno),
    /// A symlink or something else that is not a directory.
    NotDir,
    /// A symlink or something else that is not a regular file.
    NotFile,
    /// Owned by `uid`, not by `euid`.
    Owner { uid: u32, euid: u32 },
    /// Writable by group or others.
    Mode(u32),
}

impl Refusal {
    /// The directory or file does not exist.
    pub fn is_missing(&self) -> bool {
        *self == Refusal::Sys(Errno::NOENT)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::Sys(e) => write!(f, "{e}"),
            Refusal::NotDir => f.write_str("not a directory (a symlink?): refused"),
            Refusal::NotFile => f.write_str("not a regular file (a symlink?): refused"),
            Refusal::Owner { uid, euid } => {
                write!(f, "owned by uid {uid}, not by you (uid {euid}): refused")
            }
            Refusal::Mode(m) => write!(f, "writable by group or others (mode {m:o}): refused"),
        }
    }
}

/// A checked record directory.
pub struct RecDir {
    fd: OwnedFd,
}

/// The merge lock's name in the record directory.
pub const LOCK: &CStr = c"lock";

impl RecDir {
    /// Opens the record directory `path`, creating it (mode 0700, not its
    /// parents) if `create` and it is missing, and checks it.
    pub fn open(path: &CStr, create: bool) -> Result<RecDir, Refusal> {
        if create {
            // Any error but "exists" shows again, or not, in the open below
            // (a read-only file system refuses the mkdir of an existing one).
            let _ = rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(0o700));
        }
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => Refusal::NotDir,
            // Someone else's private directory: say whose.
            e => match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_uid != rustix::process::geteuid().as_raw() => Refusal::Owner {
                    uid: st.st_uid,
                    euid: rustix::process::geteuid().as_raw(),
                },
                _ => Refusal::Sys(e),
            },
        })?;
        check_owned(&fd, libc::S_IFDIR)?;
        Ok(RecDir { fd })
    }

    /// [`RecDir::open`], creating missing parents first (allocates: not for
    /// hooks).
    pub fn open_creating(path: &[u8]) -> Result<RecDir, Refusal> {
        let c = crate::sys::cstr(path).map_err(|e| Refusal::Sys(Errno::from_raw_os_error(e)))?;
        if let Some(parent) = crate::path::parent(path) {
            let _ = crate::sys::mkdir_p(parent, 0o700);
        }
        RecDir::open(&c, true)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Creates `name`, which must not exist (never through a symlink).
    pub fn create(&self, name: &CStr, flags: OFlags, mode: u32) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
    }

    /// Opens `name` if it is a regular file of ours (not a symlink, owned
    /// by the effective uid, not writable by group or others).
    pub fn open_own(&self, name: &CStr, flags: OFlags) -> Result<OwnedFd, Refusal> {
        // NONBLOCK: a FIFO at that name must not hang us before the check.
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => Refusal::NotFile,
            e => Refusal::Sys(e),
        })?;
        check_owned(&fd, libc::S_IFREG)?;
        Ok(fd)
    }

    pub fn unlink(&self, name: &CStr) -> Result<(), Errno> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
    }

    pub fn rename(&self, from: &CStr, to: &CStr) -> Result<(), Errno> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
    }

    /// `name` opened and exclusively locked, if it is a file of ours that
    /// no live process holds: an orphaned journal, or a free lock.
    pub fn orphan(&self, name: &CStr) -> Option<OwnedFd> {
        let fd = self.open_own(name, OFlags::RDONLY).ok()?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
            .ok()
            .map(|()| fd)
    }

    /// Removes the (empty) record directory `path`; a symlink put in its
    /// place is not followed (rmdir of a symlink fails).
    pub fn remove(path: &CStr) -> Result<(), Errno> {
        rustix::fs::unlinkat(CWD, path, AtFlags::REMOVEDIR)
    }

    /// The merge lock, held (blocking) until the returned descriptor is
    /// dropped.
    pub fn lock(&self) -> Result<OwnedFd, Refusal> {
        let fd = match self.open_own(LOCK, OFlags::RDWR) {
            Err(Refusal::Sys(Errno::NOENT)) => match self.create(LOCK, OFlags::RDWR, 0o600) {
                Err(Errno::EXIST) => self.open_own(LOCK, OFlags::RDWR)?,
                r => r.map_err(Refusal::Sys)?,
            },
            r => r?,
        };
        loop {
            match rustix::fs::flock(&fd, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(fd),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Refusal::Sys(e)),
            }
        }
    }

    /// The names in the directory, `.` and `..` left out (allocates).
    pub fn names(&self) -> Vec<Vec<u8>> {
        let Ok(mut dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(Ok(ent)) = dir.read() {
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(n.to_vec());
            }
        }
        out
    }
}

/// The file behind `fd` is of type `kind`, owned by the effective uid and
/// not writable by group or others.
fn check_owned(fd: &OwnedFd, kind: u32) -> Result<(), Refusal> {
    let st = rustix::fs::fstat(fd).map_err(Refusal::Sys)?;
    let mode = st.st_mode as u32;
    if mode & libc::S_IFMT != kind {
        return Err(if kind == libc::S_IFDIR {
            Refusal::NotDir
        } else {
            Refusal::NotFile
        });
    }
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(Refusal::Owner {
            uid: st.st_uid,
            euid,
        });
    }
    if mode & 0o022 != 0 {
        return Err(Refusal::Mode(mode & 0o7777));
    }
    Ok(())
}
