#!/usr/bin/env bash
# Requests for the cache file per process tree outside a job (strace -f):
# how many times each tree opens/stats the cache and reads its header.
# Before issue 14 item 4 every process did so twice (the preload and the
# auditor copy); now the first process of a tree once, its children never.
#
#   FMCACHE_LIB=.../libfmcache.so bash bench/attach.sh
#
#   SLOWFS=$CARGO_TARGET_DIR/release/fmcache-slowfs bash bench/attach.sh
#
# With SLOWFS the cache file lives on an fmcache-slowfs mount (TTL 0, 100 us
# per request) and each line also gives the simulator's count of requests
# during the tree (every path component of every call: the terms of issue
# 14). Prints one line per tree; bench/results/attach.md holds a run before
# and after. Needs strace and python3 (and FUSE for SLOWFS).
set -euo pipefail
lib=${FMCACHE_LIB:?set FMCACHE_LIB to the libfmcache.so to measure}
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
d=$(mktemp -d /tmp/fmc-attach.XXXXXX)
trap 'rm -rf "$d"' EXIT
echo hello > "$d/data.txt"
unset SLURM_JOB_ID PMIX_NAMESPACE PMI_JOBID PBS_JOBID LSB_JOBID FLUX_JOB_ID \
  LD_PRELOAD LD_AUDIT DLFM_OP FMCACHE_ATTACHED FMCACHE_WARNED FMCACHE_STATS FMCACHE_VERIFY
export FMCACHE_FILE=$d/c.fmc FMCACHE_STAGE_DIR=$d/stage
requests() { [ -n "$slowfs_pid" ] && sleep 0.12 && python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata_requests"])' "$d/counts.json" || echo 0; }
LD_PRELOAD=$lib DLFM_OP=write-cache /bin/sh -c \
  "/bin/cat $d/data.txt >/dev/null; $py -c 'import subprocess; subprocess.run([\"/bin/cat\", \"$d/data.txt\"])' >/dev/null"
slowfs_pid=
if [ -n "${SLOWFS:-}" ]; then   # the recorded cache moved onto the mount
  mkdir -p "$d/shared" "$d/mnt"
  cp -p "$FMCACHE_FILE" "$d/shared/c.fmc"
  "$SLOWFS" --latency-us 100 --counts "$d/counts.json" "$d/shared" "$d/mnt" 2>"$d/slowfs.log" &
  slowfs_pid=$!
  trap 'kill "$slowfs_pid" 2>/dev/null; wait "$slowfs_pid" 2>/dev/null; rm -rf "$d"' EXIT
  for _ in $(seq 100); do mountpoint -q "$d/mnt" && break; sleep 0.05; done
  mountpoint -q "$d/mnt" || { cat "$d/slowfs.log"; exit 1; }
  export FMCACHE_FILE=$d/mnt/c.fmc
fi
LD_PRELOAD=$lib DLFM_OP=read-cache /bin/true   # staged once
count() { # label, command...
  local label=$1; shift
  local r0; r0=$(requests)
  strace -f -qq -y -e trace=%file,%desc,%memory,%process -o "$d/t" \
    env LD_PRELOAD="$lib" DLFM_OP=read-cache "$@" >/dev/null
  local on meta reads procs
  on=$(grep -F "$FMCACHE_FILE" "$d/t" | grep -v '\.rec' || true)
  meta=$(grep -cE '^[0-9]+ +(openat|open|stat|lstat|newfstatat|statx|fstat|access|faccessat|faccessat2)\(' <<<"$on" || true)
  reads=$(grep -cE '^[0-9]+ +(read|pread64|mmap)\(' <<<"$on" || true)
  procs=$(grep -E '^[0-9]+ +execve\(' "$d/t" | grep -v ' = -1 ' | awk '{print $1}' | sort -u | wc -l)
  local extra=
  [ -n "$slowfs_pid" ] && extra="  slowfs requests $(( $(requests) - r0 ))"
  printf '%-34s processes %2d  open+stat of the cache %3d  header reads/maps %3d%s\n' "$label" "$procs" "$meta" "$reads" "$extra"
}
count "cat (a root process)" /bin/cat "$d/data.txt"
count "python3 -c '' (a root process)" "$py" -c ''
count "sh -c 'cat | cat; cat'" /bin/sh -c "/bin/cat $d/data.txt | /bin/cat; /bin/cat $d/data.txt"
count "python subprocess.run([cat])" "$py" -c "import subprocess; subprocess.run(['/bin/cat', '$d/data.txt'])"
count "python os.posix_spawn(cat, env)" "$py" -c "import os; os.waitpid(os.posix_spawn('/bin/cat', ['cat', '$d/data.txt'], dict(os.environ)), 0)"
