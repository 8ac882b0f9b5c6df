#!/usr/bin/env bash
# Bring up a real 4-node Slurm 22.05 cluster (with Open MPI + PMIx and MPICH)
# on this one host: one slurmctld, one munged, and one slurmd per simulated
# node, each node in its own mount + UTS namespace with its own hostname and
# its own tmpfs on /dev/shm and on TmpFS= (node-local storage).
#
# Usage: tests/cluster/up.sh [STATE_DIR]      (default <repo>/target/cluster)
# Then:  source STATE_DIR/env.sh && srun -n 24 hostname
#
# Idempotent: if the cluster in STATE_DIR is already up and healthy this only
# checks it; a half-up cluster is torn down (down.sh) and started afresh.
set -euo pipefail

NODES=4
# Enough slots for `srun -n 96` exactly as users write it (4 x 24), on 2
# real cores: the nodes declare them (SlurmdParameters=config_overrides).
CPUS_PER_NODE=24
DEB_PACKAGES="slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev libpmix-dev mpich libmpich-dev"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${1:-$repo/target/cluster}
mkdir -p "$state"
state=$(cd "$state" && pwd)
conf=$state/etc/slurm.conf
# Test processes may call up.sh concurrently: one at a time per STATE_DIR
# (down.sh, called from here, knows the lock is already held).
exec 9>"$state/.lock"
flock 9
export FMCACHE_CLUSTER_LOCKED=$state
host=$(hostname)

log() { echo "cluster-up: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
t_all=$(now)

# ---- packages -------------------------------------------------------------
# `dpkg -s` alone also succeeds for removed-but-configured packages; match the
# status text (a `| grep -q` could SIGPIPE dpkg and fail under pipefail).
missing=()
for p in $DEB_PACKAGES; do
  [[ $(dpkg -s "$p" 2>/dev/null) == *$'\nStatus: install ok installed\n'* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  t=$(now)
  log "installing ${missing[*]}"
  apt-get update -qq
  # policy-rc.d keeps the packages' postinst from starting system daemons
  # (munged, slurmd) that would fight ours for sockets and pid files.
  prc=/usr/sbin/policy-rc.d
  made_prc=
  if [[ ! -e $prc ]]; then printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod +x "$prc" && made_prc=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -n $made_prc ]] && rm -f "$prc"
  log "apt-get install took $(since "$t") s"
fi

# ---- python venv + mpi4py ---------------------------------------------------
envsh=$repo/target/env/env.sh
[[ -f $envsh ]] || bash "$repo/tests/env/setup.sh" >/dev/null
# shellcheck disable=SC1090
source "$envsh"
if ! "$FMCACHE_VENV_PYTHON" -c 'import mpi4py' 2>/dev/null; then
  t=$(now)
  # Prebuilt wheel only: it loads libmpi at run time, so one install serves
  # both Open MPI and MPICH (chosen with MPI4PY_LIBMPI).
  "$FMCACHE_VENV_PYTHON" -m pip install --disable-pip-version-check -q --only-binary=:all: mpi4py
  log "pip install mpi4py took $(since "$t") s"
fi

# ---- already up? --------------------------------------------------------------
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
all_alive() {
  alive "$state/run/munged.pid" || [[ $(cat "$state/etc/auth" 2>/dev/null) == none ]] || return 1
  alive "$state/run/slurmctld.pid" || return 1
  local i
  for i in $(seq 1 $NODES); do alive "$state/run/slurmd.n$i.pid" || return 1; done
}
idle_count() { SLURM_CONF=$conf timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l; }
# Up and healthy: every node answers, idle or running someone's job (a
# second caller must not tear down the cluster under a running job).
ready_count() { SLURM_CONF=$conf timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(idle|mix|alloc)$/' | sort -u | wc -l; }
if [[ -f $state/env.sh ]] && all_alive && [[ $(ready_count) == "$NODES" ]]; then
  log "already up ($state)"
  exit 0
fi
# Anything half-started (or a stale state dir) is stopped by its pid files.
bash "$script_dir/down.sh" "$state" >/dev/null 2>&1 || true

# ---- fresh state ------------------------------------------------------------------
t_start=$(now)
rm -rf "$state/etc" "$state/run" "$state/log" "$state/spool" "$state/ctld" "$state/munge" "$state/env.sh"
mkdir -p "$state"/{etc,run,log,spool,ctld,munge,tmp,shared}
tmpfs_dir=$state/tmp
shared=$state/shared

# Ports: another process may hold Slurm's defaults (6817/6818), so pick free
# ones now: one for slurmctld, NODES consecutive ones for the slurmds.
read -r ctld_port node_port <<<"$("$FMCACHE_PYTHON" - "$NODES" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
def free(p):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
rng = random.SystemRandom()
while True:
    base = rng.randrange(20000, 32000)  # below the ephemeral range
    if all(free(p) for p in range(base, base + n + 1)):
        print(base, base + 1)
        break
EOF
)"
last_port=$((node_port + NODES - 1))

# A start-up that fails part way leaves nothing running behind it.
up_ok=
trap '[[ -n $up_ok ]] || { log "start-up failed: stopping what was started"; FMCACHE_CLUSTER_LOCKED=$state bash "$script_dir/down.sh" "$state" >&2 || true; }' EXIT

# ---- authentication: our own munged (own key, socket, pid) ------------------
auth=none
if [[ -x /usr/sbin/munged ]]; then
  dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$state/munge" 2>/dev/null || true
  chmod 0711 "$state/munge" # clients (root here) must reach the socket
  chmod 0400 "$state/munge/munge.key"
  # munged checks that every directory above its socket/key is not writable
  # by others; target/ may not satisfy that, so --force downgrades to warnings.
  if runuser -u munge -- /usr/sbin/munged --force \
    --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" \
    --seed-file="$state/munge/munged.seed" >>"$state/log/munged.out" 2>&1 9>&-; then
    for _ in $(seq 50); do [[ -S $state/munge/munge.socket ]] && break; sleep 0.1; done
    if [[ -S $state/munge/munge.socket ]] &&
      munge -S "$state/munge/munge.socket" -n 2>/dev/null | unmunge -S "$state/munge/munge.socket" >/dev/null 2>&1; then
      auth=munge
      # munged writes its pid file in its own (munge-owned) dir; keep a copy
      # with the others so down.sh finds every daemon in one place.
      cp "$state/munge/munged.pid" "$state/run/munged.pid"
    fi
  fi
  if [[ $auth != munge ]]; then
    log "munge does not work here, falling back to auth/none (see $state/log/munged.out, $state/munge/munged.log)"
    alive "$state/munge/munged.pid" && kill "$(cat "$state/munge/munged.pid")" 2>/dev/null || true
  fi
fi
echo "$auth" >"$state/etc/auth"
if [[ $auth == munge ]]; then
  auth_lines="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket"
else
  auth_lines="AuthType=auth/none
CredType=cred/none"
fi

# ---- configuration ---------------------------------------------------------------
cat >"$conf" <<EOF
# Written by tests/cluster/up.sh; regenerated on every (re)start.
ClusterName=fmcache
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
$auth_lines
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdSpoolDir=$state/spool/%n
SlurmdPidFile=$state/run/slurmd.%n.pid
SlurmdLogFile=$state/log/slurmd.%n.log
# The nodes declare more CPUs than the host has; without config_overrides
# slurmd would report the 2 real cores and srun -n 24 would wait forever.
SlurmdParameters=config_overrides
# No systemd and no writable cgroup tree here: track by process tree, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=2
KillWait=5
# Each node namespace mounts its own tmpfs here: node-local storage.
TmpFS=$tmpfs_dir
SlurmctldDebug=info
SlurmdDebug=info
NodeName=n[1-$NODES] NodeHostname=$host NodeAddr=127.0.0.1 Port=$node_port-$last_port CPUs=$CPUS_PER_NODE State=UNKNOWN
PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
# slurmd reads cgroup.conf beside slurm.conf even with the cgroup plugins
# unused; keep it minimal so it never tries to mount a cgroup tree.
cat >"$state/etc/cgroup.conf" <<EOF
CgroupAutomount=no
EOF
export SLURM_CONF=$conf

# ---- shared directory: mounts made under it later reach every node ----------
# The nodes get private copies of the mount table when they start; a mount made
# afterwards (e.g. a FUSE file system) shows up inside them only through a
# shared mount that their copies are slaves of.
findmnt -rn -M "$shared" >/dev/null || mount --bind "$shared" "$shared"
mount --make-shared "$shared"
echo "$shared" >"$state/run/mounts"

# ---- daemons ------------------------------------------------------------------
setsid slurmctld -D -c -f "$conf" </dev/null >>"$state/log/slurmctld.out" 2>&1 9>&- &
bg=("$!:slurmctld")

for i in $(seq 1 $NODES); do
  n=n$i
  mkdir -p "$state/spool/$n"
  # --propagation slave: the node's copy of $shared receives later host mounts,
  # while its own mounts (/dev/shm, TmpFS) never leak back to the host.
  setsid unshare --mount --uts --propagation slave -- /bin/sh -c '
      set -e
      hostname "$1"
      mount -t tmpfs -o mode=1777,size=2g "tmpfs-$1-shm" /dev/shm
      mount -t tmpfs -o mode=1777,size=2g "tmpfs-$1-tmp" "$2"
      exec slurmd -D -N "$1" -f "$3"' sh "$n" "$tmpfs_dir" "$conf" \
    </dev/null >>"$state/log/slurmd.$n.out" 2>&1 9>&- &
  bg+=("$!:slurmd $n")
done

# ---- wait for all nodes idle --------------------------------------------------
deadline=$((SECONDS + 60))
while [[ $(idle_count) != "$NODES" ]]; do
  # setsid does not fork here (no job control: not a group leader) and
  # unshare and sh exec, so each $! is the daemon itself: fail fast if one died.
  for b in "${bg[@]}"; do
    kill -0 "${b%%:*}" 2>/dev/null && continue
    log "${b#*:} exited during start-up; last log lines:"
    tail -n 5 "$state"/log/*.out "$state"/log/*.log >&2 2>/dev/null || true
    exit 1
  done
  if ((SECONDS > deadline)); then
    log "nodes not idle after 60 s:"
    SLURM_CONF=$conf sinfo -N >&2 || true
    tail -n 5 "$state"/log/*.log >&2 || true
    exit 1
  fi
  sleep 0.2
done
all_alive || { log "a daemon died during start-up; see $state/log"; exit 1; }
# down.sh finds leftover slurmstepds by these namespaces, even after slurmd died.
for i in $(seq 1 $NODES); do readlink "/proc/$(cat "$state/run/slurmd.n$i.pid")/ns/mnt"; done >"$state/run/node-ns"

# ---- env.sh for callers ------------------------------------------------------------
mpich_lib=$(ldconfig -p | awk '/libmpich\.so\.[0-9]+ .*x86-64/ { print $1; exit }')
mpich_lib=${mpich_lib:-libmpich.so.12}
# mpi4py's prebuilt MPICH module is linked against the MPICH ABI name
# libmpi.so.12, which Debian does not ship (only libmpich.so.12): give it that
# name in a directory of our own, for LD_LIBRARY_PATH.
mpich_libdir=$state/lib/mpich
mkdir -p "$mpich_libdir"
ln -sfn "$(readlink -f "$(ldconfig -p | awk -v l="$mpich_lib" '$1 == l && /x86-64/ { print $NF; exit }')")" "$mpich_libdir/libmpi.so.12"
{
  printf '# Written by tests/cluster/up.sh: source it, then run srun/salloc/sbcast.\n'
  printf 'export SLURM_CONF=%q\n' "$conf"
  printf 'export FMCACHE_CLUSTER=%q\n' "$state"
  printf 'export FMCACHE_CLUSTER_NODES=%q\n' "$NODES"
  printf 'export FMCACHE_CLUSTER_CPUS=%q\n' "$((NODES * CPUS_PER_NODE))"
  printf 'export FMCACHE_CLUSTER_NODELIST=%q\n' "n[1-$NODES]"
  printf '# Per-node tmpfs (node-local storage; also /dev/shm on each node).\n'
  printf 'export FMCACHE_CLUSTER_TMPFS=%q\n' "$tmpfs_dir"
  printf '# Mounts made under this directory later are visible on every node.\n'
  printf 'export FMCACHE_CLUSTER_SHARED=%q\n' "$shared"
  printf 'export FMCACHE_SRUN=%q\n' "$(command -v srun)"
  printf 'export FMCACHE_SALLOC=%q\n' "$(command -v salloc)"
  printf 'export FMCACHE_SBCAST=%q\n' "$(command -v sbcast)"
  printf '# /usr/bin/mpirun is whichever MPI the alternatives chose: be explicit.\n'
  printf 'export FMCACHE_MPIRUN_OPENMPI=%q\n' "$(command -v mpirun.openmpi)"
  printf 'export FMCACHE_MPIEXEC_MPICH=%q\n' "$(command -v mpiexec.mpich || true)"
  printf '# mpi4py (prebuilt wheel) loads this with MPI4PY_LIBMPI=... for MPICH.\n'
  printf 'export FMCACHE_LIBMPI_MPICH=%q\n' "$mpich_lib"
  printf '# ... and needs this on LD_LIBRARY_PATH (holds libmpi.so.12 -> libmpich.so.12).\n'
  printf 'export FMCACHE_MPICH_LIBDIR=%q\n' "$mpich_libdir"
  printf 'export FMCACHE_LIBMPI_OPENMPI=%q\n' "libmpi.so.40"
} >"$state/env.sh.tmp"
mv "$state/env.sh.tmp" "$state/env.sh"

up_ok=1
log "up: $NODES nodes x $CPUS_PER_NODE CPUs, auth=$auth, slurmctld :$ctld_port, slurmd :$node_port-$last_port; daemons started in $(since "$t_start") s (total $(since "$t_all") s)"
log "use: source $state/env.sh"
