//! Gives the `fmcache` binary a DT_RPATH naming the directories its C
//! dependencies (libc.so.6, libgcc_s.so.1) come from on the build host.
//!
//! Why: without it ld.so searches `LD_LIBRARY_PATH` for them at every
//! `fmcache run`/`record` (about 39 probes per directory for libgcc_s: a
//! module environment with ten directories on the shared file system
//! costs 390 metadata requests before the program starts). A DT_RPATH is
//! searched before `LD_LIBRARY_PATH`.
#[path = "../preload/host_libdirs.rs"]
mod host_libdirs;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../preload/host_libdirs.rs");
    if let Some(dirs) = host_libdirs::rpath() {
        println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags,-rpath,{dirs}");
    }
}
