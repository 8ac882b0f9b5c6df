//! Who may read the cache: never anyone who could not read what it holds.
//!
//! The cache starts from `0666 & ~umask`, loses group and other write (the
//! stager refuses such a cache, and it serves code), and is owner-only
//! (0600 & ~umask) as soon as one record says something others could not
//! learn themselves: contents of a file without `S_IROTH`, the listing of a
//! directory without `S_IROTH`, or anything at all under a directory that
//! others cannot search (`S_IXOTH` missing on an ancestor, checked on the
//! live tree at merge time). Group bits are no help: the cache's group is
//! the recorder's, not the file's. ACL entries that narrow access for one
//! named user below "other" are not looked at.
//!
//! The umask is read from `/proc/self/status` (`Umask:`, Linux 4.7+), not
//! with `umask(2)`: the merge runs at exit inside the program, whose other
//! threads may still be creating files, and setting then restoring the
//! process-wide umask would give their files the wrong mode. Without
//! `/proc` the umask is taken to be 077 (owner only).

use std::collections::HashMap;

use fmcache_format::writer::Record;

/// The process's umask, if `/proc/self/status` says it.
pub fn umask() -> Option<u32> {
    // /proc files report size 0: read to the end.
    let fd = crate::sys::open(c"/proc/self/status", rustix::fs::OFlags::RDONLY, 0).ok()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    let line = bytes
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Umask:"))?;
    let digits = std::str::from_utf8(line).ok()?.trim();
    u32::from_str_radix(digits, 8).ok().map(|m| m & 0o777)
}

/// The mode for a cache holding `records`, under `umask`.
pub fn cache_mode<'a, 'd: 'a>(
    records: impl IntoIterator<Item = &'a Record<'d>>,
    umask: u32,
) -> u32 {
    let base = 0o666 & !umask & !0o022;
    if all_public(records) {
        base
    } else {
        base & 0o600
    }
}

/// Whether everything the records say could be learnt by any user.
pub fn all_public<'a, 'd: 'a>(records: impl IntoIterator<Item = &'a Record<'d>>) -> bool {
    let mut searchable = Searchable::default();
    records.into_iter().all(|r| public(r, &mut searchable))
}

fn public(r: &Record<'_>, searchable: &mut Searchable) -> bool {
    if r.excluded {
        // Holds nothing but the name: the path is passed through.
        return true;
    }
    if !searchable.ancestors(&r.path) {
        return false;
    }
    let follow = r.follow.as_ref().or(r.lstat.as_ref());
    let others_read = matches!(follow, Some(Ok(st)) if st.mode & libc::S_IROTH != 0);
    if let Some(c) = &r.content {
        if !others_read || !searchable.ancestors(&c.mirror) {
            return false;
        }
    }
    if r.listing.is_some() && !others_read {
        return false;
    }
    true
}

/// Memo of directories others can search (`S_IXOTH`, following symlinks).
#[derive(Default)]
struct Searchable(HashMap<Vec<u8>, bool>);

impl Searchable {
    /// Every proper ancestor of `p` can be searched by others.
    fn ancestors(&mut self, p: &[u8]) -> bool {
        let mut cur = crate::path::parent(crate::path::trim_trailing_slash(p));
        while let Some(d) = cur {
            if !self.dir(d) {
                return false;
            }
            cur = crate::path::parent(d);
        }
        true
    }

    fn dir(&mut self, d: &[u8]) -> bool {
        if let Some(&v) = self.0.get(d) {
            return v;
        }
        let v = crate::sys::cstr(d)
            .ok()
            .and_then(|c| crate::sys::stat_rec(&c, true).ok())
            .is_some_and(|st| st.mode & libc::S_IXOTH != 0);
        self.0.insert(d.to_vec(), v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmcache_format::writer::Content;
    use fmcache_format::StatRec;

    fn file(path: &[u8], mode: u32) -> Record<'static> {
        Record {
            path: path.to_vec(),
            lstat: Some(Ok(StatRec {
                mode: libc::S_IFREG | mode,
                ..StatRec::default()
            })),
            content: Some(Content {
                mirror: path.to_vec(),
                bytes: std::borrow::Cow::Borrowed(b"x"),
            }),
            ..Record::default()
        }
    }

    #[test]
    fn umask_is_read() {
        // SAFETY: the unit test is the only thread changing the umask.
        let old = unsafe { libc::umask(0o027) };
        let got = umask();
        unsafe { libc::umask(old) };
        assert_eq!(got, Some(0o027));
    }

    #[test]
    fn modes() {
        // /etc and / are searchable by others on any sane system.
        let public = [file(b"/etc/passwd", 0o644)];
        assert_eq!(cache_mode(&public, 0o022), 0o644);
        assert_eq!(cache_mode(&public, 0o002), 0o644, "never group-writable");
        assert_eq!(cache_mode(&public, 0o027), 0o640);
        assert_eq!(cache_mode(&public, 0o077), 0o600);
        let secret = [file(b"/etc/passwd", 0o644), file(b"/etc/shadow", 0o640)];
        assert_eq!(cache_mode(&secret, 0o022), 0o600);
        assert_eq!(cache_mode(&secret, 0o277), 0o400);
        let excluded = [Record {
            path: b"/etc/shadow".to_vec(),
            excluded: true,
            ..Record::default()
        }];
        assert_eq!(cache_mode(&excluded, 0o022), 0o644);
    }
}
