//! Process-wide state: what the library does here, set once by the
//! constructor and read lock-free by every hook.

use crate::cargs::CPath;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering::*};

use fmcache_core::answer::Answer;

use crate::counters::counters;
use crate::recorder::Recorder;
use crate::server::Server;

const OFF: u8 = 0;
const RECORD: u8 = 1;
const SERVE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(OFF);
static SERVER: AtomicPtr<Server> = AtomicPtr::new(core::ptr::null_mut());
static RECORDER: AtomicPtr<Recorder> = AtomicPtr::new(core::ptr::null_mut());

pub enum Mode {
    Off,
    Record(&'static Recorder),
    Serve(&'static Server),
}

pub fn mode() -> Mode {
    match MODE.load(Acquire) {
        // SAFETY: the pointers are published before MODE and never freed.
        SERVE => Mode::Serve(unsafe { &*SERVER.load(Acquire) }),
        // SAFETY: as above.
        RECORD => Mode::Record(unsafe { &*RECORDER.load(Acquire) }),
        _ => Mode::Off,
    }
}

pub fn set_server(s: &'static Server) {
    SERVER.store(s as *const Server as *mut Server, Release);
    MODE.store(SERVE, Release);
}

/// Nothing in the cache holds any more (a root or mount namespace of the
/// process's own): every call passes through from now on, while streams
/// and descriptors already handed out keep working.
pub fn distrust_everything() {
    if let Mode::Serve(srv) = mode() {
        srv.trust().distrust_all();
    }
}

pub fn set_recorder(r: &'static Recorder) {
    RECORDER.store(r as *const Recorder as *mut Recorder, Release);
    MODE.store(RECORD, Release);
}

/// The server, once set: streams and descriptors it handed out are
/// handled by it whatever the mode is now.
pub fn server() -> Option<&'static Server> {
    let p = SERVER.load(Acquire);
    // SAFETY: published once and never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The decision a hook's serving function makes.
pub enum Outcome<T> {
    /// The answer, from the cache.
    Served(T),
    /// The call fails with this errno, known from the cache.
    Fail(i32),
    /// The cache was consulted and cannot answer: pass through.
    Miss,
    /// Not a call the cache answers: pass through, for this reason
    /// (printed with FMCACHE_DEBUG=pass).
    Pass(&'static str),
}

impl<T> Outcome<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Served(v) => Outcome::Served(f(v)),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Miss => Outcome::Miss,
            Outcome::Pass(why) => Outcome::Pass(why),
        }
    }

    /// The served value's own decision (a found entry that still cannot
    /// be served, say).
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Outcome<U>) -> Outcome<U> {
        match self {
            Outcome::Served(v) => f(v),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Miss => Outcome::Miss,
            Outcome::Pass(why) => Outcome::Pass(why),
        }
    }
}

/// The one conversion of the cache's answer into a hook's decision.
impl<T> From<Answer<T>> for Outcome<T> {
    fn from(a: Answer<T>) -> Self {
        match a {
            Answer::Hit(v) => Outcome::Served(v),
            Answer::Errno(e) => Outcome::Fail(e),
            Answer::Miss => Outcome::Miss,
        }
    }
}

/// FMCACHE_DEBUG=pass: one line per call served by the real function.
static DEBUG_PASS: AtomicBool = AtomicBool::new(false);
/// FMCACHE_DEBUG=panic: every call the cache would answer panics inside
/// the library instead, to show that a bug of ours costs the program
/// nothing (each such call passes through; one line on stderr).
static DEBUG_PANIC: AtomicBool = AtomicBool::new(false);

/// Reads FMCACHE_DEBUG (constructor only).
pub fn init_debug() {
    let words = std::env::var_os("FMCACHE_DEBUG").unwrap_or_default();
    let has = |word: &str| words.to_string_lossy().split(',').any(|w| w == word);
    DEBUG_PASS.store(has("pass"), Relaxed);
    DEBUG_PANIC.store(has("panic"), Relaxed);
}

/// A panic of ours is one line on stderr, once per process, through
/// log.rs (std's default hook allocates, takes a lock and, with
/// RUST_BACKTRACE, reads files through the hooks it is panicking in).
/// The call it happened in passes through (`dispatch`).
pub fn quiet_panics() {
    static SAID: AtomicBool = AtomicBool::new(false);
    std::panic::set_hook(Box::new(|info| {
        if !SAID.swap(true, Relaxed) {
            let at = info.location();
            crate::log::warn(format_args!(
                "internal error at {}:{}; the call passed through (reported once per process)",
                at.map_or("?", |l| l.file()),
                at.map_or(0, |l| l.line()),
            ));
        }
    }));
}

/// Why a call went to the real function, with FMCACHE_DEBUG=pass: the
/// hook family, the reason and the path (through log.rs's fixed buffer,
/// no allocation).
#[cold]
fn debug_pass(hook: &str, why: &str, p: CPath<'_>) {
    let path = p.bytes().unwrap_or(b"-");
    let path = core::str::from_utf8(path).unwrap_or("(not UTF-8)");
    crate::log::debug(format_args!("pass {hook}: {why}: {path}"));
}

/// Runs one hook: serve it, or record it after the real call, or just
/// pass it through. A panic in our code passes the call through. `hook`
/// (the family: "stat", "open", ...) and `p` (the path, or null) only
/// label FMCACHE_DEBUG=pass lines.
#[inline]
pub fn dispatch<T>(
    hook: &'static str,
    p: CPath<'_>,
    serve: impl FnOnce(&'static Server) -> Outcome<T>,
    record: impl FnOnce(&'static Recorder),
    fail: T,
    real: impl FnOnce() -> T,
) -> T {
    match mode() {
        Mode::Off => real(),
        Mode::Record(rec) => {
            let out = real();
            let saved = crate::errno::get();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record(rec)));
            crate::errno::set(saved);
            out
        }
        Mode::Serve(server) => {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if DEBUG_PANIC.load(Relaxed) {
                    panic!("FMCACHE_DEBUG=panic");
                }
                serve(server)
            }))
            .unwrap_or(Outcome::Pass("panic"));
            match out {
                Outcome::Served(v) => {
                    counters().served.fetch_add(1, Relaxed);
                    v
                }
                Outcome::Fail(e) => {
                    counters().served.fetch_add(1, Relaxed);
                    crate::errno::set(e);
                    fail
                }
                Outcome::Miss => {
                    counters().missed.fetch_add(1, Relaxed);
                    crate::missed::note(p);
                    if DEBUG_PASS.load(Relaxed) {
                        debug_pass(hook, "not in the cache", p);
                    }
                    real()
                }
                Outcome::Pass(why) => {
                    counters().passthrough.fetch_add(1, Relaxed);
                    if DEBUG_PASS.load(Relaxed) {
                        debug_pass(hook, why, p);
                    }
                    real()
                }
            }
        }
    }
}
