//! The serving side: the mapped cache, the stage it points into, and what
//! this process stopped trusting because it changed it.

use core::ffi::c_int;

use fmcache_core::answer::Trust;
use fmcache_core::config::Config;
use fmcache_core::path::PathBuf;
use fmcache_core::stage;
use fmcache_format::layout::first_component;
use fmcache_format::{CacheView, StatRec, Verify};

use crate::cargs::CPath;
use crate::trust::TrustState;

pub struct Server {
    pub view: CacheView<'static>,
    inodes: &'static [u8],
    /// `<stage>/<id>/root`, prefix of every mirror path.
    root: &'static [u8],
    stage_dev: u64,
    /// What this copy stopped trusting (the auditor copy uses the preload
    /// copy's instead, once it has found it: see `trust()`).
    own: &'static TrustState,
    /// Keeps the stage marked in use (a shared flock) while we live.
    _in_use: std::os::fd::OwnedFd,
}

impl Server {
    /// Maps (staging first if needed) the cache `cfg` names: the stage
    /// the other copy of the library or the parent process attached, when
    /// there is one and it still holds (no request for the cache), else
    /// through the cache (`stage::attach`). Tells `attachment` what it
    /// attached.
    pub fn attach(cfg: &Config) -> Result<Server, fmcache_core::error::StageError> {
        let a = match crate::attachment::known(cfg) {
            Some(checksum) => stage::attach_known(cfg, checksum).or_else(|_| stage::attach(cfg))?,
            None => stage::attach(cfg)?,
        };
        crate::attachment::attached(cfg, a.checksum);
        let index = a.index.leak();
        let view = CacheView::open(index, Verify::Header)?;
        let own = Box::leak(Box::new(TrustState::new(&view)));
        Ok(Server {
            view,
            inodes: a.inodes.leak(),
            root: Box::leak(a.root.into_boxed_slice()),
            stage_dev: a.stage_dev,
            own,
            _in_use: a.hold,
        })
    }

    /// The cache key for a path given to a call relative to `dirfd`;
    /// `false` when it cannot be formed here (NULL, a real dirfd, too long).
    pub fn key(&self, dirfd: c_int, p: CPath<'_>, out: &mut PathBuf) -> bool {
        crate::keys::key(dirfd, p, out)
    }

    /// `key` for the calls that only read (stat, access, open for reading,
    /// listing), and `false` as well when the cache holds nothing under
    /// the path's first component (the header's filter): such a call
    /// passes through without forming the key or looking anything up, the
    /// common case for a program's own data. An absolute path is checked
    /// before it is normalized (a spelling that climbs out with `..` then
    /// passes through, which is always correct). Not for calls that need
    /// the key of any path: staged paths, `/proc/self/fd/N`, changes.
    pub fn serving_key(&self, dirfd: c_int, p: CPath<'_>, out: &mut PathBuf) -> bool {
        let Some(input) = p.bytes() else {
            return false;
        };
        // Checked before the key is formed: a path that climbs out with
        // `..` may then pass through, which is always correct.
        if let Some(c) = first_component(input) {
            if c != b"." && c != b".." && !self.view.may_hold_top(c) {
                return false;
            }
        }
        if !crate::keys::key_of(dirfd, input, out) {
            return false;
        }
        // A relative path's first component is the working directory's.
        input.first() == Some(&b'/')
            || first_component(out.as_bytes()).is_none_or(|c| self.view.may_hold_top(c))
    }

    /// The one trust state of the process: in the auditor copy, the
    /// preload copy's (which sees every change the program makes) when it
    /// has one for the same cache; else this copy's own.
    pub fn trust(&self) -> &'static TrustState {
        if crate::carry::is_auditor() {
            if let Some(p) = crate::trust::peer() {
                if p.checksum == self.own.checksum {
                    return p;
                }
            }
        }
        self.own
    }

    /// This copy's own trust state (the preload copy publishes it).
    pub fn own_trust(&self) -> &'static TrustState {
        self.own
    }

    /// Stops trusting the key `p` and its parent's listing; `names`: its
    /// name changed, which takes everything under it along.
    pub fn invalidate(&self, p: &[u8], names: bool) {
        self.trust().key_changed(&self.view, p, names);
    }

    /// Writes where the staged copy of `mirror` lives into `out`.
    pub fn staged_path(&self, mirror: &[u8], out: &mut PathBuf) -> bool {
        out.set(self.root) && out.push(mirror)
    }

    /// Takes the stage out of a message in place (dlerror text): a staged
    /// path becomes its original, a name pointed into the missing
    /// directory becomes the bare name again.
    pub fn unstage_message(&self, msg: &mut [u8]) -> usize {
        let mut missing = PathBuf::new();
        let ok = missing.set(self.root) && missing.push(crate::keys::MISSING) && missing.push(b"/");
        let mut n = msg.len();
        if ok {
            n = remove_all(&mut msg[..n], missing.as_bytes(), |_| true);
        }
        remove_all(&mut msg[..n], self.root, |rest| rest.first() == Some(&b'/'))
    }

    /// The original path of a path under the stage's mirror tree.
    pub fn original_of_staged(&self, p: &[u8], out: &mut PathBuf) -> bool {
        match p.strip_prefix(self.root) {
            Some(rest) if rest.first() == Some(&b'/') => out.set(rest),
            _ => false,
        }
    }

    /// Opens the staged copy of a cached file (with O_CLOEXEC/O_NONBLOCK
    /// from `extra`), checks it is the copy of exactly that file, and
    /// returns the descriptor.
    pub fn open_mirror(&self, mirror: &[u8], expect: &StatRec, extra: c_int) -> Option<c_int> {
        let mut p = PathBuf::new();
        if !self.staged_path(mirror, &mut p) {
            return None;
        }
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOCTTY
            | rustix::fs::OFlags::from_bits_retain(
                extra as u32 & (libc::O_CLOEXEC | libc::O_NONBLOCK) as u32,
            );
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            p.as_cstr(),
            flags,
            rustix::fs::Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        match self.staged_stat(st.st_dev as u64, st.st_ino as u64) {
            Some(rec) if rec == expect => Some(std::os::fd::IntoRawFd::into_raw_fd(fd)),
            _ => None,
        }
    }

    /// The recorded stat of the original file whose staged copy has this
    /// (dev, ino): what fstat on a served descriptor reports.
    pub fn staged_stat(&self, dev: u64, ino: u64) -> Option<&'static StatRec> {
        match self.staged(dev, ino)?.follow() {
            Some(Ok(st)) => Some(st),
            _ => None,
        }
    }

    /// What fstat on the staged file (dev, ino) reports: the original's
    /// recorded stat, since the staged copy holds exactly its bytes. Once
    /// this process changed the file (descriptors it held then were
    /// swapped to the original, see `fds.rs`; this one was not: opened
    /// since, inherited, or the swap failed), the live stat only while the
    /// recorded inode is still at the path (changed in place); after a
    /// rename over it or an unlink, the recorded one, as a native
    /// descriptor keeps the old inode (a replace detector compares it with
    /// the path's new inode).
    pub fn descriptor_stat(&self, dev: u64, ino: u64) -> Option<StatRec> {
        let e = self.staged(dev, ino)?;
        let Some(Ok(rec)) = e.follow() else {
            return None;
        };
        let mirror = e.mirror_path().unwrap_or(e.path());
        let mirror_trusted = match self.view.lookup(mirror) {
            Some(m) => self.trusted(m.index(), mirror),
            None => true,
        };
        if self.trusted(e.index(), e.path()) && mirror_trusted {
            return Some(*rec);
        }
        let mut p = PathBuf::new();
        if p.set(mirror) {
            if let Ok(live) = fmcache_core::sys::stat_rec(p.as_cstr(), true) {
                if live.ino == rec.ino {
                    return Some(live);
                }
            }
        }
        Some(*rec)
    }

    /// The entry whose bytes the staged file (dev, ino) holds.
    pub fn staged(&self, dev: u64, ino: u64) -> Option<fmcache_format::EntryRef<'static>> {
        if dev != self.stage_dev {
            return None;
        }
        self.view.entry(stage::staged_entry(self.inodes, ino)?)
    }

    /// The entry behind a served descriptor, if `fd` is one.
    pub fn staged_fd(&self, fd: c_int) -> Option<fmcache_format::EntryRef<'static>> {
        // SAFETY: only borrowed for one fstat.
        let st = rustix::fs::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).ok()?;
        self.staged(st.st_dev as u64, st.st_ino as u64)
    }
}

impl Trust for Server {
    fn trusted(&self, entry: u32, p: &[u8]) -> bool {
        self.trust().trusted(entry, p)
    }
}

/// Removes every `pat` followed by what `keep_if` accepts, shifting the
/// rest down; returns the new length.
fn remove_all(buf: &mut [u8], pat: &[u8], keep_if: impl Fn(&[u8]) -> bool) -> usize {
    let (mut r, mut w) = (0, 0);
    while r < buf.len() {
        if !pat.is_empty() && buf[r..].starts_with(pat) && keep_if(&buf[r + pat.len()..]) {
            r += pat.len();
            continue;
        }
        buf[w] = buf[r];
        w += 1;
        r += 1;
    }
    w
}
