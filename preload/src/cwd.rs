//! The current directory, tracked so relative paths become cache keys
//! without a getcwd(2) per probe. Updated after chdir/fchdir; readers use
//! a sequence counter and never block.
//!
//! The tracked directory is the one of the threads that share the
//! process's fs state (cwd, root). A thread that stopped sharing it
//! (`unshare(CLONE_FS)`, `setns`, a `clone` child without CLONE_FS) is
//! noted by thread id: there the tracked directory is never used (relative
//! paths and getcwd pass through) and its chdir changes nothing here.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use fmcache_core::path::{PathBuf, PATH_MAX};

const WORDS: usize = PATH_MAX / 8;
static WORD: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
static LEN: AtomicUsize = AtomicUsize::new(0);
static SEQ: AtomicU32 = AtomicU32::new(0);
/// False until known, and while two writers raced.
static VALID: AtomicBool = AtomicBool::new(false);

/// Threads with fs state of their own: thread ids, 0 = free. A full table
/// (or a tid we could not note) makes every thread pass through: correct,
/// only slower.
const OWN: usize = 64;
static OWN_TIDS: [AtomicI32; OWN] = [const { AtomicI32::new(0) }; OWN];
/// Entries ever claimed in OWN_TIDS: zero keeps the common case free of
/// any system call.
static OWN_COUNT: AtomicUsize = AtomicUsize::new(0);
static OWN_OVERFLOW: AtomicBool = AtomicBool::new(false);

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Notes that the calling thread no longer shares the process's fs state.
/// A thread id that is reused later stays noted: its relative paths then
/// pass through, which is always correct.
pub fn own_fs() {
    let saved = crate::errno::get();
    note_own_fs();
    crate::errno::set(saved);
}

fn note_own_fs() {
    let tid = gettid();
    if own_fs_here() {
        return;
    }
    for pass in 0..2 {
        for slot in &OWN_TIDS {
            if slot.compare_exchange(0, tid, AcqRel, Relaxed).is_ok() {
                OWN_COUNT.fetch_add(1, Release);
                return;
            }
        }
        if pass == 0 {
            prune();
        }
    }
    OWN_OVERFLOW.store(true, Release);
}

/// Frees the slots of threads that are gone: neither a thread of ours
/// (tgkill finds none) nor a vfork child still sharing our memory (kcmp).
/// A vfork child that chdirs before exec (Python's subprocess with `cwd=`
/// does) takes a slot; without this, 64 of them would make every thread
/// pass through.
fn prune() {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    for slot in &OWN_TIDS {
        let tid = slot.load(Acquire);
        if tid == 0 {
            continue;
        }
        // SAFETY: signal 0 only checks that the thread exists.
        let ours = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) } == 0;
        const KCMP_VM: libc::c_long = 1;
        // SAFETY: kcmp(2) only compares; no memory is passed.
        let shares_vm = unsafe { libc::syscall(libc::SYS_kcmp, pid, tid, KCMP_VM, 0, 0) } == 0;
        if !ours && !shares_vm {
            let _ = slot.compare_exchange(tid, 0, AcqRel, Relaxed);
        }
    }
}

/// No thread uses the tracked directory from now on (a thread or child we
/// could not note).
pub fn own_fs_everywhere() {
    OWN_OVERFLOW.store(true, Release);
}

/// In a forked child (one thread, a copy of the forking thread's fs
/// state, which may have been one of its own): the kernel's cwd is the
/// tracked one again.
pub fn after_fork() {
    for slot in &OWN_TIDS {
        slot.store(0, Relaxed);
    }
    OWN_COUNT.store(0, Release);
    OWN_OVERFLOW.store(false, Release);
    // A parent thread may have been half-way through a refresh.
    SEQ.fetch_and(!1, Release);
    refresh();
}

/// Whether the calling thread has fs state of its own (see [`own_fs`]).
pub fn own_fs_here() -> bool {
    if OWN_OVERFLOW.load(Acquire) {
        return true;
    }
    let n = OWN_COUNT.load(Acquire);
    if n == 0 {
        return false;
    }
    let tid = gettid();
    OWN_TIDS.iter().any(|s| s.load(Acquire) == tid)
}

/// Re-reads the directory from the kernel (after init, chdir, fchdir). A
/// thread with its own fs state leaves the tracked directory alone.
pub fn refresh() {
    if own_fs_here() {
        return;
    }
    let mut buf = [0u8; PATH_MAX];
    // SAFETY: raw getcwd(2) into our buffer; not the libc wrapper we hook.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    let s = SEQ.load(Relaxed);
    if s % 2 == 1 || SEQ.compare_exchange(s, s + 1, Acquire, Relaxed).is_err() {
        VALID.store(false, Release);
        return;
    }
    // getcwd(2) returns the length with its NUL; "(unreachable)" paths
    // do not start with '/'.
    let ok = n > 1 && buf[0] == b'/';
    if ok {
        let len = n as usize - 1;
        for (i, w) in WORD.iter().enumerate().take(len.div_ceil(8)) {
            let mut b = [0u8; 8];
            let end = (i * 8 + 8).min(len);
            b[..end - i * 8].copy_from_slice(&buf[i * 8..end]);
            w.store(u64::from_le_bytes(b), Relaxed);
        }
        LEN.store(len, Relaxed);
    }
    VALID.store(ok, Relaxed);
    SEQ.store(s + 2, Release);
}

/// Copies the current directory into `out`; `false` if unknown or if the
/// calling thread's cwd is not the tracked one.
pub fn get(out: &mut PathBuf) -> bool {
    if own_fs_here() {
        return false;
    }
    for _ in 0..4 {
        let s1 = SEQ.load(Acquire);
        if s1 % 2 == 1 || !VALID.load(Acquire) {
            continue;
        }
        let len = LEN.load(Relaxed);
        out.clear();
        let mut ok = len < PATH_MAX;
        for w in WORD.iter().take(len.div_ceil(8)) {
            let b = w.load(Relaxed).to_le_bytes();
            let take = (len - out.as_bytes().len()).min(8);
            ok &= out.push(&b[..take]);
        }
        if ok && SEQ.load(Acquire) == s1 {
            return true;
        }
    }
    false
}
