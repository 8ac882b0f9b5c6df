//! Builder -> bytes -> CacheView round trips and corruption handling, with
//! random records (proptest).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use fmcache_format::layout::{first_component, HEADER_SIZE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use fmcache_format::{
    blob_hash, checksum, read_header, Builder, CacheView, Content, DirentRec, Record, StatRec,
    Verify, Written,
};
use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;

/// The cache bytes in an 8-byte aligned buffer, as `CacheView` wants.
struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes; u8 has no
        // alignment requirement.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        dst[..bytes.len()].copy_from_slice(bytes);
        Aligned {
            words,
            len: bytes.len(),
        }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the buffer were initialised in `new`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A record as the test generates it; the content refers to a small pool
/// of byte strings so that equal contents (blob dedup) are common.
#[derive(Clone, Debug)]
struct Spec {
    path: Vec<u8>,
    lstat: Option<Result<StatRec, i32>>,
    follow: Option<Result<StatRec, i32>>,
    link: Option<Vec<u8>>,
    access: Option<[u8; 3]>,
    listing: Option<Vec<DirentRec>>,
    content: Option<(usize, Vec<u8>)>,
    excluded: bool,
}

#[derive(Clone, Debug)]
struct Case {
    uid: u32,
    gid: u32,
    specs: Vec<Spec>,
    pool: Vec<Vec<u8>>,
    /// Paths that are not in `specs`.
    absent: Vec<Vec<u8>>,
    /// Names to ask `contains` about.
    names: Vec<Vec<u8>>,
    shuffle_seed: u64,
}

impl Case {
    fn content_of(&self, s: &Spec) -> Option<(Vec<u8>, Vec<u8>)> {
        s.content
            .as_ref()
            .map(|(i, mirror)| (self.pool[i % self.pool.len()].clone(), mirror.clone()))
    }

    fn record<'a>(&'a self, s: &Spec) -> Record<'a> {
        Record {
            path: s.path.clone(),
            lstat: s.lstat,
            follow: s.follow,
            link: s.link.clone(),
            access: s.access,
            listing: s.listing.clone(),
            content: s.content.as_ref().map(|(i, mirror)| Content {
                mirror: mirror.clone(),
                bytes: Cow::Borrowed(&self.pool[i % self.pool.len()][..]),
            }),
            excluded: s.excluded,
            root: false,
            walk: false,
        }
    }

    /// Builds the cache from the records in the given order.
    fn build(&self, order: &[usize]) -> (Vec<u8>, Written) {
        let mut b = Builder::new(self.uid, self.gid);
        for &i in order {
            b.add(self.record(&self.specs[i]));
        }
        assert_eq!(b.len(), order.len());
        let mut out = Vec::new();
        let w = b.write(&mut out).expect("writing to a Vec cannot fail");
        (out, w)
    }

    fn in_order(&self) -> Vec<usize> {
        (0..self.specs.len()).collect()
    }

    fn shuffled(&self) -> Vec<usize> {
        let mut order = self.in_order();
        let mut x = self.shuffle_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        order
    }
}

fn stat_strategy() -> impl Strategy<Value = StatRec> {
    let kinds = prop::sample::select(vec![
        S_IFREG, S_IFDIR, S_IFLNK, 0o020000, // character device
        0o010000, // fifo
    ]);
    (kinds, 0u32..0o10000, any::<[u64; 12]>(), any::<[u32; 4]>()).prop_map(|(kind, perm, w, h)| {
        StatRec {
            dev: w[0] % 4,
            ino: w[1],
            nlink: w[2] % 8,
            mode: kind | perm,
            uid: h[0] % 3,
            gid: h[1] % 3,
            _pad0: 0,
            rdev: w[3] % 2,
            size: (w[4] % 100_000) as i64,
            blksize: 4096,
            blocks: (w[5] % 200) as i64,
            atime: w[6] as i64,
            atime_nsec: (h[2] % 1_000_000_000) as i64,
            mtime: w[7] as i64,
            mtime_nsec: (h[3] % 1_000_000_000) as i64,
            ctime: w[8] as i64,
            ctime_nsec: (w[9] % 1_000_000_000) as i64,
            stx_mask: h[2],
            btime_nsec: h[3] % 1_000_000_000,
            btime: w[10] as i64,
            stx_attributes: w[11] & 0xff,
            stx_attributes_mask: w[11] >> 56,
            mnt_id: w[9] % 5,
        }
    })
}

/// A stat from a small pool (so the STATS table dedups) or a random one.
fn shared_stat() -> impl Strategy<Value = StatRec> {
    let fixed = |mode: u32, ino: u64| StatRec {
        dev: 1,
        ino,
        nlink: 1,
        mode,
        size: 10,
        blksize: 4096,
        ..StatRec::default()
    };
    prop_oneof![
        3 => stat_strategy(),
        1 => Just(fixed(S_IFREG | 0o644, 7)),
        1 => Just(fixed(S_IFDIR | 0o755, 8)),
        1 => Just(fixed(S_IFLNK | 0o777, 9)),
    ]
}

fn stat_or_errno() -> impl Strategy<Value = Result<StatRec, i32>> {
    prop_oneof![
        3 => shared_stat().prop_map(Ok),
        1 => prop::sample::select(vec![libc::ENOENT, libc::ENOTDIR, libc::EACCES, libc::ELOOP])
            .prop_map(Err),
        1 => (1i32..=u16::MAX as i32).prop_map(Err),
    ]
}

/// Paths: mostly short and similar (hash chains, shared prefixes), some
/// made of arbitrary bytes.
fn path_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "/[a-d]{1,3}(/[a-d.]{1,3}){0,3}/?".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|mut v| {
            v.insert(0, b'/');
            v
        }),
    ]
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-e.]{1,4}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn dirent_strategy() -> impl Strategy<Value = DirentRec> {
    (name_strategy(), any::<u8>(), any::<u64>()).prop_map(|(name, d_type, ino)| DirentRec {
        name,
        d_type,
        ino,
    })
}

fn spec_body() -> impl Strategy<Value = Spec> {
    (
        prop::option::weighted(0.85, stat_or_errno()),
        prop::option::weighted(0.3, stat_or_errno()),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..30)),
        prop::option::of(any::<[u8; 3]>()),
        prop::option::weighted(0.4, prop::collection::vec(dirent_strategy(), 0..12)),
        prop::option::weighted(0.5, (any::<usize>(), path_strategy())),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(lstat, follow, link, access, listing, content, excluded)| {
                // The recorder always has a target for a symlink it
                // recorded (see `symlink_without_target_has_no_target`).
                let link = match (&lstat, link) {
                    (Some(Ok(st)), None) if st.is_symlink() => Some(b"target".to_vec()),
                    (_, l) => l,
                };
                Spec {
                    path: Vec::new(),
                    lstat,
                    follow,
                    link,
                    access,
                    listing,
                    content,
                    excluded,
                }
            },
        )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::btree_set(path_strategy(), 0..40),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..5),
        prop::collection::vec(path_strategy(), 0..20),
        prop::collection::vec(name_strategy(), 0..10),
        any::<(u32, u32, u64)>(),
    )
        .prop_flat_map(|(paths, pool, absent, names, (uid, gid, seed))| {
            let n = paths.len();
            (
                Just(paths),
                prop::collection::vec(spec_body(), n),
                Just(pool),
                Just(absent),
                Just(names),
                Just((uid, gid, seed)),
            )
        })
        .prop_map(|(paths, bodies, pool, absent, names, (uid, gid, seed))| {
            let specs: Vec<Spec> = paths
                .iter()
                .zip(bodies)
                .map(|(p, mut s)| {
                    s.path = p.clone();
                    s
                })
                .collect();
            let absent = absent.into_iter().filter(|p| !paths.contains(p)).collect();
            Case {
                uid,
                gid,
                specs,
                pool,
                absent,
                names,
                shuffle_seed: seed,
            }
        })
}

fn copied(r: Option<Result<&StatRec, i32>>) -> Option<Result<StatRec, i32>> {
    r.map(|r| r.copied())
}

/// Every record is found with the fields it was built from.
fn check_view(case: &Case, view: &CacheView<'_>, with_data: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(view.entry_count(), case.specs.len());
    for s in &case.specs {
        if let Some(c) = first_component(&s.path) {
            prop_assert!(view.may_hold_top(c), "top filter lacks {:?}", c);
        }
    }
    prop_assert_eq!(view.header().recorder_uid, case.uid);
    prop_assert_eq!(view.header().recorder_gid, case.gid);
    for s in &case.specs {
        let shown = String::from_utf8_lossy(&s.path).into_owned();
        let e = view.lookup(&s.path);
        prop_assert!(e.is_some(), "{} not found", shown);
        let e = e.unwrap();
        prop_assert_eq!(e.path(), &s.path[..]);
        prop_assert_eq!(view.entry(e.index()).map(|x| x.path()), Some(&s.path[..]));
        prop_assert_eq!(copied(e.lstat()), s.lstat, "lstat of {}", shown);
        let follow = s.follow.or(s.lstat);
        prop_assert_eq!(copied(e.follow()), follow, "follow of {}", shown);
        let link = match s.lstat {
            Some(Ok(st)) if st.mode & S_IFMT == S_IFLNK => s.link.as_deref(),
            _ => None,
        };
        prop_assert_eq!(e.link_target(), link, "link of {}", shown);
        for i in 0..3 {
            prop_assert_eq!(e.access_errno(i), s.access.map(|a| a[i] as i32));
        }
        prop_assert_eq!(e.access_errno(3), None);
        prop_assert_eq!(e.is_excluded(), s.excluded);
        match &s.listing {
            None => prop_assert!(e.listing().is_none(), "{} has a listing", shown),
            Some(want) => {
                let l = e.listing();
                prop_assert!(l.is_some(), "{} lost its listing", shown);
                let l = l.unwrap();
                prop_assert_eq!(l.len(), want.len());
                prop_assert_eq!(l.is_empty(), want.is_empty());
                let got: Vec<DirentRec> = l
                    .iter()
                    .map(|(name, d_type, ino)| DirentRec {
                        name: name.to_vec(),
                        d_type,
                        ino,
                    })
                    .collect();
                prop_assert_eq!(&got, want, "listing order of {}", shown);
                prop_assert_eq!(l.get(want.len()), None);
                for d in want {
                    prop_assert_eq!(l.contains(&d.name), Some(true));
                }
                for n in &case.names {
                    let has = want.iter().any(|d| &d.name == n);
                    prop_assert_eq!(l.contains(n), Some(has), "contains in {}", shown);
                }
            }
        }
        match case.content_of(s) {
            None => {
                prop_assert!(e.blob().is_none());
                prop_assert_eq!(e.mirror_path(), None);
            }
            Some((bytes, mirror)) => {
                let blob = e.blob();
                prop_assert!(blob.is_some(), "{} lost its contents", shown);
                let blob = blob.unwrap();
                prop_assert_eq!(blob.hash, blob_hash(&bytes));
                prop_assert_eq!(blob.size, bytes.len() as u64);
                prop_assert_eq!(e.mirror_path(), Some(&mirror[..]));
                if with_data {
                    let got = view.blob_bytes(blob);
                    prop_assert_eq!(got.as_deref(), Some(&bytes[..]));
                } else {
                    prop_assert!(view.blob_bytes(blob).is_none());
                }
            }
        }
    }
    for p in &case.absent {
        prop_assert!(
            view.lookup(p).is_none(),
            "{} found but never added",
            String::from_utf8_lossy(p)
        );
    }
    let listed: BTreeSet<&[u8]> = view.entries().map(|e| e.path()).collect();
    let want: BTreeSet<&[u8]> = case.specs.iter().map(|s| &s.path[..]).collect();
    prop_assert_eq!(listed, want);
    prop_assert!(view.entry(case.specs.len() as u32).is_none());
    Ok(())
}

/// Calls every accessor of a view that may hold garbage; only panics and
/// hangs matter.
fn exercise(view: &CacheView<'_>, paths: &[Vec<u8>], names: &[Vec<u8>]) -> usize {
    let mut touched = 0usize;
    let h = view.header();
    touched += h.entry_count as usize;
    for p in paths {
        if let Some(e) = view.lookup(p) {
            touched += e.path().len();
        }
    }
    for b in view.blobs() {
        touched += view.blob_stored(b).map_or(0, <[u8]>::len);
    }
    for i in 0..view.entry_count() as u32 + 2 {
        let Some(e) = view.entry(i) else { continue };
        touched += e.path().len() + e.raw().flags as usize + e.index() as usize;
        touched += e.is_excluded() as usize;
        touched += format!("{e:?}").len();
        for st in [e.lstat(), e.follow()].into_iter().flatten() {
            touched += match st {
                Ok(st) => st.is_dir() as usize + st.is_reg() as usize + st.is_symlink() as usize,
                Err(e) => e as usize,
            };
        }
        touched += e.link_target().map_or(0, <[u8]>::len);
        for a in 0..4 {
            touched += e.access_errno(a).unwrap_or(0) as usize;
        }
        if let Some(l) = e.listing() {
            touched += l.len() + l.is_empty() as usize;
            for (name, t, ino) in l.iter() {
                touched += name.len() + t as usize + (ino & 1) as usize;
                touched += l.contains(name).unwrap_or(false) as usize;
            }
            touched += l.get(l.len()).is_some() as usize;
            for n in names {
                touched += l.contains(n).unwrap_or(false) as usize;
            }
        }
        if let Some(b) = e.blob() {
            touched += view.blob_stored(b).map_or(0, <[u8]>::len);
        }
        touched += e.mirror_path().map_or(0, <[u8]>::len);
    }
    touched += view.entries().count();
    touched
}

fn all_paths(case: &Case) -> Vec<Vec<u8>> {
    case.specs
        .iter()
        .map(|s| s.path.clone())
        .chain(case.absent.iter().cloned())
        .collect()
}

fn config(cases: u32) -> PropConfig {
    PropConfig {
        cases,
        // Never write regression files into the source tree.
        failure_persistence: None,
        ..PropConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn round_trip(case in case_strategy()) {
        let (bytes, w) = case.build(&case.in_order());
        let buf = Aligned::new(&bytes);
        let view = CacheView::open(buf.bytes(), Verify::Full);
        prop_assert!(view.is_ok(), "fresh cache refused: {:?}", view.err());
        let view = view.unwrap();
        check_view(&case, &view, true)?;

        // What `write` reports matches the file.
        let distinct: HashSet<Vec<u8>> =
            case.specs.iter().filter_map(|s| case.content_of(s)).map(|(b, _)| b).collect();
        prop_assert_eq!(w.entries, case.specs.len());
        prop_assert_eq!(w.blobs, distinct.len(), "equal contents share one blob");
        prop_assert_eq!(view.blobs().len(), distinct.len());
        prop_assert_eq!(w.file_size, bytes.len() as u64);
        prop_assert_eq!(view.header().file_size, bytes.len() as u64);
        prop_assert_eq!(w.checksum, view.header().checksum);
        prop_assert_eq!(checksum(&bytes, false), view.header().checksum);
        prop_assert_eq!(checksum(&bytes, true), view.header().meta_checksum);
        let content: u64 = distinct.iter().map(|b| b.len() as u64).sum();
        prop_assert_eq!(w.content_bytes, content);
        prop_assert_eq!(w.data_bytes, view.header().sections[fmcache_format::layout::sec::DATA].size);

        // The staged index (the meta prefix) answers the same, without bytes.
        let meta = view.header().meta_size as usize;
        let index = Aligned::new(&bytes[..meta]);
        let iv = CacheView::open(index.bytes(), Verify::Header);
        prop_assert!(iv.is_ok(), "index refused: {:?}", iv.err());
        check_view(&case, &iv.unwrap(), meta == bytes.len())?;
    }

    #[test]
    fn same_records_any_order_same_bytes(case in case_strategy()) {
        let (a, _) = case.build(&case.in_order());
        let (b, _) = case.build(&case.shuffled());
        prop_assert!(a == b, "record order changed the output");
        let mut rev = case.in_order();
        rev.reverse();
        let (c, _) = case.build(&rev);
        prop_assert!(a == c, "reversed record order changed the output");
    }

    #[test]
    fn later_record_for_a_path_replaces_earlier(case in case_strategy()) {
        prop_assume!(!case.specs.is_empty());
        // Decoys for every path first: each must be replaced by the real one.
        let mut b = Builder::new(case.uid, case.gid);
        for s in &case.specs {
            b.add(Record {
                path: s.path.clone(),
                lstat: Some(Err(libc::EIO)),
                excluded: !s.excluded,
                listing: Some(vec![]),
                ..Record::default()
            });
        }
        for s in &case.specs {
            b.add(case.record(s));
        }
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        let (direct, _) = case.build(&case.in_order());
        prop_assert!(out == direct, "decoys left a trace");
    }

    #[test]
    fn corruption_is_refused_or_harmless(
        case in case_strategy(),
        flips in prop::collection::vec(any::<u64>(), 1..48),
        cuts in prop::collection::vec(any::<u64>(), 1..16),
    ) {
        let (bytes, _) = case.build(&case.in_order());
        let paths = all_paths(&case);
        let meta = read_header(&bytes).unwrap().meta_size as usize;
        for f in &flips {
            let bit = (*f % (bytes.len() as u64 * 8)) as usize;
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let buf = Aligned::new(&bad);
            let full = CacheView::open(buf.bytes(), Verify::Full);
            prop_assert!(full.is_err(), "bit {} flipped, yet Verify::Full accepted it", bit);
            // Header-only checks may accept it: then nothing may panic.
            if let Ok(v) = CacheView::open(buf.bytes(), Verify::Header) {
                exercise(&v, &paths, &case.names);
            }
        }
        let mut lens: Vec<usize> = cuts.iter().map(|c| (*c % bytes.len() as u64) as usize).collect();
        lens.extend([0, 1, HEADER_SIZE - 1, HEADER_SIZE, meta, bytes.len() - 1]);
        for len in lens {
            if len >= bytes.len() {
                continue;
            }
            let buf = Aligned::new(&bytes[..len]);
            let full = CacheView::open(buf.bytes(), Verify::Full);
            prop_assert!(full.is_err(), "truncated to {} of {} bytes, yet Verify::Full accepted it", len, bytes.len());
            match CacheView::open(buf.bytes(), Verify::Header) {
                Ok(v) => {
                    // Only the staged-index length is a valid prefix.
                    prop_assert_eq!(len, meta, "a truncated cache opened");
                    exercise(&v, &paths, &case.names);
                }
                Err(_) => prop_assert!(len != meta, "the index prefix was refused"),
            }
        }
    }

    #[test]
    fn corrupt_but_header_valid_views_do_not_panic(
        case in case_strategy(),
        writes in prop::collection::vec((any::<u64>(), any::<u64>()), 1..24),
    ) {
        // Garbage past the header (the section table stays intact), so
        // Verify::Header accepts the file and lookups meet wild indexes.
        let (bytes, _) = case.build(&case.in_order());
        let paths = all_paths(&case);
        prop_assume!(bytes.len() > HEADER_SIZE + 8);
        let mut bad = bytes.clone();
        for (at, word) in &writes {
            let span = (bad.len() - HEADER_SIZE - 8) as u64;
            let at = HEADER_SIZE + (*at % span) as usize;
            bad[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        let buf = Aligned::new(&bad);
        let v = CacheView::open(buf.bytes(), Verify::Header);
        prop_assert!(v.is_ok(), "the section table was not touched: {:?}", v.err());
        exercise(&v.unwrap(), &paths, &case.names);
        prop_assert!(CacheView::open(buf.bytes(), Verify::Full).is_err() || bad == bytes);
    }
}

#[test]
fn empty_cache_round_trips() {
    let mut out = Vec::new();
    let w = Builder::new(0, 0).write(&mut out).unwrap();
    assert_eq!(w.entries, 0);
    let buf = Aligned::new(&out);
    let v = CacheView::open(buf.bytes(), Verify::Full).unwrap();
    assert_eq!(v.entry_count(), 0);
    assert!(v.lookup(b"/").is_none());
    assert_eq!(v.entries().count(), 0);
}

/// The first-component filter holds every entry's first component and,
/// with two entries in 256 bits, answers no for others.
#[test]
fn top_filter_holds_the_first_components() {
    assert_eq!(first_component(b"/usr/lib/x"), Some(&b"usr"[..]));
    assert_eq!(first_component(b"/usr"), Some(&b"usr"[..]));
    assert_eq!(first_component(b"/"), None);
    assert_eq!(first_component(b"usr/lib"), None);
    let out = enoent_cache([b"/usr/lib/libz.so.1".to_vec(), b"/opt/sw".to_vec()]);
    let buf = Aligned::new(&out);
    let v = CacheView::open(buf.bytes(), Verify::Full).unwrap();
    assert!(v.may_hold_top(b"usr") && v.may_hold_top(b"opt"));
    let others = [
        &b"home"[..],
        b"tmp",
        b"scratch",
        b"proj",
        b"var",
        b"etc",
        b"lib64",
    ];
    let said_yes = others.iter().filter(|c| v.may_hold_top(c)).count();
    assert!(
        said_yes <= 1,
        "{said_yes} of {} absent names pass the filter",
        others.len()
    );
}

#[test]
fn unaligned_bytes_are_refused_not_misread() {
    let mut out = Vec::new();
    let mut b = Builder::new(0, 0);
    b.add(Record {
        path: b"/x".to_vec(),
        lstat: Some(Err(libc::ENOENT)),
        ..Record::default()
    });
    b.write(&mut out).unwrap();
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&out);
    let holder = Aligned::new(&shifted);
    let misaligned = &holder.bytes()[1..];
    assert_eq!(misaligned, &out[..]);
    assert!(CacheView::open(misaligned, Verify::Header).is_err());
    assert!(CacheView::open(misaligned, Verify::Full).is_err());
}

/// A symlink recorded without a readlink answer (readlink failed between
/// lstat and readlink) must not read back as a symlink to "": an empty
/// target does not exist on Linux, and `EntryRef` promises `None` for
/// anything not recorded.
#[test]
fn symlink_without_target_has_no_target() {
    let mut b = Builder::new(0, 0);
    b.add(Record {
        path: b"/l".to_vec(),
        lstat: Some(Ok(StatRec {
            mode: S_IFLNK | 0o777,
            ino: 5,
            ..StatRec::default()
        })),
        follow: Some(Err(libc::ENOENT)),
        link: None,
        ..Record::default()
    });
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    let buf = Aligned::new(&out);
    let v = CacheView::open(buf.bytes(), Verify::Full).unwrap();
    let e = v.lookup(b"/l").unwrap();
    assert_eq!(
        e.link_target(),
        None,
        "a link target that was never recorded reads back as {:?}",
        e.link_target().map(String::from_utf8_lossy)
    );
}

/// Records that differ only in stat dedup or string dedup still read back
/// distinctly (sanity for the tables the writer shares).
#[test]
fn shared_tables_keep_entries_apart() {
    let st = |ino| StatRec {
        mode: S_IFREG | 0o644,
        ino,
        ..StatRec::default()
    };
    let mut b = Builder::new(1, 2);
    let mut want = BTreeMap::new();
    for i in 0..100u64 {
        let p = format!("/d/{}", i % 37).into_bytes();
        let p = if i >= 37 { [&p[..], b"/x"].concat() } else { p };
        b.add(Record {
            path: p.clone(),
            lstat: Some(Ok(st(i % 5))),
            link: Some(p.clone()),
            ..Record::default()
        });
        want.insert(p, i % 5);
    }
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    let buf = Aligned::new(&out);
    let v = CacheView::open(buf.bytes(), Verify::Full).unwrap();
    for (p, ino) in &want {
        let e = v.lookup(p).unwrap();
        assert_eq!(e.lstat().unwrap().unwrap().ino, *ino);
    }
    assert_eq!(v.entry_count(), want.len());
}

/// A slot keeps 8 bits of its path's hash (format 6): with 40,000 entries
/// many slots sit past their home after others of other tags, and every
/// recorded path is still found with its own entry, and no absent one is.
#[test]
fn tagged_slots_find_every_entry_and_only_those() {
    use fmcache_format::layout::{bucket_of, bucket_parts, bucket_tag};
    for (i, h, off) in [
        (0, 0, 0),
        (5, u64::MAX, 7),
        ((1 << 24) - 2, 0xAB << 56, u32::MAX),
    ] {
        assert_eq!(bucket_parts(bucket_of(i, h, off)), (i, bucket_tag(h), off));
        assert_ne!(bucket_of(i, h, off), 0, "a taken slot is never empty");
    }
    let path =
        |k: u32| format!("/sw/lib/python3.11/site-packages/p{}/m{k}.py", k % 97).into_bytes();
    let out = enoent_cache((0..40_000).map(path));
    let buf = Aligned::new(&out);
    let v = CacheView::open(buf.bytes(), Verify::Full).unwrap();
    for k in 0..40_000 {
        let e = v.lookup(&path(k)).expect("a recorded path is found");
        assert_eq!(e.path(), &path(k)[..]);
    }
    for k in 40_000..80_000 {
        assert!(v.lookup(&path(k)).is_none(), "{k}");
    }
}

/// A written cache in which each of `paths` fails lstat with ENOENT.
fn enoent_cache(paths: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut b = Builder::new(0, 0);
    for path in paths {
        b.add(Record {
            path,
            lstat: Some(Err(libc::ENOENT)),
            ..Record::default()
        });
    }
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    out
}
