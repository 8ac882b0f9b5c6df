//! `fmcache slowfs`: a real FUSE mount (as root) that passes a tree
//! through unchanged, counts every metadata request (the kernel caches
//! nothing), publishes the counts while mounted and unmounts on SIGTERM.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fmcache");

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
        let child = Command::new(BIN)
            .arg("slowfs")
            .arg(src)
            .arg(mnt)
            .arg("--latency-us")
            .arg(latency_us.to_string())
            .arg("--counts")
            .arg(counts)
            .stderr(Stdio::null())
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
        std::thread::sleep(Duration::from_millis(150));
        let v: Value = serde_json::from_str(&fs::read_to_string(&self.counts).unwrap()).unwrap();
        v["metadata_requests"].as_u64().unwrap()
    }

    fn stop(mut self) -> i32 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code().unwrap_or(-1)
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
    assert_eq!(m.stop(), 0, "slowfs did not exit cleanly on SIGTERM");
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
    assert_eq!(m.stop(), 0);
    let _ = fs::remove_dir_all(&base);
}
