//! `make install` into a prefix, and a clean shell with the installed Lmod
//! module loaded, as a user's login shell on a site would have it
//! (`tests/tests/install.rs`, `tests/tests/cluster.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{lib, py_env, tool, workspace};

/// Lmod's system-wide init, as Debian's `lmod` package installs it (what
/// a login shell sources from /etc/profile.d).
pub const LMOD_INIT: &str = "/etc/profile.d/lmod.sh";

/// `make ARGS...` in the workspace, with this process's environment;
/// panics with make's output on failure, returns its stdout.
pub fn make(args: &[String]) -> String {
    let o = Command::new("make")
        .arg("-C")
        .arg(workspace())
        .args(args)
        .output()
        .expect("running make");
    assert!(
        o.status.success(),
        "make {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `make TARGET PREFIX=prefix [DESTDIR=destdir]`. Installs with
/// `NOBUILD=1`: the artefacts under test, without the Makefile's `cargo
/// build -p ...`, which after the workspace's `cargo test` (other features
/// unified) would put the other build in place under running tests. The
/// Makefile's own paths (`make paths`, from `cargo metadata`) are checked
/// to be the artefacts under test (`FMCACHE_BIN`, `FMCACHE_LIB`).
pub fn make_at(target: &str, prefix: &Path, destdir: Option<&Path>) -> String {
    let paths = make(&["-s".into(), "paths".into()]);
    let want = format!("{}\n{}\n", tool().display(), lib().display());
    assert_eq!(
        paths, want,
        "the Makefile (cargo metadata) takes other artefacts than the ones \
         under test: set FMCACHE_BIN/FMCACHE_LIB to the target directory \
         cargo uses (CARGO_TARGET_DIR)"
    );
    let mut args = vec![
        target.to_string(),
        "NOBUILD=1".into(),
        format!("PREFIX={}", prefix.display()),
    ];
    if let Some(d) = destdir {
        args.push(format!("DESTDIR={}", d.display()));
    }
    make(&args)
}

/// `make install PREFIX=prefix`, checking that what it installed is the
/// binary and library under test.
pub fn make_install(prefix: &Path) {
    make_at("install", prefix, None);
    for (installed, tested) in [
        (prefix.join("bin/fmcache"), tool()),
        (prefix.join("lib/libfmcache.so"), lib()),
    ] {
        assert!(
            fs::read(&installed).unwrap() == fs::read(tested).unwrap(),
            "make install put a {} that is not the {} under test",
            installed.display(),
            tested.display()
        );
    }
}

/// Single-quoted for the shell.
pub fn sh_quote(p: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", p.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// `bash -c SCRIPT` in a clean environment (`env -i` with HOME, USER and
/// a system PATH only, plus `extra`), after Lmod's init, `module use
/// <prefix>/share/modulefiles`, `module load fmcache` and the activation
/// of the test venv (so `python` is the venv's, as a user's would be).
/// The script runs under `set -e`.
pub fn module_shell(prefix: &Path, extra: &[(&str, String)], script: &str) -> Command {
    let venv = &py_env().venv;
    let mut c = Command::new("bash");
    c.env_clear()
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env(
            "USER",
            std::env::var_os("USER").unwrap_or_else(|| "root".into()),
        )
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in extra {
        c.env(k, v);
    }
    let full = format!(
        ". {init}\n\
         module use {mods} || exit 97\n\
         module load fmcache || exit 98\n\
         . {activate}\n\
         set -e\n\
         {script}",
        init = LMOD_INIT,
        mods = sh_quote(prefix.join("share/modulefiles")),
        activate = sh_quote(venv.join("bin/activate")),
    );
    c.args(["--noprofile", "--norc", "-c", &full]);
    c
}

/// Every file (not directory) under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
