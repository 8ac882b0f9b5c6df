//! Replays the committed corrupt-cache corpus (`tests/corrupt/*.fmc`):
//! crafted damage of every kind plus minimized fuzzer finds. Each file is
//! opened as is, with this build's identity stamped in, and stamped with
//! both checksums recomputed (so validation passes and the deep accessors
//! meet the damage). Nothing may panic, every accessor stays inside the
//! file, and each file is done in bounded time.
//!
//! Regenerate the crafted files (after a format change):
//!   FMCACHE_WRITE_CORPUS=1 cargo test -p fmcache-format --test corrupt -- --ignored

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fmcache_format::layout::{sec, Blob, Entry, HEADER_SIZE, S_IFDIR, S_IFLNK, S_IFREG};
use fmcache_format::{
    build_id, checksum, read_header, walk, Builder, CacheView, Content, DirentRec, Record, StatRec,
    Verify,
};

const BUILD_ID: core::ops::Range<usize> = 16..32;
const CHECKSUMS: usize = 48;
/// `Header::notes` (offset u32, len u32).
const NOTES: usize = 208;
/// Generous: a file here takes microseconds; a loop would take forever.
const PER_FILE: Duration = Duration::from_secs(5);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corrupt")
}

/// The bytes in an 8-byte aligned buffer, as a mapping would be.
struct Aligned(Vec<u64>, usize);

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, ch) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut a = [0u8; 8];
            a[..ch.len()].copy_from_slice(ch);
            *w = u64::from_le_bytes(a);
        }
        Aligned(words, bytes.len())
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `self.1` bytes of the buffer were initialised in `new`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
    }
}

fn stamp(bytes: &mut [u8]) {
    if bytes.len() >= BUILD_ID.end {
        bytes[BUILD_ID].copy_from_slice(&build_id());
        // Fuzzer finds from formats 1 and 2 (2 added the ROOT flag and
        // notes, 3 the first-component filter in reserved bytes; any byte
        // pattern may hold either): read them as this format.
        if bytes[8..12] == 1u32.to_le_bytes() || bytes[8..12] == 2u32.to_le_bytes() {
            bytes[8..12].copy_from_slice(&fmcache_format::layout::FORMAT_VERSION.to_le_bytes());
        }
    }
}

fn fix_checksums(bytes: &mut [u8]) {
    if bytes.len() >= CHECKSUMS + 16 {
        let whole = checksum(bytes, false);
        let meta = checksum(bytes, true);
        bytes[CHECKSUMS..CHECKSUMS + 8].copy_from_slice(&whole.to_le_bytes());
        bytes[CHECKSUMS + 8..CHECKSUMS + 16].copy_from_slice(&meta.to_le_bytes());
    }
}

/// Opens both ways and walks what opens; returns whether `Full` accepted.
fn replay(bytes: &[u8]) -> bool {
    let buf = Aligned::new(bytes);
    let b = buf.bytes();
    let full = CacheView::open(b, Verify::Full).is_ok();
    let header = CacheView::open(b, Verify::Header);
    assert!(!full || header.is_ok(), "Full accepted what Header refused");
    if let Ok(view) = header {
        let paths: Vec<Vec<u8>> = view.entries().map(|e| e.path().to_vec()).collect();
        let mut probes: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        probes.extend([&b"/"[..], b"/a", b"/a/b", b"/nope", b""]);
        // Whatever the damage, a lookup answers only with the entry whose
        // own path is the one asked for.
        for p in &probes {
            if let Some(e) = view.lookup(p) {
                assert_eq!(e.path(), *p, "a lookup answered with another path's entry");
            }
        }
        walk::walk(&view, b, &probes);
    }
    full
}

#[test]
fn corrupt_corpus_is_refused_or_served_in_bounds() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corrupt")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "fmc"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus has {} files", files.len());
    let mut accepted_fixed = 0;
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let t = Instant::now();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // Only the reference file and nothing else is a valid cache as is
        // (once stamped with this build's identity).
        let mut stamped = raw.clone();
        stamp(&mut stamped);
        let as_is = replay(&raw);
        assert!(!as_is || name.starts_with("valid"), "{name} accepted as is");
        let ok_stamped = replay(&stamped);
        // wrong-build is otherwise intact: stamping repairs it.
        let intact = ["valid", "fuzz", "wrong-build"];
        if !intact.iter().any(|p| name.starts_with(p)) {
            assert!(!ok_stamped, "{name} accepted with its checksums unfixed");
        }
        fix_checksums(&mut stamped);
        accepted_fixed += replay(&stamped) as usize;
        assert!(t.elapsed() < PER_FILE, "{name} took {:?}", t.elapsed());
    }
    // The deep accessors must really have met damage, not only refusals.
    assert!(accepted_fixed >= 5, "only {accepted_fixed} files opened");
}

// ---- the crafted corpus ---------------------------------------------------

fn st(mode: u32, ino: u64, size: i64) -> StatRec {
    StatRec {
        dev: 1,
        ino,
        nlink: 1,
        mode,
        size,
        ..StatRec::default()
    }
}

fn dirent(name: &[u8], d_type: u8, ino: u64) -> DirentRec {
    DirentRec {
        name: name.to_vec(),
        d_type,
        ino,
    }
}

/// A small, complete cache: directories with listings, files with
/// contents, a symlink loop, a dangling link, an errno and access answers.
fn valid() -> Vec<u8> {
    let mut b = Builder::new(0, 0);
    let dir = |path: &[u8], names: &[&[u8]]| {
        let mut list = vec![dirent(b".", 4, 1), dirent(b"..", 4, 2)];
        list.extend(names.iter().map(|n| dirent(n, 8, 9)));
        Record {
            path: path.to_vec(),
            lstat: Some(Ok(st(S_IFDIR | 0o755, 1, 4096))),
            access: Some([0, 13, 0]),
            listing: Some(list),
            ..Record::default()
        }
    };
    b.add(dir(b"/", &[b"a", b"loop1", b"loop2"]));
    b.add(dir(b"/a", &[b"b", b"c", b"dangling", b"z"]));
    // /a/z compresses (a zstd blob); the others are too small (raw).
    let z = b"compressible line of text\n".repeat(64);
    for (name, bytes) in [
        (&b"/a/b"[..], &b"hello\n"[..]),
        (b"/a/c", b"world!\n"),
        (b"/a/z", &z[..]),
    ] {
        b.add(Record {
            path: name.to_vec(),
            lstat: Some(Ok(st(S_IFREG | 0o644, 3, bytes.len() as i64))),
            content: Some(Content {
                mirror: name.to_vec(),
                bytes: bytes.into(),
            }),
            ..Record::default()
        });
    }
    let link = |path: &[u8], target: &[u8]| Record {
        path: path.to_vec(),
        lstat: Some(Ok(st(S_IFLNK | 0o777, 5, target.len() as i64))),
        follow: Some(Err(40)),
        link: Some(target.to_vec()),
        ..Record::default()
    };
    b.add(link(b"/loop1", b"/loop2"));
    b.add(link(b"/loop2", b"loop1"));
    b.add(link(b"/a/dangling", b"../nope"));
    b.add(Record {
        path: b"/nope".to_vec(),
        lstat: Some(Err(2)),
        follow: Some(Err(2)),
        ..Record::default()
    });
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    out
}

fn put_u32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Header field offsets (layout.rs `Header`).
const FILE_SIZE: usize = 32;
const META_SIZE: usize = 40;
const ENTRY_COUNT: usize = 72;
const BUCKET_COUNT: usize = 76;
fn sec_off(i: usize) -> usize {
    80 + 16 * i
}

/// Entry field offsets (layout.rs `Entry`).
const ENTRY_SIZE: usize = std::mem::size_of::<Entry>();
const E_PATH: usize = 8;
const E_LSTAT: usize = 16;
const E_LINK: usize = 36;
const E_DIRENT_FIRST: usize = 44;
const E_DIRENT_COUNT: usize = 48;
const E_BLOB: usize = 52;

fn crafted() -> Vec<(String, Vec<u8>)> {
    let base = valid();
    let h = read_header(&base).unwrap();
    let s = |i: usize| (h.sections[i].offset as usize, h.sections[i].size as usize);
    let mut out: Vec<(String, Vec<u8>)> = vec![("valid.fmc".into(), base.clone())];
    let mut add = |name: &str, f: Vec<u8>| out.push((format!("{name}.fmc"), f));
    add("empty", Vec::new());
    add("header-only", base[..HEADER_SIZE].to_vec());
    add("short-header", base[..100].to_vec());
    // Truncated inside each section (the header still claims the full size).
    let names = [
        "buckets", "entries", "stats", "dirents", "order", "blobs", "strings", "data",
    ];
    for (i, n) in names.iter().enumerate() {
        let (off, size) = s(i);
        if size > 0 {
            add(
                &format!("truncated-in-{n}"),
                base[..off + size / 2].to_vec(),
            );
        }
    }
    // ... and with file_size/meta_size claiming the cut (open gets further).
    for (i, n) in names.iter().enumerate() {
        let (off, size) = s(i);
        if size > 0 {
            let mut f = base[..off + size / 2].to_vec();
            let len = f.len() as u64;
            put_u64(&mut f, FILE_SIZE, len);
            if h.meta_size > len {
                put_u64(&mut f, META_SIZE, len);
            }
            add(&format!("cut-in-{n}-sizes-agree"), f);
        }
    }
    // Rewrites every hash slot with `new(k, old)`, k counting slots.
    let each_slot = |f: &mut Vec<u8>, new: &dyn Fn(usize, u64) -> u64| {
        let (off, size) = s(sec::BUCKETS);
        for (k, slot) in (off..off + size).step_by(8).enumerate() {
            let v = u64::from_le_bytes(f[slot..slot + 8].try_into().unwrap());
            put_u64(f, slot, new(k, v));
        }
    };
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    add("wrong-magic", edit(&|f| f[0] = b'X'));
    add("wrong-version", edit(&|f| put_u32(f, 8, 99)));
    add("wrong-build", edit(&|f| f[BUILD_ID].fill(0xAB)));
    add("notes-past-end", edit(&|f| put_u32(f, NOTES, u32::MAX - 4)));
    add("notes-huge", edit(&|f| put_u32(f, NOTES + 4, u32::MAX)));
    add("bad-checksum", edit(&|f| *f.last_mut().unwrap() ^= 1));
    add("file-size-huge", edit(&|f| put_u64(f, FILE_SIZE, u64::MAX)));
    add(
        "meta-size-past-end",
        edit(&|f| put_u64(f, META_SIZE, 1 << 40)),
    );
    add("meta-size-zero", edit(&|f| put_u64(f, META_SIZE, 0)));
    for (i, n) in names.iter().enumerate() {
        let at = sec_off(i);
        add(
            &format!("{n}-offset-past-end"),
            edit(&|f| put_u64(f, at, 1 << 33)),
        );
        add(
            &format!("{n}-size-huge"),
            edit(&|f| put_u64(f, at + 8, u64::MAX - 7)),
        );
        add(
            &format!("{n}-offset-misaligned"),
            edit(&|f| {
                let o = u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
                put_u64(f, at, o + 1)
            }),
        );
    }
    // Overlapping sections: entries read as stats, strings over entries.
    add(
        "overlap-stats-on-entries",
        edit(&|f| put_u64(f, sec_off(sec::STATS), s(sec::ENTRIES).0 as u64)),
    );
    add(
        "overlap-strings-on-header",
        edit(&|f| {
            put_u64(f, sec_off(sec::STRINGS), 0);
            put_u64(f, sec_off(sec::STRINGS) + 8, h.meta_size);
        }),
    );
    add(
        "entry-count-huge",
        edit(&|f| put_u32(f, ENTRY_COUNT, u32::MAX)),
    );
    add(
        "bucket-count-huge",
        edit(&|f| put_u32(f, BUCKET_COUNT, 1 << 31)),
    );
    add(
        "bucket-count-not-pow2",
        edit(&|f| put_u32(f, BUCKET_COUNT, 3)),
    );
    // Every slot taken, each pointing at an entry of another hash (with
    // every hash tag in turn, so lookups read those entries): a lookup of
    // anything absent must end after one turn.
    add(
        "buckets-full",
        edit(&|f| {
            each_slot(f, &|k, _| {
                let tag = (k as u64 % 256) << 24;
                tag | (1 + u64::from(k as u32 % h.entry_count))
            })
        }),
    );
    add(
        "buckets-past-entries",
        edit(&|f| each_slot(f, &|_, _| u64::MAX)),
    );
    // Every taken slot names its entry but another string (the slot keeps
    // the path's offset, since format 5): no lookup may take the string named
    // by the slot for the entry's own.
    add(
        "buckets-path-offset-elsewhere",
        edit(&|f| {
            each_slot(f, &|_, v| {
                if v == 0 {
                    0
                } else {
                    (v & 0xFFFF_FFFF) | (1u64 << 32)
                }
            })
        }),
    );
    let (eoff, _) = s(sec::ENTRIES);
    let each_entry = |f: &mut Vec<u8>, field: usize, v: u32| {
        for k in 0..h.entry_count as usize {
            put_u32(f, eoff + k * ENTRY_SIZE + field, v);
        }
    };
    add(
        "strref-past-end",
        edit(&|f| each_entry(f, E_PATH, 0xFFFF_FFF0)),
    );
    add(
        "strref-len-huge",
        edit(&|f| each_entry(f, E_PATH + 4, u32::MAX)),
    );
    add(
        "link-past-end",
        edit(&|f| each_entry(f, E_LINK, 0x7FFF_FFFF)),
    );
    add(
        "stat-index-past-end",
        edit(&|f| each_entry(f, E_LSTAT, 1 << 30)),
    );
    add(
        "dirents-past-end",
        edit(&|f| each_entry(f, E_DIRENT_FIRST, u32::MAX - 1)),
    );
    add(
        "dirent-count-huge",
        edit(&|f| each_entry(f, E_DIRENT_COUNT, u32::MAX)),
    );
    add(
        "blob-index-past-end",
        edit(&|f| each_entry(f, E_BLOB, 1 << 20)),
    );
    add(
        "blob-range-past-end",
        edit(&|f| {
            let (off, size) = s(sec::BLOBS);
            for b in (off..off + size).step_by(std::mem::size_of::<Blob>()) {
                put_u64(f, b, u64::MAX - 3);
                put_u64(f, b + 8, 16);
                put_u64(f, b + 16, 16);
            }
        }),
    );
    // Blob fields (layout.rs `Blob`: offset 0, size 8, stored 16, codec
    // 24) and the stored bytes: unpacking must refuse, never overrun.
    let each_blob = |f: &mut Vec<u8>, at: usize, v: u64, wide: bool| {
        let (off, size) = s(sec::BLOBS);
        for b in (off..off + size).step_by(std::mem::size_of::<Blob>()) {
            if wide {
                put_u64(f, b + at, v);
            } else {
                put_u32(f, b + at, v as u32);
            }
        }
    };
    add("blob-codec-unknown", edit(&|f| each_blob(f, 24, 7, false)));
    add("blob-raw-as-zstd", edit(&|f| each_blob(f, 24, 1, false)));
    add(
        "blob-size-lies-larger",
        edit(&|f| each_blob(f, 8, 1 << 20, true)),
    );
    add(
        "blob-size-lies-smaller",
        edit(&|f| each_blob(f, 8, 3, true)),
    );
    add(
        "blob-size-huge",
        edit(&|f| each_blob(f, 8, u64::MAX / 2, true)),
    );
    add(
        "blob-stored-huge",
        edit(&|f| each_blob(f, 16, u64::MAX - 7, true)),
    );
    add(
        "blob-zstd-garbage",
        edit(&|f| {
            // Every stored byte past each frame's 4-byte magic.
            let (doff, dsize) = s(sec::DATA);
            for b in f[doff..doff + dsize].iter_mut().skip(4) {
                *b ^= 0x5A;
            }
        }),
    );
    add(
        "dirent-order-out-of-range",
        edit(&|f| {
            let (off, size) = s(sec::DIRENT_ORDER);
            for o in (off..off + size).step_by(4) {
                put_u32(f, o, u32::MAX);
            }
        }),
    );
    add(
        "dirent-order-unsorted",
        edit(&|f| {
            let (off, size) = s(sec::DIRENT_ORDER);
            f[off..off + size].reverse();
        }),
    );
    // Every link points at itself (and every entry claims to be a link).
    add(
        "symlink-self-loops",
        edit(&|f| {
            let (soff, ssize) = s(sec::STATS);
            for st in (soff..soff + ssize).step_by(std::mem::size_of::<StatRec>()) {
                put_u32(f, st + 24, S_IFLNK | 0o777);
            }
            for k in 0..h.entry_count as usize {
                let e = eoff + k * ENTRY_SIZE;
                let path: [u8; 8] = f[e + E_PATH..e + E_PATH + 8].try_into().unwrap();
                f[e + E_LINK..e + E_LINK + 8].copy_from_slice(&path);
            }
        }),
    );
    // The staged index alone (meta prefix) with damage in its tables.
    add(
        "staged-index-strings-cut",
        edit(&|f| {
            f.truncate(h.meta_size as usize);
            put_u64(f, sec_off(sec::STRINGS) + 8, 1 << 20);
        }),
    );
    out
}

#[test]
#[ignore = "writes the crafted corpus; run with FMCACHE_WRITE_CORPUS=1"]
fn write_crafted_corpus() {
    if std::env::var_os("FMCACHE_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in crafted() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The crafted files on disk are what the generator makes, apart from the
/// build identity and checksums (every commit changes both).
#[test]
fn crafted_corpus_is_current() {
    let mask = |f: &mut Vec<u8>| {
        if f.len() >= CHECKSUMS + 16 {
            f[BUILD_ID].fill(0);
            f[CHECKSUMS..CHECKSUMS + 16].fill(0);
        }
    };
    for (name, mut want) in crafted() {
        let mut got = std::fs::read(corpus_dir().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}; regenerate (see the top of corrupt.rs)"));
        if name == "wrong-build.fmc" {
            // Whatever commit wrote it, it must not be this build's.
            assert_ne!(
                &got[BUILD_ID],
                &build_id()[..],
                "{name} carries this build's id"
            );
        }
        mask(&mut got);
        mask(&mut want);
        assert!(got == want, "{name} differs from the generator");
    }
}

/// The crafted blob damage: with checksums fixed (so only the blob's own
/// checks stand between it and the stage), no damaged blob unpacks, and
/// every blob of the reference file does.
#[test]
fn damaged_blobs_do_not_unpack() {
    for (name, mut bytes) in crafted() {
        stamp(&mut bytes);
        fix_checksums(&mut bytes);
        let buf = Aligned::new(&bytes);
        let Ok(view) = CacheView::open(buf.bytes(), Verify::Full) else {
            continue;
        };
        let unpacked = view
            .blobs()
            .iter()
            .filter(|b| view.blob_bytes(b).is_some())
            .count();
        if name == "valid.fmc" {
            assert_eq!(unpacked, view.blobs().len(), "{name}");
            assert!(
                view.blobs()
                    .iter()
                    .any(|b| b.codec == fmcache_format::layout::codec::ZSTD),
                "the reference file has a compressed blob"
            );
        } else if [
            "blob-codec-unknown.fmc",
            "blob-size-lies-larger.fmc",
            "blob-size-lies-smaller.fmc",
            "blob-size-huge.fmc",
            "blob-stored-huge.fmc",
            "blob-zstd-garbage.fmc",
        ]
        .contains(&name.as_str())
        {
            assert_eq!(unpacked, 0, "{name}");
        }
    }
}
