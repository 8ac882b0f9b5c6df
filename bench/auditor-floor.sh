#!/bin/bash
# What an auditor's namespace costs a process, apart from what fmcache
# does in it: /bin/true started with no auditor, with an auditor that has no
# dependency, with one that needs libc (a second libc in its namespace),
# and with libfmcache.so (DLFM_OP unset: loaded, initialised, serving
# nothing). Interleaved rounds; writes bench/results/auditor-floor.md.
#   bash bench/auditor-floor.sh [--rounds N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
rounds=7
[ "${1:-}" = --rounds ] && rounds=$2
out=$here/results/auditor-floor.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$here/auditor-floor
gcc -O2 -Wall -o "$tmp/spawn" "$src/spawn.c"
gcc -O2 -Wall -shared -fPIC -nostdlib -o "$tmp/libnolibc.so" "$src/nolibc.c"
gcc -O2 -Wall -shared -fPIC -o "$tmp/libwithlibc.so" "$src/withlibc.c"
(cd "$repo" && cargo build -q --release -p fmcache-preload)
lib=${CARGO_TARGET_DIR:-$repo/target}/release/libfmcache.so
needed() { readelf -d "$1" | grep -c NEEDED || true; }
modes=(native nolibc withlibc fmcache-audit fmcache-both)
env_of() {
    case $1 in
        native) echo - ;;
        nolibc) echo "LD_AUDIT=$tmp/libnolibc.so" ;;
        withlibc) echo "LD_AUDIT=$tmp/libwithlibc.so" ;;
        fmcache-audit) echo "LD_AUDIT=$lib" ;;
        fmcache-both) echo "LD_PRELOAD=$lib LD_AUDIT=$lib" ;;
    esac
}
runs=400
: >"$tmp/raw"
for r in $(seq 1 "$rounds"); do
    for m in "${modes[@]}"; do
        echo "$r $m $(env -u DLFM_OP "$tmp/spawn" $runs "$(env_of "$m")" /bin/true)" >>"$tmp/raw"
    done
done
faults() {
    local e
    e=$(env_of "$1")
    [ "$e" = - ] && e=
    env -u DLFM_OP $e perf stat -x, -e page-faults -r 20 /bin/true 2>&1 >/dev/null | tail -1 | cut -d, -f1
}
have_perf=0
perf stat -e page-faults true >/dev/null 2>&1 && have_perf=1
{
    echo "# What an auditor's own namespace costs"
    echo
    echo "Command: \`bash bench/auditor-floor.sh --rounds $rounds\` ($(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); fmcache $(git -C "$repo" rev-parse --short HEAD))."
    echo
    echo "\`/bin/true\` started $runs times per round with \`posix_spawn\` and reaped, median per"
    echo "round; $rounds interleaved rounds; the table gives the median over rounds. The"
    echo "auditors are \`bench/auditor-floor/nolibc.c\` (linked \`-nostdlib\`: $(needed "$tmp/libnolibc.so") DT_NEEDED) and"
    echo "\`withlibc.c\` (one call into libc: $(needed "$tmp/libwithlibc.so") DT_NEEDED, libc.so.6); \`DLFM_OP\` is unset, so"
    echo "libfmcache.so loads and initialises but serves and records nothing."
    echo
    echo "| mode | median (us) | minus native (us) | page faults (perf, mean of 20) |"
    echo "|---|---:|---:|---:|"
    python3 - "$tmp/raw" "$have_perf" <<'PY' | while read -r m med diff; do
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, m, v = line.split()
    d[m].append(float(v))
base = statistics.median(d["native"])
for m in ("native", "nolibc", "withlibc", "fmcache-audit", "fmcache-both"):
    med = statistics.median(d[m])
    print(m, f"{med:.0f}", f"{med - base:+.0f}")
PY
        f=-
        [ "$have_perf" = 1 ] && f=$(faults "$m")
        echo "| $m | $med | $diff | $f |"
    done
    echo
    echo "Raw (round, mode, median us of $runs starts):"
    echo
    sed 's/^/    /' "$tmp/raw"
} >"$out"
cat "$out"
