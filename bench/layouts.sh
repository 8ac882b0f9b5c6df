#!/bin/bash
# Lookup-hit cost by index layout at 200,000 entries (a model of the
# reader, bench/layouts/lookup-layouts.c): 5 rounds with 4 KiB pages and 5
# with transparent huge pages asked for. Writes bench/results/lookup-layouts.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/results/lookup-layouts.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -Wall -o "$tmp/layouts" "$here/layouts/lookup-layouts.c"
"$tmp/layouts" >"$tmp/pages"
HUGE=1 "$tmp/layouts" >"$tmp/huge"
medians() {
    python3 - "$1" <<'PY'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+) ([\d.]+)", l.split(":", 1)[1])) for l in open(sys.argv[1])]
print("| " + " | ".join(f"{statistics.median(float(r[k]) for r in rows):.0f} ns" for k in ("A", "A6", "B", "C", "D", "slot")) + " |")
PY
}
{
    echo "# Lookup hit by index layout, 200,000 entries"
    echo
    echo "Command: \`bash bench/layouts.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))."
    echo "Layouts as in the head of \`bench/layouts/lookup-layouts.c\`: A is format 5, A6"
    echo "format 6 (8 hash bits in the slot), B a 16-byte slot, C entry and path in one"
    echo "record behind a slot, D records grouped by hash behind a directory (one read"
    echo "from memory per hit)."
    echo
    echo "Medians of 5 rounds, 1,000,000 hits each:"
    echo
    echo "| pages | A | A6 | B | C | D | slot only |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| 4 KiB $(medians "$tmp/pages")"
    echo "| huge asked $(medians "$tmp/huge")"
    echo
    echo "\"slot only\" is the key's hash and one slot read (and reading the tape): what"
    echo "every layout pays before its first read from memory. D pays one read from"
    echo "memory more, A to C two in a row (C's second is entry and path together)."
    echo "The model's figures run above fmcache's own (\`bench/results/micro.md\`,"
    echo "whose hash is XXH3); compare the columns of one run, not across files."
    echo
    echo "Raw, 4 KiB pages:"
    echo
    sed 's/^/    /' "$tmp/pages"
    echo
    echo "Raw, HUGE=1:"
    echo
    sed 's/^/    /' "$tmp/huge"
} >"$out"
cat "$out"
