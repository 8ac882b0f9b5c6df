"""Driver of bench/compression.sh: see there. Writes
bench/results/compression.md (the tables) beside the log."""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import log, machine  # noqa: E402

W2 = ["-c", "import numpy.fft; import scipy.interpolate"]


def run(cmd, env=None, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit(f"compression: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def record(tool, lib, cache, argv):
    if os.path.exists(cache):
        os.unlink(cache)
    env = dict(os.environ, FMCACHE_LIB=lib)
    run([tool, "record", "--cache", cache, "--"] + argv, env=env)
    return os.path.getsize(cache)


def fresh(stage):
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage, mode=0o700)


def timed(cmd, env):
    """Wall seconds, and CPU seconds (user + system, all threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    run(cmd, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--compress-bin", required=True)
    ap.add_argument("--invoked", default="bench/compression.sh")
    ap.add_argument("--base-bin", required=True, help="target dir of the format-3 build")
    ap.add_argument("--pyn", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--work", default="/dev/shm/fmcache-compression-bench")
    a = ap.parse_args()
    work = a.work
    os.makedirs(work, exist_ok=True)
    py = os.environ["FMCACHE_PYTHON"]
    venv_py = os.environ["FMCACHE_VENV_PYTHON"]
    pyn = a.pyn or os.path.join(work, "pyn")
    for cfg in ("dlfm", "spindle"):
        out = os.path.join(pyn, f"pyn-{cfg}")
        if not os.path.exists(os.path.join(out, "driver.py")):
            log(f"+ pynamic build {cfg} -> {out}")
            run([py, os.path.join(a.repo, "bench/pynamic/pynamic.py"), "build", "--config", cfg,
                 "--out", out, "--python", py, "--jobs", "2"])
    new = (os.environ["FMCACHE_BIN"], os.environ["FMCACHE_LIB"])
    old = (os.path.join(a.base_bin, "fmcache"), os.path.join(a.base_bin, "libfmcache.so"))
    workloads = {
        "W2": [venv_py] + W2,
        "W3": [py, os.path.join(pyn, "pyn-dlfm/driver.py")],
        "W4": [py, os.path.join(pyn, "pyn-spindle/driver.py")],
    }
    m = machine()
    md = [f"# Compression of the cache's contents\n",
          f"`{a.invoked}` on {m['cpu']}, {m['nproc']} CPUs (shared with other jobs), "
          f"{m['kernel']}, glibc {m['glibc']}. Caches and stages in /dev/shm: reading the cache "
          "costs no time here, so the staging rows show the decompression's cost and none of "
          "the saved reads (the worst case for compression).\n",
          "Per blob (each file on its own, as the writer stores it), kept raw when compression "
          "saves less than an eighth; compress and decompress on one thread, decompress the "
          "median of three passes.\n"]
    caches = {}
    for name, argv in workloads.items():
        c = os.path.join(work, f"{name}.v4.dat")
        size = record(*new, c, argv)
        caches[name] = c
        log(f"{name}: format 4 cache {size} bytes")
    out = run([a.compress_bin] + [caches[n] for n in workloads])
    log(out)
    md.append("\n## Codecs on W2, W3 (Pynamic dlfm), W4 (Pynamic spindle)\n" + out)

    # Before (format 3: raw contents, one thread) and after, W2.
    v3 = os.path.join(work, "W2.v3.dat")
    size3 = record(*old, v3, workloads["W2"])
    size4 = os.path.getsize(caches["W2"])
    stage = os.path.join(work, "stage")
    rows = {k: [] for k in ("stage3", "stage4", "first3", "first4")}
    cpu = {k: [] for k in rows}
    base_env = {k: v for k, v in os.environ.items() if k not in ("DLFM_OP", "LD_PRELOAD", "LD_AUDIT")}
    for r in range(a.rounds):
        for tag, (tool, lib), cache in (("3", old, v3), ("4", new, caches["W2"])):
            env = dict(base_env, FMCACHE_STAGE_DIR=stage, FMCACHE_FILE=cache)
            fresh(stage)
            for k, cmd in (("stage" + tag, [tool, "stage"]), ("first" + tag, workloads["W2"])):
                fresh(stage)
                e = env if k.startswith("stage") else dict(env, DLFM_OP="read-cache", LD_PRELOAD=lib)
                w, c = timed(cmd, e)
                rows[k].append(w)
                cpu[k].append(c)
        log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in rows.items()))
    shutil.rmtree(stage, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    rng = {k: f"{min(v):.3f}-{max(v):.3f}" for k, v in rows.items()}
    md.append("\n## W2 before and after: bytes read from the shared file system, staging\n\n"
              f"{a.rounds} interleaved rounds on a fresh stage each time (one run of the script; "
              "the machine is shared and noisy: read the ratios). Staging reads the whole cache "
              "file (mapping, full checksum): its size is the bytes read per node.\n\n"
              "| | format 3 (raw, one thread) | format 4 (zstd -3, parallel) | 4 / 3 |\n|---|---|---|---|\n"
              f"| cache file, bytes read per node | {size3} | {size4} | {size4 / size3:.1%} |\n"
              f"| `fmcache stage`, s, median (min-max) | {med['stage3']:.3f} ({rng['stage3']}) | "
              f"{med['stage4']:.3f} ({rng['stage4']}) | {med['stage4'] / med['stage3']:.2f} |\n"
              f"| W2 first process on a fresh stage, s | {med['first3']:.3f} ({rng['first3']}) | "
              f"{med['first4']:.3f} ({rng['first4']}) | {med['first4'] / med['first3']:.2f} |\n"
              f"| `fmcache stage`, CPU s (user + system, all threads), median | {mcpu['stage3']:.3f} | "
              f"{mcpu['stage4']:.3f} | {mcpu['stage4'] / mcpu['stage3']:.2f} |\n"
              f"| W2 first process, CPU s, median | {mcpu['first3']:.3f} | "
              f"{mcpu['first4']:.3f} | {mcpu['first4'] / mcpu['first3']:.2f} |\n"
              f"\nLoad average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.\n")
    with open(os.path.join(a.repo, "bench/results/compression.md"), "w") as f:
        f.write("\n".join(md))
    log("\n".join(md))


if __name__ == "__main__":
    main()
