//! `fmcache report`: where start-up goes, on one self-contained HTML page
//! (inline CSS and SVG, no script run, no network) and a short summary on
//! the terminal. Everything on the page is computed from the cache (the
//! pilot's call counts are in its notes, see fmcache_core::merge::Calls),
//! the production statistics files and the `fmcache estimate` model.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::ExitCode;

use fmcache_core::merge::{calls_notes, Calls};
use fmcache_core::path;
use fmcache_format::{CacheView, Verify};
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::estimate::{self, Inputs, DEFAULT_BANDWIDTH, DEFAULT_MDS_RATE};
use crate::inspect::{self, Summary};
use crate::launch::{self, human_bytes, os, show};
use crate::stats::{self, Totals};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// Write an HTML report of a cache and its production runs
///
/// The pilot's probes per process and per directory, the lookups that
/// found nothing and their causes, what the stage costs by package, the
/// production runs' counters (--stats), a projection to 100,000 ranks and
/// advice computed from all of these. The page needs no network and runs
/// no script; a short summary goes to standard output.
#[derive(clap::Args)]
pub struct Args {
    /// Cache file [default: $FMCACHE_FILE, else ./fmcache.dat].
    #[arg(value_name = "CACHE")]
    file: Option<OsString>,
    /// Statistics files written by production runs (FMCACHE_STATS).
    #[arg(long = "stats", value_name = "FILE", num_args = 1..)]
    stats: Vec<OsString>,
    /// The HTML page to write.
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        default_value = "fmcache-report.html"
    )]
    output: OsString,
    /// How many directories the charts show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Ranks per node in the projection.
    #[arg(long, value_name = "N", default_value_t = 24.0)]
    ranks_per_node: f64,
    /// Metadata-server rate in the projection, requests per second.
    #[arg(long, value_name = "OPS_PER_S", default_value_t = DEFAULT_MDS_RATE)]
    mds_rate: f64,
    /// Aggregate shared read bandwidth in the projection, bytes per second.
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = DEFAULT_BANDWIDTH)]
    bandwidth: f64,
}

/// Subdirectories ld.so tries below every library search directory.
const LOADER_SUBDIRS: [&[u8]; 6] = [
    b"glibc-hwcaps",
    b"tls",
    b"x86_64",
    b"haswell",
    b"avx512_1",
    b"xeon_phi",
];

/// Extensions of files that are data rather than software.
const DATA_EXTENSIONS: [&str; 14] = [
    "csv", "tsv", "dat", "h5", "hdf5", "nc", "npy", "npz", "parquet", "pkl", "bin", "raw", "fits",
    "sqlite",
];

/// Why calls found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CauseKind {
    /// A directory on a search path that holds nothing.
    EmptyDir,
    /// Failed lookups of Python module names in an import path entry.
    ImportEntry,
    /// Failed lookups of library names in a library search directory.
    LibraryDir,
    /// ld.so's hwcaps, tls and platform subdirectories.
    LoaderSubdir,
    Other,
}

impl CauseKind {
    fn label(self) -> &'static str {
        match self {
            CauseKind::EmptyDir => "empty directories searched",
            CauseKind::ImportEntry => {
                "import path entry searched before the one that held the module"
            }
            CauseKind::LibraryDir => "library search directory without the library",
            CauseKind::LoaderSubdir => "ld.so hwcaps/tls subdirectories",
            CauseKind::Other => "other failed lookups",
        }
    }
}

/// One cause of calls that found nothing, per pilot process.
struct Cause {
    kind: CauseKind,
    dirs: Vec<String>,
    calls: f64,
    paths: u64,
}

/// What the page shows, computed once.
struct Report {
    cache: String,
    summary: Summary,
    calls: Calls,
    total_calls: u64,
    by_dir: Vec<(String, f64)>,
    failed_by_dir: Vec<(String, f64)>,
    failed_calls: f64,
    causes: Vec<Cause>,
    stage: Vec<(String, u64)>,
    data_files: Vec<String>,
    production: Option<Totals>,
    worst: Vec<(String, u64, u64, u64)>,
    inputs: Inputs,
    projection: Vec<(f64, f64, f64)>,
    advice: Vec<String>,
    /// Paths the cache holds only as directories walked through to the
    /// software (never served).
    walked: std::collections::BTreeSet<String>,
}

fn per_process(calls: &Calls, n: u64) -> f64 {
    n as f64 / calls.processes.max(1) as f64
}

fn top_n(m: HashMap<Vec<u8>, u64>, calls: &Calls, n: usize) -> Vec<(String, f64)> {
    let mut v: Vec<(Vec<u8>, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|(d, c)| (show(&d), per_process(calls, c)))
        .collect()
}

/// Whether a failed name is one ld.so or Python would look for.
fn is_library_name(name: &[u8]) -> bool {
    name.starts_with(b"lib") && name.windows(3).any(|w| w == b".so")
}

fn is_module_name(name: &[u8]) -> bool {
    let n = String::from_utf8_lossy(name);
    n.ends_with(".py")
        || n.ends_with(".pyc")
        || n.ends_with(".so")
        || n.ends_with(".pth")
        || n.contains("__init__")
        || !n.contains('.')
}

fn classify_failure(p: &[u8]) -> (CauseKind, Vec<u8>) {
    let dir = path::parent(p).unwrap_or(b"/").to_vec();
    // The library directory above a loader subdirectory is the cause.
    let mut d: &[u8] = &dir;
    while let Some(up) = path::parent(d) {
        if LOADER_SUBDIRS.contains(&path::file_name(d)) {
            return (CauseKind::LoaderSubdir, up.to_vec());
        }
        d = up;
    }
    let name = path::file_name(p);
    if LOADER_SUBDIRS.contains(&name) {
        return (CauseKind::LoaderSubdir, dir);
    }
    if is_library_name(name) {
        (CauseKind::LibraryDir, dir)
    } else if is_module_name(name) {
        (CauseKind::ImportEntry, dir)
    } else {
        (CauseKind::Other, dir)
    }
}

/// The package a staged file belongs to: the first name under
/// site-packages (or dist-packages), else under lib/pythonX.Y (the
/// standard library), else its directory.
fn package_of(p: &[u8]) -> String {
    let parts: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
    for (i, c) in parts.iter().enumerate() {
        if (*c == b"site-packages" || *c == b"dist-packages") && i + 2 < parts.len() {
            let name = String::from_utf8_lossy(parts[i + 1]);
            let name = name
                .split(['.', '-'])
                .next()
                .unwrap_or_default()
                .to_string();
            return format!("{} ({})", name, String::from_utf8_lossy(c));
        }
    }
    for (i, c) in parts.iter().enumerate() {
        if c.starts_with(b"python3") && i > 0 && parts[i - 1] == b"lib" && i + 1 < parts.len() {
            return format!(
                "Python standard library ({})",
                show(&parts[..=i].join(&b'/'))
            );
        }
    }
    show(path::parent(p).unwrap_or(b"/"))
}

fn on_env_path(var: &str, dir: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.split([':', ';']).any(|e| e.trim_end_matches('/') == dir))
}

fn compute(args: &Args, cache: String, view: &CacheView<'_>) -> Result<Report, String> {
    let summary = inspect::summarize(view, args.top);
    let calls = calls_notes(view.notes());
    let total_calls: u64 = calls.by_path.values().sum();

    let mut by_dir: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut failed_by_dir: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut failed_calls = 0u64;
    let mut cause_dirs: BTreeMap<(CauseKind, Vec<u8>), (u64, u64)> = BTreeMap::new();
    for (p, &n) in &calls.by_path {
        if let Some(d) = path::parent(p) {
            *by_dir.entry(d.to_vec()).or_default() += n;
        }
        let Some(e) = view.lookup(p) else { continue };
        match e.lstat() {
            Some(Err(_)) => {
                failed_calls += n;
                if let Some(d) = path::parent(p) {
                    *failed_by_dir.entry(d.to_vec()).or_default() += n;
                }
                let c = cause_dirs.entry(classify_failure(p)).or_default();
                c.0 += n;
                c.1 += 1;
            }
            Some(Ok(st)) if st.is_dir() => {
                let empty = e
                    .listing()
                    .is_some_and(|l| l.iter().all(|(name, _, _)| name == b"." || name == b".."));
                if empty {
                    let c = cause_dirs
                        .entry((CauseKind::EmptyDir, p.clone()))
                        .or_default();
                    c.0 += n;
                    c.1 += 1;
                }
            }
            _ => {}
        }
    }
    // Empty directories are one cause together (each is the same
    // mistake); the others one per directory.
    let mut causes: Vec<Cause> = Vec::new();
    let mut empty = Cause {
        kind: CauseKind::EmptyDir,
        dirs: Vec::new(),
        calls: 0.0,
        paths: 0,
    };
    for ((kind, dir), (n, paths)) in cause_dirs {
        if kind == CauseKind::EmptyDir {
            empty.dirs.push(show(&dir));
            empty.calls += per_process(&calls, n);
            empty.paths += paths;
        } else {
            causes.push(Cause {
                kind,
                dirs: vec![show(&dir)],
                calls: per_process(&calls, n),
                paths,
            });
        }
    }
    if !empty.dirs.is_empty() {
        causes.push(empty);
    }
    causes.sort_by(|a, b| b.calls.total_cmp(&a.calls).then(a.kind.cmp(&b.kind)));

    // Stage bytes by package, each blob once (a blob is known by its
    // offset).
    let mut first_path: HashMap<u64, (&[u8], u64)> = HashMap::new();
    let mut data_files = Vec::new();
    for e in view.entries() {
        if let Some(b) = e.blob() {
            first_path.entry(b.offset).or_insert((e.path(), b.size));
            let ext = String::from_utf8_lossy(path::file_name(e.path())).to_ascii_lowercase();
            if DATA_EXTENSIONS
                .iter()
                .any(|x| ext.rsplit('.').next() == Some(x) && ext.contains('.'))
            {
                data_files.push(show(e.path()));
            }
        }
    }
    let mut stage_map: BTreeMap<String, u64> = BTreeMap::new();
    for (p, size) in first_path.values() {
        *stage_map.entry(package_of(p)).or_default() += size;
    }
    let mut stage: Vec<(String, u64)> = stage_map.into_iter().collect();
    stage.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let (production, worst) = if args.stats.is_empty() {
        (None, Vec::new())
    } else {
        (
            Some(stats::collect(&args.stats)?),
            worst_processes(&args.stats),
        )
    };

    // The projection: the estimate model, fed from this cache.
    let inputs = Inputs {
        requests_per_process: per_process(&calls, total_calls),
        fmcache_requests_per_node: FETCH_REQUESTS,
        fmcache_requests_per_rank: 0.0,
        bytes_per_node: summary.file_size as f64,
        floor_s: 0.0,
        native_requests_per_node: 0.0,
    };
    let mut projection = Vec::new();
    for exp in 0..=10 {
        let ranks = 10f64.powf(exp as f64 / 2.0).round();
        let nodes = (ranks / args.ranks_per_node).ceil().max(1.0);
        let p = estimate::project(&inputs, ranks, nodes, 0.0, args.mds_rate, args.bandwidth);
        projection.push((ranks, p.native_s, p.fmcache_s));
    }

    let by_dir = top_n(by_dir, &calls, args.top);
    let failed_by_dir = top_n(failed_by_dir, &calls, args.top);
    let failed_calls = per_process(&calls, failed_calls);
    let mut r = Report {
        cache,
        summary,
        calls,
        total_calls,
        by_dir,
        failed_by_dir,
        failed_calls,
        causes,
        stage,
        data_files,
        production,
        worst,
        inputs,
        projection,
        advice: Vec::new(),
        walked: view
            .entries()
            .filter(|e| e.is_walk())
            .map(|e| show(e.path()))
            .collect(),
    };
    r.advice = advice(&r, args);
    Ok(r)
}

/// Requests one node makes to fetch the cache (open, fstat, read; the
/// model's assumption, printed under the plot).
const FETCH_REQUESTS: f64 = 3.0;

/// Processes with the most missed probes, from the statistics lines:
/// (exe, served, missed, passthrough).
fn worst_processes(files: &[OsString]) -> Vec<(String, u64, u64, u64)> {
    let mut v = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let Ok(l) = stats::parse_line(line) else {
                continue;
            };
            if l.auditor {
                continue;
            }
            let exe = line.split_once(" exe=").map_or("", |(_, e)| e).to_string();
            v.push((exe, l.served, l.missed, l.passthrough));
        }
    }
    v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    v.truncate(10);
    v
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn advice(r: &Report, args: &Args) -> Vec<String> {
    let mut a = Vec::new();
    let per_proc = per_process(&r.calls, r.total_calls);
    if let Some(empty) = r.causes.iter().find(|c| c.kind == CauseKind::EmptyDir) {
        let vars: Vec<&str> = ["PYTHONPATH", "LD_LIBRARY_PATH"]
            .into_iter()
            .filter(|v| empty.dirs.iter().any(|d| on_env_path(v, d)))
            .collect();
        let from = if vars.is_empty() {
            "the search paths that name them".to_string()
        } else {
            vars.join(" and ")
        };
        a.push(format!(
            "{} empty {} cost {} calls per process ({:.0}% of the pilot's {}): remove {} from {from}.",
            empty.dirs.len(),
            if empty.dirs.len() == 1 { "directory" } else { "directories" },
            thousands(empty.calls),
            100.0 * empty.calls / per_proc.max(1.0),
            thousands(per_proc),
            if empty.dirs.len() == 1 { "it" } else { "them" },
        ));
    }
    if let Some(c) = r
        .causes
        .iter()
        .find(|c| c.kind == CauseKind::ImportEntry && c.calls >= 10.0)
    {
        a.push(format!(
            "Python looked for {} module names in {} that it found elsewhere ({} calls per process): put that entry later on sys.path, or drop it if the job does not need it.",
            c.paths, c.dirs[0], thousands(c.calls)
        ));
    }
    if let Some(c) = r
        .causes
        .iter()
        .find(|c| c.kind == CauseKind::LibraryDir && c.calls >= 10.0)
    {
        a.push(format!(
            "ld.so looked for {} libraries in {} without finding them ({} calls per process): that directory comes too early in LD_LIBRARY_PATH or the RPATH.",
            c.paths, c.dirs[0], thousands(c.calls)
        ));
    }
    if !r.data_files.is_empty() {
        let shown: Vec<&str> = r.data_files.iter().take(5).map(String::as_str).collect();
        a.push(format!(
            "{} data files are cached and would be served as recorded ({}{}): if they change between runs, record with --exclude for their directory.",
            r.data_files.len(),
            shown.join(", "),
            if r.data_files.len() > 5 { ", ..." } else { "" }
        ));
    }
    for (group, n) in r.summary.left_out.iter().take(3) {
        a.push(format!(
            "{n} probed paths under {group} were left out as the user's data and pass through to the shared file system: if that is software, record with --include {group}."
        ));
    }
    if let Some((pkg, bytes)) = r.stage.first() {
        let total: u64 = r.stage.iter().map(|s| s.1).sum();
        if total > 0 && *bytes * 4 > total {
            a.push(format!(
                "{pkg} is {} of the {} each node stages ({:.0}%).",
                human_bytes(*bytes),
                human_bytes(total),
                100.0 * *bytes as f64 / total as f64
            ));
        }
    }
    if let Some(t) = &r.production {
        if t.missed > 0 {
            // Directories only walked through to the software always pass
            // through: re-recording does not change them.
            let first: Vec<&str> = t
                .missed_by_count()
                .iter()
                .filter(|(p, _)| !r.walked.contains(*p))
                .take(3)
                .map(|(p, _)| *p)
                .collect();
            let named = if first.is_empty() {
                String::new()
            } else {
                format!(" (most asked: {})", first.join(", "))
            };
            a.push(format!(
                "{} probes in production missed the cache{named}: inside the served software, not recorded by the pilot; re-record with `fmcache record --append -- <the production command>`.",
                thousands(t.missed as f64)
            ));
        }
        if !t.not_ended.is_empty() {
            a.push(format!(
                "{} processes wrote no statistics line (killed by a signal, or still running); their live counters are included.",
                t.not_ended.len()
            ));
        }
    }
    if let Some(&(ranks, native, fm)) = r.projection.iter().find(|p| p.1 > 60.0) {
        a.push(format!(
            "At {} ranks the model projects {:.0} s of metadata requests natively against {:.1} s with fmcache ({} requests/s, {} ranks per node).",
            thousands(ranks), native, fm, thousands(args.mds_rate), args.ranks_per_node
        ));
    }
    if r.calls.by_path.is_empty() {
        a.push("This cache holds no call counts (recorded by an older fmcache, or no process's merge wrote it): record again to see probes per process.".into());
    }
    a
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Keeps the end of a long path, where the names that tell directories
/// apart are.
fn short(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

/// A horizontal bar chart as an SVG string (plotters' SVG backend).
fn bar_chart(title: &str, unit: &str, rows: &[(String, f64)], color: RGBColor) -> String {
    let mut svg = String::new();
    let h = 60 + 26 * rows.len().max(1) as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (900, h)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = rows.iter().map(|r| r.1).fold(1.0, f64::max) * 1.15;
        let n = rows.len().max(1) as f64;
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(0)
            .build_cartesian_2d(0f64..max, 0f64..n);
        let Ok(mut chart) = chart else {
            return svg_fallback(title);
        };
        let _ = chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc(unit)
            .x_labels(6)
            .x_label_formatter(&|v| thousands(*v))
            .draw();
        let _ = chart.draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
            let y = n - i as f64;
            Rectangle::new([(0.0, y - 0.85), (*v, y - 0.15)], color.mix(0.55).filled())
        }));
        let _ = chart.draw_series(rows.iter().enumerate().map(|(i, (label, v))| {
            let y = n - i as f64;
            Text::new(
                format!("{}  {}", thousands(*v), short(label, 90)),
                (max * 0.005, y - 0.3),
                ("sans-serif", 12).into_font().color(&BLACK),
            )
        }));
        let _ = root.present();
    }
    svg
}

fn svg_fallback(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"40\"><text x=\"8\" y=\"24\">{}: nothing to draw</text></svg>",
        esc(title)
    )
}

/// Start-up against ranks, log-log, native against fmcache.
fn projection_chart(points: &[(f64, f64, f64)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let ymax = points.iter().map(|p| p.1.max(p.2)).fold(1e-3, f64::max) * 2.0;
        let ymin = points
            .iter()
            .map(|p| p.1.min(p.2))
            .filter(|v| *v > 0.0)
            .fold(ymax, f64::min)
            .max(1e-6)
            / 2.0;
        let chart = ChartBuilder::on(&root)
            .caption(
                "Projected metadata time at start-up against ranks",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1f64..100_000f64).log_scale(), (ymin..ymax).log_scale());
        let Ok(mut chart) = chart else {
            return svg_fallback("projection");
        };
        let _ = chart
            .configure_mesh()
            .x_desc("ranks")
            .y_desc("seconds")
            .x_label_formatter(&|v| thousands(*v))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw();
        let native = RGBColor(200, 60, 40);
        let fm = RGBColor(40, 110, 200);
        if let Ok(s) = chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1.max(ymin))),
            native.stroke_width(2),
        )) {
            s.label("native").legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], native.stroke_width(2))
            });
        }
        if let Ok(s) = chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.2.max(ymin))),
            fm.stroke_width(2),
        )) {
            s.label("fmcache").legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], fm.stroke_width(2))
            });
        }
        let _ = chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperLeft)
            .draw();
        let _ = root.present();
    }
    svg
}

fn data_json(r: &Report, args: &Args) -> Value {
    json!({
        "inspect": r.summary.to_json(&r.cache),
        "pilot": {
            "processes": r.calls.processes,
            "calls": r.total_calls,
            "calls_per_process": per_process(&r.calls, r.total_calls),
            "failed_calls_per_process": r.failed_calls,
            "paths": r.calls.by_path.len(),
        },
        "calls_by_dir": r.by_dir.iter().map(|(d, c)| json!({"dir": d, "calls_per_process": c})).collect::<Vec<_>>(),
        "failed_by_dir": r.failed_by_dir.iter().map(|(d, c)| json!({"dir": d, "calls_per_process": c})).collect::<Vec<_>>(),
        "causes": r.causes.iter().map(|c| json!({"cause": c.kind.label(), "dirs": c.dirs, "calls_per_process": c.calls, "paths": c.paths})).collect::<Vec<_>>(),
        "stage_bytes": r.stage.iter().map(|(p, b)| json!({"package": p, "bytes": b})).collect::<Vec<_>>(),
        "stats": r.production.as_ref().map(Totals::to_json),
        "projection": {
            "ranks_per_node": args.ranks_per_node,
            "mds_rate": args.mds_rate,
            "bandwidth": args.bandwidth,
            "fetch_requests_per_node": FETCH_REQUESTS,
            "requests_per_process": r.inputs.requests_per_process,
            "bytes_per_node": r.inputs.bytes_per_node,
            "points": r.projection.iter().map(|p| json!({"ranks": p.0, "native_s": p.1, "fmcache_s": p.2})).collect::<Vec<_>>(),
        },
        "advice": r.advice,
    })
}

const CSS: &str = "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.advice li{margin:.3em 0}\
.figures td{padding-right:2em}.note{color:#555;font-size:.9em}svg{display:block;margin:.5em 0}";

fn row(out: &mut String, id: &str, label: &str, value: &str) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td class=\"n\" id=\"{id}\">{}</td></tr>",
        esc(label),
        esc(value)
    );
}

fn html(r: &Report, args: &Args) -> String {
    let s = &r.summary;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>fmcache report: {}</title><style>{CSS}</style></head><body>\n",
        esc(&r.cache)
    );
    let _ = writeln!(o, "<h1>fmcache report: {}</h1>", esc(&r.cache));
    let _ = writeln!(o, "<h2>Advice</h2><ul class=\"advice\" id=\"advice\">");
    if r.advice.is_empty() {
        let _ = writeln!(o, "<li>Nothing to act on.</li>");
    }
    for a in &r.advice {
        let _ = writeln!(o, "<li>{}</li>", esc(a));
    }
    let _ = writeln!(o, "</ul>");

    let _ = writeln!(o, "<h2>The pilot</h2><table class=\"figures\">");
    row(
        &mut o,
        "pilot-processes",
        "processes counted",
        &r.calls.processes.to_string(),
    );
    row(
        &mut o,
        "pilot-calls",
        "calls on the served software, per process",
        &thousands(per_process(&r.calls, r.total_calls)),
    );
    row(
        &mut o,
        "pilot-failed",
        "of which failed lookups",
        &thousands(r.failed_calls),
    );
    row(
        &mut o,
        "entries",
        "entries in the cache",
        &s.entries.to_string(),
    );
    row(
        &mut o,
        "failed-lookups",
        "failed lookups recorded (paths)",
        &s.kinds.failed.to_string(),
    );
    row(
        &mut o,
        "content-bytes",
        "bytes of contents",
        &s.content_bytes.to_string(),
    );
    row(
        &mut o,
        "file-size",
        "cache file size",
        &format!("{} ({})", s.file_size, human_bytes(s.file_size)),
    );
    row(&mut o, "roots", "served roots", &s.roots.len().to_string());
    let _ = writeln!(o, "</table>");
    let _ = writeln!(
        o,
        "<p class=\"note\">Calls are counted over the processes whose merge wrote the cache; the pilot's duration is printed by <code>fmcache record</code>, not kept in the cache.</p>"
    );

    let _ = writeln!(
        o,
        "<h2>Where the probes go</h2><div id=\"plot-calls\">{}</div>",
        bar_chart(
            "Calls per process, by directory",
            "calls per process",
            &r.by_dir,
            RGBColor(40, 110, 200)
        )
    );
    let _ = writeln!(
        o,
        "<div id=\"plot-failed\">{}</div>",
        bar_chart(
            "Failed lookups per process, by directory",
            "failed lookups per process",
            &r.failed_by_dir,
            RGBColor(200, 60, 40)
        )
    );

    let _ = writeln!(o, "<h2>Calls that found nothing, by cause</h2><table id=\"causes\"><tr><th>cause</th><th>directories</th><th>calls per process</th><th>paths</th></tr>");
    for c in r.causes.iter().take(args.top.max(1)) {
        let dirs: Vec<String> = c.dirs.iter().map(|d| esc(d)).collect();
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(c.kind.label()),
            dirs.join("<br>"),
            thousands(c.calls),
            c.paths
        );
    }
    let _ = writeln!(o, "</table>");
    let cause_rows: Vec<(String, f64)> = r
        .causes
        .iter()
        .take(args.top.max(1))
        .map(|c| {
            let what = if c.dirs.len() == 1 {
                c.dirs[0].clone()
            } else {
                format!("{} directories", c.dirs.len())
            };
            (format!("{}: {what}", c.kind.label()), c.calls)
        })
        .collect();
    let _ = writeln!(
        o,
        "<div id=\"plot-causes\">{}</div>",
        bar_chart(
            "Calls that found nothing, by cause",
            "calls per process",
            &cause_rows,
            RGBColor(150, 90, 170)
        )
    );

    let _ = writeln!(o, "<h2>What the stage costs</h2>");
    let stage_rows: Vec<(String, f64)> = r
        .stage
        .iter()
        .take(args.top.max(1))
        .map(|(p, b)| (p.clone(), *b as f64 / (1 << 20) as f64))
        .collect();
    let _ = writeln!(
        o,
        "<div id=\"plot-stage\">{}</div>",
        bar_chart(
            "Staged contents by package",
            "MiB",
            &stage_rows,
            RGBColor(60, 150, 90)
        )
    );

    let _ = writeln!(o, "<h2>Production</h2>");
    match &r.production {
        None => {
            let _ = writeln!(o, "<p id=\"production\">No statistics files given (<code>--stats FILE</code>; production runs write them with <code>FMCACHE_STATS</code>).</p>");
        }
        Some(t) => {
            let _ = writeln!(o, "<table class=\"figures\" id=\"production\">");
            row(
                &mut o,
                "stats-processes",
                "processes",
                &t.processes.to_string(),
            );
            row(&mut o, "stats-served", "served", &t.served.to_string());
            row(&mut o, "stats-missed", "missed", &t.missed.to_string());
            row(
                &mut o,
                "stats-passthrough",
                "passed through",
                &t.passthrough.to_string(),
            );
            row(
                &mut o,
                "stats-fraction",
                "served fraction",
                &t.served_fraction()
                    .map_or("n/a".into(), |f| format!("{:.4}", f)),
            );
            let _ = writeln!(o, "</table>");
            let missed = t.missed_by_count();
            if !missed.is_empty() {
                let _ = writeln!(o, "<p>Paths production asked for that the cache does not hold (the first few per process):</p><table id=\"missed-paths\"><tr><th>path</th><th>processes</th><th>why</th></tr>");
                for (p, n) in missed.iter().take(args.top.max(1)) {
                    let why = if r.walked.contains(*p) {
                        "walked through to the software only: always passes through"
                    } else {
                        "not recorded by the pilot"
                    };
                    let _ = writeln!(
                        o,
                        "<tr><td>{}</td><td class=\"n\">{n}</td><td>{why}</td></tr>",
                        esc(p)
                    );
                }
                let _ = writeln!(o, "</table>");
            }
            if !r.worst.is_empty() {
                let _ = writeln!(o, "<table><tr><th>process</th><th>served</th><th>missed</th><th>passed through</th></tr>");
                for (exe, sv, m, p) in &r.worst {
                    let _ = writeln!(o, "<tr><td>{}</td><td class=\"n\">{sv}</td><td class=\"n\">{m}</td><td class=\"n\">{p}</td></tr>", esc(exe));
                }
                let _ = writeln!(o, "</table>");
            }
        }
    }

    let _ = writeln!(
        o,
        "<h2>At scale</h2><div id=\"plot-projection\">{}</div>",
        projection_chart(&r.projection)
    );
    let _ = writeln!(
        o,
        "<p class=\"note\" id=\"assumptions\">Model (as <code>fmcache estimate</code>): one metadata server serialises every request at {} requests/s; \
native = ranks × {} calls per process / rate; fmcache = nodes × {FETCH_REQUESTS} requests to fetch the cache / rate + nodes × {} / {} GB/s aggregate read; \
{} ranks per node. Local start-up time, client caching and network latency are left out: a first-order, queueing-only model.</p>",
        thousands(args.mds_rate),
        thousands(r.inputs.requests_per_process),
        human_bytes(r.inputs.bytes_per_node as u64),
        args.bandwidth / 1e9,
        args.ranks_per_node
    );
    let data = data_json(r, args).to_string().replace("</", "<\\/");
    let _ = writeln!(
        o,
        "<script type=\"application/json\" id=\"fmcache-data\">{data}</script>\n</body></html>"
    );
    o
}

fn print_summary(r: &Report, out: &str) {
    println!("report          {out}");
    println!(
        "pilot           {} processes, {} calls per process on the software ({} failed lookups)",
        r.calls.processes,
        thousands(per_process(&r.calls, r.total_calls)),
        thousands(r.failed_calls)
    );
    println!(
        "cache           {} entries, {} of contents",
        r.summary.entries,
        human_bytes(r.summary.content_bytes)
    );
    if let Some(c) = r.causes.first() {
        println!(
            "top cause       {}: {} calls per process ({})",
            c.kind.label(),
            thousands(c.calls),
            c.dirs.len()
        );
    }
    if let Some(t) = &r.production {
        println!(
            "production      {} processes, served {}, missed {}, passed through {}",
            t.processes, t.served, t.missed, t.passthrough
        );
    }
    for a in &r.advice {
        println!("advice          {a}");
    }
}

pub fn main(args: Args) -> Result<ExitCode, String> {
    let cfg = launch::config(args.file.as_deref())?;
    let name = show(&cfg.cache);
    let loaded = inspect::load(&cfg.cache).map_err(|e| format!("{name}: {e}"))?;
    let view = CacheView::open(loaded.bytes(), Verify::Full).map_err(|e| format!("{name}: {e}"))?;
    let r = compute(&args, name, &view)?;
    let page = html(&r, &args);
    // The page names what the cache holds: no more readable than the cache,
    // and never written through a symlink (someone else's, in /tmp).
    let mode = std::fs::metadata(os(&cfg.cache)).map_or(0o600, |m| m.permissions().mode() & 0o644);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&args.output)
        .and_then(|mut f| std::io::Write::write_all(&mut f, page.as_bytes()))
        .map_err(|e| {
            format!(
                "{}: {}",
                args.output.to_string_lossy(),
                launch::io_reason(&e)
            )
        })?;
    print_summary(&r, &args.output.to_string_lossy());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_was_looked_for() {
        assert_eq!(
            classify_failure(b"/opt/lib/glibc-hwcaps/x86-64-v3/libz.so.1"),
            (CauseKind::LoaderSubdir, b"/opt/lib".to_vec())
        );
        assert_eq!(
            classify_failure(b"/opt/lib/tls"),
            (CauseKind::LoaderSubdir, b"/opt/lib".to_vec())
        );
        assert_eq!(
            classify_failure(b"/opt/lib/libz.so.1"),
            (CauseKind::LibraryDir, b"/opt/lib".to_vec())
        );
        assert_eq!(
            classify_failure(b"/home/u/pp/numpy.cpython-311-x86_64-linux-gnu.so"),
            (CauseKind::ImportEntry, b"/home/u/pp".to_vec())
        );
        assert_eq!(
            classify_failure(b"/home/u/pp/numpy"),
            (CauseKind::ImportEntry, b"/home/u/pp".to_vec())
        );
        assert_eq!(classify_failure(b"/etc/x.conf").0, CauseKind::Other);
    }

    #[test]
    fn packages_are_named_from_the_path() {
        assert_eq!(
            package_of(b"/v/lib/python3.11/site-packages/numpy/core/_multiarray.so"),
            "numpy (site-packages)"
        );
        assert_eq!(
            package_of(b"/v/lib/python3.11/site-packages/scipy.libs/libopenblas.so"),
            "scipy (site-packages)"
        );
        assert_eq!(
            package_of(b"/p/lib/python3.11/os.py"),
            "Python standard library (/p/lib/python3.11)"
        );
        assert_eq!(
            package_of(b"/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu"
        );
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1290.0), "1,290");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(short("/a/b", 10), "/a/b");
        let s = short("/very/long/path/to/site-packages/numpy", 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.ends_with("numpy"));
    }
}
