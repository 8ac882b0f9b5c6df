//! Gives libfmcache.so a DT_RPATH naming the directories its own C
//! dependencies (libc.so.6, libgcc_s.so.1) come from on the build host.
//!
//! Why: loaded as an LD_AUDIT library, the library sits in its own link
//! namespace and ld.so resolves those dependencies again, before any
//! auditor is active, searching the *executable's* RUNPATH first (for the
//! pyenv python that is `<prefix>/lib` and its 18 hwcaps/tls
//! subdirectories: about 24 failing probes of the shared tree per
//! process). A DT_RPATH on the library is searched before that and finds
//! them at once. The directories are read from this build script's own
//! memory map: where the host's loader really found them.
use std::collections::BTreeSet;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let dirs: BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with("/libc.so.6") || p.ends_with("/libgcc_s.so.1"))
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| d))
        .filter(|d| !d.is_empty() && !d.contains(':'))
        .collect();
    if dirs.is_empty() {
        return;
    }
    let list: Vec<&str> = dirs.into_iter().collect();
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--disable-new-dtags,-rpath,{}",
        list.join(":")
    );
}
