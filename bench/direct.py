"""What a direct start costs (issue 13 item 2): `DLFM_OP=read-cache
LD_PRELOAD=libfmcache.so prog` executes itself once more with the auditor.
Compared per program, interleaved round by round: native, audited from the
start (LD_AUDIT set, as `fmcache run` and every child of a preloaded
process get it) and direct (LD_PRELOAD alone: the re-exec). The cost of the
re-exec is direct minus audited, per process. Medians of one run; the
machine is shared, so the ratios matter, not the absolute times."""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import loadavg, log, machine, remove_cache  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--invoked", required=True)
    ap.add_argument("--rounds", type=int, default=41)
    a = ap.parse_args()
    lib = os.path.join(a.repo, "target/release/libfmcache.so")
    tool = os.path.join(a.repo, "target/release/fmcache")
    py = os.environ["FMCACHE_VENV_PYTHON"]
    programs = [
        ("/bin/true", ["/bin/true"]),
        ("python -c pass", [py, "-c", "pass"]),
        ("python numpy.fft+scipy.interpolate", [py, "-c", "import numpy.fft, scipy.interpolate"]),
    ]
    work = tempfile.mkdtemp(prefix="fmcache-direct-")
    base = {k: v for k, v in os.environ.items()
            if k not in ("DLFM_OP", "LD_PRELOAD", "LD_AUDIT", "FMCACHE_FILE")}
    base["FMCACHE_STAGE_DIR"] = os.path.join(work, "stage")
    m = machine()
    log(f"# direct starts: the re-exec's cost per process\n")
    log(f"command: `{a.invoked}`; {a.rounds} interleaved rounds; load before: {loadavg()}")
    log(f"machine: {m['nproc']} cores, {m['cpu']}, {m['kernel']}, glibc {m['glibc']}\n")
    log("| program | native ms | audited ms | direct ms | direct - audited ms | direct / native |")
    log("|---|---|---|---|---|---|")
    for label, argv in programs:
        cache = os.path.join(work, f"c{len(label)}.dat")
        remove_cache(cache)
        subprocess.run([tool, "record", "--cache", cache, "--"] + argv, env=base,
                       check=True, capture_output=True)
        modes = {
            "native": dict(base),
            "audited": dict(base, DLFM_OP="read-cache", LD_PRELOAD=lib, LD_AUDIT=lib,
                            FMCACHE_FILE=cache),
            "direct": dict(base, DLFM_OP="read-cache", LD_PRELOAD=lib, FMCACHE_FILE=cache),
        }
        times = {k: [] for k in modes}
        for _ in range(3):
            for env in modes.values():
                subprocess.run(argv, env=env, check=True)
        for _ in range(a.rounds):
            for k, env in modes.items():
                t0 = time.perf_counter()
                subprocess.run(argv, env=env, check=True)
                times[k].append((time.perf_counter() - t0) * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        log(f"| {label} | {med['native']:.2f} | {med['audited']:.2f} | {med['direct']:.2f} | "
            f"{med['direct'] - med['audited']:+.2f} | {med['direct'] / med['native']:.3f} |")
        for k, v in times.items():
            print(f"raw {label} {k}: " + " ".join(f"{x:.2f}" for x in v), file=sys.stderr)
    log(f"\nload after: {loadavg()}")


if __name__ == "__main__":
    main()
