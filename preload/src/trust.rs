//! What this process stopped trusting because it changed it, shared by
//! both copies of the library (preload and auditor).
//!
//! - one bit per entry (the path or its listing changed);
//! - a growable set of prefixes (hashes of paths under which every entry
//!   is stale: a directory renamed, removed or replaced), added only when
//!   the cache holds entries under the path, so changes outside the cache
//!   take no memory;
//! - an index from inode number to entries, built on the first change, so
//!   that a change made under any spelling (a symlinked directory, a file
//!   symlink, a hard link, `..`, a dirfd) reaches every entry naming the
//!   same file or directory;
//! - `all`: nothing is trusted (a change we could not place; memory for
//!   the tables could not be had). Serving then passes every call through,
//!   while streams and descriptors already handed out keep working.
//!
//! Readers (every probe) take no lock. Writers (calls that change the
//! tree, a few per change) serialise on a spin lock; a writer re-entered
//! from a signal handler on its own thread distrusts everything instead of
//! waiting for itself. Memory comes from mmap, never malloc.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

use fmcache_core::path::{self, PathBuf, PATH_MAX};
use fmcache_format::{path_hash, CacheView};

pub struct TrustState {
    /// Identity of the cache the bits index (its checksum).
    pub checksum: u64,
    bits: &'static [AtomicU64],
    all: AtomicBool,
    prefixes: PrefixSet,
    index: InodeIndex,
    writer: AtomicI32,
}

impl TrustState {
    /// Constructor only (allocates the bit array).
    pub fn new(view: &CacheView<'static>) -> TrustState {
        let words = view.entry_count().div_ceil(64).max(1);
        let bits: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        TrustState {
            checksum: view.header().checksum,
            bits: Box::leak(bits.into_boxed_slice()),
            all: AtomicBool::new(false),
            prefixes: PrefixSet::new(),
            index: InodeIndex::new(),
            writer: AtomicI32::new(0),
        }
    }

    /// Whether entry `i`, at path `p`, still holds for this process.
    pub fn trusted(&self, i: u32, p: &[u8]) -> bool {
        let i = i as usize;
        let bit = self
            .bits
            .get(i / 64)
            .map_or(0, |w| w.load(Relaxed) & (1 << (i % 64)));
        bit == 0 && !self.all.load(Relaxed) && !self.prefixes.covers(p)
    }

    /// Stops trusting anything (the safe answer to a change we cannot
    /// place).
    pub fn distrust_all(&self) {
        self.all.store(true, Release);
    }

    fn mark(&self, i: u32) {
        let i = i as usize;
        if let Some(w) = self.bits.get(i / 64) {
            w.fetch_or(1 << (i % 64), Relaxed);
        }
    }

    /// The path `p` (a key) changed. `names`: its name changed (created,
    /// removed, renamed, replaced), which also changes everything under
    /// it; otherwise only its contents or attributes. The parent's listing
    /// and stat are no longer trusted either.
    pub fn key_changed(&self, view: &CacheView<'static>, p: &[u8], names: bool) {
        let p = path::trim_trailing_slash(p);
        if let Some(e) = view.lookup(p) {
            self.mark(e.index());
        }
        if let Some(e) = path::parent(p).and_then(|d| view.lookup(d)) {
            self.mark(e.index());
        }
        if names && has_under(view, p) {
            self.add_prefix(p);
        }
    }

    /// The file or directory with inode `ino` changed: every entry naming
    /// it, under any spelling, is changed.
    pub fn inode_changed(&self, view: &CacheView<'static>, ino: u64, names: bool) {
        let Some(index) = self.index(view) else {
            return;
        };
        for i in index.find(ino) {
            if let Some(e) = view.entry(i) {
                self.key_changed(view, e.path(), names);
            }
        }
    }

    /// `name` in the directory with inode `dir_ino` changed: the same name
    /// under every spelling of that directory is changed.
    pub fn child_changed(&self, view: &CacheView<'static>, dir_ino: u64, name: &[u8], names: bool) {
        if name.is_empty() || name == b"." || name == b".." {
            return;
        }
        let Some(index) = self.index(view) else {
            return;
        };
        for i in index.find(dir_ino) {
            let Some(e) = view.entry(i) else { continue };
            self.mark(i);
            let mut child = PathBuf::new();
            if child.set(e.path()) && (e.path() == b"/" || child.push(b"/")) && child.push(name) {
                self.key_changed(view, child.as_bytes(), names);
            } else {
                self.distrust_all();
            }
        }
    }

    /// The inode index, built under the writer lock on first use.
    fn index(&self, view: &CacheView<'static>) -> Option<&InodeIndex> {
        if self.index.ready.load(Acquire) {
            return Some(&self.index);
        }
        let Some(_g) = self.lock() else {
            self.distrust_all();
            return None;
        };
        if !self.index.ready.load(Acquire) && !self.index.build(view) {
            self.distrust_all();
            return None;
        }
        Some(&self.index)
    }

    fn add_prefix(&self, p: &[u8]) {
        if self.prefixes.covers(p) {
            return;
        }
        let ok = match self.lock() {
            Some(_g) => self.prefixes.add(p),
            None => false,
        };
        if !ok {
            self.distrust_all();
        }
    }

    /// The writer lock; `None` when this thread already holds it (a signal
    /// handler interrupted a writer) or it never frees (its holder was a
    /// thread that vanished with a fork).
    fn lock(&self) -> Option<Guard<'_>> {
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        for spin in 0u32.. {
            match self.writer.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => return Some(Guard(&self.writer)),
                Err(owner) if owner == me => return None,
                Err(_) if spin > 1 << 20 => return None,
                Err(_) if spin % 64 == 63 => rustix::thread::sched_yield(),
                Err(_) => core::hint::spin_loop(),
            }
        }
        None
    }

    /// In a forked child: the lock's holder, if any, did not come along.
    pub fn after_fork(&self) {
        self.writer.store(0, Release);
    }
}

struct Guard<'a>(&'a AtomicI32);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

/// Whether the cache holds an entry strictly under `p` (entries are sorted
/// by path bytes, so those entries are one run).
fn has_under(view: &CacheView<'static>, p: &[u8]) -> bool {
    let mut pre = PathBuf::new();
    if !(pre.set(p) && (p == b"/" || pre.push(b"/"))) {
        return true;
    }
    let pre = pre.as_bytes();
    let (mut lo, mut hi) = (0usize, view.entry_count());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let path = view.entry(mid as u32).map_or(&b""[..], |e| e.path());
        if path < pre {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    view.entry(lo as u32)
        .is_some_and(|e| e.path().starts_with(pre))
}

/// Anonymous memory of `bytes`, zeroed; `None` if the kernel refuses.
fn map(bytes: usize) -> Option<*mut u8> {
    // SAFETY: a fresh private anonymous mapping, owned by the caller.
    unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            bytes,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE,
        )
    }
    .ok()
    .map(|p| p.cast())
}

/// Hashes of path prefixes: open addressing over mmap'd u64 slots (0 is
/// empty), grown by doubling into a new mapping that is published whole.
/// Old tables are never unmapped (a reader may still be probing one).
/// Which prefix lengths occur is kept in a bitmap, so `covers` hashes only
/// the ancestors of a path that could match.
struct PrefixSet {
    /// `[capacity, slot 0, slot 1, ...]`.
    table: AtomicPtr<AtomicU64>,
    count: AtomicUsize,
    lens: [AtomicU64; PATH_MAX / 64 + 1],
}

const FIRST_SLOTS: usize = 1024;

impl PrefixSet {
    const fn new() -> PrefixSet {
        PrefixSet {
            table: AtomicPtr::new(core::ptr::null_mut()),
            count: AtomicUsize::new(0),
            lens: [const { AtomicU64::new(0) }; PATH_MAX / 64 + 1],
        }
    }

    fn slots(t: *mut AtomicU64) -> &'static [AtomicU64] {
        // SAFETY: a published table: its first word is its slot count, the
        // slots follow, and tables are never unmapped.
        unsafe {
            let cap = (*t).load(Relaxed) as usize;
            core::slice::from_raw_parts(t.add(1), cap)
        }
    }

    fn hash(p: &[u8]) -> u64 {
        path_hash(p).max(1)
    }

    fn contains(slots: &[AtomicU64], h: u64) -> bool {
        let mask = slots.len() - 1;
        let mut i = h as usize & mask;
        for _ in 0..slots.len() {
            match slots[i].load(Acquire) {
                0 => return false,
                v if v == h => return true,
                _ => i = (i + 1) & mask,
            }
        }
        false
    }

    fn has_len(&self, n: usize) -> bool {
        self.lens
            .get(n / 64)
            .is_some_and(|w| w.load(Relaxed) & (1 << (n % 64)) != 0)
    }

    /// Whether `p` or one of its ancestors is a prefix.
    fn covers(&self, p: &[u8]) -> bool {
        let t = self.table.load(Acquire);
        if t.is_null() {
            return false;
        }
        let slots = Self::slots(t);
        let p = path::trim_trailing_slash(p);
        let check = |n: usize| self.has_len(n) && Self::contains(slots, Self::hash(&p[..n]));
        if check(p.len()) {
            return true;
        }
        (1..p.len()).any(|n| p[n] == b'/' && check(n)) || (p.len() > 1 && check(1))
    }

    /// Adds `p`; caller holds the writer lock. `false` without memory.
    fn add(&self, p: &[u8]) -> bool {
        let n = self.count.load(Relaxed);
        let mut t = self.table.load(Acquire);
        let cap = if t.is_null() { 0 } else { Self::slots(t).len() };
        if (n + 1) * 2 > cap {
            let new_cap = (cap * 2).max(FIRST_SLOTS);
            let Some(mem) = map((new_cap + 1) * 8) else {
                return false;
            };
            let nt = mem.cast::<AtomicU64>();
            // SAFETY: the new mapping holds new_cap + 1 words.
            unsafe { (*nt).store(new_cap as u64, Relaxed) };
            let fresh = Self::slots(nt);
            if !t.is_null() {
                for v in Self::slots(t).iter().map(|s| s.load(Relaxed)) {
                    if v != 0 {
                        Self::insert(fresh, v);
                    }
                }
            }
            self.table.store(nt, Release);
            t = nt;
        }
        if let Some(w) = self.lens.get(p.len() / 64) {
            w.fetch_or(1 << (p.len() % 64), Release);
        }
        Self::insert(Self::slots(t), Self::hash(p));
        self.count.store(n + 1, Relaxed);
        true
    }

    fn insert(slots: &[AtomicU64], h: u64) {
        let mask = slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            match slots[i].load(Relaxed) {
                0 => {
                    slots[i].store(h, Release);
                    return;
                }
                v if v == h => return,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// (inode, entry) pairs sorted by inode, for every entry with a recorded
/// stat (followed, and the link's own for symlinks). Built once.
struct InodeIndex {
    ready: AtomicBool,
    pairs: AtomicPtr<(u64, u32)>,
    len: AtomicUsize,
}

impl InodeIndex {
    const fn new() -> InodeIndex {
        InodeIndex {
            ready: AtomicBool::new(false),
            pairs: AtomicPtr::new(core::ptr::null_mut()),
            len: AtomicUsize::new(0),
        }
    }

    fn build(&self, view: &CacheView<'static>) -> bool {
        let inos = |e: &fmcache_format::EntryRef<'static>| {
            let f = match e.follow() {
                Some(Ok(st)) => Some(st.ino),
                _ => None,
            };
            let l = match e.lstat() {
                Some(Ok(st)) if Some(st.ino) != f => Some(st.ino),
                _ => None,
            };
            [f, l]
        };
        let n: usize = view
            .entries()
            .map(|e| inos(&e).iter().flatten().count())
            .sum();
        let Some(mem) = map(n.max(1) * core::mem::size_of::<(u64, u32)>()) else {
            return false;
        };
        let p = mem.cast::<(u64, u32)>();
        // SAFETY: the mapping holds n pairs and is ours until published.
        let pairs = unsafe { core::slice::from_raw_parts_mut(p, n) };
        let mut k = 0;
        for e in view.entries() {
            for ino in inos(&e).into_iter().flatten() {
                if k < n {
                    pairs[k] = (ino, e.index());
                    k += 1;
                }
            }
        }
        pairs[..k].sort_unstable();
        self.pairs.store(p, Relaxed);
        self.len.store(k, Relaxed);
        self.ready.store(true, Release);
        true
    }

    /// Entries recorded with inode `ino`.
    fn find(&self, ino: u64) -> impl Iterator<Item = u32> + '_ {
        let n = self.len.load(Relaxed);
        let p = self.pairs.load(Relaxed);
        let pairs: &[(u64, u32)] = if p.is_null() {
            &[]
        } else {
            // SAFETY: published (ready) before any reader gets here.
            unsafe { core::slice::from_raw_parts(p, n) }
        };
        let from = pairs.partition_point(|&(i, _)| i < ino);
        pairs[from..]
            .iter()
            .take_while(move |&&(i, _)| i == ino)
            .map(|&(_, e)| e)
    }
}

/// The preload copy's trust state, published for the auditor copy (the
/// same file mapped twice; see `note_peer`).
static PUBLISHED: AtomicPtr<TrustState> = AtomicPtr::new(core::ptr::null_mut());
/// Same value at the same offset in both copies: checked before use.
static MAGIC: u64 = 0x666d_6361_6368_6531;
/// In the auditor copy: the address of the preload copy's `PUBLISHED`.
static PEER: AtomicUsize = AtomicUsize::new(0);

/// Preload copy: makes its trust state the one both copies use.
pub fn publish(t: &'static TrustState) {
    PUBLISHED.store(t as *const TrustState as *mut TrustState, Release);
}

/// Auditor copy, from la_objopen: if `map` is the preload copy of this
/// very file (same inode, same layout), remembers where its `PUBLISHED`
/// lives: our own address of it, moved by the difference of load bases.
pub fn note_peer(map: &crate::carry::LinkMap, lmid: libc::c_long, own_hooks: [usize; 2]) {
    if lmid != 0 || PEER.load(Relaxed) != 0 || map.l_name.is_null() {
        return;
    }
    let Some((my_base, my_ld)) = crate::carry::self_map() else {
        return;
    };
    // SAFETY: l_name is ld.so's NUL-terminated name of the object.
    let name = unsafe { core::ffi::CStr::from_ptr(map.l_name) };
    if path::file_name(name.to_bytes()) != fmcache_core::carry::LIB_FILE
        || (map.l_ld as usize).wrapping_sub(map.l_addr) != my_ld.wrapping_sub(my_base)
    {
        return;
    }
    let Some(me) = crate::carry::self_path() else {
        return;
    };
    let mut mine = PathBuf::new();
    if !mine.set(me) {
        return;
    }
    let same = match (rustix::fs::stat(name), rustix::fs::stat(mine.as_cstr())) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    };
    if !same {
        return;
    }
    let moved = |ours: usize| ours.wrapping_sub(my_base).wrapping_add(map.l_addr);
    let magic = moved(core::ptr::addr_of!(MAGIC) as usize) as *const u64;
    // SAFETY: the same file is mapped at map.l_addr, so MAGIC's offset in
    // it is mapped and readable.
    if unsafe { core::ptr::read_volatile(magic) } != MAGIC {
        return;
    }
    PEER.store(moved(core::ptr::addr_of!(PUBLISHED) as usize), Release);
    crate::attachment::note_peer(moved(
        core::ptr::addr_of!(crate::attachment::HANDED) as usize
    ));
    let hooks = moved(core::ptr::addr_of!(crate::owner::AUDITOR_HOOKS) as usize)
        as *const [core::sync::atomic::AtomicUsize; 2];
    // SAFETY: the preload copy's AUDITOR_HOOKS, at the same offset in the
    // same file (checked above), a static of atomics.
    let hooks = unsafe { &*hooks };
    for (slot, f) in hooks.iter().zip(own_hooks) {
        slot.store(f, Release);
    }
}

/// Auditor copy: the preload copy's trust state, once it has one.
pub fn peer() -> Option<&'static TrustState> {
    let at = PEER.load(Acquire);
    if at == 0 {
        return None;
    }
    // SAFETY: `note_peer` checked this is the preload copy's PUBLISHED.
    let p = unsafe { &*(at as *const AtomicPtr<TrustState>) }.load(Acquire);
    // SAFETY: published states live as long as the process.
    (!p.is_null()).then(|| unsafe { &*p })
}
