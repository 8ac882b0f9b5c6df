"""Driver for bench/pynamic.sh: builds the Pynamic-style workloads, counts
their file-system calls (strace) natively, under write-cache and under
read-cache, times the driver, and writes bench/results/pynamic.md.
Standard library only. Run it through bench/pynamic.sh.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402
from benchlib import fail, loadavg, log, remove_cache, sh  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("native", "write", "read", "alone")
# Besides the library's own variables (benchlib.library_vars).
OTHERS = ("PYTHONPATH", "PYTHONHOME")
CALL = re.compile(r'^(?:\[pid +\d+\] |\d+ +)?([a-z0-9_]+)\((.*)')
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
FD_PATH = re.compile(r'^\d+<([^>]*)>')


def die(msg):
    fail("pynamic bench", msg)


class Workload:
    def __init__(self, b, config):
        self.b, self.config = b, config
        self.dir = os.path.join(b.work, config)
        self.cache_dir = os.path.join(b.work, f"{config}.caches")
        self.read_cache = os.path.join(self.cache_dir, "read.dat")
        self.write_cache = os.path.join(self.cache_dir, "write.dat")
        self.stage = tempfile.mkdtemp(prefix=f"fmcache-pynamic-{os.geteuid()}.", dir="/dev/shm")
        self.cmd = [b.py, os.path.join(self.dir, "driver.py")]

    def build(self):
        t0 = time.perf_counter()
        r = subprocess.run([self.b.driver_py, os.path.join(HERE, "pynamic.py"), "build", "--config",
                            self.config, "--out", self.dir, "--python", self.b.py, "--jobs", str(self.b.a.jobs)],
                           capture_output=True, text=True)
        log(r.stderr.rstrip())
        if r.returncode:
            die(f"build {self.config} failed")
        with open(os.path.join(self.dir, "build.json")) as f:
            self.stamp = json.load(f)
        self.build_wall = time.perf_counter() - t0

    def env(self, mode):
        e = dict(self.b.base)
        if mode == "write":
            e.update(LD_PRELOAD=self.b.lib, LD_AUDIT=self.b.lib, DLFM_OP="write-cache",
                     FMCACHE_FILE=self.write_cache, FMCACHE_STAGE_DIR=self.stage)
        elif mode in ("read", "pilot"):
            e.update(LD_PRELOAD=self.b.lib, LD_AUDIT=self.b.lib,
                     DLFM_OP="write-cache" if mode == "pilot" else "read-cache",
                     FMCACHE_FILE=self.read_cache, FMCACHE_STAGE_DIR=self.stage)
        elif mode == "alone":
            # A direct start: LD_PRELOAD alone (the process executes itself
            # once more with the auditor).
            e.update(LD_PRELOAD=self.b.lib, DLFM_OP="read-cache",
                     FMCACHE_FILE=self.read_cache, FMCACHE_STAGE_DIR=self.stage)
        return e

    def rm(self, path):
        remove_cache(path)

    def run(self, mode, trace=None):
        if mode == "write":
            self.rm(self.write_cache)
        cmd, env = self.cmd, self.env(mode)
        if trace:
            # The library's variables go to the traced program only (-E):
            # strace itself is neither preloaded nor a pilot, and a direct
            # start stays direct.
            ours = [a for k, v in env.items() if self.b.base.get(k) != v for a in ("-E", f"{k}={v}")]
            cmd = ["strace", "-f", "-qq", "-y", "-e", "trace=%file,getdents64", *ours, "-o", trace, *cmd]
            env = self.b.base
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, cwd=self.b.cwd, capture_output=True)
        wall = time.perf_counter() - t0
        err = p.stderr.decode(errors="replace")
        m = re.search(r"^pynamic import_s=([0-9.]+) visit_s=([0-9.]+)$", err, re.M)
        other = [l for l in err.splitlines() if not l.startswith("pynamic import_s=")]
        if p.returncode != 0 or not m or other:
            die(f"{self.config} {mode} run failed (exit {p.returncode}):\n{err}")
        return dict(wall=wall, import_s=float(m.group(1)), visit_s=float(m.group(2)), stdout=p.stdout)

    def count(self, trace):
        """Calls in an `strace -f -y` log: total, on the generated tree, on
        the venv + interpreter prefix; the tree's calls by name and lines."""
        roots = {"tree": [self.dir], "python": [self.b.venv, self.b.prefix]}
        res = {"total": 0, "tree": 0, "python": 0, "tree_by_call": {}, "tree_lines": [], "enoent_tree": 0}
        with open(trace, errors="replace") as f:
            for line in f:
                m = CALL.match(line)
                if not m:
                    continue
                name, rest = m.groups()
                res["total"] += 1
                path = call_path(rest)
                if path is None:
                    continue
                for k, rs in roots.items():
                    if any(path == r or path.startswith(r.rstrip("/") + "/") for r in rs):
                        res[k] += 1
                        if k == "tree":
                            res["tree_by_call"][name] = res["tree_by_call"].get(name, 0) + 1
                            res["tree_lines"].append(line.rstrip()[:400])
                            if "ENOENT" in line:
                                res["enoent_tree"] += 1
                        break
        return res

    def measure(self):
        a = self.b.a
        log(f"\n== {self.config}: {self.stamp['params']}")
        self.rm(self.read_cache)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.run("native")  # warm-up: settles atime after the build
        native = self.run("native")
        self.run("pilot")
        read = self.run("read")
        self.same = native["stdout"] == read["stdout"]
        log(f"stdout native == read-cache: {self.same}")
        self.counts = {}
        for mode in MODES:
            t = os.path.join(self.cache_dir, f"strace-{mode}.txt")
            self.run(mode, trace=t)
            self.counts[mode] = self.count(t)
            c = self.counts[mode]
            log(f"strace {mode}: total {c['total']}, tree {c['tree']} (ENOENT {c['enoent_tree']}), "
                f"venv+prefix {c['python']}; tree by call {c['tree_by_call']}")
        for line in self.counts["read"]["tree_lines"]:
            log(f"  read-cache call on tree: {line}")
        self.samples = {m: [] for m in MODES}
        for m in MODES:
            self.run(m)  # warm-up per mode
        rng = random.Random(a.seed)
        for _ in range(a.rounds):
            order = list(MODES)
            rng.shuffle(order)
            for m in order:
                self.samples[m].append(self.run(m))
        for m in MODES:
            s = self.samples[m]
            log(f"time {m}: wall median {med(s, 'wall'):.4f} s, import {med(s, 'import_s'):.4f} s, "
                f"visit {med(s, 'visit_s'):.4f} s (n={len(s)})")

    def cleanup(self):
        # The builds stay (reused through their stamps); caches, traces and
        # the stage go.
        shutil.rmtree(self.stage, ignore_errors=True)
        shutil.rmtree(self.cache_dir, ignore_errors=True)


def call_path(args):
    """The path a traced call names: its quoted path argument, made
    absolute with the directory descriptor `-y` shows before it, or that
    descriptor's path alone (getdents64, AT_EMPTY_PATH)."""
    fdm = FD_PATH.match(args)
    rest = args[fdm.end():] if fdm else args
    q = QUOTED.search(rest) if not fdm or rest.startswith(", \"") else None
    if q and (q.group(1).startswith("/") or not fdm):
        return q.group(1)
    if fdm:
        return fdm.group(1) + ("/" + q.group(1) if q and q.group(1) else "")
    return None


def med(samples, k):
    return statistics.median(x[k] for x in samples)


class Bench:
    def __init__(self, a):
        self.a = a
        self.repo = a.repo
        self.py = os.environ.get("FMCACHE_VENV_PYTHON") or die("FMCACHE_VENV_PYTHON not set")
        self.venv = os.environ.get("FMCACHE_VENV") or die("FMCACHE_VENV not set")
        self.prefix = os.environ.get("FMCACHE_PY_PREFIX") or die("FMCACHE_PY_PREFIX not set")
        self.driver_py = sys.executable
        self.lib = os.environ.get("FMCACHE_LIB") or os.path.join(self.repo, "target/release/libfmcache.so")
        if not os.path.isfile(self.lib):
            die(f"{self.lib} missing")
        # Builds are kept under bench/.work/pynamic (a user's project
        # directory: in recording scope) and reused through their stamps.
        self.work = os.path.join(self.repo, "bench/.work/pynamic")
        os.makedirs(self.work, exist_ok=True)
        self.cwd = tempfile.mkdtemp(prefix="cwd.", dir=self.work)
        ours = benchlib.library_vars(self.repo) + OTHERS
        self.base = {k: v for k, v in os.environ.items() if k not in ours}


def machine():
    m = benchlib.machine()
    gcc = sh("gcc", "--version").splitlines()[0]
    return (f"{m['nproc']} x {m['cpu']}; {m['kernel']}; glibc {m['glibc']}; {m['mem']} RAM; {gcc}")


def render(b, ws, started, commit, dirty):
    out = []
    p = out.append
    p("# Pynamic-style workloads: file-system calls and start-up time")
    p("")
    p(f"- date: {started}")
    p(f"- machine: {machine()}")
    p(f"- load average at start: {b.loadavg0}, at end: {loadavg()}")
    p(f"- fmcache commit {commit}{' with uncommitted changes in the tree' if dirty else ''}; "
      f"library `{b.lib}`")
    p(f"- python: `{b.py}` ({sh(b.py, '-c', 'import sys; print(sys.version.split()[0])')})")
    p(f"- command: `{b.a.invoked}`")
    p("")
    p("Generator: `bench/pynamic/pynamic.py` (see `bench/pynamic/README.md`). Counts: one run per mode under "
      "`strace -f -qq -y -e trace=%file,getdents64`; every call counts, the dynamic loader's included "
      "(getdents64 attributed through `-y`'s descriptor path). write-cache and read-cache runs have "
      "`LD_PRELOAD` and `LD_AUDIT` both set to the library (as `fmcache run` sets them); alone is read-cache "
      "with `LD_PRELOAD` only (a direct start, which executes itself once more with the auditor); write-cache starts from no cache each run (the "
      "merge at exit included); read-cache serves a cache recorded by one pilot and staged beforehand. "
      f"Times: median of {b.a.rounds} shuffled rounds after one warm-up per mode, no strace; "
      "wall is the whole process, import and visit are the driver's own `perf_counter` figures (stderr).")
    for w in ws:
        pr = w.stamp["params"]
        bi = w.stamp.get("built", {})
        p("")
        p(f"## {w.config}")
        p("")
        p(f"{pr['modules']} modules x {pr['functions']} functions, {pr['utils']} utility libraries x "
          f"{pr['util_functions']} functions, chain {'on' if pr['chain'] else 'off'}, "
          f"{pr['name_extra']} extra name characters, seed {pr['seed']}: "
          f"{bi.get('files', '?')} files, {bi.get('so_bytes', 0) / 1e6:.1f} MB of .so; "
          f"build {bi.get('seconds', '?')} s with {bi.get('jobs', '?')} jobs "
          f"(this run: {w.build_wall:.1f} s, {'reused' if w.build_wall < 5 else 'built'}).")
        p("")
        p(f"stdout of read-cache identical to native: **{'yes' if w.same else 'NO'}**")
        p("")
        p("| mode | calls, all | on the tree | of which ENOENT | on venv + prefix | wall (s) | import (s) | visit (s) |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|")
        for m in MODES:
            c, s = w.counts[m], w.samples[m]
            p(f"| {m} | {c['total']:,} | {c['tree']:,} | {c['enoent_tree']:,} | {c['python']:,} | "
              f"{med(s, 'wall'):.4f} | {med(s, 'import_s'):.4f} | {med(s, 'visit_s'):.4f} |")
        n = w.samples["native"]
        for m in ("write", "read", "alone"):
            p(f"\n{m}/native wall: {med(w.samples[m], 'wall') / med(n, 'wall'):.3f}x; "
              f"import: {med(w.samples[m], 'import_s') / med(n, 'import_s'):.3f}x")
        for m in MODES:
            by = ", ".join(f"{k} {v}" for k, v in sorted(w.counts[m]["tree_by_call"].items()))
            p(f"\nOn the tree, {m}, by call: {by or 'none'}")
        rl = w.counts["read"]["tree_lines"]
        if rl:
            p("")
            p(f"Calls on the tree left under read-cache ({len(rl)}; first 40):")
            p("")
            p("```")
            out.extend(rl[:40])
            p("```")
    p("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--invoked", default="bench/pynamic.sh")
    ap.add_argument("--configs", default="dlfm,spindle")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    b = Bench(a)
    b.loadavg0 = loadavg()
    commit = sh("git", "-C", a.repo, "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", a.repo, "status", "--porcelain", "--untracked-files=no", "--", ".",
               ":(exclude)bench/results")
    ws = [Workload(b, c) for c in a.configs.split(",")]
    try:
        for w in ws:
            w.build()
        for w in ws:
            w.measure()
    finally:
        for w in ws:
            w.cleanup()
        shutil.rmtree(b.cwd, ignore_errors=True)
    md = render(b, ws, started, commit, dirty)
    path = os.path.join(a.repo, "bench/results/pynamic.md")
    with open(path, "w") as f:
        f.write(md)
    log(f"\nwrote {path}")


if __name__ == "__main__":
    main()
