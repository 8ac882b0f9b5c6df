#!/usr/bin/env python3
"""Count file-system calls on given trees in `strace -ff -k` output.

Each syscall is attributed to the object of its innermost stack frame:
calls issued by the dynamic loader (ld-linux*.so) are its own library
search, which LD_PRELOAD cannot see (the loader issue serves them through
LD_AUDIT); an execve made from libfmcache.so is a direct start executing
itself again with the auditor (counted apart as "reexec"); everything
else is the program's, through libc.

usage: stracecount.py PREFIX_OF_STRACE_FILES ROOT [ROOT...]
prints JSON: {"total", "on_roots", "loader", "reexec", "program", "program_calls": [...]}
"""
import glob
import json
import re
import sys

CALL = re.compile(r'^(?:\d+ +)?([a-z0-9_]+)\((.*)')
PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')


def records(path):
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(" > "):
                if cur is not None:
                    cur["frames"].append(line[3:].strip())
                continue
            m = CALL.match(line)
            if m:
                if cur is not None:
                    yield cur
                cur = {"name": m.group(1), "line": line.rstrip(), "frames": []}
    if cur is not None:
        yield cur


def main():
    prefix, roots = sys.argv[1], [r.rstrip("/") for r in sys.argv[2:]]
    out = {"total": 0, "on_roots": 0, "loader": 0, "reexec": 0, "program": 0, "program_calls": []}
    for path in sorted(glob.glob(prefix + ".*")):
        first_exec = True
        for rec in records(path):
            out["total"] += 1
            if rec["name"] == "execve" and first_exec:
                first_exec = False  # strace starting the program itself
                continue
            m = PATH.search(rec["line"])
            if not m:
                continue
            p = m.group(1)
            if not any(p == r or p.startswith(r + "/") for r in roots):
                continue
            out["on_roots"] += 1
            top = rec["frames"][0] if rec["frames"] else ""
            if "/ld-linux" in top.split("(")[0]:
                out["loader"] += 1
            elif rec["name"] == "execve" and any("libfmcache" in f for f in rec["frames"]):
                out["reexec"] += 1
            else:
                out["program"] += 1
                out["program_calls"].append(rec["line"][:300])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
