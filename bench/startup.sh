#!/usr/bin/env bash
# Start-up benchmark: `python -c 'import numpy.fft; import scipy.interpolate'`
# with the real venv interpreter, natively, under write-cache and under
# read-cache, interleaved in shuffled rounds. See bench/README.md.
#
#   bench/startup.sh [--rounds N] [--cold K] [--seed S] [--keep]
#
# Writes bench/results/startup-core.{csv,md,log}. Runs from any directory.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="bench/startup.sh${*:+ $*}"

# Everything this script prints (stdout and stderr) also goes to the log.
exec > >(tee "$results/startup-core.log") 2>&1
echo "+ $invoked   (cwd $(pwd))"
# shellcheck source=bench/common.sh
source "$bench_dir/common.sh"

status=0
"$driver_py" "$bench_dir/startup.py" --repo "$repo" --invoked "$invoked" "$@" || status=$?
# Close our end of the log pipe and let tee drain before exiting.
exec >&- 2>&-
wait
exit $status
