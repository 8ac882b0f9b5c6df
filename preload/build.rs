//! Gives libfmcache.so a DT_RPATH naming the directories its own C
//! dependencies (libc.so.6, libgcc_s.so.1) come from on the build host.
//!
//! Why: loaded as an LD_AUDIT library, the library sits in its own link
//! namespace and ld.so resolves those dependencies again, before any
//! auditor is active, searching the *executable's* RUNPATH first (for the
//! pyenv python that is `<prefix>/lib` and its 18 hwcaps/tls
//! subdirectories: about 24 failing probes of the shared tree per
//! process). A DT_RPATH on the library is searched before that and finds
//! them at once. The directories are where the host's loader really found
//! them (`host_libdirs.rs`).
#[path = "host_libdirs.rs"]
mod host_libdirs;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=host_libdirs.rs");
    if let Some(dirs) = host_libdirs::rpath() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--disable-new-dtags,-rpath,{dirs}");
    }
}
