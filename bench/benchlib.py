"""What every benchmark driver shares: logging, the machine it ran on, the
load, and removing a cache with its recording directory. Standard library
only (the drivers run under the base interpreter)."""
import os
import platform
import shutil
import subprocess
import sys


def log(msg=""):
    print(msg, flush=True)


def fail(who, msg):
    log(f"{who}: {msg}")
    sys.exit(1)


def sh(*cmd):
    """A command's stdout, or "?" when it cannot run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "?"
    return {
        "nproc": sh("nproc"),
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "glibc": glibc.replace("glibc ", ""),
        "mem": sh("sh", "-c", "awk '/MemTotal/ {print $2 \" kB\"}' /proc/meminfo"),
    }


def library_vars(repo):
    """The library's own environment variables, as `fmcache env --names`
    prints them (the one list, fmcache_core::config::LIBRARY_VARS): a run
    gets them from the driver alone."""
    tool = os.environ.get("FMCACHE_BIN") or os.path.join(repo, "target/release/fmcache")
    try:
        names = subprocess.run([tool, "env", "--names"], capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        fail("benchlib", f"{tool} env --names: {e}")
    if "DLFM_OP" not in names:
        fail("benchlib", f"{tool} env --names: no DLFM_OP in {names}")
    return tuple(names)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def remove_cache(path):
    """A cache file and its `.rec` recording directory, whichever exist."""
    for p in (path, path + ".rec"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)
