//! Node-local staging of a cache.
//!
//! The first process on a machine validates the cache (full checksum) and
//! unpacks it under the per-user stage directory:
//!
//! ```text
//! <stage_base>/                  0700, owned by the user, not a symlink
//!   <id>/                        id = the cache checksum, 16 hex digits
//!     index                      bytes [0, meta_size) of the cache
//!     inodes                     (staged inode u64, entry u64) sorted by inode
//!     root/<canonical path>      each cached file's bytes, mirroring the
//!                                original absolute paths
//! ```
//!
//! It builds `<id>.tmp.<pid>` and renames it to `<id>`, under a lock, so a
//! stage killed half-way is never used and is redone by the next process.
//! Every other process maps `<id>/index` and checks only the header.
//!
//! With `FMCACHE_VERIFY=stat` the first such process also compares every
//! file whose bytes are served with the live file and leaves its verdict in
//! `<id>/fresh` or `<id>/stale` (the first changed path): later processes
//! on the node read the verdict, one local open, and a stale stage is not
//! served.

use std::os::fd::AsFd;

use fmcache_format::{read_header, CacheView, Verify};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};

use crate::config::{self, Config};
use crate::error::StageError;
use crate::path::show;
use crate::sys::{self, Mapping};

/// A mapped stage: what a serving process keeps for its lifetime.
pub struct Attached {
    pub index: Mapping,
    pub inodes: Mapping,
    /// `<stage_base>/<id>/root`: prefix of every mirror path.
    pub root: Vec<u8>,
    /// st_dev of the stage's file system, to recognise staged descriptors.
    pub stage_dev: u64,
    pub checksum: u64,
    /// The index, share-locked: the stage is in use while this is open.
    pub hold: std::os::fd::OwnedFd,
}

/// Checks (or creates) the per-user stage base: a real directory owned by
/// us with no group or other access. Never follows a planted symlink.
pub fn private_dir(base: &[u8]) -> Result<(), StageError> {
    let what = || format!("stage directory {}", show(base));
    let c = sys::cstr(base).map_err(StageError::sys(what()))?;
    let euid = rustix::process::geteuid().as_raw();
    match rustix::fs::mkdirat(CWD, &*c, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(rustix::io::Errno::NOENT) => {
            sys::mkdir_p(base, 0o700).map_err(StageError::sys(what()))?
        }
        Err(e) => return Err(StageError::rustix(what())(e)),
    }
    let st = rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(StageError::rustix(what()))?;
    let mode = st.st_mode as u32;
    if mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(StageError::Refused(format!(
            "stage directory {} is not a directory (a symlink?): refused",
            show(base)
        )));
    }
    if st.st_uid != euid {
        return Err(StageError::Refused(format!(
            "stage directory {} is owned by uid {}, not {}: refused",
            show(base),
            st.st_uid,
            euid
        )));
    }
    if mode & 0o077 != 0 {
        return Err(StageError::Refused(format!(
            "stage directory {} has mode {:o}, not private: refused",
            show(base),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Opens the cache file, applies the ownership rule (owned by the user or
/// root, writable by its owner alone) and returns its checksum.
pub fn cache_identity(cfg: &Config) -> Result<(std::os::fd::OwnedFd, u64, u64), StageError> {
    cache_identity_stat(cfg).map(|(fd, checksum, size, _)| (fd, checksum, size))
}

/// `cache_identity`, with the file's status as its descriptor showed it.
fn cache_identity_stat(
    cfg: &Config,
) -> Result<(std::os::fd::OwnedFd, u64, u64, rustix::fs::Stat), StageError> {
    let c = sys::cstr(&cfg.cache).map_err(StageError::sys(""))?;
    let fd = sys::open(&c, OFlags::RDONLY, 0).map_err(|e| match e {
        libc::ENOENT => StageError::NotFound,
        e => StageError::sys("")(e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(StageError::rustix(""))?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid && st.st_uid != 0 {
        return Err(StageError::Refused(format!(
            "owned by uid {}, not by you or root: refused",
            st.st_uid
        )));
    }
    if st.st_mode as u32 & 0o022 != 0 {
        return Err(StageError::Refused(format!(
            "writable by group or others (mode {:o}): refused",
            st.st_mode as u32 & 0o7777
        )));
    }
    let (checksum, size) = header_identity(&fd, st.st_size as u64)?;
    Ok((fd, checksum, size, st))
}

/// The header checks every staged copy passes, whoever read it: this
/// build's format, the size it names, and the reader as its recorder.
/// Returns the checksum and size.
fn header_identity(fd: &std::os::fd::OwnedFd, size: u64) -> Result<(u64, u64), StageError> {
    use fmcache_format::OpenError;
    let mut head = [0u8; fmcache_format::layout::HEADER_SIZE];
    let n = rustix::io::pread(fd, &mut head, 0).map_err(StageError::rustix(""))?;
    let h = read_header(&head[..n]).ok_or(OpenError::TooSmall)?;
    // Cheap header checks before any staging work.
    if h.magic != fmcache_format::layout::MAGIC {
        return Err(OpenError::BadMagic.into());
    }
    if h.version != fmcache_format::layout::FORMAT_VERSION {
        return Err(OpenError::Version(h.version).into());
    }
    if h.build_id != fmcache_format::build_id() {
        return Err(OpenError::ForeignBuild.into());
    }
    if h.file_size != size {
        return Err(OpenError::Truncated.into());
    }
    // Its answers (EACCES, contents only the pilot could read) are the
    // pilot's: refused before anything is staged where we could read it.
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    if (h.recorder_uid, h.recorder_gid) != (euid, egid) {
        return Err(StageError::Refused(format!(
            "recorded by uid {} gid {}, not by you (uid {euid} gid {egid}): refused",
            h.recorder_uid, h.recorder_gid
        )));
    }
    Ok((h.checksum, size))
}

/// Stages a copy of `cfg.cache` held in `copy` (a private file or memfd:
/// what `fmcache-bcast` received from the one rank that read the shared
/// cache) as the first process of the job on this node would, and, within
/// a job, leaves the job's pointer naming it: the job's processes on this
/// node then make no request for the cache. The copy passes the same
/// header checks (recorder = this user) and, when staged, the full
/// checksum; the ownership rule is the shared file's, checked by its
/// reader with `cache_identity`. Returns the checksum and entry count.
pub fn install_copy(cfg: &Config, copy: &std::os::fd::OwnedFd) -> Result<(u64, usize), StageError> {
    private_dir(&cfg.stage_base)?;
    let size = rustix::fs::fstat(copy)
        .map_err(StageError::rustix(""))?
        .st_size as u64;
    let (checksum, size) = header_identity(copy, size)?;
    let dir = join(&cfg.stage_base, format!("/{checksum:016x}").as_bytes());
    let a = match &cfg.job {
        Some(job) => {
            let ptr = job_pointer(cfg, job);
            let _lock =
                sys::lock_file(&join(&ptr, b".lock")).map_err(StageError::sys("stage lock"))?;
            let a = stage(cfg, copy, checksum, size, &dir)?;
            write_pointer(cfg, &ptr, checksum)
                .map_err(StageError::sys(format!("job pointer {}", show(&ptr))))?;
            a
        }
        None => stage(cfg, copy, checksum, size, &dir)?,
    };
    let entries = CacheView::open(a.index.bytes(), Verify::Header)?.entry_count();
    Ok((checksum, entries))
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
}

/// Finds or builds this cache's stage and maps it.
///
/// Within a job, the first process on the node reads the shared cache
/// (open, fstat, the header: its only requests for it there), stages it
/// and leaves `job.<key>` naming the stage, keyed by the cache path and the
/// job; the others find the stage through it without any request to the
/// shared file system. A cache replaced between jobs is read anew by the
/// next job, and staged anew when its checksum changed.
pub fn attach(cfg: &Config) -> Result<Attached, StageError> {
    private_dir(&cfg.stage_base)?;
    let a = match &cfg.job {
        Some(job) => attach_in_job(cfg, job)?,
        None => attach_outside_job(cfg)?,
    };
    if cfg.verify == config::Verify::Stat {
        let dir = parent_of_root(&a.root);
        verified(&a, dir)?;
    }
    Ok(a)
}

/// What identifies the cache and the stage base an attachment is for:
/// XXH3-64 of the cache's absolute path and the stage base. A process
/// handed an attachment (by the other copy of the library, or inherited)
/// uses it only when its own cache and stage base give the same key.
pub fn attachment_key(cfg: &Config) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&[&cfg.cache[..], b"\0", &cfg.stage_base].concat())
}

/// `FMCACHE_ATTACHED`'s value for a process serving stage `checksum`:
/// `<checksum>:<key>`, 16 hex digits each. Names no path: the stage is
/// always `<stage_base>/<checksum>` under the reader's own private base.
pub fn attachment_value(cfg: &Config, checksum: u64) -> String {
    format!("{checksum:016x}:{:016x}", attachment_key(cfg))
}

/// The checksum an inherited `FMCACHE_ATTACHED` value names, when it is
/// well formed and for this cache and stage base; `None` otherwise (the
/// process then reads the cache itself).
pub fn inherited_checksum(cfg: &Config, value: &[u8]) -> Option<u64> {
    let hex = |b: &[u8]| -> Option<u64> {
        if b.len() != 16 || !b.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
    };
    if value.len() != 33 || value[16] != b':' {
        return None;
    }
    let (checksum, key) = (hex(&value[..16])?, hex(&value[17..])?);
    (key == attachment_key(cfg)).then_some(checksum)
}

/// Maps the stage of cache version `checksum`, which another attachment
/// already read from the cache (the other copy of the library in this
/// process, or the process that started this one), with no request for
/// the cache itself: the same private stage base, a complete stage whose
/// index carries that checksum and this build (`map_stage`), recorded by
/// this very uid and gid (what `cache_identity` checks), and with
/// `FMCACHE_VERIFY=stat` the stage's verdict. An error sends the caller
/// to `attach` (the stage pruned, replaced, or not ours).
pub fn attach_known(cfg: &Config, checksum: u64) -> Result<Attached, StageError> {
    let (a, dir) = known_stage(cfg, checksum)?;
    if cfg.verify == config::Verify::Stat {
        verified(&a, &dir)?;
    }
    Ok(a)
}

/// `attach_known` but for `FMCACHE_VERIFY=stat`'s verdict; also returns
/// the stage's directory.
fn known_stage(cfg: &Config, checksum: u64) -> Result<(Attached, Vec<u8>), StageError> {
    private_dir(&cfg.stage_base)?;
    let dir = join(&cfg.stage_base, format!("/{checksum:016x}").as_bytes());
    let a = map_stage(&dir, checksum)?;
    // Re-recorded on this node since (`superseded`): the tree's later
    // processes read the new cache.
    let replaced = sys::cstr(&join(&dir, b"/replaced")).map_err(StageError::sys(""))?;
    if rustix::fs::statat(CWD, &*replaced, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        return Err(StageError::Changed(
            "the cache was re-recorded on this node since".into(),
        ));
    }
    let view = CacheView::open(a.index.bytes(), Verify::Header)?;
    let h = view.header();
    let (euid, egid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if (h.recorder_uid, h.recorder_gid) != (euid, egid) {
        return Err(StageError::Refused(
            "stage recorded by another identity: refused".into(),
        ));
    }
    Ok((a, dir))
}

/// Outside a job, what a process that read the cache leaves on the node
/// for later process trees: the stage it found, and the cache file's
/// status as its open descriptor showed it. `<stage_base>/seen.<key>`,
/// keyed as attachments are (cache path and stage base).
fn seen_pointer(cfg: &Config) -> Vec<u8> {
    join(
        &cfg.stage_base,
        format!("/seen.{:016x}", attachment_key(cfg)).as_bytes(),
    )
}

/// The status fields that tell one version of the cache file from
/// another: device and inode (replaced by a rename), size, modification
/// and change times (rewritten in place, chmod, chown: the ctime, which no
/// user can set), owner and mode (the ownership rule's inputs).
fn identity_line(st: &rustix::fs::Stat) -> String {
    format!(
        "{} {} {} {}.{} {}.{} {} {:o}",
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        st.st_uid,
        st.st_mode
    )
}

/// A later process tree outside a job: when a `stat` of the cache path
/// shows the very file an earlier reader opened (`seen_pointer`), its
/// stage is mapped without opening the cache. A client answers a stat
/// from its attribute cache, while every open is a request to the
/// metadata server (and its close another); any change to the file sends
/// the process back to the cache, as `cache_identity` would see it. None
/// when there is no pointer, the file differs, or the stage does not map.
fn seen_before(cfg: &Config, ptr: &[u8]) -> Option<Attached> {
    let (checksum, seen) = read_pointer(ptr)?;
    let cache = sys::cstr(&cfg.cache).ok()?;
    let st = rustix::fs::stat(&*cache).ok()?;
    if identity_line(&st).as_bytes() != seen {
        return None;
    }
    let (a, dir) = known_stage(cfg, checksum).ok()?;
    used_now(&dir);
    Some(a)
}

/// Outside a job: the stage a `seen_pointer` names when the cache is still
/// that file; else, as the one reader on the node at a time (under
/// `seen.<key>.lock`, so processes started together wait for the first
/// and then follow its pointer, as a job's do), reads the shared cache's
/// identity, finds or builds its stage, and leaves the pointer.
fn attach_outside_job(cfg: &Config) -> Result<Attached, StageError> {
    let ptr = seen_pointer(cfg);
    if let Some(a) = seen_before(cfg, &ptr) {
        return Ok(a);
    }
    let _lock = sys::lock_file(&join(&ptr, b".lock")).map_err(StageError::sys("stage lock"))?;
    if let Some(a) = seen_before(cfg, &ptr) {
        return Ok(a);
    }
    let (a, st) = attach_shared(cfg)?;
    let text = format!("{:016x}\n{}\n", a.checksum, identity_line(&st));
    // Served all the same if this fails; the next tree opens the cache.
    let _ = replace_file(&ptr, text.as_bytes());
    Ok(a)
}

/// `<stage_base>/<id>` of an attached stage (its root is `<id>/root`).
fn parent_of_root(root: &[u8]) -> &[u8] {
    crate::path::parent(root).unwrap_or(root)
}

/// The file naming the stage for this cache in this job.
fn job_pointer(cfg: &Config, job: &[u8]) -> Vec<u8> {
    let key = xxhash_rust::xxh3::xxh3_64(&[&cfg.cache[..], b"\0", job].concat());
    join(&cfg.stage_base, format!("/job.{key:016x}").as_bytes())
}

/// A pointer's contents: the checksum it names, and its second line (a
/// job pointer's cache path, so the merge that replaces that cache can
/// find the pointers to drop; a `seen_pointer`'s identity line).
fn read_pointer(ptr: &[u8]) -> Option<(u64, Vec<u8>)> {
    let c = sys::cstr(ptr).ok()?;
    let (text, _) = sys::read_file(&c, 64 + crate::path::PATH_MAX as u64).ok()?;
    let mut lines = text.split(|&b| b == b'\n');
    let checksum = u64::from_str_radix(std::str::from_utf8(lines.next()?).ok()?.trim(), 16).ok()?;
    Some((checksum, lines.next().unwrap_or_default().to_vec()))
}

/// The checksum this job's processes on this node serve for `cfg.cache`,
/// if the job has a pointer here: what `fmcache verify` compares with the
/// cache itself.
pub fn job_checksum(cfg: &Config) -> Option<(Vec<u8>, u64)> {
    let job = cfg.job.as_ref()?;
    let (checksum, _) = read_pointer(&job_pointer(cfg, job))?;
    Some((job.clone(), checksum))
}

/// The checksum this process tree serves for `cfg.cache` outside a job,
/// when it inherited an attachment (`FMCACHE_ATTACHED` in the environment,
/// for this cache and stage base) whose stage is here and not marked
/// replaced: what `fmcache verify` run inside the tree compares with the
/// cache itself.
pub fn tree_checksum(cfg: &Config) -> Option<u64> {
    if cfg.job.is_some() {
        return None;
    }
    let v = std::env::var_os(config::ATTACHED_VAR)?;
    let checksum = inherited_checksum(cfg, std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()))?;
    let dir = join(&cfg.stage_base, format!("/{checksum:016x}").as_bytes());
    let here = |name: &[u8]| {
        sys::cstr(&join(&dir, name))
            .is_ok_and(|c| rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW).is_ok())
    };
    (here(b"/index") && !here(b"/replaced")).then_some(checksum)
}

/// After a merge replaced `cfg.cache`: drops the job pointers on this
/// node that name it, so later processes of a running job read the new
/// cache (those already started keep the stage they map). Each pointer is
/// dropped under its `job.<key>.lock`, so a first process that read the
/// old cache's identity just before the replacement and is still staging
/// it writes its pointer before this runs, never after. Pointers on other
/// nodes stay until their job ends (nothing reaches them but a request
/// per process to the shared file system, which the pointer avoids).
/// Returns how many were dropped.
pub fn forget_jobs(cfg: &Config) -> usize {
    let base = &cfg.stage_base;
    // Only an existing stage base that is ours: never created from here.
    let Ok(c) = sys::cstr(base) else { return 0 };
    let Ok(st) = rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW) else {
        return 0;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR
        || st.st_uid != rustix::process::geteuid().as_raw()
        || st.st_mode & 0o077 != 0
    {
        return 0;
    }
    let mut keys: Vec<Vec<u8>> = sys::list_dir(&c)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let n = d.name.strip_prefix(b"job.")?;
            let key = n.strip_suffix(b".lock").unwrap_or(n);
            (key.len() == 16 && key.iter().all(u8::is_ascii_hexdigit)).then(|| key.to_vec())
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut dropped = 0;
    for key in keys {
        let ptr = join(&join(base, b"/job."), &key);
        let Ok(_lock) = sys::lock_file(&join(&ptr, b".lock")) else {
            continue;
        };
        if read_pointer(&ptr).is_some_and(|(_, path)| path == cfg.cache)
            && sys::cstr(&ptr).is_ok_and(|p| rustix::fs::unlink(&*p).is_ok())
        {
            dropped += 1;
        }
    }
    dropped
}

/// After a merge replaced `cfg.cache` (version `old`, now another): marks
/// this node's stage of `old` `replaced`, so process trees outside a job
/// that inherited it (`attach_known`) read the new cache from their next
/// process on, as a job's do once its pointer is dropped (`forget_jobs`).
/// Processes already running keep the stage they map; nodes other than
/// this one keep serving `old` to the trees that inherited it. The stage
/// itself stays usable for whoever reads a cache of that version.
pub fn superseded(cfg: &Config, old: u64) {
    let base = &cfg.stage_base;
    let Ok(c) = sys::cstr(base) else { return };
    let Ok(st) = rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW) else {
        return;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR
        || st.st_uid != rustix::process::geteuid().as_raw()
        || st.st_mode & 0o077 != 0
    {
        return;
    }
    let dir = join(base, format!("/{old:016x}").as_bytes());
    let Ok(d) = sys::cstr(&dir) else { return };
    if rustix::fs::statat(CWD, &*d, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    {
        let _ = write_new(&join(&dir, b"/replaced"), b"", 0o400);
    }
}

fn attach_in_job(cfg: &Config, job: &[u8]) -> Result<Attached, StageError> {
    let ptr = job_pointer(cfg, job);
    let known = || -> Option<Attached> {
        let (checksum, _) = read_pointer(&ptr)?;
        map_stage(
            &join(&cfg.stage_base, format!("/{checksum:016x}").as_bytes()),
            checksum,
        )
        .ok()
    };
    if let Some(a) = known() {
        return Ok(a);
    }
    let _lock = sys::lock_file(&join(&ptr, b".lock")).map_err(StageError::sys("stage lock"))?;
    if let Some(a) = known() {
        return Ok(a);
    }
    let (a, _) = attach_shared(cfg)?;
    // Served all the same if this fails; the next process asks the cache
    // again.
    let _ = write_pointer(cfg, &ptr, a.checksum);
    Ok(a)
}

/// Writes the job pointer `ptr` naming the stage `checksum` of
/// `cfg.cache` (call under `<ptr>.lock`). Written whole, then renamed: a
/// reader sees no pointer or all of it.
fn write_pointer(cfg: &Config, ptr: &[u8], checksum: u64) -> sys::SysResult<()> {
    let text = [format!("{checksum:016x}\n").as_bytes(), &cfg.cache, b"\n"].concat();
    replace_file(ptr, &text)
}

/// Writes `text` to a private file `path`: whole, then renamed into
/// place, so a reader sees the old file or all of the new one.
fn replace_file(ptr: &[u8], text: &[u8]) -> sys::SysResult<()> {
    let tmp = join(
        ptr,
        format!(".tmp.{}", rustix::process::getpid().as_raw_nonzero()).as_bytes(),
    );
    let tmp = sys::cstr(&tmp)?;
    let _ = rustix::fs::unlink(&*tmp);
    let written = write_new(tmp.to_bytes(), text, 0o600)
        .and_then(|_| rustix::fs::renameat(CWD, &*tmp, CWD, &*sys::cstr(ptr)?).map_err(sys::errno));
    if written.is_err() {
        let _ = rustix::fs::unlink(&*tmp);
    }
    written
}

/// Reads the shared cache's identity, then finds or builds its stage;
/// also returns the cache file's status as the open descriptor showed it
/// (what `seen_pointer` records).
fn attach_shared(cfg: &Config) -> Result<(Attached, rustix::fs::Stat), StageError> {
    let (fd, checksum, size, st) = cache_identity_stat(cfg)?;
    let id = format!("/{checksum:016x}");
    let dir = join(&cfg.stage_base, id.as_bytes());
    Ok((stage(cfg, &fd, checksum, size, &dir)?, st))
}

/// The verdict of `FMCACHE_VERIFY=stat` for a stage: taken once, under the
/// stage lock, by the first process that asks.
fn verified(a: &Attached, dir: &[u8]) -> Result<(), StageError> {
    let (fresh, stale) = (join(dir, b"/fresh"), join(dir, b"/stale"));
    let verdict = || -> Option<Result<(), StageError>> {
        if let Ok(c) = sys::cstr(&stale) {
            if let Ok((bytes, _)) = sys::read_file(&c, 1 << 16) {
                return Some(Err(StageError::Changed(format!(
                    "stale: {} changed since the pilot",
                    String::from_utf8_lossy(&bytes)
                ))));
            }
        }
        let c = sys::cstr(&fresh).ok()?;
        sys::stat_rec(&c, false).ok().map(|_| Ok(()))
    };
    if let Some(v) = verdict() {
        return v;
    }
    let _lock =
        sys::lock_file(&join(dir, b".verify.lock")).map_err(StageError::sys("verify lock"))?;
    if let Some(v) = verdict() {
        return v;
    }
    let view = CacheView::open(a.index.bytes(), Verify::Header)?;
    match first_changed(&view) {
        None => {
            let _ = write_new(&fresh, b"", 0o400);
            Ok(())
        }
        Some(p) => {
            let _ = write_new(&stale, &p, 0o400);
            Err(StageError::Changed(format!(
                "stale: {} changed since the pilot",
                show(&p)
            )))
        }
    }
}

/// The first file with served bytes whose live stat differs from the
/// recorded one (inode, size, mtime, ctime; a reinstall moves at least
/// one), or that is gone.
fn first_changed(view: &CacheView<'_>) -> Option<Vec<u8>> {
    for e in view.entries() {
        let (Some(_), Some(Ok(rec))) = (e.blob(), e.follow()) else {
            continue;
        };
        let same = sys::cstr(e.path())
            .ok()
            .and_then(|c| sys::stat_rec(&c, true).ok())
            .is_some_and(|now| {
                (
                    now.ino,
                    now.size,
                    now.mtime,
                    now.mtime_nsec,
                    now.ctime,
                    now.ctime_nsec,
                ) == (
                    rec.ino,
                    rec.size,
                    rec.mtime,
                    rec.mtime_nsec,
                    rec.ctime,
                    rec.ctime_nsec,
                )
            });
        if !same {
            return Some(e.path().to_vec());
        }
    }
    None
}

/// Maps this cache's stage, building it first if there is none.
fn stage(
    cfg: &Config,
    fd: &std::os::fd::OwnedFd,
    checksum: u64,
    size: u64,
    dir: &[u8],
) -> Result<Attached, StageError> {
    let dir = dir.to_vec();
    if let Ok(a) = map_stage(&dir, checksum) {
        used_now(&dir);
        return Ok(a);
    }
    let _lock = sys::lock_file(&join(&dir, b".lock")).map_err(StageError::sys("stage lock"))?;
    if let Ok(a) = map_stage(&dir, checksum) {
        used_now(&dir);
        return Ok(a);
    }
    let map = Mapping::map(fd, size as usize).map_err(StageError::sys("map"))?;
    let view = CacheView::open(map.bytes(), Verify::Full)?;
    // Builders killed half-way left `<id>.tmp.<pid>`: under the lock no
    // other builder of this stage is alive, so they all go.
    remove_half_built(&cfg.stage_base, &dir);
    let tmp = join(
        &dir,
        format!(".tmp.{}", rustix::process::getpid().as_raw_nonzero()).as_bytes(),
    );
    let built = build_stage(&view, map.bytes(), &tmp);
    if let Err(e) = built {
        let _ = sys::remove_tree(&tmp);
        return Err(StageError::Staging {
            base: cfg.stage_base.clone(),
            cause: Box::new(e),
        });
    }
    let (t, d) = (
        sys::cstr(&tmp).map_err(StageError::sys(""))?,
        sys::cstr(&dir).map_err(StageError::sys(""))?,
    );
    rustix::fs::renameat(CWD, &*t, CWD, &*d).map_err(StageError::rustix("stage rename"))?;
    let a = map_stage(&dir, checksum)?;
    // A new stage on this node: unused ones go while over the budget.
    let _ = prune(cfg, Some(checksum), false);
    Ok(a)
}

/// Marks a stage as used now (its directory's times): `prune` removes the
/// least recently used first. One local system call, when a process (or
/// a job's first process on the node) finds the stage.
fn used_now(dir: &[u8]) {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    let times = rustix::fs::Timestamps {
        last_access: now,
        last_modification: now,
    };
    if let Ok(c) = sys::cstr(dir) {
        let _ = rustix::fs::utimensat(CWD, &*c, &times, AtFlags::empty());
    }
}

/// The bytes a stage holds, from its index: the index itself and every
/// blob's contents. None if the index does not open.
/// What a stage holds: the byte count its builder wrote in `bytes`, else
/// (a stage built before that file, or by another build or format of
/// fmcache, whose index this build cannot read) the sizes of its files.
/// Never 0 for a stage that holds something: a stage that counted for
/// nothing would never be pruned, and stages left by an upgraded fmcache
/// would pile up in node memory until a reboot.
fn stage_bytes(dir: &[u8]) -> Option<u64> {
    let recorded = sys::cstr(&join(dir, b"/bytes"))
        .ok()
        .and_then(|c| sys::read_file(&c, 64).ok())
        .and_then(|(text, _)| std::str::from_utf8(&text).ok()?.trim().parse().ok());
    recorded.or_else(|| tree_bytes(dir))
}

/// The sizes of the regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &[u8]) -> Option<u64> {
    let c = sys::cstr(dir).ok()?;
    let mut total = 0u64;
    for d in sys::list_dir(&c).ok()? {
        if d.name == b"." || d.name == b".." {
            continue;
        }
        let child = join(&join(dir, b"/"), &d.name);
        let Ok(cc) = sys::cstr(&child) else { continue };
        let Ok(st) = rustix::fs::statat(CWD, &*cc, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        total += match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => tree_bytes(&child).unwrap_or(0),
            libc::S_IFREG => st.st_size as u64,
            _ => 0,
        };
    }
    Some(total)
}

/// The budget in bytes: `FMCACHE_STAGE_BUDGET`, a percentage taken of
/// the stage file system's size (0 when that cannot be read: the old
/// rule, keep only what is in use and the newest).
fn budget_bytes(cfg: &Config) -> u64 {
    match cfg.stage_budget {
        config::Budget::Bytes(b) => b,
        config::Budget::Percent(p) => sys::cstr(&cfg.stage_base)
            .ok()
            .and_then(|c| rustix::fs::statvfs(&*c).ok())
            .map_or(0, |v| {
                (v.f_blocks.saturating_mul(v.f_frsize) as u128 * p as u128 / 100) as u64
            }),
    }
}

/// Removes `<dir>.tmp.*` under `base` (call with the stage lock held).
fn remove_half_built(base: &[u8], dir: &[u8]) {
    let Some(name) = dir.strip_prefix(base).and_then(|n| n.strip_prefix(b"/")) else {
        return;
    };
    let prefix = [name, b".tmp."].concat();
    let Ok(c) = sys::cstr(base) else { return };
    for d in sys::list_dir(&c).unwrap_or_default() {
        if d.name.starts_with(&prefix) {
            let _ = sys::remove_tree(&join(&join(base, b"/"), &d.name));
        }
    }
}

/// The most threads that unpack a stage: past a few, writing into tmpfs
/// (one inode lock per directory, page allocation) gains little.
const MAX_WORKERS: usize = 8;

/// Threads to unpack a stage with: the CPUs this process may run on, from
/// its affinity mask (one system call). Never `available_parallelism`,
/// which reads /proc and cgroup files through libc: our own hooks.
fn workers() -> usize {
    rustix::thread::sched_getaffinity(None)
        .map(|s| s.count() as usize)
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

/// One staged file: the bytes of `blob` written to `target`.
struct Job<'v> {
    target: Vec<u8>,
    blob: &'v fmcache_format::Blob,
    stored: &'v [u8],
    mode: u32,
    entry: u64,
}

fn build_stage(view: &CacheView<'_>, bytes: &[u8], tmp: &[u8]) -> Result<(), StageError> {
    let e = |errno| StageError::Sys {
        what: String::new(),
        errno,
    };
    sys::mkdir_p(&join(tmp, b"/root"), 0o700).map_err(e)?;
    let meta = &bytes[..view.header().meta_size as usize];
    write_new(&join(tmp, b"/index"), meta, 0o400).map_err(e)?;
    // The files to write, each target once (the first entry naming it,
    // as a symlink and its target share one mirror), and their
    // directories, made here on one thread.
    let mut jobs: Vec<Job<'_>> = Vec::new();
    let mut targets = std::collections::HashSet::new();
    let mut made = std::collections::HashSet::new();
    for entry in view.entries() {
        let (Some(blob), Some(mirror)) = (entry.blob(), entry.mirror_path()) else {
            continue;
        };
        let stored = view
            .blob_stored(blob)
            .ok_or(fmcache_format::OpenError::Layout("blob out of bounds"))?;
        // The mirror is joined under root/: a `..` (or a relative path) in
        // a self-consistent but crafted cache must not write elsewhere.
        if !is_plain_absolute(mirror) {
            return Err(StageError::Unsafe(mirror.to_vec()));
        }
        let target = join(&join(tmp, b"/root"), mirror);
        if !targets.insert(target.clone()) {
            continue;
        }
        if let Some(parent) = crate::path::parent(&target) {
            if made.insert(parent.to_vec()) {
                sys::mkdir_p(parent, 0o700).map_err(e)?;
            }
        }
        let mode = match entry.follow() {
            Some(Ok(st)) => 0o400 | (st.mode & 0o100),
            _ => 0o400,
        };
        jobs.push(Job {
            target,
            blob,
            stored,
            mode,
            entry: entry.index() as u64,
        });
    }
    // Largest first, so no thread is left with a big file at the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.blob.size));
    let mut inodes = unpack_all(&jobs, workers())?;
    inodes.sort_unstable();
    let table: Vec<u8> = inodes
        .iter()
        .flat_map(|(i, e)| i.to_le_bytes().into_iter().chain(e.to_le_bytes()))
        .collect();
    write_new(&join(tmp, b"/inodes"), &table, 0o400).map_err(e)?;
    // What the stage holds, for the budget (`stage_bytes`): read without
    // this build's index reader, so any later build can count it.
    let contents: u64 = jobs.iter().map(|j| j.blob.size).sum();
    let bytes = meta.len() as u64 + contents + table.len() as u64;
    write_new(
        &join(tmp, b"/bytes"),
        format!("{bytes}\n").as_bytes(),
        0o400,
    )
    .map_err(e)?;
    Ok(())
}

/// Unpacks and writes every job on `threads` threads (this one and the
/// helpers it could start, `workers.rs`): each takes the next job until
/// none is left or one failed. Returns (inode, entry) of every file
/// written.
fn unpack_all(jobs: &[Job<'_>], threads: usize) -> Result<Vec<(u64, u64)>, StageError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<Vec<(u64, u64)>, StageError> {
        let mut unpacker = fmcache_format::Unpacker::new();
        let mut written = Vec::new();
        while !failed.load(Relaxed) {
            let Some(j) = jobs.get(next.fetch_add(1, Relaxed)) else {
                break;
            };
            let done = unpacker
                .contents(j.blob, j.stored)
                .map_err(|err| StageError::Blob {
                    path: j.target.clone(),
                    err,
                })
                .and_then(|data| match write_new(&j.target, data, j.mode) {
                    Ok(ino) => Ok(Some(ino)),
                    Err(libc::EEXIST) => Ok(None),
                    Err(errno) => Err(StageError::Sys {
                        what: show(&j.target),
                        errno,
                    }),
                });
            match done {
                Ok(Some(ino)) => written.push((ino, j.entry)),
                Ok(None) => {}
                Err(err) => {
                    failed.store(true, Relaxed);
                    return Err(err);
                }
            }
        }
        Ok(written)
    };
    let mut all: Result<Vec<(u64, u64)>, StageError> = Ok(Vec::new());
    for theirs in crate::workers::run(threads.min(jobs.len()), &work) {
        match (&mut all, theirs.unwrap_or(Err(StageError::Panicked))) {
            (Ok(mine), Ok(theirs)) => mine.extend(theirs),
            (Ok(_), Err(err)) => all = Err(err),
            (Err(_), _) => {}
        }
    }
    all
}

/// Creates a new file with `bytes`; returns its inode number.
fn write_new(path: &[u8], bytes: &[u8], mode: u32) -> sys::SysResult<u64> {
    let c = sys::cstr(path)?;
    let fd = sys::open(&c, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)?;
    sys::write_all(fd.as_fd(), bytes)?;
    Ok(rustix::fs::fstat(&fd).map_err(sys::errno)?.st_ino as u64)
}

fn map_file(path: &[u8]) -> sys::SysResult<(Mapping, u64, std::os::fd::OwnedFd)> {
    let c = sys::cstr(path)?;
    let fd = sys::open(&c, OFlags::RDONLY, 0)?;
    let st = rustix::fs::fstat(&fd).map_err(sys::errno)?;
    Ok((
        Mapping::map(&fd, st.st_size as usize)?,
        st.st_dev as u64,
        fd,
    ))
}

/// Maps a complete stage and marks it in use for this process's lifetime:
/// a shared flock on its index, which `prune` never removes a stage under.
/// The lock is taken before the rest is opened, so a stage removed while
/// we waited for it is seen as gone (its `inodes` no longer opens).
fn map_stage(dir: &[u8], checksum: u64) -> Result<Attached, StageError> {
    let (index, dev, hold) = map_file(&join(dir, b"/index")).map_err(StageError::sys(""))?;
    let hold = sys::out_of_the_way(hold);
    loop {
        match rustix::fs::flock(&hold, rustix::fs::FlockOperation::LockShared) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(StageError::rustix("stage lock")(e)),
        }
    }
    let (inodes, _, _) = map_file(&join(dir, b"/inodes")).map_err(StageError::sys(""))?;
    let view = CacheView::open(index.bytes(), Verify::Header)?;
    if view.header().checksum != checksum {
        return Err(StageError::Changed("stage does not match the cache".into()));
    }
    Ok(Attached {
        index,
        inodes,
        root: join(dir, b"/root"),
        stage_dev: dev,
        checksum,
        hold,
    })
}

/// Whether some process holds the stage `dir` (see `map_stage`). Taking
/// the exclusive lock succeeds only on a stage nobody maps; it is returned
/// so the caller removes the stage while still holding it.
fn unused(dir: &[u8]) -> Option<std::os::fd::OwnedFd> {
    let c = sys::cstr(&join(dir, b"/index")).ok()?;
    let fd = sys::open(&c, OFlags::RDONLY, 0).ok()?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .ok()
        .map(|()| fd)
}

/// Removes this user's complete stages that no process maps, least
/// recently used first, while all stages together hold more than the
/// budget (`FMCACHE_STAGE_BUDGET`; with `all`, zero), never the one with
/// checksum `keep`; then job pointers left naming no stage, and with
/// `all` also half-built stages and locks. Returns how many names went.
/// Run when a new stage is built, so stages cannot pile up past the
/// budget, and alternating between caches finds each one still staged.
pub fn prune(cfg: &Config, keep: Option<u64>, all: bool) -> Result<usize, StageError> {
    let base = &cfg.stage_base;
    let what = || format!("stage directory {}", show(base));
    let c = sys::cstr(base).map_err(StageError::sys(what()))?;
    let names: Vec<Vec<u8>> = sys::list_dir(&c)
        .map_err(StageError::sys(what()))?
        .into_iter()
        .map(|d| d.name)
        .filter(|n| n != b"." && n != b"..")
        .collect();
    let is_stage = |n: &[u8]| n.len() == 16 && n.iter().all(u8::is_ascii_hexdigit);
    let keep = keep.map(|k| format!("{k:016x}").into_bytes());
    let budget = if all { 0 } else { budget_bytes(cfg) };
    // (last used, bytes, name): oldest first.
    let mut stages: Vec<((i64, u64), u64, &[u8])> = names
        .iter()
        .filter(|n| is_stage(n))
        .map(|n| {
            let dir = join(&join(base, b"/"), n);
            let used = sys::cstr(&dir)
                .ok()
                .and_then(|c| rustix::fs::statat(CWD, &*c, AtFlags::SYMLINK_NOFOLLOW).ok())
                .map_or((0, 0), |st| (st.st_mtime, st.st_mtime_nsec));
            (used, stage_bytes(&dir).unwrap_or(0), n.as_slice())
        })
        .collect();
    stages.sort();
    let mut total: u64 = stages.iter().map(|s| s.1).sum();
    let mut removed = 0;
    let mut left: Vec<&[u8]> = Vec::new();
    for &(_, bytes, n) in &stages {
        let dir = join(&join(base, b"/"), n);
        let candidate = total > budget && keep.as_deref() != Some(n);
        let held = match candidate.then(|| unused(&dir)).flatten() {
            Some(lock) => {
                let gone = sys::remove_tree(&dir).is_ok();
                drop(lock);
                !gone
            }
            None => true,
        };
        if held {
            left.push(n);
        } else {
            removed += 1;
            total = total.saturating_sub(bytes);
        }
    }
    for n in names.iter().filter(|n| !is_stage(n)) {
        let p = join(&join(base, b"/"), n);
        // Job pointers and `seen_pointer`s: the first line names a stage.
        let pointer = (n.len() == 20 && n.starts_with(b"job.") && is_stage(&n[4..]))
            || (n.len() == 21 && n.starts_with(b"seen.") && is_stage(&n[5..]));
        let stale_pointer = pointer && {
            let target = read_pointer(&p).map(|(k, _)| format!("{k:016x}").into_bytes());
            !target.is_some_and(|t| left.contains(&t.as_slice()))
        };
        if (all || stale_pointer) && sys::remove_tree(&p).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Looks up a staged inode in the `inodes` table: the entry whose bytes it
/// holds.
pub fn staged_entry(inodes: &[u8], ino: u64) -> Option<u32> {
    let n = inodes.len() / 16;
    let at = |i: usize| -> Option<(u64, u64)> {
        let r = inodes.get(i * 16..i * 16 + 16)?;
        Some((
            u64::from_le_bytes(r[..8].try_into().ok()?),
            u64::from_le_bytes(r[8..].try_into().ok()?),
        ))
    };
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (i, e) = at(mid)?;
        match i.cmp(&ino) {
            core::cmp::Ordering::Equal => return u32::try_from(e).ok(),
            core::cmp::Ordering::Less => lo = mid + 1,
            core::cmp::Ordering::Greater => hi = mid,
        }
    }
    None
}

/// `fmcache stage --clean`: removes this user's stages that no process
/// uses, job pointers, half-built stages and locks.
pub fn clean(cfg: &Config) -> Result<usize, StageError> {
    private_dir(&cfg.stage_base)?;
    prune(cfg, None, true)
}

/// An absolute path without `.` or `..` components: safe to join under a
/// directory.
fn is_plain_absolute(p: &[u8]) -> bool {
    p.starts_with(b"/") && !crate::path::has_dot_components(p)
}

#[cfg(test)]
mod tests {
    use super::is_plain_absolute;
    use crate::error::StageError;

    /// What `attach` says about a cache it cannot use, as a kind the
    /// caller can tell apart (and the same one line as before).
    #[test]
    fn attach_names_why_a_cache_cannot_be_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fmcache-stage-err-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cache = dir.join("c.dat");
        let stage = dir.join("stage");
        let cfg = {
            let (c, s) = (cache.clone(), stage.clone());
            crate::config::Config::from_lookup(
                move |k| match k {
                    "DLFM_OP" => Some("read-cache".into()),
                    "FMCACHE_FILE" => Some(c.clone().into_os_string()),
                    "FMCACHE_STAGE_DIR" => Some(s.clone().into_os_string()),
                    _ => None,
                },
                b"/",
                rustix::process::geteuid().as_raw(),
            )
        };
        let err = super::attach(&cfg).err().expect("no cache, no stage");
        assert!(matches!(err, StageError::NotFound), "{err:?}");
        assert_eq!(err.to_string(), "not found");

        std::fs::write(&cache, vec![0u8; 4096]).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = super::attach(&cfg).err().expect("not a cache");
        assert!(
            matches!(err, StageError::Format(fmcache_format::OpenError::BadMagic)),
            "{err:?}"
        );

        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = super::attach(&cfg).err().expect("writable by others");
        assert!(matches!(err, StageError::Refused(_)), "{err:?}");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_inherited_attachment_is_for_one_cache_and_stage_base() {
        use super::{attachment_value, inherited_checksum};
        let cfg = |cache: &str, stage: &str| {
            let (cache, stage) = (cache.to_string(), stage.to_string());
            crate::config::Config::from_lookup(
                move |k| match k {
                    "FMCACHE_FILE" => Some(cache.clone().into()),
                    "FMCACHE_STAGE_DIR" => Some(stage.clone().into()),
                    _ => None,
                },
                b"/",
                1000,
            )
        };
        let a = cfg("/sw/app.fmcache", "/dev/shm/fmcache-1000");
        let v = attachment_value(&a, 0xdead_beef);
        assert_eq!(v.len(), 33);
        assert_eq!(inherited_checksum(&a, v.as_bytes()), Some(0xdead_beef));
        for other in [
            cfg("/sw/other.fmcache", "/dev/shm/fmcache-1000"),
            cfg("/sw/app.fmcache", "/tmp/elsewhere"),
        ] {
            assert_eq!(inherited_checksum(&other, v.as_bytes()), None);
        }
        let key = &v[17..];
        for bad in [
            format!("/tmp/x/00000000deadbeef:{key}"),
            format!("../../../../etc:{key}"),
            format!("00000000deadbeeg:{key}"),
            format!("00000000deadbeef;{key}"),
            format!("+0000000deadbeef:{key}"),
            format!("{v}0"),
            String::new(),
        ] {
            assert_eq!(inherited_checksum(&a, bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn mirrors_cannot_climb_out_of_the_stage() {
        assert!(is_plain_absolute(b"/sw/lib/libz.so.1"));
        assert!(!is_plain_absolute(b"/sw/../../etc/passwd"));
        assert!(!is_plain_absolute(b"/sw/./x"));
        assert!(!is_plain_absolute(b"relative/x"));
        assert!(!is_plain_absolute(b"/.."));
    }
}
