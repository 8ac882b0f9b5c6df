#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine for fmcache's tests. Idempotent: a
# re-run only checks state, so CI and test harnesses can call it every time.
set -euo pipefail

# Debian packages the tests need (Slurm and MPI: tests/cluster/up.sh; FUSE
# needs none: slowfs mounts /dev/fuse itself, as root).
# lmod and man-db: tests/tests/install.rs (module load, man fmcache-record).
DEB_PACKAGES="strace gcc g++ make libc6-dev procps util-linux coreutils patchelf lmod man-db"
# fmcache-bcast (a workspace member: built and linted with the rest) links
# rsmpi, whose build runs bindgen (libclang) on an MPI's headers: Open MPI
# (mpicc, the Debian default) and MPICH (mpicc.mpich, the tests' second build).
DEB_PACKAGES+=" libclang-dev openmpi-bin libopenmpi-dev mpich libmpich-dev"
# fmcache report's page is rendered in a real browser (tests/tests/report.rs).
DEB_PACKAGES+=" chromium fonts-dejavu-core"
# Exact pins keep the probe counts the tests measure reproducible; both ship
# cp311 manylinux_2_28 x86_64 wheels, so nothing is ever built from source.
PIP_PINS="numpy==2.4.6 scipy==1.17.1 pandas==3.1.1 matplotlib==3.11.2 scikit-learn==1.9.1"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
env_dir=${FMCACHE_ENV_DIR:-$repo/target/env}
venv=$env_dir/venv

# The python3 on PATH may be pyenv's bash shim, which forks several processes
# per start and would pollute every trace, so resolve the real binary.
py=${FMCACHE_PYTHON:-}
if [[ -z $py ]] && command -v pyenv >/dev/null; then
  py=$(pyenv which python3 2>/dev/null || true)
fi
py=${py:-/usr/bin/python3}
# Debian strips ensurepip from its python; venv needs python3-venv back.
[[ $py == /usr/bin/* ]] && DEB_PACKAGES+=" python3 python3-venv"

# `dpkg -s` alone also succeeds for removed-but-configured packages; match the
# captured text, as `| grep -q` can SIGPIPE dpkg and fail under pipefail.
missing=()
for p in $DEB_PACKAGES; do
  [[ $(dpkg -s "$p" 2>/dev/null) == *$'\nStatus: install ok installed\n'* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ -x $py ]] || { echo "setup: python interpreter $py not found" >&2; exit 1; }
prefix_of='import os, sys; print(os.path.realpath(sys.base_prefix))'
py_prefix=$("$py" -c "$prefix_of")

# Rebuild a venv left over from another (or since removed) interpreter.
if [[ -d $venv ]] && [[ $("$venv/bin/python" -c "$prefix_of" 2>/dev/null) != "$py_prefix" ]]; then
  echo "setup: recreating $venv (interpreter changed)" >&2
  rm -rf "$venv"
fi
[[ -x $venv/bin/python ]] || "$py" -m venv "$venv"

# Checking the pinned versions too makes a bumped pin trigger a reinstall.
# On success it also prints the summary line, saving another slow import.
check="import sys, importlib, numpy, scipy, numpy.fft, scipy.interpolate
mods = {'scikit-learn': 'sklearn'}
for pin in sys.argv[1:]:
    name, version = pin.split('==')
    assert importlib.import_module(mods.get(name, name)).__version__ == version, pin
print(f'fmcache env: python {sys.version.split()[0]}, {\" \".join(sys.argv[1:])}, venv {sys.prefix}')"
# shellcheck disable=SC2086  # PIP_PINS is a word list on purpose
if ! summary=$("$venv/bin/python" -c "$check" $PIP_PINS 2>/dev/null); then
  echo "setup: pip installing $PIP_PINS" >&2
  # pip's default byte-compiles, so traced imports hit .pyc like real runs do.
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: $PIP_PINS
  summary=$("$venv/bin/python" -c "$check" $PIP_PINS)
fi

# Write via a temp file so a concurrently sourcing test never sees half a file.
{
  printf 'export FMCACHE_VENV=%q\n' "$venv"
  printf 'export FMCACHE_VENV_PYTHON=%q\n' "$venv/bin/python"
  printf 'export FMCACHE_PY_PREFIX=%q\n' "$py_prefix"
  printf 'export FMCACHE_PYTHON=%q\n' "$py"
} >"$env_dir/env.sh.tmp"
mv "$env_dir/env.sh.tmp" "$env_dir/env.sh"

echo "$summary"
