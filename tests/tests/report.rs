//! `fmcache report` rendered in a real browser (Debian's chromium,
//! headless): the page loads from a file with nothing fetched, its figures
//! are those `fmcache inspect --json` and `fmcache stats --json` print, every
//! plot is drawn, and a pilot whose PYTHONPATH holds ten empty directories
//! gets them named as the top cause of calls that found nothing, with the
//! count strace sees natively.

use std::fs;
use std::path::Path;
use std::process::Command;

use fmcache_tests::{fixture, py_env, tool, Run};
use serde_json::Value;

const CODE: &str = "import numpy.fft; import scipy.interpolate; print('ok')";

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Runs headless chromium on a local page with `what` (`--dump-dom` or
/// `--screenshot=...`); its own profile directory, no sandbox (root).
fn browse(profile: &Path, page: &Path, what: &str) -> String {
    let out = Command::new(chromium().expect("chromium (tests/env/setup.sh installs it)"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--window-size=1000,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium");
    assert!(
        out.status.success(),
        "chromium {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn report_of_a_pilot_with_empty_pythonpath_entries_renders_in_chromium() {
    let py = py_env();
    let fx = fixture!("report_page");
    let pp = fx.tree.join("pp");
    let dirs: Vec<String> = (0..10)
        .map(|i| {
            let d = pp.join(format!("e{i}"));
            fs::create_dir_all(&d).unwrap();
            d.to_string_lossy().into_owned()
        })
        .collect();
    let cache = fx.cache("c");
    let stats = fx.out.join("stats");
    let run = Run::new(&py.python)
        .args(["-c", CODE])
        .cwd(&fx.tree)
        .env("PYTHONPATH", dirs.join(":"));
    let (native, trace) = run
        .clone()
        .native()
        .run_traced_flat(&fx.trace_dir("native"), &[pp.as_path()]);
    native.ok("native");
    run.clone().record(&cache).run().ok("pilot");
    run.clone().serve(&cache).stats(&stats).run().ok("served");
    // A production run that imports a module the pilot never did: its
    // probes miss the cache, and the report names them.
    Run::new(&py.python)
        .args(["-c", &format!("{CODE}; import wave")])
        .cwd(&fx.tree)
        .env("PYTHONPATH", dirs.join(":"))
        .serve(&cache)
        .stats(&stats)
        .run()
        .ok("served, one more import");

    let page = fx.out.join("report.html");
    let out = Command::new(tool())
        .arg("report")
        .arg(&cache.file)
        .arg("--stats")
        .arg(&stats)
        .arg("-o")
        .arg(&page)
        .env("PYTHONPATH", dirs.join(":"))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fmcache report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("top cause"), "summary: {summary}");

    // Self-contained: nothing to fetch (the SVG namespace is a name, not
    // a request), and a policy that would block any fetch.
    let html = fs::read_to_string(&page).unwrap();
    for bad in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(bad), "the page refers to {bad}");
    }
    assert!(html.contains("default-src 'none'"));

    if chromium().is_none() {
        panic!("chromium is not installed: run tests/env/setup.sh");
    }
    let profile = fx.out.join("chromium");
    let dom = browse(&profile, &page, "--dump-dom");
    let start = dom
        .find("id=\"fmcache-data\">")
        .expect("data block in the rendered page")
        + "id=\"fmcache-data\">".len();
    let end = start + dom[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&dom[start..end].replace("<\\/", "</")).unwrap();

    // The figures are what the other commands print.
    let inspect = json_of(
        Command::new(tool())
            .args(["inspect", "--json"])
            .arg(&cache.file),
    );
    assert_eq!(data["inspect"], inspect, "report vs fmcache inspect --json");
    let st = json_of(Command::new(tool()).args(["stats", "--json"]).arg(&stats));
    assert_eq!(data["stats"], st, "report vs fmcache stats --json");
    for (id, v) in [
        ("entries", inspect["entries"].to_string()),
        ("failed-lookups", inspect["kinds"]["failed"].to_string()),
        ("content-bytes", inspect["content_bytes"].to_string()),
        ("stats-served", st["served"].to_string()),
        ("stats-missed", st["missed"].to_string()),
        ("stats-passthrough", st["passthrough"].to_string()),
        ("stats-processes", st["processes"].to_string()),
    ] {
        let cell = format!("id=\"{id}\">{v}</td>");
        assert!(dom.contains(&cell), "rendered page lacks {cell}");
    }
    // Every plot drawn, as SVG with shapes in it.
    for id in [
        "plot-calls",
        "plot-failed",
        "plot-causes",
        "plot-stage",
        "plot-projection",
    ] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let svg = &dom[at..at + dom[at..].find("</svg>").expect("svg end")];
        assert!(
            svg.contains("<svg") && (svg.contains("<rect") || svg.contains("<polyline")),
            "{id} is empty"
        );
    }
    assert!(dom.contains("id=\"assumptions\""));
    // The missed paths, by name, in the stats and on the page.
    let missed: Vec<&str> = st["missed_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert!(st["missed"].as_u64().unwrap() > 0, "{st}");
    assert!(
        missed.iter().any(|p| p.ends_with("/wave.py")),
        "missed paths: {missed:?}"
    );
    let table = &dom[dom.find("id=\"missed-paths\"").expect("missed paths table")..];
    let table = &table[..table.find("</table>").unwrap()];
    for p in missed.iter().take(10) {
        assert!(table.contains(p), "{p} not on the page");
    }

    // The ten empty directories are the top cause, with the count the
    // kernel saw natively.
    let top = &data["causes"][0];
    assert_eq!(
        top["cause"], "empty directories searched",
        "causes: {}",
        data["causes"]
    );
    let named: Vec<&str> = top["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(named, dirs.iter().map(String::as_str).collect::<Vec<_>>());
    let counted = top["calls_per_process"].as_f64().unwrap();
    eprintln!(
        "empty PYTHONPATH entries: report {counted} calls per process, strace {} natively",
        trace.on_roots
    );
    assert_eq!(data["pilot"]["processes"], 1);
    assert_eq!(counted, trace.on_roots as f64, "calls on the empty dirs");
    let advice = data["advice"][0].as_str().unwrap();
    assert!(
        advice.replace(',', "").starts_with(&format!(
            "10 empty directories cost {} calls per process",
            trace.on_roots
        )) && advice.contains("PYTHONPATH"),
        "advice: {advice}"
    );

    // A screenshot, as the README shows.
    let shot = fx.out.join("report.png");
    browse(&profile, &page, &format!("--screenshot={}", shot.display()));
    let png = fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000);
}
