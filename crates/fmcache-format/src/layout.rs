//! The on-disk structures, read in place from a mapping.
//!
//! Every structure is `#[repr(C)]`, made only of little-endian integers with
//! explicit padding fields, so any bit pattern is a valid value (a corrupt
//! file can give wrong answers, never undefined behaviour) and the writer
//! emits the same bytes for the same input. The normative description is in
//! ARCHITECTURE.md ("On-disk format").

// The structures are viewed in place, so the file's little-endian integers
// are read in the machine's order: true only on a little-endian machine.
// Every target fmcache serves (x86-64, aarch64, riscv64, ppc64le Linux) is
// one; a big-endian build would misread every cache, so it is refused.
#[cfg(target_endian = "big")]
compile_error!("fmcache's cache format is little-endian and read in place: big-endian targets are not supported");

/// First eight bytes of every cache file.
pub const MAGIC: [u8; 8] = *b"FMCACHE\0";
/// Bumped on every incompatible change of the structures below.
pub const FORMAT_VERSION: u32 = 6;
/// Marks "no index" in the u32 index fields.
pub const NONE: u32 = u32::MAX;
/// Bytes reserved for the header; sections start after it.
pub const HEADER_SIZE: usize = 256;
/// Every section starts at a multiple of this, so its structs are aligned
/// when the file is mapped at a page boundary.
pub const SECTION_ALIGN: usize = 8;

/// Indexes into [`Header::sections`].
pub mod sec {
    pub const BUCKETS: usize = 0;
    pub const ENTRIES: usize = 1;
    pub const STATS: usize = 2;
    pub const DIRENTS: usize = 3;
    pub const DIRENT_ORDER: usize = 4;
    pub const BLOBS: usize = 5;
    pub const STRINGS: usize = 6;
    pub const DATA: usize = 7;
    pub const COUNT: usize = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_size: u32,
    /// Identity of the build that wrote the file (see `build_id`).
    pub build_id: [u8; 16],
    pub file_size: u64,
    /// Bytes `[0, meta_size)` hold the header, tables and strings; the
    /// file contents (DATA) follow. A staged index is exactly this prefix.
    pub meta_size: u64,
    /// XXH3-64 (seed 0) of the whole file with both checksum fields zeroed.
    /// Also the cache's identity: equal checksums mean equal caches.
    pub checksum: u64,
    /// XXH3-64 (seed 0) of `[0, meta_size)` with both checksum fields zeroed.
    pub meta_checksum: u64,
    /// Effective uid and gid of the pilot: answers (EACCES, readable
    /// contents) are valid for this identity only.
    pub recorder_uid: u32,
    pub recorder_gid: u32,
    pub entry_count: u32,
    /// Power of two; the hash table has this many u64 slots (`bucket_of`).
    pub bucket_count: u32,
    pub sections: [Section; sec::COUNT],
    /// Text for people in STRINGS (`fmcache inspect`): what the scope
    /// left out. Never read when serving.
    pub notes: StrRef,
    /// 256-bit filter of the first components of every entry's path
    /// (`top_bit`; version 3): a path whose first component has no bit set
    /// has no entry, nor any ancestor with one, so it passes through
    /// without a lookup.
    pub top_filter: [u64; 4],
    pub reserved: [u8; 8],
}

/// The first component of an absolute path (`usr` of `/usr/lib`); None
/// for `/` itself and for relative paths.
pub fn first_component(path: &[u8]) -> Option<&[u8]> {
    let rest = path.strip_prefix(b"/")?;
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The word and bit of `Header::top_filter` for a first component.
pub fn top_bit(component: &[u8]) -> (usize, u64) {
    let h = crate::path_hash(component);
    (((h >> 6) & 3) as usize, 1u64 << (h & 63))
}

/// A hash-table slot (version 6): the entry's index + 1 in the low 24 bits
/// (0: empty), the top 8 bits of the path's hash above them, and the
/// path's offset in STRINGS in the high half. A lookup passes a slot whose
/// 8 bits differ without reading its entry (255 in 256 of the slots a
/// probe crosses), and reads the entry and the path string of the one it
/// takes at the same time instead of one after the other (at 200,000
/// entries each comes from memory).
pub fn bucket_of(index: u32, hash: u64, path_offset: u32) -> u64 {
    debug_assert!(index < MAX_ENTRIES);
    (u64::from(path_offset) << 32) | (u64::from(bucket_tag(hash)) << 24) | (u64::from(index) + 1)
}

/// Most entries a cache holds (24 bits of index in a slot).
pub const MAX_ENTRIES: u32 = (1 << 24) - 1;

/// The hash bits a slot keeps (the slot's place comes from the low bits).
pub fn bucket_tag(hash: u64) -> u8 {
    (hash >> 56) as u8
}

/// (entry index, hash tag, path offset) of a non-empty slot.
pub fn bucket_parts(b: u64) -> (u32, u8, u32) {
    (
        ((b & 0xFF_FFFF) as u32).wrapping_sub(1),
        (b >> 24) as u8,
        (b >> 32) as u32,
    )
}

/// A string in the STRINGS section.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRef {
    pub offset: u32,
    pub len: u32,
}

/// Entry flags.
pub mod flag {
    /// The pilot changed this path (or a parent of something it changed):
    /// never answered from the cache, always passed through.
    pub const EXCLUDED: u16 = 1;
    /// `listing` holds the directory's full listing.
    pub const LISTED: u16 = 2;
    /// `blob` and `mirror` hold the file's bytes and their staged path.
    pub const CONTENT: u16 = 4;
    /// `access_errno` holds access(2) answers.
    pub const ACCESS: u16 = 8;
    /// A root of the served software (a directory, or a single file):
    /// the cache holds entries only at or under its roots (version 2).
    pub const ROOT: u16 = 16;
    /// An ancestor of a root, walked through to reach the software: only
    /// realpath's walk may use its type and link target; every call on
    /// the path itself passes through (version 2).
    pub const WALK: u16 = 32;
}

/// Index into the `access_errno` array.
pub mod acc {
    pub const R: usize = 0;
    pub const W: usize = 1;
    pub const X: usize = 2;
}

/// One probed absolute path and what the kernel answered for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// XXH3-64 (seed 0) of the path bytes.
    pub hash: u64,
    pub path: StrRef,
    /// lstat(2) answer: index into STATS, or NONE with `lstat_errno` set.
    pub lstat: u32,
    /// stat(2) answer (symlinks followed). Equal to `lstat` unless the path
    /// is a symlink.
    pub follow: u32,
    pub lstat_errno: u16,
    pub follow_errno: u16,
    pub flags: u16,
    /// access(2) errno for R_OK, W_OK, X_OK (0 = allowed).
    pub access_errno: [u8; 3],
    pub _pad0: [u8; 3],
    /// readlink(2) target, for symlinks.
    pub link: StrRef,
    /// Directory listing: `dirent_count` DIRENTS from `dirent_first`, in
    /// the order the kernel returned them, "." and ".." included.
    pub dirent_first: u32,
    pub dirent_count: u32,
    /// File contents: index into BLOBS.
    pub blob: u32,
    /// Absolute canonical path of the file whose bytes `blob` holds; the
    /// staged copy lives at `<stage>/root<mirror>`.
    pub mirror: StrRef,
    pub _pad1: u64,
}

/// Stat fields exactly as the kernel gave them (stat(2) and statx(2)).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatRec {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad0: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: i64,
    pub atime_nsec: i64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    /// statx(2) extras.
    pub stx_mask: u32,
    pub btime_nsec: u32,
    pub btime: i64,
    pub stx_attributes: u64,
    pub stx_attributes_mask: u64,
    pub mnt_id: u64,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

impl StatRec {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    pub name: StrRef,
    pub d_type: u8,
    pub _pad: [u8; 7],
}

/// How a blob's bytes are stored (`Blob::codec`, version 4).
pub mod codec {
    /// As they are: `stored == size`.
    pub const RAW: u32 = 0;
    /// One zstd frame that decodes to exactly `size` bytes.
    pub const ZSTD: u32 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blob {
    /// Offset within the DATA section of the stored bytes.
    pub offset: u64,
    /// Size of the contents (uncompressed).
    pub size: u64,
    /// Bytes stored in DATA from `offset` (version 4).
    pub stored: u64,
    /// `codec::RAW` or `codec::ZSTD` (version 4).
    pub codec: u32,
    pub _pad: u32,
    /// XXH3-128 (seed 0) of the contents (uncompressed), little-endian.
    pub hash: [u8; 16],
}

/// Types that may be viewed in place from file bytes: plain integers only,
/// no implicit padding, every bit pattern valid.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of integers without implicit
/// padding.
pub unsafe trait Plain: Copy + 'static {}
unsafe impl Plain for u32 {}
unsafe impl Plain for u64 {}
unsafe impl Plain for Header {}
unsafe impl Plain for Entry {}
unsafe impl Plain for StatRec {}
unsafe impl Plain for Dirent {}
unsafe impl Plain for Blob {}

/// Views `bytes` as a slice of `T`, or `None` when the length or alignment
/// does not fit.
pub fn cast_slice<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    let size = core::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: length and alignment checked above; `T: Plain` accepts any
    // bit pattern; the lifetime is tied to `bytes`.
    Some(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// The bytes of a plain value, for the writer.
pub fn as_bytes<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so all bytes are initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
    assert!(core::mem::size_of::<Entry>() == 72);
    assert!(core::mem::size_of::<StatRec>() == 160);
    assert!(core::mem::size_of::<Dirent>() == 24);
    assert!(core::mem::size_of::<Blob>() == 48);
};
