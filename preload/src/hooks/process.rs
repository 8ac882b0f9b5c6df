//! Process life: `_exit` (which skips atexit and our destructor) finishes
//! recording too; a forked child gets its own journal and counters;
//! threads and children that stop sharing our fs state (unshare, setns,
//! clone without CLONE_FS, threads they create) stop using the tracked
//! cwd, and a new root or mount namespace stops serving.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use libc::c_int;

use crate::owner::{is_owner, run_auditor_hook, set_owner, PEER_AFTER_FORK, PEER_FINISH};

static FINISHED: AtomicBool = AtomicBool::new(false);

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
    run_auditor_hook(PEER_AFTER_FORK);
    set_owner();
    let saved = crate::errno::get();
    crate::cwd::after_fork();
    crate::errno::set(saved);
    FINISHED.store(false, Relaxed);
    crate::stats::after_fork();
    if let crate::state::Mode::Record(r) = crate::state::mode() {
        r.after_fork();
    }
    if let Some(s) = crate::state::server() {
        s.own_trust().after_fork();
    }
}

/// Auditor copy: what it publishes into the preload copy's AUDITOR_HOOKS.
pub fn own_hooks() -> [usize; 2] {
    [
        peer_finish as extern "C" fn() as usize,
        after_fork_child as extern "C" fn() as usize,
    ]
}

extern "C" fn peer_finish() {
    finish();
}

#[no_mangle]
pub unsafe extern "C" fn _exit(status: libc::c_int) -> ! {
    if is_owner() {
        run_auditor_hook(PEER_FINISH);
    }
    finish();
    loop {
        // SAFETY: the raw exit_group(2): what libc's _exit does.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

#[no_mangle]
pub unsafe extern "C" fn _Exit(status: libc::c_int) -> ! {
    // SAFETY: `_exit` has no preconditions.
    unsafe { _exit(status) }
}

/// Threads and children that stop sharing the process's fs state (cwd and
/// root) must not use the tracked cwd (`cwd::own_fs`); a root or mount
/// namespace of its own makes every cached path unreliable, so serving
/// stops.
fn unshare_common(flags: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let r = real();
    if r == 0 {
        let saved = crate::errno::get();
        if flags & libc::CLONE_NEWNS != 0 {
            crate::state::distrust_everything();
        }
        if flags & (libc::CLONE_FS | libc::CLONE_NEWNS) != 0 {
            crate::cwd::own_fs();
        }
        crate::errno::set(saved);
    }
    r
}

/// setns into a mount namespace (nstype 0 may be one) moves root and cwd.
fn setns_common(nstype: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let r = real();
    if r == 0 && (nstype == 0 || nstype & libc::CLONE_NEWNS != 0) {
        crate::state::distrust_everything();
        crate::cwd::own_fs();
    }
    r
}

fn chroot_common(real: impl FnOnce() -> c_int) -> c_int {
    let r = real();
    if r == 0 {
        crate::state::distrust_everything();
    }
    r
}

/// A thread or child about to start: the function and argument it was
/// given, held while it starts (no allocation: a raw clone child sharing
/// our memory must not touch malloc).
struct Pending {
    busy: AtomicBool,
    func: AtomicUsize,
    arg: AtomicUsize,
}

const PENDING: usize = 32;
static STARTS: [Pending; PENDING] = [const {
    Pending {
        busy: AtomicBool::new(false),
        func: AtomicUsize::new(0),
        arg: AtomicUsize::new(0),
    }
}; PENDING];

/// Claims a slot for (func, arg); `None` when all are in use.
fn park(func: usize, arg: usize) -> Option<usize> {
    let i = STARTS.iter().position(|s| {
        s.busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
    })?;
    STARTS[i].func.store(func, Relaxed);
    STARTS[i].arg.store(arg, Relaxed);
    Some(i)
}

/// Takes (func, arg) out of slot `i` and frees it.
fn unpark(i: usize) -> (usize, usize) {
    let s = &STARTS[i];
    let out = (s.func.load(Relaxed), s.arg.load(Relaxed));
    s.busy.store(false, Release);
    out
}

type CloneFn = extern "C" fn(*mut c_void) -> c_int;
type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;

/// First code of a clone child that has fs state of its own.
extern "C" fn clone_start(slot: *mut c_void) -> c_int {
    let (f, arg) = unpark(slot as usize);
    crate::cwd::own_fs();
    // SAFETY: `f` is the function the caller gave clone().
    let f: CloneFn = unsafe { core::mem::transmute::<usize, CloneFn>(f) };
    f(arg as *mut c_void)
}

/// First code of a thread created by a thread with fs state of its own
/// (it shares that thread's, not the process's).
extern "C" fn thread_start(slot: *mut c_void) -> *mut c_void {
    let (f, arg) = unpark(slot as usize);
    crate::cwd::own_fs();
    // SAFETY: `f` is the start routine the caller gave pthread_create().
    let f: StartFn = unsafe { core::mem::transmute::<usize, StartFn>(f) };
    f(arg as *mut c_void)
}

/// glibc's clone(3) wrapper, called directly by programs. A child shares
/// the tracked cwd only if it shares both our fs state and our memory,
/// and we do (its parent is not a thread with an fs of its own). A child
/// sharing our fs state but not our memory can chdir for us unseen: no
/// thread uses the tracked cwd from then on.
fn clone_common(
    f: Option<CloneFn>,
    flags: c_int,
    arg: *mut c_void,
    real: impl FnOnce(Option<CloneFn>, *mut c_void) -> c_int,
) -> c_int {
    let shares =
        flags & libc::CLONE_FS != 0 && flags & libc::CLONE_VM != 0 && !crate::cwd::own_fs_here();
    if flags & libc::CLONE_FS != 0 && flags & libc::CLONE_VM == 0 {
        // The child can move our cwd without our memory seeing it.
        crate::cwd::own_fs_everywhere();
    }
    let Some(func) = f.filter(|_| !shares) else {
        return real(f, arg);
    };
    let Some(slot) = park(func as usize, arg as usize) else {
        // No slot: this child cannot be told apart; nobody uses the
        // tracked cwd from now on.
        crate::cwd::own_fs_everywhere();
        return real(f, arg);
    };
    let r = real(Some(clone_start), slot as *mut c_void);
    // A child with a copy of our memory frees its copy of the slot; ours
    // is freed here (as on failure). One sharing our memory frees it.
    if r == -1 || flags & libc::CLONE_VM == 0 {
        let saved = crate::errno::get();
        unpark(slot);
        crate::errno::set(saved);
    }
    r
}

fn pthread_create_common(
    f: Option<StartFn>,
    arg: *mut c_void,
    real: impl FnOnce(Option<StartFn>, *mut c_void) -> c_int,
) -> c_int {
    let Some(func) = f.filter(|_| crate::cwd::own_fs_here()) else {
        return real(f, arg);
    };
    let Some(slot) = park(func as usize, arg as usize) else {
        crate::cwd::own_fs_everywhere();
        return real(f, arg);
    };
    let r = real(Some(thread_start), slot as *mut c_void);
    if r != 0 {
        unpark(slot);
    }
    r
}

hook! {
    fn unshare(flags: c_int) -> c_int, real => unshare_common(flags, real);
    fn setns(fd: c_int, nstype: c_int) -> c_int, real => { let _ = fd; setns_common(nstype, real) };
    fn chroot(p: *const libc::c_char) -> c_int, real => { let _ = p; chroot_common(real) };
    // The variadic tail (ptid, tls, ctid) is forwarded as received: the
    // x86-64 and aarch64 ABIs pass it in the same registers.
    fn clone(
        f: Option<CloneFn>,
        stack: *mut c_void,
        flags: c_int,
        arg: *mut c_void,
        ptid: *mut libc::pid_t,
        tls: *mut c_void,
        ctid: *mut libc::pid_t,
    ) -> c_int, _real => clone_common(f, flags, arg, |f, arg| {
        // The caller's arguments, the function possibly ours.
        call_hooked_real!(clone(f, stack, flags, arg, ptid, tls, ctid))
    });
    fn pthread_create(
        t: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        f: Option<StartFn>,
        arg: *mut c_void,
    ) -> c_int, _real => pthread_create_common(f, arg, |f, arg| {
        // pthread functions return the error number, not -1 and errno.
        match pthread_create::real() {
            // SAFETY: the caller's arguments, start routine possibly ours.
            Some(real) => unsafe { real(t, attr, f, arg) },
            None => libc::ENOSYS,
        }
    });
}
