//! FMCACHE_STATS: one line per process at exit, summed by `fmcache stats`;
//! and, from the start, the counters in a slot of the node's live file
//! (`fmcache_core::live`), so a process killed by a signal is counted too.

use core::ffi::CStr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering::*};
use std::os::fd::AsFd;

use fmcache_core::live::{self, Slot, Table};
use rustix::fs::OFlags;

use crate::counters::counters;

static PATH: AtomicPtr<Vec<u8>> = AtomicPtr::new(core::ptr::null_mut());
static OP: AtomicPtr<&'static str> = AtomicPtr::new(core::ptr::null_mut());
/// The node's live file, mapped shared (never unmapped).
static TABLE: AtomicPtr<Table> = AtomicPtr::new(core::ptr::null_mut());
/// This copy's slot in it.
static SLOT: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());
/// `unstaged_libs` while there is no slot.
static UNSTAGED: AtomicU32 = AtomicU32::new(0);

/// la_objopen while serving: ld.so mapped a library from neither the
/// stage nor a system library directory (the shared file system).
pub fn count_unstaged() {
    match slot() {
        Some(s) => s.unstaged_libs.fetch_add(1, Relaxed),
        None => UNSTAGED.fetch_add(1, Relaxed),
    };
}

fn slot() -> Option<&'static Slot> {
    // SAFETY: null or a slot of the never-unmapped table.
    unsafe { SLOT.load(Acquire).as_ref() }
}

fn unstaged() -> u32 {
    slot().map_or_else(|| UNSTAGED.load(Relaxed), |s| s.unstaged_libs.load(Relaxed))
}

/// Keeps the statistics file and, when recording or serving, maps the
/// node's live file and counts into a slot of it. Constructor only. An
/// unusable live file gives the reason (one line for the caller to print);
/// the line at exit is written all the same.
pub fn configure(path: Option<Vec<u8>>, op: &'static str) -> Result<(), String> {
    OP.store(Box::into_raw(Box::new(op)), Release);
    let Some(p) = path else { return Ok(()) };
    let live_path = (op != "off").then(|| live_path(&p)).flatten();
    PATH.store(Box::into_raw(Box::new(p)), Release);
    let Some(lp) = live_path else { return Ok(()) };
    let table = map_live(&lp).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&lp)))?;
    TABLE.store(core::ptr::from_ref(table).cast_mut(), Release);
    claim();
    Ok(())
}

/// `<stats>.live.<nodename>`.
fn live_path(stats: &[u8]) -> Option<Vec<u8>> {
    let uts = rustix::system::uname();
    let node = uts.nodename().to_bytes();
    if node.is_empty() || node.contains(&b'/') {
        return None;
    }
    let mut p = live::prefix_of(stats);
    p.extend_from_slice(node);
    Some(p)
}

/// Opens (creating it 0600 if needed) and maps the live file: a regular
/// file of ours, never through a symlink.
fn map_live(path: &[u8]) -> Result<&'static Table, String> {
    let c = fmcache_core::sys::cstr(path).map_err(|e| e.to_string())?;
    let fd = fmcache_core::sys::open(
        &c,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        0o600,
    )
    .map_err(|e| format!("cannot open: {}", fmcache_core::sys::strerror(e)))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(format!(
            "owned by uid {}, not by you (uid {euid}): refused",
            st.st_uid
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("not a regular file: refused".into());
    }
    if st.st_mode & 0o077 != 0 {
        return Err(format!(
            "readable or writable by others (mode {:o}): refused",
            st.st_mode & 0o777
        ));
    }
    if (st.st_size as usize) < live::FILE_SIZE {
        rustix::fs::ftruncate(&fd, live::FILE_SIZE as u64).map_err(|e| e.to_string())?;
    }
    use rustix::mm::{MapFlags, ProtFlags};
    // SAFETY: a fresh shared mapping of a file of FILE_SIZE bytes; every
    // field of Table is an atomic (or padding), valid for any bytes, and
    // shared with other processes only through atomics. Never unmapped.
    let ptr = unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            live::FILE_SIZE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: as above; the mapping outlives the descriptor.
    Ok(unsafe { &*ptr.cast::<Table>() })
}

/// Claims this copy's slot and counts into it. No allocation: also runs
/// in a forked child (after_fork).
fn claim() {
    let t = TABLE.load(Acquire);
    if t.is_null() {
        return;
    }
    // SAFETY: set in configure to a mapping never unmapped.
    let t = unsafe { &*t };
    // SAFETY: OP is null or leaked in configure, never freed.
    let op = match unsafe { OP.load(Acquire).as_ref() }.copied() {
        Some("record") => 1,
        Some("serve") => 2,
        _ => 0,
    };
    let flags = (op << live::OP_SHIFT) | u32::from(crate::carry::is_auditor());
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let exe = program_name();
    if let Some(s) = t.claim(pid, flags, exe.to_bytes()) {
        s.unstaged_libs
            .fetch_add(UNSTAGED.swap(0, Relaxed), Relaxed);
        SLOT.store(core::ptr::from_ref(s).cast_mut(), Release);
        crate::counters::count_into(Some(&s.counters));
    }
}

/// argv[0] as the kernel left it in AT_EXECFN (no allocation).
fn program_name() -> &'static CStr {
    // SAFETY: getauxval has no preconditions; AT_EXECFN, when present, is
    // a C string on the process's initial stack, alive as long as it.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const core::ffi::c_char;
    if p.is_null() {
        return c"";
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(p) }
}

/// A forked child counts from zero, into a slot of its own (the parent's
/// slot is in the shared mapping the child inherited).
pub fn after_fork() {
    crate::missed::after_fork();
    SLOT.store(core::ptr::null_mut(), Release);
    UNSTAGED.store(0, Relaxed);
    crate::counters::count_into(None);
    claim();
}

pub fn write() {
    let p = PATH.load(Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: leaked at configure time, never freed.
    let path = unsafe { &*p };
    // SAFETY: as in claim.
    let op = unsafe { OP.load(Acquire).as_ref() }
        .copied()
        .unwrap_or("off");
    let exe = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Both copies of an audited process write a line; the auditor's
    // counts its library searches and is marked so it is not a process.
    let copy = if crate::carry::is_auditor() {
        " copy=auditor"
    } else {
        ""
    };
    let c = counters();
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let line = format!(
        "pid={} op={}{copy} served={} missed={} passthrough={} recorded={} unstaged_libs={}{} exe={}\n",
        pid,
        op,
        c.served.load(Relaxed),
        c.missed.load(Relaxed),
        c.passthrough.load(Relaxed),
        c.recorded.load(Relaxed),
        unstaged(),
        crate::missed::fields(),
        exe
    );
    if let Ok(c) = fmcache_core::sys::cstr(path) {
        if let Ok(fd) =
            fmcache_core::sys::open(&c, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE, 0o644)
        {
            let _ = fmcache_core::sys::write_all(fd.as_fd(), line.as_bytes());
        }
    }
    // The line holds the counts now: the slot is no longer a process
    // that did not end.
    let s = SLOT.swap(core::ptr::null_mut(), AcqRel);
    if !s.is_null() {
        // SAFETY: a slot of the never-unmapped table.
        unsafe { &*s }.finish();
    }
}
