//! `fmcache-bcast` for each MPI the tests run: one build per MPI (their
//! ABIs differ), as sites build it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::{tool, workspace};

/// The MPIs the tests run, as Debian installs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpi {
    OpenMpi,
    Mpich,
}

impl Mpi {
    /// The compiler wrapper rsmpi's build probes (`MPICC`).
    fn mpicc(self) -> &'static str {
        match self {
            Mpi::OpenMpi => "mpicc.openmpi",
            Mpi::Mpich => "mpicc.mpich",
        }
    }

    /// The launcher run outside Slurm.
    pub fn launcher(self) -> &'static str {
        match self {
            Mpi::OpenMpi => "mpirun.openmpi",
            Mpi::Mpich => "mpiexec.mpich",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mpi::OpenMpi => "openmpi",
            Mpi::Mpich => "mpich",
        }
    }
}

/// `fmcache-bcast` built against `mpi`, in `<target>/bcast-<mpi>` beside
/// the tool's target directory (cargo is a no-op when it is up to date):
/// given to `fmcache bcast` as `FMCACHE_BCAST`. Built from this source
/// tree, so its build id is the tool's.
pub fn bcast_exe(mpi: Mpi) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(Mpi, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(m, _)| *m == mpi) {
        return p.clone();
    }
    // <target>/release/fmcache -> <target>/bcast-<mpi>
    let target = tool()
        .parent()
        .and_then(|p| p.parent())
        .expect("the tool lies in <target>/release")
        .join(format!("bcast-{}", mpi.name()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let o = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--release", "-p", "fmcache-bcast"])
        .env("CARGO_TARGET_DIR", &target)
        .env("MPICC", mpi.mpicc())
        .output()
        .expect("running cargo");
    assert!(
        o.status.success(),
        "building fmcache-bcast against {}: {}",
        mpi.mpicc(),
        String::from_utf8_lossy(&o.stderr)
    );
    let p = target.join("release/fmcache-bcast");
    built.push((mpi, p.clone()));
    p
}
