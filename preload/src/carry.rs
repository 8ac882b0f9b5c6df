//! Who this copy of the library is, and carrying it into `LD_AUDIT`.
//!
//! The same file is loaded twice in an audited process: as the preload
//! (the application's namespace) and as the auditor (its own namespace,
//! first object there). ld.so reads `LD_AUDIT` only at exec, so the
//! preload copy adds the library to `LD_AUDIT` in its own environment
//! (what `environ`-based exec, `system`, and launchers such as srun and
//! mpirun hand on) and the exec hooks add it to explicit `envp` arrays.

use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use fmcache_core::carry;
use fmcache_core::path::{PathBuf, PATH_MAX};

use crate::cell::Static;
use crate::{cwd, settings};

/// This copy's own path (absolute), written once at start-up.
static SELF_PATH: Static<[u8; PATH_MAX]> = Static::new([0; PATH_MAX]);
static SELF_LEN: AtomicUsize = AtomicUsize::new(0);
static AUDITOR: AtomicBool = AtomicBool::new(false);
/// This copy's load base and dynamic section (its link map's l_addr and
/// l_ld): the auditor finds the preload copy's statics by them.
static SELF_BASE: AtomicUsize = AtomicUsize::new(0);
static SELF_LD: AtomicUsize = AtomicUsize::new(0);

/// The minimal head of glibc's `struct link_map` (public in <link.h>).
#[repr(C)]
pub struct LinkMap {
    pub l_addr: usize,
    pub l_name: *mut c_char,
    pub l_ld: *mut c_void,
    pub l_next: *mut LinkMap,
    pub l_prev: *mut LinkMap,
}

/// A link map ld.so announced (la_objopen, a search's cookie) and has
/// not closed yet: made once at the audit boundary, read safely after.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MapRef(*const LinkMap);

impl MapRef {
    /// # Safety
    /// `map` is null or a link map ld.so announced and has not closed
    /// (la_objclose) while the result is used.
    pub unsafe fn new(map: *const LinkMap) -> Option<MapRef> {
        (!map.is_null()).then_some(MapRef(map))
    }

    pub fn get(self) -> &'static LinkMap {
        // SAFETY: `new`'s contract: a live link map of ld.so's.
        unsafe { &*self.0 }
    }

    /// Its address: what identifies the object in the tables.
    pub fn addr(self) -> usize {
        self.0 as usize
    }
}

extern "C" {
    fn dladdr1(
        addr: *const c_void,
        info: *mut libc::Dl_info,
        extra: *mut *mut c_void,
        flags: i32,
    ) -> i32;
}
const RTLD_DL_LINKMAP: i32 = 2;

/// Finds this copy's path and role. Runs in the constructor.
pub fn identify() {
    // SAFETY: all-zero is a valid Dl_info; dladdr1 fills it for an
    // address inside this object.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let mut map: *mut c_void = core::ptr::null_mut();
    let here = identify as *const c_void;
    // SAFETY: `here` is in this object; `info` and `map` are writable.
    if unsafe { dladdr1(here, &mut info, &mut map, RTLD_DL_LINKMAP) } == 0
        || info.dli_fname.is_null()
    {
        return;
    }
    // The auditor is the first object of its namespace; the preload
    // always follows the executable.
    if !map.is_null() {
        // SAFETY: ld.so returned its link map for this object.
        let m = unsafe { &*(map as *const LinkMap) };
        AUDITOR.store(m.l_prev.is_null(), Relaxed);
        SELF_LD.store(m.l_ld as usize, Relaxed);
        SELF_BASE.store(m.l_addr, Release);
    }
    // SAFETY: dladdr's file name is NUL-terminated.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let mut abs = PathBuf::new();
    let mut cwd = PathBuf::new();
    let base = cwd::get(&mut cwd).then(|| cwd.as_bytes());
    if !fmcache_core::path::normalize(base, name, &mut abs) {
        return;
    }
    let p = abs.as_bytes();
    // ld.so splits LD_AUDIT at ':' (and LD_PRELOAD at ' '): such a path
    // cannot be handed on.
    if p.iter().any(|&b| b == b':' || b == b' ') {
        return;
    }
    // SAFETY: written once, before SELF_LEN publishes it.
    unsafe { (&mut *SELF_PATH.get())[..p.len()].copy_from_slice(p) };
    SELF_LEN.store(p.len(), Release);
}

/// This copy's absolute path, if known.
pub fn self_path() -> Option<&'static [u8]> {
    let n = SELF_LEN.load(Acquire);
    // SAFETY: the first n bytes were written before n was published.
    (n > 0).then(|| unsafe { &(&*SELF_PATH.get())[..n] })
}

/// This copy's (l_addr, l_ld), if known.
pub fn self_map() -> Option<(usize, usize)> {
    let ld = SELF_LD.load(Relaxed);
    (ld != 0).then(|| (SELF_BASE.load(Acquire), ld))
}

/// Whether this copy is the one loaded through LD_AUDIT.
pub fn is_auditor() -> bool {
    AUDITOR.load(Relaxed)
}

/// Adds the library to `LD_AUDIT` in this process's environment, for
/// everything it starts. Constructor only (it allocates).
pub fn export_audit() {
    let Some(lib) = self_path() else { return };
    let get = |k: &str| std::env::var_os(k).map(std::os::unix::ffi::OsStringExt::into_vec);
    let (op, preload, audit) = (get("DLFM_OP"), get("LD_PRELOAD"), get("LD_AUDIT"));
    if !carry::audit_missing(op.as_deref(), preload.as_deref(), audit.as_deref(), lib) {
        return;
    }
    let mut buf = vec![0u8; lib.len() + audit.as_ref().map_or(0, |a| a.len()) + 16];
    if let Some(n) = carry::audit_assignment(audit.as_deref(), lib, &mut buf) {
        let value = &buf[b"LD_AUDIT=".len()..n];
        std::env::set_var(
            "LD_AUDIT",
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(value),
        );
    }
}

/// Most environment entries an exec hook rewrites; a larger environment
/// passes through unchanged.
const MAX_ENV: usize = 1024;
const ENTRY: usize = 2 * PATH_MAX;

/// An `envp` with `LD_AUDIT` carrying the library and the settings
/// handed down the tree (settings.rs), built on the caller's stack (exec
/// hooks may run in a vfork child: no heap).
pub struct Patched {
    ptrs: [*const c_char; MAX_ENV + 1],
    entry: [u8; ENTRY],
}

impl Patched {
    pub const fn new() -> Patched {
        Patched {
            ptrs: [core::ptr::null(); MAX_ENV + 1],
            entry: [0; ENTRY],
        }
    }

    /// `envp`, or the patched copy when it loads the library (LD_PRELOAD
    /// names it) and lacks something: LD_AUDIT naming the library (when
    /// DLFM_OP is on), our absolute paths, the warnings already printed, the stage we
    /// attached.
    ///
    /// # Safety
    /// `envp` is NULL or a NULL-terminated array of C strings.
    pub unsafe fn apply(&mut self, envp: *const *const c_char) -> *const *const c_char {
        let Some(lib) = self_path() else { return envp };
        if envp.is_null() {
            return envp;
        }
        let (mut op, mut preload, mut audit, mut audit_at) = (None, None, None, usize::MAX);
        let mut vals: [Option<&[u8]>; 5] = [None; 5];
        let mut at = [usize::MAX; 5];
        let mut n = 0;
        loop {
            // SAFETY: NULL-terminated, per the contract.
            let p = unsafe { *envp.add(n) };
            if p.is_null() {
                break;
            }
            if n == MAX_ENV {
                return envp;
            }
            // SAFETY: each entry is a C string.
            let kv = unsafe { CStr::from_ptr(p) }.to_bytes();
            if let Some(v) = kv.strip_prefix(b"DLFM_OP=") {
                op = Some(v);
            } else if let Some(v) = kv.strip_prefix(b"LD_PRELOAD=") {
                preload = Some(v);
            } else if let Some(v) = kv.strip_prefix(b"LD_AUDIT=") {
                (audit, audit_at) = (Some(v), n);
            } else if let Some(i) = settings::NAMES.iter().position(|k| kv.starts_with(k)) {
                (vals[i], at[i]) = (Some(&kv[settings::NAMES[i].len()..]), n);
            }
            n += 1;
        }
        if !preload.is_some_and(|p| carry::names_lib(p, lib)) {
            return envp;
        }
        let on = matches!(op, Some(b"write-cache") | Some(b"read-cache"));
        let wanted = settings::wanted(&vals, on);
        // (position in envp or usize::MAX to add, the entry)
        let mut put: [(usize, *const c_char); 6] = [(usize::MAX, core::ptr::null()); 6];
        let mut k = 0;
        if carry::audit_missing(op, preload, audit, lib) {
            let Some(len) = carry::audit_assignment(audit, lib, &mut self.entry[..ENTRY - 1])
            else {
                return envp;
            };
            self.entry[len] = 0;
            put[k] = (audit_at, self.entry.as_ptr().cast());
            k += 1;
        }
        for (i, e) in wanted.entries.iter().enumerate() {
            if let Some(e) = e {
                put[k] = (at[i], *e);
                k += 1;
            }
        }
        if k == 0 {
            return envp;
        }
        let adds = put[..k].iter().filter(|(i, _)| *i == usize::MAX).count();
        if n + adds > MAX_ENV {
            return envp;
        }
        for i in 0..n {
            // SAFETY: i < n, within the array.
            self.ptrs[i] = match put[..k].iter().find(|(at, _)| *at == i) {
                Some((_, e)) => *e,
                // SAFETY: i < n, within the array.
                None => unsafe { *envp.add(i) },
            };
        }
        let mut m = n;
        for (_, e) in put[..k].iter().filter(|(i, _)| *i == usize::MAX) {
            self.ptrs[m] = *e;
            m += 1;
        }
        self.ptrs[m] = core::ptr::null();
        self.ptrs.as_ptr()
    }
}
