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
  local ns p
  for ns in "$@"; do
    for p in /proc/[0-9]*; do
      [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns" ]] && echo "${p#/proc/}"
    done
  done
}

stop() { # pid... : SIGTERM, wait up to 10 s, then SIGKILL
  local pids=("$@") p left i
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 100); do
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

stop "${node_pids[@]}"
# slurmstepd and tasks that outlived slurmd (e.g. a hung PMIx step).
mapfile -t strays < <(in_node_ns "${node_ns[@]}")
if ((${#strays[@]})); then
  log "stopping ${#strays[@]} leftover process(es) in node namespaces: $(for p in "${strays[@]}"; do printf '%s(%s) ' "$p" "$(cat /proc/$p/comm 2>/dev/null)"; done)"
  stop "${strays[@]}"
fi

# 2. Controller, then munged.
if pid=$(pid_of "$state/run/slurmctld.pid" slurmctld); then stop "$pid" $(children "$pid"); fi
if pid=$(pid_of "$state/run/munged.pid" munged); then stop "$pid"; fi

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
