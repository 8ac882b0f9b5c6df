#!/usr/bin/env bash
# Stop the cluster that tests/cluster/up.sh started in STATE_DIR: every daemon
# by the pid in its pid file (never by name: other clusters or agents may run
# the same programs), then the shared bind mount. Idempotent.
#
# Usage: tests/cluster/down.sh [STATE_DIR]    (default <repo>/target/cluster)
# Exit status 1 if a process of this cluster is still alive at the end.
set -uo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${1:-$repo/target/cluster}
[[ -d $state ]] || { echo "cluster-down: nothing at $state" >&2; exit 0; }
state=$(cd "$state" && pwd)
log() { echo "cluster-down: $*" >&2; }
if [[ ${FMCACHE_CLUSTER_LOCKED:-} != "$state" ]]; then
  exec 9>"$state/.lock"
  flock 9
fi

# The pid in a pid file is trusted only while that process still runs the
# program the file is named after (pids are reused).
pid_of() { # file comm
  local f=$1 comm=$2 pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
  echo "$pid"
}

# Descendants of a pid (slurmstepd and job tasks hang off slurmd; slurmstepd
# double-forks away, see below), via /proc so no name matching is involved.
children() {
  local p
  for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$p"
    children "$p"
  done
}

# Every process whose mount namespace is one of our nodes' namespaces: this is
# how the slurmstepds (reparented to init) are found without matching names.
in_node_ns() {
  (($#)) || return 0
  # One find for all of /proc (a readlink per process would fork thousands).
  find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%h %l\n' 2>/dev/null |
    awk -v list="$*" 'BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
      ($2 in want) { split($1, p, "/"); print p[3] }' |
    while read -r p; do
      # Namespace ids are reused once freed: a process counts as ours only if
      # its mount table also has this cluster's per-node tmpfs on TmpFS.
      grep -qF " $state/tmp " "/proc/$p/mountinfo" 2>/dev/null && echo "$p"
    done
}

stop() { # pid... : SIGTERM, wait up to 5 s, then SIGKILL
  local pids=("$@") p left i
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 50); do
    left=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "SIGKILL ${left[*]} (ignored SIGTERM)"
  kill -KILL "${left[@]}" 2>/dev/null
  sleep 0.2
}

# 1. Nodes: remember each slurmd's mount namespace before it goes away, so
#    anything it left behind in that namespace can be found afterwards.
node_ns=()
node_pids=()
for f in "$state"/run/slurmd.*.pid; do
  [[ -e $f ]] || continue
  if pid=$(pid_of "$f" slurmd); then
    ns=$(readlink "/proc/$pid/ns/mnt")
    # Only a namespace other than ours is a node's own (never sweep the host's).
    [[ $ns != "$(readlink /proc/self/ns/mnt)" ]] && node_ns+=("$ns")
    node_pids+=("$pid")
  fi
done
# Also namespaces recorded by up.sh, in case a slurmd already died.
[[ -s $state/run/node-ns ]] && while read -r ns; do node_ns+=("$ns"); done <"$state/run/node-ns"
mapfile -t node_ns < <(printf '%s\n' "${node_ns[@]}" | sort -u | grep -v '^$' | grep -vxF "$(readlink /proc/self/ns/mnt)")

# Jobs first, while slurmctld still runs: cancelling lets Slurm end the steps
# cleanly (KillWait=5); whatever is left is killed below anyway.
if pid_of "$state/run/slurmctld.pid" slurmctld >/dev/null && [[ -f $state/etc/slurm.conf ]]; then
  export SLURM_CONF=$state/etc/slurm.conf
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null)
  if [[ -n $jobs ]]; then
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null
    for _ in $(seq 70); do [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.1; done
  fi
fi
# Clients of this cluster (srun/salloc/sbcast started with our SLURM_CONF)
# would otherwise wait forever for a controller that is gone.
clients=()
for p in /proc/[0-9]*; do
  c=
  { read -r c <"$p/comm"; } 2>/dev/null
  case $c in srun | salloc | sbcast | sattach) ;; *) continue ;; esac
  { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$state/etc/slurm.conf" && clients+=("${p#/proc/}")
done
# slurmd, slurmstepd and tasks that outlived their job (e.g. a hung PMIx
# step) in one batch, so a stubborn step costs one grace period, not two.
mapfile -t strays < <(in_node_ns "${node_ns[@]}" | grep -vxF -f <(printf '%s\n' "${node_pids[@]}" 0))
if ((${#strays[@]})); then
  log "stopping ${#strays[@]} leftover process(es) in node namespaces: $(for p in "${strays[@]}"; do printf '%s(%s) ' "$p" "$(cat /proc/$p/comm 2>/dev/null)"; done)"
fi
((${#clients[@]})) && log "stopping ${#clients[@]} client(s) of this cluster: ${clients[*]}"
stop "${node_pids[@]}" "${strays[@]}" "${clients[@]}"

# 2. Controller (with its slurmscriptd child) and munged together: each takes
#    about 2 s to exit, so one batch instead of one after the other.
last=()
if pid=$(pid_of "$state/run/slurmctld.pid" slurmctld); then mapfile -t -O 0 last < <(echo "$pid"; children "$pid"); fi
if pid=$(pid_of "$state/run/munged.pid" munged); then last+=("$pid"); fi
stop "${last[@]}"

# 3. Mounts: the shared bind mount (the nodes' own tmpfs went away with their
#    namespaces). Lazy unmount also detaches anything mounted under it later.
if [[ -s $state/run/mounts ]]; then
  while read -r m; do
    while findmnt -rn -M "$m" >/dev/null; do umount "$m" 2>/dev/null || umount -l "$m" || break; done
  done <"$state/run/mounts"
  rm -f "$state/run/mounts"
fi

# 4. Report anything still alive.
bad=0
left=$(in_node_ns "${node_ns[@]}")
if [[ -n $left ]]; then
  log "STILL ALIVE in node namespaces: $left"
  bad=1
fi
for f in "$state"/run/*.pid; do
  [[ -e $f ]] || continue
  comm=$(basename "$f" .pid); comm=${comm%%.*}
  if pid=$(pid_of "$f" "$comm"); then log "STILL ALIVE: $comm pid $pid"; bad=1; fi
done
if findmnt -rn -M "$state/shared" >/dev/null; then log "STILL MOUNTED: $state/shared"; bad=1; fi
((bad)) || { rm -f "$state"/run/*.pid "$state/run/node-ns" "$state/env.sh"; log "down ($state): no daemons, no slurmstepd, no mounts left"; }
exit $bad
