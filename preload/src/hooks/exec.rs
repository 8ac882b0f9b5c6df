//! The exec family and posix_spawn: an explicit environment that asks for
//! the library (DLFM_OP, LD_PRELOAD) gets it in LD_AUDIT too, so the new
//! program is audited from its first library load. The `environ`-based
//! calls (execv, execvp, execl, system, popen) need no hook: the
//! constructor already put LD_AUDIT into `environ`.
//!
//! These may run in a vfork child that shares the parent's memory: they
//! only read the arguments and build the new array on their own stack.
//! The real functions are resolved in the constructor (dlsym allocates).

use core::ffi::{c_char, c_int};

use crate::carry::Patched;

type Argv = *const *const c_char;

/// The real call with the caller's envp, given LD_AUDIT when it asks for
/// the library (built on this frame's stack: a vfork child may run it).
fn with_audit(envp: Argv, call: impl FnOnce(Argv) -> c_int) -> c_int {
    let mut patched = Patched::new();
    // SAFETY: the caller's envp is what libc would receive.
    let envp = unsafe { patched.apply(envp) };
    call(envp)
}

hook! {
    fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(execve(path.as_ptr(), argv, envp)));
    fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(execvpe(file.as_ptr(), argv, envp)));
    fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(fexecve(fd, argv, envp)));
    fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(execveat(dirfd, path.as_ptr(), argv, envp, flags)));
    fn posix_spawn(
        pid: *mut libc::pid_t,
        path: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t,
        attr: *const libc::posix_spawnattr_t,
        argv: Argv,
        envp: Argv,
    ) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(posix_spawn(pid, path.as_ptr(), actions, attr, argv, envp)));
    fn posix_spawnp(
        pid: *mut libc::pid_t,
        file: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t,
        attr: *const libc::posix_spawnattr_t,
        argv: Argv,
        envp: Argv,
    ) -> c_int, _real =>
        with_audit(envp, |envp| call_hooked_real!(posix_spawnp(pid, file.as_ptr(), actions, attr, argv, envp)));
}
