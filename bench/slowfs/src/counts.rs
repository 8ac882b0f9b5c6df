//! Request counters by type, and the JSON file that publishes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The request types counted, in the order they are published.
pub const OPS: [&str; 11] = [
    "lookup",
    "getattr",
    "readlink",
    "open",
    "read",
    "release",
    "opendir",
    "readdir",
    "releasedir",
    "access",
    "statfs",
];

#[derive(Default)]
pub struct Counts {
    ops: [AtomicU64; OPS.len()],
    bytes_read: AtomicU64,
    /// Metadata requests by the top-level entry of the source they concern
    /// ("/" for the root itself), so a benchmark can tell the requests for
    /// a cache file from those for a software tree.
    by_top: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    pub fn add(&self, op: &str) {
        if let Some(i) = OPS.iter().position(|o| *o == op) {
            self.ops[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add_top(&self, top: &str) {
        let mut m = self.by_top.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(top) {
            Some(n) => *n += 1,
            None => {
                m.insert(top.to_string(), 1);
            }
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Metadata requests: everything but the data path (read).
    pub fn total(&self) -> u64 {
        OPS.iter()
            .zip(&self.ops)
            .filter(|(o, _)| **o != "read")
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    fn json(&self) -> String {
        let ops: serde_json::Map<String, serde_json::Value> = OPS
            .iter()
            .zip(&self.ops)
            .map(|(o, c)| (o.to_string(), c.load(Ordering::Relaxed).into()))
            .collect();
        let by_top = self
            .by_top
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        serde_json::json!({
            "metadata_requests": self.total(),
            "ops": ops,
            "by_top": by_top,
            "bytes_read": self.bytes_read.load(Ordering::Relaxed),
        })
        .to_string()
    }

    /// Writes the counts atomically (temporary file, then rename), so a
    /// reader never sees a partial file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.json() + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Writer {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// Rewrites the counts every 50 ms while mounted: readable while it runs.
pub fn spawn_writer(counts: Arc<Counts>, path: PathBuf) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if let Err(e) = counts.write(&path) {
                eprintln!("slowfs: {}: {e}", path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    Writer { stop, handle }
}
