//! FMCACHE_STATS: one line per process at exit, summed by `fmcache stats`.

use core::sync::atomic::{AtomicPtr, Ordering::*};
use std::os::fd::AsFd;

use crate::state::COUNTERS;

static PATH: AtomicPtr<Vec<u8>> = AtomicPtr::new(core::ptr::null_mut());
static OP: AtomicPtr<&'static str> = AtomicPtr::new(core::ptr::null_mut());

pub fn configure(path: Option<Vec<u8>>, op: &'static str) {
    if let Some(p) = path {
        PATH.store(Box::into_raw(Box::new(p)), Release);
    }
    OP.store(Box::into_raw(Box::new(op)), Release);
}

pub fn write() {
    let p = PATH.load(Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: leaked at configure time, never freed.
    let path = unsafe { &*p };
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
    let line = format!(
        "pid={} op={}{copy} served={} missed={} passthrough={} recorded={} exe={}\n",
        rustix::process::getpid().as_raw_nonzero(),
        op,
        COUNTERS.served.load(Relaxed),
        COUNTERS.missed.load(Relaxed),
        COUNTERS.passthrough.load(Relaxed),
        COUNTERS.recorded.load(Relaxed),
        exe
    );
    use rustix::fs::OFlags;
    if let Ok(c) = fmcache_core::sys::cstr(path) {
        if let Ok(fd) =
            fmcache_core::sys::open(&c, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE, 0o644)
        {
            let _ = fmcache_core::sys::write_all(fd.as_fd(), line.as_bytes());
        }
    }
}
