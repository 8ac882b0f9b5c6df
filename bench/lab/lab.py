"""Driver of bench/run, the start-up benchmark lab (bench/lab/; standard
library only).

Each workload's software tree lives on `fmcache-slowfs` (one lock, a fixed
latency per metadata request: a stand-in for one busy metadata server), in
two slowfs modes: ttl0 (the kernel caches nothing) and client (each node's
kernel caches entries, attributes and failed lookups, as a Lustre or GPFS
client holding locks does; for srun rows one mount per simulated node, in
that node's mount namespace, all queued on one lock). N processes start at
once, plainly or as `srun` tasks on the 4-node cluster of tests/cluster, in
four modes side by side:

  native       the tree on slowfs;
  tmpfs-copy   the tree packed in one tar on slowfs (prepared once, like the
               cache), unpacked to node-local tmpfs first, unpacking included;
  tmpfs-floor  the same copy made beforehand: the physical floor;
  fmcache      read-cache, cache file on slowfs, staging included;
and, for srun rows, the cache fetched once per job before the step, inside
one allocation (the fetch timed with the step):
  fmcache-sbcast  Slurm's sbcast of the cache file to each node's /dev/shm,
                  served from there;
  fmcache-bcast   `fmcache bcast` (one rank reads it, MPI_Bcast to one rank
                  per node, which stages it and leaves the job pointer).

Every process's output is compared with a native run's; anything else on
stderr aborts. Writes startup.csv (one row per cell and mode), startup.md
and SVG plots. See bench/README.md.
"""
import argparse
import datetime
import glob
import json
import os
import re
import random
import shutil
import statistics
import subprocess
import sys
import time

LAB = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, LAB)
sys.path.insert(0, os.path.dirname(LAB))  # bench/: benchlib, shared by every driver
import report as lab_report  # noqa: E402
from benchlib import fail, loadavg, log, machine, sh  # noqa: E402

HEADER, MODES, FS_MODES, SRUN_ONLY, EXTRA = (lab_report.HEADER, lab_report.MODES, lab_report.FS_MODES,
                                          lab_report.SRUN_ONLY, lab_report.EXTRA)
# Top-level entries of slowfs's source holding the one file each node
# fetches (the cache, the packed tree); everything else is software tree.
FETCHED = ("caches", "packed")
# Parts of the interpreter's prefix a Python program never needs; left out
# so that copying the tree (tmpfs-copy) is what a careful user would copy.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}
SITE_KEEP = ("numpy", "numpy.libs", "numpy-*.dist-info", "scipy", "scipy.libs", "scipy-*.dist-info")
TREE_VERSION = 1  # bump when the tree's layout changes
# W4's probe-heavy part: empty directories in front on sys.path and on
# LD_LIBRARY_PATH (each library search also tries their glibc-hwcaps subdirs).
EXTRA_DIRS = 8
PYNAMIC_QUICK = {
    "dlfm": ["--modules", "3", "--functions", "60", "--utils", "3", "--util-functions", "60"],
    "spindle": ["--modules", "24", "--functions", "20", "--utils", "18", "--util-functions", "20"],
}
HERE = os.path.dirname(LAB)  # bench/


def die(msg):
    fail("bench/run", msg)


class Workload:
    def __init__(self, name, dirs, argv, env=None, stderr_ok=None):
        self.name, self.dirs, self._argv, self._env = name, dirs, argv, env or (lambda root: {})
        self.stderr_ok = stderr_ok  # prefix of the one stderr line a run may print

    def argv(self, root):
        return self._argv(root)

    def env(self, root):
        return self._env(root)


def py(root):
    return f"{root}/py/bin/python3.11"


def w4_env(root):
    return {"PYTHONPATH": ":".join(f"{root}/w4-empty/p{i}" for i in range(EXTRA_DIRS)),
            "LD_LIBRARY_PATH": ":".join(f"{root}/w4-empty/l{i}" for i in range(EXTRA_DIRS))}


WORKLOADS = {
    "W1": Workload("W1", ["py"], lambda r: [py(r), "-c", ""]),
    "W2": Workload("W2", ["py"], lambda r: [py(r), "-c", "import numpy.fft; import scipy.interpolate"]),
    "W3": Workload("W3", ["py", "pyn-dlfm"], lambda r: [py(r), f"{r}/pyn-dlfm/driver.py"],
                   stderr_ok="pynamic import_s="),
    "W4": Workload("W4", ["py", "pyn-spindle", "w4-empty"], lambda r: [py(r), f"{r}/pyn-spindle/driver.py"],
                   env=w4_env, stderr_ok="pynamic import_s="),
}


class Slowfs:
    """The shared file system of one slowfs mode: one `fmcache-slowfs`
    mount on the host (ttl0; client for plain rows), or one per simulated
    node inside that node's mount namespace (client, srun rows), queued on
    one lock file. Each mount's counts file is rewritten every 50 ms."""

    def __init__(self, lab, latency, fs_mode, per_node=False):
        self.lab, self.latency, self.fs_mode = lab, latency, fs_mode
        tag = f"{latency}-{fs_mode}"
        # (node namespace pid or None for the host, counts file, process)
        self.mounts = []
        self.err = open(os.path.join(lab.work, f"slowfs-{tag}.err"), "w")
        os.makedirs(lab.mnt, exist_ok=True)
        cmd = [lab.slowfs, lab.src, lab.mnt, "--latency-us", str(latency)]
        if fs_mode == "ttl0":
            # Cold reads: the simulated nodes share this one mount and one
            # page cache, and each must read what it uses itself. Client
            # mode needs none: each node's mount has its own page cache.
            cmd.append("--cold-reads")
        else:
            cmd.append("--client-cache")
        if lab.a.read_mibps:
            cmd += ["--read-mibps", str(lab.a.read_mibps)]
        # Per node: the launching host too (srun itself loads libfmcache.so
        # from LD_PRELOAD and looks for the cache, as a login node's client
        # would), first, so its mount reaches the node namespaces before
        # theirs cover it.
        self.nodes = [None] + (lab.node_pids() if per_node else [])
        if per_node:
            cmd += ["--mds-lock", os.path.join(lab.work, f"mds-{tag}.lock")]
        self.cmd, self.tag = cmd, tag
        self.start()

    def start(self):
        self.mounts = []
        for k, pid in enumerate(self.nodes):
            counts = os.path.join(self.lab.work, f"counts-{self.tag}-{k}.json")
            if os.path.exists(counts):
                os.unlink(counts)
            enter = ["nsenter", "-t", str(pid), "-m", "--"] if pid else []
            proc = subprocess.Popen(enter + self.cmd + ["--counts", counts], stderr=self.err)
            self.mounts.append((pid, counts, proc))
            for _ in range(200):
                if os.path.exists(counts) and self.is_mounted(pid):
                    break
                time.sleep(0.05)
            else:
                self.stop()
                die(f"slowfs did not mount on {self.lab.mnt} (see {self.err.name})")

    def fresh(self):
        """Client mode: new mounts, so every run starts with cold client
        caches (entries and pages), as a job's first start-up on its nodes
        does; TTL 0 has nothing to forget."""
        if self.fs_mode != "ttl0":
            self.stop(close=False)
            self.start()

    def is_mounted(self, pid):
        if pid is None:
            return os.path.ismount(self.lab.mnt)
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "mountpoint", "-q", self.lab.mnt]).returncode == 0

    def read(self):
        """(requests and bytes summed over the mounts, requests by mount,
        requests by top-level entry by mount), once the counts stop changing: the kernel
        sends the releases of an exited process's files after it is gone
        (thousands for W4's libraries), and they belong to the run that
        opened them."""
        last, t = None, time.perf_counter()
        while True:
            time.sleep(0.15)  # the writers publish every 50 ms
            c = []
            for _, path, _ in self.mounts:
                with open(path) as f:
                    c.append(json.load(f))
            if c == last or time.perf_counter() - t > 60:
                break
            last = c
        per_mount = [x["metadata_requests"] for x in c]
        tops = [x.get("by_top", {}) for x in c]
        return sum(per_mount), sum(x["bytes_read"] for x in c), per_mount, tops

    def stop(self, close=True):
        for _, _, proc in self.mounts:
            proc.terminate()
        # The nodes' mounts before the host's, which they sit on.
        for pid, _, proc in reversed(self.mounts):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            enter = ["nsenter", "-t", str(pid), "-m", "--"] if pid else []
            subprocess.run(enter + ["umount", "-l", self.lab.mnt], capture_output=True)
        if close:
            self.err.close()


class Lab:
    def __init__(self, a):
        self.a = a
        # Absolute: a slowfs started in a node's mount namespace starts at its root.
        self.repo = os.path.abspath(a.repo)
        self.fm = os.path.join(self.repo, "target/release/fmcache")
        self.slowfs = os.path.join(self.repo, "target/release/fmcache-slowfs")
        self.lib = os.path.join(self.repo, "target/release/libfmcache.so")
        self.bcast = os.path.join(self.repo, "target/release/fmcache-bcast")
        self.work = os.path.abspath(a.work)
        # Node-local directories, one pair per --work, so concurrent runs
        # on one host never remove each other's copy or stage.
        tag = os.path.basename(self.work)
        self.stage, self.copy = f"/dev/shm/fmcache-bench-{tag}-stage", f"/dev/shm/fmcache-bench-{tag}-copy"
        self.src = os.path.join(self.work, "src")
        shared = os.environ.get("FMCACHE_CLUSTER_SHARED") if "srun" in a.launch else None
        # Under the cluster's shared mount, the slowfs mount reaches every node.
        self.mnt = (os.path.join(shared, "fmcache-" + os.path.basename(self.work)) if shared
                    else os.path.join(self.work, "mnt"))
        self.srun = os.environ.get("FMCACHE_SRUN", "srun")
        self.salloc = os.environ.get("FMCACHE_SALLOC", "salloc")
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("FMCACHE_", "DLFM_", "LD_", "PYTHON", "SLURM_")) or k == "SLURM_CONF"}
        self.base_env["PYTHONDONTWRITEBYTECODE"] = "1"  # no mode may write .pyc files into its tree
        self.rows = []
        self.notes = []
        self.rng = random.Random(a.seed)
        os.makedirs(self.src, exist_ok=True)
        os.makedirs(os.path.join(self.work, "out"), exist_ok=True)

    def node_pids(self):
        """The slurmd of each simulated node: its mount namespace is the node's."""
        run = os.path.join(os.environ["FMCACHE_CLUSTER"], "run")
        return [int(open(os.path.join(run, f"slurmd.n{k}.pid")).read()) for k in range(1, self.a.nodes + 1)]

    # ---- the software trees (built once, reused while their stamp holds) ----

    def build_py_tree(self):
        prefix = os.environ["FMCACHE_PY_PREFIX"]
        site = subprocess.run([os.environ["FMCACHE_VENV_PYTHON"], "-c",
                               "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        keep = sorted(p for pat in SITE_KEEP for p in glob.glob(os.path.join(site, pat)))
        stamp = json.dumps({"version": TREE_VERSION, "prefix": prefix, "site": [os.path.basename(p) for p in keep]})
        dst = os.path.join(self.src, "py")
        stamp_file = os.path.join(self.work, "py.stamp")
        if os.path.exists(stamp_file) and open(stamp_file).read() == stamp and os.path.isdir(dst):
            return
        log(f"lab: building the relocatable Python tree {dst}")
        shutil.rmtree(dst, ignore_errors=True)
        lib = os.path.join(dst, "lib/python3.11")
        shutil.copytree(os.path.join(prefix, "lib/python3.11"), lib, symlinks=True,
                        ignore=lambda d, names: STDLIB_SKIP & set(names) if d.endswith("lib/python3.11") else ())
        for p in keep:
            shutil.copytree(p, os.path.join(lib, "site-packages", os.path.basename(p)), symlinks=True)
        shutil.copy2(os.path.join(prefix, "lib/libpython3.11.so.1.0"), os.path.join(dst, "lib"))
        os.symlink("libpython3.11.so.1.0", os.path.join(dst, "lib/libpython3.11.so"))
        os.makedirs(os.path.join(dst, "bin"))
        exe = os.path.join(dst, "bin/python3.11")
        shutil.copy2(os.path.join(prefix, "bin/python3.11"), exe)
        os.symlink("python3.11", os.path.join(dst, "bin/python3"))
        # pyenv links libpython by an absolute RUNPATH; make the tree relocatable.
        subprocess.run(["patchelf", "--set-rpath", "$ORIGIN/../lib", exe], check=True)
        got = subprocess.run([exe, "-c", "import sys, numpy, scipy; print(sys.prefix)"],
                             capture_output=True, text=True, env=self.base_env)
        ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        if got.returncode or got.stdout.strip() != dst or f"{dst}/bin/../lib/libpython3.11" not in ldd:
            die(f"the tree in {dst} is not self-contained: {got.stdout}{got.stderr}{ldd}")
        with open(stamp_file, "w") as f:
            f.write(stamp)

    def build_pynamic(self, config):
        out = os.path.join(self.src, f"pyn-{config}")
        cmd = [sys.executable, os.path.join(HERE, "pynamic/pynamic.py"), "build", "--config", config,
               "--out", out, "--python", os.environ["FMCACHE_PYTHON"], "--jobs", "2"]
        if self.a.quick:
            cmd += PYNAMIC_QUICK[config]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            die(f"pynamic build {config} failed:\n{r.stderr}")
        log(f"lab: pynamic {config} ready in {out} ({time.perf_counter() - t:.1f} s)")

    def build_trees(self, workloads):
        self.build_py_tree()
        if "W3" in workloads:
            self.build_pynamic("dlfm")
        if "W4" in workloads:
            self.build_pynamic("spindle")
            for i in range(EXTRA_DIRS):
                for k in "pl":
                    os.makedirs(os.path.join(self.src, f"w4-empty/{k}{i}"), exist_ok=True)
        os.makedirs(os.path.join(self.src, "caches"), exist_ok=True)
        os.makedirs(os.path.join(self.src, "packed"), exist_ok=True)
        for name in workloads:
            self.pack(WORKLOADS[name])

    def pack(self, w):
        """tmpfs-copy's one-time preparation (untimed, like the pilot): the
        workload's tree in one uncompressed tar (no decompression on 2 cores)."""
        tar = os.path.join(self.src, "packed", f"{w.name}.tar")
        subprocess.run(["tar", "-cf", tar + ".tmp", "-C", self.src, *w.dirs], check=True)
        os.replace(tar + ".tmp", tar)
        log(f"lab: packed {w.name} ({' '.join(w.dirs)}) into {os.path.getsize(tar) >> 20} MiB")

    # ---- launching N processes at once ----

    def launch(self, w, root, n, launch, extra_env=None, tag="", fetch=None):
        """Starts n copies of w from tree root; returns (wall, outputs). Each
        output is (stdout, stderr) of one process (plain) or task (srun).
        fetch (srun only): (a shell step run first in the same allocation,
        the tasks' own environment): the step's tasks alone get that
        environment (srun --export), so that neither salloc, srun nor the
        fetch is served."""
        env = dict(self.base_env, **w.env(root), **(extra_env or {}))
        argv = w.argv(root)
        outdir = os.path.join(self.work, "out")
        if launch == "plain":
            files, procs = [], []
            t0 = time.perf_counter()
            for i in range(n):
                o = open(os.path.join(outdir, f"{i}.out"), "w+")
                e = open(os.path.join(outdir, f"{i}.err"), "w+")
                files.append((o, e))
                procs.append(subprocess.Popen(argv, env=env, cwd=outdir, stdout=o, stderr=e))
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            outs = []
            for o, e in files:
                o.seek(0), e.seek(0)
                outs.append((o.read(), e.read()))
                o.close(), e.close()
            if any(codes):
                die(f"{w.name} {tag}: exit codes {sorted(set(codes))}\n{outs[codes.index(max(codes))][1][-3000:]}")
            return wall, outs
        nodes = min(n, self.a.nodes)
        # --oversubscribe: concurrent lab runs share the nodes' declared CPUs.
        # The same number of tasks on every node (Slurm would fill the first
        # node's 24 declared CPUs first).
        # --quiet: srun's own notes ("job N queued and waiting for
        # resources" while the previous step's job is still completing)
        # would read as unlabelled task output; its errors still print.
        cmd = [self.srun, f"-N{nodes}", f"-n{n}", f"--ntasks-per-node={-(-n // nodes)}", "-l",
               "--quiet", "--kill-on-bad-exit=1", "--oversubscribe", *argv]
        if fetch:
            step, task_env = fetch
            cmd[1:1] = ["--export=" + ",".join(["ALL"] + [f"{k}={v}" for k, v in task_env.items()])]
            cmd = [self.salloc, f"-N{nodes}", f"--ntasks-per-node={-(-n // nodes)}", "--quiet", "--oversubscribe",
                   "sh", "-c", step + ' && exec "$@"', "sh", *cmd]
        for attempt in (1, 2):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env=env, cwd=outdir, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            # Slurm's own I/O forwarding failing (a slurmstepd's stream reset
            # as its tasks end; seen once on this one-VM cluster): the step
            # is run again, once, and said so. Any other failure stands.
            infra = p.returncode and ("step_launch_notify_io_failure" in p.stderr
                                      or "error reading header" in p.stderr)
            if not infra or attempt == 2:
                break
            log(f"lab: {w.name} {tag}: Slurm I/O forwarding failed (srun exit {p.returncode}); "
                f"running the step again")
        if p.returncode:
            die(f"{w.name} {tag}: srun exited {p.returncode}\n{p.stderr[-3000:]}")
        outs = [["", ""] for _ in range(n)]
        for k, text in ((0, p.stdout), (1, p.stderr)):
            for line in text.splitlines(keepends=True):
                label, sep, rest = line.partition(": ")
                if re.match(r"srun: job \d+ (queued and waiting for resources|has been allocated resources)", line):
                    continue
                if not sep or not label.strip().isdigit():
                    die(f"{w.name} {tag}: unlabelled srun output line {line!r}")
                outs[int(label)][k] += rest
        return wall, [tuple(o) for o in outs]

    def on_nodes(self, script, launch, nodes):
        """Runs a shell snippet once on the host (plain) or once per node (srun)."""
        if launch == "plain":
            cmd = ["sh", "-c", script]
        else:
            cmd = [self.srun, f"-N{nodes}", "--ntasks-per-node=1", "--oversubscribe", "sh", "-c", script]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.base_env)
        if r.returncode:
            die(f"{script!r} failed on {launch}: {r.stderr[-2000:]}")
        return r.stdout

    def node_mib(self, path, launch):
        """Size of a node-local directory, on the host or on the first node."""
        out = self.on_nodes(f"du -sk {path} 2>/dev/null | cut -f1 || echo 0", launch, 1)
        return round(int(out.split()[0] or 0) / 1024, 1) if out.strip() else 0.0

    def check(self, w, outs, ref, tag):
        for out, err in outs:
            lines = [l for l in err.splitlines() if not (w.stderr_ok and l.startswith(w.stderr_ok))]
            if lines:
                die(f"{w.name} {tag}: unexpected stderr:\n" + "\n".join(lines[:20]))
            if out != ref:
                die(f"{w.name} {tag}: output differs from native\n--- native\n{ref[:800]}\n--- this\n{out[:800]}")

    # ---- one mode, one run ----

    def run_mode(self, fs, w, mode, n, launch, ref):
        nodes = 1 if launch == "plain" else min(n, self.a.nodes)
        tag = f"{mode} {fs.fs_mode} N={n} {launch}"
        fs.fresh()
        # As python-mpi-bcast and container images do: the tree packed once
        # into one file on the shared file system, unpacked on each node.
        # The marker tells tmpfs-floor that a complete copy of this tree is there.
        marker = f"{self.copy}/.lab-{w.name}"
        copy_cmd = (f"rm -rf {self.copy} && mkdir -p {self.copy} && tar -xf {self.mnt}/packed/{w.name}.tar -C {self.copy}"
                    f" && touch {marker}")
        env, root, pre, step = None, self.mnt, None, None
        if mode == "tmpfs-copy":
            self.on_nodes(f"rm -rf {self.copy}", launch, nodes)
            root, pre = self.copy, copy_cmd
        elif mode == "tmpfs-floor":
            self.on_nodes(f"[ -f {marker} ] || {{ {copy_cmd}; }}", launch, nodes)  # untimed
            root = self.copy
        elif mode == "fmcache":
            self.on_nodes(f"rm -rf {self.stage}", launch, nodes)
            env = {"DLFM_OP": "read-cache", "LD_PRELOAD": self.lib, "FMCACHE_STAGE_DIR": self.stage,
                   "FMCACHE_FILE": f"{self.mnt}/caches/{w.name}.dat"}
            if launch == "plain":
                env["LD_AUDIT"] = self.lib  # what `fmcache run` sets; srun hands it on itself
        elif mode in SRUN_ONLY:
            env, step = self.fetch_once(w, mode, launch, nodes)
        r0, b0, m0, tops0 = fs.read()
        t0 = time.perf_counter()
        if pre:
            self.on_nodes(pre, launch, nodes)
        wall, outs = self.launch(w, root, n, launch, None if step else env, tag, step and (step, env))
        if pre:
            wall = time.perf_counter() - t0  # the copy is part of this mode's start-up
        r1, b1, m1, tops1 = fs.read()
        # Requests for the one file fetched per node (cache or packed tree)
        # against requests on the software trees themselves; also by mount.
        fetch_by_mount = [sum(b.get(k, 0) - a.get(k, 0) for k in FETCHED) for a, b in zip(tops0, tops1)]
        fetch = sum(fetch_by_mount)
        self.check(w, outs, ref, tag)
        mem = 0.0
        if mode in ("tmpfs-copy", "tmpfs-floor"):
            mem = self.node_mib(self.copy, launch)
        elif mode.startswith("fmcache"):
            mem = self.node_mib(self.stage, launch)
        # The host's mount first, then one per node (client mode, srun).
        by_mount = [b - a for a, b in zip(m0, m1)]
        log(f"  {w.name} {tag:35s} {wall:8.2f} s  {r1 - r0:8d} requests  {b1 - b0:11d} bytes  "
            f"{mem:7.1f} MiB/node  load {loadavg()}" +
            (f"  launcher {by_mount[0]}, nodes {by_mount[1:]}" if len(by_mount) > 1 else ""))
        return dict(wall=wall, req=r1 - r0, bytes=b1 - b0, mem=mem, nodes=nodes, fetch=fetch, by_mount=by_mount,
                    fetch_by_mount=fetch_by_mount)

    def fetch_once(self, w, mode, launch, nodes):
        """The srun-only modes: (the tasks' environment, the step fetching
        the cache once per node before them, in the same allocation).
        fmcache-sbcast serves the node-local copy (each process reads its
        header there); fmcache-bcast the shared path, whose job pointer
        `fmcache bcast` left on each node."""
        if launch != "srun":
            die(f"{mode} is for srun rows only")
        shared, local = f"{self.mnt}/caches/{w.name}.dat", f"{self.stage}.dat"
        self.on_nodes(f"rm -rf {self.stage} {local}", launch, nodes)
        env = {"DLFM_OP": "read-cache", "LD_PRELOAD": self.lib, "LD_AUDIT": self.lib,
               "FMCACHE_STAGE_DIR": self.stage}
        if mode == "fmcache-sbcast":
            env["FMCACHE_FILE"] = local
            step = f"{os.environ.get('FMCACHE_SBCAST', 'sbcast')} -f {shared} {local}"
        else:
            env["FMCACHE_FILE"] = shared
            # One rank per node (Open MPI under srun: PMIx); its line to stderr.
            step = (f"FMCACHE_STAGE_DIR={self.stage} FMCACHE_BCAST={self.bcast} {self.srun} --mpi=pmix "
                    f"-n {nodes} --ntasks-per-node=1 --quiet {self.fm} bcast {shared} >/dev/null")
        return env, step

    def cells(self, name):
        """The (N, launch) cells of a workload. srun rows always span all
        nodes, so a row's node count tells plain (1) from srun (the CSV has
        no launch column). --quick keeps CI short: the first workload gets
        every cell, the others only N=1 plain (their shape in both slowfs
        modes, not their scaling)."""
        out = []
        for n in self.a.procs:
            for launch in self.a.launch:
                if launch == "srun" and n < self.a.nodes:
                    continue
                if self.a.quick and name != self.a.workloads[0] and (n, launch) != (1, "plain"):
                    continue
                out.append((n, launch))
        return out

    def pilot(self, w):
        """One recorded run through slowfs (untimed), written into the source
        so production reads it through slowfs; also gives the reference
        output. With srun rows to measure, the pilot is the issue's command
        line, `DLFM_OP=write-cache LD_PRELOAD=libfmcache.so srun -n 4 app`
        (srun itself then hands LD_AUDIT on); else one plain process."""
        if not any(m.startswith("fmcache") for m in self.a.modes):
            _, outs = self.launch(w, self.mnt, 1, "plain", None, "reference")
            self.check(w, outs, outs[0][0], "reference")
            return outs[0][0]
        dat = os.path.join(self.src, "caches", f"{w.name}.dat")
        for p in (dat, dat + ".rec"):
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.unlink(p)
        shutil.rmtree(self.stage, ignore_errors=True)
        env = {"DLFM_OP": "write-cache", "LD_PRELOAD": self.lib, "FMCACHE_FILE": dat, "FMCACHE_STAGE_DIR": self.stage}
        srun = any(launch == "srun" for _, launch in self.cells(w.name))
        if not srun:
            env["LD_AUDIT"] = self.lib
        t = time.perf_counter()
        _, outs = self.launch(w, self.mnt, self.a.nodes if srun else 1, "srun" if srun else "plain", env, "pilot")
        self.check(w, outs, outs[0][0], "pilot")
        log(f"lab: {w.name} pilot recorded {os.path.getsize(dat)} bytes in {time.perf_counter() - t:.1f} s")
        return outs[0][0]

    def cell(self, fs, w, n, launch, ref):
        modes = [m for m in self.a.modes if launch == "srun" or m not in SRUN_ONLY]
        runs = {m: (self.a.runs if m in ("tmpfs-floor", "fmcache") or m in SRUN_ONLY
                    else min(self.a.runs, self.a.slow_runs))
                for m in modes}
        got = {m: [] for m in modes}
        for r in range(self.a.runs):
            order = [m for m in modes if r < runs[m]]
            self.rng.shuffle(order)
            for m in order:
                got[m].append(self.run_mode(fs, w, m, n, launch, ref))
        for m in modes:
            s = got[m]
            walls = [x["wall"] for x in s]
            req = int(statistics.median([x["req"] for x in s]))
            nodes = s[0]["nodes"]
            # Per node only where each node has its own mount; the run with
            # the median total.
            mid = sorted(s, key=lambda x: x["req"])[(len(s) - 1) // 2]
            by_mount, fetch_by_mount = mid["by_mount"], mid["fetch_by_mount"]
            self.add_row(dict(
                workload=w.name, mode=m, fs_mode=fs.fs_mode, procs=n, nodes=nodes, latency_us=fs.latency,
                requests_by_node=by_mount[1:] if len(by_mount) > 1 else None,
                requests_launcher=by_mount[0] if len(by_mount) > 1 else None,
                fetch_by_node=fetch_by_mount[1:] if len(by_mount) > 1 else None,
                fetch_launcher=fetch_by_mount[0] if len(by_mount) > 1 else None,
                wall_s_median=round(statistics.median(walls), 3), wall_s_min=round(min(walls), 3),
                wall_s_max=round(max(walls), 3), runs=len(s), mds_requests=req,
                mds_requests_per_node=round(req / nodes, 1),
                bytes_from_shared=int(statistics.median([x["bytes"] for x in s])),
                node_mem_mib=round(statistics.median([x["mem"] for x in s]), 1),
                fetch_requests=int(statistics.median([x["fetch"] for x in s]))))
            self.write_csv()

    def load_rows(self, out):
        """--append, --merge: the rows (and their extras) of an earlier run;
        rows from before the slowfs modes are TTL 0's."""
        extra_path = os.path.join(out, "startup-extra.json")
        extra = {lab_report.key_of(x): x for x in
                 (json.load(open(extra_path)) if os.path.exists(extra_path) else [])}
        for r in lab_report.load(os.path.join(out, "startup.csv")):
            x = extra.get(lab_report.key_of(r), {})
            r["fetch_requests"] = x.get("fetch_requests", 0)
            r["requests_by_node"] = x.get("requests_by_node")
            r["requests_launcher"] = x.get("requests_launcher")
            r["fetch_by_node"] = x.get("fetch_by_node")
            r["fetch_launcher"] = x.get("fetch_launcher")
            self.add_row(r)

    def add_row(self, row):
        """A re-measured cell replaces the earlier row of the same key."""
        key = lab_report.key_of(row)
        self.rows = [r for r in self.rows if lab_report.key_of(r) != key] + [row]

    def write_csv(self):
        cols = HEADER.split(",")
        with open(os.path.join(self.a.out, "startup.csv"), "w") as f:
            f.write(HEADER + "\n")
            for r in self.rows:
                f.write(",".join(str(r[c]) for c in cols) + "\n")
        # What the CSV's fixed columns have no room for, by the same key.
        extra = [{c: r[c] for c in EXTRA}
                 for r in self.rows]
        with open(os.path.join(self.a.out, "startup-extra.json"), "w") as f:
            json.dump(extra, f, indent=0)


def merge(lab, a):
    """Rows and run records of the results directory a.merge, added to a.out."""
    lab.load_rows(a.merge)
    lab.write_csv()
    runs = []
    for d in (a.out, a.merge):
        p = os.path.join(d, "startup-runs.json")
        if os.path.exists(p):
            runs += json.load(open(p))
        elif d == a.merge:
            # A run that stopped early keeps the rows of its finished cells.
            head = open(os.path.join(d, "startup.log")).readline()
            runs.append(dict(invoked=head[2:].split("   (cwd")[0].strip(), started="?", finished="stopped early",
                             machine=machine(), commit="?", dirty=False))
    with open(os.path.join(a.out, "startup-runs.json"), "w") as f:
        json.dump(runs, f, indent=1)
    log(f"lab: merged {a.merge} into {a.out}: {len(lab.rows)} rows")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--invoked", default="bench/run")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI: small trees, short latency; the first workload at N=1,4 plain and srun, the others N=1 plain")
    g.add_argument("--full", action="store_true", help="the published run (default)")
    ap.add_argument("--workloads", help="comma list of W1..W4")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--fs-modes", default=",".join(FS_MODES),
                    help="slowfs modes: ttl0 (nothing cached), client (a client cache per node)")
    ap.add_argument("--procs", help="comma list of N")
    ap.add_argument("--latency-us", help="comma list of slowfs latencies")
    ap.add_argument("--launch", help="plain, srun or plain,srun")
    ap.add_argument("--runs", type=int, help="runs of the fast modes per cell")
    ap.add_argument("--slow-runs", type=int, help="runs of native and tmpfs-copy per cell")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--read-mibps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="results directory (default bench/results; --quick: target/bench-quick)")
    ap.add_argument("--append", action="store_true", help="keep the rows already in OUT/startup.csv")
    ap.add_argument("--work", help="scratch and slowfs source (default bench/.work/lab); "
                    "give concurrent runs different ones")
    ap.add_argument("--merge", metavar="DIR", help="add the rows of another run's results DIR to OUT, then exit")
    a = ap.parse_args(argv)
    q = a.quick
    a.workloads = (a.workloads or "W1,W2,W3,W4").split(",")
    a.modes = a.modes.split(",")
    a.procs = [int(x) for x in (a.procs or ("1,4" if q else "1,4,16,64")).split(",")]
    a.latency_us = [int(x) for x in (a.latency_us or ("200" if q else "1000")).split(",")]
    a.launch = (a.launch or "plain,srun").split(",")
    a.runs = a.runs or (1 if q else 3)
    a.slow_runs = a.slow_runs or 1
    a.out = a.out or os.path.join(a.repo, "target/bench-quick" if q else "bench/results")
    a.work = a.work or os.path.join(a.repo, "bench/.work/lab")
    for w in a.workloads:
        if w not in WORKLOADS:
            die(f"unknown workload {w}")
    for m in a.modes:
        if m not in MODES:
            die(f"unknown mode {m}")
    a.fs_modes = a.fs_modes.split(",")
    for m in a.fs_modes:
        if m not in FS_MODES:
            die(f"unknown slowfs mode {m}")
    return a


def main(argv):
    a = parse(argv)
    os.makedirs(a.out, exist_ok=True)
    lab = Lab(a)
    if (a.append or a.merge) and os.path.exists(os.path.join(a.out, "startup.csv")):
        lab.load_rows(a.out)
    if a.merge:
        merge(lab, a)
        return
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"lab: {a.invoked}; machine {machine()}; load {loadavg()}")
    lab.build_trees(a.workloads)
    subprocess.run(["umount", "-l", lab.mnt], capture_output=True)
    refs = {}  # workload -> the reference output, from its one pilot
    for lat in a.latency_us:
        for fs_mode in a.fs_modes:
            # TTL 0: one host mount serves both launches (it reaches the
            # nodes); client cache: the host's for plain rows, then one
            # per node for srun rows.
            sets = [(a.launch, False)] if fs_mode == "ttl0" else \
                [([l], l != "plain") for l in a.launch]
            for launches, per_node in sets:
                fs = Slowfs(lab, lat, fs_mode, per_node)
                try:
                    for name in a.workloads:
                        w = WORKLOADS[name]
                        todo = [(n, l) for n, l in lab.cells(name) if l in launches]
                        if not todo:
                            continue
                        if name not in refs:
                            refs[name] = lab.pilot(w)
                        for n, launch in todo:
                            lab.cell(fs, w, n, launch, refs[name])
                finally:
                    fs.stop()
                    shutil.rmtree(lab.copy, ignore_errors=True)
                    shutil.rmtree(lab.stage, ignore_errors=True)
                    if "srun" in launches and any(m in SRUN_ONLY for m in a.modes):
                        lab.on_nodes(f"rm -rf {lab.stage} {lab.stage}.dat", "srun", a.nodes)
    lab.write_csv()
    meta = dict(invoked=a.invoked, started=started.isoformat(timespec="seconds"),
                finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                machine=machine(), commit=sh("git", "-C", a.repo, "rev-parse", "--short", "HEAD"),
                dirty=bool(sh("git", "-C", a.repo, "status", "--porcelain", "--untracked-files=no")))
    runs_file = os.path.join(a.out, "startup-runs.json")
    prior = []
    if a.append and os.path.exists(runs_file):
        prior = json.load(open(runs_file))
    with open(runs_file, "w") as f:
        json.dump(prior + [meta], f, indent=1)
    log(f"lab: wrote {os.path.join(a.out, 'startup.csv')}")


if __name__ == "__main__":
    main(sys.argv[1:])
