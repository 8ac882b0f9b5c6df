#!/usr/bin/env bash
# Micro-benchmarks (bench/micro, package fmcache-bench, divan harness):
# attach and lookup at 1k/20k/200k entries, and the added cost of calls the
# cache passes through (the same binary with and without the preload).
#
#   bench/micro.sh [--rounds N]     # N alternating plain/preload pass-through runs (default 5)
#                  [--target DIR]   # use DIR/release's binaries as built (a before/after pair)
#                  [--name NAME]    # write NAME.md and NAME.log (default micro)
#
# Writes bench/results/micro.md and bench/results/micro.log. Runs from any
# directory.
set -euo pipefail

invoked="bench/micro.sh${*:+ $*}"
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
rounds=5 target="" name=micro
while (($#)); do
  case $1 in
    --rounds) rounds=$2 ;;
    --target) target=$2 ;;
    --name) name=$2 ;;
    *) echo "micro.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
mkdir -p "$results"
if [[ -z $target ]]; then
  (cd "$repo" && cargo build --release -p fmcache-preload -p fmcache-tools -p fmcache-bench) >&2
  target=${CARGO_TARGET_DIR:-$repo/target}
fi
bin=$target/release/fmcache-micro
lib=$target/release/libfmcache.so

scratch=$bench_dir/.work/micro.$$
outside=/tmp/fmcache-micro.$$
stage=/dev/shm/fmcache-micro.$$
trap 'rm -rf "$scratch" "$outside" "$stage"' EXIT
mkdir -p "$scratch/tree/inside" "$outside" "$stage"
chmod 700 "$stage"
for i in $(seq -w 0 63); do echo "$i" >"$scratch/tree/inside/f$i.py"; done
echo x >"$outside/f.py"
export FMCACHE_MICRO_DIR=$scratch/caches
export FMCACHE_MICRO_INSIDE=$scratch/tree/inside/f07.py FMCACHE_MICRO_OUTSIDE=$outside/f.py
export FMCACHE_FILE=$scratch/cache.dat FMCACHE_STAGE_DIR=$stage

# The pilot lists tree/inside only: its files are inside a recorded tree
# but not in the cache, so the cache passes calls on them through.
# FMCACHE_INCLUDE: the scratch tree sits under the repository (the user's
# area), which the scope leaves out unless named.
FMCACHE_INCLUDE=$scratch/tree FMCACHE_MICRO_PILOT=$scratch/tree/inside DLFM_OP=write-cache LD_PRELOAD=$lib "$bin" >&2
"$target/release/fmcache" inspect "$FMCACHE_FILE" >"$scratch/inspect.txt"

log=$results/$name.log
: >"$log"
run() { # label, then the command
  local label=$1
  shift
  echo "### $label: $*" >>"$log"
  # stderr after stdout: divan's table lines must stay whole.
  "$@" 2>"$scratch/stderr" | tee -a "$log"
  cat "$scratch/stderr" >>"$log"
}
run "format" "$bin" --bench attach lookup
for r in $(seq 1 "$rounds"); do
  run "plain round $r" "$bin" --bench passthrough
  run "preload round $r" env LD_PRELOAD="$lib" DLFM_OP=read-cache FMCACHE_STATS="$scratch/stats.$r" "$bin" --bench passthrough
done
# Every pass-through call must have been passed through (served 0).
echo "### fmcache stats of the preload rounds" >>"$log"
stats_files=()
for r in $(seq 1 "$rounds"); do stats_files+=("$scratch/stats.$r"); done
"$target/release/fmcache" stats "${stats_files[@]}" | tee -a "$log"
"${FMCACHE_PYTHON:-/usr/bin/python3}" "$bench_dir/micro.py" "$log" "$results/$name.md" \
  "$invoked" "$repo"
