//! Micro-benchmarks (divan): attach of a staged index, lookup hit and miss
//! at 1k / 20k / 200k entries, and pass-through calls (stat, faccessat,
//! open+close of paths the cache does not answer). Run by bench/micro.sh,
//! which runs the `passthrough` group once plainly and once under
//! `LD_PRELOAD=libfmcache.so DLFM_OP=read-cache` and compares.
//!
//! Sample sizes are fixed per benchmark (divan's automatic sizing is
//! misled by the first, cold calls); run with `--bench` (without it divan
//! runs each benchmark once, as a test).
//!
//! Environment: `FMCACHE_MICRO_DIR` scratch directory for the synthetic
//! caches; `FMCACHE_MICRO_INSIDE` / `FMCACHE_MICRO_OUTSIDE` the existing
//! files the pass-through calls use (inside a recorded tree / outside any).
//! `FMCACHE_MICRO_PILOT=DIR` instead lists DIR once and exits (the pilot
//! run that records the tree).

use std::collections::HashMap;
use std::ffi::CString;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use divan::Bencher;
use fmcache_bench::attach::{attach_once, cstr, map_forever};
use fmcache_bench::synth::{build, synth, Rng};
use fmcache_format::{CacheView, Verify};

const SIZES: [usize; 3] = [1_000, 20_000, 200_000];
const SEED: u64 = 24301;

/// Keys on one contiguous tape (shuffled permutations of all keys, read
/// sequentially), so fetching the next key is almost free and a pass
/// touches the whole table: random keys, not one hot key.
struct Tape {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Tape {
    fn new(keys: &[Vec<u8>], rng: &mut Rng) -> Tape {
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        while ends.len() < keys.len().max(4096) {
            let mut perm: Vec<usize> = (0..keys.len()).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for i in perm {
                bytes.extend_from_slice(&keys[i]);
                ends.push(bytes.len());
            }
        }
        Tape { bytes, ends }
    }
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[if i == 0 { 0 } else { self.ends[i - 1] }..self.ends[i]]
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
}

struct Fixture {
    index: CString,
    view: CacheView<'static>,
    hits: Tape,
    misses: Tape,
}

fn scratch() -> PathBuf {
    std::env::var_os("FMCACHE_MICRO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("fmcache-micro.{}", std::process::id()))
        })
}

/// The cache of `n` entries, built once per process (leaked: lives as long
/// as the benchmarks).
fn fixture(n: usize) -> &'static Fixture {
    static ALL: OnceLock<Mutex<HashMap<usize, &'static Fixture>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap();
    all.entry(n).or_insert_with(|| {
        let dir = scratch();
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let s = synth(n, SEED);
        let f = build(&s, &dir, n);
        let _ = std::fs::remove_file(&f.cache);
        let view = CacheView::open(map_forever(&f.index), Verify::Header).expect("open index");
        let mut rng = Rng(SEED);
        let fx = Fixture {
            index: cstr(&f.index),
            view,
            hits: Tape::new(&s.hits, &mut rng),
            misses: Tape::new(&s.misses, &mut rng),
        };
        for i in 0..fx.hits.len() {
            assert!(fx.view.lookup(fx.hits.key(i)).is_some());
        }
        for i in 0..fx.misses.len() {
            assert!(fx.view.lookup(fx.misses.key(i)).is_none());
        }
        eprintln!(
            "# fixture {n} entries: index {} bytes, cache {} bytes, mean path {:.1} bytes",
            f.meta_size, f.file_size, f.avg_path
        );
        Box::leak(Box::new(fx))
    })
}

/// open + fstat + mmap + header check + one lookup (+ munmap + close).
#[divan::bench(args = SIZES, sample_size = 10, sample_count = 500)]
fn attach(b: Bencher, n: usize) {
    let fx = fixture(n);
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % fx.hits.len();
        assert!(attach_once(&fx.index, fx.hits.key(i), true));
    });
}

/// The same system calls without the header check and lookup.
#[divan::bench(args = SIZES, sample_size = 10, sample_count = 500)]
fn attach_syscalls_only(b: Bencher, n: usize) {
    let fx = fixture(n);
    b.bench_local(|| attach_once(&fx.index, b"", false));
}

/// `find` over the tape's keys in turn, one per iteration.
fn over_tape(b: Bencher, tape: &Tape, find: impl Fn(&[u8]) -> bool) {
    let mut i = 0;
    b.bench_local(|| {
        i += 1;
        if i == tape.len() {
            i = 0;
        }
        find(black_box(tape.key(i)))
    });
}

fn lookups(b: Bencher, tape: &Tape, view: &CacheView<'static>, expect: bool) {
    over_tape(b, tape, |k| {
        let found = view.lookup(k).is_some();
        debug_assert_eq!(found, expect);
        found
    });
}

/// `CacheView::lookup` of random recorded paths.
#[divan::bench(args = SIZES, sample_size = 1000, sample_count = 500)]
fn lookup_hit(b: Bencher, n: usize) {
    let fx = fixture(n);
    lookups(b, &fx.hits, &fx.view, true);
}

fn levels(b: Bencher, tape: &Tape, view: &CacheView<'static>, level: u8) {
    over_tape(b, tape, |k| view.lookup_partial(k, level));
}

/// A hit's cost in parts: the same tape, stopped after the bucket read
/// (`lookup_hit_bucket`), and after the entry's hash too
/// (`lookup_hit_entry`); `lookup_hit` adds the path string's compare.
#[divan::bench(args = SIZES, sample_size = 1000, sample_count = 500)]
fn lookup_hit_bucket(b: Bencher, n: usize) {
    let fx = fixture(n);
    levels(b, &fx.hits, &fx.view, 1);
}

#[divan::bench(args = SIZES, sample_size = 1000, sample_count = 500)]
fn lookup_hit_entry(b: Bencher, n: usize) {
    let fx = fixture(n);
    levels(b, &fx.hits, &fx.view, 2);
}

/// `CacheView::lookup` of random never-recorded paths in the same directories.
#[divan::bench(args = SIZES, sample_size = 1000, sample_count = 500)]
fn lookup_miss(b: Bencher, n: usize) {
    let fx = fixture(n);
    lookups(b, &fx.misses, &fx.view, false);
}

/// Calls the cache leaves to libc: the same binary runs them with and
/// without the preload library.
mod passthrough {
    use super::*;

    fn target(which: &str) -> CString {
        let var = match which {
            "inside" => "FMCACHE_MICRO_INSIDE",
            _ => "FMCACHE_MICRO_OUTSIDE",
        };
        let p = std::env::var(var).unwrap_or_else(|_| "/etc/hostname".into());
        CString::new(p).unwrap()
    }

    #[divan::bench(args = ["inside", "outside"], sample_size = 100, sample_count = 300)]
    fn stat(b: Bencher, which: &str) {
        let p = target(which);
        // SAFETY: valid C string and stat buffer.
        b.bench_local(|| unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            assert_eq!(libc::stat(p.as_ptr(), &mut st), 0);
        });
    }

    #[divan::bench(args = ["inside", "outside"], sample_size = 100, sample_count = 300)]
    fn faccessat(b: Bencher, which: &str) {
        let p = target(which);
        // SAFETY: valid C string.
        b.bench_local(|| unsafe {
            assert_eq!(
                libc::faccessat(libc::AT_FDCWD, p.as_ptr(), libc::R_OK, 0),
                0
            );
        });
    }

    #[divan::bench(args = ["inside", "outside"], sample_size = 100, sample_count = 300)]
    fn open_close(b: Bencher, which: &str) {
        let p = target(which);
        // SAFETY: valid C string; the descriptor is closed at once.
        b.bench_local(|| unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0);
            libc::close(fd);
        });
    }
}

fn main() {
    if let Some(dir) = std::env::var_os("FMCACHE_MICRO_PILOT") {
        // Lists the directory (recorded as a listing) without probing its
        // files, so a file in it is "inside the tree, not in the cache".
        let n = std::fs::read_dir(&dir).expect("pilot directory").count();
        println!("pilot: listed {n} names");
        return;
    }
    divan::main();
}
