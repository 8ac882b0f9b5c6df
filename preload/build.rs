//! Gives libfmcache.so a DT_RPATH naming the directory its own C
//! dependency (libc.so.6) comes from on the build host, and links the
//! unwinder statically (`static_unwinder`).
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
    static_unwinder();
    if let Some(dirs) = host_libdirs::rpath() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--disable-new-dtags,-rpath,{dirs}");
    }
}

/// Links the unwinder statically (libgcc_eh.a) instead of libgcc_s.so.1.
///
/// Why: Rust's std names `gcc_s` on linux-gnu, so every process the library
/// is loaded into maps one more shared object, relocates it and runs its
/// constructor, which asks the CPU about itself with `cpuid` (a VM exit
/// under virtualisation: about a fifth of the library's fixed cost per
/// process here). The static unwinder is what `gcc -static-libgcc` links;
/// our panics never unwind out of the library (`catch_unwind` in every
/// entry point), so it never meets another unwinder's frames. A linker
/// script named `libgcc_s.so`, found first, hands the linker libgcc_eh.a
/// instead (`GROUP` so its references to libc and libgcc resolve).
#[allow(clippy::disallowed_methods)] // a build script: std::fs is fine here
fn static_unwinder() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("OUT_DIR is writable");
    std::fs::write(dir.join("libgcc_s.so"), "GROUP ( -lgcc_eh -lgcc )\n")
        .expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
