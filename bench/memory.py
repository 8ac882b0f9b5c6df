"""Driver for bench/memory.sh: memory of N concurrent processes that load
the same shared libraries, natively and under read-cache + LD_AUDIT (the
loader maps the libraries from the stage), from /proc/PID/smaps while all N
are alive. Writes bench/results/memory.md. Standard library only.

Workloads:
  c       tests/c/mem/prog.c with three ~8 MiB libraries built from
          tests/c/mem/lib.c (two DT_NEEDED via RUNPATH $ORIGIN/../lib, one
          dlopen'd); every page of each is read.
  python  the venv python: `import numpy, scipy.interpolate`, then wait.

Each child prints "ready" when loaded and waits for a line on stdin, so the
N are measured together; then each gets a line, must exit 0 with nothing on
stderr.
"""

import argparse
import datetime
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import fail, library_vars, loadavg, log, machine, sh  # noqa: E402,F401

# Besides the library's own variables (benchlib.library_vars): what would
# change what the workload loads.
OTHERS = ("LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME")
PY_CODE = ("import numpy, scipy.interpolate, sys; "
           "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()")
RO_BYTES = 6 << 20
TEXT_BYTES = 2 << 20
LIBS = ("libmem1.so", "libmem2.so", "libmem3.so")
FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")
READY_WITHIN = 300


def die(msg):
    fail("memory.py", msg)


# ---------------------------------------------------------------- smaps

def parse_fields(lines):
    m = dict.fromkeys(FIELDS, 0)
    for line in lines:
        k, _, v = line.partition(":")
        if k in m:
            m[k] = int(v.split()[0])
    return m


def smaps(pid):
    """[(path, (start, end, file offset), {field: kB})] from /proc/PID/smaps."""
    out = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0] if line.strip() else ""
            if "-" in first and not first.endswith(":"):
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = [parts[5].strip() if len(parts) > 5 else "", (lo, hi, int(parts[2], 16)), []]
                out.append(cur)
            elif cur is not None:
                cur[2].append(line)
    return [(p, rng, parse_fields(ls)) for p, rng, ls in out]


PAGE = os.sysconf("SC_PAGE_SIZE")


def frames(pid, ranges):
    """The resident pages of `ranges` (start, end, file offset), from
    /proc/PID/pagemap: {file offset: frame} for pages of the file (bit 61),
    and the set of frames of anonymous pages (copy-on-write copies: relocated
    data, .bss). Bit 63 = present, bits 0-54 = frame number (0 without
    CAP_SYS_ADMIN)."""
    file, anon = {}, set()
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        for lo, hi, off in ranges:
            f.seek(lo // PAGE * 8)
            for i, (v,) in enumerate(struct.iter_unpack("<Q", f.read((hi - lo) // PAGE * 8))):
                if not v >> 63 & 1:
                    continue
                frame = v & ((1 << 55) - 1)
                if v >> 61 & 1:
                    file[off + i * PAGE] = frame
                else:
                    anon.add(frame)
    return file, anon


def rollup(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return parse_fields(f.readlines()[1:])


def private(m):
    return m["Private_Clean"] + m["Private_Dirty"]


# ---------------------------------------------------------------- children

class Group:
    """n children started at once, each waiting after printing "ready"."""

    def __init__(self, label, cmd, env, cwd, n, errdir):
        self.label = label
        self.procs = []
        self.errs = []
        for i in range(n):
            err = os.path.join(errdir, f"{label}.{i}.stderr")
            self.errs.append(err)
            with open(err, "wb") as ef:
                self.procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=ef))
        # A child that never gets ready must not hang the benchmark.
        self.timer = threading.Timer(READY_WITHIN, self.kill)
        self.timer.start()
        self.heads = []
        for i, p in enumerate(self.procs):
            head = []
            while True:
                line = p.stdout.readline().decode(errors="replace")
                if not line:
                    self.kill()
                    die(f"{label}: child {i} ended before ready: {''.join(head)!r} "
                        f"stderr {open(self.errs[i]).read()!r}")
                head.append(line)
                if line == "ready\n":
                    break
            self.heads.append("".join(head))
        self.timer.cancel()

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def finish(self):
        for p in self.procs:
            p.stdin.write(b"exit\n")
            p.stdin.close()
        for i, p in enumerate(self.procs):
            rest = p.stdout.read()
            p.stdout.close()
            rc = p.wait()
            err = open(self.errs[i]).read()
            if rc != 0 or rest or err:
                die(f"{self.label}: child {i}: exit {rc}, after ready {rest!r}, stderr {err!r}")


# ---------------------------------------------------------------- bench

class Bench:
    def __init__(self, a):
        self.a = a
        self.repo = a.repo
        self.py = os.environ.get("FMCACHE_VENV_PYTHON") or die("FMCACHE_VENV_PYTHON not set")
        self.venv = os.environ.get("FMCACHE_VENV") or os.path.dirname(os.path.dirname(self.py))
        self.lib = os.environ.get("FMCACHE_LIB") or os.path.join(self.repo, "target/release/libfmcache.so")
        for f in (self.py, self.lib):
            if not os.path.exists(f):
                die(f"{f} missing")
        work_base = os.path.join(self.repo, "bench/.work")
        os.makedirs(work_base, exist_ok=True)
        # Under bench/.work: in recording scope (/tmp is never recorded).
        self.work = tempfile.mkdtemp(prefix="memory.", dir=work_base)
        ours = library_vars(self.repo) + OTHERS
        self.base = {k: v for k, v in os.environ.items() if k not in ours}

    def env(self, mode, wl):
        e = dict(self.base)
        if mode == "native":
            return e
        op = {"pilot": "write-cache", "read-cache": "read-cache"}[mode]
        e.update(LD_PRELOAD=self.lib, LD_AUDIT=self.lib, DLFM_OP=op,
                 FMCACHE_FILE=wl["cache"], FMCACHE_STAGE_DIR=wl["stage"])
        return e

    def build_c(self):
        src = os.path.join(self.repo, "tests/c/mem")
        tree = os.path.join(self.work, "c-tree")
        build = os.path.join(self.work, "c-build")
        for d in (build, os.path.join(tree, "lib"), os.path.join(tree, "bin")):
            os.makedirs(d)
        for n, name in enumerate(LIBS, 1):
            rng = random.Random(n)
            ro, text = os.path.join(build, f"ro{n}.bin"), os.path.join(build, f"text{n}.bin")
            with open(ro, "wb") as f:
                f.write(rng.randbytes(RO_BYTES))
            with open(text, "wb") as f:
                f.write(rng.randbytes(TEXT_BYTES))
            subprocess.run(["gcc", "-O1", "-Wall", "-fPIC", "-shared", f"-DTOUCH=memlib{n}_touch",
                            f'-DRO_BLOB="{ro}"', f'-DTEXT_BLOB="{text}"',
                            "-o", os.path.join(tree, "lib", name), os.path.join(src, "lib.c")], check=True)
        prog = os.path.join(tree, "bin/memprog")
        subprocess.run(["gcc", "-O1", "-Wall", "-o", prog, os.path.join(src, "prog.c"),
                        "-L" + os.path.join(tree, "lib"), "-Wl,--no-as-needed", "-lmem1", "-lmem2",
                        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"], check=True)
        return tree, prog

    def workloads(self):
        tree, prog = self.build_c()
        cwd = os.path.join(self.work, "py-cwd")
        os.mkdir(cwd)
        wls = []
        for name, cmd, wcwd in (("c", [prog], tree), ("python", [self.py, "-c", PY_CODE], cwd)):
            stage = tempfile.mkdtemp(prefix=f"fmcache-bench-mem-{os.geteuid()}.", dir="/dev/shm")
            wls.append({"name": name, "cmd": cmd, "cwd": wcwd, "stage": stage,
                        "cache": os.path.join(self.work, f"{name}.dat")})
        return wls

    def cleanup(self):
        if not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        for d in getattr(self, "stages", []):
            shutil.rmtree(d, ignore_errors=True)


def original(path, stage):
    """The original path of a mapping, and whether it came from the stage
    (`<stage>/<checksum>/root/<original>`)."""
    if path.startswith(stage + "/"):
        rest = path[len(stage) + 1:].split("/", 2)
        if len(rest) == 3 and rest[1] == "root":
            return "/" + rest[2], True
    return path, False


def is_lib(path, wl, b):
    base = os.path.basename(path)
    if wl["name"] == "c":
        return base in LIBS
    # numpy's and scipy's extension modules and bundled libraries.
    return path.startswith(b.venv + "/") and (".so" in base)


def measure(group, wl, b):
    """Per process: rollup, and per library (original path) summed fields
    plus whether each mapping came from the stage."""
    out = []
    for p in group.procs:
        libs = {}
        for path, rng, m in smaps(p.pid):
            orig, staged = original(path, wl["stage"])
            if not is_lib(orig, wl, b):
                continue
            e = libs.setdefault(orig, {"m": dict.fromkeys(FIELDS, 0), "staged": set(), "ranges": []})
            e["ranges"].append(rng)
            for k in FIELDS:
                e["m"][k] += m[k]
            e["staged"].add(staged)
        for e in libs.values():
            e["file"], e["anon"] = frames(p.pid, e.pop("ranges"))
        out.append({"pid": p.pid, "all": rollup(p.pid), "libs": libs})
    return out


def run_group(b, wl, mode, n, label):
    g = Group(label, wl["cmd"], b.env(mode, wl), wl["cwd"], n, b.work)
    s = measure(g, wl, b)
    heads = g.heads
    g.finish()
    return s, heads


def log_raw(label, samples):
    for i, s in enumerate(samples):
        a = s["all"]
        log(f"raw {label} proc {i} pid {s['pid']}: " + " ".join(f"{k}={a[k]}" for k in FIELDS)
            + f" libs={len(s['libs'])}")
        for path, e in sorted(s["libs"].items()):
            m = e["m"]
            src = "/".join(sorted("stage" if x else "orig" for x in e["staged"]))
            log(f"raw {label} proc {i}   {path} [{src}] " + " ".join(f"{k}={m[k]}" for k in FIELDS))


def figures(samples, solo):
    f = {
        "pss_sum": sum(s["all"]["Pss"] for s in samples),
        "pss_solo": solo[0]["all"]["Pss"],
        "pss_1": samples[0]["all"]["Pss"],
        "rss_1": samples[0]["all"]["Rss"],
        "priv_others": sum(private(s["all"]) for s in samples[1:]),
        "priv_sum": sum(private(s["all"]) for s in samples),
    }
    f["ratio_solo"] = f["pss_sum"] / (f["pss_solo"] + f["priv_others"])
    f["ratio_rss"] = f["pss_sum"] / (f["rss_1"] + f["priv_others"])
    f["ratio_first"] = f["pss_sum"] / (f["pss_1"] + f["priv_others"])
    libs = {}
    for s in samples:
        for path, e in s["libs"].items():
            d = libs.setdefault(path, {"pss_sum": 0, "rss_1": 0, "priv_1": 0, "priv_sum": 0, "priv_max": 0,
                                       "staged": 0, "orig": 0, "procs": 0, "file": {}, "anon": set()})
            for off, frame in e["file"].items():
                d["file"].setdefault(off, set()).add(frame)
            d["anon"] |= e["anon"]
            d["pss_sum"] += e["m"]["Pss"]
            d["priv_sum"] += private(e["m"])
            d["priv_max"] = max(d["priv_max"], private(e["m"]))
            d["procs"] += 1
            d["staged" if e["staged"] == {True} else "orig"] += 1
    for path, e in samples[0]["libs"].items():
        libs[path]["rss_1"] = e["m"]["Rss"]
        libs[path]["priv_1"] = private(e["m"])
    f["libs"] = libs
    f["lib_pss_sum"] = sum(d["pss_sum"] for d in libs.values())
    f["lib_rss_1"] = sum(d["rss_1"] for d in libs.values())
    kb = PAGE // 1024
    f["frames_known"] = not any(0 in d["anon"] or any(0 in x for x in d["file"].values()) for d in libs.values())
    for d in libs.values():
        file, anon = d.pop("file"), d.pop("anon")
        # Resident pages of the file (distinct offsets, in any process) and
        # the distinct frames holding them: equal when each page of the
        # file is one physical page for all N.
        d["file_pages"] = len(file) * kb
        d["file_frames"] = len(set().union(*file.values())) * kb if file else 0
        d["copies_max"] = max((len(x) for x in file.values()), default=0)
        d["anon"] = len(anon) * kb
        d["phys"] = d["file_frames"] + d["anon"]
    for k in ("phys", "file_pages", "file_frames", "anon"):
        f[f"lib_{k}"] = sum(d[k] for d in libs.values())
    f["lib_copies_max"] = max((d["copies_max"] for d in libs.values()), default=0)
    f["lib_priv_sum"] = sum(d["priv_sum"] for d in libs.values())
    f["lib_priv_1"] = sum(d["priv_1"] for d in libs.values())
    f["lib_priv_max"] = max((d["priv_max"] for d in libs.values()), default=0)
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--invoked", default="bench/memory.sh")
    ap.add_argument("-n", type=int, default=8, help="concurrent processes")
    ap.add_argument("--top", type=int, default=12, help="python: libraries listed (by Rss)")
    ap.add_argument("--keep", action="store_true", help="keep bench/.work/memory.* afterwards")
    a = ap.parse_args()
    if a.n < 2:
        die("-n must be at least 2")
    b = Bench(a)
    try:
        report(a, b)
    finally:
        b.cleanup()


def report(a, b):
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    m = machine()
    commit = sh("git", "-C", a.repo, "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", a.repo, "status", "--porcelain", "--untracked-files=no", "--", ".",
               ":(exclude)bench/results")
    versions = subprocess.run(
        [b.py, "-c", "import sys, numpy, scipy; print(sys.version.split()[0], numpy.__version__, scipy.__version__)"],
        env=b.base, capture_output=True, text=True, check=True).stdout.split()
    log(f"machine: nproc {m['nproc']}, {m['cpu']}, {m['kernel']}, glibc {m['glibc']}, mem {m['mem']}")
    log(f"commit {commit}{' (+ uncommitted changes)' if dirty else ''}; library {b.lib}")
    log(f"python {versions[0]}, numpy {versions[1]}, scipy {versions[2]}; n = {a.n}")
    wls = b.workloads()
    b.stages = [wl["stage"] for wl in wls]
    results = {}
    for wl in wls:
        name = wl["name"]
        log(f"\n== {name}: {' '.join(wl['cmd'])}   (cwd {wl['cwd']})")
        # Native: N at once, then one alone.
        nat, nh = run_group(b, wl, "native", a.n, f"{name}-native")
        nat_solo, nsh = run_group(b, wl, "native", 1, f"{name}-native-solo")
        expect = nsh[0]
        # Pilot: one process under write-cache + LD_AUDIT, to completion.
        p = subprocess.run(wl["cmd"], env=b.env("pilot", wl), cwd=wl["cwd"], input=b"exit\n",
                           capture_output=True)
        if p.returncode != 0 or p.stderr or p.stdout.decode() != expect:
            die(f"{name} pilot: exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}")
        # Read-cache: N at once (the first stages the cache), then one alone.
        srv, sh_ = run_group(b, wl, "read-cache", a.n, f"{name}-read-cache")
        srv_solo, ssh = run_group(b, wl, "read-cache", 1, f"{name}-read-cache-solo")
        for h in nh + sh_ + ssh:
            if h != expect:
                die(f"{name}: output {h!r} differs from native {expect!r}")
        for label, s in (("native", nat), ("native-solo", nat_solo),
                         ("read-cache", srv), ("read-cache-solo", srv_solo)):
            log_raw(f"{name} {label}", s)
        results[name] = {"native": figures(nat, nat_solo), "read-cache": figures(srv, srv_solo),
                         "output": expect}
        for mode in ("native", "read-cache"):
            f = results[name][mode]
            log(f"{name} {mode}: sum Pss {f['pss_sum']} kB, solo Pss {f['pss_solo']}, first Pss {f['pss_1']}, "
                f"first Rss {f['rss_1']}, others' private {f['priv_others']}; "
                f"sum/(solo+priv) {f['ratio_solo']:.3f}, sum/(first Rss+priv) {f['ratio_rss']:.3f}, "
                f"sum/(first Pss+priv) {f['ratio_first']:.3f}; libs: {len(f['libs'])}, Pss sum "
                f"{f['lib_pss_sum']} kB vs first Rss {f['lib_rss_1']} kB "
                f"({f['lib_pss_sum'] / max(1, f['lib_rss_1']):.3f}), private sum {f['lib_priv_sum']} kB, "
                f"first private {f['lib_priv_1']} kB, "
                f"physical {f['lib_phys'] if f['frames_known'] else 'n/a'} kB (file pages {f['lib_file_pages']} kB "
                f"in {f['lib_file_frames']} kB of frames, at most {f['lib_copies_max']} cop(ies) of a file page; "
                f"anonymous {f['lib_anon']} kB), "
                f"private max {f['lib_priv_max']} kB")
    loads = (load_start, loadavg())
    md = render_md(a, b, m, commit, dirty, versions, started, loads, results)
    path = os.path.join(a.repo, "bench/results/memory.md")
    with open(path, "w") as f:
        f.write(md)
    log(f"\nwrote {path}")


def render_md(a, b, m, commit, dirty, versions, started, loads, results):
    out = []
    p = out.append
    n = a.n
    p("# Memory: N processes sharing the same libraries, native vs read-cache\n")
    p(f"Generated by `bench/memory.sh` on {started:%Y-%m-%d %H:%M} UTC; full output (every process's "
      "figures) in `memory.log`.\n")
    p("## Machine\n")
    p(f"- nproc: {m['nproc']}; CPU: {m['cpu']}; memory: {m['mem']}")
    p(f"- kernel: {m['kernel']}; glibc: {m['glibc']}")
    p(f"- python {versions[0]} (venv `{b.py}`), numpy {versions[1]}, scipy {versions[2]}")
    p(f"- fmcache commit {commit}{' + uncommitted changes' if dirty else ''}; library `{b.lib}`")
    p(f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} (shared machine)\n")
    p("## Command\n")
    p("```sh")
    p(f"{a.invoked}")
    p("```\n")
    p("## Method\n")
    p(f"- Workload `c`: `tests/c/mem/prog.c` loading three libraries built from `tests/c/mem/lib.c` "
      f"(each {RO_BYTES >> 20} MiB of `.rodata` + {TEXT_BYTES >> 20} MiB inside `.text`, random bytes): "
      "`libmem1.so` and `libmem2.so` as DT_NEEDED through RUNPATH `$ORIGIN/../lib`, `libmem3.so` by "
      "`dlopen` of its bare name; it reads every byte of both blobs, prints checksums and `ready`, and waits "
      "on stdin.")
    p(f"- Workload `python`: `{b.py} -c \"{PY_CODE}\"`. Library mappings = every mapped `*.so*` file under "
      f"the venv (`{b.venv}`): numpy's and scipy's extension modules and their bundled `numpy.libs/`, "
      "`scipy.libs/` libraries; a mapping from the stage is attributed to its original path.")
    p(f"- Per workload: {n} processes natively, started at once and measured when all {n} printed `ready`; "
      "then one alone (`solo`); a pilot (`DLFM_OP=write-cache`, `LD_PRELOAD` and `LD_AUDIT` = the library) "
      f"run to completion; then {n} at once under `DLFM_OP=read-cache` + `LD_AUDIT` (the first stages the "
      "cache into a fresh private stage under /dev/shm, the others wait for it), then one alone. Every child "
      "must print the same as native, exit 0 and write nothing on stderr.")
    p("- Figures from `/proc/PID/smaps` (per mapping) and `/proc/PID/smaps_rollup` (whole process), in kB. "
      "Private = Private_Clean + Private_Dirty. `sum Pss` = sum over the N of the whole process's Pss. "
      "The shared-once bound is `solo Pss + sum of the other N-1's private`: one process's footprint when "
      "nobody shares its pages, plus what each further process adds alone. The same with the first of the N's "
      "Pss (taken while all N share) counts shared pages 1/N times, so it is shown for reference only.\n")
    p("## Reading\n")
    for name, r in results.items():
        nat, srv = r["native"], r["read-cache"]
        st = sum(d["staged"] for d in srv["libs"].values())
        tot = st + sum(d["orig"] for d in srv["libs"].values())
        copies = (f"at most {srv['lib_copies_max']} physical cop{'y' if srv['lib_copies_max'] == 1 else 'ies'} "
                  f"of any library page (native {nat['lib_copies_max']})" if srv["frames_known"]
                  else "frame numbers not readable (needs CAP_SYS_ADMIN)")
        p(f"- `{name}`: under read-cache {st} of {tot} library mappings come from the stage; {copies}; the "
          f"libraries' Pss over the {n} processes {srv['lib_pss_sum']} kB (native {nat['lib_pss_sum']} kB) "
          f"against one process's Rss of them {srv['lib_rss_1']} kB (native {nat['lib_rss_1']} kB)"
          + (f"; in memory: {srv['lib_file_frames']} kB of library file pages (native {nat['lib_file_frames']} kB) "
             f"plus {srv['lib_anon']} kB of per-process copy-on-write data (native {nat['lib_anon']} kB)"
             if srv["frames_known"] else "")
          + "; whole "
          f"processes: sum Pss / (solo Pss + others' private) = {srv['ratio_solo']:.3f} "
          f"(native {nat['ratio_solo']:.3f}).")
    p("")
    p("## Whole processes\n")
    p(f"| workload | mode | sum Pss ({n}) | solo Pss | first Pss | first Rss | sum private (all {n}) | "
      f"private (other {n - 1}) | sum / (solo Pss + private others) | sum / (first Rss + private others) | "
      "sum / (first Pss + private others) |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for mode in ("native", "read-cache"):
            f = r[mode]
            p(f"| {name} | {mode} | {f['pss_sum']} | {f['pss_solo']} | {f['pss_1']} | {f['rss_1']} | "
              f"{f['priv_sum']} | {f['priv_others']} | {f['ratio_solo']:.3f} | {f['ratio_rss']:.3f} | "
              f"{f['ratio_first']:.3f} |")
    p("")
    p("## Library mappings\n")
    p(f"`sum Pss` = sum over the {n} processes of the Pss of the libraries' mappings; `first Rss` = one "
      "process's Rss of the same mappings. From `/proc/PID/pagemap` (frame numbers): `file pages` = distinct "
      f"pages of the library files resident in any of the {n} (by file offset), `frames` = distinct physical "
      "pages holding them (equal to `file pages` when every page of a file is one physical page for all, "
      f"up to {n} x if each process had its own copy), `copies` = the most frames seen for one file page, "
      "`anon` = distinct anonymous (copy-on-write) pages in those mappings: relocated data and `.bss`, "
      "private to each process in any mode. `physical` = frames + anon, the libraries' real memory. From the "
      "tmpfs stage, which pages around a fault each process maps depends on where ASLR put the mapping "
      "(checked by hand: with `setarch -R` six served processes had identical Rss of `_multiarray_umath`, "
      "with ASLR 2,992-3,304 kB; natively they are identical either way), so there `file pages` (the union "
      f"over the {n}) exceeds one process's resident set by a few percent. `from` = library mappings (libraries x {n} "
      "processes) mapped from the stage / from the original path.\n")
    p(f"| workload | mode | libraries | sum Pss ({n}) | first Rss | physical ({n}) | file pages | frames | "
      f"copies (max) | anon ({n}) | from stage / original |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        for mode in ("native", "read-cache"):
            f = r[mode]
            st = sum(d["staged"] for d in f["libs"].values())
            og = sum(d["orig"] for d in f["libs"].values())
            if f["frames_known"]:
                phys = (f"{f['lib_phys']} | {f['lib_file_pages']} | {f['lib_file_frames']} | "
                        f"{f['lib_copies_max']} | {f['lib_anon']}")
            else:
                phys = "n/a | n/a | n/a | n/a | n/a"
            p(f"| {name} | {mode} | {len(f['libs'])} | {f['lib_pss_sum']} | {f['lib_rss_1']} | {phys} | {st} / {og} |")
    p("")
    for name, r in results.items():
        nat, srv = r["native"], r["read-cache"]
        paths = sorted(set(nat["libs"]) | set(srv["libs"]),
                       key=lambda x: -max(nat["libs"].get(x, {}).get("rss_1", 0),
                                          srv["libs"].get(x, {}).get("rss_1", 0)))
        shown = paths if name == "c" else paths[:a.top]
        p(f"### {name}: per library{'' if shown == paths else f' (the {len(shown)} largest of {len(paths)})'}\n")
        p("kB; `file pages / frames / copies / anon` as above.\n")
        p("| library | native: first Rss | native: sum Pss | native: file pages / frames / copies / anon | "
          "read-cache: first Rss | read-cache: sum Pss | read-cache: file pages / frames / copies / anon | "
          "read-cache: from stage / original |")
        p("|---|---:|---:|---:|---:|---:|---:|---|")
        for path in shown:
            dn, ds = nat["libs"].get(path, {}), srv["libs"].get(path, {})
            short = os.path.relpath(path, b.venv) if name == "python" else os.path.basename(path)

            def pages(d, f):
                if not d:
                    return "-"
                if not f["frames_known"]:
                    return "n/a"
                return f"{d['file_pages']} / {d['file_frames']} / {d['copies_max']} / {d['anon']}"
            p(f"| `{short}` | {dn.get('rss_1', '-')} | {dn.get('pss_sum', '-')} | {pages(dn, nat)} | "
              f"{ds.get('rss_1', '-')} | {ds.get('pss_sum', '-')} | {pages(ds, srv)} | "
              f"{ds.get('staged', 0)} / {ds.get('orig', 0)} |")
        p("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
