//! Read a cache in place: one validation of the header and section table,
//! then lookups that bounds-check every offset they follow. No allocation,
//! no system call: usable inside the preload library's hooks.

use crate::layout::*;
use crate::{build_id, path_hash};

/// Why a cache was refused. `Display` gives the reason for the one-line
/// warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    TooSmall,
    BadMagic,
    Version(u32),
    ForeignBuild,
    Truncated,
    Layout(&'static str),
    Checksum,
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::TooSmall => f.write_str("too small to be a cache"),
            OpenError::BadMagic => f.write_str("not an fmcache file (bad magic)"),
            OpenError::Version(v) => {
                write!(f, "format version {v}, this build reads {FORMAT_VERSION}")
            }
            OpenError::ForeignBuild => f.write_str("written by a different fmcache build"),
            OpenError::Truncated => f.write_str("truncated"),
            OpenError::Layout(what) => write!(f, "corrupt ({what})"),
            OpenError::Checksum => f.write_str("checksum mismatch (corrupt)"),
        }
    }
}

/// How much of the file to check when opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Header, build, section table. Constant time: the per-process attach.
    Header,
    /// Also the whole-file checksum (needs the DATA section present).
    Full,
}

#[derive(Clone, Copy)]
pub struct CacheView<'a> {
    header: &'a Header,
    buckets: &'a [u64],
    entries: &'a [Entry],
    stats: &'a [StatRec],
    dirents: &'a [Dirent],
    dirent_order: &'a [u32],
    blobs: &'a [Blob],
    strings: &'a [u8],
    /// Absent when the view is a staged index (the bytes are unpacked).
    data: Option<&'a [u8]>,
}

fn section(bytes: &[u8], s: Section) -> Result<&[u8], OpenError> {
    let start = usize::try_from(s.offset).map_err(|_| OpenError::Layout("section offset"))?;
    let len = usize::try_from(s.size).map_err(|_| OpenError::Layout("section size"))?;
    let end = start
        .checked_add(len)
        .ok_or(OpenError::Layout("section end"))?;
    if start < HEADER_SIZE || start % SECTION_ALIGN != 0 {
        return Err(OpenError::Layout("section alignment"));
    }
    bytes.get(start..end).ok_or(OpenError::Truncated)
}

fn table<T: Plain>(bytes: &[u8], s: Section) -> Result<&[T], OpenError> {
    cast_slice(section(bytes, s)?).ok_or(OpenError::Layout("table size"))
}

/// Reads the header without trusting anything else; `None` if too short.
pub fn read_header(bytes: &[u8]) -> Option<Header> {
    let head = bytes.get(..HEADER_SIZE)?;
    // SAFETY: HEADER_SIZE bytes are present; Header is Plain; read_unaligned
    // accepts any alignment.
    Some(unsafe { core::ptr::read_unaligned(head.as_ptr().cast::<Header>()) })
}

impl<'a> CacheView<'a> {
    /// Validates `bytes` as a whole cache, or as a staged index when
    /// `bytes.len() == meta_size`. `bytes` must be 8-byte aligned (a
    /// mapping is).
    pub fn open(bytes: &'a [u8], verify: Verify) -> Result<Self, OpenError> {
        if bytes.len() < HEADER_SIZE {
            return Err(OpenError::TooSmall);
        }
        let header: &Header = cast_slice::<Header>(&bytes[..HEADER_SIZE])
            .and_then(|h| h.first())
            .ok_or(OpenError::Layout("header alignment"))?;
        if header.magic != MAGIC {
            return Err(OpenError::BadMagic);
        }
        if header.version != FORMAT_VERSION {
            return Err(OpenError::Version(header.version));
        }
        if header.build_id != build_id() {
            return Err(OpenError::ForeignBuild);
        }
        if header.header_size as usize != HEADER_SIZE {
            return Err(OpenError::Layout("header size"));
        }
        let meta_size = usize::try_from(header.meta_size).map_err(|_| OpenError::Truncated)?;
        let file_size = usize::try_from(header.file_size).map_err(|_| OpenError::Truncated)?;
        if meta_size > file_size || meta_size < HEADER_SIZE {
            return Err(OpenError::Layout("meta size"));
        }
        let whole = bytes.len() == file_size;
        if !whole && bytes.len() != meta_size {
            return Err(OpenError::Truncated);
        }
        let s = &header.sections;
        let meta = &bytes[..meta_size];
        let view = CacheView {
            header,
            buckets: table(meta, s[sec::BUCKETS])?,
            entries: table(meta, s[sec::ENTRIES])?,
            stats: table(meta, s[sec::STATS])?,
            dirents: table(meta, s[sec::DIRENTS])?,
            dirent_order: table(meta, s[sec::DIRENT_ORDER])?,
            blobs: table(meta, s[sec::BLOBS])?,
            strings: section(meta, s[sec::STRINGS])?,
            data: if whole {
                Some(section(bytes, s[sec::DATA])?)
            } else {
                None
            },
        };
        if view.entries.len() != header.entry_count as usize {
            return Err(OpenError::Layout("entry count"));
        }
        if !view.buckets.len().is_power_of_two()
            || view.buckets.len() != header.bucket_count as usize
        {
            return Err(OpenError::Layout("bucket count"));
        }
        if view.dirent_order.len() != view.dirents.len() {
            return Err(OpenError::Layout("dirent order"));
        }
        if verify == Verify::Full {
            if !whole {
                return Err(OpenError::Truncated);
            }
            if checksum(bytes, false) != header.checksum
                || checksum(bytes, true) != header.meta_checksum
            {
                return Err(OpenError::Checksum);
            }
        }
        Ok(view)
    }

    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// The notes for people (empty if none or out of bounds).
    pub fn notes(&self) -> &'a [u8] {
        self.str(self.header.notes).unwrap_or(b"")
    }

    /// Whether any entry's path starts with this first component (false:
    /// surely none; true: maybe). See `Header::top_filter`.
    #[inline]
    pub fn may_hold_top(&self, component: &[u8]) -> bool {
        let (w, b) = crate::layout::top_bit(component);
        self.header.top_filter[w] & b != 0
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The taken slots a lookup of `hash` meets, in probing order (linear
    /// from `hash & (bucket_count - 1)`), up to the first empty one and at
    /// most one full turn: a corrupt, full table cannot loop forever.
    fn probe(&self, hash: u64) -> impl Iterator<Item = u64> + 'a {
        let buckets = self.buckets;
        let mask = buckets.len() - 1;
        let start = hash as usize & mask;
        (0..buckets.len())
            .map(move |i| buckets[(start + i) & mask])
            .take_while(|&b| b != 0)
    }

    /// The entry for this exact absolute path, if the pilot probed it.
    pub fn lookup(&self, path: &[u8]) -> Option<EntryRef<'a>> {
        let hash = path_hash(path);
        let tag = crate::layout::bucket_tag(hash);
        for b in self.probe(hash) {
            let (index, slot_tag, offset) = crate::layout::bucket_parts(b);
            if slot_tag != tag {
                continue;
            }
            // The path string's address comes from the slot, not the
            // entry: both reads are in flight at once.
            let named = self
                .strings
                .get(offset as usize..)
                .and_then(|s| s.get(..path.len()));
            let e = self.entries.get(index as usize)?;
            if e.hash == hash
                && e.path.offset == offset
                && e.path.len as usize == path.len()
                && named == Some(path)
            {
                return Some(EntryRef {
                    view: *self,
                    e,
                    index,
                });
            }
        }
        None
    }

    /// `lookup` stopped after `level` of its dependent reads (1: the
    /// bucket; 2: the bucket and the entry's hash), for the
    /// micro-benchmark that splits a hit's cost (bench/micro). Not an
    /// answer: a true here is not a hit.
    #[doc(hidden)]
    pub fn lookup_partial(&self, path: &[u8], level: u8) -> bool {
        let hash = path_hash(path);
        let tag = crate::layout::bucket_tag(hash);
        self.probe(hash).any(|b| {
            let (index, slot_tag, _) = crate::layout::bucket_parts(b);
            slot_tag == tag
                && (level == 1
                    || self
                        .entries
                        .get(index as usize)
                        .is_some_and(|e| e.hash == hash))
        })
    }

    pub fn entry(&self, index: u32) -> Option<EntryRef<'a>> {
        let e = self.entries.get(index as usize)?;
        Some(EntryRef {
            view: *self,
            e,
            index,
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'a>> + 'a {
        let view = *self;
        (0..self.entries.len() as u32).filter_map(move |i| view.entry(i))
    }

    pub fn blobs(&self) -> &'a [Blob] {
        self.blobs
    }

    /// The bytes a blob stores in DATA (compressed or raw, see
    /// `Blob::codec`), when the view holds the DATA section.
    pub fn blob_stored(&self, blob: &Blob) -> Option<&'a [u8]> {
        let start = usize::try_from(blob.offset).ok()?;
        let end = start.checked_add(usize::try_from(blob.stored).ok()?)?;
        self.data?.get(start..end)
    }

    /// A blob's contents, decompressed and checked against its size and
    /// hash (`codec::unpack`); None when the view has no DATA or the blob
    /// is corrupt. Allocates: for tools, not for hooks.
    #[cfg(feature = "std")]
    pub fn blob_bytes(&self, blob: &Blob) -> Option<std::borrow::Cow<'a, [u8]>> {
        crate::codec::unpack(blob, self.blob_stored(blob)?).ok()
    }

    fn str(&self, r: StrRef) -> Option<&'a [u8]> {
        let start = r.offset as usize;
        self.strings.get(start..start.checked_add(r.len as usize)?)
    }

    fn stat(&self, index: u32, errno: u16) -> Option<Result<&'a StatRec, i32>> {
        if index == NONE {
            // An errno of 0 without a stat means "not recorded".
            return if errno == 0 {
                None
            } else {
                Some(Err(errno as i32))
            };
        }
        self.stats.get(index as usize).map(Ok)
    }
}

/// XXH3-64 of the file (or of its meta prefix) with both checksum fields
/// read as zero.
pub fn checksum(bytes: &[u8], meta_only: bool) -> u64 {
    const CK: core::ops::Range<usize> = 48..64;
    let end = match read_header(bytes) {
        Some(h) if meta_only => (h.meta_size as usize).min(bytes.len()),
        _ => bytes.len(),
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&bytes[..CK.start.min(end)]);
    if end > CK.start {
        h.update(&[0u8; 16][..(end.min(CK.end) - CK.start)]);
    }
    if end > CK.end {
        h.update(&bytes[CK.end..end]);
    }
    h.digest()
}

/// One entry of a validated view; accessors return `None` for anything
/// not recorded or out of bounds.
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    view: CacheView<'a>,
    e: &'a Entry,
    index: u32,
}

impl core::fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EntryRef")
            .field("index", &self.index)
            .field("path", &self.path().escape_ascii())
            .finish()
    }
}

impl<'a> EntryRef<'a> {
    pub fn index(&self) -> u32 {
        self.index
    }
    pub fn raw(&self) -> &'a Entry {
        self.e
    }
    pub fn path(&self) -> &'a [u8] {
        self.view.str(self.e.path).unwrap_or(b"")
    }
    pub fn is_excluded(&self) -> bool {
        self.e.flags & flag::EXCLUDED != 0
    }
    /// A root of the served software.
    pub fn is_root(&self) -> bool {
        self.e.flags & flag::ROOT != 0
    }
    /// An ancestor of a root, for realpath's walk only.
    pub fn is_walk(&self) -> bool {
        self.e.flags & flag::WALK != 0
    }
    /// lstat(2): `Ok(stat)` or `Err(errno)`; `None` if not recorded.
    pub fn lstat(&self) -> Option<Result<&'a StatRec, i32>> {
        self.view.stat(self.e.lstat, self.e.lstat_errno)
    }
    /// stat(2), symlinks followed.
    pub fn follow(&self) -> Option<Result<&'a StatRec, i32>> {
        self.view.stat(self.e.follow, self.e.follow_errno)
    }
    pub fn link_target(&self) -> Option<&'a [u8]> {
        match self.lstat() {
            // No symlink has an empty target: an empty one was not recorded.
            Some(Ok(st)) if st.is_symlink() && self.e.link.len != 0 => self.view.str(self.e.link),
            _ => None,
        }
    }
    /// access(2) errno for one of `acc::{R,W,X}`.
    pub fn access_errno(&self, which: usize) -> Option<i32> {
        if self.e.flags & flag::ACCESS == 0 {
            return None;
        }
        self.e.access_errno.get(which).map(|&e| e as i32)
    }
    pub fn listing(&self) -> Option<Listing<'a>> {
        if self.e.flags & flag::LISTED == 0 {
            return None;
        }
        let start = self.e.dirent_first as usize;
        let end = start.checked_add(self.e.dirent_count as usize)?;
        Some(Listing {
            view: self.view,
            dirents: self.view.dirents.get(start..end)?,
            order: self.view.dirent_order.get(start..end)?,
        })
    }
    pub fn blob(&self) -> Option<&'a Blob> {
        if self.e.flags & flag::CONTENT == 0 {
            return None;
        }
        self.view.blobs.get(self.e.blob as usize)
    }
    /// Canonical path of the file whose bytes the blob holds.
    pub fn mirror_path(&self) -> Option<&'a [u8]> {
        self.blob()?;
        self.view.str(self.e.mirror)
    }
}

/// A recorded directory listing.
#[derive(Clone, Copy)]
pub struct Listing<'a> {
    view: CacheView<'a>,
    dirents: &'a [Dirent],
    /// Positions in `dirents` sorted by name, for binary search.
    order: &'a [u32],
}

impl<'a> Listing<'a> {
    pub fn len(&self) -> usize {
        self.dirents.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dirents.is_empty()
    }
    /// Entry `i` in kernel order: (name, d_type, d_ino).
    pub fn get(&self, i: usize) -> Option<(&'a [u8], u8, u64)> {
        let d = self.dirents.get(i)?;
        Some((self.view.str(d.name)?, d.d_type, d.ino))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], u8, u64)> + 'a {
        let l = *self;
        (0..l.len()).filter_map(move |i| l.get(i))
    }
    /// Whether `name` is in the listing: `None` if the table is corrupt.
    pub fn contains(&self, name: &[u8]) -> Option<bool> {
        let (mut lo, mut hi) = (0usize, self.order.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (n, _, _) = self.get(*self.order.get(mid)? as usize)?;
            match n.cmp(name) {
                core::cmp::Ordering::Equal => return Some(true),
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
            }
        }
        Some(false)
    }
}
