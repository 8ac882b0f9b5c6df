//! The process that owns this copy's state, and the auditor copy's exit
//! and fork handlers the preload copy runs for it. A leaf: the recorder,
//! the trust state and the hooks all ask it, and it asks none of them.

use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};

/// The process that owns the state. A vfork child shares our memory but
/// has another pid, and must not touch anything before it execs or exits.
static OWNER: AtomicI32 = AtomicI32::new(0);

pub fn set_owner() {
    OWNER.store(rustix::process::getpid().as_raw_nonzero().get(), Relaxed);
}

pub fn is_owner() -> bool {
    OWNER.load(Relaxed) == rustix::process::getpid().as_raw_nonzero().get()
}

/// Preload copy: the auditor copy's `finish` and `after_fork_child`,
/// written by the auditor in `la_objopen` (`trust::note_peer`). The
/// auditor copy lives in a namespace with its own libc: the program's
/// `fork` runs only the handlers registered with the program's libc, and
/// `_exit` resolves to this copy's hook, so this copy runs the auditor's
/// too (else a shell ending in `_exit` left the auditor's journal
/// unmerged, and a forked child's auditor wrote to its parent's).
pub static AUDITOR_HOOKS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
pub const PEER_FINISH: usize = 0;
pub const PEER_AFTER_FORK: usize = 1;

/// Runs one of the auditor copy's handlers, if it wrote them.
pub fn run_auditor_hook(which: usize) {
    let f = AUDITOR_HOOKS[which].load(Acquire);
    if f != 0 {
        // SAFETY: written by the auditor copy of this same file as one of
        // its `extern "C" fn()` (hooks::process::own_hooks); that copy
        // stays mapped for the process's life (ld.so never unloads an
        // auditor).
        let f: extern "C" fn() = unsafe { core::mem::transmute(f) };
        f();
    }
}
