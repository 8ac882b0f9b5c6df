#!/usr/bin/env bash
# The record-then-serve demo (README, first command): builds fmcache,
# records a pilot of `import numpy.fft; import scipy.interpolate`, then
# runs it natively and under read-cache and prints the file-system calls
# on the venv and interpreter prefix (strace) and the wall times of both.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bash tests/env/setup.sh >/dev/null
# shellcheck source=/dev/null
source target/env/env.sh
cargo build --release -q -p fmcache-preload -p fmcache-tools
fmcache=$repo/target/release/fmcache
export FMCACHE_LIB=$repo/target/release/libfmcache.so

work=$repo/target/demo
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export FMCACHE_FILE=$work/fmcache.dat FMCACHE_STAGE_DIR=$work/stage
code='import numpy.fft; import scipy.interpolate; print("fft:", numpy.fft.fft([1, 2, 3]).real.sum())'
py=$FMCACHE_VENV_PYTHON

echo "== pilot: fmcache record -- python -c '$code'"
"$fmcache" record -- "$py" -c "$code"

count() { # count _ NAME [VAR=VAL...]: strace the program, classify calls on venv+prefix
  rm -f "$work"/st.*
  local name=$2; shift 2
  env "$@" strace -ff -k -qq -e trace=%file,getdents64 -o "$work/st" "$py" -c "$code" >"$work/out.$name" 2>&1 || true
  python3 "$repo/tests/scripts/stracecount.py" "$work/st" "$FMCACHE_VENV" "$FMCACHE_PY_PREFIX" >"$work/count.$name"
}
wall() { # median wall time of 7 runs
  python3 - "$@" <<'PY'
import statistics, subprocess, sys, time
t = []
for _ in range(7):
    s = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); t.append(time.perf_counter() - s)
print(f"{statistics.median(t):.3f}")
PY
}
count env native
count env served DLFM_OP=read-cache LD_PRELOAD="$FMCACHE_LIB"
t_native=$(wall "$py" -c "$code")
t_served=$(wall env DLFM_OP=read-cache LD_PRELOAD="$FMCACHE_LIB" "$py" -c "$code")
if cmp -s "$work/out.native" "$work/out.served"; then same="identical"; else same="DIFFERENT"; fi
python3 - "$work/count.native" "$work/count.served" "$t_native" "$t_served" "$same" <<'PY'
import json, sys
n, s = (json.load(open(f)) for f in sys.argv[1:3])
print("== file-system calls on the venv and interpreter prefix (strace -f)")
print(f"   {'':10} {'by Python':>10} {'by ld.so':>10} {'all calls':>10}")
for name, d in (("native", n), ("read-cache", s)):
    print(f"   {name:10} {d['program']:>10} {d['loader']:>10} {d['total']:>10}")
print("   (served: env, started with LD_PRELOAD alone, hands python LD_AUDIT too, so ld.so's search is served)")
print(f"== output of the two runs: {sys.argv[5]}")
print(f"== wall time, median of 7: native {sys.argv[3]} s, read-cache {sys.argv[4]} s")
PY
"$fmcache" inspect "$FMCACHE_FILE" | head -20
