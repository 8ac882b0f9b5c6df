//! The recording side: every probe becomes one journal record, written
//! with one write(2) on an O_APPEND descriptor (no buffer to lose, no lock
//! between threads or with signal handlers). A lock-free set of hashes
//! drops repeats. At exit the process merges its journal into the cache.

use core::ffi::{c_char, c_int, CStr};

use crate::cargs::CPath;
use core::fmt::Write as _;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*,
};
use std::ffi::CString;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use fmcache_core::config::Config;
use fmcache_core::journal::{self, Kind};
use fmcache_core::path::{self, show, PathBuf};
use fmcache_core::recdir::{RecDir, Refusal};
use fmcache_core::sys::strerror;
use rustix::fs::OFlags;

/// Journals a process can open in its life: the first, one per fork, and
/// one each time the program closes or takes over the descriptor (a
/// thread that loses the race to reopen spends one too).
const SLOTS: usize = 64;
/// Longest journal name: `t.` + host (64) + pid, seconds, nanoseconds.
const NAME_MAX: usize = 128;

/// One journal this process opened. Filled before it is published through
/// `Recorder::current` and never changed after.
struct Journal {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    name: [AtomicU8; NAME_MAX],
    len: AtomicUsize,
}

impl Journal {
    const fn empty() -> Journal {
        Journal {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            name: [const { AtomicU8::new(0) }; NAME_MAX],
            len: AtomicUsize::new(0),
        }
    }

    /// Whether descriptor `fd` still is this journal: the program may have
    /// closed it (close_range, closefrom, a loop closing inherited
    /// descriptors) and reused the number for a file of its own.
    fn is_ours(&self) -> bool {
        let fd = self.fd.load(Relaxed);
        if fd < 0 {
            return false;
        }
        // SAFETY: the number may have been closed or reused under us; fstat
        // only reads the identity of whatever it names now (EBADF if
        // nothing), and that identity is what we check.
        let st = rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) });
        matches!(st, Ok(st) if st.st_dev == self.dev.load(Relaxed) && st.st_ino == self.ino.load(Relaxed))
    }
}

pub struct Recorder {
    pub cfg: Config,
    /// Scope hints, journaled again in every new journal (any journal
    /// may be merged alone).
    hints: Vec<(Kind, Vec<u8>)>,
    /// `<cache>.rec`, for reopening from a hook without allocating.
    dir: CString,
    journals: [Journal; SLOTS],
    /// The journal records go to: index into `journals` + 1, 0 for none.
    current: AtomicUsize,
    /// Next unused slot.
    next: AtomicUsize,
    /// Recording stopped after the journal was lost (said once).
    stopped: AtomicBool,
}

/// Programs close and reuse low numbers; ours sits far above them.
const SEEN_SLOTS: usize = 1 << 15;
static SEEN: [AtomicU64; SEEN_SLOTS] = [const { AtomicU64::new(0) }; SEEN_SLOTS];
/// Repeats of the probe in the same slot of SEEN, journaled at exit.
static REPEATS: [AtomicU32; SEEN_SLOTS] = [const { AtomicU32::new(0) }; SEEN_SLOTS];

/// Why no journal could be opened.
enum OpenError {
    Dir(Refusal),
    Create(rustix::io::Errno),
    Full,
}

impl Recorder {
    pub fn start(cfg: Config) -> Result<Recorder, String> {
        let dir = cfg.record_dir();
        // Created with its parents here; a reopen later creates it alone.
        RecDir::open_creating(&dir).map_err(|e| format!("{}: {e}", show(&dir)))?;
        let r = Recorder {
            hints: scope_hints(&cfg),
            cfg,
            dir: CString::new(dir).map_err(|_| strerror(libc::EINVAL))?,
            journals: [const { Journal::empty() }; SLOTS],
            current: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        };
        let slot = r.open_journal().map_err(|e| r.describe(&e))?;
        r.current.store(slot + 1, Release);
        r.note_scope_hints();
        Ok(r)
    }

    /// Journals every loaded object's path as a scope hint (its prefix is
    /// software), through dl_iterate_phdr (this namespace's objects).
    fn note_loaded_objects(&self) {
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: ld.so passes a valid info for the call; `data` is the
            // recorder handed to dl_iterate_phdr below.
            let (info, rec) = unsafe { (&*info, &*(data as *const Recorder)) };
            if !info.dlpi_name.is_null() {
                // SAFETY: dlpi_name is a NUL-terminated string owned by ld.so.
                let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
                // Not the library itself: it is never served.
                let ours = crate::carry::self_path() == Some(name);
                if name.first() == Some(&b'/') && !ours {
                    rec.note_key(Kind::Prefix, name);
                }
            }
            0
        }
        // SAFETY: `each` only reads what ld.so passes and `self` outlives
        // the call.
        unsafe { libc::dl_iterate_phdr(Some(each), self as *const Recorder as *mut libc::c_void) };
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
    fn describe(&self, e: &OpenError) -> String {
        let dir = show(self.dir.to_bytes());
        match e {
            OpenError::Dir(r) => format!("{dir}: {r}"),
            OpenError::Create(e) => format!("journal in {dir}: {e}"),
            OpenError::Full => format!("journal in {dir}: {SLOTS} journals opened already"),
        }
    }

    /// Creates a journal in the checked record directory, locked for as
    /// long as this process lives (the lock is how mergers tell it is
    /// alive), and only then gives it the name mergers look for. Returns
    /// its slot, not yet current. No allocation: runs in hooks.
    fn open_journal(&self) -> Result<usize, OpenError> {
        let dir = RecDir::open(&self.dir, true).map_err(OpenError::Dir)?;
        let mut tmp = Name::default();
        let host = rustix::system::uname();
        let pid = rustix::process::getpid().as_raw_nonzero();
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let _ = tmp.write_str("t.");
        for &b in host.nodename().to_bytes().iter().take(64) {
            tmp.push(if b == b'/' { b'_' } else { b });
        }
        let _ = write!(tmp, ".{pid}.{}.{}", now.tv_sec, now.tv_nsec);
        let mut fin = Name::default();
        fin.push(fmcache_core::merge::JOURNAL_PREFIX[0]);
        for &b in &tmp.as_bytes()[1..] {
            fin.push(b);
        }
        let (Some(tmp_c), Some(fin_c)) = (tmp.as_cstr(), fin.as_cstr()) else {
            return Err(OpenError::Create(rustix::io::Errno::NAMETOOLONG));
        };
        let fd = dir
            .create(tmp_c, OFlags::WRONLY | OFlags::APPEND, 0o600)
            .map_err(OpenError::Create)?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .map_err(OpenError::Create)?;
        let fd = fmcache_core::sys::out_of_the_way(fd);
        let st = rustix::fs::fstat(&fd).map_err(OpenError::Create)?;
        if let Err(e) = dir.rename(tmp_c, fin_c) {
            let _ = dir.unlink(tmp_c);
            return Err(OpenError::Create(e));
        }
        let slot = self.next.fetch_add(1, AcqRel);
        let Some(j) = self.journals.get(slot) else {
            let _ = dir.unlink(fin_c);
            return Err(OpenError::Full);
        };
        j.dev.store(st.st_dev, Relaxed);
        j.ino.store(st.st_ino, Relaxed);
        for (d, &b) in j.name.iter().zip(fin.as_bytes()) {
            d.store(b, Relaxed);
        }
        j.len.store(fin.len, Relaxed);
        j.fd.store(fd.into_raw_fd(), Release);
        Ok(slot)
    }

    /// Records one probe of `p` (relative to `dirfd`).
    pub fn note(&self, kind: Kind, dirfd: c_int, p: CPath<'_>) {
        let mut key = PathBuf::new();
        if !crate::keys::resolve(dirfd, p, &mut key) {
            return;
        }
        self.note_key(kind, key.as_bytes());
    }

    pub fn note_key(&self, kind: Kind, key: &[u8]) {
        let h = journal::probe_hash(kind, key);
        let mut slot = (h as usize) & (SEEN_SLOTS - 1);
        for _ in 0..16 {
            match SEEN[slot].compare_exchange(0, h, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(v) if v == h => {
                    REPEATS[slot].fetch_add(1, Relaxed);
                    return;
                }
                Err(_) => slot = (slot + 1) & (SEEN_SLOTS - 1),
            }
        }
        if self.write_record(kind, key) {
            crate::counters::counters().recorded.fetch_add(1, Relaxed);
        }
    }

    /// Appends one record to the current journal; false if it was not
    /// written (too long, or no journal).
    fn write_record(&self, kind: Kind, payload: &[u8]) -> bool {
        let mut rec = [0u8; journal::MAX_RECORD];
        let n = journal::encode(kind, payload, &mut rec);
        if n == 0 {
            return false;
        }
        // The identity check costs one fstat per new record; the number is
        // ours only while it names our journal (see docs/reliability.md).
        // Two turns: the second one writes to the journal just reopened.
        for _ in 0..2 {
            let cur = self.current.load(Acquire);
            let Some(j) = cur.checked_sub(1).and_then(|i| self.journals.get(i)) else {
                return false;
            };
            if j.is_ours() {
                let fd = j.fd.load(Relaxed);
                // SAFETY: just checked to be our journal.
                let _ = rustix::io::write(unsafe { BorrowedFd::borrow_raw(fd) }, &rec[..n]);
                return true;
            }
            // A vfork child shares our memory but not our descriptors: it
            // must not publish a journal only it holds.
            if !crate::owner::is_owner() {
                return false;
            }
            self.reopen(cur);
        }
        false
    }

    /// The program closed or took over the journal's descriptor: a new
    /// journal becomes current (the old one, unlocked, is merged as an
    /// orphan with its records). Threads racing here each open one; the
    /// first to publish wins and the others discard theirs.
    fn reopen(&self, lost: usize) {
        match self.open_journal() {
            Ok(slot) => {
                if self
                    .current
                    .compare_exchange(lost, slot + 1, AcqRel, Acquire)
                    .is_err()
                {
                    self.discard(slot);
                }
            }
            Err(e) => {
                if self
                    .current
                    .compare_exchange(lost, 0, AcqRel, Acquire)
                    .is_ok()
                    && !self.stopped.swap(true, AcqRel)
                {
                    let fd = lost
                        .checked_sub(1)
                        .and_then(|i| self.journals.get(i))
                        .map_or(-1, |j| j.fd.load(Relaxed));
                    warn!(
                        "{}: the program closed or reused the journal's descriptor {fd} and it cannot be reopened: {}; recording stops",
                        show(&self.cfg.cache),
                        self.describe(&e)
                    );
                }
            }
        }
    }

    /// Closes and removes a journal that never became current.
    fn discard(&self, slot: usize) {
        let j = &self.journals[slot];
        let fd = j.fd.swap(-1, AcqRel);
        if fd >= 0 {
            // SAFETY: opened by open_journal and never published.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if let Ok(dir) = RecDir::open(&self.dir, false) {
            let mut name = Name::default();
            for b in j.name.iter().take(j.len.load(Relaxed)) {
                name.push(b.load(Relaxed));
            }
            if let Some(c) = name.as_cstr() {
                let _ = dir.unlink(c);
            }
        }
    }

    /// Closes the journal in `cur` if its descriptor still is ours (never
    /// a number the program took over).
    fn close_if_ours(&self, cur: usize) {
        let Some(j) = cur.checked_sub(1).and_then(|i| self.journals.get(i)) else {
            return;
        };
        if j.is_ours() {
            let fd = j.fd.swap(-1, AcqRel);
            // SAFETY: checked to be our journal just above.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    /// In a forked child: a journal of its own (the parent's lock and
    /// records stay the parent's).
    pub fn after_fork(&self) {
        for (s, r) in SEEN.iter().zip(REPEATS.iter()) {
            s.store(0, Relaxed);
            r.store(0, Relaxed);
        }
        let old = self.current.load(Acquire);
        match self.open_journal() {
            Ok(slot) => self.current.store(slot + 1, Release),
            Err(e) => {
                warn!("cannot record in child process: {}", self.describe(&e));
                self.current.store(0, Release);
            }
        }
        self.close_if_ours(old);
        // Each journal carries the scope hints: it may be merged alone.
        self.note_scope_hints();
    }

    /// Journals how often each probe was repeated (for `fmcache report`:
    /// the counts of calls, not only of paths).
    fn note_repeats(&self) {
        for (s, r) in SEEN.iter().zip(REPEATS.iter()) {
            let n = r.swap(0, Relaxed);
            if n > 0 {
                let payload = journal::repeats_payload(s.load(Relaxed), n);
                self.write_record(Kind::Repeats, &payload);
            }
        }
    }

    /// Merges this process's journal (and orphans) into the cache.
    pub fn finish(&self) {
        // What the loader loaded names the software (scope): journaled
        // here too, since the auditor copy's journal, which saw the
        // searches, may be merged after this one.
        if self.current.load(Acquire) != 0 {
            self.note_loaded_objects();
            self.note_repeats();
            if !crate::carry::is_auditor() {
                self.write_record(Kind::Process, b"");
            }
        }
        let cur = self.current.swap(0, AcqRel);
        let Some(j) = cur.checked_sub(1).and_then(|i| self.journals.get(i)) else {
            return;
        };
        // Our journal only if the descriptor still is it; a lost one is
        // unlocked and merged as an orphan.
        let own = j.is_ours().then(|| {
            let mut p = self.dir.to_bytes().to_vec();
            p.push(b'/');
            p.extend(
                j.name
                    .iter()
                    .take(j.len.load(Relaxed))
                    .map(|b| b.load(Relaxed)),
            );
            p
        });
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if let Err(e) = fmcache_core::merge::merge(&self.cfg, own.as_deref(), uid, gid) {
            warn!("{}: merge failed: {e}", show(&self.cfg.cache));
        }
        // Closing releases our lock only after the journal is gone.
        self.close_if_ours(cur);
    }
}

/// A journal name, NUL-terminated, on the stack.
struct Name {
    buf: [u8; NAME_MAX + 1],
    len: usize,
}

impl Default for Name {
    fn default() -> Self {
        Name {
            buf: [0; NAME_MAX + 1],
            len: 0,
        }
    }
}

impl Name {
    fn push(&mut self, b: u8) {
        if self.len < NAME_MAX && b != 0 {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// `None` if the name was cut.
    fn as_cstr(&self) -> Option<&CStr> {
        (self.len < NAME_MAX)
            .then(|| CStr::from_bytes_with_nul(&self.buf[..=self.len]).ok())
            .flatten()
    }
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}
