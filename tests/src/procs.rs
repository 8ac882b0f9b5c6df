//! Long-lived child processes and their memory, for tests that need several
//! processes alive at once (the harness's [`Run`](crate::Run) runs one to
//! completion).
//!
//! - [`command`]: a `std::process::Command` with the same environment a
//!   `Run` in that [`Mode`] gets (inherited variables scrubbed, then
//!   `LD_PRELOAD`, `DLFM_OP`, `FMCACHE_FILE`, `FMCACHE_STAGE_DIR`).
//! - [`smaps`] / [`smaps_rollup`]: `/proc/PID/smaps` per mapping and
//!   `/proc/PID/smaps_rollup`, in kB.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

use crate::{lib, scrubbed, Mode};

/// `program` with the environment a [`Run`](crate::Run) in `mode` has.
/// Add `LD_AUDIT` yourself (as for a `Run`).
pub fn command(program: impl AsRef<OsStr>, mode: &Mode) -> Command {
    let mut cmd = Command::new(program);
    for k in scrubbed() {
        cmd.env_remove(k);
    }
    let (op, cache) = match mode {
        Mode::Native => return cmd,
        Mode::Record(c) => ("write-cache", c),
        Mode::Serve(c) => ("read-cache", c),
    };
    cmd.env("LD_PRELOAD", lib())
        .env("DLFM_OP", op)
        .env("FMCACHE_FILE", &cache.file)
        .env("FMCACHE_STAGE_DIR", &cache.stage);
    cmd
}

/// The memory fields of one mapping (or of a whole process), in kB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss: u64,
    pub pss: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
}

impl Mem {
    /// Pages mapped by this process alone.
    pub fn private(&self) -> u64 {
        self.private_clean + self.private_dirty
    }

    fn set(&mut self, line: &str) {
        let Some((k, rest)) = line.split_once(':') else {
            return;
        };
        let slot = match k {
            "Rss" => &mut self.rss,
            "Pss" => &mut self.pss,
            "Shared_Clean" => &mut self.shared_clean,
            "Shared_Dirty" => &mut self.shared_dirty,
            "Private_Clean" => &mut self.private_clean,
            "Private_Dirty" => &mut self.private_dirty,
            _ => return,
        };
        let v = rest.trim().trim_end_matches("kB").trim();
        *slot = v
            .parse()
            .unwrap_or_else(|_| panic!("smaps: bad line {line:?}"));
    }

    pub fn add(&mut self, o: &Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.shared_clean += o.shared_clean;
        self.shared_dirty += o.shared_dirty;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
    }
}

/// One line of `/proc/PID/smaps` with its fields.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The range, e.g. `7f00-7f10`.
    pub range: String,
    /// e.g. `r-xp`.
    pub perms: String,
    /// The mapped file, `[heap]`, ... or empty.
    pub path: String,
    pub mem: Mem,
}

/// Reads `/proc/PID/smaps`.
pub fn smaps(pid: u32) -> Vec<Mapping> {
    let p = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut v: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        // A header is `range perms offset dev inode [path]`; field lines
        // are `Name:   value`, and their name never contains a '-'.
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let mut f = line.splitn(6, char::is_whitespace);
            let range = f.next().unwrap_or("").to_string();
            let perms = f.next().unwrap_or("").to_string();
            let path = f.nth(3).unwrap_or("").trim_start().to_string();
            v.push(Mapping {
                range,
                perms,
                path,
                mem: Mem::default(),
            });
        } else if let Some(m) = v.last_mut() {
            m.mem.set(line);
        }
    }
    assert!(!v.is_empty(), "{p}: no mapping");
    v
}

/// Reads `/proc/PID/smaps_rollup` (the whole process).
pub fn smaps_rollup(pid: u32) -> Mem {
    let p = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut m = Mem::default();
    for line in text.lines().skip(1) {
        m.set(line);
    }
    assert!(m.rss > 0, "{p}: no Rss");
    m
}
