#!/usr/bin/env python3
"""Pynamic-style workload generator for fmcache (modelled on LLNL Pynamic,
written from scratch). Standard library only.

    pynamic.py build --config dlfm|spindle --out DIR [--python PY] [--seed S]
                     [--jobs J] [--modules N] [--functions F] [--utils U]
                     [--util-functions G] [--chain | --no-chain]
                     [--name-extra CHARS]

Generates, under DIR:

    src/            C sources (byte-identical for the same parameters)
    lib/            U utility libraries libpyutil<k>.so
    modules/        N CPython extension modules pynmod<i><EXT_SUFFIX>, each
                    linked (--no-as-needed) against every utility library,
                    RUNPATH $ORIGIN/../lib
    driver.py       imports every module, calls each entry point, checks the
                    values the generator computed
    build.json      the build stamp: a later build with the same parameters
                    (and generator, compiler, interpreter) does nothing

Each function is straight-line 64-bit integer arithmetic on its arguments
(ints and doubles chosen so that every double operation is exact), so the
generator can compute every result itself, in Python, bit for bit.
See README.md next to this file.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

GENERATOR_VERSION = 1
MASK = (1 << 64) - 1
FNV = 0x100000001B3

# The two named configurations. Function counts are per file; see README.md
# for how they were chosen.
CONFIGS = {
    # DLFM white paper: 10 libraries, about 9 MB in all.
    "dlfm": dict(modules=5, functions=2300, utils=5, util_functions=4400, chain=True, name_extra=0),
    # Spindle/CORAL: 495 files, 215 of them utilities, 100 extra characters
    # per function name; functions per file scaled down from ~1,850 so the
    # build takes a few minutes on 2 cores.
    "spindle": dict(modules=280, functions=180, utils=215, util_functions=120, chain=False, name_extra=100),
}

CFLAGS = ["-O1", "-fPIC", "-fno-strict-aliasing", "-ffp-contract=off", "-w"]


def u64(x):
    return x & MASK


def rotl(x, r):
    return u64((x << r) | (x >> (64 - r)))


class Op:
    """One random statement on the 64-bit state `h`: its C text and its
    Python meaning."""

    def __init__(self, rng, k_name=None):
        kind = rng.randrange(5 if k_name else 4)
        self.kind = kind
        self.c = rng.getrandbits(64) | 1
        self.s = rng.randrange(1, 63)
        self.k_name = k_name

    def c_text(self):
        c, s = self.c, self.s
        if self.kind == 0:
            return f"h ^= h >> {s};"
        if self.kind == 1:
            return f"h *= 0x{c:016x}ULL;"
        if self.kind == 2:
            return f"h += 0x{c:016x}ULL;"
        if self.kind == 3:
            return f"h = (h << {s}) | (h >> {64 - s});"
        return f"h ^= (uint64_t)(int64_t){self.k_name} * 0x{c:016x}ULL;"

    def apply(self, h, k=0):
        if self.kind == 0:
            return h ^ (h >> self.s)
        if self.kind == 1:
            return u64(h * self.c)
        if self.kind == 2:
            return u64(h + self.c)
        if self.kind == 3:
            return rotl(h, self.s)
        return h ^ u64(u64(k) * self.c)


class UtilFn:
    """`uint64_t name(uint64_t x, int k)` in a utility library."""

    def __init__(self, rng, name):
        self.name = name
        self.init = rng.getrandbits(64)
        self.ops = [Op(rng, "k") for _ in range(rng.randrange(4, 10))]

    def c_def(self):
        body = "\n".join("  " + o.c_text() for o in self.ops)
        return (f"uint64_t {self.name}(uint64_t x, int k)\n{{\n"
                f"  uint64_t h = x ^ 0x{self.init:016x}ULL;\n{body}\n  return h;\n}}\n")

    def value(self, x, k):
        h = x ^ self.init
        for o in self.ops:
            h = o.apply(h, k)
        return h


class ModFn:
    """`uint64_t name(<random int/double args>)` in a module; some call a
    utility function."""

    def __init__(self, rng, name, util_fns):
        self.name = name
        self.init = rng.getrandbits(64)
        nargs = rng.randrange(0, 7)
        self.args = []  # (type, scale, offset) per argument
        for _ in range(nargs):
            if rng.random() < 0.5:
                self.args.append(("int", rng.randrange(1, 1000), rng.randrange(-500, 500)))
            else:
                # Multiples of 1/4 times multiples of 1/2, sums of those:
                # exact in a double, so C and Python agree bit for bit.
                self.args.append(("double", rng.randrange(-40, 40) / 4, rng.randrange(-400, 400) / 4))
        self.ops = [Op(rng) for _ in range(rng.randrange(3, 9))]
        self.util = None
        if util_fns and rng.random() < 0.4:
            self.util = (rng.choice(rng.choice(util_fns)), rng.randrange(-100, 100))
        # The arguments the entry point passes.
        self.call = [rng.randrange(-1000, 1000) if t == "int" else rng.randrange(-200, 200) / 2
                     for t, _, _ in self.args]

    def c_decl(self):
        params = ", ".join(f"{t} a{i}" for i, (t, _, _) in enumerate(self.args)) or "void"
        return f"uint64_t {self.name}({params})"

    def c_def(self):
        lines = [f"  uint64_t h = 0x{self.init:016x}ULL;"]
        for i, (t, sc, off) in enumerate(self.args):
            if t == "int":
                term = f"(uint64_t)((int64_t)a{i} * {sc} + {off})"
            else:
                term = f"(uint64_t)(int64_t)(a{i} * {sc!r} + {off!r})"
            lines.append(f"  h = h * 0x{FNV:x}ULL + {term};")
        lines += ["  " + o.c_text() for o in self.ops]
        if self.util:
            fn, k = self.util
            lines.append(f"  h += {fn.name}(h, {k});")
        return f"{self.c_decl()}\n{{\n" + "\n".join(lines) + "\n  return h;\n}\n"

    def c_call(self):
        return f"{self.name}(" + ", ".join(
            str(v) if t == "int" else repr(v) for v, (t, _, _) in zip(self.call, self.args)) + ")"

    def value(self):
        h = self.init
        for v, (t, sc, off) in zip(self.call, self.args):
            term = v * sc + off if t == "int" else int(v * sc + off)
            h = u64(h * FNV + u64(term))
        for o in self.ops:
            h = o.apply(h)
        if self.util:
            fn, k = self.util
            h = u64(h + fn.value(h, k))
        return h


def long_suffix(rng, n):
    """Pynamic's long-names option: `n` extra identifier characters."""
    if n <= 0:
        return ""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
    return "_" + "".join(rng.choice(alphabet) for _ in range(n - 1))


def mod_name(i):
    return f"pynmod{i:04d}"


def generate(p):
    """All sources and expected values for parameters `p` (a dict)."""
    rng = random.Random(f"pynamic:{p['seed']}")
    utils = []
    for k in range(p["utils"]):
        utils.append([UtilFn(rng, f"pyutil{k}_f{j}{long_suffix(rng, p['name_extra'])}")
                      for j in range(p["util_functions"])])
    mods = []
    for i in range(p["modules"]):
        mods.append([ModFn(rng, f"{mod_name(i)}_f{j}{long_suffix(rng, p['name_extra'])}", utils)
                     for j in range(p["functions"])])

    sources = {}
    for k, fns in enumerate(utils):
        head = f"/* utility library {k}: generated by bench/pynamic/pynamic.py */\n#include <stdint.h>\n\n"
        sources[f"pyutil{k}.c"] = head + "\n".join(f.c_def() for f in fns)
    with_util = {}
    for k, fns in enumerate(utils):
        for f in fns:
            with_util[f.name] = f
    expected = {}
    own = []
    for i, fns in enumerate(mods):
        acc = 0
        for f in fns:
            acc = u64(acc * 31 + f.value())
        own.append(acc)
        expected[mod_name(i)] = u64(acc ^ (rotl(expected[mod_name(i - 1)], 1) if p["chain"] and i else 0))
        sources[f"{mod_name(i)}.c"] = module_source(i, fns, p["chain"])
    return sources, expected


def module_source(i, fns, chain):
    name = mod_name(i)
    utils_used = sorted({f.util[0].name for f in fns if f.util})
    out = [f"/* module {name}: generated by bench/pynamic/pynamic.py */",
           "#define PY_SSIZE_T_CLEAN", "#include <Python.h>", "#include <stdint.h>", ""]
    out += [f"uint64_t {u}(uint64_t x, int k);" for u in utils_used]
    out.append("")
    out += [f.c_def() for f in fns]
    out.append(f"static uint64_t visit_all(void)\n{{\n  uint64_t acc = 0;")
    out += [f"  acc = acc * 31 + {f.c_call()};" for f in fns]
    out.append("  return acc;\n}\n")
    # --chain: the entry calls the previous module's entry through the C
    # API (PyImport_ImportModule + attribute call), as an extension that
    # uses another extension does.
    chain_code = ""
    if chain and i > 0:
        chain_code = f"""
  PyObject *prev = PyImport_ImportModule("{mod_name(i - 1)}");
  if (!prev) return NULL;
  PyObject *r = PyObject_CallMethod(prev, "entry", NULL);
  Py_DECREF(prev);
  if (!r) return NULL;
  uint64_t pv = PyLong_AsUnsignedLongLong(r);
  Py_DECREF(r);
  if (PyErr_Occurred()) return NULL;
  acc ^= (pv << 1) | (pv >> 63);"""
    out.append(f"""static PyObject *entry(PyObject *self, PyObject *unused)
{{
  uint64_t acc = visit_all();{chain_code}
  return PyLong_FromUnsignedLongLong(acc);
}}

static PyObject *nfuncs(PyObject *self, PyObject *unused)
{{
  return PyLong_FromLong({len(fns)});
}}

static PyMethodDef methods[] = {{
  {{"entry", entry, METH_NOARGS, "visit every function; returns the checksum"}},
  {{"nfuncs", nfuncs, METH_NOARGS, "number of generated functions"}},
  {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef moddef = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};

PyMODINIT_FUNC PyInit_{name}(void)
{{
  return PyModule_Create(&moddef);
}}
""")
    return "\n".join(out)


DRIVER = '''#!/usr/bin/env python3
"""Generated by bench/pynamic/pynamic.py: imports every module, calls each
entry point, checks the value. Deterministic lines on stdout; timings on
stderr. Exits 1 on any wrong value."""
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# After PYTHONPATH's entries (sys.path[0] is this script's directory): a
# probe-heavy run puts extra directories there, in front of the modules.
FRONT = {{os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}}
AT = max([i + 1 for i, p in enumerate(sys.path) if os.path.abspath(p) in FRONT], default=0)
sys.path.insert(AT, os.path.join(HERE, "modules"))
EXPECTED = {expected}
NFUNCS = {nfuncs}

t0 = time.perf_counter()
mods = [(name, importlib.import_module(name)) for name in EXPECTED]
t1 = time.perf_counter()
bad = 0
for name, m in mods:
    got = m.entry()
    n = m.nfuncs()
    ok = got == EXPECTED[name] and n == NFUNCS
    print(f"{{name}} functions={{n}} checksum={{got:016x}} {{'ok' if ok else 'WRONG'}}")
    if not ok:
        bad += 1
        print(f"{{name}}: got {{got:016x}} ({{n}} functions), expected {{EXPECTED[name]:016x}} ({{NFUNCS}})",
              file=sys.stderr)
t2 = time.perf_counter()
print(f"modules={{len(mods)}} wrong={{bad}}")
print(f"pynamic import_s={{t1 - t0:.6f}} visit_s={{t2 - t1:.6f}}", file=sys.stderr)
sys.exit(1 if bad else 0)
'''


def ask_python(py):
    code = ("import sysconfig, sys, json; print(json.dumps({'include': sysconfig.get_paths()['include'], "
            "'suffix': sysconfig.get_config_var('EXT_SUFFIX'), 'version': sys.version}))")
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def compiler_id():
    out = subprocess.run(["gcc", "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0]


def compile_one(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}):\n{r.stderr}")


def write_if_changed(path, text):
    """Keeps an identical file untouched (its mtime too)."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build(a):
    p = dict(CONFIGS[a.config])
    for k in ("modules", "functions", "utils", "util_functions", "chain", "name_extra"):
        v = getattr(a, k)
        if v is not None:
            p[k] = v
    p["seed"] = a.seed
    if p["modules"] < 1 or p["functions"] < 1 or p["utils"] < 0 or p["util_functions"] < 1:
        sys.exit("pynamic.py: need at least 1 module, 1 function per file")
    py = a.python or sys.executable
    info = ask_python(py)
    gen = hashlib.sha256(open(os.path.abspath(__file__), "rb").read()).hexdigest()[:16]
    stamp = dict(params=p, config=a.config, generator=gen, version=GENERATOR_VERSION,
                 compiler=compiler_id(), python=os.path.realpath(py), include=info["include"],
                 suffix=info["suffix"], cflags=CFLAGS)
    out = os.path.abspath(a.out)
    stamp_path = os.path.join(out, "build.json")
    try:
        with open(stamp_path) as f:
            old = json.load(f)
            old.pop("built", None)  # the record of the build itself
            if old == stamp and all(os.path.exists(os.path.join(out, x)) for x in ("driver.py", "lib", "modules")):
                print(f"pynamic: {out} is up to date ({a.config}: {describe(p)})", file=sys.stderr)
                return 0
    except (FileNotFoundError, ValueError):
        pass

    t0 = time.perf_counter()
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)
    for d in ("src", "lib", "modules"):
        shutil.rmtree(os.path.join(out, d), ignore_errors=True)
        os.makedirs(os.path.join(out, d))
    sources, expected = generate(p)
    src = os.path.join(out, "src")
    for name, text in sources.items():
        write_if_changed(os.path.join(src, name), text)
    t_gen = time.perf_counter() - t0

    # Relative paths, cwd src/: nothing in the objects names the build dir.
    utils = [(["gcc", *CFLAGS, "-shared", f"-Wl,-soname,libpyutil{k}.so", "-o", f"../lib/libpyutil{k}.so",
               f"pyutil{k}.c"]) for k in range(p["utils"])]
    links = [f"-lpyutil{k}" for k in range(p["utils"])]
    mods = [(["gcc", *CFLAGS, "-shared", f"-I{info['include']}", "-o",
              f"../modules/{mod_name(i)}{info['suffix']}", f"{mod_name(i)}.c", "-L../lib",
              "-Wl,--no-as-needed", *links, "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"])
            for i in range(p["modules"])]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        for stage in (utils, mods):  # modules link against the utilities
            list(ex.map(lambda c: compile_one(c, src), stage))
    nfuncs = p["functions"]
    driver = DRIVER.format(
        expected="{\n" + "".join(f"    {n!r}: 0x{v:016x},\n" for n, v in expected.items()) + "}",
        nfuncs=nfuncs)
    write_if_changed(os.path.join(out, "driver.py"), driver)
    elapsed = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(out, d, f)) for d in ("lib", "modules")
               for f in os.listdir(os.path.join(out, d)))
    stamp["built"] = dict(seconds=round(elapsed, 1), generate_seconds=round(t_gen, 1), jobs=a.jobs,
                          so_bytes=size, files=p["modules"] + p["utils"])
    with open(stamp_path + ".tmp", "w") as f:
        json.dump(stamp, f, indent=1, sort_keys=True)
    os.replace(stamp_path + ".tmp", stamp_path)
    print(f"pynamic: built {out} ({a.config}: {describe(p)}) in {elapsed:.1f} s "
          f"(generation {t_gen:.1f} s, {a.jobs} jobs), {p['modules'] + p['utils']} files, {size} bytes of .so",
          file=sys.stderr)
    return 0


def describe(p):
    return (f"{p['modules']} modules x {p['functions']} functions, {p['utils']} utilities x "
            f"{p['util_functions']} functions, chain {'on' if p['chain'] else 'off'}, "
            f"name extra {p['name_extra']}, seed {p['seed']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate and build a workload")
    b.add_argument("--config", choices=sorted(CONFIGS), required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--python", help="target interpreter (default: this one)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--jobs", type=int, default=2)
    b.add_argument("--modules", type=int)
    b.add_argument("--functions", type=int)
    b.add_argument("--utils", type=int)
    b.add_argument("--util-functions", type=int)
    b.add_argument("--chain", action=argparse.BooleanOptionalAction, default=None)
    b.add_argument("--name-extra", type=int)
    a = ap.parse_args()
    return build(a)


if __name__ == "__main__":
    sys.exit(main())
