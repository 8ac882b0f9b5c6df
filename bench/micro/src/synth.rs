//! Synthetic caches: a site-packages-like tree of exactly `n` entries built
//! with `fmcache_format::Builder` (paths of ~80 bytes, one stat record per
//! existing path, ENOENT probes, symlinks, listings for half of the
//! directories, small contents for a quarter of the `.py` files), written
//! as a whole cache file and as its staged index (`[0, meta_size)`, what a
//! serving process maps from the stage).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fmcache_format::layout::{S_IFDIR, S_IFLNK, S_IFREG};
use fmcache_format::{read_header, Builder, Content, DirentRec, Record, StatRec};

const ROOT: &[u8] = b"/work/main/venv/lib/python3.11/site-packages";
const STEMS: [&str; 16] = [
    "fft",
    "linalg",
    "_helper",
    "interpolate",
    "sparse",
    "special",
    "optimize",
    "_core",
    "stats",
    "signal",
    "_util",
    "io",
    "_multiarray_umath",
    "ndimage",
    "integrate",
    "_bsplines",
];

/// splitmix64: deterministic, dependency-free.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

pub struct Synth {
    pub records: Vec<Record<'static>>,
    /// Paths with an entry (all of them), and paths without one.
    pub hits: Vec<Vec<u8>>,
    pub misses: Vec<Vec<u8>>,
}

fn stat(rng: &mut Rng, ino: &mut u64, mode: u32, size: i64) -> StatRec {
    *ino += 1;
    let mtime = 1_700_000_000 + rng.below(10_000_000) as i64;
    StatRec {
        dev: 0x803,
        ino: *ino,
        nlink: if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
        mode,
        uid: 1000,
        gid: 1000,
        size,
        blksize: 4096,
        blocks: (size + 511) / 512,
        atime: mtime,
        atime_nsec: rng.below(1_000_000_000) as i64,
        mtime,
        mtime_nsec: rng.below(1_000_000_000) as i64,
        ctime: mtime,
        ctime_nsec: rng.below(1_000_000_000) as i64,
        stx_mask: 0xfff,
        btime: mtime,
        btime_nsec: rng.below(1_000_000_000) as u32,
        mnt_id: 25,
        ..StatRec::default()
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn dir_record(rng: &mut Rng, ino: &mut u64, path: Vec<u8>, names: &[Vec<u8>]) -> Record<'static> {
    let listing = rng.chance(1, 2).then(|| {
        let mut l = vec![
            DirentRec {
                name: b".".to_vec(),
                d_type: libc::DT_DIR,
                ino: *ino + 1,
            },
            DirentRec {
                name: b"..".to_vec(),
                d_type: libc::DT_DIR,
                ino: *ino,
            },
        ];
        for (i, n) in names.iter().enumerate() {
            l.push(DirentRec {
                name: n.clone(),
                d_type: libc::DT_REG,
                ino: *ino + 2 + i as u64,
            });
        }
        l
    });
    Record {
        path,
        lstat: Some(Ok(stat(rng, ino, S_IFDIR | 0o755, 4096))),
        access: Some([0, 0, 0]),
        listing,
        ..Record::default()
    }
}

/// A site-packages-like tree of exactly `n` entries.
pub fn synth(n: usize, seed: u64) -> Synth {
    let mut rng = Rng(seed ^ n as u64);
    let mut ino = 1000u64;
    let mut records: Vec<Record<'static>> = Vec::with_capacity(n + 64);
    let mut misses: Vec<Vec<u8>> = Vec::new();
    // The root and its ancestors.
    let mut anc = Vec::new();
    for (i, &b) in ROOT.iter().enumerate() {
        if b == b'/' && i > 0 {
            anc.push(ROOT[..i].to_vec());
        }
    }
    anc.insert(0, b"/".to_vec());
    anc.push(ROOT.to_vec());
    for a in anc {
        records.push(dir_record(&mut rng, &mut ino, a, &[]));
    }
    let mut d = 0usize;
    while records.len() < n {
        let pkg = d / 12;
        let dir = join(
            ROOT,
            format!("{}_{pkg:03}/sub_{:02}", STEMS[pkg % STEMS.len()], d % 12).as_bytes(),
        );
        d += 1;
        let files = 16 + rng.below(32) as usize;
        let mut names = Vec::new();
        let mut children = Vec::new();
        for k in 0..files {
            let stem = STEMS[rng.below(STEMS.len() as u64) as usize];
            let (name, is_ext) = if rng.chance(1, 5) {
                (
                    format!("{stem}_{k:03}.cpython-311-x86_64-linux-gnu.so"),
                    true,
                )
            } else {
                (format!("{stem}_{k:03}.py"), false)
            };
            let path = join(&dir, name.as_bytes());
            names.push(name.clone().into_bytes());
            let size = 200 + rng.below(40_000) as i64;
            let mut rec = Record {
                path: path.clone(),
                ..Record::default()
            };
            if rng.chance(1, 50) {
                // A symlink to a sibling.
                let target = format!("{stem}_{:03}.py", (k + 1) % files);
                rec.lstat = Some(Ok(stat(
                    &mut rng,
                    &mut ino,
                    S_IFLNK | 0o777,
                    target.len() as i64,
                )));
                rec.follow = Some(Ok(stat(&mut rng, &mut ino, S_IFREG | 0o644, size)));
                rec.link = Some(target.into_bytes());
            } else {
                let mode = S_IFREG | if is_ext { 0o755 } else { 0o644 };
                rec.lstat = Some(Ok(stat(&mut rng, &mut ino, mode, size)));
                if !is_ext && rng.chance(1, 4) {
                    let len = 64 + rng.below(960) as usize;
                    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    rec.content = Some(Content {
                        mirror: path.clone(),
                        bytes: Cow::Owned(bytes),
                    });
                    rec.access = Some([0, libc::EACCES as u8, libc::EACCES as u8]);
                }
            }
            children.push(rec);
            // The importer's failed probes next to it.
            if rng.chance(3, 10) {
                let p = join(&dir, format!("{stem}_{k:03}.abi3.so").as_bytes());
                children.push(Record {
                    path: p,
                    lstat: Some(Err(libc::ENOENT)),
                    ..Record::default()
                });
            }
            // Never probed: the miss set.
            misses.push(join(&dir, format!("{stem}_{k:03}.pyi").as_bytes()));
        }
        records.push(dir_record(&mut rng, &mut ino, dir, &names));
        records.extend(children);
    }
    records.truncate(n);
    let hits = records.iter().map(|r| r.path.clone()).collect();
    Synth {
        records,
        hits,
        misses,
    }
}

pub struct Files {
    pub cache: PathBuf,
    pub index: PathBuf,
    pub file_size: u64,
    pub meta_size: u64,
    pub build_ms: f64,
    pub avg_path: f64,
}

pub fn build(s: &Synth, dir: &Path, n: usize) -> Files {
    let avg_path = s.hits.iter().map(|p| p.len()).sum::<usize>() as f64 / s.hits.len() as f64;
    let t = Instant::now();
    let mut b = Builder::new(1000, 1000);
    for r in &s.records {
        b.add(r.clone());
    }
    let mut bytes = Vec::new();
    let w = b.write(&mut bytes).expect("write cache");
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(w.entries, n, "duplicate synthetic paths");
    let h = read_header(&bytes).expect("header");
    let cache = dir.join(format!("cache-{n}.dat"));
    let index = dir.join(format!("cache-{n}.index"));
    std::fs::write(&cache, &bytes).expect("write cache file");
    std::fs::write(&index, &bytes[..h.meta_size as usize]).expect("write index file");
    Files {
        cache,
        index,
        file_size: h.file_size,
        meta_size: h.meta_size,
        build_ms,
        avg_path,
    }
}
