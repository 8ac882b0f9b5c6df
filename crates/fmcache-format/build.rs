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
    // Rebuild when HEAD moves: the file HEAD names, or HEAD itself. Paths
    // through `--git-path`, which knows worktrees (a worktree's HEAD is in
    // its own git dir, its branches in the common one); a path that does
    // not exist would make cargo rerun this on every build, so a packed
    // branch is watched through packed-refs.
    let git_path = |p: &str| {
        Command::new("git")
            .args(["rev-parse", "--git-path", p])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(head) = git_path("HEAD") {
        println!("cargo:rerun-if-changed={head}");
        if let Some(r) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            match git_path(&r) {
                Some(f) if std::path::Path::new(&f).exists() => {
                    println!("cargo:rerun-if-changed={f}")
                }
                _ => {
                    if let Some(f) = git_path("packed-refs") {
                        println!("cargo:rerun-if-changed={f}");
                    }
                }
            }
        }
    }
}
