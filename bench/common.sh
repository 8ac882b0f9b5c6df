# Sourced by bench/startup.sh and bench/startup-diag.sh: release build of the
# library and the tool, then target/env/env.sh (created by tests/env/setup.sh
# when missing). Expects $repo.
echo "+ cargo build --release -p fmcache-preload -p fmcache-tools -p fmcache-slowfs -p fmcache-bcast"
(cd "$repo" && cargo build --release -p fmcache-preload -p fmcache-tools -p fmcache-slowfs -p fmcache-bcast)

if [[ ! -f $repo/target/env/env.sh ]]; then
  echo "+ tests/env/setup.sh (target/env/env.sh missing)"
  bash "$repo/tests/env/setup.sh"
fi
# shellcheck source=/dev/null
source "$repo/target/env/env.sh"
if [[ ! -x ${FMCACHE_VENV_PYTHON:-} ]]; then
  echo "bench: FMCACHE_VENV_PYTHON not set by target/env/env.sh" >&2
  exit 1
fi
# Drivers run under the base interpreter (not the venv, not a pyenv shim);
# they only need the standard library.
driver_py=${FMCACHE_PYTHON:-/usr/bin/python3}
