#!/usr/bin/env bash
# Compression of the cache's contents (bench/results/compression.{md,log}):
# records W2 (numpy + scipy), W3 (Pynamic dlfm) and W4 (Pynamic spindle)
# caches, measures zstd and lz4 per blob on them (fmcache-compression),
# then times `fmcache stage` and a W2 first process on a fresh stage,
# format 3 (uncompressed, one thread) against this build, interleaved.
#
#   bench/compression.sh --base-bin DIR [--pyn DIR] [--rounds N] [--work DIR]
#
# --base-bin: a release target directory of the format-3 build (fmcache and
# libfmcache.so), e.g. built from the commit before the format change.
# --pyn: holds pyn-dlfm and pyn-spindle (bench/pynamic/pynamic.py build
# --config dlfm|spindle, full size); built there when missing.
# Uses FMCACHE_BIN / FMCACHE_LIB when set, else builds the release tool and
# library. Runs from any directory.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
invoked="bench/compression.sh${*:+ $*}"
exec > >(tee "$results/compression.log") 2>&1
echo "+ $invoked   (cwd $(pwd), $(date -u +%FT%TZ), commit $(git -C "$repo" rev-parse --short HEAD))"
if [[ -z ${FMCACHE_BIN:-} ]]; then
  (cd "$repo" && cargo build --release -p fmcache-preload -p fmcache-tools)
  target=${CARGO_TARGET_DIR:-$repo/target}
  export FMCACHE_BIN=$target/release/fmcache FMCACHE_LIB=$target/release/libfmcache.so
fi
(cd "$repo" && cargo build --release -p fmcache-bench --bin fmcache-compression)
compress_bin=${CARGO_TARGET_DIR:-$repo/target}/release/fmcache-compression
if [[ ! -f $repo/target/env/env.sh ]]; then
  bash "$repo/tests/env/setup.sh"
fi
# shellcheck source=/dev/null
source "$repo/target/env/env.sh"
status=0
"${FMCACHE_PYTHON:-/usr/bin/python3}" "$bench_dir/compression.py" --repo "$repo" \
  --compress-bin "$compress_bin" --invoked "$invoked" "$@" || status=$?
exec >&- 2>&-
wait
exit $status
