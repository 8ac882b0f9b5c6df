//! Calls every accessor of an opened view and checks that whatever comes
//! back lies inside the bytes the view was opened on. Used by the fuzz
//! targets (`crates/fmcache-format/fuzz`) and the corrupt-cache corpus
//! test, where a failed check panics on purpose. The work is bounded by
//! the file's size: each listing is searched for at most `NAMES_PER_LISTING`
//! of its names.

use crate::reader::{CacheView, EntryRef};

const NAMES_PER_LISTING: usize = 64;

/// What a walk reached, so a caller can tell a deep walk from a refused file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    pub entries: usize,
    pub found_again: usize,
    pub stats: usize,
    pub links: usize,
    pub listings: usize,
    pub dirents: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
}

fn inside(bytes: &[u8], part: &[u8], what: &str) {
    let (lo, hi) = (
        bytes.as_ptr() as usize,
        bytes.as_ptr() as usize + bytes.len(),
    );
    let (p, q) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    assert!(
        part.is_empty() || (lo <= p && q <= hi),
        "{what}: {p:#x}..{q:#x} outside the file {lo:#x}..{hi:#x}"
    );
}

fn inside_val<T>(bytes: &[u8], v: &T, what: &str) {
    // SAFETY: a view of a live reference's own bytes.
    let part = unsafe {
        core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>())
    };
    inside(bytes, part, what);
}

/// Every accessor on every entry, then `probes` looked up. `bytes` must be
/// what `view` was opened on.
pub fn walk(view: &CacheView<'_>, bytes: &[u8], probes: &[&[u8]]) -> Walked {
    let mut w = Walked::default();
    inside_val(bytes, view.header(), "header");
    let notes = view.notes();
    if !notes.is_empty() {
        inside(bytes, notes, "notes");
    }
    for b in view.blobs() {
        inside_val(bytes, b, "blob");
        if let Some(data) = view.blob_stored(b) {
            inside(bytes, data, "blob bytes");
            assert_eq!(data.len() as u64, b.stored, "blob bytes of another size");
            // Unpacked only when its claimed size is within reach of the
            // file (a fuzzer's u64 size would only test the allocator).
            if b.size <= 64 * bytes.len() as u64 {
                if let Some(c) = view.blob_bytes(b) {
                    assert_eq!(c.len() as u64, b.size, "contents of another size");
                }
            }
        }
    }
    for e in view.entries() {
        w.entries += 1;
        entry(view, bytes, e, &mut w);
        // The table may be corrupt: the path need not be found again, but
        // what is found must be that path.
        let path = e.path();
        if let Some(again) = view.lookup(path) {
            assert_eq!(again.path(), path, "lookup returned another path");
            w.found_again += 1;
        }
    }
    assert!(view.entry(view.entry_count() as u32).is_none());
    assert!(view.entry(u32::MAX).is_none());
    for p in probes {
        if let Some(e) = view.lookup(p) {
            assert_eq!(e.path(), *p, "lookup returned another path");
            entry(view, bytes, e, &mut w);
        }
    }
    w
}

fn entry(view: &CacheView<'_>, bytes: &[u8], e: EntryRef<'_>, w: &mut Walked) {
    inside_val(bytes, e.raw(), "entry");
    inside(bytes, e.path(), "path");
    let _ = e.is_excluded();
    let _ = format!("{e:?}");
    for st in [e.lstat(), e.follow()].into_iter().flatten() {
        match st {
            Ok(st) => {
                inside_val(bytes, st, "stat");
                w.stats += 1;
            }
            Err(errno) => assert!(errno > 0, "errno {errno}"),
        }
    }
    if let Some(t) = e.link_target() {
        inside(bytes, t, "link target");
        assert!(!t.is_empty(), "an empty link target");
        w.links += 1;
    }
    for a in 0..4 {
        let _ = e.access_errno(a);
    }
    if let Some(l) = e.listing() {
        w.listings += 1;
        assert!(l.len() == e.raw().dirent_count as usize);
        let (mut names, mut got) = (0, 0);
        for i in 0..l.len() {
            let Some((name, _, _)) = l.get(i) else {
                continue;
            };
            inside(bytes, name, "dirent name");
            got += 1;
            if names < NAMES_PER_LISTING {
                names += 1;
                let _ = l.contains(name);
            }
        }
        assert_eq!(l.iter().count(), got, "iter and get disagree");
        w.dirents += got;
        assert!(l.get(l.len()).is_none());
        let _ = l.contains(b"");
        let _ = l.contains(&[0xff; 300]);
    }
    if let Some(b) = e.blob() {
        inside_val(bytes, b, "blob");
        w.blobs += 1;
        if let Some(data) = view.blob_stored(b) {
            inside(bytes, data, "blob bytes");
            w.blob_bytes += data.len() as u64;
        }
        if let Some(m) = e.mirror_path() {
            inside(bytes, m, "mirror path");
        }
    } else {
        assert!(e.mirror_path().is_none(), "a mirror path without a blob");
    }
}
