//! Process life: `_exit` (which skips atexit and our destructor) finishes
//! recording too; a forked child gets its own journal and counters.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};

/// The process that owns the state. A vfork child shares our memory but
/// has another pid, and must not touch anything before it execs or exits.
static OWNER: AtomicI32 = AtomicI32::new(0);
static FINISHED: AtomicBool = AtomicBool::new(false);

pub fn set_owner() {
    OWNER.store(rustix::process::getpid().as_raw_nonzero().get(), Relaxed);
}

pub fn is_owner() -> bool {
    OWNER.load(Relaxed) == rustix::process::getpid().as_raw_nonzero().get()
}

/// Merges the journal and writes the counters, once per process.
pub fn finish() {
    if !is_owner() || FINISHED.swap(true, AcqRel) {
        return;
    }
    let saved = crate::errno::get();
    let _ = std::panic::catch_unwind(|| {
        if let crate::state::Mode::Record(r) = crate::state::mode() {
            r.finish();
        }
        crate::stats::write();
    });
    crate::errno::set(saved);
}

pub extern "C" fn after_fork_child() {
    set_owner();
    FINISHED.store(false, Relaxed);
    crate::state::COUNTERS.reset();
    if let crate::state::Mode::Record(r) = crate::state::mode() {
        r.after_fork();
    }
    if let Some(s) = crate::state::server() {
        s.own_trust().after_fork();
    }
}

#[no_mangle]
pub unsafe extern "C" fn _exit(status: libc::c_int) -> ! {
    finish();
    // SAFETY: the raw exit_group(2): what libc's _exit does.
    loop {
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

#[no_mangle]
pub unsafe extern "C" fn _Exit(status: libc::c_int) -> ! {
    unsafe { _exit(status) }
}
