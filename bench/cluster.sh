#!/usr/bin/env bash
# Cluster benchmark: on the 4-node Slurm cluster of tests/cluster (brought up
# here), a pilot `srun -n 24` under write-cache, then production runs of 24
# and 96 ranks, each traced (strace -y per rank) to count, per node, the
# requests for the cache file and the calls on the venv and interpreter
# prefix, plus untraced wall times against native. See bench/README.md.
#
#   bench/cluster.sh [--ranks 24,96]
#
# With FMCACHE_LIB set nothing is built. Writes bench/results/cluster.{md,log}.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="${FMCACHE_LIB:+FMCACHE_LIB=$FMCACHE_LIB }bench/cluster.sh${*:+ $*}"
exec > >(tee "$results/cluster.log") 2>&1
echo "+ $invoked   (cwd $(pwd))"
if [[ -z ${FMCACHE_LIB:-} ]]; then
  # shellcheck source=/dev/null
  source "$bench_dir/common.sh"
  export FMCACHE_LIB=$repo/target/release/libfmcache.so
else
  [[ -f $repo/target/env/env.sh ]] || bash "$repo/tests/env/setup.sh"
  # shellcheck source=/dev/null
  source "$repo/target/env/env.sh"
  driver_py=${FMCACHE_PYTHON:-/usr/bin/python3}
fi
bash "$repo/tests/cluster/up.sh"
# shellcheck source=/dev/null
source "$repo/target/cluster/env.sh"
"$driver_py" "$bench_dir/cluster.py" --repo "$repo" --invoked "$invoked" "$@"
