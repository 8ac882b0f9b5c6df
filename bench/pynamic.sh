#!/usr/bin/env bash
# Pynamic-style workloads (bench/pynamic/): builds the dlfm and spindle
# configurations, counts their file-system calls under strace natively,
# under write-cache and under read-cache (LD_PRELOAD + LD_AUDIT), and times
# the driver. See bench/pynamic/README.md.
#
#   bench/pynamic.sh [--configs dlfm,spindle] [--rounds N] [--jobs J] [--seed S]
#
# With FMCACHE_LIB set, uses that library and builds nothing of fmcache;
# else builds the release library as the other scripts do.
# Writes bench/results/pynamic.{md,log}. Runs from any directory.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="bench/pynamic.sh${*:+ $*}"

# Everything this script prints (stdout and stderr) also goes to the log.
exec > >(tee "$results/pynamic.log") 2>&1
echo "+ $invoked   (cwd $(pwd))"
if [[ -n ${FMCACHE_LIB:-} ]]; then
  echo "+ using FMCACHE_LIB=$FMCACHE_LIB (no cargo build)"
  if [[ ! -f $repo/target/env/env.sh ]]; then
    bash "$repo/tests/env/setup.sh"
  fi
  # shellcheck source=/dev/null
  source "$repo/target/env/env.sh"
  driver_py=${FMCACHE_PYTHON:-/usr/bin/python3}
else
  # shellcheck source=bench/common.sh
  source "$bench_dir/common.sh"
fi
command -v strace >/dev/null || { echo "bench: strace is needed" >&2; exit 1; }

status=0
"$driver_py" "$bench_dir/pynamic/bench.py" --repo "$repo" --invoked "$invoked" "$@" || status=$?
# Close our end of the log pipe and let tee drain before exiting.
exec >&- 2>&-
wait
exit $status
