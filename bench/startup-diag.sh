#!/usr/bin/env bash
# Where the start-up time goes with read-cache: syscall counts (strace -c -f),
# fixed per-process cost of the library, CPU time over many interleaved
# rounds, and python -X importtime. See bench/README.md.
#
#   bench/startup-diag.sh [--rounds N] [--fixed N] [--seed S] [--keep]
#
# Writes bench/results/startup-diag.{md,log}. Runs from any directory.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="bench/startup-diag.sh${*:+ $*}"

exec > >(tee "$results/startup-diag.log") 2>&1
echo "+ $invoked   (cwd $(pwd))"
# shellcheck source=bench/common.sh
source "$bench_dir/common.sh"
command -v strace >/dev/null || { echo "startup-diag.sh: strace missing (tests/env/setup.sh installs it)"; exit 1; }

status=0
"$driver_py" "$bench_dir/startup_diag.py" --repo "$repo" --invoked "$invoked" "$@" || status=$?
exec >&- 2>&-
wait
exit $status
