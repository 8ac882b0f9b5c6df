//! Where this copy counts: its own counters, or its slot of the node's
//! live file once stats.rs has one. One atomic load per call.

use core::sync::atomic::{AtomicPtr, Ordering::*};

/// Per-process counters, written at exit when FMCACHE_STATS is set.
pub use fmcache_core::live::Counters;

/// This copy's counters until it has a live slot (stats.rs), and when it
/// has none (no FMCACHE_STATS, a full or refused file).
static OWN: Counters = Counters::new();
/// The counters in this copy's slot of the node's live file, if any.
static LIVE: AtomicPtr<Counters> = AtomicPtr::new(core::ptr::null_mut());

/// Where this copy counts: one atomic load on every call.
#[inline]
pub fn counters() -> &'static Counters {
    let p = LIVE.load(Relaxed);
    if p.is_null() {
        &OWN
    } else {
        // SAFETY: set by `count_into` to a slot of a shared mapping that
        // is never unmapped.
        unsafe { &*p }
    }
}

/// Counts into `c` from now on (what was counted so far carried over),
/// or into this copy's own counters again (`None`, zeroed).
pub fn count_into(c: Option<&'static Counters>) {
    match c {
        Some(c) => {
            for (to, from) in c.all().iter().zip(counters().all()) {
                to.fetch_add(from.load(Relaxed), Relaxed);
            }
            LIVE.store(core::ptr::from_ref(c).cast_mut(), Release);
        }
        None => {
            LIVE.store(core::ptr::null_mut(), Release);
            OWN.reset();
        }
    }
}
