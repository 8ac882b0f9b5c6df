#!/usr/bin/env bash
# Memory benchmark: N processes (default 8) loading the same shared
# libraries at once, natively and under read-cache + LD_AUDIT (libraries
# mapped from the stage): Pss/Rss/private from /proc/PID/smaps while all N
# are alive. Workloads: tests/c/mem (three ~8 MiB libraries) and the venv
# python importing numpy and scipy.interpolate. See bench/README.md.
#
#   bench/memory.sh [-n N] [--top K] [--keep]
#
# With FMCACHE_LIB set (an existing libfmcache.so) nothing is built and that
# library is measured; otherwise the release build of bench/common.sh.
# Writes bench/results/memory.{md,log}. Runs from any directory.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="${FMCACHE_LIB:+FMCACHE_LIB=$FMCACHE_LIB }bench/memory.sh${*:+ $*}"

# Everything this script prints (stdout and stderr) also goes to the log.
exec > >(tee "$results/memory.log") 2>&1
echo "+ $invoked   (cwd $(pwd))"
if [[ -n ${FMCACHE_LIB:-} ]]; then
  [[ -f $FMCACHE_LIB ]] || { echo "bench: FMCACHE_LIB=$FMCACHE_LIB is not a file" >&2; exit 1; }
  echo "+ using FMCACHE_LIB=$FMCACHE_LIB (no build)"
  if [[ ! -f $repo/target/env/env.sh ]]; then
    echo "+ tests/env/setup.sh (target/env/env.sh missing)"
    bash "$repo/tests/env/setup.sh"
  fi
  # shellcheck source=/dev/null
  source "$repo/target/env/env.sh"
  driver_py=${FMCACHE_PYTHON:-/usr/bin/python3}
else
  # shellcheck source=bench/common.sh
  source "$bench_dir/common.sh"
  export FMCACHE_LIB=$repo/target/release/libfmcache.so
fi
export FMCACHE_VENV FMCACHE_VENV_PYTHON

status=0
"$driver_py" "$bench_dir/memory.py" --repo "$repo" --invoked "$invoked" "$@" || status=$?
# Close our end of the log pipe and let tee drain before exiting.
exec >&- 2>&-
wait
exit $status
