#!/bin/bash
#SBATCH --job-name=fmcache-sbcast
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=6
#SBATCH --output=slurm-%j.out
# The sbcast variant: Slurm broadcasts the cache file itself to each node's
# local storage, and the ranks read it there (no request for the cache on
# the shared file system). From the directory holding app.py and the cache
# recorded by examples/slurm.sh (or `fmcache record -- python app.py`):
#   sbatch examples/slurm-sbcast.sh
set -euo pipefail
module load fmcache
APP=${APP:-app.py}
LOCAL=/dev/shm/fmcache-$SLURM_JOB_ID.dat # node-local on every node

sbcast -f fmcache.dat "$LOCAL"
echo "== production"
DLFM_OP=read-cache FMCACHE_FILE=$LOCAL LD_PRELOAD=libfmcache.so srun -n "$SLURM_NTASKS" python "$APP"
# Leave the nodes' memory as found.
srun -n "$SLURM_NNODES" --ntasks-per-node=1 rm -f "$LOCAL"
