//! `fmcache-slowfs`: a real FUSE mount (as root) that passes a tree
//! through unchanged, counts every metadata request (the kernel caches
//! nothing), publishes the counts while mounted and unmounts on SIGTERM.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fmcache-slowfs");

fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("slowfs test skipped: needs root and /dev/fuse");
        return false;
    }
    true
}

fn mounted(mnt: &Path) -> bool {
    let m = fs::read_to_string("/proc/self/mounts").unwrap();
    let want = mnt.to_str().unwrap();
    m.lines().any(|l| l.split(' ').nth(1) == Some(want))
}

struct Mount {
    child: Child,
    mnt: PathBuf,
    counts: PathBuf,
}

impl Mount {
    fn start(src: &Path, mnt: &Path, counts: &Path, latency_us: u32) -> Mount {
        Mount::start_with(src, mnt, counts, latency_us, &[])
    }

    fn start_with(src: &Path, mnt: &Path, counts: &Path, latency_us: u32, extra: &[&str]) -> Mount {
        let child = Command::new(BIN)
            .args(extra)
            .arg(src)
            .arg(mnt)
            .arg("--latency-us")
            .arg(latency_us.to_string())
            .arg("--counts")
            .arg(counts)
            .stderr(fs::File::create(counts.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !(mounted(mnt) && counts.exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "slowfs did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            child,
            mnt: mnt.to_path_buf(),
            counts: counts.to_path_buf(),
        }
    }

    /// The published metadata request count, once it has settled (the
    /// file is rewritten every 50 ms).
    fn requests(&self) -> u64 {
        self.counts()["metadata_requests"].as_u64().unwrap()
    }

    /// The published counts, once they have settled.
    fn counts(&self) -> Value {
        std::thread::sleep(Duration::from_millis(150));
        serde_json::from_str(&fs::read_to_string(&self.counts).unwrap()).unwrap()
    }

    /// Stops slowfs with SIGTERM and asserts it unmounted and exited 0; its
    /// stderr is shown if not.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let log = fs::read_to_string(self.counts.with_extension("log")).unwrap_or_default();
        assert_eq!(code, 0, "slowfs did not exit cleanly on SIGTERM: {log}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            let _ = self.child.kill();
        }
    }
}

#[test]
fn slowfs_passes_through_counts_and_unmounts() {
    if !can_mount() {
        return;
    }
    let base = std::env::temp_dir().join(format!("fmcache-slowfs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (src, mnt) = (base.join("src"), base.join("mnt"));
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("dir/file"), b"slow file system\n").unwrap();
    fs::write(src.join("dir/secret"), b"x").unwrap();
    fs::set_permissions(src.join("dir/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("file", src.join("dir/link")).unwrap();
    let m = Mount::start(&src, &mnt, &base.join("counts.json"), 0);

    for name in ["dir", "dir/file", "dir/secret", "dir/link", "dir/sub"] {
        let a = fs::symlink_metadata(src.join(name)).unwrap();
        let b = fs::symlink_metadata(mnt.join(name)).unwrap();
        let fields = |m: &fs::Metadata| {
            (
                m.mode(),
                m.size(),
                m.nlink(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
            )
        };
        assert_eq!(fields(&a), fields(&b), "{name}: stat differs");
    }
    assert_eq!(
        fs::read(mnt.join("dir/file")).unwrap(),
        b"slow file system\n"
    );
    assert_eq!(
        fs::read_link(mnt.join("dir/link")).unwrap(),
        Path::new("file")
    );
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&src.join("dir")), names(&mnt.join("dir")));
    let e = fs::metadata(mnt.join("dir/missing")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let e = fs::metadata(mnt.join("dir/file/x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    assert_eq!(
        fs::write(mnt.join("dir/new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );

    // TTL 0: the same stat again reaches the server again.
    let before = m.requests();
    for _ in 0..10 {
        fs::metadata(mnt.join("dir/file")).unwrap();
    }
    let after = m.requests();
    assert!(
        after >= before + 10,
        "10 stats added only {} requests: the kernel cached",
        after - before
    );

    let counts = m.counts.clone();
    m.stop();
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
    let v: Value = serde_json::from_str(&fs::read_to_string(&counts).unwrap()).unwrap();
    assert!(v["metadata_requests"].as_u64().unwrap() >= after);
    assert!(v["ops"]["lookup"].as_u64().unwrap() > 0);
    assert!(v["bytes_read"].as_u64().unwrap() >= 17);
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn slowfs_serialises_requests_at_its_latency() {
    if !can_mount() {
        return;
    }
    let base = std::env::temp_dir().join(format!("fmcache-slowfs-lat-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (src, mnt) = (base.join("src"), base.join("mnt"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let m = Mount::start(&src, &mnt, &base.join("counts.json"), 2000);
    let before = m.requests();
    // Four threads at once: one lock, so requests x latency at least.
    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = mnt.join("f");
            std::thread::spawn(move || {
                for _ in 0..10 {
                    fs::metadata(&p).unwrap();
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    let wall = t.elapsed();
    let n = m.requests() - before;
    assert!(n >= 40, "{n} requests for 40 stats");
    assert!(
        wall >= Duration::from_micros(2000 * n) * 9 / 10,
        "{n} requests at 2 ms took only {wall:?}: not serialised"
    );
    m.stop();
    let _ = fs::remove_dir_all(&base);
}

/// Requests are also counted by the source's top-level entry they concern;
/// --cold-reads makes every open read the file from the source again.
#[test]
fn slowfs_counts_by_top_entry_and_reads_cold_on_request() {
    if !can_mount() {
        return;
    }
    let base = std::env::temp_dir().join(format!("fmcache-slowfs-top-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let src = base.join("src");
    fs::create_dir_all(src.join("a/deep")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/deep/f"), vec![7u8; 1 << 20]).unwrap();
    fs::write(src.join("b/g"), b"g").unwrap();
    for (cold, mnt) in [(true, base.join("cold")), (false, base.join("warm"))] {
        fs::create_dir_all(&mnt).unwrap();
        let extra: &[&str] = if cold { &["--cold-reads"] } else { &[] };
        let m = Mount::start_with(&src, &mnt, &base.join("counts.json"), 0, extra);
        let top = |v: &Value, k: &str| v["by_top"][k].as_u64().unwrap_or(0);
        let v0 = m.counts();
        for _ in 0..5 {
            fs::metadata(mnt.join("b/g")).unwrap();
        }
        let v1 = m.counts();
        assert!(
            top(&v1, "b") >= top(&v0, "b") + 5,
            "stats of b/g not counted under b: {v1}"
        );
        assert_eq!(
            top(&v1, "a"),
            top(&v0, "a"),
            "stats of b/g counted under a: {v1}"
        );
        assert_eq!(fs::read(mnt.join("a/deep/f")).unwrap().len(), 1 << 20);
        let v2 = m.counts();
        assert_eq!(fs::read(mnt.join("a/deep/f")).unwrap().len(), 1 << 20);
        let v3 = m.counts();
        assert!(
            top(&v3, "a") > top(&v1, "a"),
            "reads of a/deep/f not counted under a: {v3}"
        );
        let second = v3["bytes_read"].as_u64().unwrap() - v2["bytes_read"].as_u64().unwrap();
        if cold {
            assert!(
                second >= 1 << 20,
                "cold: the second read took {second} bytes from the source"
            );
        } else {
            assert!(
                second < 1 << 20,
                "warm: the second read took {second} bytes from the source"
            );
        }
        let sum: u64 = v3["by_top"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(
            sum,
            v3["metadata_requests"].as_u64().unwrap(),
            "by_top does not add up: {v3}"
        );
        m.stop();
    }
    let _ = fs::remove_dir_all(&base);
}

/// More client files open at once than slowfs keeps descriptors for (a
/// mapped library stays open): every one still reads its own bytes.
#[test]
fn slowfs_serves_more_open_files_than_it_keeps_descriptors() {
    if !can_mount() {
        return;
    }
    let base = std::env::temp_dir().join(format!("fmcache-slowfs-many-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (src, mnt) = (base.join("src"), base.join("mnt"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    const N: usize = 4600;
    for i in 0..N {
        fs::write(src.join(format!("d/{i}")), format!("file {i}\n")).unwrap();
    }
    let m = Mount::start(&src, &mnt, &base.join("counts.json"), 0);
    let open: Vec<fs::File> = (0..N)
        .map(|i| fs::File::open(mnt.join(format!("d/{i}"))).unwrap())
        .collect();
    for (i, f) in open.iter().enumerate().rev() {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &*f, &mut s).unwrap();
        assert_eq!(s, format!("file {i}\n"));
    }
    drop(open);
    m.stop();
    let _ = fs::remove_dir_all(&base);
}
