//! The recording side: every probe becomes one journal record, written
//! with one write(2) on an O_APPEND descriptor (no buffer to lose, no lock
//! between threads or with signal handlers). A lock-free set of hashes
//! drops repeats. At exit the process merges its journal into the cache.

use core::ffi::{c_char, c_int, CStr};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering::*};
use std::os::fd::{BorrowedFd, IntoRawFd};

use fmcache_core::config::Config;
use fmcache_core::journal::{self, Kind};
use fmcache_core::path::{self, PathBuf};
use fmcache_core::sys;
use rustix::fs::OFlags;

pub struct Recorder {
    pub cfg: Config,
    fd: AtomicI32,
    /// Scope hints, journaled again in every forked child's journal.
    hints: Vec<(Kind, Vec<u8>)>,
    /// Journal path, NUL-free; rewritten in a forked child.
    path: std::sync::Mutex<Vec<u8>>,
}

const JOURNAL_FD_MIN: i32 = 900;
const SEEN_SLOTS: usize = 1 << 15;
static SEEN: [AtomicU64; SEEN_SLOTS] = [const { AtomicU64::new(0) }; SEEN_SLOTS];

impl Recorder {
    pub fn start(cfg: Config) -> Result<Recorder, String> {
        let r = Recorder {
            hints: scope_hints(&cfg),
            cfg,
            fd: AtomicI32::new(-1),
            path: std::sync::Mutex::new(Vec::new()),
        };
        r.open_journal()?;
        r.note_scope_hints();
        Ok(r)
    }

    /// Journals the scope hints gathered at start.
    fn note_scope_hints(&self) {
        for (kind, p) in &self.hints {
            self.note_key(*kind, p);
        }
    }
}

/// What this process says about the scope (fmcache_core::scope): its
/// executable, the directories its environment names as software, and the
/// user's areas. Gathered once at start (a forked child must not read the
/// environment: another thread may have held its lock at the fork).
fn scope_hints(cfg: &Config) -> Vec<(Kind, Vec<u8>)> {
    let mut out = Vec::new();
    {
        let mut cwd = PathBuf::new();
        let have_cwd = crate::cwd::get(&mut cwd);
        let mut key = PathBuf::new();
        let mut note_abs = |kind: Kind, p: &[u8]| {
            let base = have_cwd.then_some(cwd.as_bytes());
            if !p.is_empty()
                && (p[0] == b'/' || base.is_some())
                && path::normalize(base, p, &mut key)
            {
                out.push((kind, key.as_bytes().to_vec()));
            }
        };
        // SAFETY: getauxval has no preconditions; AT_EXECFN, when present,
        // points at the NUL-terminated path given to execve.
        let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const c_char;
        if !execfn.is_null() {
            // SAFETY: see above.
            note_abs(Kind::Prefix, unsafe { CStr::from_ptr(execfn) }.to_bytes());
        }
        let mut exe = [0u8; path::PATH_MAX];
        if let Ok(n) = rustix::fs::readlinkat_raw(rustix::fs::CWD, c"/proc/self/exe", &mut exe[..])
        {
            if n < exe.len() {
                note_abs(Kind::Prefix, &exe[..n]);
            }
        }
        for var in ["PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH"] {
            if let Some(v) = std::env::var_os(var) {
                for p in std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).split(|&b| b == b':')
                {
                    note_abs(Kind::Tree, p);
                }
            }
        }
        for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            if let Some(v) = std::env::var_os(var) {
                note_abs(
                    Kind::Tree,
                    std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()),
                );
            }
        }
        if have_cwd {
            let here = cwd.as_bytes().to_vec();
            note_abs(Kind::UserArea, &here);
        }
        for var in ["HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(var) {
                note_abs(
                    Kind::UserArea,
                    std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()),
                );
            }
        }
        for i in &cfg.include {
            note_abs(Kind::Include, i);
        }
    }
    out
}

impl Recorder {
    /// Creates a journal under the record directory, locked for as long as
    /// this process lives (the lock is how mergers tell it is alive), and
    /// only then gives it the name mergers look for.
    fn open_journal(&self) -> Result<(), String> {
        let dir = self.cfg.record_dir();
        sys::mkdir_p(&dir, 0o700).map_err(|e| format!("{}: {}", show(&dir), strerror(e)))?;
        let host = rustix::system::uname();
        let pid = rustix::process::getpid().as_raw_nonzero();
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let name = format!(
            "{}.{}.{}.{}",
            host.nodename().to_string_lossy(),
            pid,
            now.tv_sec,
            now.tv_nsec
        );
        let tmp = [&dir[..], b"/t.", name.as_bytes()].concat();
        let fin = [
            &dir[..],
            b"/",
            fmcache_core::merge::JOURNAL_PREFIX,
            name.as_bytes(),
        ]
        .concat();
        let tmp_c = sys::cstr(&tmp).map_err(strerror)?;
        let fd = sys::open(
            &tmp_c,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::APPEND,
            0o600,
        )
        .map_err(|e| format!("journal {}: {}", show(&tmp), strerror(e)))?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| e.to_string())?;
        // Far from the low numbers programs close and reuse, so our records
        // never land in a file of theirs.
        let fd = rustix::io::fcntl_dupfd_cloexec(&fd, JOURNAL_FD_MIN).unwrap_or(fd);
        let fin_c = sys::cstr(&fin).map_err(strerror)?;
        rustix::fs::renameat(rustix::fs::CWD, &*tmp_c, rustix::fs::CWD, &*fin_c)
            .map_err(|e| e.to_string())?;
        let old = self.fd.swap(fd.into_raw_fd(), AcqRel);
        if old >= 0 {
            // SAFETY: the previous journal descriptor is ours alone.
            unsafe { libc::close(old) };
        }
        if let Ok(mut p) = self.path.lock() {
            *p = fin;
        }
        Ok(())
    }

    /// Records one probe of `p` (relative to `dirfd`).
    pub fn note(&self, kind: Kind, dirfd: c_int, p: *const c_char) {
        let mut key = PathBuf::new();
        if !resolve(dirfd, p, &mut key) {
            return;
        }
        self.note_key(kind, key.as_bytes());
    }

    pub fn note_key(&self, kind: Kind, key: &[u8]) {
        let h =
            fmcache_format::path_hash(key) ^ (kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut slot = (h as usize) & (SEEN_SLOTS - 1);
        for _ in 0..16 {
            match SEEN[slot].compare_exchange(0, h, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(v) if v == h => return,
                Err(_) => slot = (slot + 1) & (SEEN_SLOTS - 1),
            }
        }
        let mut rec = [0u8; journal::MAX_RECORD];
        let n = journal::encode(kind, key, &mut rec);
        let fd = self.fd.load(Acquire);
        if n == 0 || fd < 0 {
            return;
        }
        // SAFETY: our journal descriptor, open for the process's life.
        let _ = rustix::io::write(unsafe { BorrowedFd::borrow_raw(fd) }, &rec[..n]);
        crate::state::COUNTERS.recorded.fetch_add(1, Relaxed);
    }

    /// In a forked child: a journal of its own (the parent's lock and
    /// records stay the parent's).
    pub fn after_fork(&self) {
        for s in SEEN.iter() {
            s.store(0, Relaxed);
        }
        if let Err(e) = self.open_journal() {
            warn!("cannot record in child process: {e}");
            self.fd.store(-1, Release);
            return;
        }
        // Each journal carries the scope hints: it may be merged alone.
        self.note_scope_hints();
    }

    /// Merges this process's journal (and orphans) into the cache.
    pub fn finish(&self) {
        let fd = self.fd.swap(-1, AcqRel);
        if fd < 0 {
            return;
        }
        let own = self.path.lock().map(|p| p.clone()).unwrap_or_default();
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if let Err(e) = fmcache_core::merge::merge(&self.cfg, Some(&own), uid, gid) {
            warn!("{}: merge failed: {e}", show(&self.cfg.cache));
        }
        // Closing releases our lock only after the journal is gone.
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
}

/// The absolute key of `p`; relative to a real `dirfd`, found through
/// /proc/self/fd (recording only: this costs a system call).
pub fn resolve(dirfd: c_int, p: *const c_char, out: &mut PathBuf) -> bool {
    if crate::server::key(dirfd, p, out) {
        return true;
    }
    if p.is_null() || dirfd < 0 {
        return false;
    }
    // SAFETY: the caller passed a NUL-terminated path.
    let input = unsafe { CStr::from_ptr(p) }.to_bytes();
    let mut dir = PathBuf::new();
    if !fd_path(dirfd, &mut dir) {
        return false;
    }
    let dir = dir.as_bytes();
    if input.is_empty() {
        return fmcache_core::path::normalize(None, dir, out);
    }
    fmcache_core::path::normalize(Some(dir), input, out)
}

/// The path the kernel has for descriptor `fd` (/proc/self/fd/N), with no
/// allocation. Recording and fd-placed changes only: a system call.
pub fn fd_path(fd: c_int, out: &mut PathBuf) -> bool {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = fd as u32;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut link = PathBuf::new();
    let mut buf = [0u8; fmcache_core::path::PATH_MAX];
    if fd < 0 || !link.push(b"/proc/self/fd/") || !link.push(&digits[i..]) {
        return false;
    }
    match rustix::fs::readlinkat_raw(rustix::fs::CWD, link.as_cstr(), &mut buf[..]) {
        Ok(n) if n < buf.len() => out.set(&buf[..n]),
        _ => false,
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}
