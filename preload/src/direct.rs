//! Direct starts: `DLFM_OP=... LD_PRELOAD=libfmcache.so python app.py`.
//!
//! ld.so reads `LD_AUDIT` only at exec, so a process started with
//! `LD_PRELOAD` alone is not audited: its pilot records none of the
//! loader's searches and its production run leaves every later `dlopen`
//! (numpy's and scipy's extension modules and their libraries) to ld.so
//! on the shared file system. The preload copy's constructor therefore
//! executes the same program once more, same pid, same arguments, with
//! `LD_AUDIT` added (the environment the exec hooks give every child).
//! Only what the kernel and ld.so did for the first image (the
//! executable's own `DT_NEEDED` search) is left unserved.
//!
//! Why re-exec rather than loading the auditor late: the audit interface
//! exists only for auditors named at exec (glibc has no way to add one to
//! a running process), and re-implementing ld.so's search in `dlopen`
//! hooks would still miss DT_NEEDED searches made inside ld.so. The cost
//! is one exec of an image whose libraries are already in the page cache
//! (bench/results/direct.md).
//!
//! The new image has `LD_AUDIT` naming the library, so it never executes
//! itself again, even if ld.so could not load the auditor.

use core::ffi::{c_char, CStr};

/// Re-executes the process with the auditor, when it was started with
/// `LD_PRELOAD` alone and `DLFM_OP` on. Returns only if it does not (or
/// the exec failed: the process then runs as before, unaudited).
/// Constructor of the preload copy only, before anything is recorded,
/// served or printed.
///
/// # Safety
/// `argv` is the NULL-terminated argument vector ld.so passed to the
/// constructor (or NULL).
pub unsafe fn reexec_audited(argv: *const *const c_char) {
    if argv.is_null() || crate::carry::is_auditor() {
        return;
    }
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return;
    }
    let Some(lib) = crate::carry::self_path() else {
        return;
    };
    let get = |k: &str| std::env::var_os(k).map(std::os::unix::ffi::OsStringExt::into_vec);
    let (op, preload, audit) = (get("DLFM_OP"), get("LD_PRELOAD"), get("LD_AUDIT"));
    if !fmcache_core::carry::audit_missing(op.as_deref(), preload.as_deref(), audit.as_deref(), lib)
    {
        return;
    }
    // SAFETY: `argv` is the constructor's, NULL-terminated.
    let Some((path, args)) = (unsafe { what_to_execute(argv) }) else {
        return;
    };
    let saved = crate::errno::get();
    // SAFETY: the exec hook patches `environ` (LD_AUDIT and the settings
    // handed to children, built on its stack) and calls the real execve;
    // path and argv are C strings valid for the call.
    unsafe {
        crate::hooks::exec::execve(path, args, environ_ptr());
    }
    // Still here: the exec failed; run unaudited, errno as it was.
    crate::errno::set(saved);
}

extern "C" {
    static environ: *const *const c_char;
}

fn environ_ptr() -> *const *const c_char {
    // SAFETY: libc's environ, read once (single-threaded constructor).
    unsafe { environ }
}

/// Most arguments searched for a script's path (the kernel puts the
/// interpreter and at most one optional argument before it).
const SCRIPT_AT_MOST: usize = 2;

/// The path and arguments that start this image again with the kernel's
/// view unchanged: the path is `AT_EXECFN` (the name the program was
/// executed by), so `/proc/self/comm`, `AT_EXECFN` and the path walk are
/// as before. A binary gets `argv` as it is. A script (`#!`): the kernel
/// replaced argv[0] with the interpreter (and its optional argument)
/// followed by the script's path, so executing the script with the
/// arguments from that path on gives the same `argv` again. Anything else
/// (fexecve, a script named by descriptor): `None`, and the process runs
/// unaudited as before (`/proc/self/exe` would rename the process to
/// `exe`).
///
/// # Safety
/// `argv` is a non-NULL, NULL-terminated argument vector.
unsafe fn what_to_execute(
    argv: *const *const c_char,
) -> Option<(*const c_char, *const *const c_char)> {
    // SAFETY: getauxval has no preconditions; AT_EXECFN, when present,
    // is a C string the kernel put on the stack.
    let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const c_char;
    if execfn.is_null() {
        return None;
    }
    // SAFETY: a C string (above).
    let name = unsafe { CStr::from_ptr(execfn) }.to_bytes();
    if name.starts_with(b"/dev/fd/") || name.starts_with(b"/proc/") {
        return None;
    }
    // The script's path, if the kernel ran an interpreter for it.
    for i in 1..=SCRIPT_AT_MOST {
        // SAFETY: entries are read up to the terminating NULL only.
        let a = unsafe { *argv.add(i - 1) };
        if a.is_null() {
            break;
        }
        // SAFETY: as above; argv[i] exists since argv[i - 1] is not NULL.
        let b = unsafe { *argv.add(i) };
        if b.is_null() {
            break;
        }
        // SAFETY: argv entries are C strings.
        if unsafe { CStr::from_ptr(b) }.to_bytes() == name && is_script(execfn) {
            // SAFETY: &argv[i] is the rest of the same vector.
            return Some((execfn, unsafe { argv.add(i) }));
        }
    }
    Some((execfn, argv))
}

/// Whether `path` starts with `#!` (read two bytes: the kernel read the
/// whole line a moment ago).
fn is_script(path: *const c_char) -> bool {
    // SAFETY: a C string (AT_EXECFN).
    let c = unsafe { CStr::from_ptr(path) };
    let Ok(fd) = fmcache_core::sys::open(c, rustix::fs::OFlags::RDONLY, 0) else {
        return false;
    };
    let mut b = [0u8; 2];
    rustix::io::read(&fd, &mut b).is_ok_and(|n| n == 2) && b == *b"#!"
}
