"""Draw the start-up benchmark results as SVG charts (matplotlib).

    $FMCACHE_VENV_PYTHON bench/lab/plot.py CSV OUTDIR

For every (workload, latency_us, launch, fs_mode) group of the CSV it
writes two charts into OUTDIR and prints each path written:

    startup-<workload>-<latency>us-<plain|srun>[-client]-wall.svg
        median start-up wall time with a min-max bar, against N
    startup-<workload>-<latency>us-<plain|srun>[-client]-requests.svg
        shared-file-system requests per node, against N

(-client: slowfs with a client cache per node; none: TTL 0.)

Rows with nodes == 1 are the "plain" launch, rows with nodes > 1 "srun".
Both charts have a log2 x axis at the N values present and a log10 y axis
(symlog near 0, so the requests of the tmpfs floor, 0, stay on the chart).

Runs under the test environment's venv (tests/env/setup.sh installs
matplotlib there); the lab's drivers themselves need only the standard
library.
"""

import os
import re
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

# Text stays text in the SVG (smaller files, searchable), not glyph paths.
matplotlib.rcParams["svg.fonttype"] = "none"
# Fixed element ids (matplotlib draws random ones otherwise): the same
# results give the same files, so a regeneration diffs only what changed.
matplotlib.rcParams["svg.hashsalt"] = "fmcache-lab"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (the lab's CSV reader, standard library only)

MODE_COLOURS = {
    "native": "#d62728",
    "tmpfs-copy": "#ff7f0e",
    "tmpfs-floor": "#2ca02c",
    "fmcache": "#1f77b4",
}
SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
DODGE = 0.03  # sideways offset between modes at one N, in log2 units


def read_rows(path):
    """The CSV rows, through the lab's one reader (report.load: the exact
    shape is checked there), with the fields the charts use."""
    return [{
        "workload": r["workload"],
        "mode": r["mode"],
        "fs_mode": r["fs_mode"],
        "procs": r["procs"],
        "nodes": r["nodes"],
        "latency_us": r["latency_us"],
        "median": r["wall_s_median"],
        "min": r["wall_s_min"],
        "max": r["wall_s_max"],
        "requests": r["mds_requests_per_node"],
    } for r in report.load(path)]


def groups(rows):
    """{(workload, latency_us, launch, fs_mode): rows}, launch 'plain' or 'srun'."""
    out = {}
    for row in rows:
        launch = "plain" if row["nodes"] == 1 else "srun"
        out.setdefault((row["workload"], row["latency_us"], launch, row["fs_mode"]), []).append(row)
    return out


def by_mode(rows):
    """({mode: {procs: row}}, repeats); a repeated (mode, procs) keeps the
    first row."""
    out, repeats = {}, 0
    for row in rows:
        series = out.setdefault(row["mode"], {})
        if row["procs"] in series:
            repeats += 1
        else:
            series[row["procs"]] = row
    return out, repeats


def mode_order(modes):
    known = [m for m in MODE_COLOURS if m in modes]
    return known + sorted(m for m in modes if m not in MODE_COLOURS)


def chart(path, series, title, ylabel, value, bar=None):
    """One chart; value(row) gives the point, bar(row) the (min, max)."""
    modes = mode_order([m for m, s in series.items() if any(value(r) is not None for r in s.values())])
    spare = iter(SPARE_COLOURS * (len(modes) // len(SPARE_COLOURS) + 1))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ns = sorted({n for s in series.values() for n in s})
    values = []
    for i, mode in enumerate(modes):
        colour = MODE_COLOURS.get(mode) or next(spare)
        shift = 2 ** ((i - (len(modes) - 1) / 2) * DODGE)
        xs, ys, lo, hi = [], [], [], []
        for n in sorted(series[mode]):
            row = series[mode][n]
            v = value(row)
            if v is None:
                continue
            xs.append(n * shift)
            ys.append(v)
            b = bar(row) if bar else None
            if b is None or None in b:
                b = (v, v)
            lo.append(max(v - b[0], 0.0))
            hi.append(max(b[1] - v, 0.0))
            values.extend([v, b[0], b[1]])
        if bar:
            ax.errorbar(xs, ys, yerr=[lo, hi], color=colour, marker="o", ms=4, capsize=3, label=mode)
        else:
            ax.plot(xs, ys, color=colour, marker="o", ms=4, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    positive = [v for v in values if v and v > 0]
    if any(v == 0 for v in values) and positive:
        ax.set_yscale("symlog", linthresh=min(positive))
    elif positive:
        ax.set_yscale("log")
    ax.set_xlabel("processes at once (N)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def launch_label(rows, launch):
    if launch == "plain":
        return "1 node"
    return f"{max(r['nodes'] for r in rows)} nodes (srun)"


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def main(argv):
    if len(argv) != 3:
        print("usage: plot.py CSV OUTDIR", file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    try:
        rows = read_rows(path)
    except (ValueError, OSError) as e:
        print(f"plot.py: {e}", file=sys.stderr)
        return 1
    found = groups(rows)
    if found:
        os.makedirs(outdir, exist_ok=True)
    order = {"plain": 0, "srun": 1}
    for key in sorted(found, key=lambda k: (k[0], k[1], order[k[2]], k[3] != "ttl0", k[3])):
        workload, latency, launch, fs_mode = key
        series, repeats = by_mode(found[key])
        if repeats:
            print(f"plot.py: {workload} {latency} us {launch} {fs_mode}: {repeats} repeated "
                  f"(mode, N) rows, kept the first of each", file=sys.stderr)
        # TTL 0's names predate the slowfs modes and stay as they were.
        suffix = "" if fs_mode == "ttl0" else f"-{safe(fs_mode)}"
        base = os.path.join(outdir, f"startup-{safe(workload)}-{latency}us-{launch}{suffix}")
        title = (f"{workload} start-up, slowfs {latency} us "
                 f"{'TTL 0' if fs_mode == 'ttl0' else 'with a client cache per node'}, "
                 f"{launch_label(found[key], launch)}")
        chart(base + "-wall.svg", series, title, "wall time, s (median, min-max)",
              lambda r: r["median"], lambda r: (r["min"], r["max"]))
        chart(base + "-requests.svg", series, title + "\nshared-file-system requests per node",
              "requests per node", lambda r: r["requests"])
        print(base + "-wall.svg")
        print(base + "-requests.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
