//! What both fuzz targets do with a candidate cache: open it as the server
//! and the stager do, then walk every reader accessor and every answer the
//! server derives (stat, lstat, access, open, readlink, listing,
//! realpath) for every recorded path and a few neighbours. Only panics,
//! hangs and out-of-bounds slices count as failures.

use fmcache_core::answer::{self, TrustAll};
use fmcache_core::path::PathBuf;
use fmcache_format::{checksum, walk, CacheView, Verify};

/// Offsets in the header (layout.rs `Header`).
pub const BUILD_ID: core::ops::Range<usize> = 16..32;
pub const CHECKSUMS: usize = 48;

/// Bytes copied into an 8-byte aligned buffer, as a mapping would be.
pub struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    pub fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, ch) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut a = [0u8; 8];
            a[..ch.len()].copy_from_slice(ch);
            *w = u64::from_le_bytes(a);
        }
        Aligned {
            words,
            len: bytes.len(),
        }
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes initialised in `new` (little-endian host).
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Gives the file this build's identity (so it gets past the build check).
pub fn stamp_build(bytes: &mut [u8]) {
    if bytes.len() >= BUILD_ID.end {
        bytes[BUILD_ID].copy_from_slice(&fmcache_format::build_id());
    }
}

/// Recomputes both checksums so `Verify::Full` accepts whatever the rest
/// holds: the deep accessors then meet the corruption.
pub fn fix_checksums(bytes: &mut [u8]) {
    if bytes.len() >= CHECKSUMS + 16 {
        let whole = checksum(bytes, false);
        let meta = checksum(bytes, true);
        bytes[CHECKSUMS..CHECKSUMS + 8].copy_from_slice(&whole.to_le_bytes());
        bytes[CHECKSUMS + 8..CHECKSUMS + 16].copy_from_slice(&meta.to_le_bytes());
    }
}

/// Opens `bytes` both ways; walks what opens. Returns whether it opened.
pub fn exercise(bytes: &[u8]) -> bool {
    let buf = Aligned::new(bytes);
    let b = buf.bytes();
    let full = CacheView::open(b, Verify::Full);
    let header = CacheView::open(b, Verify::Header);
    if full.is_ok() {
        assert!(header.is_ok(), "Full accepted what Header refused");
    }
    let Ok(view) = header else { return false };
    serve_everything(&view, b);
    true
}

/// The reader walk, then each answer for every path and its neighbours.
pub fn serve_everything(view: &CacheView<'_>, bytes: &[u8]) {
    let paths: Vec<Vec<u8>> = view.entries().map(|e| e.path().to_vec()).collect();
    let probes: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
    walk::walk(view, bytes, &probes);
    let mut out = PathBuf::new();
    for p in &paths {
        let mut variants: Vec<Vec<u8>> = vec![p.clone()];
        variants.push([&p[..], b"/"].concat());
        variants.push([&p[..], b"/x"].concat());
        variants.push([&p[..], b"/."].concat());
        for v in &variants {
            let v = &v[..];
            for follow in [false, true] {
                if let answer::Answer::Hit(st) = answer::stat(view, &TrustAll, v, follow) {
                    let _ = st.is_dir();
                }
            }
            for mode in [0, libc::R_OK, libc::W_OK, libc::X_OK, 7, 8] {
                let _ = answer::access(view, &TrustAll, v, mode);
            }
            for flags in [0, libc::O_NOFOLLOW, libc::O_DIRECTORY] {
                if let answer::Answer::Hit(f) = answer::open_read(view, &TrustAll, v, flags) {
                    assert!(!f.mirror.is_empty() || f.entry.blob().is_some());
                    if let Some(b) = f.entry.blob() {
                        let _ = view.blob_stored(b);
                    }
                }
            }
            let _ = answer::readlink(view, &TrustAll, v);
            if let answer::Answer::Hit((_, l)) = answer::list(view, &TrustAll, v) {
                for (name, _, _) in l.iter().take(64) {
                    let _ = l.contains(name);
                }
            }
            let _ = answer::realpath(view, &TrustAll, v, &mut out);
        }
    }
}
