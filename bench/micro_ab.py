#!/usr/bin/env python3
"""Interleaved A/B of the lookup benchmarks between two builds of
fmcache-micro (say, before and after a format change): each run builds its
own synthetic caches with its own writer, in its own directory.

    python3 bench/micro_ab.py ROUNDS A=/path/to/old/fmcache-micro B=target/release/fmcache-micro

Prints, per benchmark at 200,000 entries, the median of the divan medians
over the rounds and every round's figure."""
import os
import re
import statistics
import subprocess
import sys
import tempfile


def ns(s):
    v, u = s.split()
    return float(v) * {"ns": 1, "µs": 1000}[u]


def main():
    rounds = int(sys.argv[1])
    bins = dict(a.split("=", 1) for a in sys.argv[2:])
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for tag, b in bins.items():
                env = dict(os.environ, FMCACHE_MICRO_DIR=os.path.join(tmp, tag))
                out = subprocess.run([b, "--bench", "lookup"], env=env, capture_output=True, text=True, check=True).stdout
                name = None
                for line in out.splitlines():
                    m = re.match(r"[├╰]─ (\w+)", line)
                    if m:
                        name = m.group(1)
                        continue
                    m = re.match(r"[│ ]  [├╰]─ (\d+)\s+(.*)", line)
                    if m and m.group(1) == "200000":
                        cols = [c.strip() for c in m.group(2).split("│")]
                        res.setdefault((name, tag), []).append(ns(cols[2]))
    for (name, tag), xs in sorted(res.items()):
        print(f"{name:20s} 200000 {tag} median {statistics.median(xs):7.1f} ns  rounds: " + " ".join(f"{x:.0f}" for x in xs))


if __name__ == "__main__":
    main()
