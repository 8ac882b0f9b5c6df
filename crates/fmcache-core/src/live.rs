//! Counters of running processes, in a shared file per node beside the
//! `FMCACHE_STATS` file: `<stats>.live.<nodename>`.
//!
//! A process writes its statistics line at exit; one killed by a signal
//! (`multiprocessing.Pool.terminate`, which `with Pool()` calls, SIGKILL,
//! a job's time limit) runs no code and would leave none. So each copy of
//! the library counts into a slot of this file, mapped shared, from its
//! start: the counts are on disk whatever ends the process. At a normal
//! end the copy writes its line and marks the slot done; `fmcache stats`
//! adds the slots still live (killed, or still running). Per node, since
//! pids are, and a shared mapping is coherent only within one kernel.
//!
//! Layout (little-endian, all fields naturally aligned atomics): a 64-byte
//! header (`FMCLIVE1`, the number of slots ever used) and `SLOTS` slots of
//! 64 bytes. A slot is free (0), being claimed (3), live (1) or done (2);
//! done and free slots are claimed again, so the file never grows.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

pub const MAGIC: u64 = u64::from_le_bytes(*b"FMCLIVE1");
pub const SLOTS: usize = 4096;
pub const FILE_SIZE: usize = core::mem::size_of::<Header>() + SLOTS * core::mem::size_of::<Slot>();

pub const FREE: u32 = 0;
pub const LIVE: u32 = 1;
pub const DONE: u32 = 2;
const CLAIMING: u32 = 3;

/// `Slot::flags`: the auditor copy of its process.
pub const AUDITOR: u32 = 1;
/// `Slot::flags`: the mode, `op << 8` (1 record, 2 serve).
pub const OP_SHIFT: u32 = 8;

/// The counters of one copy of the library in one process.
#[repr(C)]
#[derive(Default)]
pub struct Counters {
    /// Answered from the cache (including failures it knew).
    pub served: AtomicU64,
    /// Looked up but not answerable: passed through.
    pub missed: AtomicU64,
    /// Not for the cache (writes, unsupported flags, fds): passed through.
    pub passthrough: AtomicU64,
    /// Probes written to the journal.
    pub recorded: AtomicU64,
}

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            served: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            passthrough: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        }
    }

    pub fn reset(&self) {
        for c in self.all() {
            c.store(0, Relaxed);
        }
    }

    /// served, missed, passthrough, recorded.
    pub fn all(&self) -> [&AtomicU64; 4] {
        [
            &self.served,
            &self.missed,
            &self.passthrough,
            &self.recorded,
        ]
    }
}

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    /// Slots ever claimed (a prefix of the table): claims and readers
    /// look no further.
    pub used: AtomicU32,
    _pad: [u32; 13],
}

#[repr(C)]
pub struct Slot {
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub flags: AtomicU32,
    /// Libraries ld.so mapped from outside the stage and the system
    /// library directories while serving (the auditor copy counts).
    pub unstaged_libs: AtomicU32,
    pub counters: Counters,
    /// The program's name (argv[0]'s last component), NUL-padded.
    pub exe: [AtomicU64; 2],
}

/// The file, mapped.
#[repr(C)]
pub struct Table {
    pub header: Header,
    pub slots: [Slot; SLOTS],
}

const _: () = assert!(core::mem::size_of::<Slot>() == 64);
// The layout other builds read (`fmcache stats`): the counter took the
// padding word before the counters.
const _: () = assert!(core::mem::offset_of!(Slot, unstaged_libs) == 12);
const _: () = assert!(core::mem::offset_of!(Slot, counters) == 16);
const _: () = assert!(core::mem::offset_of!(Slot, exe) == 48);
const _: () = assert!(core::mem::size_of::<Header>() == 64);
const _: () = assert!(core::mem::size_of::<Table>() == FILE_SIZE);

impl Table {
    /// A slot for `pid`: its own live one with the same flags (the same
    /// process before an exec: its counts go on), else a free or done one,
    /// else a new one; `None` when all are live. No allocation, no lock.
    pub fn claim(&self, pid: u32, flags: u32, exe: &[u8]) -> Option<&Slot> {
        self.header.magic.store(MAGIC, Relaxed);
        let used = (self.header.used.load(Acquire) as usize).min(SLOTS);
        for s in &self.slots[..used] {
            if s.state.load(Acquire) == LIVE
                && s.pid.load(Relaxed) == pid
                && s.flags.load(Relaxed) == flags
            {
                s.set_exe(exe);
                return Some(s);
            }
        }
        for s in &self.slots[..used] {
            for from in [DONE, FREE] {
                if s.state
                    .compare_exchange(from, CLAIMING, Acquire, Relaxed)
                    .is_ok()
                {
                    return Some(s.start(pid, flags, exe));
                }
            }
        }
        loop {
            let i = self.header.used.fetch_add(1, AcqRel) as usize;
            if i >= SLOTS {
                self.header.used.store(SLOTS as u32, Relaxed);
                return None;
            }
            let s = &self.slots[i];
            if s.state
                .compare_exchange(FREE, CLAIMING, Acquire, Relaxed)
                .is_ok()
            {
                return Some(s.start(pid, flags, exe));
            }
        }
    }

    /// The slots a reader should look at.
    pub fn used(&self) -> &[Slot] {
        &self.slots[..(self.header.used.load(Acquire) as usize).min(SLOTS)]
    }
}

impl Slot {
    fn start(&self, pid: u32, flags: u32, exe: &[u8]) -> &Slot {
        self.counters.reset();
        self.unstaged_libs.store(0, Relaxed);
        self.pid.store(pid, Relaxed);
        self.flags.store(flags, Relaxed);
        self.set_exe(exe);
        self.state.store(LIVE, Release);
        self
    }

    fn set_exe(&self, exe: &[u8]) {
        let mut b = [0u8; 16];
        let name = crate::path::file_name(exe);
        let n = name.len().min(16);
        b[..n].copy_from_slice(&name[..n]);
        self.exe[0].store(
            u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
            Relaxed,
        );
        self.exe[1].store(
            u64::from_le_bytes(b[8..].try_into().unwrap_or_default()),
            Relaxed,
        );
    }

    /// The program's name, as stored (at most 16 bytes).
    pub fn exe(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.exe[0].load(Relaxed).to_le_bytes());
        v.extend_from_slice(&self.exe[1].load(Relaxed).to_le_bytes());
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    }

    /// Marks the slot done (its line is written).
    pub fn finish(&self) {
        self.state.store(DONE, Release);
    }
}

/// `<stats>.live.` : the prefix of every node's file.
pub fn prefix_of(stats: &[u8]) -> Vec<u8> {
    let mut p = stats.to_vec();
    p.extend_from_slice(b".live.");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<Table> {
        // SAFETY: all-zero bytes are a valid Table (atomics and arrays).
        unsafe { Box::new(core::mem::zeroed()) }
    }

    #[test]
    fn claims_reuse_done_slots_and_adopt_their_own() {
        let t = table();
        let a = t.claim(10, 0, b"/bin/a").map(|s| s as *const Slot).unwrap();
        let b = t.claim(11, 0, b"b").map(|s| s as *const Slot).unwrap();
        assert_ne!(a, b);
        // The same pid and flags again (after an exec): the same slot.
        assert_eq!(t.claim(10, 0, b"c").map(|s| s as *const Slot), Some(a));
        // SAFETY: a points into t.
        unsafe { &*a }.finish();
        assert_eq!(
            t.claim(12, AUDITOR, b"d").map(|s| s as *const Slot),
            Some(a)
        );
        assert_eq!(t.used().len(), 2);
        assert_eq!(t.used()[0].exe(), b"d");
    }

    #[test]
    fn a_full_table_gives_none() {
        let t = table();
        for pid in 0..SLOTS as u32 {
            assert!(t.claim(pid + 1, 0, b"x").is_some());
        }
        assert!(t.claim(999_999, 0, b"x").is_none());
        assert_eq!(t.used().len(), SLOTS);
    }
}
