#!/usr/bin/env bash
# W2 (import numpy.fft, scipy.interpolate) with the interpreter's prefix and
# the venv's site-packages on slowfs (one lock, fixed latency, TTL 0):
# native against fmcache read-cache (staging included), N processes at once.
# A first piece of issue 6's lab (bench/run will supersede it).
#
#   bash bench/slowfs-w2.sh [LATENCY_US] [N...]     default 1000 and 1 4
#
# Writes bench/results/slowfs-w2.md and bench/results/slowfs-w2.log.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
latency=${1:-1000}; shift || true
procs=("${@:-1 4}"); procs=(${procs[*]})
bash tests/env/setup.sh >/dev/null
# shellcheck source=/dev/null
source target/env/env.sh
cargo build --release -q -p fmcache-preload -p fmcache-tools
fm=$repo/target/release/fmcache lib=$repo/target/release/libfmcache.so
prefix=$("$FMCACHE_VENV_PYTHON" -c 'import sys; print(sys.base_prefix)')
site=$("$FMCACHE_VENV_PYTHON" -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
work=/var/tmp/fmcache-slowfs-w2
src=$work/src mnt=$work/mnt counts=$work/counts.json
cleanup() {
  [[ -n ${sfpid:-} ]] && kill "$sfpid" 2>/dev/null && wait "$sfpid" 2>/dev/null || true
  umount -l "$mnt" 2>/dev/null || true
  umount "$src/py" "$src/site" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
mkdir -p "$src/py" "$src/site" "$src/cache" "$mnt" "$work/cache"
mount --bind "$prefix" "$src/py"; mount --bind "$site" "$src/site"
"$fm" slowfs "$src" "$mnt" --latency-us "$latency" --counts "$counts" 2>"$work/slowfs.err" & sfpid=$!
for _ in $(seq 100); do grep -q " $mnt fuse" /proc/mounts && [[ -f $counts ]] && break; sleep 0.1; done
py=$mnt/py/bin/python3.11
code='import numpy.fft; import scipy.interpolate'
reqs() { sleep 0.2; "$FMCACHE_VENV_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata_requests"])' "$counts"; }
# N copies at once; prints wall seconds.
together() {
  local n=$1; shift
  local t0 t1; t0=$(date +%s.%N)
  for _ in $(seq "$n"); do env -u PYTHONDONTWRITEBYTECODE PYTHONPATH=$mnt/site "$@" "$py" -c "$code" & done
  wait; t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.3f", $2-$1}'
}
# The cache lives on the shared file system too: the pilot writes it into
# the source (slowfs is read-only), production reads it through slowfs.
stage=$work/cache/stage
rm -rf "$work/cache"/* "$src/cache"/*
export FMCACHE_STAGE_DIR=$stage
# Pilot once (not timed), with the auditor so ld.so's searches are recorded.
FMCACHE_FILE=$src/cache/w2.dat DLFM_OP=write-cache LD_PRELOAD=$lib LD_AUDIT=$lib \
  PYTHONPATH=$mnt/site "$py" -c "$code"
export FMCACHE_FILE=$mnt/cache/w2.dat
{
  echo "# W2 on slowfs: native against fmcache"
  echo
  echo "$(date -u +%F), $(nproc) cores, $(uname -r), latency ${latency} us; command: \`bash bench/slowfs-w2.sh $latency ${procs[*]}\`"
  echo
  echo "| N | mode | wall s | metadata requests | per process |"
  echo "|---:|---|---:|---:|---:|"
} > "$work/md"
for n in "${procs[@]}"; do
  r0=$(reqs); w=$(together "$n"); r1=$(reqs)
  echo "| $n | native | $w | $((r1 - r0)) | $(((r1 - r0) / n)) |" >> "$work/md"
  rm -rf "$stage"
  r0=$(reqs); w=$(together "$n" env DLFM_OP=read-cache LD_PRELOAD=$lib LD_AUDIT=$lib); r1=$(reqs)
  echo "| $n | fmcache (staging included) | $w | $((r1 - r0)) | $(((r1 - r0) / n)) |" >> "$work/md"
done
cat "$work/md"
mkdir -p bench/results
cp "$work/md" bench/results/slowfs-w2.md
cat "$work/slowfs.err" > bench/results/slowfs-w2.log; cat "$counts" >> bench/results/slowfs-w2.log
