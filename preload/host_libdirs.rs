//! The directories the build host's loader found libc.so.6 and
//! libgcc_s.so.1 in, read from this build script's own memory map. Shared
//! by the build scripts of `libfmcache.so` and the `fmcache` binary, which
//! both name them in a DT_RPATH (searched before LD_LIBRARY_PATH and any
//! RUNPATH), so neither searches the user's library paths for its own C
//! dependencies.
use std::collections::BTreeSet;

/// `dir1:dir2`, or `None` when the map cannot be read.
// A build script, run by cargo at build time, never inside a hook: std::fs
// is fine here (preload/clippy.toml forbids it in the library).
#[allow(clippy::disallowed_methods)]
pub fn rpath() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let dirs: BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with("/libc.so.6") || p.ends_with("/libgcc_s.so.1"))
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| d))
        .filter(|d| !d.is_empty() && !d.contains(':'))
        .collect();
    (!dirs.is_empty()).then(|| dirs.into_iter().collect::<Vec<_>>().join(":"))
}
