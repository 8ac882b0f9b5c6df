//! What a call that changes the tree makes stale, found with the real file
//! system: the literal key, then every entry naming the same file (its
//! inode) and the same name under every spelling of its directory (the
//! directory's inode). So a change made through a symlinked directory, a
//! file symlink, a hard link, `..`, a relative path or a dirfd reaches the
//! entries as the cache spells them. A few local system calls per change
//! (fstatat of the target and of its directory), never on a probe.

use core::ffi::{c_int, CStr};

use crate::cargs::CPath;

use fmcache_core::path::{self, PathBuf};
use rustix::fs::AtFlags;

use crate::server::Server;

/// `stat` of `p` relative to `dirfd` (AT_FDCWD included); `p` empty: the
/// descriptor itself.
fn stat_at(dirfd: c_int, p: &CStr, follow: bool) -> Option<rustix::fs::Stat> {
    let mut flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    if p.is_empty() {
        flags |= AtFlags::EMPTY_PATH;
    }
    if dirfd == libc::AT_FDCWD {
        return rustix::fs::statat(rustix::fs::CWD, p, flags).ok();
    }
    if dirfd < 0 {
        return None;
    }
    // SAFETY: the caller's descriptor, borrowed for one call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(dirfd) };
    rustix::fs::statat(fd, p, flags).ok()
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// `p` changed, relative to `dirfd`. `names`: its name changed (created,
/// removed, renamed, replaced); else only its contents or attributes.
/// `follow`: the call follows a final symlink. Runs before the call (the
/// name still names what it changes) or, for names known only after it
/// (mkstemp, bind), after. Returns whether `p` was a directory.
pub fn path_changed(srv: &Server, dirfd: c_int, p: CPath<'_>, names: bool, follow: bool) -> bool {
    let Some(input) = p.get() else {
        return false;
    };
    let t = srv.trust();
    let mut k = PathBuf::new();
    if crate::keys::resolve(dirfd, p, &mut k) {
        t.key_changed(&srv.view, k.as_bytes(), names);
    } else {
        // Not placeable at all: nothing in the cache can be trusted.
        t.distrust_all();
        return false;
    }
    let mut dir = false;
    if let Some(st) = stat_at(dirfd, input, follow) {
        dir = is_dir(&st);
        t.inode_changed(&srv.view, st.st_ino, names);
    }
    if names {
        let bytes = path::trim_trailing_slash(input.to_bytes());
        let (parent, name): (&[u8], &[u8]) = match bytes.iter().rposition(|&b| b == b'/') {
            None => (b".", bytes),
            Some(0) => (b"/", &bytes[1..]),
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
        };
        let mut d = PathBuf::new();
        if !d.set(parent) {
            t.distrust_all();
        } else if let Some(st) = stat_at(dirfd, d.as_cstr(), true) {
            t.child_changed(&srv.view, st.st_ino, name, true);
        }
    }
    dir
}

/// A descriptor's file changed (written, truncated, chmod'ed): every entry
/// naming its inode. `created`: the open may have created it, so its name
/// (the kernel's canonical path) changed too.
pub fn fd_changed(srv: &Server, fd: c_int, created: bool) {
    if fd < 0 {
        return;
    }
    let t = srv.trust();
    // SAFETY: the caller's descriptor, borrowed for one call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match rustix::fs::fstat(borrowed) {
        Ok(st) => t.inode_changed(&srv.view, st.st_ino, false),
        Err(_) => return,
    }
    if !created {
        return;
    }
    let mut c = PathBuf::new();
    if !crate::keys::fd_path(fd, &mut c) || c.as_bytes().first() != Some(&b'/') {
        t.distrust_all();
        return;
    }
    t.key_changed(&srv.view, c.as_bytes(), true);
    if let Some(parent) = path::parent(c.as_bytes()) {
        let name = path::file_name(c.as_bytes());
        let mut d = PathBuf::new();
        if d.set(parent) {
            if let Some(st) = stat_at(libc::AT_FDCWD, d.as_cstr(), true) {
                t.child_changed(&srv.view, st.st_ino, name, true);
            }
        }
    }
}

/// After a call that may have moved or removed a directory: the tracked
/// cwd is read again (its path may have changed, or it may be gone, when
/// getcwd then fails as natively). Only the owner of our memory (not a
/// vfork child) moves it.
pub fn cwd_may_have_moved() {
    if crate::owner::is_owner() {
        let saved = crate::errno::get();
        crate::cwd::refresh();
        crate::errno::set(saved);
    }
}
