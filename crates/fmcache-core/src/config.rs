//! Settings from the environment, shared by the library and the tool.
//! Read once at start-up (allocation is fine there).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::path;

/// `DLFM_OP`: what the library does in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Off,
    Record,
    Serve,
}

pub const DEFAULT_CACHE: &str = "fmcache.dat";
pub const DEFAULT_MAX_FILE: u64 = 64 << 20;
/// Never served, whatever the scope: kernel and per-boot state (checked on
/// the canonical path too).
pub const ALWAYS_EXCLUDED: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

/// `FMCACHE_VERIFY`: what the stager checks against the live file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the cache is a snapshot.
    Off,
    /// `stat`: once per stage (per node), every file whose bytes are served
    /// is compared with the live file (inode, size, mtime, ctime).
    Stat,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub op: Op,
    /// Absolute path of the cache file.
    pub cache: Vec<u8>,
    /// Per-user stage base directory.
    pub stage_base: Vec<u8>,
    /// FMCACHE_INCLUDE: served as software besides what is inferred.
    pub include: Vec<Vec<u8>>,
    /// FMCACHE_EXCLUDE: never served.
    pub exclude: Vec<Vec<u8>>,
    pub max_file: u64,
    pub stats: Option<Vec<u8>>,
    pub verify: Verify,
    /// The job this process belongs to, as its launcher says (Slurm,
    /// PMIx/Open MPI, MPICH's Hydra, PBS, LSF, Flux): processes of one job
    /// on one node share a stage found without asking the shared file
    /// system. None outside a job.
    pub job: Option<Vec<u8>>,
    /// A `DLFM_OP` value that is none of the valid ones (`op` is then
    /// `Off`): said in one line, never guessed at.
    pub bad_op: Option<Vec<u8>>,
    /// FMCACHE_STAGE_BUDGET: how much the stages of this user on a node
    /// may hold before unused ones go, least recently used first.
    pub stage_budget: Budget,
}

/// A size limit: bytes, or a percentage of the stage file system's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Bytes(u64),
    Percent(u8),
}

/// Default stage budget: a quarter of the stage file system. /dev/shm is
/// half the node's memory by default, so stages nobody uses keep at most
/// an eighth of it, memory the job's own processes may need; yet a 256
/// GiB node keeps some 200 W2-sized stages (156 MiB each) warm.
pub const DEFAULT_STAGE_BUDGET: Budget = Budget::Percent(25);

/// `N%` (0 to 100) or a size as `parse_size` reads it.
pub fn parse_budget(s: &str) -> Option<Budget> {
    match s.trim().strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= 100)
            .map(Budget::Percent),
        None => parse_size(s).map(Budget::Bytes),
    }
}

/// What `DLFM_OP` accepts, for the line that names them.
pub const VALID_OPS: &str = "off (or unset), write-cache, read-cache";

/// `DLFM_OP`'s value: exactly one of the valid spellings, or None. Near
/// misses (`read_cache`, `READ-CACHE`) are errors too: guessing would hide
/// the mistake in the one place the user looks (a job script).
pub fn parse_op(v: Option<&[u8]>) -> Option<Op> {
    match v {
        None | Some(b"") | Some(b"off") => Some(Op::Off),
        Some(b"write-cache") => Some(Op::Record),
        Some(b"read-cache") => Some(Op::Serve),
        Some(_) => None,
    }
}

/// The variables holding paths that are resolved once, in the first
/// process with `DLFM_OP` on, and handed to children as absolute paths
/// (a child that changed directory would otherwise resolve them anew).
pub const PATH_VARS: [&str; 3] = ["FMCACHE_FILE", "FMCACHE_STATS", "FMCACHE_STAGE_DIR"];

/// The library's own environment variables, name and one-line meaning:
/// what turns it on and what it is told. The one list: README's table,
/// `fmcache env`, the tests (which scrub them) and the bench drivers use
/// it; a test checks that every variable the library reads is here or in
/// [`CONTEXT_VARS`]. `fmcache env --names` prints the names, for
/// `for v in $(fmcache env --names); do unset $v; done`.
pub const LIBRARY_VARS: &[(&str, &str)] = &[
    (
        "DLFM_OP",
        "write-cache records, read-cache serves, off or unset: nothing",
    ),
    (
        "LD_PRELOAD",
        "loads the library (libfmcache.so) into every process started",
    ),
    (
        "LD_AUDIT",
        "the library as ld.so's auditor; set by the library for the processes it starts",
    ),
    ("FMCACHE_FILE", "the cache file (default ./fmcache.dat)"),
    (
        "FMCACHE_STAGE_DIR",
        "node-local stage base, a 0700 directory of yours (default /dev/shm/fmcache-<uid>)",
    ),
    (
        "FMCACHE_STAGE_BUDGET",
        "bytes (K/M/G) or N% of the stage file system that unused stages may hold, least recently used removed first (default 25%)",
    ),
    (
        "FMCACHE_STATS",
        "append one line of counters per process at exit; live counters beside it",
    ),
    (
        "FMCACHE_INCLUDE",
        "colon-separated directories also served, besides the software found",
    ),
    (
        "FMCACHE_EXCLUDE",
        "colon-separated directories never served",
    ),
    (
        "FMCACHE_MAX_FILE",
        "files larger than this (default 64M) are recorded as metadata only",
    ),
    (
        "FMCACHE_VERIFY",
        "stat: the first process on a node compares every served file with the live one",
    ),
    (
        "FMCACHE_DEBUG",
        "comma-separated: search (why a library search was left to ld.so), pass (each call passed to the real function, and why), panic (a self-test: every answer panics inside the library; the calls pass through)",
    ),
    (
        "FMCACHE_WARNED",
        "set by the library: warnings already printed in this process tree",
    ),
    (
        "FMCACHE_ATTACHED",
        "set by the library: the cache version and stage this process tree serves",
    ),
];

/// Variables the library reads but does not own (set by the user's
/// environment or the launcher): what they tell it. Not scrubbed by
/// `fmcache env --names` users: the software and the job need them.
pub const CONTEXT_VARS: &[(&str, &str)] = &[
    (
        "LD_LIBRARY_PATH",
        "software directories (roots), and where bare-name library searches look",
    ),
    ("PYTHONPATH", "software directories (roots)"),
    ("PYTHONHOME", "software directories (roots)"),
    ("VIRTUAL_ENV", "a software tree (root)"),
    ("CONDA_PREFIX", "a software tree (root)"),
    ("HOME", "a user area: never inferred as a root"),
    ("TMPDIR", "a user area: never inferred as a root"),
    (
        "SLURM_JOB_ID",
        "the job: its processes on a node share one stage",
    ),
    ("PMIX_NAMESPACE", "the job (PMIx, Open MPI)"),
    ("PMI_JOBID", "the job (MPICH's Hydra)"),
    ("PBS_JOBID", "the job (PBS)"),
    ("LSB_JOBID", "the job (LSF)"),
    ("FLUX_JOB_ID", "the job (Flux)"),
];

/// Launcher variables naming the job, most specific first.
pub const JOB_VARS: [&str; 6] = [
    "SLURM_JOB_ID",
    "PMIX_NAMESPACE",
    "PMI_JOBID",
    "PBS_JOBID",
    "LSB_JOBID",
    "FLUX_JOB_ID",
];

impl Config {
    /// Reads the settings through `get` (an environment lookup), resolving
    /// relative paths against `cwd`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>, cwd: &[u8], euid: u32) -> Config {
        let raw_op = get("DLFM_OP");
        let raw_op = raw_op.as_deref().map(|s| s.as_bytes());
        let (op, bad_op) = match parse_op(raw_op) {
            Some(op) => (op, None),
            None => (Op::Off, raw_op.map(<[u8]>::to_vec)),
        };
        let abs = |p: OsString| -> Vec<u8> {
            let mut b = path::PathBuf::new();
            if path::normalize(Some(cwd), p.as_bytes(), &mut b) {
                b.as_bytes().to_vec()
            } else {
                p.into_vec()
            }
        };
        let cache = abs(get("FMCACHE_FILE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_CACHE.into()));
        let stage_base = get("FMCACHE_STAGE_DIR")
            .filter(|v| !v.is_empty())
            .map(abs)
            .unwrap_or_else(|| format!("/dev/shm/fmcache-{euid}").into_bytes());
        let list = |name: &str| -> Vec<Vec<u8>> {
            get(name)
                .map(|v| {
                    v.as_bytes()
                        .split(|&b| b == b':')
                        .filter(|p| !p.is_empty())
                        .map(|p| abs(OsString::from_vec(p.to_vec())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let max_file = get("FMCACHE_MAX_FILE")
            .and_then(|v| v.to_str().and_then(parse_size))
            .unwrap_or(DEFAULT_MAX_FILE);
        Config {
            op,
            cache,
            stage_base,
            include: list("FMCACHE_INCLUDE"),
            exclude: list("FMCACHE_EXCLUDE"),
            max_file,
            stats: get("FMCACHE_STATS").filter(|v| !v.is_empty()).map(abs),
            job: JOB_VARS.iter().find_map(|k| {
                let v = get(k).filter(|v| !v.is_empty())?;
                Some([k.as_bytes(), b"=", v.as_bytes()].concat())
            }),
            verify: match get("FMCACHE_VERIFY").as_deref().map(|v| v.as_bytes()) {
                Some(b"stat") => Verify::Stat,
                _ => Verify::Off,
            },
            bad_op,
            stage_budget: get("FMCACHE_STAGE_BUDGET")
                .and_then(|v| v.to_str().and_then(parse_budget))
                .unwrap_or(DEFAULT_STAGE_BUDGET),
        }
    }

    pub fn from_env() -> Config {
        let cwd = std::env::current_dir()
            .map(|p| p.into_os_string().into_vec())
            .unwrap_or_else(|_| b"/".to_vec());
        Config::from_lookup(
            |k| std::env::var_os(k),
            &cwd,
            rustix::process::geteuid().as_raw(),
        )
    }

    /// The recorder's working directory next to the cache: journals and
    /// the merge lock.
    pub fn record_dir(&self) -> Vec<u8> {
        let mut d = self.cache.clone();
        d.extend_from_slice(b".rec");
        d
    }
}

/// `FMCACHE_WARNED`: hashes of the warnings already printed in this
/// process tree, inherited through the environment, so a warning every
/// process would print (a missing cache, a bad setting) is printed once.
pub const WARNED_VAR: &str = "FMCACHE_WARNED";
/// `FMCACHE_ATTACHED`: `<checksum>:<key>` (16 hex digits each) of the
/// stage an attached process serves, inherited through the environment:
/// a process of the tree with the same cache and stage base maps that
/// stage without a request for the cache (`stage::attach_inherited`).
pub const ATTACHED_VAR: &str = "FMCACHE_ATTACHED";
/// At most this many hashes are carried (a tree rarely has more than one
/// or two distinct warnings; past this, warnings repeat).
pub const WARNED_MAX: usize = 8;

/// The hash a warning is known by in `FMCACHE_WARNED`: its text, which
/// names the cache and the reason.
pub fn warning_hash(text: &[u8]) -> [u8; 16] {
    let h = xxhash_rust::xxh3::xxh3_64(text);
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[(h >> (60 - 4 * i)) as usize & 15];
    }
    out
}

/// Whether a `FMCACHE_WARNED` value holds `hash`.
pub fn warned(list: &[u8], hash: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|h| h == hash)
}

/// "64M", "1G", "4096" -> bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_budgets() {
        assert_eq!(parse_budget("25%"), Some(Budget::Percent(25)));
        assert_eq!(parse_budget(" 0 % "), Some(Budget::Percent(0)));
        assert_eq!(parse_budget("101%"), None);
        assert_eq!(parse_budget("2G"), Some(Budget::Bytes(2 << 30)));
        assert_eq!(parse_budget("0"), Some(Budget::Bytes(0)));
        assert_eq!(parse_budget("lots"), None);
    }

    #[test]
    fn only_exact_op_spellings() {
        assert_eq!(parse_op(None), Some(Op::Off));
        assert_eq!(parse_op(Some(b"")), Some(Op::Off));
        assert_eq!(parse_op(Some(b"off")), Some(Op::Off));
        assert_eq!(parse_op(Some(b"write-cache")), Some(Op::Record));
        assert_eq!(parse_op(Some(b"read-cache")), Some(Op::Serve));
        for bad in [
            &b"read_cache"[..],
            b"write_cache",
            b"READ-CACHE",
            b"on",
            b"1",
        ] {
            assert_eq!(parse_op(Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn variable_lists_hold_the_named_ones() {
        let own = |k: &str| LIBRARY_VARS.iter().any(|(n, _)| *n == k);
        let context = |k: &str| CONTEXT_VARS.iter().any(|(n, _)| *n == k);
        for k in PATH_VARS.iter().chain(&[WARNED_VAR, ATTACHED_VAR]) {
            assert!(own(k), "{k}");
        }
        for k in JOB_VARS {
            assert!(context(k), "{k}");
        }
        let mut all: Vec<&str> = LIBRARY_VARS
            .iter()
            .chain(CONTEXT_VARS)
            .map(|(n, _)| *n)
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name listed twice");
        for (k, what) in LIBRARY_VARS.iter().chain(CONTEXT_VARS) {
            assert!(!what.is_empty() && !what.contains('\n'), "{k}");
        }
    }

    #[test]
    fn warned_list() {
        let h = warning_hash(b"x: not found; running uncached");
        assert_eq!(h.len(), 16);
        let list = [&b"0123456789abcdef,"[..], &h].concat();
        assert!(warned(&list, &h));
        assert!(!warned(b"0123456789abcdef", &h));
        assert!(!warned(b"", &h));
    }
}
