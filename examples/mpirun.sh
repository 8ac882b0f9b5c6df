#!/bin/bash
# fmcache under mpirun, inside an allocation, from the directory holding
# app.py:
#   salloc -N 4 --ntasks-per-node=6 bash examples/mpirun.sh
# (or submitted: sbatch -N 4 --ntasks-per-node=6 examples/mpirun.sh).
# mpirun hands its environment (LD_PRELOAD, DLFM_OP and the LD_AUDIT the
# library adds) to its daemons and ranks. MPIRUN names another launcher
# (mpiexec.mpich, mpirun.openmpi) if `mpirun` is not the MPI of mpi4py.
set -euo pipefail
module load fmcache
APP=${APP:-app.py}
MPIRUN=${MPIRUN:-mpirun}

if [[ ! -f fmcache.dat ]]; then
  echo "== pilot"
  DLFM_OP=write-cache LD_PRELOAD=libfmcache.so "$MPIRUN" -n 4 python "$APP"
fi
echo "== production"
DLFM_OP=read-cache LD_PRELOAD=libfmcache.so "$MPIRUN" -n "${SLURM_NTASKS:-24}" python "$APP"
