#!/bin/bash
#SBATCH --job-name=fmcache-example
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=6
#SBATCH --output=slurm-%j.out
# fmcache in a Slurm batch job, from the directory holding app.py:
#   sbatch examples/slurm.sh
# The first job records the cache (./fmcache.dat) with a small pilot; every
# job then runs the program served from it. Re-record (delete fmcache.dat)
# after installing or updating the software: `fmcache verify` says when.
set -euo pipefail
module load fmcache # PATH, LD_LIBRARY_PATH (finds libfmcache.so), FMCACHE_LIB
APP=${APP:-app.py}

if [[ ! -f fmcache.dat ]]; then
  # Pilot: a few ranks suffice, the cache holds the union of their probes.
  echo "== pilot"
  DLFM_OP=write-cache LD_PRELOAD=libfmcache.so srun -n 4 python "$APP"
fi

# Production, any width: the first rank on each node stages the cache on
# node-local storage (/dev/shm), the others find it there.
echo "== production"
DLFM_OP=read-cache LD_PRELOAD=libfmcache.so srun -n "$SLURM_NTASKS" python "$APP"
