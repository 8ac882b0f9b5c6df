#!/usr/bin/env python3
"""Interleaved A/B of the lookup benchmarks between two builds of
fmcache-micro (say, before and after a format change): each run builds its
own synthetic caches with its own writer, in its own directory.

    python3 bench/micro_ab.py ROUNDS A=/path/to/old/fmcache-micro B=target/release/fmcache-micro

Prints, per benchmark at 200,000 entries, the median of the divan medians
over the rounds and every round's figure."""
import os
import statistics
import subprocess
import sys
import tempfile

from micro import parse_lines


def main():
    rounds = int(sys.argv[1])
    bins = dict(a.split("=", 1) for a in sys.argv[2:])
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for tag, b in bins.items():
                env = dict(os.environ, FMCACHE_MICRO_DIR=os.path.join(tmp, tag))
                out = subprocess.run([b, "--bench", "lookup"], env=env, capture_output=True, text=True, check=True).stdout
                run = parse_lines(["### run:\n"] + out.splitlines(keepends=True))["run"]
                for key, v in run.items():
                    name, _, n = key.rpartition("/")
                    if n == "200000":
                        res.setdefault((name, tag), []).append(v)
    for (name, tag), xs in sorted(res.items()):
        print(f"{name:20s} 200000 {tag} median {statistics.median(xs):7.1f} ns  rounds: " + " ".join(f"{x:.0f}" for x in xs))


if __name__ == "__main__":
    main()
