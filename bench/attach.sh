#!/usr/bin/env bash
# Attach-time and lookup micro-benchmark (bench/micro, package fmcache-bench).
#
#   bench/attach.sh [fmcache-attach-bench options, e.g. --sizes 1000,20000,200000]
#
# Builds the release binary and writes bench/results/attach.md and
# bench/results/attach.log. Runs from any directory.
#
# While bench/micro is not yet a member of the workspace, the crate is built
# from a detached copy under bench/.work/ (its own workspace root with the
# main workspace's [workspace.package], dependencies, profiles and lock
# file); once it is a member, plain `cargo build --release -p fmcache-bench`.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
results=$bench_dir/results
mkdir -p "$results"
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/release/fmcache-attach-bench

if grep -Eq '^[[:space:]]*members[[:space:]]*=.*"bench/micro"' "$repo/Cargo.toml"; then
  (cd "$repo" && cargo build --release -p fmcache-bench) >&2
else
  ws=$bench_dir/.work/detached
  rm -rf "$ws"
  mkdir -p "$ws"
  cp -r "$bench_dir/micro" "$ws/micro"
  rm -rf "$ws/micro/target"
  # The workspace root: the main one with bench/micro as its only member.
  sed -E 's|^([[:space:]]*members[[:space:]]*=).*|\1 ["micro"]|' "$repo/Cargo.toml" >"$ws/Cargo.toml"
  # Path dependencies point back into the main tree.
  sed -i -E "s|path = \"\\.\\./\\.\\./|path = \"$repo/|" "$ws/micro/Cargo.toml"
  cp "$repo/Cargo.lock" "$ws/Cargo.lock"
  echo "bench/attach.sh: bench/micro is not a workspace member yet; building a detached copy in $ws" >&2
  (cd "$ws" && CARGO_TARGET_DIR=$target cargo build --release -p fmcache-bench) >&2
fi

# Scratch files (up to ~100 MB at 200k entries) live under bench/.work.
scratch=$bench_dir/.work/attach.$$
trap 'rm -rf "$scratch"' EXIT
"$bin" --dir "$scratch" --md "$results/attach.md" \
  --command "bench/attach.sh${*:+ $*}" "$@" | tee "$results/attach.log"
