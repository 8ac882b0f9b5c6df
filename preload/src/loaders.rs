//! Who loaded whom: ld.so's private `l_loader`, rebuilt from the audit
//! callbacks, for the DT_RPATH chain of a bare-name search.
//!
//! Without a DT_RUNPATH on the requesting object, ld.so searches the
//! DT_RPATH of the requester, of the object that loaded it, and so on up
//! (then the executable's, if not met on the way): a chain through
//! `l_loader`, which no public interface shows. The audit callbacks do:
//! every object ld.so maps was first searched for (`la_objsearch` with
//! LA_SER_ORIG, whose cookie is the requester) and is then announced
//! (`la_objopen`), with nothing mapped in between (ld.so holds its lock).
//! A `dlopen`'s own object has no loader (ld.so drops it after the search,
//! `__RTLD_CALLMAP`): it is the first object of a new activity after
//! start-up, which `la_activity(LA_ACT_ADD)` announces between its search
//! and its `la_objopen`. An object whose loader is unknown ends the chain
//! as unknown, and the search is left to ld.so.
//!
//! Chosen over recording ld.so's final answer per (requester, name,
//! environment) and replaying it: the chain is the input ld.so itself
//! uses, so a production run whose environment differs from the pilot's
//! (LD_LIBRARY_PATH, another requester) is still answered exactly, and no
//! format change is needed.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use crate::carry::MapRef;

/// Objects tracked; more (a process with more live objects) are unknown.
const SLOTS: usize = 4096;
/// `LOADER` value of an object known to have no loader.
const NONE: usize = 1;

static MAP: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Slots ever taken (a prefix of the table): every scan stops there, so a
/// search walking a chain costs what the process has loaded, not 4,096
/// comparisons per step.
static USED: AtomicUsize = AtomicUsize::new(0);
static LOADER: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// The requester of the last LA_SER_ORIG search (0: none pending).
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// The pending search is a dlopen's own (its object gets no loader).
static PENDING_DLOPEN: AtomicBool = AtomicBool::new(false);
/// The executable's link map (the base namespace's first object).
static MAIN: AtomicUsize = AtomicUsize::new(0);

/// la_objsearch, LA_SER_ORIG: `requester` searches for a new object.
pub fn note_search(requester: Option<MapRef>) {
    PENDING.store(requester.map_or(0, MapRef::addr), Relaxed);
    PENDING_DLOPEN.store(false, Relaxed);
}

/// la_activity(LA_ACT_ADD) after start-up: the pending search was a
/// dlopen's.
pub fn note_dlopen() {
    if crate::libsearch::AFTER_STARTUP.load(Relaxed) {
        PENDING_DLOPEN.store(true, Relaxed);
    }
}

/// la_objopen: `map` was mapped by the pending search (or is the
/// executable, loaded by the kernel).
pub fn note_open(map: MapRef, lmid: libc::c_long) {
    let m = map.get();
    let pending = PENDING.swap(0, Relaxed);
    let loader = if lmid == 0 && m.l_prev.is_null() {
        // The executable: no search, no loader; the chain's end.
        MAIN.store(map.addr(), Relaxed);
        NONE
    } else if pending == 0 {
        return;
    } else if PENDING_DLOPEN.swap(false, Relaxed) {
        NONE
    } else {
        pending
    };
    // ld.so's lock serialises the la_* callbacks: no other writer.
    let used = USED.load(Relaxed);
    let free = (0..used)
        .find(|&i| MAP[i].load(Relaxed) == 0)
        .or((used < SLOTS).then_some(used));
    if let Some(i) = free {
        LOADER[i].store(loader, Relaxed);
        MAP[i].store(map.addr(), Relaxed);
        USED.store(used.max(i + 1), Relaxed);
    }
}

/// The slots taken so far: (map, loader).
fn taken() -> impl Iterator<Item = (&'static AtomicUsize, &'static AtomicUsize)> {
    MAP.iter().zip(&LOADER).take(USED.load(Relaxed))
}

/// la_objclose: `map` is gone.
pub fn note_close(map: usize) {
    for (k, l) in taken() {
        if k.load(Relaxed) == map {
            l.store(0, Relaxed);
            k.store(0, Relaxed);
        }
    }
    if MAIN.load(Relaxed) == map {
        MAIN.store(0, Relaxed);
    }
}

/// What is known of `map`'s loader.
pub enum Loader {
    Is(MapRef),
    /// The chain ends here.
    None,
    Unknown,
}

pub fn loader_of(map: MapRef) -> Loader {
    for (k, l) in taken() {
        if k.load(Relaxed) == map.addr() {
            return match l.load(Relaxed) {
                0 => Loader::Unknown,
                NONE => Loader::None,
                // SAFETY: a loader is a searching object ld.so announced;
                // it outlives what it loaded (ld.so closes dependants
                // first), and `map` is still open.
                p => unsafe { MapRef::new(p as *const _) }.map_or(Loader::Unknown, Loader::Is),
            };
        }
    }
    Loader::Unknown
}

/// The executable's link map, once announced.
pub fn main_map() -> Option<MapRef> {
    // SAFETY: the executable's link map, announced and cleared at its
    // la_objclose (0 until then: None).
    unsafe { MapRef::new(MAIN.load(Relaxed) as *const _) }
}
