"""Driver for bench/startup.sh: times the start-up workload natively, under
write-cache and under read-cache, interleaved in shuffled rounds, and writes
bench/results/startup-core.{csv,md}. Standard library only.

Run it through bench/startup.sh, which builds the release library and tool
and sources target/env/env.sh (FMCACHE_VENV_PYTHON) first.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import fail, library_vars, loadavg, log, machine, remove_cache, sh  # noqa: E402,F401

WORKLOAD = "import numpy.fft; import scipy.interpolate"
MODES = ("native", "write", "read")
COLD = "read-cold"
TARGETS = {"read": 1.0, "write": 1.3}


def die(msg):
    fail("startup.py", msg)


class Bench:
    def __init__(self, a, prefix="startup."):
        self.a = a
        self.repo = a.repo
        self.py = os.environ.get("FMCACHE_VENV_PYTHON") or die("FMCACHE_VENV_PYTHON not set")
        self.lib = os.path.join(self.repo, "target/release/libfmcache.so")
        self.tool = os.path.join(self.repo, "target/release/fmcache")
        for f in (self.py, self.lib, self.tool):
            if not os.path.exists(f):
                die(f"{f} missing")
        # Scratch: cache files and the workload's cwd live under bench/.work
        # (in recording scope, like a user's project directory; /tmp is
        # never recorded). The stage is private, on /dev/shm like the default.
        work_base = os.path.join(self.repo, "bench/.work")
        os.makedirs(work_base, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix=prefix, dir=work_base)
        self.cwd = os.path.join(self.work, "cwd")
        os.mkdir(self.cwd)
        # Files made after the cache is recorded that a served run reads go
        # to /tmp, which is never recorded: under bench/.work they would be
        # hidden by the recorded listing of their directory.
        self.tmp = tempfile.mkdtemp(prefix="fmcache-bench.", dir="/tmp")
        self.stage = tempfile.mkdtemp(prefix=f"fmcache-bench-{os.geteuid()}.", dir="/dev/shm")
        self.read_cache = os.path.join(self.work, "read.dat")
        self.write_cache = os.path.join(self.work, "write.dat")
        self.cmd = [self.py, "-c", WORKLOAD]
        # The library's variables: every run gets them from us alone.
        ours = library_vars(self.repo)
        self.base = {k: v for k, v in os.environ.items() if k not in ours}

    def env(self, mode, stats=None):
        e = dict(self.base)
        if mode == "write":
            e.update(LD_PRELOAD=self.lib, DLFM_OP="write-cache", FMCACHE_FILE=self.write_cache)
        elif mode in ("read", COLD):
            e.update(
                LD_PRELOAD=self.lib,
                DLFM_OP="read-cache",
                FMCACHE_FILE=self.read_cache,
                FMCACHE_STAGE_DIR=self.stage,
            )
        elif mode == "audit":
            # read-cache as launched tasks get it: the auditor too.
            e.update(
                LD_PRELOAD=self.lib,
                LD_AUDIT=self.lib,
                DLFM_OP="read-cache",
                FMCACHE_FILE=self.read_cache,
                FMCACHE_STAGE_DIR=self.stage,
            )
        elif mode == "off":
            # Diagnostic: the library loaded, DLFM_OP unset (passes through).
            e.update(LD_PRELOAD=self.lib)
        elif mode == "record-read-cache":
            e.update(LD_PRELOAD=self.lib, DLFM_OP="write-cache", FMCACHE_FILE=self.read_cache)
        if stats:
            e["FMCACHE_STATS"] = stats
        return e

    def rm_cache(self, path):
        remove_cache(path)

    def prepare(self, mode):
        """Untimed set-up before a run."""
        if mode == "write":
            self.rm_cache(self.write_cache)
        elif mode == COLD:
            shutil.rmtree(self.stage, ignore_errors=True)

    def check(self, mode):
        """Untimed checks after a run."""
        if mode == "write" and not os.path.isfile(self.write_cache):
            die("write-cache run left no cache file")
        if mode == COLD and not os.listdir(self.stage):
            die("cold read-cache run staged nothing")

    def run(self, mode, stats=None):
        self.prepare(mode)
        env = self.env(mode, stats)
        wall, user, sys_, code, err = run_rusage(self.cmd, env, self.cwd)
        # Any output on stderr (an fmcache warning such as "running
        # uncached") makes the sample meaningless: stop.
        if code != 0 or err:
            die(f"{mode} run failed (exit {code}): {err.decode(errors='replace')}")
        self.check(mode)
        self.last_cpu = (user, sys_)
        return wall

    def tool_json(self, *args):
        out = subprocess.run([self.tool, *args, "--json"], check=True, capture_output=True)
        return json.loads(out.stdout)

    def cleanup(self):
        shutil.rmtree(self.stage, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def run_rusage(cmd, env, cwd):
    """One child: wall time (perf_counter around start and reaping), its
    user and system CPU time (wait4), exit code and stderr."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    return wall, ru.ru_utime, ru.ru_stime, p.returncode, err


def summary(xs):
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--invoked", default="bench/startup.sh")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cold", type=int, default=5, help="rounds that also time a cold-stage run")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep bench/.work/startup.* afterwards")
    a = ap.parse_args()
    if a.rounds < 10:
        die("--rounds must be at least 10")
    a.cold = max(0, min(a.cold, a.rounds))
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)

    results = os.path.join(a.repo, "bench/results")
    b = Bench(a)
    try:
        report(a, b, rng, seed, results)
    finally:
        b.cleanup()


def report(a, b, rng, seed, results):
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    m = machine()
    commit = sh("git", "-C", a.repo, "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", a.repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    versions = subprocess.run(
        [b.py, "-c", "import sys, numpy, scipy; print(sys.version.split()[0], numpy.__version__, scipy.__version__)"],
        env=b.env("native"), capture_output=True, text=True, check=True,
    ).stdout.split()
    log(f"machine: nproc {m['nproc']}, {m['cpu']}, {m['kernel']}, glibc {m['glibc']}, mem {m['mem']}")
    log(f"commit {commit}{' (+ uncommitted changes)' if dirty else ''}; python {versions[0]}, numpy {versions[1]}, scipy {versions[2]}")
    log(f"workload: {b.py} -c '{WORKLOAD}'   (cwd {b.cwd})")
    log(f"stage dir {b.stage}; rounds {a.rounds}; cold-stage samples {a.cold}; seed {seed}; loadavg {load_start}")

    # The read-cache cache: recorded once, then staged by a warm-up run.
    b.rm_cache(b.read_cache)
    t = b.run("record-read-cache")
    log(f"recorded {b.read_cache} in {t:.3f} s")
    info = b.tool_json("inspect", b.read_cache)
    log(f"cache: {info['file_size']} bytes (index {info['meta_size']}), {info['entries']} entries, "
        f"{info['blobs']} blobs ({info['content_bytes']} content bytes)")

    # Warm-up: page cache, the stage, the dynamic loader's caches.
    for mode in ("native", "write", "read"):
        log(f"warm-up {mode:9s} {b.run(mode):.4f} s")

    samples = []  # (round, mode, wall)
    cpu_samples = []  # (round, mode, user, sys)
    for r in range(1, a.rounds + 1):
        order = list(MODES) + ([COLD] if r <= a.cold else [])
        rng.shuffle(order)
        line = []
        for mode in order:
            w = b.run(mode)
            samples.append((r, mode, w))
            cpu_samples.append((r, mode, *b.last_cpu))
            line.append(f"{mode} {w:.4f}")
        log(f"round {r:2d}: " + ", ".join(line))

    # Counters, in separate runs so the timed ones are untouched.
    stats = {}
    for mode in ("read", "write"):
        f = os.path.join(b.work, f"stats-{mode}.txt")
        b.run(mode, stats=f)
        stats[mode] = b.tool_json("stats", f)
        s = stats[mode]
        log(f"FMCACHE_STATS {mode}: processes {s['processes']}, served {s['served']}, missed {s['missed']}, "
            f"passthrough {s['passthrough']}, recorded {s['recorded']}, served fraction {s['served_fraction']}")
    load_end = loadavg()

    with open(os.path.join(results, "startup-core.csv"), "w") as f:
        f.write("round,mode,wall_s\n")
        for r, mode, w in samples:
            f.write(f"{r},{mode},{w:.6f}\n")

    with open(os.path.join(results, "startup-core-cpu.csv"), "w") as f:
        f.write("round,mode,user_s,sys_s\n")
        for r, mode, u, s_ in cpu_samples:
            f.write(f"{r},{mode},{u:.6f},{s_:.6f}\n")
    cpu = {mode: {"user": statistics.median(u for _, m_, u, _ in cpu_samples if m_ == mode),
                  "sys": statistics.median(s_ for _, m_, _, s_ in cpu_samples if m_ == mode),
                  "total": statistics.median(u + s_ for _, m_, u, s_ in cpu_samples if m_ == mode)}
           for mode in (*MODES, COLD) if any(m_ == mode for _, m_, _, _ in cpu_samples)}

    by = {mode: [w for _, m_, w in samples if m_ == mode] for mode in (*MODES, COLD)}
    st = {mode: summary(xs) for mode, xs in by.items() if xs}
    nat = st["native"]["median"]
    ratio = {mode: st[mode]["median"] / nat for mode in st}
    # Per-round paired ratios: less sensitive to slow drifts of the machine.
    per_round = {}
    for mode in ("write", "read", COLD):
        rs = []
        for r in range(1, a.rounds + 1):
            x = [w for rr, mm, w in samples if rr == r and mm == mode]
            n = [w for rr, mm, w in samples if rr == r and mm == "native"]
            if x and n:
                rs.append(x[0] / n[0])
        if rs:
            per_round[mode] = statistics.median(rs)
    verdict = {mode: ("PASS" if ratio[mode] <= lim else "FAIL") for mode, lim in TARGETS.items()}

    log("")
    log(f"{'mode':10s} {'n':>3s} {'median s':>9s} {'min s':>8s} {'max s':>8s} {'ratio':>7s}")
    for mode in (*MODES, COLD):
        if mode in st:
            s = st[mode]
            log(f"{mode:10s} {s['n']:3d} {s['median']:9.4f} {s['min']:8.4f} {s['max']:8.4f} {ratio[mode]:7.3f}")
    for mode, lim in TARGETS.items():
        log(f"target {mode}-cache <= {lim:.1f}x native: {ratio[mode]:.3f}x -> {verdict[mode]}")

    md = render_md(a, b, m, commit, dirty, versions, seed, started, (load_start, load_end), info, st, ratio,
                   per_round, verdict, stats, cpu)
    with open(os.path.join(results, "startup-core.md"), "w") as f:
        f.write(md)
    log(f"wrote {results}/startup-core.csv, startup-core.md")


def render_md(a, b, m, commit, dirty, versions, seed, started, loads, info, st, ratio,
              per_round, verdict, stats, cpu):
    L = []
    p = L.append
    p("# Start-up benchmark: numpy.fft + scipy.interpolate import")
    p("")
    p(f"Generated by `{a.invoked}` on {started.strftime('%Y-%m-%d %H:%M UTC')}; "
      "raw samples in `startup-core.csv`, full output in `startup-core.log`.")
    p("")
    p("## Machine")
    p("")
    p(f"- nproc: {m['nproc']}; CPU: {m['cpu']}; memory: {m['mem']}")
    p(f"- kernel: {m['kernel']}; glibc: {m['glibc']}")
    p(f"- python {versions[0]} (venv `{b.py}`), numpy {versions[1]}, scipy {versions[2]}")
    p(f"- fmcache commit {commit}{' with uncommitted changes in the tree' if dirty else ''}, release build")
    p(f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} (the machine is shared and noisy)")
    p("")
    p("## Method")
    p("")
    p(f"- Workload: `{b.py} -c '{WORKLOAD}'`, cwd an empty directory under `bench/.work/`, "
      "stdout to /dev/null; wall time of the whole process with `time.perf_counter()` around "
      "starting and reaping it (`subprocess.Popen` + `os.wait4`) in the driver (`bench/startup.py`, "
      "run by the base interpreter).")
    p("- `native`: no preload. `write`: `LD_PRELOAD=libfmcache.so DLFM_OP=write-cache`, cache and "
      "`.rec` removed before every run (untimed), so each run records from scratch; the time "
      "includes the in-process merge at exit. `read`: `DLFM_OP=read-cache` from a cache recorded "
      "once beforehand and already staged (steady state). `read-cold`: the stage directory "
      "removed (untimed) right before, so the run validates the full checksum and stages the cache.")
    p(f"- Stage directory: private, under /dev/shm (as the default `/dev/shm/fmcache-<uid>`).")
    p(f"- One warm-up run per mode, then {a.rounds} rounds; each round runs native, write and read "
      f"once in shuffled order (seed {seed}); the first {a.cold} rounds also run read-cold in the "
      "shuffle. Any non-empty stderr or non-zero exit aborts the benchmark.")
    p("- Ratios are ratios of medians from this one interleaved run; the paired column is the "
      "median over rounds of (mode / native of the same round).")
    p("")
    p("## Results")
    p("")
    p("| mode | n | median (s) | min (s) | max (s) | stdev (s) | median / native median | paired median ratio |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in (*MODES, COLD):
        if mode not in st:
            continue
        s = st[mode]
        pr = f"{per_round[mode]:.3f}" if mode in per_round else "-"
        p(f"| {mode} | {s['n']} | {s['median']:.4f} | {s['min']:.4f} | {s['max']:.4f} | "
          f"{s['stdev']:.4f} | {ratio[mode]:.3f} | {pr} |")
    p("")
    p("CPU time of the same samples (child's user and system time from `wait4`; raw in "
      "`startup-core-cpu.csv`). Less sensitive than wall time to waiting for a CPU on a busy machine, "
      "but not a target:")
    p("")
    p("| mode | user median (s) | sys median (s) | user+sys median (s) | user+sys / native |")
    p("|---|---:|---:|---:|---:|")
    for mode in (*MODES, COLD):
        if mode in cpu:
            c = cpu[mode]
            p(f"| {mode} | {c['user']:.4f} | {c['sys']:.4f} | {c['total']:.4f} | "
              f"{c['total'] / cpu['native']['total']:.3f} |")
    p("")
    nat_sd, nat = st["native"]["stdev"], st["native"]["median"]
    p(f"Noise: the native samples' standard deviation is {1000 * nat_sd:.0f} ms "
      f"({100 * nat_sd / nat:.1f}% of their median), so with {st['native']['n']} rounds a difference "
      "of medians of a few percent is not resolved; `startup-diag.md` compares read-cache and native over "
      "more rounds with bootstrap intervals.")
    p("")
    p("## Targets")
    p("")
    for mode, lim in TARGETS.items():
        p(f"- {mode}-cache <= {lim:.1f}x native: **{ratio[mode]:.3f}x -> {verdict[mode]}**")
    p("- Where the time goes, and how large the possible gain is on this workload: "
      "`bench/startup-diag.sh` -> `startup-diag.md`.")
    if COLD in ratio:
        p(f"- (no target) first read-cache run after removing the stage: {ratio[COLD]:.3f}x native; "
          f"cold-stage cost ~ {1000 * (st[COLD]['median'] - st['read']['median']):.0f} ms over a steady-state read run")
    p("")
    p("## Cache")
    p("")
    k = info["kinds"]
    p(f"`fmcache inspect --json` of the read-cache cache: {info['file_size']} bytes "
      f"({info['file_size'] / 2**20:.1f} MiB; index {info['meta_size']} bytes), "
      f"**{info['entries']} entries**: {k['files_with_content']} files with contents, "
      f"{k['files_without_content']} without, {k['dirs_with_listing']} directories with listings, "
      f"{k['dirs_without_listing']} without, {k['symlinks']} symlinks, {k['failed']} failed lookups "
      f"({', '.join(f'{e} {n}' for e, n in info['errnos'].items()) or 'none'}), "
      f"{k['excluded']} excluded; {info['blobs']} blobs, {info['content_bytes']} content bytes.")
    p("")
    p("## FMCACHE_STATS")
    p("")
    p("One extra run per mode with `FMCACHE_STATS` set (not among the timed samples), summed by "
      "`fmcache stats --json`:")
    p("")
    p("| run | processes | served | missed | passthrough | recorded | served fraction |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("read", "write"):
        s = stats[mode]
        fr = "-" if s["served_fraction"] is None else f"{s['served_fraction']:.4f}"
        p(f"| {mode}-cache | {s['processes']} | {s['served']} | {s['missed']} | {s['passthrough']} | "
          f"{s['recorded']} | {fr} |")
    p("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
