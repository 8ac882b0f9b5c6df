//! What a cache serves: the software, never the user's data.
//!
//! The merge keeps only entries at or under a *root*. Roots come from what
//! the pilot's processes were running and loading, never from what they
//! merely read:
//!
//! - fixed system software: `/usr`, `/lib*`, `/bin`, `/sbin`, `/opt`,
//!   `/etc/ld.so.cache`;
//! - the installation prefix of each executable (as exec'd, and as the
//!   kernel resolved it) and of each shared object the process opened: the
//!   parent of its directory when that is named `bin`, `sbin`, `lib`,
//!   `lib64`, `lib32`, `libx32` or `libexec`, else the directory itself
//!   (`venv/bin/python` gives the venv, `/opt/x/lib/libx.so` gives `/opt/x`,
//!   `site-packages/numpy/_core/m.so` its package directory);
//! - directories named as software by the environment: `PYTHONPATH`,
//!   `PYTHONHOME`, `LD_LIBRARY_PATH`, `VIRTUAL_ENV`, `CONDA_PREFIX`;
//! - every `site-packages` / `dist-packages` directory Python probed;
//! - what `FMCACHE_INCLUDE` names.
//!
//! The user's areas (each process's cwd, `HOME`, `TMPDIR`, `/tmp`,
//! `/var/tmp`, `/dev/shm`, `/home`, `/`) are never roots by inference: an
//! inferred root that is one of them, or holds one, falls back to the
//! object's own directory, then to the object file alone. A user area that
//! lies under any root is cut out of it (unless named by FMCACHE_INCLUDE).
//! `FMCACHE_EXCLUDE`, the kernel's trees (`/proc`, `/sys`, `/dev`, `/run`),
//! the stage and the cache's own files are never served.

use std::collections::BTreeSet;

use crate::config::{Config, ALWAYS_EXCLUDED};
use crate::path;

/// Always served when probed: the system's software.
pub const SYSTEM_ROOTS: [&str; 9] = [
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/opt",
    "/etc/ld.so.cache",
];

/// Never roots by inference: where users keep data.
pub const FIXED_USER_AREAS: [&str; 6] = ["/", "/home", "/tmp", "/var/tmp", "/dev/shm", "/root"];

/// Directory names whose parent is an installation prefix.
const PREFIX_DIRS: [&[u8]; 7] = [
    b"bin", b"sbin", b"lib", b"lib64", b"lib32", b"libx32", b"libexec",
];

/// The hints the journals carry, gathered before the roots are settled.
#[derive(Default, Debug, Clone)]
pub struct Hints {
    /// Files whose prefix is software (executables, loaded objects).
    pub prefixes: BTreeSet<Vec<u8>>,
    /// Directories that are software as they stand.
    pub trees: BTreeSet<Vec<u8>>,
    /// The user's areas.
    pub user_areas: BTreeSet<Vec<u8>>,
    /// Named by the user.
    pub includes: BTreeSet<Vec<u8>>,
}

/// Whether `p` lies in one of the kernel's trees (`ALWAYS_EXCLUDED`).
pub fn in_kernel_tree(p: &[u8]) -> bool {
    ALWAYS_EXCLUDED.iter().any(|x| path::under(p, x.as_bytes()))
}

/// Whether a file name looks like a shared object (`x.so`, `libx.so.1.2`).
pub fn is_shared_object_name(p: &[u8]) -> bool {
    let name = path::file_name(p);
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

/// The `site-packages`/`dist-packages` directory `p` lies in, if any.
pub fn packages_dir(p: &[u8]) -> Option<&[u8]> {
    for pat in [&b"/site-packages"[..], b"/dist-packages"] {
        let mut from = 0;
        while let Some(i) = find(&p[from..], pat) {
            let end = from + i + pat.len();
            if end == p.len() || p[end] == b'/' {
                return Some(&p[..end]);
            }
            from = end;
        }
    }
    None
}

/// `p` with `.` and `..` resolved by name alone.
pub fn lexical(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for c in &parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The settled scope of one cache.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Minimal: no root lies under another.
    pub roots: Vec<Vec<u8>>,
    /// Cut out of the roots: user areas under them, FMCACHE_EXCLUDE.
    pub cut: Vec<Vec<u8>>,
    /// The cache's own files and the stage.
    own: Vec<Vec<u8>>,
    /// Paths whose prefix is exactly the cache file (the cache, its
    /// `.rec`, temporaries).
    cache: Vec<u8>,
}

impl Scope {
    /// Settles the roots from `hints`, the configuration, and the roots a
    /// previous cache already had.
    pub fn settle(cfg: &Config, hints: &Hints, previous: &[Vec<u8>]) -> Scope {
        let mut areas: BTreeSet<Vec<u8>> = hints.user_areas.clone();
        areas.extend(FIXED_USER_AREAS.iter().map(|a| a.as_bytes().to_vec()));
        // A user area, or a directory holding one, is never inferred.
        let holds_area = |d: &[u8]| {
            areas
                .iter()
                .any(|a| path::under(a, path::trim_trailing_slash(d)))
        };
        let mut roots: BTreeSet<Vec<u8>> = BTreeSet::new();
        let add = |roots: &mut BTreeSet<Vec<u8>>, r: &[u8]| {
            let r = path::trim_trailing_slash(r);
            if r.first() == Some(&b'/') && r.len() > 1 {
                roots.insert(r.to_vec());
            }
        };
        for r in SYSTEM_ROOTS {
            add(&mut roots, r.as_bytes());
        }
        for f in &hints.prefixes {
            // `$ORIGIN/../lib/libu.so`: the prefix is read by name.
            let f = &lexical(f);
            let Some(dir) = path::parent(f) else { continue };
            let prefix = if PREFIX_DIRS.contains(&path::file_name(dir)) {
                path::parent(dir).unwrap_or(dir)
            } else {
                dir
            };
            if !holds_area(prefix) {
                add(&mut roots, prefix);
            } else if !holds_area(dir) {
                add(&mut roots, dir);
            } else {
                add(&mut roots, f);
            }
        }
        for t in &hints.trees {
            let t = &lexical(t);
            if !holds_area(t) {
                add(&mut roots, t);
            }
        }
        for r in previous {
            if !holds_area(r) {
                add(&mut roots, r);
            }
        }
        for i in hints.includes.iter().chain(cfg.include.iter()) {
            add(&mut roots, i);
        }
        let excluded_area = |r: &[u8]| {
            in_kernel_tree(r) || ALWAYS_EXCLUDED.iter().any(|x| path::under(x.as_bytes(), r))
        };
        roots.retain(|r| !excluded_area(r));
        // Minimal: drop roots under another root.
        let all: Vec<Vec<u8>> = roots.into_iter().collect();
        let roots: Vec<Vec<u8>> = all
            .iter()
            .filter(|r| !all.iter().any(|o| o != *r && path::under(r, o)))
            .cloned()
            .collect();

        let included = |a: &[u8]| {
            hints
                .includes
                .iter()
                .chain(cfg.include.iter())
                .any(|i| path::under(i, a) || path::under(a, i))
        };
        let mut cut: Vec<Vec<u8>> = areas
            .iter()
            .filter(|a| a.len() > 1 && roots.iter().any(|r| path::under(a, r) && *a != r))
            .filter(|a| !included(a))
            .cloned()
            .collect();
        cut.extend(cfg.exclude.iter().cloned());
        let mut own = vec![cfg.stage_base.clone()];
        if let Some(s) = &cfg.stats {
            own.push(s.clone());
        }
        Scope {
            roots,
            cut,
            own,
            cache: cfg.cache.clone(),
        }
    }

    /// Whether the cache may answer for `p` (an absolute, normalised path).
    pub fn serves(&self, p: &[u8]) -> bool {
        if p.first() != Some(&b'/') {
            return false;
        }
        let p = path::trim_trailing_slash(p);
        if in_kernel_tree(p) {
            return false;
        }
        if p.starts_with(&self.cache) || self.own.iter().any(|o| path::under(p, o)) {
            return false;
        }
        let inside = |q: &[u8]| {
            self.roots.iter().any(|r| path::under(q, r))
                && !self.cut.iter().any(|c| path::under(q, c))
        };
        // `..` keeps its kernel meaning in keys (`lib/../lib64/x`): the
        // path must stay inside the software however it is read.
        inside(p) && (!path::has_dot_components(p) || inside(&lexical(p)))
    }

    /// The group a path left out belongs to, for reports: the user area
    /// holding it, else its first two components.
    pub fn group_of(&self, hints: &Hints, p: &[u8]) -> Vec<u8> {
        if let Some(a) = hints
            .user_areas
            .iter()
            .filter(|a| path::under(p, a))
            .max_by_key(|a| a.len())
        {
            return a.clone();
        }
        let mut slashes = 0;
        for (i, &b) in p.iter().enumerate() {
            if b == b'/' && i > 0 {
                slashes += 1;
                if slashes == 2 {
                    return p[..i].to_vec();
                }
            }
        }
        p.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_lookup(|_| None, b"/job", 1000)
    }

    fn hints(prefixes: &[&str], trees: &[&str], areas: &[&str]) -> Hints {
        let set = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Hints {
            prefixes: set(prefixes),
            trees: set(trees),
            user_areas: set(areas),
            includes: BTreeSet::new(),
        }
    }

    #[test]
    fn software_served_data_not() {
        let h = hints(
            &[
                "/sw/venv/bin/python",
                "/home/u/.pyenv/versions/3.11/bin/python3.11",
                "/job/libmine.so",
                "/home/u/lib/libx.so",
                "/sw/pkg/modules/../lib/libp.so",
            ],
            &["/home/u"],
            &["/job", "/home/u"],
        );
        let s = Scope::settle(&cfg(), &h, &[]);
        for yes in [
            "/sw/venv",
            "/sw/venv/lib/python3.11/site-packages/numpy/__init__.py",
            "/home/u/.pyenv/versions/3.11/lib/python3.11/os.py",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/job/libmine.so",
            "/home/u/lib/libx.so",
            "/etc/ld.so.cache",
        ] {
            assert!(s.serves(yes.as_bytes()), "{yes} should be served: {s:?}");
        }
        for no in [
            "/job/params.txt",
            "/job",
            "/home/u/data.csv",
            "/home/u",
            "/sw",
            "/etc/mtab",
            "/proc/self/maps",
            "/tmp/x",
            "/job/fmcache.dat",
            "/sw/venv/../../job/params.txt",
        ] {
            assert!(!s.serves(no.as_bytes()), "{no} should pass through: {s:?}");
        }
    }

    #[test]
    fn user_area_under_a_root_is_cut() {
        let h = hints(&["/usr/bin/python3"], &[], &["/usr/src/job"]);
        let s = Scope::settle(&cfg(), &h, &[]);
        assert!(s.serves(b"/usr/lib/python3/os.py"));
        assert!(!s.serves(b"/usr/src/job/input.txt"));
    }

    #[test]
    fn packages_dirs() {
        assert_eq!(
            packages_dir(b"/a/lib/python3.11/site-packages/numpy/x.py"),
            Some(&b"/a/lib/python3.11/site-packages"[..])
        );
        assert_eq!(packages_dir(b"/a/site-packages-old/x"), None);
        assert!(is_shared_object_name(b"/a/libz.so.1.2"));
        assert!(is_shared_object_name(
            b"/a/m.cpython-311-x86_64-linux-gnu.so"
        ));
        assert!(!is_shared_object_name(b"/a/solver.py"));
    }
}
