//! `fmcache estimate`: project start-up at scale from measured request
//! counts and a stated metadata-server rate.
//!
//! Model (stated in the output too): one metadata server serialises every
//! request. Either mode ≈ (nodes × requests per node + ranks × requests per
//! rank) / rate + the cache fetch + the local floor. Two bounds, from the
//! lab's two slowfs modes: the upper (TTL 0: no client cache, every probe
//! of every rank is a request, so native is all per rank) and the lower
//! (a client cache per node: the node's first process pays, the rest hit
//! the node's kernel). The fetch of fmcache's cache is either lazy (every
//! node reads it from the shared file system: nodes × bytes / aggregate
//! bandwidth) or a tree broadcast (one read, then store-and-forward down a
//! tree of the stated fan-out over links of the stated bandwidth). It
//! ignores network latency per request and contention on the data path
//! beyond that: a first-order, queueing-only model.

use std::ffi::OsString;
use std::process::ExitCode;

use serde_json::json;

/// Default metadata-server rate, requests per second.
pub const DEFAULT_MDS_RATE: f64 = 15_000.0;
pub const RATE_SOURCE: &str =
    "Dell, \"Dell Storage for HPC with Intel Enterprise Edition for Lustre \
software\" white paper (Lustre 2.5, one MDS, mdtest 1.9.3): file create about 15K ops/s at 240 \
threads, file stat more than 400K ops/s. Default: the create-class rate, since an open on Lustre \
takes an MDS intent lock like a create; use --mds-rate 400000 for the stat-only best case";
/// Default aggregate read bandwidth of the shared file system, bytes/s.
pub const DEFAULT_BANDWIDTH: f64 = 10e9;
/// The published Lustre stat-class rate (same source): a fitted rate above
/// it is not credible for one metadata server.
pub const STAT_RATE: f64 = 400_000.0;
/// Tree broadcast: children per node (an assumption; Slurm's and MPI's
/// trees are of this order).
pub const DEFAULT_FANOUT: f64 = 8.0;
/// Tree broadcast: bandwidth of one node's network link, bytes/s (an
/// assumption: 40 Gb/s effective of a 100 Gb/s HPC link).
pub const DEFAULT_LINK_BANDWIDTH: f64 = 5e9;
/// The target for fmcache at 24,000 ranks with a tree broadcast.
pub const TARGET_S: f64 = 10.0;

/// The published cases: (name, ranks, nodes, measured native seconds).
pub const CASES: [(&str, f64, f64, f64); 2] = [
    (
        "ARCHER (24,000 ranks, 1,000 nodes; 45 min native)",
        24_000.0,
        1_000.0,
        2_700.0,
    ),
    (
        "Edison, python-mpi-bcast (1,024 ranks, 43 nodes; 40 s native)",
        1_024.0,
        43.0,
        40.0,
    ),
];

/// Project start-up at scale (24,000 ranks on 1,000 nodes; 1,024 on 43)
///
/// Inputs: requests per process natively and per node under fmcache,
/// either from bench/results/startup.csv (--csv) or given directly.
#[derive(clap::Args)]
pub struct Args {
    /// startup.csv from the benchmark suite.
    #[arg(long, value_name = "FILE")]
    csv: Option<OsString>,
    /// Workload whose rows to use from the CSV.
    #[arg(long, default_value = "W2")]
    workload: String,
    /// Native shared-file-system requests per process (overrides the CSV).
    #[arg(long, value_name = "N")]
    requests_per_process: Option<f64>,
    /// fmcache shared requests per node, the fixed part (overrides the CSV).
    #[arg(long, value_name = "M")]
    fmcache_requests_per_node: Option<f64>,
    /// fmcache shared requests per rank (overrides the CSV).
    #[arg(long, value_name = "K")]
    fmcache_requests_per_rank: Option<f64>,
    /// Bytes each node reads from the shared file system to stage (overrides the CSV).
    #[arg(long, value_name = "BYTES")]
    bytes_per_node: Option<f64>,
    /// Local start-up floor in seconds (overrides the CSV's tmpfs-floor wall).
    #[arg(long, value_name = "S")]
    floor_s: Option<f64>,
    /// Metadata-server rate, requests per second.
    #[arg(long, value_name = "OPS_PER_S", default_value_t = DEFAULT_MDS_RATE)]
    mds_rate: f64,
    /// Aggregate shared read bandwidth, bytes per second (an assumption).
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = DEFAULT_BANDWIDTH)]
    bandwidth: f64,
    /// Tree broadcast of the cache: children per node (an assumption).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_FANOUT)]
    fanout: f64,
    /// Tree broadcast of the cache: one node link's bandwidth, bytes per
    /// second (an assumption).
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = DEFAULT_LINK_BANDWIDTH)]
    link_bandwidth: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The measured inputs of one bound (one slowfs mode).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Native requests per node, the part paid once per node (0 without a
    /// client cache).
    pub native_requests_per_node: f64,
    /// Native requests per process beyond that.
    pub requests_per_process: f64,
    pub fmcache_requests_per_node: f64,
    pub fmcache_requests_per_rank: f64,
    pub bytes_per_node: f64,
    pub floor_s: f64,
}

const COLUMNS: [&str; 13] = [
    "workload",
    "mode",
    "procs",
    "nodes",
    "latency_us",
    "wall_s_median",
    "wall_s_min",
    "wall_s_max",
    "runs",
    "mds_requests",
    "mds_requests_per_node",
    "bytes_from_shared",
    "node_mem_mib",
];

/// Reads the inputs for `workload` and slowfs mode `fs_mode` ("ttl0" or
/// "client"; a CSV without the fs_mode column is all ttl0) from
/// startup.csv: native requests per process at the largest N under TTL 0
/// (all per rank); with a client cache, native requests split like
/// fmcache's below; fmcache's requests per node split into a
/// fixed and a per-rank part by a line through the two largest N of the
/// rows with the most nodes (all fixed with only one such row), and staged
/// bytes per node from one process on one node (else at the largest N); the tmpfs-floor median wall at the
/// smallest N (at scale each rank has a core of its own; the lab's larger N
/// share 2 cores).
pub fn from_csv(text: &str, workload: &str, fs_mode: &str) -> Result<Inputs, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<&str> = lines
        .next()
        .ok_or("empty CSV")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .ok_or(format!("CSV lacks column {name}"))
    };
    for c in COLUMNS {
        col(c)?;
    }
    let (w, m, p, nodes) = (col("workload")?, col("mode")?, col("procs")?, col("nodes")?);
    let (wall, req, rpn, bytes) = (
        col("wall_s_median")?,
        col("mds_requests")?,
        col("mds_requests_per_node")?,
        col("bytes_from_shared")?,
    );
    let fs_col = head.iter().position(|h| *h == "fs_mode");
    // mode -> (procs, row) of the largest N.
    let mut best: std::collections::HashMap<String, (f64, Vec<f64>)> = Default::default();
    // fmcache and native rows: (nodes, procs, requests per node, bytes).
    let mut fm_rows: Vec<[f64; 4]> = Vec::new();
    let mut native_rows: Vec<[f64; 4]> = Vec::new();
    // (procs, wall) of the tmpfs-floor row with the smallest N.
    let mut floor_smallest_n: Option<(f64, f64)> = None;
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != head.len() {
            return Err(format!(
                "CSV line {}: {} fields, header has {}",
                i + 2,
                f.len(),
                head.len()
            ));
        }
        if f[w] != workload || fs_col.map_or("ttl0", |k| f[k]) != fs_mode {
            continue;
        }
        let num = |k: usize| -> Result<f64, String> {
            f[k].parse::<f64>().map_err(|_| {
                format!(
                    "CSV line {}: {} is not a number: {:?}",
                    i + 2,
                    head[k],
                    f[k]
                )
            })
        };
        let procs = num(p)?;
        let row = vec![num(nodes)?, num(wall)?, num(req)?, num(rpn)?, num(bytes)?];
        match f[m] {
            "fmcache" => fm_rows.push([row[0], procs, row[3], row[4]]),
            "native" => native_rows.push([row[0], procs, row[3], row[4]]),
            _ => {}
        }
        if f[m] == "tmpfs-floor" && floor_smallest_n.is_none_or(|(n, _)| procs < n) {
            floor_smallest_n = Some((procs, row[1]));
        }
        let e = best.entry(f[m].to_string()).or_insert((-1.0, Vec::new()));
        if procs > e.0 {
            *e = (procs, row);
        }
    }
    let in_mode = if fs_mode == "ttl0" {
        String::new()
    } else {
        format!(" in slowfs mode {fs_mode}")
    };
    let get = |mode: &str| {
        best.get(mode).ok_or(format!(
            "CSV has no {mode} row for workload {workload}{in_mode}"
        ))
    };
    let (np, native) = get("native")?;
    get("fmcache")?;
    let floor = floor_smallest_n.ok_or(format!(
        "CSV has no tmpfs-floor row for workload {workload}{in_mode}"
    ))?;
    // Without a client cache every rank pays alike; with one, the node's
    // first process pays most and the rest little.
    let (native_per_node, native_per_rank) = if fs_mode == "ttl0" {
        (0.0, native[2] / np)
    } else {
        let (n, r, _) = split_per_node(&native_rows);
        (n, r)
    };
    let (per_node, per_rank, mut bytes_per_node) = split_per_node(&fm_rows);
    // One process on one node reads exactly one fetch's bytes; rows with
    // more share pages between the simulated nodes or re-read, so prefer it.
    if let Some(r) = fm_rows
        .iter()
        .filter(|r| r[0] == 1.0)
        .min_by(|a, b| a[1].total_cmp(&b[1]))
    {
        bytes_per_node = r[3];
    }
    Ok(Inputs {
        native_requests_per_node: native_per_node,
        requests_per_process: native_per_rank,
        fmcache_requests_per_node: per_node,
        fmcache_requests_per_rank: per_rank,
        bytes_per_node,
        floor_s: floor.1,
    })
}

/// (fixed requests per node, requests per rank, bytes per node) from the
/// rows of one mode with the most nodes: requests per node = fixed + per rank ×
/// ranks per node, through the two largest N; both parts at least 0.
fn split_per_node(rows: &[[f64; 4]]) -> (f64, f64, f64) {
    let most = rows.iter().map(|r| r[0]).fold(0.0, f64::max);
    let mut g: Vec<&[f64; 4]> = rows.iter().filter(|r| r[0] == most).collect();
    g.sort_by(|a, b| a[1].total_cmp(&b[1]));
    let Some(hi) = g.last() else {
        return (0.0, 0.0, 0.0);
    };
    let bytes = hi[3] / hi[0].max(1.0);
    let ppn = |r: &[f64; 4]| r[1] / r[0].max(1.0);
    match g.len().checked_sub(2).map(|i| g[i]) {
        Some(lo) if ppn(hi) > ppn(lo) => {
            let per_rank = ((hi[2] - lo[2]) / (ppn(hi) - ppn(lo))).max(0.0);
            ((hi[2] - per_rank * ppn(hi)).max(0.0), per_rank, bytes)
        }
        _ => (hi[2], 0.0, bytes),
    }
}

/// How each node gets fmcache's cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fetch {
    /// Every node reads it from the shared file system when its first
    /// process starts: `shared_bw` is the aggregate they share.
    Lazy { shared_bw: f64 },
    /// One node reads it, then each node forwards the whole cache to
    /// `fanout` children, one after another, over its link (store and
    /// forward, no pipelining: an upper bound for sbcast or MPI_Bcast).
    Tree {
        shared_bw: f64,
        fanout: f64,
        link_bw: f64,
    },
}

impl Fetch {
    pub fn seconds(&self, nodes: f64, bytes: f64) -> f64 {
        match *self {
            Fetch::Lazy { shared_bw } => nodes * bytes / shared_bw,
            Fetch::Tree {
                shared_bw,
                fanout,
                link_bw,
            } => {
                bytes / shared_bw.min(link_bw)
                    + tree_levels(nodes, fanout) * fanout * bytes / link_bw
            }
        }
    }
}

/// Levels below the root of a tree with `fanout` children per node that
/// reaches `nodes` nodes.
pub fn tree_levels(nodes: f64, fanout: f64) -> f64 {
    let fanout = fanout.max(1.0);
    let (mut reached, mut width, mut levels) = (1.0, 1.0, 0.0);
    while reached < nodes {
        width *= fanout;
        reached += width;
        levels += 1.0;
        if fanout == 1.0 && levels >= nodes {
            break;
        }
    }
    levels
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection {
    pub native_s: f64,
    pub fmcache_s: f64,
    /// Rate at which the native projection equals the measurement.
    pub fitted_rate: f64,
}

/// The projection with a lazy fetch (every node reads the cache).
pub fn project(
    i: &Inputs,
    ranks: f64,
    nodes: f64,
    measured: f64,
    rate: f64,
    bw: f64,
) -> Projection {
    project_with(
        i,
        ranks,
        nodes,
        measured,
        rate,
        Fetch::Lazy { shared_bw: bw },
    )
}

pub fn project_with(
    i: &Inputs,
    ranks: f64,
    nodes: f64,
    measured: f64,
    rate: f64,
    fetch: Fetch,
) -> Projection {
    let native_requests = nodes * i.native_requests_per_node + ranks * i.requests_per_process;
    let native_s = native_requests / rate + i.floor_s;
    let fmcache_s = (nodes * i.fmcache_requests_per_node + ranks * i.fmcache_requests_per_rank)
        / rate
        + fetch.seconds(nodes, i.bytes_per_node)
        + i.floor_s;
    let queue = measured - i.floor_s;
    Projection {
        native_s,
        fmcache_s,
        fitted_rate: if queue > 0.0 {
            native_requests / queue
        } else {
            f64::INFINITY
        },
    }
}

/// One bound for one case: native, fmcache with each fetch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub native_s: f64,
    pub fitted_rate: f64,
    pub fmcache_lazy_s: f64,
    pub fmcache_tree_s: f64,
}

pub fn bound(
    i: &Inputs,
    ranks: f64,
    nodes: f64,
    measured: f64,
    rate: f64,
    lazy: Fetch,
    tree: Fetch,
) -> Bound {
    let l = project_with(i, ranks, nodes, measured, rate, lazy);
    let t = project_with(i, ranks, nodes, measured, rate, tree);
    Bound {
        native_s: l.native_s,
        fitted_rate: l.fitted_rate,
        fmcache_lazy_s: l.fmcache_s,
        fmcache_tree_s: t.fmcache_s,
    }
}

/// Which bound fits a measurement: the one whose native projection at the
/// stated rate is nearer to it (by ratio, either way).
pub fn fitting(upper: &Bound, lower: Option<&Bound>, measured: f64) -> &'static str {
    let off = |b: &Bound| (b.native_s / measured).ln().abs();
    match lower {
        Some(l) if off(l) < off(upper) => "lower (client cache)",
        _ => "upper (TTL 0)",
    }
}

/// Whether a fitted rate is one a single metadata server has been measured
/// to reach (the published create-class to stat-class rates).
pub fn credible(rate: f64) -> bool {
    (DEFAULT_MDS_RATE..=STAT_RATE).contains(&rate)
}

/// Whether the CSV has any row of `workload` in slowfs mode `fs_mode`.
fn has_rows(text: &str, workload: &str, fs_mode: &str) -> bool {
    let mut lines = text.lines();
    let head: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let (Some(w), fs) = (
        head.iter().position(|h| *h == "workload"),
        head.iter().position(|h| *h == "fs_mode"),
    ) else {
        return false;
    };
    lines.any(|l| {
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        f.get(w) == Some(&workload) && fs.map_or(Some(&"ttl0"), |k| f.get(k)) == Some(&fs_mode)
    })
}

fn inputs_json(i: &Inputs) -> serde_json::Value {
    json!({"native_requests_per_node": i.native_requests_per_node,
        "requests_per_process": i.requests_per_process,
        "fmcache_requests_per_node": i.fmcache_requests_per_node,
        "fmcache_requests_per_rank": i.fmcache_requests_per_rank,
        "bytes_per_node": i.bytes_per_node, "floor_s": i.floor_s})
}

fn bound_json(b: &Bound) -> serde_json::Value {
    json!({"native_s": b.native_s, "fitted_rate": b.fitted_rate,
        "fitted_rate_credible": credible(b.fitted_rate),
        "fmcache_lazy_s": b.fmcache_lazy_s, "fmcache_tree_s": b.fmcache_tree_s})
}

pub fn main(a: Args) -> Result<ExitCode, String> {
    let text = match &a.csv {
        Some(p) => {
            Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.to_string_lossy()))?)
        }
        None => None,
    };
    let at = |e: String| match &a.csv {
        Some(p) => format!("{}: {e}", p.to_string_lossy()),
        None => e,
    };
    let mut i = match &text {
        Some(t) => from_csv(t, &a.workload, "ttl0").map_err(at)?,
        None => Inputs::default(),
    };
    // The lower bound needs the lab's client-cache rows.
    let mut lower = match &text {
        Some(t) if has_rows(t, &a.workload, "client") => {
            Some(from_csv(t, &a.workload, "client").map_err(at)?)
        }
        _ => None,
    };
    let src = if a.csv.is_some() {
        "csv"
    } else {
        "command line"
    };
    if let Some(v) = a.requests_per_process {
        i.requests_per_process = v;
    }
    if let Some(v) = a.fmcache_requests_per_node {
        i.fmcache_requests_per_node = v;
    }
    if let Some(v) = a.fmcache_requests_per_rank {
        i.fmcache_requests_per_rank = v;
    }
    // Bytes and the floor do not depend on the client cache: both bounds.
    for b in std::iter::once(&mut i).chain(lower.as_mut()) {
        if let Some(v) = a.bytes_per_node {
            b.bytes_per_node = v;
        }
        if let Some(v) = a.floor_s {
            b.floor_s = v;
        }
    }
    if a.csv.is_none() && a.requests_per_process.is_none() {
        return Err("give --csv or --requests-per-process".into());
    }
    if !(a.mds_rate > 0.0 && a.bandwidth > 0.0 && a.link_bandwidth > 0.0 && a.fanout >= 1.0) {
        return Err(
            "--mds-rate, --bandwidth and --link-bandwidth must be positive, --fanout at least 1"
                .into(),
        );
    }
    let lazy = Fetch::Lazy {
        shared_bw: a.bandwidth,
    };
    let tree = Fetch::Tree {
        shared_bw: a.bandwidth,
        fanout: a.fanout,
        link_bw: a.link_bandwidth,
    };
    struct Case {
        name: &'static str,
        ranks: f64,
        nodes: f64,
        measured: f64,
        upper: Bound,
        lower: Option<Bound>,
    }
    let rows: Vec<Case> = CASES
        .iter()
        .map(|&(name, ranks, nodes, measured)| Case {
            name,
            ranks,
            nodes,
            measured,
            upper: bound(&i, ranks, nodes, measured, a.mds_rate, lazy, tree),
            lower: lower
                .as_ref()
                .map(|l| bound(l, ranks, nodes, measured, a.mds_rate, lazy, tree)),
        })
        .collect();
    // The target is for the large case, under every bound there is.
    let large = &rows[0];
    let target_met = std::iter::once(&large.upper)
        .chain(large.lower.as_ref())
        .all(|b| b.fmcache_tree_s <= TARGET_S);
    if a.json {
        let cases: Vec<_> = rows
            .iter()
            .map(|c| {
                let u = &c.upper;
                json!({"case": c.name, "ranks": c.ranks, "nodes": c.nodes, "measured_native_s": c.measured,
                       "native_s": u.native_s, "native_over_measured": u.native_s / c.measured,
                       "fmcache_s": u.fmcache_lazy_s, "fitted_rate": u.fitted_rate,
                       "upper": bound_json(u), "lower": c.lower.as_ref().map(bound_json),
                       "fits": fitting(u, c.lower.as_ref(), c.measured)})
            })
            .collect();
        let mut inputs = inputs_json(&i);
        inputs["source"] = src.into();
        inputs["mds_rate"] = a.mds_rate.into();
        inputs["bandwidth"] = a.bandwidth.into();
        println!(
            "{}",
            json!({"inputs": inputs, "lower_inputs": lower.as_ref().map(inputs_json),
                "assumptions": {"mds_rate": a.mds_rate, "bandwidth": a.bandwidth,
                    "fanout": a.fanout, "link_bandwidth": a.link_bandwidth},
                "target_s": TARGET_S, "target_met": target_met,
                "cases": cases})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("Model: one metadata server serialises every request (queueing only; no per-request");
    println!("       network latency, no data-path contention beyond the fetch below).");
    println!("  native  = (nodes x native_per_node + ranks x per_process) / rate + floor");
    println!("  fmcache = (nodes x requests_per_node + ranks x requests_per_rank) / rate + fetch + floor");
    println!(
        "  fetch, lazy: nodes x bytes_per_node / bandwidth (every node reads the shared copy)"
    );
    println!("  fetch, tree: bytes_per_node / min(bandwidth, link) + levels x fanout x bytes_per_node / link");
    println!("               (one read, then store-and-forward down the tree; levels for the case's nodes)");
    println!(
        "Bounds: upper = slowfs TTL 0 (no client cache: every probe of every rank is a request);"
    );
    println!("        lower = slowfs with a client cache per node (entries, attributes, failed lookups).");
    let show = |what: &str, i: &Inputs| {
        println!("Inputs, {what} ({src}): native {:.1} per node + {:.1} per process; fmcache {:.1} per node + {:.2} per rank; bytes_per_node {:.0}; floor {:.3} s",
            i.native_requests_per_node, i.requests_per_process, i.fmcache_requests_per_node,
            i.fmcache_requests_per_rank, i.bytes_per_node, i.floor_s);
    };
    show("upper bound", &i);
    match &lower {
        Some(l) => show("lower bound", l),
        None => println!(
            "Inputs, lower bound: none (no client-cache rows for {}; bench/run --fs-modes client)",
            a.workload
        ),
    }
    println!("Rate: {:.0} requests/s; source: {RATE_SOURCE}.", a.mds_rate);
    println!(
        "Bandwidth: {:.1} GB/s aggregate shared read (an assumption, not a measurement).",
        a.bandwidth / 1e9
    );
    println!(
        "Tree broadcast: fan-out {} children per node, {:.1} GB/s per node link (assumptions).",
        a.fanout,
        a.link_bandwidth / 1e9
    );
    println!();
    println!(
        "{:<64} {:<6} {:>10} {:>10} {:>7} {:>13} {:>11} {:>11}",
        "case",
        "bound",
        "measured s",
        "native s",
        "ratio",
        "fitted rate/s",
        "fmcache s",
        "fmcache s"
    );
    println!(
        "{:<64} {:<6} {:>10} {:>10} {:>7} {:>13} {:>11} {:>11}",
        "", "", "", "", "", "", "lazy", "tree"
    );
    for c in &rows {
        for (tag, b) in
            std::iter::once(("upper", &c.upper)).chain(c.lower.as_ref().map(|l| ("lower", l)))
        {
            println!(
                "{:<64} {:<6} {:>10.1} {:>10.1} {:>7.2} {:>12.0}{} {:>11.2} {:>11.2}",
                c.name,
                tag,
                c.measured,
                b.native_s,
                b.native_s / c.measured,
                b.fitted_rate,
                if credible(b.fitted_rate) { " " } else { "*" },
                b.fmcache_lazy_s,
                b.fmcache_tree_s
            );
        }
    }
    println!();
    println!(
        "ratio = native projection / measured native time; fitted rate = the rate at which the"
    );
    println!(
        "native projection equals the measurement (* outside the published {:.0}-{:.0}/s of one server).",
        DEFAULT_MDS_RATE, STAT_RATE
    );
    for c in &rows {
        let b = if fitting(&c.upper, c.lower.as_ref(), c.measured).starts_with("lower") {
            c.lower.as_ref().unwrap_or(&c.upper)
        } else {
            &c.upper
        };
        println!(
            "Fits {}: the {} bound, at {:.0} requests/s{}.",
            c.name.split([' ', ',']).next().unwrap_or(c.name),
            fitting(&c.upper, c.lower.as_ref(), c.measured),
            b.fitted_rate,
            if credible(b.fitted_rate) {
                ""
            } else {
                " (beyond what one server was measured to do)"
            }
        );
    }
    for c in &rows {
        if let Some(l) = &c.lower {
            if l.native_s < c.measured && c.measured < c.upper.native_s {
                println!(
                    "{} lies between the bounds at {:.0} requests/s: its clients cached less than the lower bound assumes.",
                    c.name.split([' ', ',']).next().unwrap_or(c.name),
                    a.mds_rate
                );
            }
        }
    }
    println!(
        "Target: fmcache at most {TARGET_S:.0} s for {} with a tree broadcast, under {}: {}.",
        large.name.split(" (").next().unwrap_or(large.name),
        if large.lower.is_some() {
            "both bounds"
        } else {
            "the upper bound (no lower one)"
        },
        if target_met { "PASS" } else { "FAIL" }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_levels_count_the_levels_below_the_root() {
        assert_eq!(tree_levels(1.0, 8.0), 0.0);
        assert_eq!(tree_levels(9.0, 8.0), 1.0);
        assert_eq!(tree_levels(10.0, 8.0), 2.0);
        // 1 + 8 + 64 + 512 = 585 < 1000.
        assert_eq!(tree_levels(1000.0, 8.0), 4.0);
        assert_eq!(tree_levels(1000.0, 2.0), 9.0);
        // A chain.
        assert_eq!(tree_levels(5.0, 1.0), 4.0);
    }

    #[test]
    fn the_fitting_bound_is_the_nearer_by_ratio() {
        let b = |native_s| Bound {
            native_s,
            fitted_rate: 0.0,
            fmcache_lazy_s: 0.0,
            fmcache_tree_s: 0.0,
        };
        // 2x over against 3x under: the upper.
        assert_eq!(fitting(&b(200.0), Some(&b(33.0)), 100.0), "upper (TTL 0)");
        assert_eq!(
            fitting(&b(400.0), Some(&b(60.0)), 100.0),
            "lower (client cache)"
        );
        assert_eq!(fitting(&b(400.0), None, 100.0), "upper (TTL 0)");
        assert!(credible(15_000.0) && credible(400_000.0) && !credible(418_000.0));
    }
}
