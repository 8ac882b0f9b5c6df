//! A real second local user for the tests that need permissions to bite
//! (root bypasses read and write bits) or identities to differ.
//!
//! - [`other`]: `fmcache-other`, created once with `useradd` if missing
//!   (shared by every test that needs a second user); [`victim`]:
//!   `fmcache-victim`, a third, non-root user.
//! - [`run_as`]: a [`Run`] executed under that user's real and effective
//!   ids, with no supplementary groups.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

use crate::{Out, Run};

/// The second user's name.
pub const NAME: &str = "fmcache-other";

/// A user's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

fn lookup(name: &str) -> Option<Ids> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").arg(flag).arg(name).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().parse().ok())?
    };
    Some(Ids {
        uid: id("-u")?,
        gid: id("-g")?,
    })
}

/// `fmcache-other`'s ids, creating the user if it does not exist.
pub fn other() -> Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    *IDS.get_or_init(|| ensure(NAME))
}

/// A third user, `fmcache-victim`, for the tests where neither the
/// attacker nor the victim may be root.
pub const VICTIM: &str = "fmcache-victim";

pub fn victim() -> Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    *IDS.get_or_init(|| ensure(VICTIM))
}

/// A user's ids, creating it (no home, no login shell, a group of its
/// own) if it does not exist. Another test binary may be creating it at
/// the same moment: useradd then fails on its lock or reports the name
/// taken, and the lookup after a pause finds it.
fn ensure(name: &str) -> Ids {
    for _ in 0..20 {
        if let Some(ids) = lookup(name) {
            assert_ne!(ids.uid, 0, "{name} must not be root");
            return ids;
        }
        let o = Command::new("useradd")
            .args(["-M", "-r", "-U", "-s", "/usr/sbin/nologin", name])
            .output()
            .expect("useradd (package passwd) is needed to create the test user");
        if !o.status.success() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    panic!("cannot create or find the user {name}");
}

/// Runs `run` as `ids` (real and effective uid and gid; std drops the
/// supplementary groups when root sets a uid).
pub fn run_as(run: &Run, ids: Ids) -> Out {
    let mut cmd = Run::command(&run.program);
    cmd.args(&run.args);
    for (k, v) in run.lib_env() {
        cmd.env(k, v);
    }
    cmd.uid(ids.uid).gid(ids.gid);
    run.execute(cmd)
}
