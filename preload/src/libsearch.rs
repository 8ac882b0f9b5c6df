//! Answers a library search by bare name at once (la_objsearch with
//! LA_SER_ORIG), from the cache, so ld.so neither tries candidates nor
//! stats the directories it found nothing in: those `stat`s of hwcaps and
//! tls subdirectories happen inside ld.so after every failed candidate,
//! where no hook can answer them.
//!
//! The answer must be the library ld.so would find, so the directories
//! come in ld.so's order from `fmcache_core::ldsearch` (the pure walk:
//! DT_RPATH chain, LD_LIBRARY_PATH, DT_RUNPATH, `$ORIGIN`, ld.so.cache,
//! system directories); this file gives it the link maps and asks the
//! cache about each directory.
//! A directory is passed over only when the cache holds its listing, the
//! name is absent and no subdirectory ld.so could try (glibc-hwcaps, tls,
//! platform and hwcap names) exists in it; the first directory listing the
//! name gives the answer, if the cache can serve that file and the file's
//! copy sits in the same directory (so `$ORIGIN` of the new object is that
//! directory). Anything else (where the walk stops: `$LIB`, `$PLATFORM`,
//! relative entries, an unknown loader in a DT_RPATH chain; unknown
//! directories) returns None and the ordinary search goes on, candidate by
//! candidate. A name in none of those directories comes, as
//! in ld.so, from /etc/ld.so.cache (read here from node-local disk), when
//! it holds exactly one plain entry for it.

use core::ffi::{c_char, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use fmcache_core::answer::{self, Answer};
use fmcache_core::ldsearch::{List, Loader, Object, Step, Stop, Walk, SYSTEM_DIRS};
use fmcache_core::path::{parent, PathBuf, PATH_MAX};

use crate::carry::MapRef;
use crate::cell::Static;
use crate::keys::MISSING;
use crate::server::Server;

/// First components of every subdirectory ld.so tries below a search
/// directory (x86-64's legacy names; AT_PLATFORM is added at run time).
const SUBDIRS: [&[u8]; 6] = [
    b"glibc-hwcaps",
    b"tls",
    b"x86_64",
    b"avx512_1",
    b"haswell",
    b"xeon_phi",
];

const ENV_MAX: usize = 8192;
static LIBRARY_PATH: Static<[u8; ENV_MAX]> = Static::new([0; ENV_MAX]);
static LIBRARY_PATH_LEN: AtomicUsize = AtomicUsize::new(0);
/// LD_LIBRARY_PATH is set but could not be kept: never answer.
static LIBRARY_PATH_UNUSABLE: AtomicBool = AtomicBool::new(false);
/// /etc/ld.so.cache, mapped read-only (address, length; 0 if unusable).
static LD_CACHE: AtomicUsize = AtomicUsize::new(0);
static LD_CACHE_LEN: AtomicUsize = AtomicUsize::new(0);
static DEBUG: AtomicBool = AtomicBool::new(false);
static EXE_DIR: Static<PathBuf> = Static::new(PathBuf::new());
static EXE_DIR_OK: AtomicBool = AtomicBool::new(false);

/// Keeps what ld.so read at exec: LD_LIBRARY_PATH and the executable's
/// directory (`$ORIGIN` of the main program). Constructor only.
pub fn init() {
    let debug = std::env::var_os("FMCACHE_DEBUG");
    DEBUG.store(
        debug.is_some_and(|v| v.to_string_lossy().split(',').any(|w| w == "search")),
        Relaxed,
    );
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        let b = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str());
        if b.len() <= ENV_MAX {
            // SAFETY: written once, before the length publishes it.
            unsafe { (&mut *LIBRARY_PATH.get())[..b.len()].copy_from_slice(b) };
            LIBRARY_PATH_LEN.store(b.len(), Release);
        } else {
            LIBRARY_PATH_UNUSABLE.store(true, Release);
        }
    }
    map_ld_cache();
    let mut buf = [0u8; PATH_MAX];
    // SAFETY: readlink(2) into our buffer.
    let n = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n > 0 && (n as usize) < buf.len() {
        if let Some(dir) = parent(&buf[..n as usize]) {
            // SAFETY: written once, before EXE_DIR_OK publishes it.
            if unsafe { (*EXE_DIR.get()).set(dir) } {
                EXE_DIR_OK.store(true, Release);
            }
        }
    }
}

fn library_path() -> Option<&'static [u8]> {
    let n = LIBRARY_PATH_LEN.load(Acquire);
    // SAFETY: the first n bytes were written before n was published.
    (n > 0).then(|| unsafe { &(&*LIBRARY_PATH.get())[..n] })
}

/// The library found, and the path ld.so would have given it (`l_name`).
pub struct Resolved {
    pub staged: PathBuf,
    pub name: PathBuf,
}

/// What one directory settles.
enum Found {
    Next,
    /// The answer is in the caller's `Resolved`.
    Here,
    GiveUp,
}

/// The staged copy to load for `name` requested by `loader`, if the cache
/// settles the whole search up to it.
pub fn resolve(srv: &Server, loader: Option<MapRef>, name: &[u8]) -> Option<Resolved> {
    let mut walk = walk_from(loader)?;
    let mut r = Resolved {
        staged: PathBuf::new(),
        name: PathBuf::new(),
    };
    while let Some(step) = walk.next() {
        match step {
            // Past the cache: only a name found nowhere is answered.
            Step::Dir(List::System, _) => return missing_everywhere(srv, name, r),
            Step::Dir(_, d) => match in_dir(srv, d, name, &mut r) {
                Found::Next => {}
                Found::Here => return Some(r),
                Found::GiveUp => return None,
            },
            Step::Cache => {
                if let Some(system) = ld_cache_lookup(name) {
                    return from_ld_cache(srv, system, r);
                }
            }
            Step::Stop(why) => {
                give_up(b"", name, stop_reason(why));
                return None;
            }
        }
    }
    missing_everywhere(srv, name, r)
}

/// Why the walk stopped, for FMCACHE_DEBUG=search.
fn stop_reason(why: Stop) -> &'static str {
    match why {
        Stop::Token => "$LIB or $PLATFORM in a search path",
        Stop::Relative => "an empty or relative search-path entry",
        Stop::Origin => "an object's $ORIGIN is unknown",
        Stop::Chain => "an unknown loader in a DT_RPATH chain",
        Stop::NoDefLib => "DF_1_NODEFLIB",
        Stop::TooLong => "path too long",
    }
}

/// The library ld.so.cache names: a cached copy of it if there is one,
/// else the file itself.
fn from_ld_cache(srv: &Server, system: &[u8], mut r: Resolved) -> Option<Resolved> {
    if !r.name.set(system) {
        return None;
    }
    let staged = match answer::open_read(&srv.view, srv, system, 0) {
        Answer::Hit(f) if parent(f.mirror) == parent(system) => {
            srv.staged_path(f.mirror, &mut r.staged)
        }
        _ => r.staged.set(system),
    };
    staged.then_some(r)
}

/// ld.so's search for a bare name `loader` asks for (`fmcache_core::ldsearch`).
fn walk_from(loader: Option<MapRef>) -> Option<Walk<'static, Map>> {
    let loader = loader?;
    if LIBRARY_PATH_UNUSABLE.load(Acquire) {
        return None;
    }
    let main = crate::loaders::main_map().map(Map::new);
    Some(Walk::new(Map::new(loader), main, library_path()))
}

/// Set by la_preinit: start-up loading is over and failures go to
/// dlerror(), where the stage prefix is taken out again.
pub static AFTER_STARTUP: AtomicBool = AtomicBool::new(false);

/// A name found nowhere ld.so would look: a path under the stage that
/// does not exist, so ld.so fails with ENOENT from one local call. Only
/// for dlopen (a start-up failure is printed by ld.so itself, with the
/// name it tried, which cannot be rewritten).
fn missing_everywhere(srv: &Server, name: &[u8], mut r: Resolved) -> Option<Resolved> {
    if !AFTER_STARTUP.load(Relaxed) || cfg!(not(target_arch = "x86_64")) {
        return None;
    }
    for d in SYSTEM_DIRS {
        if !matches!(in_dir(srv, d, name, &mut r), Found::Next) {
            return None;
        }
    }
    r.name.clear();
    (srv.staged_path(MISSING, &mut r.staged) && r.staged.push(b"/") && r.staged.push(name))
        .then_some(r)
}

fn map_ld_cache() {
    use rustix::fs::{Mode, OFlags};
    let Ok(fd) = rustix::fs::open(
        "/etc/ld.so.cache",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(st) = rustix::fs::fstat(&fd) else {
        return;
    };
    let len = st.st_size as usize;
    if len < 48 {
        return;
    }
    // SAFETY: a fresh private read-only mapping, never unmapped.
    let Ok(p) = (unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            &fd,
            0,
        )
    }) else {
        return;
    };
    LD_CACHE_LEN.store(len, Relaxed);
    LD_CACHE.store(p as usize, Release);
}

/// The path ld.so.cache gives `name`: the one entry for it that is a
/// plain x86-64 libc6 library (`fmcache_core::ldcache`).
fn ld_cache_lookup(name: &[u8]) -> Option<&'static [u8]> {
    let addr = LD_CACHE.load(Acquire);
    if addr == 0 || cfg!(not(target_arch = "x86_64")) {
        return None;
    }
    // SAFETY: the mapping published by map_ld_cache, never unmapped.
    let b = unsafe { core::slice::from_raw_parts(addr as *const u8, LD_CACHE_LEN.load(Relaxed)) };
    fmcache_core::ldcache::lookup(b, name, fmcache_core::ldcache::FLAGS_X8664_LIBC6)
}

/// Why a search was left to ld.so, with FMCACHE_DEBUG=search (the place
/// to look when a served run still probes a search directory).
fn give_up(dir: &[u8], name: &[u8], why: &str) -> Found {
    if DEBUG.load(Relaxed) {
        let at = if dir.is_empty() { "" } else { " at " };
        crate::log::debug(format_args!(
            "search for {} left to ld.so{at}{}: {why}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(dir)
        ));
    }
    Found::GiveUp
}

/// What the search needs from an object's dynamic section.
#[derive(Clone, Copy)]
struct Dynamic {
    runpath: Option<&'static [u8]>,
    rpath: Option<&'static [u8]>,
    nodeflib: bool,
}

/// A loaded object as `fmcache_core::ldsearch` sees it.
#[derive(Clone, Copy)]
struct Map {
    map: MapRef,
    dynamic: Dynamic,
}

impl PartialEq for Map {
    fn eq(&self, o: &Map) -> bool {
        self.map == o.map
    }
}

impl Map {
    fn new(map: MapRef) -> Map {
        Map {
            map,
            dynamic: read_dynamic(map),
        }
    }
}

impl Object<'static> for Map {
    fn rpath(self) -> Option<&'static [u8]> {
        self.dynamic.rpath
    }
    fn runpath(self) -> Option<&'static [u8]> {
        self.dynamic.runpath
    }
    fn origin(self) -> Option<&'static [u8]> {
        origin_of(self.map.get())
    }
    fn loader(self) -> Loader<Map> {
        match crate::loaders::loader_of(self.map) {
            crate::loaders::Loader::Is(next) => Loader::Is(Map::new(next)),
            crate::loaders::Loader::None => Loader::None,
            // Unknown: harmless only while no object has a DT_RPATH.
            crate::loaders::Loader::Unknown if RPATH_OBJECTS.load(Relaxed) == 0 => Loader::None,
            crate::loaders::Loader::Unknown => Loader::Unknown,
        }
    }
    fn nodeflib(self) -> bool {
        self.dynamic.nodeflib
    }
}

/// Objects with a DT_RPATH seen so far in the audited namespaces.
static RPATH_OBJECTS: AtomicUsize = AtomicUsize::new(0);

/// la_objopen: notes an object that brings a DT_RPATH into search chains.
pub fn note_object(map: MapRef) {
    if read_dynamic(map).rpath.is_none() {
        return;
    }
    let map = map.get();
    // SAFETY: l_name is a C string.
    let name = (!map.l_name.is_null()).then(|| unsafe { CStr::from_ptr(map.l_name) }.to_bytes());
    if name.is_some_and(|n| fmcache_core::path::file_name(n) != fmcache_core::carry::LIB_FILE) {
        RPATH_OBJECTS.fetch_add(1, Relaxed);
    }
}

/// For the pilot: the directories a bare-name search by `loader` walks,
/// so the cache holds their listings (or their absence) under the names
/// ld.so uses, `$ORIGIN/..` spellings included.
pub fn search_dirs(loader: Option<MapRef>, mut f: impl FnMut(&PathBuf)) {
    let Some(mut walk) = walk_from(loader) else {
        return;
    };
    while let Some(Step::Dir(list, d)) = walk.next() {
        if list == List::System {
            break;
        }
        let mut p = PathBuf::new();
        if p.set(d) {
            f(&p);
        }
    }
}

/// The object's DT_RUNPATH and DT_RPATH strings and DF_1_NODEFLIB (ld.so
/// keeps a live object's dynamic section and string table mapped).
fn read_dynamic(map: MapRef) -> Dynamic {
    let map = map.get();
    const DT_NULL: i64 = 0;
    const DT_STRTAB: i64 = 5;
    const DT_RPATH: i64 = 15;
    const DT_RUNPATH: i64 = 29;
    const DT_FLAGS_1: i64 = 0x6fff_fffb;
    const DF_1_NODEFLIB: u64 = 0x800;
    let mut out = Dynamic {
        runpath: None,
        rpath: None,
        nodeflib: false,
    };
    let mut dynp = map.l_ld as *const [u64; 2];
    if dynp.is_null() {
        return out;
    }
    let (mut strtab, mut runpath, mut rpath) = (None, None, None);
    for _ in 0..4096 {
        // SAFETY: the dynamic section ends with DT_NULL.
        let [tag, val] = unsafe { *dynp };
        match tag as i64 {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val as usize),
            DT_RUNPATH => runpath = Some(val as usize),
            DT_RPATH => rpath = Some(val as usize),
            DT_FLAGS_1 => out.nodeflib = val & DF_1_NODEFLIB != 0,
            _ => {}
        }
        // SAFETY: not past DT_NULL, so the next entry is in the section.
        dynp = unsafe { dynp.add(1) };
    }
    let Some(mut tab) = strtab else {
        return out;
    };
    // ld.so relocates the dynamic section in place on x86-64; an
    // unrelocated (file-relative) address lies below the load address.
    if tab < map.l_addr {
        tab += map.l_addr;
    }
    // SAFETY: NUL-terminated strings in the loaded string table.
    let at = |off: usize| unsafe { CStr::from_ptr((tab + off) as *const c_char) }.to_bytes();
    out.runpath = runpath.map(at);
    out.rpath = rpath.map(at);
    out
}

/// `$ORIGIN` of an object: the directory of the path it was loaded
/// under, or the executable's.
fn origin_of(map: &crate::carry::LinkMap) -> Option<&'static [u8]> {
    // SAFETY: l_name is a C string ("" for the main program), alive while
    // the object is loaded.
    let name = (!map.l_name.is_null()).then(|| unsafe { CStr::from_ptr(map.l_name) }.to_bytes());
    match name {
        Some(n) if !n.is_empty() => {
            if n.first() != Some(&b'/') {
                return None;
            }
            parent(n)
        }
        _ => {
            if !EXE_DIR_OK.load(Acquire) {
                return None;
            }
            // SAFETY: published by init, never written again.
            Some(unsafe { (*EXE_DIR.get()).as_bytes() })
        }
    }
}

/// What the cache says about `name` in the search directory `dir`.
fn in_dir(srv: &Server, dir: &[u8], name: &[u8], r: &mut Resolved) -> Found {
    // The original path a staged directory stands for (its listing).
    let mut orig = PathBuf::new();
    let literal = if srv.original_of_staged(dir, &mut orig) {
        orig.as_bytes()
    } else {
        dir
    };
    let mut key = PathBuf::new();
    if !fmcache_core::path::normalize(None, literal, &mut key) {
        return give_up(dir, name, "path too long");
    }
    let mut listed = answer::list(&srv.view, srv, key.as_bytes());
    // `$ORIGIN/../lib` is recorded as spelled; if not, resolve it (`..` has
    // its kernel meaning, through symlinks) from recorded entries.
    if matches!(listed, Answer::Miss) && fmcache_core::path::has_dot_components(key.as_bytes()) {
        let mut real = PathBuf::new();
        match answer::realpath(&srv.view, srv, key.as_bytes(), &mut real) {
            Answer::Hit(()) => key = real,
            Answer::Errno(libc::ENOENT) | Answer::Errno(libc::ENOTDIR) => return Found::Next,
            _ => return give_up(dir, name, "directory unknown to the cache"),
        }
        listed = answer::list(&srv.view, srv, key.as_bytes());
    }
    let listing = match listed {
        Answer::Hit((_, l)) => l,
        Answer::Errno(libc::ENOENT) | Answer::Errno(libc::ENOTDIR) => return Found::Next,
        _ => return give_up(dir, name, "listing unknown to the cache"),
    };
    // SAFETY: getauxval has no preconditions; AT_PLATFORM is a C string.
    let platform = unsafe { libc::getauxval(libc::AT_PLATFORM) } as *const c_char;
    // SAFETY: not null, the kernel's NUL-terminated platform string.
    let platform = (!platform.is_null()).then(|| unsafe { CStr::from_ptr(platform) }.to_bytes());
    let subdir = SUBDIRS.iter().copied().chain(platform);
    for s in subdir {
        if listing.contains(s) != Some(false) {
            return give_up(dir, name, "a hwcaps/tls/platform subdirectory may hold it");
        }
    }
    match listing.contains(name) {
        Some(false) => return Found::Next,
        Some(true) => {}
        None => return give_up(dir, name, "listing unknown to the cache"),
    }
    let mut file = PathBuf::new();
    if !(file.set(key.as_bytes()) && file.push(b"/") && file.push(name)) {
        return give_up(dir, name, "path too long");
    }
    let Answer::Hit(f) = answer::open_read(&srv.view, srv, file.as_bytes(), 0) else {
        return give_up(dir, name, "file not servable from the cache");
    };
    // The copy must sit in the directory ld.so names (the new object's
    // `$ORIGIN`): the same path, or the listed directory itself holds the
    // file under the copy's name (same inode; `..` and symlinked sonames
    // such as libx.so -> libx.so.1 -> libx.so.1.2.3 resolve this way).
    let own = fmcache_core::path::file_name(f.mirror);
    let holds_it = || {
        listing
            .iter()
            .any(|(n, _, ino)| n == own && ino == f.stat.ino)
    };
    if parent(f.mirror) != Some(key.as_bytes()) && !holds_it() {
        return give_up(dir, name, "copy not in the directory ld.so names");
    }
    let named = r.name.set(literal) && r.name.push(b"/") && r.name.push(name);
    if !named || !srv.staged_path(f.mirror, &mut r.staged) {
        return give_up(dir, name, "path too long");
    }
    Found::Here
}
