//! What the cache can say about a probe, decided without any system call.
//!
//! Each function returns an [`Answer`]: `Hit` (served from the cache),
//! `Errno` (the call fails with this errno, served) or `Miss` (the cache
//! cannot answer exactly: pass the call through). Paths are normalised
//! absolute keys (see `path::normalize`).

use fmcache_format::layout::acc;
use fmcache_format::{CacheView, EntryRef, Listing, StatRec};

use crate::path::{file_name, has_dot_components, parent, trim_trailing_slash, PathBuf, NAME_MAX};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    Hit(T),
    Errno(i32),
    Miss,
}

impl<T> Answer<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Hit(t) => Answer::Hit(f(t)),
            Answer::Errno(e) => Answer::Errno(e),
            Answer::Miss => Answer::Miss,
        }
    }
}

/// Which entries the process still trusts (it stops trusting what it
/// changed itself).
pub trait Trust {
    fn trusted(&self, entry: u32, path: &[u8]) -> bool;
}

/// Trusts everything (tests, tools).
pub struct TrustAll;
impl Trust for TrustAll {
    fn trusted(&self, _: u32, _: &[u8]) -> bool {
        true
    }
}

/// Where a path stands in the cache.
enum Found<'a> {
    Entry(EntryRef<'a>),
    /// Derived from a recorded ancestor: the walk fails with this errno.
    Fails(i32),
    Unknown,
}

fn usable<'a>(e: EntryRef<'a>, trust: &impl Trust, walk: bool) -> Option<EntryRef<'a>> {
    (!e.is_excluded() && (walk || !e.is_walk()) && trust.trusted(e.index(), e.path())).then_some(e)
}

/// Finds `path` (no trailing slash), or derives its failure from the
/// nearest recorded ancestor: a missing or non-directory ancestor, or a
/// listed directory that lacks the next component.
fn find<'a>(view: &CacheView<'a>, trust: &impl Trust, path: &[u8]) -> Found<'a> {
    find_in(view, trust, path, false)
}

/// `find`, where `walk` also accepts ancestors of the roots (realpath).
fn find_in<'a>(view: &CacheView<'a>, trust: &impl Trust, path: &[u8], walk: bool) -> Found<'a> {
    if let Some(e) = view.lookup(path) {
        return match usable(e, trust, walk) {
            Some(e) => Found::Entry(e),
            None => Found::Unknown,
        };
    }
    if has_dot_components(path) {
        return Found::Unknown;
    }
    let mut child = path;
    while let Some(dir) = parent(child) {
        let name = file_name(child);
        let Some(e) = view.lookup(dir) else {
            child = dir;
            continue;
        };
        let Some(e) = usable(e, trust, walk) else {
            return Found::Unknown;
        };
        // Any over-long name below `dir` may fail first with ENAMETOOLONG.
        if path[dir.len()..]
            .split(|&b| b == b'/')
            .any(|c| c.len() > NAME_MAX)
        {
            return Found::Unknown;
        }
        return match e.follow() {
            Some(Err(err))
                if matches!(
                    err,
                    libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES
                ) =>
            {
                Found::Fails(err)
            }
            Some(Ok(st)) if !st.is_dir() => Found::Fails(libc::ENOTDIR),
            Some(Ok(_)) => {
                if e.access_errno(acc::X) != Some(0) {
                    return Found::Unknown;
                }
                match e.listing().and_then(|l| l.contains(name)) {
                    Some(false) => Found::Fails(libc::ENOENT),
                    _ => Found::Unknown,
                }
            }
            _ => Found::Unknown,
        };
    }
    Found::Unknown
}

/// The entry a path names, with the meaning of a trailing slash applied:
/// `dir/` is the directory (symlinks followed), `file/` fails ENOTDIR.
fn resolve<'a>(view: &CacheView<'a>, trust: &impl Trust, path: &[u8]) -> (Found<'a>, bool) {
    let trimmed = trim_trailing_slash(path);
    let slash = trimmed.len() != path.len() || (path.ends_with(b"/.") && path.len() > 2);
    let base = if path.ends_with(b"/.") && path.len() > 2 {
        &path[..path.len() - 2]
    } else {
        trimmed
    };
    (find(view, trust, base), slash)
}

/// stat(2) (`follow`) or lstat(2).
pub fn stat<'a>(
    view: &CacheView<'a>,
    trust: &impl Trust,
    path: &[u8],
    follow: bool,
) -> Answer<&'a StatRec> {
    let (found, slash) = resolve(view, trust, path);
    let e = match found {
        Found::Entry(e) => e,
        Found::Fails(err) => return Answer::Errno(err),
        Found::Unknown => return Answer::Miss,
    };
    let r = if follow || slash {
        e.follow()
    } else {
        e.lstat()
    };
    match r {
        None => Answer::Miss,
        Some(Err(err)) => Answer::Errno(err),
        Some(Ok(st)) if slash && !st.is_dir() => Answer::Errno(libc::ENOTDIR),
        Some(Ok(st)) => Answer::Hit(st),
    }
}

/// access(2) with `mode` a mask of R_OK, W_OK, X_OK (F_OK = 0).
pub fn access(view: &CacheView<'_>, trust: &impl Trust, path: &[u8], mode: i32) -> Answer<()> {
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Answer::Errno(libc::EINVAL);
    }
    let (found, slash) = resolve(view, trust, path);
    let e = match found {
        Found::Entry(e) => e,
        Found::Fails(err) => return Answer::Errno(err),
        Found::Unknown => return Answer::Miss,
    };
    match e.follow() {
        None => return Answer::Miss,
        Some(Err(err)) => return Answer::Errno(err),
        Some(Ok(st)) if slash && !st.is_dir() => return Answer::Errno(libc::ENOTDIR),
        Some(Ok(_)) => {}
    }
    let bits = [
        (libc::W_OK, acc::W),
        (libc::R_OK, acc::R),
        (libc::X_OK, acc::X),
    ];
    // The kernel reports a read-only file system before any permission.
    if mode & libc::W_OK != 0 && e.access_errno(acc::W) == Some(libc::EROFS) {
        return Answer::Errno(libc::EROFS);
    }
    for (bit, which) in bits {
        if mode & bit != 0 {
            match e.access_errno(which) {
                None => return Answer::Miss,
                Some(0) => {}
                Some(err) => return Answer::Errno(err),
            }
        }
    }
    Answer::Hit(())
}

/// How to serve an open for reading.
#[derive(Clone, Copy, Debug)]
pub struct OpenFile<'a> {
    pub entry: EntryRef<'a>,
    /// Canonical path of the bytes; the staged copy is `<stage>/root<mirror>`.
    pub mirror: &'a [u8],
    pub stat: &'a StatRec,
}

/// open(2) with access mode O_RDONLY. `flags` may carry O_DIRECTORY and
/// O_NOFOLLOW; the caller passes anything else through.
pub fn open_read<'a>(
    view: &CacheView<'a>,
    trust: &impl Trust,
    path: &[u8],
    flags: i32,
) -> Answer<OpenFile<'a>> {
    let (found, slash) = resolve(view, trust, path);
    let e = match found {
        Found::Entry(e) => e,
        Found::Fails(err) => return Answer::Errno(err),
        Found::Unknown => return Answer::Miss,
    };
    if flags & libc::O_NOFOLLOW != 0 && !slash {
        match e.lstat() {
            Some(Ok(st)) if st.is_symlink() => return Answer::Errno(libc::ELOOP),
            None => return Answer::Miss,
            _ => {}
        }
    }
    let st = match e.follow() {
        None => return Answer::Miss,
        Some(Err(err)) => return Answer::Errno(err),
        Some(Ok(st)) => st,
    };
    if (slash || flags & libc::O_DIRECTORY != 0) && !st.is_dir() {
        return Answer::Errno(libc::ENOTDIR);
    }
    match e.access_errno(acc::R) {
        None => return Answer::Miss,
        Some(0) => {}
        Some(err) => return Answer::Errno(err),
    }
    // Only regular files are served; a directory descriptor passes through.
    match (st.is_reg(), e.mirror_path()) {
        (true, Some(mirror)) => Answer::Hit(OpenFile {
            entry: e,
            mirror,
            stat: st,
        }),
        _ => Answer::Miss,
    }
}

/// readlink(2): the target of a symlink.
pub fn readlink<'a>(view: &CacheView<'a>, trust: &impl Trust, path: &[u8]) -> Answer<&'a [u8]> {
    let (found, slash) = resolve(view, trust, path);
    let e = match found {
        Found::Entry(e) => e,
        Found::Fails(err) => return Answer::Errno(err),
        Found::Unknown => return Answer::Miss,
    };
    if slash {
        // `link/` names the target directory: let the kernel decide.
        return Answer::Miss;
    }
    match e.lstat() {
        None => Answer::Miss,
        Some(Err(err)) => Answer::Errno(err),
        Some(Ok(st)) if !st.is_symlink() => Answer::Errno(libc::EINVAL),
        Some(Ok(_)) => e.link_target().map_or(Answer::Miss, Answer::Hit),
    }
}

/// opendir(3): the directory's recorded listing.
pub fn list<'a>(
    view: &CacheView<'a>,
    trust: &impl Trust,
    path: &[u8],
) -> Answer<(EntryRef<'a>, Listing<'a>)> {
    let (found, _) = resolve(view, trust, path);
    let e = match found {
        Found::Entry(e) => e,
        Found::Fails(err) => return Answer::Errno(err),
        Found::Unknown => return Answer::Miss,
    };
    match e.follow() {
        None => return Answer::Miss,
        Some(Err(err)) => return Answer::Errno(err),
        Some(Ok(st)) if !st.is_dir() => return Answer::Errno(libc::ENOTDIR),
        Some(Ok(_)) => {}
    }
    match e.access_errno(acc::R) {
        Some(0) => {}
        Some(err) => return Answer::Errno(err),
        None => return Answer::Miss,
    }
    match e.listing() {
        Some(l) => Answer::Hit((e, l)),
        None => Answer::Miss,
    }
}

/// realpath(3): resolves every component from recorded entries into `out`.
pub fn realpath(
    view: &CacheView<'_>,
    trust: &impl Trust,
    path: &[u8],
    out: &mut PathBuf,
) -> Answer<()> {
    // Work list of components still to walk, stored back to front in a
    // second buffer so symlink targets can be pushed in front.
    let mut todo = PathBuf::new();
    if !push_reversed(&mut todo, path) {
        return Answer::Miss;
    }
    out.set(b"/");
    let mut links = 0;
    while let Some(comp) = pop_component(&mut todo) {
        let comp = comp.as_slice();
        if comp == b"." {
            continue;
        }
        if comp == b".." {
            let keep = parent(out.as_bytes()).map_or(1, <[u8]>::len);
            out.truncate(keep);
            continue;
        }
        if comp.len() > NAME_MAX {
            // The kernel looks the name up after checking search permission
            // on the directory resolved so far, and fails it as too long.
            return match find(view, trust, out.as_bytes()) {
                Found::Entry(e) if e.access_errno(acc::X) == Some(0) => {
                    Answer::Errno(libc::ENAMETOOLONG)
                }
                _ => Answer::Miss,
            };
        }
        let base = out.as_bytes().len();
        if !out.as_bytes().ends_with(b"/") && !out.push(b"/") || !out.push(comp) {
            return Answer::Errno(libc::ENAMETOOLONG);
        }
        let e = match find_in(view, trust, out.as_bytes(), true) {
            Found::Entry(e) => e,
            Found::Fails(err) => return Answer::Errno(err),
            Found::Unknown => return Answer::Miss,
        };
        match e.lstat() {
            None => return Answer::Miss,
            Some(Err(err)) => return Answer::Errno(err),
            Some(Ok(st)) if st.is_symlink() => {
                links += 1;
                if links > 40 {
                    return Answer::Errno(libc::ELOOP);
                }
                let Some(target) = e.link_target() else {
                    return Answer::Miss;
                };
                if target.first() == Some(&b'/') {
                    out.set(b"/");
                } else {
                    out.truncate(if base > 1 { base } else { 1 });
                }
                if !push_reversed(&mut todo, target) {
                    return Answer::Errno(libc::ENAMETOOLONG);
                }
            }
            Some(Ok(st)) if !st.is_dir() && !todo.as_bytes().is_empty() => {
                return Answer::Errno(libc::ENOTDIR)
            }
            Some(Ok(_)) => {}
        }
    }
    Answer::Hit(())
}

/// Pushes the components of `path` onto the reversed work list.
fn push_reversed(todo: &mut PathBuf, path: &[u8]) -> bool {
    // A trailing slash demands a directory, as a trailing "/." does.
    if path.len() > 1 && path.ends_with(b"/") && !(todo.push(b"/") && todo.push(b".")) {
        return false;
    }
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
        // Longer names only need to be seen as too long: keep NAME_MAX + 1.
        let c = &c[..c.len().min(NAME_MAX + 1)];
        let mut rev = [0u8; NAME_MAX + 1];
        for (i, b) in c.iter().rev().enumerate() {
            rev[i] = *b;
        }
        if !todo.push(b"/") || !todo.push(&rev[..c.len()]) {
            return false;
        }
    }
    true
}

/// A component taken from the end of the reversed work list.
struct Comp {
    buf: [u8; NAME_MAX + 1],
    len: usize,
}
impl Comp {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn pop_component(todo: &mut PathBuf) -> Option<Comp> {
    let bytes = todo.as_bytes();
    let cut = bytes.iter().rposition(|&b| b == b'/')?;
    let rev = &bytes[cut + 1..];
    let mut c = Comp {
        buf: [0; NAME_MAX + 1],
        len: rev.len(),
    };
    for (i, b) in rev.iter().rev().enumerate() {
        c.buf[i] = *b;
    }
    todo.truncate(cut);
    Some(c)
}
