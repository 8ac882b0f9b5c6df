#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests
# need, checks formatting and lints, builds, and runs every test.
#   bash tests/run.sh          all tests
#   FMCACHE_LONG=1 bash tests/run.sh   also the long trials
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/env/setup.sh
# The cluster tests and the lab start a 4-node Slurm cluster (six daemons):
# stop it when this command ends, passed or failed, unless it was already up.
cluster_was_up=0
for f in target/cluster/run/slurmctld.pid; do
  [[ -s $f ]] && kill -0 "$(tr -dc 0-9 <"$f")" 2>/dev/null && cluster_was_up=1
done
stop_cluster() {
  if ((cluster_was_up == 0)) && [[ -d target/cluster ]]; then
    bash tests/cluster/down.sh >/dev/null 2>&1 &&
      echo "fmcache: stopped the test cluster this command started (tests/cluster/up.sh starts it)" >&2
  fi
}
trap stop_cluster EXIT
# shellcheck source=/dev/null
source target/env/env.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The format's reader needs no std, so a library without libc (an auditor's)
# can read a staged index in place: kept so.
cargo clippy -p fmcache-format --no-default-features -- -D warnings
# fmcache-bcast beside fmcache: `fmcache bcast` (Open MPI, the default mpicc).
cargo build --release -p fmcache-preload -p fmcache-tools -p fmcache-bcast
export FMCACHE_LIB="$PWD/target/release/libfmcache.so"
export FMCACHE_BIN="$PWD/target/release/fmcache"
# Integration tests start many processes each; two at a time fit 2 cores.
cargo test --release -- --test-threads=2
# The benchmark lab's quick mode: every workload and mode runs, outputs are
# compared with native, and the CSV's shape is checked (not the timings).
bash bench/run --quick
echo "fmcache: all tests passed"
