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

macro_rules! exec_hooks {
    ($(fn $name:ident($($a:ident: $t:ty),*) -> $r:ty, env = $env:ident;)*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
                let mut patched = Patched::new();
                // SAFETY: the caller's envp is what libc would receive.
                let $env = unsafe { patched.apply($env) };
                match $name::real() {
                    // SAFETY: the caller's arguments, envp possibly patched.
                    Some(f) => unsafe { f($($a),*) },
                    None => {
                        crate::errno::set(libc::ENOSYS);
                        -1
                    }
                }
            }

            /// The real function: one resolution shared by the hook and
            /// `resolve` (a module beside the function of the same name).
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                pub fn real() -> Option<unsafe extern "C" fn($($t),*) -> $r> {
                    real!($name: fn($($t),*) -> $r)
                }
            }
        )*

        /// Resolves the real functions while allocation is still safe.
        pub fn resolve() {
            $( let _ = $name::real(); )*
        }
    };
}

exec_hooks! {
    fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int, env = envp;
    fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int, env = envp;
    fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int, env = envp;
    fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int, env = envp;
    fn posix_spawn(
        pid: *mut libc::pid_t,
        path: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t,
        attr: *const libc::posix_spawnattr_t,
        argv: Argv,
        envp: Argv
    ) -> c_int, env = envp;
    fn posix_spawnp(
        pid: *mut libc::pid_t,
        file: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t,
        attr: *const libc::posix_spawnattr_t,
        argv: Argv,
        envp: Argv
    ) -> c_int, env = envp;
}
