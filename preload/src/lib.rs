#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! libfmcache.so: loaded with LD_PRELOAD. `DLFM_OP=write-cache` records
//! every path probe of the process (the merge keeps those of its software);
//! `DLFM_OP=read-cache` answers them from a memory-mapped cache; anything else (or an unusable cache) leaves the
//! process untouched. See ARCHITECTURE.md.

#[macro_use]
mod real;
#[macro_use]
mod log;
mod attachment;
mod audit;
mod cargs;
mod carry;
mod cell;
mod changes;
mod counters;
mod cwd;
mod direct;
mod dirs;
mod errno;
mod fds;
#[macro_use]
mod hooks;
mod keys;
mod libnames;
mod libsearch;
mod loaders;
mod missed;
mod owner;
mod recorder;
mod server;
mod settings;
mod state;
mod stats;
mod trust;

use core::ffi::{c_char, c_int};

use fmcache_core::config::{Config, Op};

/// Runs before main (glibc passes argc/argv/envp to .init_array entries).
/// glibc calls `.init_array` entries with (argc, argv, envp).
type Init = extern "C" fn(c_int, *const *const c_char, *const *const c_char);

#[used]
#[link_section = ".init_array"]
static INIT: Init = init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;

extern "C" fn init(_argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    let _ = std::panic::catch_unwind(|| start(argv));
}

extern "C" fn fini() {
    hooks::process::finish();
}

fn start(argv: *const *const c_char) {
    state::quiet_panics();
    owner::set_owner();
    cwd::refresh();
    carry::identify();
    // The preload copy resolves every real function now: a hook first
    // called from a signal handler must not take the loader's lock in
    // dlsym. The auditor copy's hooks serve only its own namespace (our
    // code's calls into its libc, never the program's or a signal
    // handler's), so it resolves them on first use: about 110 dlsym
    // calls, some 40 us, fewer per audited process.
    let eager = !carry::is_auditor();
    if eager {
        hooks::exec::resolve();
    }
    // SAFETY: argv is what ld.so passed to the constructor.
    unsafe { direct::reexec_audited(argv) };
    if eager {
        for resolve in [
            hooks::dl::resolve,
            hooks::process::resolve,
            hooks::stat::resolve,
            hooks::access::resolve,
            hooks::open::resolve,
            hooks::link::resolve,
            hooks::modify::resolve,
            hooks::dir::resolve,
        ] {
            resolve();
        }
    }
    // Never in setuid/setgid programs: their environment is not theirs.
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return;
    }
    let euid = rustix::process::geteuid().as_raw();
    let mut here = fmcache_core::path::PathBuf::new();
    if !cwd::get(&mut here) {
        here.set(b"/");
    }
    let cfg = Config::from_lookup(|k| std::env::var_os(k), here.as_bytes(), euid);
    let mut inherited = settings::inherited();
    if carry::is_auditor() && preloaded_too() {
        log::quiet();
    }
    if cfg.op != Op::Off && !carry::is_auditor() {
        carry::export_audit();
        settings::export_paths(&cfg, &inherited);
    }
    if let Some(v) = &cfg.bad_op {
        settings::warn_once(
            &mut inherited,
            format_args!(
                "DLFM_OP={}: not a valid value (valid: {}); running without fmcache",
                String::from_utf8_lossy(v),
                fmcache_core::config::VALID_OPS
            ),
        );
    }
    let op = match cfg.op {
        Op::Off => "off",
        Op::Record => "record",
        Op::Serve => "serve",
    };
    if let Err(e) = stats::configure(cfg.stats.clone(), op) {
        settings::warn_once(
            &mut inherited,
            format_args!("{e}; processes killed by a signal are not counted"),
        );
    }
    // SAFETY: registering a plain function.
    unsafe { libc::pthread_atfork(None, None, Some(hooks::process::after_fork_child)) };
    if cfg.op == Op::Record && !carry::is_auditor() {
        settings::drop_attached();
    }
    match cfg.op {
        Op::Off => {}
        Op::Record => match recorder::Recorder::start(cfg.clone()).inspect(|_| init_libsearch()) {
            Ok(r) => state::set_recorder(Box::leak(Box::new(r))),
            Err(e) => settings::warn_once(
                &mut inherited,
                format_args!(
                    "{}: cannot record: {e}; running unrecorded",
                    String::from_utf8_lossy(&cfg.cache)
                ),
            ),
        },
        Op::Serve => match serve_check()
            .inspect(|()| {
                init_libsearch();
                state::init_debug();
            })
            .and_then(|()| server::Server::attach(&cfg).map_err(|e| e.to_string()))
        {
            Ok(s) => {
                let s: &'static server::Server = Box::leak(Box::new(s));
                if !carry::is_auditor() {
                    trust::publish(s.own_trust());
                }
                state::set_server(s)
            }
            Err(e) => settings::warn_once(
                &mut inherited,
                format_args!(
                    "{}: {e}; running uncached",
                    String::from_utf8_lossy(&cfg.cache)
                ),
            ),
        },
    }
}

/// Library searches are the auditor copy's alone (`la_objsearch`): the
/// preload copy maps no /etc/ld.so.cache and reads no /proc/self/exe.
fn init_libsearch() {
    if carry::is_auditor() {
        libsearch::init();
    }
}

/// Whether LD_PRELOAD names the library (its copy there warns for both).
fn preloaded_too() -> bool {
    let lib = carry::self_path().unwrap_or(fmcache_core::carry::LIB_FILE);
    std::env::var_os("LD_PRELOAD").is_some_and(|p| {
        fmcache_core::carry::names_lib(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()), lib)
    })
}

/// Answers are valid for one identity: real and effective ids must agree
/// (access(2) checks the real ones, open(2) the effective ones).
fn serve_check() -> Result<(), String> {
    use rustix::process::{getegid, geteuid, getgid, getuid};
    if getuid() != geteuid() || getgid() != getegid() {
        return Err("real and effective ids differ; not served".into());
    }
    Ok(())
}
