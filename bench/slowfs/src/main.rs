//! `fmcache-slowfs`: a read-only FUSE passthrough that behaves like one busy
//! metadata server. Every metadata request takes one global lock and sleeps
//! the configured latency while holding it; every request is counted by
//! type. The counts are the requests that reach "the shared file system".
//! By default entry and attribute TTLs are 0, so the kernel caches nothing;
//! `--client-cache` lets it cache entries, attributes, failed lookups and
//! listings as a Lustre or GPFS client holding locks does, and
//! `--mds-lock` makes several mounts (one per simulated node) queue on one
//! server.
//!
//! A benchmark tool, not the interposer: std and a mutex are fine here.

mod counts;
mod fs;
mod mds_lock;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use counts::Counts;

/// Mount a directory through a slow, counting FUSE passthrough
///
/// Stands in for one loaded parallel-file-system metadata server: every
/// lookup, getattr, readlink, open, opendir, readdir, access, release
/// takes one lock and sleeps --latency-us while holding it (with
/// --mds-lock, one lock across all mounts given the same file). Counts are
/// rewritten to --counts (JSON) every 50 ms while mounted, and at unmount.
/// Runs in the foreground; SIGTERM or SIGINT unmounts and exits.
#[derive(clap::Parser)]
#[command(name = "fmcache-slowfs", version)]
pub struct Args {
    /// Directory to pass through.
    source: PathBuf,
    /// Where to mount it.
    mountpoint: PathBuf,
    /// Latency of every metadata request, in microseconds.
    #[arg(long, default_value_t = 1000)]
    latency_us: u64,
    /// Limit file reads to this many MiB/s (0: unlimited).
    #[arg(long, default_value_t = 0)]
    read_mibps: u64,
    /// Drop a file's cached pages at every open, so every open reads from the
    /// source again, as on a node that never read it (simulated nodes on one
    /// host share one page cache). Default: pages kept, as a client would.
    #[arg(long)]
    cold_reads: bool,
    /// JSON file with the request counts.
    #[arg(long)]
    counts: PathBuf,
    /// Let the kernel cache entries, attributes, failed lookups (negative
    /// dentries) and directory listings for an hour, as a parallel file
    /// system's client holding locks does. Default: TTL 0, nothing cached.
    #[arg(long)]
    client_cache: bool,
    /// Lock file shared by every slowfs standing for the same metadata
    /// server (one per simulated node): each request's latency is slept
    /// holding an exclusive flock on it. Default: this mount alone.
    #[arg(long, value_name = "FILE")]
    mds_lock: Option<PathBuf>,
    /// FUSE worker threads (requests still serialise on the one lock).
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn main() -> ExitCode {
    match run(<Args as clap::Parser>::parse()) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("fmcache-slowfs: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    let source = std::fs::canonicalize(&args.source)
        .map_err(|e| format!("{}: {e}", args.source.display()))?;
    let counts = Arc::new(Counts::default());
    let mds_lock = match &args.mds_lock {
        Some(p) => Some(mds_lock::MdsLock::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let fs = fs::SlowFs::new(
        source,
        Duration::from_micros(args.latency_us),
        args.read_mibps,
        args.cold_reads,
        if args.client_cache {
            fs::Caching::CLIENT
        } else {
            fs::Caching::NONE
        },
        counts.clone(),
        mds_lock,
    );
    let mut cfg = Config::default();
    cfg.mount_options.extend([
        MountOption::RO,
        MountOption::FSName("slowfs".into()),
        MountOption::DefaultPermissions,
    ]);
    // Every user's processes (the benchmarks run ranks as root or not).
    cfg.acl = SessionACL::All;
    cfg.n_threads = Some(args.threads.max(1));
    raise_fd_limit();
    let signals = block_signals();
    let session = fuser::spawn_mount(fs, &args.mountpoint, &cfg)
        .map_err(|e| format!("mount {}: {e}", args.mountpoint.display()))?;
    let writer = counts::spawn_writer(counts.clone(), args.counts.clone());
    eprintln!(
        "slowfs: {} on {} ({} us per metadata request, {})",
        args.source.display(),
        args.mountpoint.display(),
        args.latency_us,
        if args.client_cache {
            "client cache"
        } else {
            "TTL 0"
        }
    );
    wait_for(&signals);
    writer.stop();
    let write = |what: &str| {
        counts
            .write(&args.counts)
            .map_err(|e| format!("{}: {e} ({what})", args.counts.display()))
    };
    // The counts first: unmounting can block on a connection the kernel
    // keeps alive (seen after a benchmark's lazily detached mount).
    write("before unmount")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(session.umount_and_join());
    });
    match done_rx.recv_timeout(Duration::from_secs(5)) {
        // The session's reader can end with ECONNABORTED rather than ENODEV
        // when client releases were still in flight at unmount (seen with
        // thousands of files closed just before): the mount is gone all the
        // same, which is what matters here.
        Ok(Err(e)) if !is_mounted(&args.mountpoint) => {
            eprintln!("slowfs: unmounted (the session ended with: {e})");
        }
        Ok(r) => r.map_err(|e| format!("unmount {}: {e}", args.mountpoint.display()))?,
        Err(_) => {
            // Exiting closes /dev/fuse, which ends the connection.
            eprintln!("slowfs: unmount did not finish in 5 s; exiting anyway");
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&args.mountpoint)
                .status();
        }
    }
    write("at unmount")?;
    eprintln!("slowfs: unmounted, {} requests", counts.total());
    Ok(ExitCode::SUCCESS)
}

/// Whether `dir` is a mount point in /proc/self/mountinfo (field 5, with
/// the kernel's octal escapes for space, tab, newline and backslash).
fn is_mounted(dir: &std::path::Path) -> bool {
    // The parent, not the mount point itself: a dead FUSE mount fails stat.
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return true;
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    let Ok(dir) = std::fs::canonicalize(parent).map(|p| p.join(name)) else {
        return true;
    };
    let want = dir
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(true)
}

/// Every open file of every client holds one descriptor here until its
/// release arrives, and releases queue behind the lock: 64 processes
/// mapping hundreds of libraries exceed the default soft limit of 1,024
/// (clients then saw EMFILE). Raise it: to 2^20 where allowed (root),
/// else to the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on local structs.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        let big = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: r.rlim_max.max(1 << 20),
        };
        if r.rlim_cur < big.rlim_cur && libc::setrlimit(libc::RLIMIT_NOFILE, &big) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Blocks SIGTERM and SIGINT in every thread (they are inherited), so the
/// main thread alone takes them with sigwait.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is initialised; `sig` is a valid out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
}
