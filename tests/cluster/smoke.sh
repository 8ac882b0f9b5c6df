#!/usr/bin/env bash
# Smoke test of the cluster started by tests/cluster/up.sh: Slurm placement,
# per-node /dev/shm, mpi4py under srun with Open MPI (PMIx) and MPICH (PMI2),
# mpirun inside salloc, sbcast to node-local storage, and the environment
# (DLFM_OP, LD_PRELOAD) reaching every task. Prints each check with its wall
# time; exits non-zero if any check fails.
#
# Usage: tests/cluster/smoke.sh [STATE_DIR]   (default <repo>/target/cluster)
set -uo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${1:-$repo/target/cluster}
[[ -f $state/env.sh ]] || { echo "smoke: no cluster at $state (run tests/cluster/up.sh first)" >&2; exit 2; }
# shellcheck disable=SC1091
source "$state/env.sh"
# shellcheck disable=SC1091
source "$repo/target/env/env.sh"
py=$FMCACHE_VENV_PYTHON
N=$FMCACHE_CLUSTER_NODES
NP=$FMCACHE_CLUSTER_CPUS
# Every step gets a deadline: a broken PMI set-up makes srun hang, not fail.
T="timeout -k 5 120"

work=$state/smoke
rm -rf "$work"
mkdir -p "$work"
fails=0
now() { date +%s.%N; }

# check NAME CMD...: run CMD (a shell function), print its output and verdict.
check() {
  local name=$1 t0 rc out dt
  shift
  t0=$(now)
  out=$("$@" 2>&1)
  rc=$?
  dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  if ((rc == 0)); then echo "PASS  ${dt}s  $name"; else echo "FAIL  ${dt}s  $name (exit $rc)"; fails=$((fails + 1)); fi
  [[ -n $out ]] && sed 's/^/      | /' <<<"$out"
}

# 1. Placement: 6 tasks on each of the 4 nodes, each seeing its own hostname.
placement() {
  local got want
  got=$($T srun -N"$N" -n"$NP" hostname | sort | uniq -c) || return 1
  echo "$got"
  want=$(for i in $(seq 1 "$N"); do printf '%7d n%d\n' $((NP / N)) "$i"; done)
  [[ $got == "$want" ]] || { echo "expected:"; echo "$want"; return 1; }
  # The UTS hostname must be the Slurm node name the task was placed on.
  got=$($T srun -N"$N" -n"$NP" sh -c '[ "$(hostname)" = "$SLURMD_NODENAME" ] && echo same || echo "differs: $(hostname) vs $SLURMD_NODENAME"' | sort | uniq -c)
  [[ $got == "$(printf '%7d same' "$NP")" ]] || { echo "$got"; return 1; }
}

# 2. Node-local /dev/shm: a file written on n1 is seen on n1 only.
devshm() {
  local f=/dev/shm/fmcache-smoke.$$ r
  $T srun -w n1 -N1 -n1 sh -c "echo from-n1 >$f" || return 1
  r=$($T srun -w n1 -N1 -n1 sh -c "cat $f")
  echo "n1 reads back: $r"
  [[ $r == from-n1 ]] || return 1
  r=$($T srun -w n2 -N1 -n1 sh -c "test -e $f && echo visible || echo absent")
  echo "n2: $r"
  [[ $r == absent ]] || return 1
  [[ -e $f ]] && { echo "host /dev/shm sees it too"; return 1; }
  echo "host: absent"
  $T srun -w n1 -N1 -n1 rm -f "$f"
}

cat >"$work/allreduce.py" <<'EOF'
# Sum of ranks over all tasks, plus which MPI library mpi4py actually loaded.
import sys
from mpi4py import MPI
c = MPI.COMM_WORLD
total = c.allreduce(c.Get_rank())
hosts = c.gather(MPI.Get_processor_name())
if c.Get_rank() == 0:
    n = c.Get_size()
    lib = MPI.Get_library_version().strip("\x00 \n").splitlines()[0]
    ok = total == n * (n - 1) // 2 and lib.startswith(sys.argv[1])
    print(f"size={n} allreduce(rank)={total} nodes={sorted(set(hosts))} lib={lib!r}")
    sys.exit(0 if ok else 1)
EOF

# 3. mpi4py + Open MPI, launched by srun through PMIx.
ompi_srun() {
  MPI4PY_LIBMPI=$FMCACHE_LIBMPI_OPENMPI $T srun -N"$N" -n"$NP" --mpi=pmix "$py" "$work/allreduce.py" "Open MPI"
}
# 4. mpi4py + MPICH, launched by srun through PMI2.
mpich_srun() {
  MPI4PY_LIBMPI=$FMCACHE_LIBMPI_MPICH LD_LIBRARY_PATH=$FMCACHE_MPICH_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} $T srun -N"$N" -n"$NP" --mpi=pmi2 "$py" "$work/allreduce.py" "MPICH"
}
# 5. Open MPI's own launcher inside an allocation (it starts orted via srun).
ompi_mpirun() {
  MPI4PY_LIBMPI=$FMCACHE_LIBMPI_OPENMPI $T salloc -N"$N" -n"$NP" \
    "$FMCACHE_MPIRUN_OPENMPI" -n "$NP" --oversubscribe --allow-run-as-root "$py" "$work/allreduce.py" "Open MPI"
}
# 5b. MPICH's own launcher (hydra, which starts its proxies via srun).
mpich_mpiexec() {
  MPI4PY_LIBMPI=$FMCACHE_LIBMPI_MPICH LD_LIBRARY_PATH=$FMCACHE_MPICH_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} $T salloc -N"$N" -n"$NP" \
    "$FMCACHE_MPIEXEC_MPICH" -n "$NP" "$py" "$work/allreduce.py" "MPICH"
}

# 6. sbcast to node-local storage (the per-node tmpfs and /dev/shm).
sbcast_check() {
  local src=$work/payload dst r
  head -c 1048576 /dev/urandom >"$src"
  for dst in "$FMCACHE_CLUSTER_TMPFS/fmcache-smoke.$$" "/dev/shm/fmcache-smoke.$$"; do
    r=$($T salloc -N"$N" sh -c "sbcast -f '$src' '$dst' && srun -N$N --ntasks-per-node=1 sh -c 'cmp -s $src $dst && echo \$(hostname) ok || echo \$(hostname) MISSING; rm -f $dst'" 2>&1 | grep -v '^salloc:' | sort)
    echo "$dst: $(echo $r)"
    [[ $r == "$(for i in $(seq 1 "$N"); do echo "n$i ok"; done)" ]] || return 1
    # Node-local means the host's view of the same path stays empty.
    [[ -e $dst ]] && { echo "host sees $dst: not node-local"; return 1; }
  done
  return 0
}

# 7. Environment set before srun reaches every task, and LD_PRELOAD is really
#    loaded there (each task's own /proc/self/maps names the library).
env_check() {
  local so=$work/libsmoke-preload.so got
  echo 'int fmcache_smoke_marker = 1;' >"$work/preload.c"
  gcc -shared -fPIC -o "$so" "$work/preload.c" || return 1
  got=$(DLFM_OP=read-cache LD_PRELOAD=$so $T srun -N"$N" -n"$NP" sh -c \
    'if [ "$DLFM_OP" = read-cache ] && [ "$LD_PRELOAD" = "$1" ] && grep -qF "$1" /proc/self/maps; then echo "$(hostname) ok"; else echo "$(hostname) BAD DLFM_OP=$DLFM_OP LD_PRELOAD=$LD_PRELOAD"; fi' sh "$so" | sort | uniq -c)
  echo "$got"
  [[ $got == "$(for i in $(seq 1 "$N"); do printf '%7d n%d ok\n' $((NP / N)) "$i"; done)" ]]
}

# 8. A mount made on the host after the nodes started, under the shared
#    directory, is visible on every node (how a FUSE file system reaches them).
shared_mount() {
  local m=$FMCACHE_CLUSTER_SHARED/smoke-mnt.$$ r
  mkdir -p "$m"
  mount -t tmpfs smoke-shared "$m" || return 1
  echo hello >"$m/file"
  r=$($T srun -N"$N" --ntasks-per-node=1 sh -c "echo \$(hostname) \$(cat $m/file 2>/dev/null || echo MISSING)" | sort)
  echo "mounted: $(echo $r)"
  umount "$m"
  [[ $r == "$(for i in $(seq 1 "$N"); do echo "n$i hello"; done)" ]] || { rmdir "$m"; return 1; }
  # ... and the unmount reaches them too.
  r=$($T srun -N"$N" --ntasks-per-node=1 sh -c "test -e $m/file && echo \$(hostname) STILL-THERE || echo \$(hostname) gone" | sort)
  echo "unmounted: $(echo $r)"
  rmdir "$m"
  [[ $r == "$(for i in $(seq 1 "$N"); do echo "n$i gone"; done)" ]]
}

echo "smoke: cluster $FMCACHE_CLUSTER ($N nodes, $NP CPUs), SLURM_CONF=$SLURM_CONF"
check "srun -N$N -n$NP hostname | sort | uniq -c" placement
check "per-node /dev/shm (write on n1, absent on n2 and host)" devshm
check "srun -n$NP --mpi=pmix mpi4py allreduce (Open MPI)" ompi_srun
check "srun -n$NP --mpi=pmi2 mpi4py allreduce (MPICH)" mpich_srun
check "salloc -N$N mpirun -n $NP --oversubscribe mpi4py allreduce (Open MPI)" ompi_mpirun
check "salloc -N$N mpiexec.mpich -n $NP mpi4py allreduce (MPICH)" mpich_mpiexec
check "salloc -N$N sbcast to TmpFS and /dev/shm, arrives on every node" sbcast_check
check "DLFM_OP + LD_PRELOAD set before srun reach all $NP tasks" env_check
check "mount made later under \$FMCACHE_CLUSTER_SHARED is seen by every node" shared_mount

# No job may linger (a hung step would hold CPUs for the next user).
left=$(squeue -h -o '%i %j %T' 2>&1)
if [[ -n $left ]]; then echo "FAIL  jobs left in the queue: $left"; fails=$((fails + 1)); fi

if ((fails)); then echo "smoke: $fails check(s) FAILED"; exit 1; fi
echo "smoke: all checks passed"
