//! The first few paths a serving process asked for that the cache did not
//! hold (`Outcome::Miss`), written into its statistics line at exit so
//! `fmcache stats` and `fmcache report` can name what to re-record.
//! Fixed slots of atomics: no allocation, no lock, on the serving path.

use crate::cargs::CPath;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};

/// Paths kept per process.
pub const SLOTS: usize = 16;
/// Longest path kept (longer ones are cut, and marked so).
const LEN: usize = 512;

struct Slot {
    /// Bytes filled; 0 while the slot is being written or empty.
    len: AtomicUsize,
    bytes: [AtomicU8; LEN],
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static PATHS: [Slot; SLOTS] = [const {
    Slot {
        len: AtomicUsize::new(0),
        bytes: [const { AtomicU8::new(0) }; LEN],
    }
}; SLOTS];

fn same(s: &Slot, p: &[u8]) -> bool {
    let n = s.len.load(Acquire);
    n == p.len().min(LEN)
        && s.bytes[..n]
            .iter()
            .zip(p)
            .all(|(b, &c)| b.load(Relaxed) == c)
}

/// Keeps `p` (as the program spelled it) if a slot is free and no slot
/// holds it yet.
pub fn note(p: CPath<'_>) {
    if NEXT.load(Relaxed) >= SLOTS {
        return;
    }
    let Some(p) = p.bytes() else { return };
    if p.is_empty() || PATHS.iter().any(|s| same(s, p)) {
        return;
    }
    let i = NEXT.fetch_add(1, Relaxed);
    let Some(s) = PATHS.get(i) else { return };
    let n = p.len().min(LEN);
    for (b, &c) in s.bytes.iter().zip(&p[..n]) {
        b.store(c, Relaxed);
    }
    s.len.store(n, Release);
}

/// A forked child lists its own misses.
pub fn after_fork() {
    for s in &PATHS {
        s.len.store(0, Relaxed);
    }
    NEXT.store(0, Relaxed);
}

/// The kept paths as ` missed_path=<path>` fields of the statistics line
/// (space, `%`, `=` and control bytes as `%XX`, so the line stays one line
/// of `key=value` fields); at exit only.
pub fn fields() -> String {
    let mut out = String::new();
    for s in &PATHS {
        let n = s.len.load(Acquire);
        if n == 0 {
            continue;
        }
        out.push_str(" missed_path=");
        for b in &s.bytes[..n] {
            match b.load(Relaxed) {
                c @ (b' ' | b'%' | b'=' | 0..=0x1f | 0x7f..) => out.push_str(&format!("%{c:02X}")),
                c => out.push(c as char),
            }
        }
    }
    out
}
