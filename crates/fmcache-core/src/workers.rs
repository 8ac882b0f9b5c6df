//! Helper threads for staging, on stacks of our own.
//!
//! Staging runs in the constructor of either copy of the library, and the
//! auditor copy lives in ld.so's own namespace, which starts before the
//! program's libc has taken over the loader's allocator. A thread started
//! there on a stack from glibc ends in glibc's stack cache with TLS blocks
//! from that early allocator; the program's next thread reuses the cached
//! stack and frees them with its own `free` (an abort, seen in the tests).
//! A stack we hand to `pthread_create` is never cached: glibc frees the
//! thread's TLS at `pthread_join`, here, with the allocator that made it.

use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Each helper's stack: the work is a loop over decoder calls whose state
/// lives on the heap. One more page below it, inaccessible, stops an
/// overflow.
const STACK: usize = 1 << 20;
const GUARD: usize = 1 << 12;

struct Slot<'f, F, R> {
    f: &'f F,
    out: Option<R>,
}

extern "C" fn start<F: Fn() -> R + Sync, R: Send>(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Slot` `run` handed to pthread_create, alive
    // and touched by no one else until `run` has joined this thread.
    let slot = unsafe { &mut *arg.cast::<Slot<'_, F, R>>() };
    // A panic must not unwind into C: it becomes a missing result.
    slot.out = catch_unwind(AssertUnwindSafe(|| (slot.f)())).ok();
    core::ptr::null_mut()
}

/// Runs `f` on this thread and on up to `threads - 1` helpers, and
/// returns every result: this thread's first, then each helper's, `None`
/// for a helper that panicked. A helper that cannot start is left out.
pub fn run<F: Fn() -> R + Sync, R: Send>(threads: usize, f: &F) -> Vec<Option<R>> {
    // Never moved once helpers hold pointers into it.
    let mut slots: Vec<Slot<'_, F, R>> =
        (1..threads.max(1)).map(|_| Slot { f, out: None }).collect();
    let mut started: Vec<(libc::pthread_t, *mut c_void)> = Vec::new();
    for slot in slots.iter_mut() {
        if let Some(t) = spawn(slot) {
            started.push(t);
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(f)).ok();
    for (tid, mem) in started {
        // SAFETY: a thread we started and have not joined; after the join
        // glibc no longer uses its stack, which we then unmap.
        unsafe {
            libc::pthread_join(tid, core::ptr::null_mut());
            let _ = rustix::mm::munmap(mem, STACK + GUARD);
        }
    }
    let mut out = vec![mine];
    out.extend(slots.into_iter().map(|s| s.out));
    out
}

/// Starts one helper on `slot` with a fresh stack; None if it cannot.
fn spawn<F: Fn() -> R + Sync, R: Send>(
    slot: &mut Slot<'_, F, R>,
) -> Option<(libc::pthread_t, *mut c_void)> {
    use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
    // SAFETY: a new private anonymous mapping, ours alone.
    let mem = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            STACK + GUARD,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::STACK,
        )
    }
    .ok()?;
    // SAFETY: the lowest page of the mapping made above.
    let guarded = unsafe { rustix::mm::mprotect(mem, GUARD, MprotectFlags::empty()) }.is_ok();
    // SAFETY: attr is initialised before use and destroyed after; the stack
    // is the mapping above the guard page, STACK bytes, page aligned; the
    // slot outlives the thread (joined in `run`).
    let started = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut tid: libc::pthread_t = 0;
        let ok = guarded
            && libc::pthread_attr_init(&mut attr) == 0
            && libc::pthread_attr_setstack(&mut attr, mem.cast::<u8>().add(GUARD).cast(), STACK)
                == 0
            && libc::pthread_create(
                &mut tid,
                &attr,
                start::<F, R>,
                (slot as *mut Slot<'_, F, R>).cast(),
            ) == 0;
        libc::pthread_attr_destroy(&mut attr);
        ok.then_some(tid)
    };
    match started {
        Some(tid) => Some((tid, mem)),
        None => {
            // SAFETY: the mapping made above, used by no thread.
            let _ = unsafe { rustix::mm::munmap(mem, STACK + GUARD) };
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_thread_returns_its_result() {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let out = super::run(4, &|| n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        assert_eq!(out.len(), 4);
        let mut got: Vec<usize> = out.into_iter().map(Option::unwrap).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_panicking_helper_gives_none() {
        let first = std::sync::atomic::AtomicBool::new(true);
        let out = super::run(2, &|| {
            if !first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("helper");
            }
        });
        assert_eq!(out.iter().filter(|o| o.is_none()).count(), 1);
    }
}
