//! `fmcache estimate`: project start-up at scale from measured request
//! counts and a stated metadata-server rate.
//!
//! Model (stated in the output too): one metadata server serialises every
//! request. Native start-up ≈ ranks × requests per rank / rate + the local
//! floor; fmcache ≈ (nodes × requests per node + ranks × requests per
//! rank) / rate + nodes × staged bytes per node / shared bandwidth + the
//! local floor, where the per-node part is the cache fetch and the per-rank
//! part what each process still asks the shared file system (the kernel's
//! exec of a program that lives there). It ignores client
//! caching, network latency per request and contention on the data path:
//! a first-order, queueing-only model.

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
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Inputs {
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

/// Reads the inputs for `workload` from startup.csv: native requests per
/// process at the largest N; fmcache's requests per node split into a
/// fixed and a per-rank part by a line through the two largest N of the
/// rows with the most nodes (all fixed with only one such row), and staged
/// bytes per node from one process on one node (else at the largest N); the tmpfs-floor median wall at the
/// smallest N (at scale each rank has a core of its own; the lab's larger N
/// share 2 cores).
pub fn from_csv(text: &str, workload: &str) -> Result<Inputs, String> {
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
    // mode -> (procs, row) of the largest N.
    let mut best: std::collections::HashMap<String, (f64, Vec<f64>)> = Default::default();
    // fmcache rows: (nodes, procs, requests per node, bytes).
    let mut fm_rows: Vec<[f64; 4]> = Vec::new();
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
        if f[w] != workload {
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
        if f[m] == "fmcache" {
            fm_rows.push([row[0], procs, row[3], row[4]]);
        }
        if f[m] == "tmpfs-floor" && floor_smallest_n.is_none_or(|(n, _)| procs < n) {
            floor_smallest_n = Some((procs, row[1]));
        }
        let e = best.entry(f[m].to_string()).or_insert((-1.0, Vec::new()));
        if procs > e.0 {
            *e = (procs, row);
        }
    }
    let get = |mode: &str| {
        best.get(mode)
            .ok_or(format!("CSV has no {mode} row for workload {workload}"))
    };
    let (np, native) = get("native")?;
    get("fmcache")?;
    let floor = floor_smallest_n.ok_or(format!(
        "CSV has no tmpfs-floor row for workload {workload}"
    ))?;
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
        requests_per_process: native[2] / np,
        fmcache_requests_per_node: per_node,
        fmcache_requests_per_rank: per_rank,
        bytes_per_node,
        floor_s: floor.1,
    })
}

/// (fixed requests per node, requests per rank, bytes per node) from the
/// fmcache rows with the most nodes: requests per node = fixed + per rank ×
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

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection {
    pub native_s: f64,
    pub fmcache_s: f64,
    /// Rate at which the native projection equals the measurement.
    pub fitted_rate: f64,
}

pub fn project(
    i: &Inputs,
    ranks: f64,
    nodes: f64,
    measured: f64,
    rate: f64,
    bw: f64,
) -> Projection {
    let native_s = ranks * i.requests_per_process / rate + i.floor_s;
    let fmcache_s = (nodes * i.fmcache_requests_per_node + ranks * i.fmcache_requests_per_rank)
        / rate
        + nodes * i.bytes_per_node / bw
        + i.floor_s;
    let queue = measured - i.floor_s;
    Projection {
        native_s,
        fmcache_s,
        fitted_rate: if queue > 0.0 {
            ranks * i.requests_per_process / queue
        } else {
            f64::INFINITY
        },
    }
}

pub fn main(a: Args) -> Result<ExitCode, String> {
    let mut i = match &a.csv {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.to_string_lossy()))?;
            from_csv(&text, &a.workload).map_err(|e| format!("{}: {e}", p.to_string_lossy()))?
        }
        None => Inputs::default(),
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
    if let Some(v) = a.bytes_per_node {
        i.bytes_per_node = v;
    }
    if let Some(v) = a.floor_s {
        i.floor_s = v;
    }
    if a.csv.is_none() && a.requests_per_process.is_none() {
        return Err("give --csv or --requests-per-process".into());
    }
    if !(a.mds_rate > 0.0 && a.bandwidth > 0.0) {
        return Err("--mds-rate and --bandwidth must be positive".into());
    }
    let rows: Vec<_> = CASES
        .iter()
        .map(|&(name, r, n, m)| (name, r, n, m, project(&i, r, n, m, a.mds_rate, a.bandwidth)))
        .collect();
    if a.json {
        let cases: Vec<_> = rows
            .iter()
            .map(|(name, r, n, m, p)| {
                json!({"case": name, "ranks": r, "nodes": n, "measured_native_s": m,
                       "native_s": p.native_s, "native_over_measured": p.native_s / m,
                       "fmcache_s": p.fmcache_s, "fitted_rate": p.fitted_rate})
            })
            .collect();
        println!(
            "{}",
            json!({"inputs": {"source": src, "requests_per_process": i.requests_per_process,
                "fmcache_requests_per_node": i.fmcache_requests_per_node,
                "fmcache_requests_per_rank": i.fmcache_requests_per_rank,
                "bytes_per_node": i.bytes_per_node, "floor_s": i.floor_s,
                "mds_rate": a.mds_rate, "bandwidth": a.bandwidth},
                "cases": cases})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Model: one metadata server serialises every request (queueing only; no client caching,"
    );
    println!("       no per-request network latency, no data-path contention).");
    println!("  native  = ranks x requests_per_process / rate + floor");
    println!("  fmcache = (nodes x requests_per_node + ranks x requests_per_rank) / rate");
    println!("            + nodes x bytes_per_node / bandwidth + floor");
    println!("Inputs ({src}): requests_per_process {:.1}, fmcache requests_per_node {:.1} + {:.2} per rank, bytes_per_node {:.0}, floor {:.3} s",
        i.requests_per_process, i.fmcache_requests_per_node, i.fmcache_requests_per_rank, i.bytes_per_node, i.floor_s);
    println!("Rate: {:.0} requests/s; source: {RATE_SOURCE}.", a.mds_rate);
    println!(
        "Bandwidth: {:.1} GB/s aggregate shared read (an assumption, not a measurement).",
        a.bandwidth / 1e9
    );
    println!();
    println!(
        "{:<64} {:>12} {:>12} {:>9} {:>12} {:>16}",
        "case", "measured s", "native s", "ratio", "fmcache s", "fitted rate/s"
    );
    for (name, _, _, m, p) in &rows {
        println!(
            "{:<64} {:>12.1} {:>12.1} {:>9.2} {:>12.2} {:>16.0}",
            name,
            m,
            p.native_s,
            p.native_s / m,
            p.fmcache_s,
            p.fitted_rate
        );
    }
    println!();
    println!(
        "ratio = native projection / measured native time; fitted rate = the rate at which the"
    );
    println!("native projection equals the measurement.");
    Ok(ExitCode::SUCCESS)
}
