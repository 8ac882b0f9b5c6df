//! `fmcache estimate`: CSV parsing, the model's arithmetic against a hand
//! computation, and errors on bad input.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fmcache");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/startup-sample.csv");

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .arg("estimate")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = run(args);
    assert!(ok, "estimate failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn reads_the_rows_of_the_workload() {
    let v = json(&["--csv", SAMPLE, "--json"]);
    let i = &v["inputs"];
    // native, 64 procs: 128000 / 64.
    close(i["requests_per_process"].as_f64().unwrap(), 2000.0);
    close(i["fmcache_requests_per_node"].as_f64().unwrap(), 2.0);
    close(i["bytes_per_node"].as_f64().unwrap(), 40e6);
    // tmpfs-floor at the smallest N, 1 proc.
    close(i["floor_s"].as_f64().unwrap(), 0.5);
}

#[test]
fn arithmetic_matches_a_hand_computation() {
    let v = json(&[
        "--requests-per-process",
        "1000",
        "--fmcache-requests-per-node",
        "3",
        "--bytes-per-node",
        "1e9",
        "--floor-s",
        "2",
        "--mds-rate",
        "10000",
        "--bandwidth",
        "1e10",
        "--json",
    ]);
    let archer = &v["cases"][0];
    // 24000 x 1000 / 10000 + 2 = 2402 s.
    close(archer["native_s"].as_f64().unwrap(), 2402.0);
    close(
        archer["native_over_measured"].as_f64().unwrap(),
        2402.0 / 2700.0,
    );
    // 1000 x 3 / 10000 + 1000 x 1e9 / 1e10 + 2 = 0.3 + 100 + 2.
    close(archer["fmcache_s"].as_f64().unwrap(), 102.3);
    // 24000 x 1000 / (2700 - 2).
    close(archer["fitted_rate"].as_f64().unwrap(), 24e6 / 2698.0);
    let edison = &v["cases"][1];
    // 1024 x 1000 / 10000 + 2; 43 x 3 / 10000 + 43 x 0.1 + 2.
    close(edison["native_s"].as_f64().unwrap(), 104.4);
    close(edison["fmcache_s"].as_f64().unwrap(), 0.0129 + 4.3 + 2.0);
}

#[test]
fn command_line_overrides_the_csv() {
    let v = json(&["--csv", SAMPLE, "--requests-per-process", "10", "--json"]);
    close(v["inputs"]["requests_per_process"].as_f64().unwrap(), 10.0);
    close(
        v["inputs"]["fmcache_requests_per_node"].as_f64().unwrap(),
        2.0,
    );
}

#[test]
fn text_output_states_model_rate_source_and_cases() {
    let (ok, out, err) = run(&["--csv", SAMPLE]);
    assert!(ok, "{err}");
    for needle in ["serialises", "Lustre 2.5", "ARCHER", "Edison", "assumption"] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn missing_column_is_an_error() {
    let dir = std::env::temp_dir().join(format!("fmcache-estimate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.csv");
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(
        &bad,
        text.replacen(",mds_requests_per_node", ",per_node", 1),
    )
    .unwrap();
    let (ok, _, err) = run(&["--csv", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("lacks column mds_requests_per_node"), "{err}");
    let (ok, _, err) = run(&["--csv", SAMPLE, "--workload", "W9"]);
    assert!(!ok);
    assert!(err.contains("no native row for workload W9"), "{err}");
    let (ok, _, err) = run(&[]);
    assert!(!ok);
    assert!(err.contains("--csv or --requests-per-process"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// fmcache rows over several nodes at two N: requests per node split into
/// the fixed fetch and a per-rank part, and projected with both.
#[test]
fn splits_fmcache_requests_into_per_node_and_per_rank() {
    let dir = std::env::temp_dir().join(format!("fmcache-estimate-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("startup.csv");
    let text = std::fs::read_to_string(SAMPLE).unwrap()
        // 4 nodes: 16 ranks -> 8 + 11 x 4 = 52 per node; 64 ranks -> 8 + 11 x 16 = 184.
        + "W2,fmcache,16,4,1000,1.0,1.0,1.0,3,208,52,640000000,60\n"
        + "W2,fmcache,64,4,1000,2.0,2.0,2.0,3,736,184,640000000,60\n";
    std::fs::write(&csv, text).unwrap();
    let v = json(&[
        "--csv",
        csv.to_str().unwrap(),
        "--mds-rate",
        "10000",
        "--bandwidth",
        "1e10",
        "--json",
    ]);
    let i = &v["inputs"];
    close(i["fmcache_requests_per_node"].as_f64().unwrap(), 8.0);
    close(i["fmcache_requests_per_rank"].as_f64().unwrap(), 11.0);
    // Bytes from the one-node row (one fetch, nothing shared between nodes).
    close(i["bytes_per_node"].as_f64().unwrap(), 40e6);
    // ARCHER: (1000 x 8 + 24000 x 11) / 10000 + 1000 x 40e6 / 1e10 + 0.5.
    close(
        v["cases"][0]["fmcache_s"].as_f64().unwrap(),
        27.2 + 4.0 + 0.5,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const MODES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/startup-sample-modes.csv"
);

/// A CSV with both slowfs modes: TTL 0 gives the upper bound (all per
/// rank), the client cache the lower (a fixed part per node plus a little
/// per rank, through the two N of the 4-node rows).
#[test]
fn reads_both_bounds_by_slowfs_mode() {
    let v = json(&["--csv", MODES, "--json"]);
    let up = &v["inputs"];
    // ttl0, 16 procs: 32000 / 16; nothing per node.
    close(up["requests_per_process"].as_f64().unwrap(), 2000.0);
    close(up["native_requests_per_node"].as_f64().unwrap(), 0.0);
    let lo = &v["lower_inputs"];
    // client: 600 per node at 1 rank per node, 900 at 4: 100 per rank, 500 fixed.
    close(lo["requests_per_process"].as_f64().unwrap(), 100.0);
    close(lo["native_requests_per_node"].as_f64().unwrap(), 500.0);
    close(lo["fmcache_requests_per_node"].as_f64().unwrap(), 2.0);
    close(lo["bytes_per_node"].as_f64().unwrap(), 40e6);
}

#[test]
fn bounds_fetches_and_fit_match_a_hand_computation() {
    let v = json(&[
        "--csv",
        MODES,
        "--mds-rate",
        "10000",
        "--bandwidth",
        "1e10",
        "--fanout",
        "10",
        "--link-bandwidth",
        "1e9",
        "--json",
    ]);
    let archer = &v["cases"][0];
    let (up, lo) = (&archer["upper"], &archer["lower"]);
    // Upper: 24000 x 2000 / 10000 + 0.5.
    close(up["native_s"].as_f64().unwrap(), 4800.5);
    // Lower: (1000 x 500 + 24000 x 100) / 10000 + 0.5.
    close(lo["native_s"].as_f64().unwrap(), 290.5);
    close(lo["fitted_rate"].as_f64().unwrap(), 2.9e6 / 2699.5);
    // Lazy: 1000 x 2 / 10000 + 1000 x 40e6 / 1e10 + 0.5.
    close(lo["fmcache_lazy_s"].as_f64().unwrap(), 0.2 + 4.0 + 0.5);
    // Tree over 1000 nodes, fan-out 10: 1 + 10 + 100 < 1000 <= 1111, 3
    // levels; 40e6 / 1e9 + 3 x 10 x 40e6 / 1e9 = 0.04 + 1.2.
    close(lo["fmcache_tree_s"].as_f64().unwrap(), 0.2 + 1.24 + 0.5);
    close(up["fmcache_tree_s"].as_f64().unwrap(), 0.2 + 1.24 + 0.5);
    // 4800 s against 2700 measured is nearer than 290 s (by ratio).
    assert_eq!(archer["fits"], "upper (TTL 0)");
    // The old fields are the upper bound's, lazy fetch.
    close(archer["native_s"].as_f64().unwrap(), 4800.5);
    close(archer["fmcache_s"].as_f64().unwrap(), 4.7);
    assert_eq!(v["target_met"], true);
    // Edison, 43 nodes, 2 levels: lower 1024 x 100 + 43 x 500 = 123900
    // requests, 12.39 s + 0.5, nearer 40 s than the upper's 205 s.
    let edison = &v["cases"][1];
    close(edison["lower"]["native_s"].as_f64().unwrap(), 12.89);
    assert_eq!(edison["fits"], "lower (client cache)");
    close(
        edison["lower"]["fmcache_tree_s"].as_f64().unwrap(),
        43.0 * 2.0 / 10000.0 + 0.04 + 2.0 * 10.0 * 0.04 + 0.5,
    );
}

#[test]
fn a_slow_link_fails_the_target_and_says_so() {
    let (ok, out, err) = run(&["--csv", MODES, "--link-bandwidth", "1e6"]);
    assert!(ok, "{err}");
    for needle in [
        "lower",
        "upper",
        "fan-out 8",
        "tree",
        "Fits ARCHER",
        "Fits Edison",
        "FAIL",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (ok, out, _) = run(&["--csv", MODES]);
    assert!(ok);
    assert!(out.contains("both bounds: PASS"), "{out}");
    // At 15,000/s ARCHER's 2,700 s lies between 193.8 s and 3,200.5 s,
    // Edison's 40 s between 8.8 s and 137 s.
    assert!(out.contains("ARCHER lies between the bounds"), "{out}");
    assert!(out.contains("Edison lies between the bounds"), "{out}");
    // At 1,000/s even the lower bound is over: ARCHER (2.9e6 requests)
    // 2,900.5 s.
    let (ok, out, _) = run(&["--csv", MODES, "--mds-rate", "1000"]);
    assert!(ok);
    assert!(!out.contains("ARCHER lies between"), "{out}");
}

/// An old CSV (no fs_mode column) is all TTL 0: no lower bound, said so.
#[test]
fn an_old_csv_has_only_the_upper_bound() {
    let v = json(&["--csv", SAMPLE, "--json"]);
    assert!(v["lower_inputs"].is_null());
    assert!(v["cases"][0]["lower"].is_null());
    let (ok, out, _) = run(&["--csv", SAMPLE]);
    assert!(ok);
    assert!(out.contains("no client-cache rows"), "{out}");
}
