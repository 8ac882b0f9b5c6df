//! Shared helpers: the cache path, the library, the child's environment,
//! running the child and turning its status into our exit code.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use fmcache_core::config::Config;

/// The library's file name.
pub const LIB_NAME: &str = "libfmcache.so";

pub use fmcache_core::path::show;

pub fn os(p: &[u8]) -> &OsStr {
    OsStr::from_bytes(p)
}

/// An I/O error's message without the "(os error N)" suffix.
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// `p` made absolute the way the library normalises paths (relative to
/// the current directory, `.` and repeated `/` dropped, `..` kept).
pub fn absolute(p: &OsStr) -> Result<Vec<u8>, String> {
    let bytes = p.as_bytes();
    let cwd = if bytes.first() == Some(&b'/') {
        None
    } else {
        let d =
            std::env::current_dir().map_err(|e| format!("current directory: {}", io_reason(&e)))?;
        Some(d.into_os_string().into_vec())
    };
    let mut out = fmcache_core::path::PathBuf::new();
    if fmcache_core::path::normalize(cwd.as_deref(), bytes, &mut out) {
        Ok(out.as_bytes().to_vec())
    } else {
        Err(format!(
            "{}: not a usable path (empty, too long or holding a NUL byte)",
            p.to_string_lossy()
        ))
    }
}

/// The settings from the environment, with the cache path overridden by
/// `cache` when given.
pub fn config(cache: Option<&OsStr>) -> Result<Config, String> {
    let mut cfg = Config::from_env();
    if let Some(c) = cache {
        cfg.cache = absolute(c)?;
    }
    if cfg.cache.first() != Some(&b'/') {
        return Err(format!(
            "{}: cannot make the cache path absolute",
            show(&cfg.cache)
        ));
    }
    Ok(cfg)
}

/// Paths for FMCACHE_INCLUDE / FMCACHE_EXCLUDE: absolute, without colons.
pub fn path_list(paths: &[OsString], what: &str) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| {
            let a = absolute(p)?;
            if a.contains(&b':') {
                return Err(format!(
                    "--{what} {}: a path holding ':' cannot be passed in FMCACHE_{}",
                    show(&a),
                    what.to_uppercase()
                ));
            }
            Ok(a)
        })
        .collect()
}

pub fn join_colon(paths: &[Vec<u8>]) -> OsString {
    OsString::from_vec(paths.join(&b':'))
}

/// Finds libfmcache.so: $FMCACHE_LIB, else next to this executable, else
/// in `../lib` relative to it.
pub fn find_library() -> Result<Vec<u8>, String> {
    let found = match std::env::var_os("FMCACHE_LIB").filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(&v);
            if !p.is_file() {
                return Err(format!("FMCACHE_LIB={}: no such file", v.to_string_lossy()));
            }
            std::fs::canonicalize(&p)
                .map_err(|e| format!("FMCACHE_LIB={}: {}", v.to_string_lossy(), io_reason(&e)))?
        }
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot locate this executable: {}", io_reason(&e)))?;
            let dir = exe.parent().unwrap_or(Path::new("/"));
            let candidates = [dir.join(LIB_NAME), dir.join("../lib").join(LIB_NAME)];
            let hit = candidates.iter().find(|c| c.is_file());
            match hit.map(std::fs::canonicalize) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(format!("{LIB_NAME}: {}", io_reason(&e))),
                None => {
                    return Err(format!(
                        "cannot find {LIB_NAME} (looked in {} and {}); set FMCACHE_LIB to its path",
                        dir.display(),
                        dir.join("../lib").display()
                    ))
                }
            }
        }
    };
    let bytes = found.into_os_string().into_vec();
    if bytes.iter().any(|&b| b == b':' || b == b' ') {
        return Err(format!(
            "{}: LD_PRELOAD cannot hold a path with ':' or ' '",
            show(&bytes)
        ));
    }
    Ok(bytes)
}

/// LD_PRELOAD with `lib` first, then the existing entries (colon or space
/// separated) except `lib` itself.
pub fn ld_preload(lib: &[u8], existing: Option<&OsStr>) -> OsString {
    let mut parts: Vec<&[u8]> = vec![lib];
    if let Some(e) = existing {
        for p in e.as_bytes().split(|&b| b == b':' || b == b' ') {
            if !p.is_empty() && p != lib && !parts.contains(&p) {
                parts.push(p);
            }
        }
    }
    OsString::from_vec(parts.join(&b':'))
}

/// The environment that makes the library do `op` with `cfg.cache`.
pub fn preload_env(op: &str, cfg: &Config, lib: &[u8]) -> Vec<(&'static str, OsString)> {
    vec![
        ("DLFM_OP", OsString::from(op)),
        ("FMCACHE_FILE", os(&cfg.cache).to_os_string()),
        (
            "LD_PRELOAD",
            ld_preload(lib, std::env::var_os("LD_PRELOAD").as_deref()),
        ),
        // The loader's own search is seen only by an auditor, named at exec.
        (
            "LD_AUDIT",
            ld_audit(lib, std::env::var_os("LD_AUDIT").as_deref()),
        ),
    ]
}

/// LD_AUDIT with `lib` last (after any auditor already there, whose
/// choices it then sees), once.
pub fn ld_audit(lib: &[u8], existing: Option<&OsStr>) -> OsString {
    let existing = existing.map(|e| e.as_bytes()).filter(|e| !e.is_empty());
    if existing.is_some_and(|e| fmcache_core::carry::names_lib(e, lib)) {
        return existing
            .map(|e| OsString::from_vec(e.to_vec()))
            .unwrap_or_default();
    }
    let mut buf = vec![0u8; lib.len() + existing.map_or(0, |e| e.len()) + 16];
    let n = fmcache_core::carry::audit_assignment(existing, lib, &mut buf).unwrap_or(0);
    OsString::from_vec(buf[b"LD_AUDIT=".len().min(n)..n].to_vec())
}

/// How the child ended.
pub struct Outcome {
    /// Our exit code: the child's, or 128 + signal.
    pub code: u8,
    pub wall: Duration,
    pub status: ExitStatus,
}

pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => 128u8.saturating_add((s & 0x7f) as u8),
        _ => 1,
    }
}

pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// A failure to start the command: message and exit code (126/127, as
/// shells use).
pub struct SpawnError {
    pub msg: String,
    pub code: u8,
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Terminal signals go to the whole foreground group, so the child gets
/// them already: we ignore them and live on to merge. Signals usually sent
/// to one process (by a batch system or `kill`) are passed on.
const IGNORED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGQUIT];
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];

/// Restores the saved dispositions when dropped.
struct SignalGuard {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

fn set_action(sig: libc::c_int, handler: libc::sighandler_t) -> Option<libc::sigaction> {
    // SAFETY: sigaction structs are plain data; zeroed is a valid start
    // and both pointers are valid for the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(sig, &sa, &mut old) == 0).then_some(old)
    }
}

impl SignalGuard {
    fn install() -> SignalGuard {
        let mut saved = Vec::new();
        for sig in IGNORED {
            if let Some(old) = set_action(sig, libc::SIG_IGN) {
                saved.push((sig, old));
            }
        }
        let handler = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for sig in FORWARDED {
            if let Some(old) = set_action(sig, handler) {
                // Keep a signal the caller chose to ignore ignored.
                if old.sa_sigaction == libc::SIG_IGN {
                    // SAFETY: restoring the disposition just read.
                    unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
                } else {
                    saved.push((sig, old));
                }
            }
        }
        SignalGuard { saved }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in &self.saved {
            // SAFETY: restoring a disposition read by `install`.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        CHILD.store(0, Ordering::Relaxed);
    }
}

/// Runs `argv` with `env` added, stdio inherited, and waits for it.
pub fn run_child(
    argv: &[OsString],
    env: &[(&'static str, OsString)],
) -> Result<Outcome, SpawnError> {
    let (prog, args) = argv.split_first().ok_or(SpawnError {
        msg: "no command given".into(),
        code: 2,
    })?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| SpawnError {
        msg: format!("{}: {}", prog.to_string_lossy(), io_reason(&e)),
        code: if e.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    let _guard = SignalGuard::install();
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    let status = child.wait().map_err(|e| SpawnError {
        msg: format!("waiting for the command: {}", io_reason(&e)),
        code: 1,
    })?;
    let wall = start.elapsed();
    Ok(Outcome {
        code: exit_code(status),
        wall,
        status,
    })
}

pub fn euid_egid() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// "12.3 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_is_appended_once() {
        let lib = b"/opt/fm/libfmcache.so";
        assert_eq!(ld_audit(lib, None), OsStr::new("/opt/fm/libfmcache.so"));
        assert_eq!(
            ld_audit(lib, Some(OsStr::new("/a/x.so"))),
            OsStr::new("/a/x.so:/opt/fm/libfmcache.so")
        );
        assert_eq!(
            ld_audit(lib, Some(OsStr::new("/b/libfmcache.so"))),
            OsStr::new("/b/libfmcache.so")
        );
    }

    #[test]
    fn preload_is_prepended_once() {
        let lib = b"/opt/lib/libfmcache.so";
        assert_eq!(
            ld_preload(lib, None),
            OsString::from("/opt/lib/libfmcache.so")
        );
        let existing = OsString::from("/a.so:/opt/lib/libfmcache.so /b.so::/a.so");
        assert_eq!(
            ld_preload(lib, Some(&existing)),
            OsString::from("/opt/lib/libfmcache.so:/a.so:/b.so")
        );
    }

    #[test]
    fn relative_paths_become_absolute() {
        let a = absolute(OsStr::new("x/./y.dat")).unwrap();
        assert_eq!(a.first(), Some(&b'/'));
        assert!(a.ends_with(b"/x/y.dat"));
        assert_eq!(absolute(OsStr::new("/a//b")).unwrap(), b"/a/b");
        assert!(absolute(OsStr::new("")).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
