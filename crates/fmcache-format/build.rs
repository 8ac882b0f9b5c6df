//! Stamps the git commit into the build identity (see `build_id`).
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FMCACHE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: the file HEAD names, or HEAD itself.
    if let Ok(dir) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&dir.stdout).trim().to_string();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD")) {
            if let Some(r) = head.strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed={dir}/{}", r.trim());
            }
        }
    }
}
