//! fmcache's cache file: layout, in-place reader, deterministic writer.
//!
//! A cache maps literal absolute paths to what the kernel answered when the
//! pilot run probed them. See ARCHITECTURE.md for the normative layout.

#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
pub mod codec;
pub mod layout;
pub mod reader;
#[cfg(feature = "std")]
pub mod walk;
#[cfg(feature = "std")]
pub mod writer;

#[cfg(feature = "std")]
pub use codec::{BlobError, Unpacker};
pub use layout::{Blob, Dirent, Entry, Header, StatRec};
pub use reader::{checksum, read_header, CacheView, EntryRef, Listing, OpenError, Verify};
#[cfg(feature = "std")]
pub use writer::{Builder, Content, DirentRec, Record, Written};

/// The lookup hash of a path: XXH3-64, seed 0, over the path's bytes
/// (no terminating NUL). Part of the format: never change it without
/// bumping `FORMAT_VERSION`.
#[inline]
pub fn path_hash(path: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path)
}

/// Content hash of a blob: XXH3-128, seed 0, little-endian bytes.
pub fn blob_hash(bytes: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes()
}

/// Identity of this build: XXH3-128 of the package version, the git
/// commit it was built from and the format version. A cache written by
/// another build is refused, because recording rules may differ.
pub fn build_id() -> [u8; 16] {
    const ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("FMCACHE_GIT_COMMIT"));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(ID.as_bytes());
    h.update(&layout::FORMAT_VERSION.to_le_bytes());
    h.digest128().to_le_bytes()
}

/// The human-readable build identity (version and commit).
pub fn build_name() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), "+", env!("FMCACHE_GIT_COMMIT"))
}
