//! One read of the cache per process tree outside a job.
//!
//! - **The two copies of one process attach once between them.** ld.so
//!   runs the auditor copy's constructor first; it attaches (reading the
//!   cache's identity, or as below) and, from `la_objopen` of the preload
//!   copy of the same file (`trust::note_peer`), writes its checksum and
//!   key into that copy's `HANDED`, at the same offset of the same file.
//!   The preload copy's constructor then maps the stage it names
//!   (`stage::attach_known`: local calls only).
//! - **A process started by an attached process inherits the
//!   attachment**: the preload copy puts `FMCACHE_ATTACHED=<checksum>:<key>`
//!   into `environ` and the exec hooks into explicit `envp` arrays
//!   (settings.rs); a child outside a job with the same cache and stage
//!   base (the key) maps `<stage_base>/<checksum>` directly. A stage gone,
//!   not matching, or not ours sends it to the cache (`stage::attach`).
//!
//! Within a job the job pointer decides (its rules for a cache replaced
//! during a job stay as they are); the copies still hand over.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use fmcache_core::config::{self, Config};
use fmcache_core::stage;

/// Preload copy: (checksum, key, set) the auditor copy handed over,
/// written by that copy before this copy's constructor runs.
pub static HANDED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Auditor copy: the address of the preload copy's `HANDED`, once found.
static PEER_HANDED: AtomicUsize = AtomicUsize::new(0);
/// Auditor copy: its own attachment (checksum, key, set).
static MINE: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Writes `from` into the `HANDED` at `to`.
fn copy(from: &[AtomicU64; 3], to: usize) {
    if to == 0 || from[2].load(Acquire) == 0 {
        return;
    }
    // SAFETY: `to` is the preload copy's HANDED (trust::note_peer checked
    // the same file is mapped there, same layout), a static of atomics.
    let to = unsafe { &*(to as *const [AtomicU64; 3]) };
    to[0].store(from[0].load(Relaxed), Relaxed);
    to[1].store(from[1].load(Relaxed), Relaxed);
    to[2].store(1, Release);
}

/// Auditor copy, from `trust::note_peer`: where the preload copy's
/// `HANDED` lives. Hands over at once if this copy is attached already.
pub fn note_peer(handed: usize) {
    PEER_HANDED.store(handed, Release);
    copy(&MINE, handed);
}

/// The stage version this copy may map without reading the cache: the
/// other copy's, else (outside a job) the one inherited from the parent.
/// Constructor only.
pub fn known(cfg: &Config) -> Option<u64> {
    if HANDED[2].load(Acquire) != 0 && HANDED[1].load(Relaxed) == stage::attachment_key(cfg) {
        return Some(HANDED[0].load(Relaxed));
    }
    if cfg.job.is_some() {
        return None;
    }
    let v = std::env::var_os(config::ATTACHED_VAR)?;
    stage::inherited_checksum(cfg, std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()))
}

/// This copy attached stage `checksum` for `cfg`: the auditor copy hands
/// it to the preload copy, the preload copy to the processes it starts.
/// Constructor only (allocates).
pub fn attached(cfg: &Config, checksum: u64) {
    if crate::carry::is_auditor() {
        MINE[0].store(checksum, Relaxed);
        MINE[1].store(stage::attachment_key(cfg), Relaxed);
        MINE[2].store(1, Release);
        copy(&MINE, PEER_HANDED.load(Acquire));
    } else {
        crate::settings::export_attached(&stage::attachment_value(cfg, checksum));
    }
}
