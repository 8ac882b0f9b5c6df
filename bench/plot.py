"""Draw the start-up benchmark results as SVG charts.

    python3 bench/plot.py CSV OUTDIR

For every (workload, latency_us, launch) group of the CSV it writes two
charts into OUTDIR and prints each path written:

    startup-<workload>-<latency>us-<plain|srun>-wall.svg
        median start-up wall time with a min-max bar, against N
    startup-<workload>-<latency>us-<plain|srun>-requests.svg
        shared-file-system requests per node, against N

Rows with nodes == 1 are the "plain" launch, rows with nodes > 1 "srun".
Both charts have a log2 x axis at the N values present and a log10 y axis;
values of 0 (which a log axis cannot show) go on a separate "0" row.

Standard library only: the drivers run under the base interpreter and the
suite installs no plotting package, so the SVG is written by hand.
"""

import csv
import math
import os
import re
import sys
from xml.sax.saxutils import escape

HEADER = [
    "workload", "mode", "procs", "nodes", "latency_us",
    "wall_s_median", "wall_s_min", "wall_s_max", "runs",
    "mds_requests", "mds_requests_per_node", "bytes_from_shared",
    "node_mem_mib",
]
MODE_COLOURS = {
    "native": "#d62728",
    "tmpfs-copy": "#ff7f0e",
    "tmpfs-floor": "#2ca02c",
    "fmcache": "#1f77b4",
}
SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")

# Canvas and plot area, in px.
WIDTH, HEIGHT = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 72, 500, 52, 352
LEGEND_X = 512
PAD = 8          # gap between the plot frame and the outermost data
ZERO_ROW = 30    # height taken by the "0" row when one is needed
DODGE = 3.0      # sideways offset between modes at the same N


class InputError(Exception):
    pass


# ---- reading -------------------------------------------------------------

def number(text, kind, where):
    """Parse one numeric field; '' means not measured (None)."""
    text = text.strip()
    if text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: bad value: {text!r}")
    return value


def required(value, where):
    if value is None:
        raise InputError(f"{where}: empty field")
    return value


def read_rows(path):
    """Return the CSV rows as dicts with typed fields."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise InputError(f"{path}: header is not {','.join(HEADER)}")
        rows = []
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            where = f"{path}:{line}"
            if len(fields) != len(HEADER):
                raise InputError(f"{where}: {len(fields)} fields, "
                                 f"expected {len(HEADER)}")
            rows.append(typed_row(dict(zip(HEADER, fields)), where))
    return rows


def typed_row(raw, where):
    def field(name, kind):
        return number(raw[name], kind, f"{where}: {name}")

    row = {
        "workload": raw["workload"].strip(),
        "mode": raw["mode"].strip(),
        "procs": required(field("procs", int), f"{where}: procs"),
        "nodes": required(field("nodes", int), f"{where}: nodes"),
        "latency_us": required(field("latency_us", int),
                               f"{where}: latency_us"),
        "median": field("wall_s_median", float),
        "min": field("wall_s_min", float),
        "max": field("wall_s_max", float),
        "requests": field("mds_requests_per_node", float),
    }
    if not row["workload"] or not row["mode"]:
        raise InputError(f"{where}: empty workload or mode")
    if row["procs"] < 1:
        raise InputError(f"{where}: procs must be >= 1")
    return row


def groups(rows):
    """{(workload, latency_us, launch): rows}, launch 'plain' or 'srun'."""
    out = {}
    for row in rows:
        launch = "plain" if row["nodes"] == 1 else "srun"
        out.setdefault((row["workload"], row["latency_us"], launch),
                       []).append(row)
    return out


def by_mode(rows):
    """({mode: {procs: row}}, repeats); a repeated (mode, procs) keeps the
    first row (srun rows at N=1 have nodes 1 and land in the plain group)."""
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


def colours(modes):
    spare = iter(SPARE_COLOURS * (len(modes) // len(SPARE_COLOURS) + 1))
    return {m: MODE_COLOURS.get(m) or next(spare) for m in modes}


# ---- axes ----------------------------------------------------------------

def fmt(v):
    return f"{v:.2f}"


def decade_label(e):
    if 0 <= e <= 5:
        return str(10 ** e)
    if -3 <= e < 0:
        return f"{10.0 ** e:.{-e}f}"
    return f"1e{e}"


class XAxis:
    """log2 axis placed at the N values present."""

    def __init__(self, values):
        self.values = sorted(set(values))
        lo, hi = math.log2(self.values[0]), math.log2(self.values[-1])
        pad = max(0.4, (hi - lo) * 0.06) if hi > lo else 1.0
        self.lo, self.hi = lo - pad, hi + pad

    def __call__(self, n):
        t = (math.log2(n) - self.lo) / (self.hi - self.lo)
        return LEFT + t * (RIGHT - LEFT)


class YAxis:
    """log10 axis over whole decades, with a "0" row below if needed."""

    def __init__(self, values):
        positive = [v for v in values if v > 0]
        self.zero_row = any(v == 0 for v in values)
        if positive:
            self.lo = math.floor(math.log10(min(positive)))
            self.hi = math.ceil(math.log10(max(positive)))
        else:
            self.lo, self.hi = 0, 1
        if self.hi == self.lo:
            self.hi += 1
        self.top = TOP + PAD
        self.bottom = BOTTOM - PAD - (ZERO_ROW if self.zero_row else 0)
        self.zero_y = BOTTOM - PAD - 4

    def __call__(self, v):
        if v <= 0:
            return self.zero_y
        t = (math.log10(v) - self.lo) / (self.hi - self.lo)
        return self.bottom - t * (self.bottom - self.top)


# ---- SVG pieces ----------------------------------------------------------

def text(x, y, s, size=11, anchor="middle", extra=""):
    return (f'<text x="{fmt(x)}" y="{fmt(y)}" font-size="{size}" '
            f'text-anchor="{anchor}"{extra}>{escape(s)}</text>')


def line(x1, y1, x2, y2, stroke, width=1.0, extra=""):
    return (f'<line x1="{fmt(x1)}" y1="{fmt(y1)}" x2="{fmt(x2)}" '
            f'y2="{fmt(y2)}" stroke="{stroke}" stroke-width="{width}"'
            f'{extra}/>')


def draw_x_axis(x):
    out = []
    for n in x.values:
        out.append(line(x(n), TOP, x(n), BOTTOM, "#e0e0e0"))
        out.append(line(x(n), BOTTOM, x(n), BOTTOM + 4, "#333"))
        out.append(text(x(n), BOTTOM + 17, str(n)))
    out.append(text((LEFT + RIGHT) / 2, BOTTOM + 36,
                    "concurrent processes N", size=12))
    return out


def draw_y_axis(y, label):
    out = []
    decades = y.hi - y.lo
    for e in range(y.lo, y.hi + 1):
        yy = y(10.0 ** e)
        out.append(line(LEFT, yy, RIGHT, yy, "#c8c8c8"))
        out.append(line(LEFT - 4, yy, LEFT, yy, "#333"))
        out.append(text(LEFT - 7, yy + 4, decade_label(e), anchor="end"))
        if e < y.hi and decades <= 6:
            for k in range(2, 10):
                yk = y(k * 10.0 ** e)
                out.append(line(LEFT, yk, RIGHT, yk, "#eeeeee"))
    if y.zero_row:
        brk = (y.bottom + y.zero_y) / 2
        out.append(line(LEFT, brk, RIGHT, brk, "#999",
                        extra=' stroke-dasharray="4 3"'))
        out.append(line(LEFT, y.zero_y, RIGHT, y.zero_y, "#c8c8c8"))
        out.append(line(LEFT - 4, y.zero_y, LEFT, y.zero_y, "#333"))
        out.append(text(LEFT - 7, y.zero_y + 4, "0", anchor="end"))
    cy = (TOP + BOTTOM) / 2
    out.append(text(16, cy, label, size=12,
                    extra=f' transform="rotate(-90 16 {fmt(cy)})"'))
    return out


def draw_series(points, colour, bars):
    """Polyline, optional min-max bars, then markers (drawn on top)."""
    out = []
    if len(points) > 1:
        coords = " ".join(f"{fmt(px)},{fmt(py)}" for px, py, _ in points)
        out.append(f'<polyline points="{coords}" fill="none" '
                   f'stroke="{colour}" stroke-width="1.8" '
                   f'stroke-linejoin="round"/>')
    for px, _, bar in points:
        if bars and bar is not None:
            lo, hi = bar
            out.append(line(px, lo, px, hi, colour, 1.2))
            out.append(line(px - 3, lo, px + 3, lo, colour, 1.2))
            out.append(line(px - 3, hi, px + 3, hi, colour, 1.2))
    for px, py, _ in points:
        out.append(f'<circle cx="{fmt(px)}" cy="{fmt(py)}" r="3.5" '
                   f'fill="{colour}" stroke="#fff" stroke-width="1"/>')
    return out


def draw_legend(modes, colour_of, note):
    rows = 20
    height = 10 + rows * len(modes)
    out = [f'<rect x="{LEGEND_X}" y="{TOP}" width="{WIDTH - LEGEND_X - 8}" '
           f'height="{height}" fill="#fff" stroke="#999"/>'] if modes else []
    for i, mode in enumerate(modes):
        yy = TOP + 15 + rows * i
        c = colour_of[mode]
        out.append(line(LEGEND_X + 8, yy, LEGEND_X + 30, yy, c, 1.8))
        out.append(f'<circle cx="{fmt(LEGEND_X + 19)}" cy="{fmt(yy)}" '
                   f'r="3.5" fill="{c}" stroke="#fff" stroke-width="1"/>')
        out.append(text(LEGEND_X + 36, yy + 4, mode, anchor="start"))
    for i, note_line in enumerate(note):
        out.append(text(LEGEND_X, TOP + height + 18 + 13 * i, note_line,
                        size=10, anchor="start", extra=' fill="#555"'))
    return out


def svg(title_lines, body):
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'font-family="sans-serif" fill="#222">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
    ]
    for i, t in enumerate(title_lines):
        head.append(text(WIDTH / 2, 20 + 17 * i, t, size=14 - i,
                         extra=' font-weight="bold"' if i == 0 else ""))
    frame = (f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" '
             f'height="{BOTTOM - TOP}" fill="none" stroke="#333"/>')
    return "\n".join(head + body + [frame, "</svg>"]) + "\n"


# ---- charts --------------------------------------------------------------

def chart(series, title_lines, ylabel, value, bar=None):
    """One chart; value(row) gives the point, bar(row) the (min, max)."""
    modes = mode_order([m for m, s in series.items()
                        if any(value(r) is not None for r in s.values())])
    colour_of = colours(modes)
    values = [v for s in series.values() for r in s.values()
              for v in [value(r)] + list(bar(r) if bar else ())
              if v is not None]
    x = XAxis([n for s in series.values() for n in s])
    y = YAxis(values)
    body = draw_x_axis(x) + draw_y_axis(y, ylabel)
    for i, mode in enumerate(modes):
        shift = (i - (len(modes) - 1) / 2) * DODGE
        points = []
        for n in sorted(series[mode]):
            row = series[mode][n]
            v = value(row)
            if v is None:
                continue
            b = bar(row) if bar else None
            if b is not None and None in b:
                b = None
            span = (y(b[0]), y(b[1])) if b else None
            points.append((x(n) + shift, y(v), span))
        body += draw_series(points, colour_of[mode], bar is not None)
    note = ["Values of 0 cannot go", "on a log axis; they are",
            'drawn on the "0" row.'] if y.zero_row else []
    body += draw_legend(modes, colour_of, note)
    return svg(title_lines, body)


def launch_label(rows, launch):
    if launch == "plain":
        return "1 node"
    return f"{max(r['nodes'] for r in rows)} nodes (srun)"


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def group_charts(key, rows):
    """[(file name, svg text)] for one group."""
    workload, latency, launch = key
    series, repeats = by_mode(rows)
    if repeats:
        print(f"plot.py: {workload} {latency} us {launch}: {repeats} repeated "
              f"(mode, N) rows, kept the first of each", file=sys.stderr)
    base = f"startup-{safe(workload)}-{latency}us-{launch}"
    title = (f"{workload} start-up, slowfs {latency} us, "
             f"{launch_label(rows, launch)}")
    wall = chart(series, [title], "wall time, s (median, min-max)",
                 lambda r: r["median"], lambda r: (r["min"], r["max"]))
    requests = chart(series, [title, "shared-file-system requests per node"],
                     "requests per node", lambda r: r["requests"])
    return [(base + "-wall.svg", wall), (base + "-requests.svg", requests)]


def main(argv):
    if len(argv) != 3:
        print("usage: plot.py CSV OUTDIR", file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    try:
        rows = read_rows(path)
    except (InputError, OSError, csv.Error) as e:
        print(f"plot.py: {e}", file=sys.stderr)
        return 1
    found = groups(rows)
    if found:
        os.makedirs(outdir, exist_ok=True)
    order = {"plain": 0, "srun": 1}
    for key in sorted(found, key=lambda k: (k[0], k[1], order[k[2]])):
        for name, content in group_charts(key, found[key]):
            out = os.path.join(outdir, name)
            with open(out, "w", encoding="utf-8", newline="\n") as f:
                f.write(content)
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
