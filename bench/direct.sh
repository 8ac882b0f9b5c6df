#!/usr/bin/env bash
# The cost of a direct start's re-exec (LD_PRELOAD alone): native, audited
# from the start, direct; interleaved rounds, medians.
#
#   bench/direct.sh [--rounds N]
#
# Writes bench/results/direct.md (table) and direct.log (with raw times).
set -euo pipefail
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="bench/direct.sh${*:+ $*}"
# shellcheck source=bench/common.sh
source "$bench_dir/common.sh" >&2
"$driver_py" "$bench_dir/direct.py" --repo "$repo" --invoked "$invoked" "$@" \
  > "$results/direct.md" 2> >(tee "$results/direct.log" >&2)
cat "$results/direct.md"
