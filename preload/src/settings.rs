//! Settings handed down the process tree.
//!
//! - Paths (`FMCACHE_FILE`, `FMCACHE_STATS`, `FMCACHE_STAGE_DIR`) are
//!   resolved once, by the first process with `DLFM_OP` on, and handed to
//!   every child as absolute paths: a child that changed directory would
//!   otherwise record (or look for) a second cache there.
//! - `FMCACHE_WARNED` carries the hashes of the warnings already printed,
//!   so a warning every process of a tree would print is printed once.
//! - `FMCACHE_ATTACHED` names the stage a serving process attached, so
//!   the processes it starts map it without a request for the cache
//!   (attachment.rs).
//!
//! Both go into `environ` in the constructor (what `execv`, `system`,
//! `popen`, srun and mpirun hand on), and `Patched` (carry.rs) puts them
//! into explicit `envp` arrays, which shells build from the environment
//! they started with, not from `environ`. The exec hooks may run in a
//! vfork child: what they read here is written once, in the constructor,
//! into fixed buffers.

use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, Ordering::*};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use fmcache_core::config::{self, Config};
use fmcache_core::path::PATH_MAX;

use crate::cell::Static;

/// `NAME=<absolute value>\0` for one path variable, and the value this
/// process was started with (a child's `envp` holding that value, or
/// lacking the cache's, gets ours).
struct Var {
    assign: [u8; PATH_MAX + 32],
    assign_len: usize,
    orig: [u8; PATH_MAX],
    /// `usize::MAX`: the variable was unset (or empty).
    orig_len: usize,
}

const EMPTY: Var = Var {
    assign: [0; PATH_MAX + 32],
    assign_len: 0,
    orig: [0; PATH_MAX],
    orig_len: usize::MAX,
};

const WARNED_LEN: usize = 16 + (16 + 1) * config::WARNED_MAX;

/// Written once in the constructor, before READY publishes them.
static VARS: Static<[Var; 3]> = Static::new([EMPTY; 3]);
static WARNED: Static<[u8; WARNED_LEN]> = Static::new([0; WARNED_LEN]);
static WARNED_AT: Static<usize> = Static::new(0);
/// `FMCACHE_ATTACHED=<checksum>:<key>\0`, once this process attached.
const ATTACHED_LEN: usize = 64;
static ATTACHED: Static<[u8; ATTACHED_LEN]> = Static::new([0; ATTACHED_LEN]);
static ATTACHED_AT: Static<usize> = Static::new(0);
static READY: AtomicBool = AtomicBool::new(false);

/// The values this process started with, read before anything is set:
/// a host that brings its own `getenv`/`setenv` (bash does) may answer
/// from tables of its own once we called `setenv`.
pub struct Inherited {
    paths: [Option<Vec<u8>>; 3],
    warned: Vec<u8>,
}

fn env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name)
        .map(OsStringExt::into_vec)
        .filter(|v| !v.is_empty())
}

/// Reads the inherited values. Constructor, before any `setenv`.
pub fn inherited() -> Inherited {
    Inherited {
        paths: config::PATH_VARS.map(env),
        warned: env(config::WARNED_VAR).unwrap_or_default(),
    }
}

/// Resolves the path settings into `environ` and remembers them for the
/// exec hooks. Constructor only (it allocates); preload copy only (the
/// auditor's `environ` is its own namespace's, which nothing execs from).
pub fn export_paths(cfg: &Config, inh: &Inherited) {
    let values: [Option<&[u8]>; 3] = [
        Some(&cfg.cache),
        cfg.stats.as_deref(),
        Some(&cfg.stage_base),
    ];
    for (i, (name, abs)) in config::PATH_VARS.iter().zip(values).enumerate() {
        let orig = inh.paths[i].clone();
        // The stage's default is already absolute, and no stats file
        // means none: only a value that was set is handed on.
        let Some(abs) = abs.filter(|a| a.first() == Some(&b'/')) else {
            continue;
        };
        if i > 0 && orig.is_none() {
            continue;
        }
        if abs.len() >= PATH_MAX || orig.as_ref().is_some_and(|o| o.len() >= PATH_MAX) {
            continue;
        }
        if orig.as_deref() != Some(abs) {
            std::env::set_var(name, OsStr::from_bytes(abs));
        }
        // SAFETY: the constructor runs once, single-threaded, before main
        // and so before any exec hook reads VARS.
        let v = unsafe { &mut (*VARS.get())[i] };
        let assign = [name.as_bytes(), b"=", abs].concat();
        v.assign[..assign.len()].copy_from_slice(&assign);
        v.assign[assign.len()] = 0;
        v.assign_len = assign.len();
        if let Some(o) = &orig {
            v.orig[..o.len()].copy_from_slice(o);
            v.orig_len = o.len();
        }
    }
    READY.store(true, Release);
}

/// Prints a warning unless this process tree printed it already, and
/// marks it printed for the children. Constructor only (it allocates).
pub fn warn_once(inh: &mut Inherited, args: core::fmt::Arguments<'_>) {
    let text = args.to_string();
    let hash = config::warning_hash(text.as_bytes());
    if config::warned(&inh.warned, &hash) {
        return;
    }
    crate::log::warn(format_args!("{text}"));
    if crate::carry::is_auditor() {
        // Its environ is not the one children get; the preload copy, if
        // there is one, printed nothing and marks nothing (log::quiet).
        return;
    }
    let mut list: Vec<&[u8]> = inh
        .warned
        .split(|&b| b == b',')
        .filter(|h| h.len() == 16)
        .collect();
    if list.len() >= config::WARNED_MAX {
        list.remove(0);
    }
    list.push(&hash);
    let value = list.join(&b","[..]);
    inh.warned = value.clone();
    std::env::set_var(config::WARNED_VAR, OsStr::from_bytes(&value));
    let assign = [config::WARNED_VAR.as_bytes(), b"=", &value].concat();
    if assign.len() < WARNED_LEN {
        // SAFETY: constructor only, single-threaded, before main: no exec
        // hook reads WARNED yet; READY (stored below) publishes it.
        unsafe {
            (&mut *WARNED.get())[..assign.len()].copy_from_slice(&assign);
            (&mut *WARNED.get())[assign.len()] = 0;
            *WARNED_AT.get() = assign.len();
        }
    }
    READY.store(true, Release);
}

/// This process serves the stage `value` (`stage::attachment_value`)
/// names: into `environ`, and remembered for the exec hooks. Constructor
/// only (it allocates); preload copy only.
pub fn export_attached(value: &str) {
    std::env::set_var(config::ATTACHED_VAR, value);
    let assign = [config::ATTACHED_VAR.as_bytes(), b"=", value.as_bytes()].concat();
    if assign.len() < ATTACHED_LEN {
        // SAFETY: constructor only, single-threaded, before main: no exec
        // hook reads ATTACHED yet; READY (stored below) publishes it.
        unsafe {
            (&mut *ATTACHED.get())[..assign.len()].copy_from_slice(&assign);
            (&mut *ATTACHED.get())[assign.len()] = 0;
            *ATTACHED_AT.get() = assign.len();
        }
    }
    READY.store(true, Release);
}

/// A recording process (a pilot) starts a tree that reads the cache anew:
/// what it inherited is not handed on through `environ`. Constructor only.
pub fn drop_attached() {
    std::env::remove_var(config::ATTACHED_VAR);
}

/// What a child's `envp` needs from us: for each variable we hand on, the
/// entry to put in (replacing the child's, or added).
pub struct Wanted {
    /// Per variable (the path variables, then FMCACHE_WARNED and
    /// FMCACHE_ATTACHED): our `NAME=value` entry, when the child's must be
    /// replaced or added.
    pub entries: [Option<*const c_char>; 5],
}

/// The names `wanted` looks at, in its order.
pub const NAMES: [&[u8]; 5] = [
    b"FMCACHE_FILE=",
    b"FMCACHE_STATS=",
    b"FMCACHE_STAGE_DIR=",
    b"FMCACHE_WARNED=",
    b"FMCACHE_ATTACHED=",
];

/// Decides, from the child's values of `NAMES` (None: unset), which of
/// ours it gets. `on`: the child's `DLFM_OP` records or serves (paths are
/// handed on only then, and so is the attachment; the warnings marker
/// whenever the library loads). No allocation: runs in exec hooks.
pub fn wanted(child: &[Option<&[u8]>; 5], on: bool) -> Wanted {
    let mut w = Wanted { entries: [None; 5] };
    if !READY.load(Acquire) {
        return w;
    }
    // SAFETY: written before READY was published, never again after.
    let vars = unsafe { &*VARS.get() };
    for (i, v) in vars.iter().enumerate() {
        if v.assign_len == 0 || !on {
            continue;
        }
        let ours = &v.assign[NAMES[i].len()..v.assign_len];
        let orig = (v.orig_len != usize::MAX).then(|| &v.orig[..v.orig_len]);
        let replace = match child[i] {
            // The cache's default is relative to the child's cwd: ours.
            None | Some(b"") => i == 0,
            Some(c) if c == ours => false,
            // The value we started with (a shell hands on its original
            // environment), or any relative one equal to it: ours.
            Some(c) => Some(c) == orig,
        };
        if replace {
            w.entries[i] = Some(v.assign.as_ptr().cast());
        }
    }
    // SAFETY: as above.
    let n = unsafe { *WARNED_AT.get() };
    if n > 0 {
        // SAFETY: the first n bytes were written with WARNED_AT.
        let warned = unsafe { &(&*WARNED.get())[..n] };
        if child[3] != Some(&warned[NAMES[3].len()..]) {
            w.entries[3] = Some(warned.as_ptr().cast());
        }
    }
    // SAFETY: as above.
    let n = unsafe { *ATTACHED_AT.get() };
    if n > 0 && on {
        // SAFETY: the first n bytes were written with ATTACHED_AT.
        let ours = unsafe { &(&*ATTACHED.get())[..n] };
        if child[4] != Some(&ours[NAMES[4].len()..]) {
            w.entries[4] = Some(ours.as_ptr().cast());
        }
    }
    w
}
